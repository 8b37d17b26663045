"""Prompt lists: read from text or JSONL files and validated before any model runs."""

from __future__ import annotations

from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.jsonl import read_jsonl, read_lines

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
    if path.suffix != ".jsonl":
        return validate_prompts([line for line in read_lines(path, "prompt file") if line.strip()])
    prompts = []
    for number, item in read_jsonl(path, "prompt file"):
        if isinstance(item, dict):
            key = next((k for k in JSONL_KEYS if k in item), None)
            if key is None:
                raise WorkbenchError(f"{path}:{number} has no 'prompt' or 'text' field")
            item = item[key]
        if not isinstance(item, str):
            raise WorkbenchError(f"{path}:{number} is a JSON {type(item).__name__}, expected a string or an object "
                                 "with a 'prompt' or 'text' string")
        prompts.append(item)
    return validate_prompts(prompts)
