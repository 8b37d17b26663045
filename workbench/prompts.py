"""Prompt lists: read from text or JSONL files and validated before any model runs."""

from __future__ import annotations

import json
from pathlib import Path

from workbench.errors import WorkbenchError

JSONL_KEYS = ("prompt", "text")


def validate_prompts(prompts) -> list[str]:
    """Return the prompts as a list, or raise naming the first bad one."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts) if prompts is not None else []
    if not prompts:
        raise WorkbenchError("no prompts given: pass at least one prompt (--prompt TEXT or --prompts FILE)")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise WorkbenchError(f"prompt {i} is a {type(prompt).__name__}, expected a string")
        if not prompt.strip():
            raise WorkbenchError(f"prompt {i} is empty: every prompt needs some text")
    return prompts


def load_prompts(path: str | Path) -> list[str]:
    """Prompts from a file: `.jsonl` (objects with "prompt" or "text", or bare strings), else one per line.

    Blank lines of a text file are skipped; a JSONL line that does not parse is an error naming its line.
    """
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"prompt file {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise WorkbenchError(f"prompt file {path} is not UTF-8 text: {e}") from e
    if path.suffix != ".jsonl":
        return validate_prompts([line for line in lines if line.strip()])
    prompts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise WorkbenchError(f"{path}:{number} is not valid JSON: {e.msg}") from e
        if isinstance(item, dict):
            key = next((k for k in JSONL_KEYS if k in item), None)
            if key is None:
                raise WorkbenchError(f"{path}:{number} has no 'prompt' or 'text' field")
            item = item[key]
        prompts.append(item)
    return validate_prompts(prompts)
