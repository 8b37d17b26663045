"""Attention: one head's map with token labels, all heads of a layer as small maps, per-head sink mass."""

from __future__ import annotations

import streamlit as st

from workbench.plots import attention_grid, attention_map, sink_mass_heatmap
from workbench.ui import reads
from workbench.ui.state import attempt, db_path, store


def _pick_run():
    """(run id, prompt id) chosen among complete runs with attention maps, or None with a hint."""
    runs = attempt(reads.attention_runs, db_path(), reads.db_version(db_path())) if store().path.exists() else None
    if runs is None or runs.empty:
        st.info("No recorded run kept attention maps yet: record prompts with **attention maps** kept on the "
                "**Model and runs** page.")
        return None
    left, right = st.columns(2)
    run_id = left.selectbox("Run", runs.run_id.tolist(), key="attn_run",
                            format_func=lambda r: f"run {r} ({runs.set_index('run_id').model[r]})")
    prompts = attempt(reads.prompts_of, db_path(), run_id)
    if prompts is None:
        return None
    prompt_id = right.selectbox("Prompt", prompts.prompt_id.tolist(), key="attn_prompt",
                                format_func=lambda i: f"{i}: {prompts.set_index('prompt_id').text[i][:70]}")
    return run_id, prompt_id


def page() -> None:
    st.title("Attention")
    picked = _pick_run()
    if picked is None:
        return
    run_id, prompt_id = picked
    loaded = attempt(reads.attention_maps, db_path(), run_id, prompt_id)
    tokens = attempt(reads.tokens_of, db_path(), run_id, prompt_id)
    if loaded is None or tokens is None:
        return
    maps, layers = loaded  # [L, H, T, T]
    left, right = st.columns(2)
    layer = left.selectbox("Layer", layers, key="attn_layer", index=len(layers) - 1)
    head = right.selectbox("Head", list(range(maps.shape[1])), key="attn_head")
    st.plotly_chart(_head_figure(db_path(), run_id, prompt_id, layer, head), key="attn_map")
    st.subheader(f"All heads of layer {layer}")
    st.plotly_chart(_grid_figure(db_path(), run_id, prompt_id, layer), key="attn_grid")
    st.subheader("Attention-sink mass")
    sinks = attempt(reads.sink_mass, db_path(), run_id)
    if sinks is not None:
        st.caption(f"Mean attention each head puts on position 0 ({tokens[0]!r}), over every later query of the "
                   f"run's prompts; spreading evenly over the visible keys would give "
                   f"{sinks.uniform_mass.mean():.2f}.")
        st.plotly_chart(_sink_figure(db_path(), run_id), key="attn_sinks")


# Figures of a finished run are cached too: building them costs more than redrawing them.
@reads.cached
def _head_figure(db: str, run_id: int, prompt_id: int, layer: int, head: int):
    maps, layers = reads.attention_maps(db, run_id, prompt_id)
    return attention_map(maps[layers.index(layer), head], reads.tokens_of(db, run_id, prompt_id),
                         f"layer {layer}, head {head}")


@reads.cached
def _grid_figure(db: str, run_id: int, prompt_id: int, layer: int):
    maps, layers = reads.attention_maps(db, run_id, prompt_id)
    return attention_grid(maps[layers.index(layer)], reads.tokens_of(db, run_id, prompt_id))


@reads.cached
def _sink_figure(db: str, run_id: int):
    return sink_mass_heatmap(reads.sink_mass(db, run_id))
