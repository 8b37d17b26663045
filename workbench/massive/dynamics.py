"""Massive activations across training checkpoints, and the five-parameter curve they follow.

Gallego-Feliciano et al. (arXiv 2508.03616, Eq. 9) fit each layer's metric over
training steps t with an exponentially-modulated logarithm

    f(t) = A * exp(-lambda * x) * log(x) + K,    x = gamma * t + t0,

A the amplitude, lambda the decay (kept >= 0), gamma the time scale, t0 the offset
and K the asymptotic baseline. Like them we fit with scipy's trust-region-reflective
`curve_fit` in normalised space (steps / max step, values min-max scaled) and scale
the parameters back; unlike them we first search globally on their reparametrised
form (Eq. 14) by variable projection, because a single start of the five-parameter
fit often stalls in this ill-conditioned problem. We keep gamma and t0 positive so
that x > 0 over the data. Their per-layer metrics are the
top-1, top-2, top-3 and median |activation| of each layer's output averaged over
sample sequences, and the ratio of the averaged top-1 to the averaged median.
"""

from __future__ import annotations

import itertools
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import OptimizeWarning, curve_fit, least_squares

from workbench.config import POOLINGS, MassiveConfig
from workbench.errors import WorkbenchError
from workbench.massive.detection import detect_prompts, findings, layer_table
from workbench.massive.statistics import pooled_statistics
from workbench.models import load_model
from workbench.progress import ProgressArg, tracked
from workbench.store import Store

PARAMETERS = ("A", "lambda", "gamma", "t0", "K")
METRICS = POOLINGS["mean over prompts"]  # what `checkpoint_metrics` records (the training-time table: "pooled")
_STEP = re.compile(r"step[-_]?(\d+)", re.IGNORECASE)


def emergence_curve(t, A, lam, gamma, t0, K):
    """Eq. 9 of Gallego-Feliciano et al.: A exp(-lam x) log(x) + K with x = gamma t + t0."""
    x = gamma * np.asarray(t, dtype=float) + t0
    return A * np.exp(-lam * x) * np.log(x) + K


@dataclass(frozen=True)
class CurveFit:
    """Fitted parameters (in the data's own units), their standard errors, and R^2 on the data.

    `identified` is False when the checkpoints fix the curve but not its five parameters one by one (they trade
    off along a valley, e.g. an amplitude of 1e147 against a decay of 300: the covariance is singular); the
    standard errors are then NaN, and the curve's own features, its peak over the data's steps (`peak_step`,
    `peak_value`), are what to read."""

    params: dict[str, float]
    stderr: dict[str, float]
    r2: float
    n_points: int
    identified: bool = True
    peak_step: float = float("nan")
    peak_value: float = float("nan")

    def predict(self, t) -> np.ndarray:
        return emergence_curve(t, *(self.params[p] for p in PARAMETERS))


def _design(t, beta, tau0):
    """Columns of the reparametrised curve (their Eq. 14): exp(-beta t) log(t + tau0), exp(-beta t), 1."""
    decay = np.exp(-beta * t)
    return np.stack([decay * np.log(t + tau0), decay, np.ones_like(t)], axis=1)


def _profile_residuals(nonlinear, t, y):
    """Residuals at the best linear (A1, A2, K) for given (beta, tau0): variable projection."""
    X = _design(t, *nonlinear)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    return X @ coef - y


def fit_emergence(steps, values) -> CurveFit:
    """Fit Eq. 9 to (step, value) points; raise if there are too few points or no curve beats a flat line.

    The search runs on the reparametrised form f = exp(-beta t) [A1 log(t + tau0) + A2] + K, where
    A1, A2 and K enter linearly and are solved exactly for each (beta, tau0), from a grid of starts;
    the optimum is mapped back (beta = lambda gamma, tau0 = t0 / gamma, A1 = A exp(-lambda t0),
    A2 = A1 log gamma) and polished by `curve_fit` on Eq. 9 itself, which gives the standard errors. Where the
    polish fails or does worse (the optimum lies in a limit of Eq. 9, such as linear growth: t0 -> infinity),
    the reparametrised curve stands, its Eq. 9 parameters not identified.
    """
    t, y = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    keep = np.isfinite(t) & np.isfinite(y)
    t, y = t[keep], y[keep]
    if len(t) < len(PARAMETERS) + 1:
        raise WorkbenchError(f"the curve has {len(PARAMETERS)} parameters; fitting needs at least "
                             f"{len(PARAMETERS) + 1} checkpoints, got {len(t)}")
    if np.ptp(y) == 0:
        raise WorkbenchError(f"the series is flat ({y[0]:.4g} at every checkpoint): there is no curve to fit")
    t_scale = t.max() or 1.0
    y_low, y_range = y.min(), np.ptp(y)
    tn, yn = t / t_scale, (y - y_low) / y_range
    total = float(np.sum((yn - yn.mean()) ** 2))
    best = None
    with np.errstate(all="ignore"):  # wild trial points overflow; least_squares steps back from them
        for beta, tau0 in itertools.product((0.0, 1.0, 5.0, 25.0), (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)):
            found = least_squares(_profile_residuals, (beta, tau0), args=(tn, yn),
                                  bounds=([0, 1e-9], [np.inf, np.inf]))
            if best is None or found.cost < best.cost:
                best = found
        beta, tau0 = best.x
        coef, *_ = np.linalg.lstsq(_design(tn, beta, tau0), yn, rcond=None)
        (a1, a2, k) = coef
        gamma = np.exp(a2 / a1) if a1 else 1.0
        mapped = np.array([a1 * np.exp(beta * tau0), beta / gamma, gamma, tau0 * gamma, k])  # A, lambda, gamma, t0, K
    projected = float(np.sum((_design(tn, beta, tau0) @ coef - yn) ** 2))
    bounds = ([-np.inf, 0.0, 1e-12, 1e-12, -np.inf], [np.inf, np.inf, np.inf, np.inf, np.inf])
    polished = None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", OptimizeWarning)
        try:
            start = np.clip(np.nan_to_num(mapped, nan=1.0, posinf=1e300, neginf=-1e300), *bounds)
            p, cov = curve_fit(emergence_curve, tn, yn, p0=start, bounds=bounds, method="trf")
            residual = float(np.sum((emergence_curve(tn, *p) - yn) ** 2))
            if np.isfinite(residual) and residual <= projected * (1 + 1e-6) + 1e-12:
                polished = p, cov, residual
        except (RuntimeError, ValueError):
            pass
    residual = polished[2] if polished else projected
    if not residual < total:  # worse than a flat line at the mean: no fit, whatever the optimiser returned
        raise WorkbenchError(f"no curve fits better than a flat line (R^2 = {1.0 - residual / total:.3g})")
    scale = np.array([y_range, 1.0, 1.0 / t_scale, 1.0, y_range])  # back to data units
    shift = np.array([0.0, 0.0, 0.0, 0.0, y_low])
    grid = np.linspace(t.min(), t.max(), 512)
    with np.errstate(all="ignore"):
        if polished:
            p, cov, _ = polished
            errors = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(cov)) else np.full(5, np.nan)
            relative = errors / np.abs(p)
            identified = bool(np.all((relative > 1e-8) & (relative < 10)))  # a singular covariance: ~0 or huge
            params = p * scale + shift
            curve = emergence_curve(grid, *params)
        else:
            identified, errors, params = False, np.full(5, np.nan), mapped * scale + shift
            curve = _design(grid / t_scale, beta, tau0) @ coef * y_range + y_low
    peak = int(np.nanargmax(curve)) if np.isfinite(curve).any() else 0
    return CurveFit(params=dict(zip(PARAMETERS, params)),
                    stderr=dict(zip(PARAMETERS, errors * scale if identified else np.full(5, np.nan))),
                    r2=1.0 - residual / total, n_points=len(t), identified=identified,
                    peak_step=float(grid[peak]), peak_value=float(curve[peak]))


def step_of(label: str) -> int:
    """The training step of a checkpoint: named in its label or deepest path part ('step1000',
    'runs/step-1000/hf'), else in the metrics.json of its directory (as analyses/train_demo_model.py
    writes)."""
    for part in reversed(Path(label).parts):
        if found := _STEP.search(part):
            return int(found.group(1))
    metrics = Path(label) / "metrics.json"
    if metrics.is_file() and (steps := json.loads(metrics.read_text()).get("training", {}).get("steps")):
        return int(steps)
    raise WorkbenchError(f"cannot read a training step from checkpoint {label!r}; name it like step1000 "
                         "or pass the steps explicitly")


def checkpoint_series(model_path: str | Path) -> list[str]:
    """The checkpoints shipped with a model, oldest first: the `<name>-checkpoints/step-N` directories beside
    it, then the model itself when its own step is known."""
    model_path = Path(model_path)
    found = [str(p.parent) for p in model_path.parent.glob(f"{model_path.name}-checkpoints/*/config.json")]
    try:
        step_of(str(model_path))
        found.append(str(model_path))
    except WorkbenchError:  # a model without a known step of its own: its checkpoints only
        pass
    return sorted(found, key=step_of)


FEATURES = ("peak_step", "peak_value")  # stored beside the parameters as rows of their own, without a stderr


def fit_table(metrics: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """Fit every (layer, metric) series of a long table with columns step, layer, metric, value: a row per
    parameter (estimate, stderr: NaN where the parameters are not identified) and per feature of the curve
    (`FEATURES`), and the series that could not be fitted, each with why ({layer, metric, reason})."""
    rows, failed = [], []
    for (layer, metric), series in metrics.groupby(["layer", "metric"]):
        try:
            fit = fit_emergence(series.step, series.value)
        except WorkbenchError as e:
            failed.append({"layer": int(layer), "metric": metric, "reason": str(e)})
            continue
        common = {"layer": layer, "metric": metric, "r2": fit.r2, "n_points": fit.n_points}
        rows += [{**common, "parameter": name, "estimate": fit.params[name], "stderr": fit.stderr[name]}
                 for name in PARAMETERS]
        rows += [{**common, "parameter": name, "estimate": getattr(fit, name), "stderr": float("nan")}
                 for name in FEATURES]
    return pd.DataFrame(rows, columns=["layer", "metric", "parameter", "estimate", "stderr", "r2", "n_points"]), failed


def fit_summary(fits: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per layer of a metric's fits: R^2, points, the curve's peak over the data (step, value), and each
    Eq. 9 parameter as 'estimate ± stderr' where the parameters are identified, '—' where only the curve is."""
    fits = fits[fits.metric == metric]
    if fits.empty:
        return pd.DataFrame(columns=["layer", "r2", "n_points", *FEATURES, *PARAMETERS])
    wide = fits.pivot(index="layer", columns="parameter", values="estimate")
    errors = fits.pivot(index="layer", columns="parameter", values="stderr")
    table = fits.groupby("layer")[["r2", "n_points"]].first().join(wide[list(FEATURES)])
    for name in PARAMETERS:
        table[name] = [f"{e:.4g} ± {s:.2g}" if np.isfinite(s) else "—" for e, s in zip(wide[name], errors[name])]
    return table.reset_index()


def failure_lines(failed: list[dict], metric: str) -> list[str]:
    """Why a metric's series were not fitted: one line per distinct reason, with the layers it applies to."""
    by_reason: dict[str, list[int]] = {}
    for item in failed:
        if item["metric"] == metric:
            by_reason.setdefault(item["reason"], []).append(item["layer"])
    return [f"not fitted (layers {', '.join(map(str, layers))}): {reason}" for reason, layers in by_reason.items()]


def checkpoint_metrics(store: Store, run_id: int, config: MassiveConfig) -> pd.DataFrame:
    """The per-layer metrics of one recorded checkpoint as long rows (layer, metric, value)."""
    table = layer_table(findings(store, run_id, config))
    return table.melt(id_vars="layer", value_vars=[m for m in METRICS if m in table], var_name="metric")


def _checkpoint_metrics(spec: str, checkpoint: str, step: int, prompts: list[str], store: Store,
                        config: MassiveConfig) -> pd.DataFrame:
    """One checkpoint's per-layer metrics under both poolings (the detection's recording stored on the way)."""
    model = load_model(checkpoint) if Path(checkpoint).is_dir() else load_model(spec, checkpoint)
    detection = detect_prompts(model, prompts, store, config, progress=False)
    metrics = checkpoint_metrics(store, store.analysis(detection)["run_id"], config)
    pooled = pd.DataFrame(pooled_statistics(model, prompts)).melt(
        id_vars="layer", value_vars=list(POOLINGS["pooled"]), var_name="metric")
    return pd.concat([metrics, pooled], ignore_index=True).assign(checkpoint=checkpoint, step=step)


def dynamics(spec: str, checkpoints: list[str], prompts: list[str], store: Store,
             steps: list[int] | None = None, config: MassiveConfig | None = None, progress: ProgressArg = True) -> int:
    """Record `prompts` at every checkpoint, store the metrics under both poolings (`statistics`: the detection's
    mean over prompts, and the model card's pooled figures) and their fits; return the analysis id.

    A checkpoint is a revision of `spec` (a hub revision, or a bundled model's checkpoint name) or a
    model directory of its own; steps default to the number in each checkpoint's name.
    """
    config = config or MassiveConfig()
    if not checkpoints:
        raise WorkbenchError("no checkpoints given")
    steps = steps or [step_of(c) for c in checkpoints]
    if len(steps) != len(checkpoints):
        raise WorkbenchError(f"{len(checkpoints)} checkpoints but {len(steps)} steps")
    parts = []
    with tracked(progress, len(checkpoints), "checkpoints", "checkpoint") as done:
        for checkpoint, step in zip(checkpoints, steps):
            parts.append(_checkpoint_metrics(spec, checkpoint, step, prompts, store, config))
            done(note=f"step {step}")
    metrics = pd.concat(parts, ignore_index=True)
    fits, failed = fit_table(metrics)
    return store.save_analysis(
        "massive-dynamics", {**config.to_dict(), "spec": spec, "checkpoints": checkpoints, "steps": steps},
        {"metrics": metrics, "fits": fits}, model=spec,
        summary={"layers_fitted": int(fits.layer.nunique()) if not fits.empty else 0, "failed_fits": failed})
