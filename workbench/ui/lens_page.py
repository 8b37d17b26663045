"""Logit and tuned lens: every layer's residual read out as next-token predictions, per layer and position; and
activation patching of a clean / corrupted pair, with attribution patching's estimate beside it."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.config import MassiveConfig, RecordConfig
from workbench.lens.logit_lens import logit_lens, record_lens
from workbench.lens.patching import SITES, record_patching
from workbench.lens.tuned_lens import load_tuned_lens
from workbench.massive.detection import detect
from workbench.plots import LENS_VALUES, lens_kl_figure, lens_map, patching_map
from workbench.recording import record
from workbench.ui import reads
from workbench.ui.navigation import open_page
from workbench.ui.state import MODEL_LOCK, attempt, cached_model, current_model, load_options, store

DEFAULT_PROMPT = "Once upon a time, there was a little girl named Lily. She loved to play with her dog in the park."


@reads.cached
def _lens(spec: str, prompt: str, target: str | None, tuned_path: str | None) -> pd.DataFrame:
    with MODEL_LOCK:
        model = cached_model(spec, True, **load_options())
        tuned = load_tuned_lens(tuned_path, model) if tuned_path else None
        frames = [logit_lens(model, prompt, target=target)]
        if tuned is not None:
            frames.append(logit_lens(model, prompt, target=target, tuned=tuned))
        return pd.concat(frames, ignore_index=True)


def page() -> None:
    st.title("Logit lens")
    model = current_model()
    if model is None:
        return
    if not model.is_generative:
        st.info(f"{model.spec} is an encoder: the lens reads next-token predictions. Load a causal model on "
                "**Model and runs**.")
        return
    st.caption("Each layer's residual read out through the model's own final norm and LM head (its logit scaling "
               "or soft-capping included), at every position. The target is each position's next token unless "
               "you name one; a tuned lens (`workbench tune-lens`) adds its trained translators.")
    prompt = st.text_area("Prompt", DEFAULT_PROMPT, key="lens_prompt")
    left, middle, right = st.columns(3)
    target = left.text_input("Target token (empty: the next token)", "", key="lens_target")
    tuned_path = middle.text_input("Tuned-lens file (optional)", "", key="lens_tuned")
    value = right.radio("Colour", list(LENS_VALUES), format_func=LENS_VALUES.get, key="lens_value")
    rows = attempt(_lens, model.spec, prompt, target or None, tuned_path.strip() or None)
    if rows is None:
        return
    for lens, per_lens in rows.groupby("lens"):
        st.plotly_chart(lens_map(per_lens, value, f"{lens} lens: {LENS_VALUES[value]}"), key=f"lens_map_{lens}")
    st.plotly_chart(lens_kl_figure(rows), key="lens_kl")
    if st.button("Store this lens in the database", key="lens_store"):
        with MODEL_LOCK:
            tuned = attempt(load_tuned_lens, tuned_path.strip(), model) if tuned_path.strip() else None
            analysis_id = attempt(record_lens, model, [prompt], store(), target=target or None, tuned=tuned)
        if analysis_id is not None:
            st.success(f"Stored as analysis {analysis_id} (table lens).")
    _cell(model, prompt, rows)
    _patching(model)


def _cell(model, prompt: str, rows: pd.DataFrame) -> None:
    """One layer and position: the lens's top tokens there, and the same layer on the Attention and Massive
    activations pages (the prompt is recorded with its attention maps once, on the first visit)."""
    st.subheader("One cell, on the other pages")
    logit = rows[rows.lens == "logit"]
    positions = logit[logit.layer == 0].sort_values("position")
    left, right = st.columns(2)
    layer = left.selectbox("Layer", sorted(logit.layer.unique()), key="lens_cell_layer")
    position = right.selectbox("Position", positions.position.tolist(), key="lens_cell_position",
                               format_func=lambda p: f"{p}: {positions.token.iloc[p]!r}")
    cell = logit[(logit.layer == layer) & (logit.position == position)].iloc[0]
    st.caption("Top tokens here: " + ", ".join(f"{t!r} {p:.2f}" for t, p in zip(cell.top_tokens, cell.top_probs,
                                                                                   strict=True)))
    attention, massive = st.columns(2)
    if attention.button(f"Attention at layer {layer}", key="lens_to_attention"):
        if (run_id := attempt(_recorded, model, prompt)) is not None:
            open_page("attention", attn_run=run_id, attn_prompt=0, attn_layer=int(layer))
    if massive.button(f"Massive activations at layer {layer}", key="lens_to_massive"):
        if (run_id := attempt(_recorded, model, prompt)) is not None:
            with MODEL_LOCK:
                analysis_id = attempt(detect, store(), run_id, MassiveConfig())
            if analysis_id is not None:
                open_page("massive", massive_run=run_id, massive_analysis=analysis_id, ablate_layer=int(layer))


def _recorded(model, prompt: str) -> int:
    """The run that recorded `prompt` with attention maps into the chosen database, recording it the first time."""
    runs = st.session_state.setdefault("lens_runs", {})
    key = (model.spec, prompt, str(store().path))
    if key not in runs:
        with MODEL_LOCK:
            runs[key] = record(model, [prompt], store(), RecordConfig(attention=True), progress=False)
    return runs[key]


def _patching(model) -> None:
    """Which layer, position and head carry the clean prompt's answer: run on request, stored, drawn."""
    st.subheader("Activation patching")
    st.caption("The corrupted prompt runs with one activation at a time taken from the clean prompt (the residual "
               "after a block at one position, or one head's output at every position); 1 = the clean answer "
               "restored, 0 = the corrupted run's. Attribution patching's one-pass estimate is drawn beside it.")
    clean = st.text_area("Clean prompt", key="patch_clean")
    corrupt = st.text_area("Corrupted prompt (same number of tokens)", key="patch_corrupt")
    left, middle, right = st.columns(3)
    answer = left.text_input("Answer token of the clean prompt", key="patch_answer")
    wrong = middle.text_input("Answer token of the corrupted prompt", key="patch_wrong")
    sites = right.multiselect("Sites", SITES, default=["resid_post", "head"], key="patch_sites",
                              help="the residual after each block, each block's attention and MLP output (layer x "
                                   "position), each head's output (layer x head)")
    if st.button("Patch and store", key="patch_run", disabled=not sites):
        with MODEL_LOCK:
            st.session_state["patch_analysis"] = attempt(record_patching, model, clean, corrupt, store(), answer,
                                                         wrong or None, sites=tuple(sites))
    analysis_id = st.session_state.get("patch_analysis")
    if analysis_id is None:
        return
    summary = store().analysis(analysis_id)["summary"]
    correlation = ", ".join(f"{site} {value:.2f}" if value is not None else f"{site} undefined"
                            for site, value in summary["correlation"].items())
    st.caption(f"Analysis {analysis_id}: metric {summary['clean_metric']:.3f} clean, {summary['corrupt_metric']:.3f} "
               f"corrupted; correlation of the estimate with the exact grid: {correlation}")
    rows = store().patching(analysis_id)
    for site in (s for s in SITES if s in set(rows.site)):
        per_site = rows[rows.site == site]
        columns = st.columns(2)
        for column, value in zip(columns, ("restored", "estimated"), strict=True):
            column.plotly_chart(patching_map(per_site, value, f"{site}: {value}"), key=f"patch_{site}_{value}")
