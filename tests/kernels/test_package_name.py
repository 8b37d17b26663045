"""Our kernels install as `workbench_kernels` and leave the import name `kernels` to the Hugging Face hub package.

transformers (>= 5.25) depends on the hub package `kernels`. The repo root is on `sys.path` wherever the app,
the scripts and pytest run, so a `kernels/__init__.py` there would shadow the hub package; the folder has none,
and a regular package installed under that name wins over it.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, kernels, workbench_kernels
from transformers.utils import import_utils
from workbench_kernels.sparse_decode import sparse_decode
print(json.dumps({"kernels": getattr(kernels, "__file__", None), "ours": list(workbench_kernels.__path__),
                  "hub_available": import_utils.is_kernels_available(), "op": sparse_decode.__module__}))
"""


def test_kernels_folder_has_no_init_on_the_path():
    assert not (REPO / "kernels" / "__init__.py").exists()
    assert (REPO / "kernels" / "sparse_decode" / "__init__.py").exists()  # the op packages stay regular packages


def test_hub_kernels_and_ours_import_side_by_side_from_the_repo_root():
    """As `streamlit run app.py` and `pytest` run: the repo root first on sys.path (`python -c` puts the
    working directory there)."""
    hub_version = importlib.metadata.version("kernels")  # the test extras install it, as transformers >= 5.25 does
    found = json.loads(subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True,
                                      check=True).stdout)
    assert found["kernels"] is not None and Path(found["kernels"]).resolve().parent != REPO / "kernels"
    assert [Path(p).resolve() for p in found["ours"] if Path(p).is_dir()] == [REPO / "kernels"]  # an editable
    # install adds a path-hook entry beside the folder
    assert found["op"] == "workbench_kernels.sparse_decode"
    assert found["hub_available"] is True, f"transformers does not see the hub package kernels {hub_version}"
