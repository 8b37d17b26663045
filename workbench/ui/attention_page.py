"""Attention: one head's map with token labels, all heads of a layer as small maps, per-head sink mass; for long
prompts the tile overview of a summary and the exact weights of any window, recomputed from the model."""

from __future__ import annotations

import json

import streamlit as st

from workbench.attention_summaries import TILES, attention_window, record_summaries
from workbench.plots import attention_grid, attention_map, sink_mass_heatmap, tile_map, window_map
from workbench.tokens import token_texts
from workbench.ui import jobs, reads
from workbench.ui.state import MODEL_LOCK, attempt, current_model, db_path, store

WINDOW_LABELS = 64  # a zoomed window this wide or narrower is labelled with its tokens


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
    if picked is not None:
        _maps(*picked)
    _long_prompts()


def _maps(run_id: int, prompt_id: int) -> None:
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


def _long_prompts() -> None:
    """Summaries of long prompts (no maps stored): the tile overview, and the exact weights of a chosen window."""
    st.subheader("Long prompts")
    st.caption("A map of T tokens holds T² weights per head; for long prompts the workbench keeps the attention mass "
               "of every tile (at most a set number a side) and each query's sink weight, entropy and distance, "
               "and recomputes the exact weights of any window from the model on request.")
    spec = st.session_state.get("model_spec")
    text = st.text_area("Prompt to summarise", key="summary_prompt")
    tiles = st.number_input("Tiles a side", 2, 512, TILES, key="summary_tiles")
    if st.button("Summarise", key="summary_run", disabled=not text.strip()) and (model := current_model()):
        target = store()
        jobs.start("job:summary", "summarising", lambda job: record_summaries(
            model, [text], target, tiles=int(tiles), progress=job.progress))
    jobs.result("job:summary", select="summary_analysis")
    found = reads.analyses("attention-summary", model=spec)
    if found is None or found.empty:
        st.info("No summary stored yet: give a prompt and press **Summarise** (`workbench attention-summary` "
                "stores them too).")
        return
    configs = found.set_index("analysis_id").config.map(json.loads)
    analysis_id = st.selectbox("Summary", configs.index.tolist(), key="summary_analysis",
                               format_func=lambda a: f"analysis {a}: {configs[a]['prompts'][0][:60]!r}")
    config = configs[analysis_id]
    summary = reads.analysis(db_path(), analysis_id)["summary"]
    cols = st.columns(3)
    ids = config.get("prompt_ids") or list(range(len(config["prompts"])))  # a recording's prompts keep its ids
    index = cols[0].selectbox("Prompt", list(range(len(ids))), key="summary_prompt_id",
                              format_func=lambda i: f"{ids[i]}: {config['prompts'][i][:50]!r}")
    prompt_id = ids[index]
    layer = cols[1].selectbox("Layer", config["layers"], key="summary_layer")
    queries = attempt(store().attention_queries, analysis_id, prompt_id, layer)
    if queries is None:
        return
    head = cols[2].selectbox("Head", sorted(queries["head"].unique()), key="summary_head")
    n = summary["n_tokens"][index]
    tiles_rows = attempt(store().attention_tiles, analysis_id, prompt_id, layer, head)
    if tiles_rows is not None:
        st.plotly_chart(tile_map(tiles_rows, n, f"layer {layer}, head {head}: attention mass per tile"),
                        key="summary_tiles_map")
    _window(config["prompts"][index], layer, head, n)


def _window(prompt: str, layer: int, head: int, n: int) -> None:
    """The exact weights of a query x key window, recomputed from the model."""
    st.markdown("**Zoom**: the exact weights of a window")
    cols = st.columns(4)
    q0 = cols[0].number_input("First query", 0, n - 1, max(0, n - 32), key="window_q0")
    q1 = cols[1].number_input("Last query", 0, n - 1, n - 1, key="window_q1")
    k0 = cols[2].number_input("First key", 0, n - 1, max(0, n - 32), key="window_k0")
    k1 = cols[3].number_input("Last key", 0, n - 1, n - 1, key="window_k1")
    if not st.button("Show the window", key="window_run") or (model := current_model()) is None:
        return
    with MODEL_LOCK:
        weights = attempt(attention_window, model, prompt, layer, head, (int(q0), int(q1) + 1), (int(k0), int(k1) + 1))
    if weights is None:
        return
    texts = token_texts(model.tokenizer, model.tokenizer(prompt)["input_ids"])
    narrow = max(int(q1) - int(q0), int(k1) - int(k0)) < WINDOW_LABELS

    def labels(first: int, last: int) -> list[str]:
        return [f"{p}:{texts[p]!r}" if narrow else str(p) for p in range(first, last + 1)]

    st.plotly_chart(window_map(weights, labels(int(q0), int(q1)), labels(int(k0), int(k1)),
                               f"layer {layer}, head {head}: queries {q0}-{q1}, keys {k0}-{k1}"), key="window_map")


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
