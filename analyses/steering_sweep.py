"""Find where and how hard to steer: a layer x alpha sweep of a concept direction, with its fluency cost.

    python analyses/steering_sweep.py --model demo --db runs.duckdb

Computes the direction from the concept set (default: difference of means of the
sentiment pairs, averaged over each text's tokens, as ActAdd does: on the demo
model it steers at a lower fluency cost than the last-token direction, which
separates best), then steers every prompt (default: starts of negative held-out
stories) at each layer and alpha. Prints the direction's held-out separation per layer, the
sweep table, and the best setting: the highest share of prompts moved toward the
positive label with the perplexity of continuations under 2x.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.cli import comma_list  # noqa: E402
from workbench.models import load_model  # noqa: E402
from workbench.paths import DATA_DIR  # noqa: E402
from workbench.prompts import load_prompts  # noqa: E402
from workbench.steering.concepts import concept_set_path, load_concept_set  # noqa: E402
from workbench.steering.directions import compute_directions, stored_directions  # noqa: E402
from workbench.steering.evaluation import best_setting, sweep  # noqa: E402
from workbench.store import Store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--concepts", default="sentiment_pairs")
    parser.add_argument("--method", default="diff_means", help="diff_means or pca_pairs")
    parser.add_argument("--position", default="mean", help="last, mean or marked")
    parser.add_argument("--layers", type=comma_list(int), help="comma-separated layers to sweep (default: all)")
    parser.add_argument("--alphas", type=comma_list(float), default=[0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0],
                        help="comma-separated multiples of the direction")
    parser.add_argument("--prompts", default=str(DATA_DIR / "prompts" / "steering_negative.txt"))
    parser.add_argument("--neutral", default=str(DATA_DIR / "prompts" / "neutral.txt"))
    parser.add_argument("--n-prompts", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--db", help="DuckDB file (default: $WORKBENCH_DB or data/workbench.duckdb)")
    args = parser.parse_args()

    store = Store(args.db)
    model = load_model(args.model)
    concepts = load_concept_set(concept_set_path(args.concepts))
    table, _, direction_id = compute_directions(model, concepts, store, method=args.method,
                                                position=args.position)
    print(table[["layer", "auroc", "accuracy", "norm", "relative_norm"]].to_string(index=False))
    vectors = stored_directions(store, direction_id)
    if args.layers:
        vectors = {layer: vectors[layer] for layer in args.layers}
    prompts = load_prompts(args.prompts)[: args.n_prompts]
    results = sweep(model, vectors, prompts, args.alphas,
                    load_prompts(args.neutral)[:20], store, max_new_tokens=args.max_new_tokens,
                    direction_id=direction_id)
    print()
    print(results.round(3).to_string(index=False))
    best = best_setting(results)
    print(f"\nbest (perplexity under 2x): {best}" if best else "\nno setting kept the perplexity under 2x")


if __name__ == "__main__":
    main()
