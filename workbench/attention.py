"""Attention maps read back from a recorded run, and how much of each head's attention sinks into the first token.

A recording that keeps attention maps stores them in long form (prompt, layer, head,
query, key, weight; causal maps only key <= query). The app draws dense maps, so this
module turns one prompt's rows back into an array, and summarises every head of a run
by its sink mass: the mean weight a query puts on position 0 (Xiao et al.'s attention
sink), next to what uniform attention over the visible keys would give.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workbench.errors import WorkbenchError
from workbench.store import Store


def attention_runs(store: Store) -> pd.DataFrame:
    """Complete runs that kept attention maps: run id, model, prompt count, newest first."""
    return store.attention_runs()


def attention_maps(store: Store, run_id: int, prompt_id: int) -> np.ndarray:
    """One prompt's attention weights as float32 [L, H, T, T] (query rows, key columns; NaN where masked).

    L counts the recorded layers in order; `recorded_layers` names them.
    """
    store.completed_run(run_id)
    rows = store.read_tensors(run_id, "attention", prompt_id=prompt_id)
    if rows.empty:
        raise WorkbenchError(f"run {run_id} kept no attention maps for prompt {prompt_id} (a prompt past the "
                             "recording's map limit keeps summaries instead: see Long prompts)")
    layers = np.sort(rows.layer.unique())
    n_heads, n = int(rows["head"].max()) + 1, int(rows["query"].max()) + 1
    maps = np.full((len(layers), n_heads, n, n), np.nan, dtype=np.float32)
    maps[np.searchsorted(layers, rows.layer), rows["head"], rows["query"], rows["key"]] = rows.weight
    return maps


def recorded_layers(store: Store, run_id: int) -> list[int]:
    """The block indices a run recorded, in order (all of them unless it was asked for a subset)."""
    run = store.run(run_id)
    return list(run["config"].get("layers") or range(run["n_layers"]))


def sink_mass(store: Store, run_id: int) -> pd.DataFrame:
    """Per layer and head: mean attention on position 0 over every query after it, in every prompt of the run.

    `uniform_mass` is the same mean for attention spread evenly over the keys each query sees.
    """
    store.completed_run(run_id)
    table = store.sink_mass(run_id)
    if table.empty:
        raise WorkbenchError(f"run {run_id} has only one-token prompts: no query can attend to a sink")
    return table
