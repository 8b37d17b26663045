"""Find where and how hard to steer: a layer x alpha sweep of a concept direction, with its fluency cost.

    python analyses/steering_sweep.py --model demo            # about a minute on a 2-core CPU
    python analyses/steering_sweep.py --model demo --full     # every layer, 7 alphas, 50 prompts: ~4 min

Computes the direction from the concept set (default: difference of means of the
sentiment pairs, averaged over each text's tokens, as ActAdd does: on the demo
model it steers at a lower fluency cost than the last-token direction, which
separates best), then steers every prompt (default: starts of negative held-out
stories) at each layer and alpha: by default the direction's best layer and its
neighbours. Prints the direction's held-out separation per layer, the sweep
table, and the best setting: the highest share of prompts moved toward the
positive label with the perplexity of continuations under 2x. Each setting is
stored as it finishes, so an interrupted sweep keeps what it did.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.cli import comma_list, run_command  # noqa: E402
from workbench.errors import WorkbenchError  # noqa: E402
from workbench.models import load_model  # noqa: E402
from workbench.paths import DATA_DIR  # noqa: E402
from workbench.prompts import load_prompts  # noqa: E402
from workbench.steering.concepts import concept_set_path, load_concept_set  # noqa: E402
from workbench.steering.directions import METHODS, POSITIONS, compute_directions, stored_directions  # noqa: E402
from workbench.steering.evaluation import best_setting, sweep  # noqa: E402
from workbench.store import Store  # noqa: E402

QUICK = {"alphas": [4.0, 8.0, 12.0], "n_prompts": 16, "max_new_tokens": 24}
FULL = {"alphas": [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0], "n_prompts": 50, "max_new_tokens": 24}


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--concepts", default="sentiment_pairs")
    parser.add_argument("--method", default="diff_means", choices=METHODS)
    parser.add_argument("--position", default="mean", choices=POSITIONS,
                        help="where each text's activation is read: its last token, the mean over its tokens, or "
                             "its marked token")
    parser.add_argument("--full", action="store_true",
                        help=f"every layer, alphas {FULL['alphas']}, {FULL['n_prompts']} prompts, "
                             f"{FULL['max_new_tokens']} new tokens (default: the best layer and its neighbours, "
                             f"alphas {QUICK['alphas']}, {QUICK['n_prompts']} prompts, {QUICK['max_new_tokens']} tokens)")
    parser.add_argument("--layers", type=comma_list(int), help="comma-separated layers to sweep")
    parser.add_argument("--alphas", type=comma_list(float), help="comma-separated multiples of the direction")
    parser.add_argument("--prompts", default=str(DATA_DIR / "prompts" / "steering_negative.txt"))
    parser.add_argument("--neutral", default=str(DATA_DIR / "prompts" / "neutral.txt"))
    parser.add_argument("--n-prompts", type=int)
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--db", help="DuckDB file (default: $WORKBENCH_DB or data/workbench.duckdb)")
    args = parser.parse_args(argv)
    for name, value in (FULL if args.full else QUICK).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(args: argparse.Namespace) -> None:
    if args.n_prompts < 1:
        raise WorkbenchError(f"--n-prompts must be at least 1, got {args.n_prompts}")
    store = Store(args.db)
    store.check()
    concepts = load_concept_set(concept_set_path(args.concepts))
    prompts = load_prompts(args.prompts)[: args.n_prompts]
    neutral = load_prompts(args.neutral)[:20]
    model = load_model(args.model)
    table, _, direction_id = compute_directions(model, concepts, store, layers=args.layers, method=args.method,
                                                position=args.position, progress=True)
    print(table[["layer", "auroc", "accuracy", "norm", "relative_norm"]].to_string(index=False))
    vectors = stored_directions(store, direction_id)
    best = int(table.loc[table.auroc.idxmax()].layer)
    layers = args.layers or (sorted(vectors) if args.full else [layer for layer in (best - 1, best, best + 1)
                                                                 if layer in vectors])
    results = sweep(model, {layer: vectors[layer] for layer in layers}, prompts, args.alphas, neutral, store,
                    max_new_tokens=args.max_new_tokens, direction_id=direction_id, progress=True)
    print()
    print(results.round(3).to_string(index=False))
    best = best_setting(results)
    print(f"\nbest with the perplexity under 2x: layer {best['layer']:.0f}, alpha {best['alpha']:g} (success rate "
          f"{best['success_rate']:.2f}, perplexity ratio {best['perplexity_ratio']:.2f}, KL {best['kl']:.3f})"
          if best else "\nno setting kept the perplexity under 2x")


if __name__ == "__main__":
    sys.exit(run_command(main, parse()))
