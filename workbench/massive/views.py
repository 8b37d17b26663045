"""Tables the app draws massive activations from: layer x dimension maxima, training-time series, fitted curves.

Everything here reads what a recording, a detection or a training run already stored;
nothing runs a model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from workbench.config import POOLINGS
from workbench.errors import WorkbenchError
from workbench.massive.dynamics import PARAMETERS, emergence_curve, fit_table
from workbench.store import Store

TRAINING_TABLE = "massive_by_checkpoint.csv"
_TRAINING_METRICS = POOLINGS["pooled"]  # the training-time table's columns: the pooled metrics


def layer_dim_max(store: Store, run_id: int, site: str = "resid_post", max_dims: int = 64) -> pd.DataFrame:
    """Per layer and dimension, the largest |activation| over the run's tokens (layer, dim, max_abs).

    Read from each token's top-k dimensions, so a cell is exact wherever that dimension was among
    the top k of the token holding its maximum, and missing otherwise (small values, by construction).
    Only the `max_dims` dimensions with the largest maxima are kept, so wide models stay readable.
    """
    store.completed_run(run_id)
    table = store.layer_dim_max(run_id, site)
    if table.empty:
        raise WorkbenchError(f"run {run_id} has no {site!r} statistics")
    strongest = table.groupby("dim").max_abs.max().nlargest(max_dims).index
    return table[table.dim.isin(strongest)].reset_index(drop=True)


def training_table_path(model_path: str | Path) -> Path | None:
    """The training-time table shipped beside a model trained by analyses/train_demo_model.py, if any."""
    path = Path(model_path) / TRAINING_TABLE
    return path if path.is_file() else None


def training_metrics(path: str | Path) -> pd.DataFrame:
    """The training-time table as long rows (step, layer, metric, value), like `workbench.massive.dynamics` stores."""
    table = pd.read_csv(path)
    missing = {"step", "layer", *_TRAINING_METRICS} - set(table.columns)
    if missing:
        raise WorkbenchError(f"{path} lacks the columns {sorted(missing)}; is it a {TRAINING_TABLE}?")
    return table.melt(id_vars=["step", "layer"], value_vars=list(_TRAINING_METRICS), var_name="metric")


def fitted_curves(fits: pd.DataFrame, metric: str, steps, points: int = 200) -> pd.DataFrame:
    """The fitted Eq. 9 curve of each layer (layer, step, value) on a log-spaced grid over `steps`.

    `fits` is a `dynamics.fit_table` (layer, metric, parameter, estimate, ...).
    """
    chosen = fits[fits.metric == metric]
    if chosen.empty:
        return pd.DataFrame(columns=["layer", "step", "value"])
    steps = np.asarray(steps, dtype=float)
    low = max(steps[steps > 0].min() if (steps > 0).any() else 1.0, 1.0)
    grid = np.unique(np.concatenate([[steps.min()], np.geomspace(low, max(steps.max(), low), points)]))
    parts = []
    for layer, rows in chosen.groupby("layer"):
        params = rows.set_index("parameter").estimate
        with np.errstate(all="ignore"):
            values = emergence_curve(grid, *(params[p] for p in PARAMETERS))
        parts.append(pd.DataFrame({"layer": layer, "step": grid, "value": values}))
    return pd.concat(parts, ignore_index=True)


def fit_training_table(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """(metrics, fits, failed fits) of a training-time table: the series, their five-parameter fits, and the
    series that could not be fitted with why."""
    metrics = training_metrics(path)
    return metrics, *fit_table(metrics)


def save_training_dynamics(store: Store, spec: str, table: str | Path) -> int:
    """Store a training-time table and its fits as a `massive-dynamics` analysis, like `dynamics.dynamics`."""
    metrics, fits, failed = fit_training_table(table)
    metrics = metrics.assign(checkpoint=metrics.step.map(lambda s: f"step-{s}"))
    return store.save_analysis("massive-dynamics", {"spec": spec, "training_table": str(table)},
                               {"metrics": metrics, "fits": fits}, model=spec,
                               summary={"layers_fitted": int(fits.layer.nunique()) if not fits.empty else 0,
                                        "failed_fits": failed})
