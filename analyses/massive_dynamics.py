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

from workbench.cli import comma_list  # noqa: E402
from workbench.config import MassiveConfig  # noqa: E402
from workbench.demo_model import MASSIVE_PROMPTS  # noqa: E402
from workbench.errors import WorkbenchError  # noqa: E402
from workbench.massive.dynamics import METRICS, checkpoint_series, dynamics  # noqa: E402
from workbench.massive.statistics import METRIC_LABELS  # noqa: E402
from workbench.massive.views import save_training_dynamics, training_table_path  # noqa: E402
from workbench.models import resolve_spec  # noqa: E402
from workbench.prompts import load_prompts  # noqa: E402
from workbench.store import Store  # noqa: E402


def strongest_layers(metrics: pd.DataFrame, config: MassiveConfig) -> pd.DataFrame:
    """Per step: the layer with the largest top-1 / median ratio, its numbers, and whether it is massive."""
    wide = metrics.pivot_table(index=["step", "layer"], columns="metric", values="value").reset_index()
    best = wide.loc[wide.groupby("step").ratio.idxmax(), ["step", "layer", "top1", "median", "ratio"]]
    return best.assign(massive=[bool(config.is_massive(t, m)) for t, m in zip(best.top1, best["median"])])


def fit_rows(store: Store, analysis_id: int, metric: str) -> pd.DataFrame:
    """The fitted parameters of one metric, a row per layer (estimate ± standard error), with R^2."""
    fits = store.dynamics_fits(analysis_id, metric)
    if fits.empty:
        return fits
    fits["value"] = [f"{e:.4g} ± {s:.2g}" for e, s in zip(fits.estimate, fits.stderr)]
    table = fits.pivot(index="layer", columns="parameter", values="value")
    return table.join(fits.groupby("layer")[["r2", "n_points"]].first()).reset_index()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo", help="model spec: 'demo', a local directory or a hub id")
    p.add_argument("--checkpoints", help="comma-separated revisions or directories (default: those shipped)")
    p.add_argument("--steps", type=comma_list(int),
                   help="comma-separated training steps of the checkpoints (default: their names)")
    p.add_argument("--prompts", help="prompt file (default: the demo card's massive-activation prompts)")
    p.add_argument("--metric", default="ratio", choices=METRICS, help="metric whose fits are printed")
    p.add_argument("--db", help="DuckDB file (default: $WORKBENCH_DB or data/workbench.duckdb)")
    args = p.parse_args(argv)
    config = MassiveConfig()
    try:
        source, _ = resolve_spec(args.model)
        checkpoints = args.checkpoints.split(",") if args.checkpoints else checkpoint_series(source)
        if not checkpoints:
            raise WorkbenchError(f"{args.model} ships no checkpoints: pass --checkpoints")
        prompts = load_prompts(args.prompts) if args.prompts else list(MASSIVE_PROMPTS)
        store = Store(args.db)
        recorded = dynamics(args.model, checkpoints, prompts, store, args.steps, config)
        metrics = store.massive_dynamics(recorded)
        print(f"recorded checkpoints (analysis {recorded}), Sun et al.'s criterion "
              f"|a| > {config.abs_threshold:g} and > {config.ratio_threshold:g}x the median:")
        print(strongest_layers(metrics, config).to_string(index=False, float_format=lambda x: f"{x:.4g}"))
        series = [("recorded checkpoints", recorded, args.metric)]  # the training-time table is pooled
        if (table := training_table_path(source)) is not None:
            series.append((f"training-time table {table}", save_training_dynamics(store, args.model, table),
                           f"{args.metric}_pooled"))
    except WorkbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for label, analysis_id, metric in series:
        fits = fit_rows(store, analysis_id, metric) if metric in METRIC_LABELS else pd.DataFrame()
        print(f"\nfits of {METRIC_LABELS.get(metric, metric)} over the {label} (analysis {analysis_id}):")
        print(fits.to_string(index=False) if not fits.empty else "none: a fit needs at least six checkpoints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
