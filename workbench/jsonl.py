"""JSON Lines files read once, the same way everywhere (prompt files, concept sets, corpus items)."""

from __future__ import annotations

import json
from pathlib import Path

from workbench.errors import WorkbenchError


def read_lines(path: str | Path, what: str) -> list[str]:
    """The lines of a UTF-8 text file; `what` names it in errors ("prompt file", "concept set")."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"{what} {path} does not exist")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise WorkbenchError(f"{what} {path} is not UTF-8 text: {e}") from e


def read_jsonl(path: str | Path, what: str = "file") -> list[tuple[int, object]]:
    """(line number, parsed value) of every non-blank line; a line that does not parse is an error naming it."""
    rows = []
    for number, line in enumerate(read_lines(path, what), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as e:
            raise WorkbenchError(f"{path}:{number} is not valid JSON: {e.msg}") from e
    return rows
