"""Model and runs: pick a model, record prompts, browse recorded runs and their tokens."""

from __future__ import annotations

import streamlit as st

from workbench.config import RecordConfig
from workbench.errors import WorkbenchError
from workbench.models import bundled_models
from workbench.plots import token_layer_heatmap
from workbench.prompts import validate_prompts
from workbench.recording import record
from workbench.ui.state import MODEL_LOCK, cached_model, current_model, store


def _model_picker() -> None:
    st.subheader("Model")
    default = "demo" if "demo" in bundled_models() else ""
    spec = st.text_input("Model spec", value=st.session_state.get("model_spec", default),
                         help="'demo', a local Hugging Face directory, or a hub id such as gpt2", key="spec_input")
    if st.button("Load model", type="primary", key="load"):
        try:
            cached_model(spec, attention=True)
            st.session_state["model_spec"] = spec
        except WorkbenchError as e:
            st.error(str(e))
    model = current_model() if st.session_state.get("model_spec") else None
    if model is not None:
        st.success(f"{model.spec}: {model.model_type}, {model.n_layers} layers, d_model {model.d_model}, "
                   f"{model.n_heads} heads, {model.dtype} on {model.device}")


def _recorder() -> None:
    st.subheader("Record prompts")
    text = st.text_area("Prompts, one per line", value="The cat sat on the mat.\nOnce upon a time", key="prompts")
    keep = st.multiselect("Also keep", ["full vectors", "attention maps", "attention output", "MLP output"])
    if st.button("Record", disabled=not st.session_state.get("model_spec"), key="record"):
        config = RecordConfig(vectors="full vectors" in keep, attention="attention maps" in keep,
                              attn_out="attention output" in keep, mlp_out="MLP output" in keep)
        bar = st.progress(0.0, text="recording…")
        try:
            prompts = validate_prompts([line for line in text.splitlines() if line.strip()])
            with MODEL_LOCK:
                run_id = record(current_model(), prompts, store(), config,
                                progress=lambda done, total: bar.progress(done / total, text=f"{done}/{total} prompts"))
            st.success(f"Recorded run {run_id}.")
        except WorkbenchError as e:
            st.error(str(e))


def _runs_browser() -> None:
    st.subheader("Recorded runs")
    try:
        runs = store().list_runs()
    except WorkbenchError as e:
        st.error(str(e))
        return
    if runs.empty:
        st.info("No runs recorded yet.")
        return
    st.dataframe(runs, hide_index=True)
    run_id = st.selectbox("Run", runs.run_id.tolist()[::-1])
    prompts = store().query("SELECT prompt_id, text, n_tokens FROM prompts WHERE run_id = ? ORDER BY prompt_id",
                            [run_id])
    if prompts.empty:
        st.info("This run stored no prompts.")
        return
    prompt_id = st.selectbox("Prompt", prompts.prompt_id.tolist(), format_func=lambda i: prompts.text[i][:80])
    tokens = store().query("SELECT position, token_id, token FROM tokens WHERE run_id = ? AND prompt_id = ? "
                           "ORDER BY position", [run_id, prompt_id])
    stats = store().query("SELECT position, layer, l2_norm, max_abs, max_dim, median_abs FROM layer_stats "
                          "WHERE run_id = ? AND prompt_id = ? AND site = 'resid_post'", [run_id, prompt_id])
    value = st.radio("Statistic", ["l2_norm", "max_abs", "median_abs"], horizontal=True, key="statistic")
    st.plotly_chart(token_layer_heatmap(stats, tokens, value))
    st.dataframe(tokens, hide_index=True)


def page() -> None:
    st.title("Model and runs")
    _model_picker()
    _recorder()
    _runs_browser()
