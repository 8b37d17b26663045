"""Write the demo model's concept sets and steering prompts to data/ from the corpus grammar (fixed seed).

    python analyses/build_concept_sets.py [--per-label 150]

Examples come from the grammar's held-out splits, never trained on: the
'validation' split becomes the sets' training half and 'test' their held-out half.
Sets: sentiment (labelled), sentiment_pairs (texts differing only in sentiment),
tense (present/past) and topic_food (food against the other topics). Prompts:
data/prompts/steering_negative.txt (starts of negative held-out stories, to steer
toward positive) and data/prompts/neutral.txt (neutral sentences, for the KL cost).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.corpus.stories import (NEUTRAL_FRAMES, OPENERS, Attributes, labelled_sentence,  # noqa: E402
                                      random_character, sentence, sentiment_pair)
from workbench.steering.concepts import CONCEPTS_DIR  # noqa: E402

PROMPTS_DIR = CONCEPTS_DIR.parent / "prompts"

SPLITS = {"validation": "train", "test": "test"}


def _labelled(rng, per_label: int, attribute: str, label_of) -> list[dict]:
    rows = []
    for corpus_split, split in SPLITS.items():
        counts = {}
        while len(counts) < 2 or min(counts.values()) < per_label:
            example = labelled_sentence(rng, corpus_split)
            label = label_of(example[attribute])
            if counts.get(label, 0) < per_label:
                counts[label] = counts.get(label, 0) + 1
                rows.append({"text": example["text"], "label": label, "split": split})
    return rows


def build(out: Path, per_label: int, seed: int = 0) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    sets = {
        "sentiment": _labelled(rng, per_label, "sentiment", str),
        "tense": _labelled(rng, per_label, "tense", str),
        "topic_food": _labelled(rng, per_label, "topic", lambda t: "food" if t == "food" else "other"),
        "sentiment_pairs": [{"positive": p["positive"], "negative": p["negative"], "split": split}
                            for corpus_split, split in SPLITS.items()
                            for p in (sentiment_pair(rng, corpus_split) for _ in range(per_label))],
    }
    for name, rows in sets.items():
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {name: len(rows) for name, rows in sets.items()}


def build_prompts(out: Path, n: int = 50, seed: int = 0) -> None:
    """Negative story starts (an opener and one body sentence) and neutral sentences, from the test split."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    starts = []
    for _ in range(n):
        attrs = Attributes("negative", rng.choice(("animals", "food", "weather", "school", "travel")),
                           rng.choice(("present", "past")))
        hero = random_character(rng)
        starts.append(f"{sentence(rng, attrs, 'test', hero, OPENERS)} {sentence(rng, attrs, 'test', hero)}")
    neutral = [sentence(rng, Attributes("positive", "travel", "past"), "test", random_character(rng), NEUTRAL_FRAMES)
               for _ in range(n)]
    (out / "steering_negative.txt").write_text("\n".join(starts) + "\n")
    (out / "neutral.txt").write_text("\n".join(neutral) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-label", type=int, default=150)
    parser.add_argument("--out", type=Path, default=CONCEPTS_DIR)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, n in build(args.out, args.per_label, args.seed).items():
        print(f"{name}: {n} examples")
    build_prompts(PROMPTS_DIR, seed=args.seed)
    print(f"prompts written to {PROMPTS_DIR}")


if __name__ == "__main__":
    main()
