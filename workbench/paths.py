"""Where the bundled data lives (`data/` beside the package): demo models, prompt and concept sets, the
default database."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
