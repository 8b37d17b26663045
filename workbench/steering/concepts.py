"""Concept sets: two groups of texts that differ in one concept, read from JSONL and validated.

Two layouts, one example per line:
- labelled: {"text": "...", "label": "positive"} with exactly two labels in the file;
- paired:   {"positive": "...", "negative": "..."} (any two keys, the same on every line),
  texts that differ only in the concept (what PCA of paired differences needs).
An optional "split" of "train" or "test" fixes the held-out examples; otherwise a
seeded shuffle holds out `heldout_fraction`. An optional "mark" names a substring
whose last token is the position read when directions use the marked position.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.jsonl import read_jsonl
from workbench.paths import DATA_DIR

CONCEPTS_DIR = DATA_DIR / "concepts"


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    pair: int | None = None  # index shared by the two texts of a pair
    mark: str | None = None


@dataclass(frozen=True)
class ConceptSet:
    """Train and held-out examples of a two-label concept; the direction points from `negative` to `positive`."""

    name: str
    positive: str
    negative: str
    train: list[Example] = field(repr=False)
    test: list[Example] = field(repr=False)

    @property
    def paired(self) -> bool:
        return all(e.pair is not None for e in self.train)


def bundled_concept_sets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(CONCEPTS_DIR.glob("*.jsonl"))}


def concept_set_path(name: str) -> Path:
    """A bundled concept set by name (sentiment, tense, ...), else the path as given."""
    return bundled_concept_sets().get(name) or Path(name)


def _parse(path: Path) -> list[dict]:
    rows = []
    for number, row in read_jsonl(path, "concept set"):
        if not isinstance(row, dict):
            raise WorkbenchError(f"{path}:{number} is not a JSON object")
        rows.append((number, row))
    if not rows:
        raise WorkbenchError(f"concept set {path} is empty")
    return rows


def _examples(path: Path, rows) -> tuple[list[tuple[Example, str | None]], list[str]]:
    """Examples with their optional split, and the labels in order of first appearance."""
    examples, labels = [], []
    paired = "text" not in rows[0][1]
    keys = [k for k in rows[0][1] if k not in ("split", "mark")] if paired else None
    if paired and len(keys) != 2:
        raise WorkbenchError(f"{path}:1 is neither labelled ('text' + 'label') nor a pair of two texts: {keys}")
    for index, (number, row) in enumerate(rows):
        split = row.get("split")
        if split not in (None, "train", "test"):
            raise WorkbenchError(f"{path}:{number} has split {split!r}; use 'train' or 'test'")
        texts = [(row.get(k), k, index) for k in keys] if paired else [(row.get("text"), row.get("label"), None)]
        for text, label, pair in texts:
            if not isinstance(text, str) or not text.strip():
                raise WorkbenchError(f"{path}:{number} has no text" + (f" for {label!r}" if paired else ""))
            if not isinstance(label, str) or not label:
                raise WorkbenchError(f"{path}:{number} has no 'label'")
            labels += [] if label in labels else [label]
            examples.append((Example(text, label, pair, row.get("mark")), split))
    return examples, labels


def load_concept_set(path: str | Path, positive: str | None = None, heldout_fraction: float = 0.25,
                     seed: int = 0) -> ConceptSet:
    """Read and validate a concept set; `positive` names the label the direction points to."""
    path = Path(path)
    if not 0 < heldout_fraction < 1:
        raise WorkbenchError(f"heldout_fraction must be between 0 and 1, got {heldout_fraction}")
    examples, labels = _examples(path, _parse(path))
    if len(labels) != 2:
        raise WorkbenchError(f"concept set {path} must have exactly two labels, found {labels}")
    positive = positive or ("positive" if "positive" in labels else labels[0])
    if positive not in labels:
        raise WorkbenchError(f"label {positive!r} is not in {path}; its labels are {labels}")
    negative = next(label for label in labels if label != positive)
    if any(split is None for _, split in examples):
        # hold out whole pairs, or for labelled sets the same fraction of each label
        group = [e.pair if e.pair is not None else i for i, (e, _) in enumerate(examples)]
        strata = {}
        for g, (e, _) in zip(group, examples):
            strata.setdefault("pairs" if e.pair is not None else e.label, {}).setdefault(g, None)
        rng, held = random.Random(seed), set()
        for members in strata.values():
            keys = list(members)
            rng.shuffle(keys)
            held.update(keys[: max(1, round(len(keys) * heldout_fraction))])
        splits = ["test" if g in held else "train" for g in group]
    else:
        splits = [split for _, split in examples]
    train = [e for (e, _), s in zip(examples, splits) if s == "train"]
    test = [e for (e, _), s in zip(examples, splits) if s == "test"]
    for name, part in (("training", train), ("held-out", test)):
        for label in (positive, negative):
            if sum(e.label == label for e in part) < 2:
                raise WorkbenchError(f"concept set {path} has fewer than 2 {name} examples labelled {label!r}")
    return ConceptSet(path.stem, positive, negative, train, test)
