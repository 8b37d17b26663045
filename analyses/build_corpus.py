"""Write the demo model's corpus (stories, retrieval tasks, concept sets) from a seed.

    python analyses/build_corpus.py --out data/corpus --seed 0 [--size 1.0] [--workers N]

The same seed and size always give the same bytes; see workbench/corpus/build.py for
the layout. Prints one row per file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.corpus.build import CorpusConfig, build_corpus  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/corpus", help="output directory (default: data/corpus)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=float, default=1.0,
                        help="scale of every count; 1.0 is the full corpus (~65M tokens), 0.002 a tiny one")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU)")
    args = parser.parse_args(argv)
    if args.size <= 0:
        parser.error(f"--size must be positive, got {args.size}")
    start = time.time()
    manifest = build_corpus(args.out, CorpusConfig(seed=args.seed, size=args.size), workers=args.workers)
    print(f"{'file':44} {'documents':>10} {'MB':>9}")
    for name, info in manifest["files"].items():
        print(f"{name:44} {info['documents']:>10} {info['bytes'] / 1e6:>9.2f}")
    print(f"wrote {args.out} in {time.time() - start:.1f} s", flush=True)
    return manifest


if __name__ == "__main__":
    main()
