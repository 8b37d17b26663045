"""Accuracy–sparsity sweep: dense, DELTA, AnchorAttention and DeltaLLM over budgets and context lengths.

    python analyses/sparsity_sweep.py --model demo                 # one item per task: ~1.5 min on a 2-core CPU
    python analyses/sparsity_sweep.py --model demo --items 20      # the model card's setting: ~30 min on a CPU

Each retrieval item (kv, passkey, multihop) is prefilled and its last tokens decoded teacher-forced
under each method and under dense attention; the table gives retrieval accuracy, perplexity of the
decoded tokens, KL and top-1 agreement with dense, and the attended fraction actually reached. Results
go to the database as one `sparse-sweep` analysis (the sweep's rows and every decoded step).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.cli import comma_list, run_command
from workbench.corpus.retrieval import TASKS
from workbench.errors import WorkbenchError
from workbench.models import load_model
from workbench.sparse.sweep import METHODS, accuracy_curve, record_sweep
from workbench.store import Store


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo", help="model spec: 'demo', a local directory or a hub id")
    p.add_argument("--lengths", type=comma_list(int), default=[1024], help="context lengths in tokens (default 1024)")
    p.add_argument("--budgets", type=comma_list(float), default=[0.5, 0.25, 0.1],
                   help="shares kept, in (0, 1] (default 0.5,0.25,0.1; dense is always run)")
    p.add_argument("--methods", type=comma_list(str), default=list(METHODS))
    p.add_argument("--tasks", type=comma_list(str), default=list(TASKS))
    p.add_argument("--items", type=int, default=1, help="items per task and length (default 1)")
    p.add_argument("--decode-tokens", type=int, default=32, help="tokens decoded at the end of each item")
    p.add_argument("--recall", action="store_true", help="also measure recall against dense attention")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (1 is fastest on a busy shared machine)")
    p.add_argument("--db", help="DuckDB file (default: $WORKBENCH_DB or data/workbench.duckdb)")
    args = p.parse_args(argv)
    return run_command(_sweep, args)


def _sweep(args) -> None:
    if args.items < 1:
        raise WorkbenchError(f"--items must be at least 1, got {args.items}")
    unknown = sorted(set(args.tasks) - set(TASKS))
    if unknown:
        raise WorkbenchError(f"unknown tasks {unknown}; expected some of {', '.join(TASKS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    store = Store(args.db)
    store.check()
    model = load_model(args.model, device=args.device, dtype="float32")
    config = {k: v for k, v in vars(args).items() if k not in ("db", "device")}
    analysis_id, sweep = record_sweep(store, args.model, model.hf, model.tokenizer, config, methods=args.methods,
                                      budgets=args.budgets, lengths=args.lengths, tasks=args.tasks,
                                      n_items=args.items, decode_tokens=args.decode_tokens, recall=args.recall,
                                      seed=args.seed)
    print(sweep.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print("\nretrieval accuracy by budget (mean over tasks):")
    print(accuracy_curve(sweep).to_string(float_format=lambda x: f"{x:.3f}"))
    print(f"\nanalysis {analysis_id} (each task's rows were stored as it finished)")


if __name__ == "__main__":
    sys.exit(main())
