"""Cached reads of finished results, keyed by database path and run or analysis id.

Complete runs and stored analyses never change, so a widget change redraws from
memory instead of reading (or recomputing) again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from workbench import attention
from workbench.massive import detection as massive
from workbench.massive import views as massive_views
from workbench.steering.directions import cosine_matrix, stored_directions
from workbench.ui.state import AppStore, attempt, db_path

cached = st.cache_data(show_spinner=False, max_entries=64)


def db_version(db: str) -> tuple:
    """Changes whenever the database file or its write-ahead log is written: a cache key for listings."""
    stats = [Path(p).stat() for p in (db, f"{db}.wal") if Path(p).exists()]
    return tuple((s.st_mtime_ns, s.st_size) for s in stats)


@cached
def _analyses(db: str, version: tuple, kind: str, run_id: int | None, model: str | None) -> pd.DataFrame:
    return AppStore(db).analyses(kind, run_id, model)


def analyses(kind: str, run_id: int | None = None, model: str | None = None) -> pd.DataFrame | None:
    """Stored analyses of one kind (optionally of one run or model), newest first; None if unreadable."""
    db = db_path()
    return attempt(_analyses, db, db_version(db), kind, run_id, model)


@cached
def runs(db: str, version: tuple) -> pd.DataFrame:
    return AppStore(db).list_runs()


@cached
def analysis(db: str, analysis_id: int) -> dict:
    return AppStore(db).analysis(analysis_id)


@cached
def attention_runs(db: str, version: tuple) -> pd.DataFrame:
    return attention.attention_runs(AppStore(db))


@cached
def prompts_of(db: str, run_id: int) -> pd.DataFrame:
    return AppStore(db).prompts(run_id)


@cached
def tokens_of(db: str, run_id: int, prompt_id: int) -> list[str]:
    return AppStore(db).tokens(run_id, prompt_id).token.tolist()


@cached
def attention_maps(db: str, run_id: int, prompt_id: int) -> tuple[np.ndarray, list[int]]:
    store = AppStore(db)
    return attention.attention_maps(store, run_id, prompt_id), attention.recorded_layers(store, run_id)


@cached
def sink_mass(db: str, run_id: int) -> pd.DataFrame:
    return attention.sink_mass(AppStore(db), run_id)


@cached
def massive_findings(db: str, analysis_id: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(findings, per-layer table) of a massive-activation analysis."""
    found = AppStore(db).massive_findings(analysis_id)
    return found, (massive.layer_table(found) if not found.empty else found)


@cached
def layer_dim_max(db: str, run_id: int) -> pd.DataFrame:
    return massive_views.layer_dim_max(AppStore(db), run_id)


@cached
def training_fits(path: str, modified: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics, fits) of a training-time table; `modified` (its mtime) renews the cache when it changes."""
    metrics, fits, _ = massive_views.fit_training_table(Path(path))
    return metrics, fits


@cached
def stored_dynamics(db: str, analysis_id: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    store = AppStore(db)
    return store.massive_dynamics(analysis_id), store.dynamics_fits(analysis_id)


@cached
def direction_tables(db: str, analysis_id: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(per-layer quality, projections, cosine matrix between layers) of a direction analysis."""
    store = AppStore(db)
    return (store.direction_quality(analysis_id), store.direction_projections(analysis_id),
            cosine_matrix(stored_directions(store, analysis_id)))


@cached
def direction_vectors(db: str, analysis_id: int) -> dict[int, np.ndarray]:
    return stored_directions(AppStore(db), analysis_id)


@cached
def sweep_table(db: str, analysis_id: int, summary: str) -> pd.DataFrame:
    """A sweep's rows; `summary` (its JSON text) keys the cache, as a sweep still running grows."""
    return AppStore(db).steering_sweep(analysis_id)


def partial_label(summary: str | None) -> str:
    """' (partial: 3 of 10 done)' for an analysis stopped or still running midway (see `start_analysis`), else ''."""
    parsed = json.loads(summary or "{}")
    if parsed.get("status") != "partial":
        return ""
    return f" (partial: {parsed.get('done', 0)} of {parsed.get('total', '?')} done)"


@cached
def sparse_selections(db: str, analysis_id: int) -> pd.DataFrame:
    return AppStore(db).sparse_selections(analysis_id)


@cached
def sparse_sweep(db: str, analysis_id: int) -> pd.DataFrame:
    return AppStore(db).sparse_sweep(analysis_id)


@cached
def kernel_benchmarks(db: str, version: tuple) -> pd.DataFrame:
    return AppStore(db).kernel_benchmarks()
