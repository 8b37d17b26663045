"""Build the demo corpus: mix the parts, make the splits, write the files.

Work is cut into fixed shards, each generated from its own seed string
(``"{seed}/{job}/{split}/{index}"``), and written in shard order, so the bytes on
disk depend only on the seed and the size, never on the number of worker processes.

Layout under the output directory (documents in ``.txt`` files are separated by a
blank line and never contain one)::

    stories/{train,validation,test}.txt          stories and everyday sentences
    retrieval/{train,validation,test}.txt        retrieval documents (1-8 answered questions)
    retrieval/items_{validation,test}.jsonl      one-question items per task and length
    concepts/sentences_{split}.jsonl             {"text", "sentiment", "topic", "tense"}
    concepts/sentiment_pairs_{split}.jsonl       {"positive", "negative", "topic", "tense"}
    manifest.json                                config, generator hash, counts and sha256 of every file
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench import jsonl
from workbench.corpus import retrieval, stories

SEPARATOR = "\n\n"
HELDOUT = ("validation", "test")


@dataclass(frozen=True)
class CorpusConfig:
    """What to generate. ``size`` scales every count (1.0 is the full corpus, ~65M tokens)."""

    seed: int = 0
    size: float = 1.0
    story_docs: int = 500_000  # training documents at size 1.0; 3 in 4 stories, 1 in 4 everyday sentences
    retrieval_docs: int = 100_000
    heldout_fraction: float = 0.01  # documents in each held-out split, relative to train
    eval_items_per_task: int = 40  # per held-out split, task and length
    concept_sentences: int = 4000  # train split; each held-out split gets a quarter
    sentiment_pairs: int = 1000
    task_weights: dict[str, float] = field(
        default_factory=lambda: {"kv": 0.4, "passkey": 0.2, "multihop": 0.4})
    min_length: int = 128
    max_length: int = 1024
    eval_lengths: tuple[int, ...] = retrieval.EVAL_LENGTHS
    shard: int = 2000  # documents per job

    def count(self, base: int, minimum: int = 2) -> int:
        return max(minimum, round(base * self.size))


def generator_hash() -> str:
    """sha256 of the code that generates the corpus, so a corpus built by older code is recognised."""
    digest = hashlib.sha256()
    for module in (stories, retrieval):
        digest.update(Path(module.__file__).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()


def _filler(split: str):
    return lambda rng: stories.sentence(rng, stories.random_attributes(rng), split)


def _generate(job: tuple) -> list[str]:
    """Run one shard: ``(config, kind, split, index, n)`` -> documents or JSON lines."""
    config, kind, split, index, n = job
    rng = random.Random(f"{config.seed}/{kind}/{split}/{index}")
    if kind == "stories":
        return [stories.story(rng, stories.random_attributes(rng), split) if rng.random() < 0.75
                else stories.everyday(rng, split) for _ in range(n)]
    if kind == "retrieval":
        tasks, weights = zip(*config.task_weights.items())
        ratio = config.max_length / config.min_length
        docs = []
        for _ in range(n):
            task, length = rng.choices(tasks, weights)[0], int(config.min_length * ratio ** rng.random())
            docs.append(retrieval.training_document(task, length, rng, _filler(split)))
        return docs
    if kind == "items":  # index is the length here
        return [json.dumps({"id": f"{split}-{task}-{index}-{i}",
                            **retrieval.make_item(task, index, rng, _filler(split)).as_dict()})
                for task in retrieval.TASKS for i in range(n)]
    if kind == "sentences":
        return [json.dumps(stories.labelled_sentence(rng, split)) for _ in range(n)]
    if kind == "pairs":
        return [json.dumps(stories.sentiment_pair(rng, split)) for _ in range(n)]
    raise ValueError(f"unknown job kind {kind!r}")


def heldout_items(split: str, length: int, config: CorpusConfig | None = None) -> list[dict]:
    """The retrieval items a corpus build writes to `retrieval/items_<split>.jsonl` at `length`, regenerated
    alone (the demo model's card reports its accuracy on the test split's)."""
    config = config or CorpusConfig()
    if split not in HELDOUT or length not in config.eval_lengths:
        raise ValueError(f"expected a split of {HELDOUT} and a length of {config.eval_lengths}; got {split}, {length}")
    return [json.loads(line) for line in _generate((config, "items", split, length,
                                                    config.count(config.eval_items_per_task)))]


def _jobs(config: CorpusConfig) -> dict[str, list[tuple]]:
    """Output file -> the shards that make it, in order."""
    def sharded(kind: str, split: str, total: int) -> list[tuple]:
        return [(config, kind, split, i, min(config.shard, total - start))
                for i, start in enumerate(range(0, total, config.shard))]

    files: dict[str, list[tuple]] = {}
    for kind, base in (("stories", config.story_docs), ("retrieval", config.retrieval_docs)):
        train = config.count(base)
        files[f"{kind}/train.txt"] = sharded(kind, "train", train)
        for split in HELDOUT:
            held = max(2, round(train * config.heldout_fraction))
            files[f"{kind}/{split}.txt"] = sharded(kind, split, held)
    for split in HELDOUT:
        per_task = config.count(config.eval_items_per_task)
        files[f"retrieval/items_{split}.jsonl"] = [(config, "items", split, length, per_task)
                                                   for length in config.eval_lengths]
    for kind, name, base in (("sentences", "sentences", config.concept_sentences),
                             ("pairs", "sentiment_pairs", config.sentiment_pairs)):
        for split in stories.SPLITS:
            total = config.count(base if split == "train" else base // 4, minimum=40)
            files[f"concepts/{name}_{split}.jsonl"] = sharded(kind, split, total)
    return files


def build_corpus(out: str | Path, config: CorpusConfig, workers: int | None = None) -> dict:
    """Generate every file of the corpus into ``out``; return the manifest (also written there)."""
    if config.size <= 0:
        raise ValueError(f"size must be positive, got {config.size}")
    out = Path(out)
    files = _jobs(config)
    order = [(name, job) for name, jobs in files.items() for job in jobs]
    workers = workers or min(len(order), os.cpu_count() or 1)
    if workers > 1:
        # fork, where there is one: spawned workers re-run the parent's __main__, which inside Streamlit or
        # a test runner is no script they can run (an AppTest script left as __main__ once hung a spawn
        # Pool for good). ProcessPoolExecutor raises BrokenProcessPool when a worker dies; Pool waits.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
            results = list(pool.map(_generate, [job for _, job in order]))
    else:
        results = [_generate(job) for _, job in order]
    grouped: dict[str, list[str]] = {name: [] for name in files}
    for (name, _), docs in zip(order, results):
        grouped[name].extend(docs)
    manifest = {"config": {**asdict(config), "eval_lengths": list(config.eval_lengths)},
                "generator": generator_hash(), "files": {}}
    for name, docs in grouped.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".txt"):
            assert all(SEPARATOR not in d and not d.endswith("\n") for d in docs), f"bad separator in {name}"
            data = "".join(d + SEPARATOR for d in docs).encode()
        else:
            data = "".join(d + "\n" for d in docs).encode()
        path.write_bytes(data)
        manifest["files"][name] = {"documents": len(docs), "bytes": len(data),
                                   "sha256": hashlib.sha256(data).hexdigest()}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_documents(path: str | Path) -> list[str]:
    """Documents of a ``.txt`` corpus file."""
    return Path(path).read_text().split(SEPARATOR)[:-1]


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a corpus `.jsonl` file (`workbench.jsonl.read_jsonl` without the line numbers)."""
    return [row for _, row in jsonl.read_jsonl(path, "corpus file")]
