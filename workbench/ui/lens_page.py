"""Logit and tuned lens: every layer's residual read out as next-token predictions, per layer and position; and
activation patching of a clean / corrupted pair, with attribution patching's estimate beside it."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.lens.logit_lens import logit_lens, record_lens
from workbench.lens.patching import record_patching
from workbench.lens.tuned_lens import load_tuned_lens
from workbench.plots import LENS_VALUES, lens_kl_figure, lens_map, patching_map
from workbench.ui import reads
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
    _patching(model)


def _patching(model) -> None:
    """Which layer, position and head carry the clean prompt's answer: run on request, stored, drawn."""
    st.subheader("Activation patching")
    st.caption("The corrupted prompt runs with one activation at a time taken from the clean prompt (the residual "
               "after a block at one position, or one head's output at every position); 1 = the clean answer "
               "restored, 0 = the corrupted run's. Attribution patching's one-pass estimate is drawn beside it.")
    clean = st.text_area("Clean prompt", key="patch_clean")
    corrupt = st.text_area("Corrupted prompt (same number of tokens)", key="patch_corrupt")
    left, right = st.columns(2)
    answer = left.text_input("Answer token of the clean prompt", key="patch_answer")
    wrong = right.text_input("Answer token of the corrupted prompt", key="patch_wrong")
    if st.button("Patch and store", key="patch_run"):
        with MODEL_LOCK:
            st.session_state["patch_analysis"] = attempt(record_patching, model, clean, corrupt, store(), answer,
                                                         wrong or None, sites=("resid_post", "head"))
    analysis_id = st.session_state.get("patch_analysis")
    if analysis_id is None:
        return
    summary = store().analysis(analysis_id)["summary"]
    st.caption(f"Analysis {analysis_id}: clean {summary['clean_metric']:.3f}, corrupted "
               f"{summary['corrupt_metric']:.3f}; correlation of the estimate by site: {summary['correlation']}")
    rows = store().query("SELECT * FROM patching WHERE analysis_id = ?", [analysis_id])
    for site in ("resid_post", "head"):
        per_site = rows[rows.site == site]
        columns = st.columns(2)
        for column, value in zip(columns, ("restored", "estimated"), strict=True):
            column.plotly_chart(patching_map(per_site, value, f"{site}: {value}"), key=f"patch_{site}_{value}")
