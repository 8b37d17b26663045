"""Massive activations across training: per-layer metrics at each checkpoint and the five-parameter fits.

    python analyses/massive_dynamics.py --model demo --db runs.duckdb
    python analyses/massive_dynamics.py --model EleutherAI/pythia-160m --checkpoints step1000,step2000,... \
        --db runs.duckdb

Records the prompts (default: the demo card's four massive-activation prompts) at every checkpoint
(default: those shipped with the model, the model itself last), detects massive activations by Sun et
al.'s criterion, and stores the per-layer metrics with their fits (Gallego-Feliciano et al., Eq. 9; a
fit needs six checkpoints). A model trained by analyses/train_demo_model.py also ships the metrics of
every checkpoint saved during training, pooled over the prompts instead of averaged
(`workbench.massive.statistics`): those are fitted and stored too, under the pooled metrics' names. Prints,
per checkpoint, the strongest layer and whether anything is massive, then the fitted parameters of
`--metric` per layer (for the training-time table, its pooled counterpart).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.cli import comma_list, run_command  # noqa: E402
from workbench.config import POOLINGS, MassiveConfig  # noqa: E402
from workbench.demo_model import MASSIVE_PROMPTS  # noqa: E402
from workbench.errors import WorkbenchError  # noqa: E402
from workbench.massive.dynamics import (PARAMETERS, checkpoint_series, dynamics, failure_lines,  # noqa: E402
                                        fit_summary)
from workbench.massive.statistics import METRIC_LABELS  # noqa: E402
from workbench.massive.views import save_training_dynamics, training_table_path  # noqa: E402
from workbench.models import resolve_spec  # noqa: E402
from workbench.prompts import load_prompts  # noqa: E402
from workbench.store import Store  # noqa: E402


def strongest_layers(metrics: pd.DataFrame, config: MassiveConfig) -> pd.DataFrame:
    """Per step, pooled over the prompts as the model card is: the layer with the largest top-1 / median ratio,
    its numbers, the same layer's mean-over-prompts ratio (the detection's), and whether it is massive."""
    wide = metrics.pivot_table(index=["step", "layer"], columns="metric", values="value").reset_index()
    best = wide.loc[wide.groupby("step").ratio_pooled.idxmax(),
                    ["step", "layer", "top1_pooled", "median_pooled", "ratio_pooled", "ratio"]]
    massive = [bool(config.is_massive(t, m)) for t, m in zip(best.top1_pooled, best.median_pooled)]
    return best.rename(columns={"top1_pooled": "top |a|", "median_pooled": "median |a|", "ratio_pooled": "ratio",
                                "ratio": "ratio (mean over prompts)"}).assign(massive=massive)


def print_fits(store: Store, analysis_id: int, metric: str, label: str) -> None:
    """A metric's fits per layer, and why the series that were not fitted were not."""
    summary = fit_summary(store.dynamics_fits(analysis_id, metric), metric)
    print(f"\nfits of {METRIC_LABELS.get(metric, metric)} over the {label} (analysis {analysis_id}):")
    if not summary.empty:
        print(summary.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
        if (summary[list(PARAMETERS)] == "—").any().any():
            print("—: the checkpoints fix the curve (its R^2 and peak) but not its five parameters one by one; "
                  "they trade off along a valley of the fit")
    for line in failure_lines(store.analysis(analysis_id)["summary"].get("failed_fits", []), metric):
        print(line)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo", help="model spec: 'demo', a local directory or a hub id")
    p.add_argument("--checkpoints", help="comma-separated revisions or directories (default: those shipped)")
    p.add_argument("--steps", type=comma_list(int),
                   help="comma-separated training steps of the checkpoints (default: their names)")
    p.add_argument("--prompts", help="prompt file (default: the demo card's massive-activation prompts)")
    p.add_argument("--metric", default="ratio_pooled", choices=[*POOLINGS["mean over prompts"], *POOLINGS["pooled"]],
                   help="metric whose fits are printed (default ratio_pooled: the model card's pooling)")
    p.add_argument("--db", help="DuckDB file (default: $WORKBENCH_DB or data/workbench.duckdb)")
    args = p.parse_args(argv)
    return run_command(record_and_fit, args)


def record_and_fit(args) -> None:
    config = MassiveConfig()
    source, _ = resolve_spec(args.model)
    checkpoints = args.checkpoints.split(",") if args.checkpoints else checkpoint_series(source)
    if not checkpoints:
        raise WorkbenchError(f"{args.model} ships no checkpoints: pass --checkpoints")
    prompts = load_prompts(args.prompts) if args.prompts else list(MASSIVE_PROMPTS)
    store = Store(args.db)
    store.check()
    recorded = dynamics(args.model, checkpoints, prompts, store, args.steps, config)
    metrics = store.massive_dynamics(recorded)
    print(f"recorded checkpoints (analysis {recorded}), the layer with the largest ratio pooled over the prompts "
          f"(as the model card counts); massive by Sun et al.'s criterion |a| > {config.abs_threshold:g} and > "
          f"{config.ratio_threshold:g}x the median:")
    print(strongest_layers(metrics, config).to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    series = [("recorded checkpoints", recorded, args.metric)]
    if (table := training_table_path(source)) is not None:  # the training-time table is pooled only
        series.append((f"training-time table {table}", save_training_dynamics(store, args.model, table),
                       f"{args.metric.removesuffix('_pooled')}_pooled"))
    for label, analysis_id, metric in series:
        print_fits(store, analysis_id, metric, label)


if __name__ == "__main__":
    sys.exit(main())
