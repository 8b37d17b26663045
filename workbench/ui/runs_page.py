"""Model and runs: pick a model, record prompts, browse recorded runs and their tokens."""

from __future__ import annotations

import streamlit as st

from workbench.config import RecordConfig
from workbench.demo_model import MASSIVE_PROMPTS
from workbench.errors import WorkbenchError
from workbench.models import bundled_models
from workbench.plots import token_layer_heatmap
from workbench.prompts import validate_prompts
from workbench.recording import record
from workbench.ui import jobs
from workbench.ui.state import attempt, cached_model, current_model, store

PLACEMENTS = {"one device": None, "sharded over the GPUs and the CPU": "auto"}
DTYPES = {"default": None, "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
DELTA_RULES = {"the model's own": "model", "workbench kernel": "workbench"}


def _model_picker() -> None:
    st.subheader("Model")
    default = "demo" if "demo" in bundled_models() else ""
    spec = st.text_input("Model spec", value=st.session_state.get("model_spec") or default,
                         help="'demo', a local Hugging Face directory, or a hub id such as gpt2", key="spec_input")
    placement, precision, rule = st.columns(3)
    device_map = placement.selectbox(
        "Placement", PLACEMENTS, key="placement",
        help="one device (a GPU if there is one), or shard the model over every GPU and then the CPU (accelerate)")
    dtype = precision.selectbox("Precision", DTYPES, key="dtype", help="default: float32 on a CPU, bfloat16 on a GPU")
    delta_kernel = rule.selectbox(
        "Delta rule", DELTA_RULES, key="delta_kernel",
        help="Gated DeltaNet layers (Qwen3-Next, Qwen3.5, OLMo hybrid): the model's own rule (flash-linear-attention "
             "or transformers' PyTorch fallback) or the workbench's Triton kernel")
    if st.button("Load model", type="primary", key="load"):
        options = {"device_map": PLACEMENTS[device_map], "dtype": DTYPES[dtype], "delta_kernel": DELTA_RULES[delta_kernel]}
        try:
            cached_model(spec, True, **options)
            st.session_state["model_spec"], st.session_state["load_options"] = spec, options
        except WorkbenchError as e:
            st.error(str(e))
        else:
            st.rerun()  # the sidebar, drawn before this page, names the model just loaded
    model = current_model() if st.session_state.get("model_spec") else None
    if model is not None:
        try:  # several residual streams on hyper-connection and AltUp models: 4 × 2048
            residual = " × ".join(map(str, model.residual.shape))
        except WorkbenchError as e:
            residual = f"unreadable ({e})"
        st.success(f"{model.spec}: {model.model_type}, {model.n_layers} layers, residual {residual}, "
                   f"{model.n_heads} heads, {model.dtype} on {model.device}")
        with st.expander("Parts found in the model"):
            st.json(model.structure.describe())


DEFAULT_PROMPTS = "\n".join(MASSIVE_PROMPTS[i] for i in (0, 1, 3))  # the demo's massive-activation prompts
KEEP = {"full vectors": "vectors", "attention maps": "attention", "attention output": "attn_out",
        "MLP output": "mlp_out"}


def _recorder() -> None:
    st.subheader("Record prompts")
    text = st.text_area("Prompts, one per line", value=DEFAULT_PROMPTS, key="prompts")
    keep = st.multiselect("Also keep", list(KEEP), default=["attention maps"], key="keep",
                          help="attention maps feed the Attention page; full vectors are large")
    if st.button("Record", disabled=not st.session_state.get("model_spec"), key="record"):
        model = current_model()
        prompts = attempt(validate_prompts, [line for line in text.splitlines() if line.strip()])
        if model is not None and prompts is not None:
            config = RecordConfig(**{KEEP[k]: True for k in keep})
            target = store()
            jobs.start("job:record", "recording", lambda job: record(model, prompts, target, config,
                                                                     progress=job.progress))
    run_id = jobs.result("job:record")
    if run_id is not None:
        st.success(f"Recorded run {run_id}.")


def _runs_browser() -> None:
    st.subheader("Recorded runs")
    runs = attempt(store().list_runs)
    if runs is None:
        return
    if runs.empty:
        st.info("No runs recorded yet.")
        return
    st.dataframe(runs, hide_index=True)
    run_id = st.selectbox("Run", runs.run_id.tolist()[::-1], key="browse_run")
    prompts = attempt(store().prompts, run_id)
    if prompts is None or prompts.empty:
        st.info("This run stored no prompts.")
        return
    prompt_id = st.selectbox("Prompt", prompts.prompt_id.tolist(), format_func=lambda i: prompts.text[i][:80],
                             key="browse_prompt")
    tokens = attempt(store().tokens, run_id, prompt_id)
    stats = attempt(store().token_stats, run_id, prompt_id)
    if tokens is None or stats is None:
        return
    value = st.radio("Statistic", ["l2_norm", "max_abs", "median_abs"], horizontal=True, key="statistic")
    st.plotly_chart(token_layer_heatmap(stats, tokens, value))
    st.dataframe(tokens, hide_index=True)


def page() -> None:
    st.title("Model and runs")
    _model_picker()
    _recorder()
    _runs_browser()
