"""Massive activations: per-layer top activations, layer x dimension map, training dynamics, the ablation trial."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from workbench.config import MassiveConfig
from workbench.massive.ablation import ablate
from workbench.massive.detection import detect
from workbench.massive.dynamics import checkpoint_series, dynamics
from workbench.massive.statistics import METRIC_LABELS
from workbench.massive.views import fitted_curves, training_table_path
from workbench.plots import ablation_figure, dynamics_figure, layer_dim_heatmap, massive_by_layer
from workbench.prompts import validate_prompts
from workbench.ui import jobs, reads
from workbench.ui.runs_page import DEFAULT_PROMPTS
from workbench.ui.state import attempt, current_model, db_path, store


def _criterion() -> MassiveConfig | None:
    cols = st.columns(4)
    ratio = cols[0].number_input("Ratio to the median", 1.0, 1e6, 1000.0, key="massive_ratio")
    absolute = cols[1].number_input("Absolute |a| above", 0.0, 1e6, 100.0, key="massive_abs")
    relative_only = cols[2].checkbox("Ratio only", key="massive_relative",
                                     help="drop the absolute test (small models rarely reach 100)")
    top_n = cols[3].number_input("Top n per layer", 1, 8, 3, key="massive_top_n")
    return attempt(MassiveConfig, abs_threshold=absolute, ratio_threshold=ratio, relative_only=relative_only,
                   top_n=int(top_n))


def _criterion_label(analysis_id: int, config: str) -> str:
    c = json.loads(config)
    absolute = "" if c["relative_only"] else f" and |a| > {c['abs_threshold']:g}"
    return f"analysis {analysis_id}: ratio > {c['ratio_threshold']:g}{absolute}, top {c['top_n']}"


def _detection():
    """Pick a recorded run and a detection on it (running a new one on request); returns (run id, analysis)."""
    runs = attempt(reads.runs, db_path(), reads.db_version(db_path())) if store().path.exists() else None
    runs = runs[(runs.kind == "record") & (runs.status == "complete")] if runs is not None else None
    if runs is None or runs.empty:
        st.info("No complete recording yet: record prompts on the **Model and runs** page.")
        return None
    run_id = st.selectbox("Run", runs.run_id.tolist()[::-1], key="massive_run",
                          format_func=lambda r: f"run {r} ({runs.set_index('run_id').model[r]})")
    config = _criterion()
    if st.button("Detect", type="primary", key="massive_detect") and config is not None:
        with st.spinner("detecting…"):
            if (analysis_id := attempt(detect, store(), run_id, config)) is not None:
                st.session_state["massive_analysis"] = analysis_id
    found = reads.analyses("massive", run_id=run_id)
    if found is None or found.empty:
        st.info("No detection on this run yet: set the criterion and press **Detect**.")
        return None
    analysis_id = st.selectbox("Detection", found.analysis_id.tolist(), key="massive_analysis",
                               format_func=lambda a: _criterion_label(a, found.set_index("analysis_id").config[a]))
    return run_id, reads.analysis(db_path(), analysis_id)


def _top_activations(run_id: int, analysis: dict) -> None:
    st.info(analysis["summary"].get("statement", ""))
    loaded = attempt(reads.massive_findings, db_path(), analysis["analysis_id"])
    if loaded is None or loaded[0].empty:
        return
    found, layers = loaded
    st.plotly_chart(massive_by_layer(layers), key="massive_layers")
    prompt_id = st.selectbox("Top activations of prompt", sorted(found.prompt_id.unique()), key="massive_prompt")
    shown = found[found.prompt_id == prompt_id]
    st.dataframe(shown[["layer", "rank", "position", "token", "token_kind", "dim", "value", "ratio", "is_massive"]],
                 hide_index=True)
    st.subheader("Layer x dimension")
    grid = attempt(reads.layer_dim_max, db_path(), run_id)
    if grid is not None:
        st.caption("Largest |activation| of each dimension at each layer over the run's tokens (the strongest "
                   "64 dimensions, read from each token's recorded top-k).")
        st.plotly_chart(layer_dim_heatmap(grid), key="massive_heatmap")


def _dynamics(model) -> None:
    st.subheader("Dynamics across checkpoints")
    sources = {}
    if model is not None and (table := training_table_path(model.path)):
        sources[f"training-time table of {model.spec}"] = ("table", str(table))
    stored = reads.analyses("massive-dynamics")
    for analysis_id in ([] if stored is None else stored.analysis_id):
        sources[f"stored analysis {analysis_id}"] = ("stored", int(analysis_id))
    if model is not None:
        _dynamics_job(model)
    if not sources:
        st.info("No checkpoint series: the bundled demo model ships one; or record checkpoints above.")
        return
    cols = st.columns([3, 2, 1])
    kind, source = sources[cols[0].selectbox("Series", list(sources), key="dyn_source")]
    if kind == "table":
        loaded = attempt(reads.training_fits, source, Path(source).stat().st_mtime)
    else:
        loaded = attempt(reads.stored_dynamics, db_path(), source)
    if loaded is None:
        return
    metrics, fits = loaded
    metric = cols[1].selectbox("Metric", [m for m in METRIC_LABELS if m in set(metrics.metric)], key="dyn_metric",
                               format_func=METRIC_LABELS.get)
    log_steps = cols[2].checkbox("log steps", value=True, key="dyn_log")
    curves = fitted_curves(fits, metric, metrics.step)
    st.plotly_chart(dynamics_figure(metrics, curves, metric, log_steps, METRIC_LABELS[metric]), key="dyn_figure")
    st.caption("Mean over prompts: each prompt's top |activation| and median |activation| averaged over the prompts "
               "(Gallego-Feliciano et al.); pooled: the largest over all prompts' tokens and the median over all "
               "their elements (the demo model's card and its training-time table).")
    if curves.empty:
        st.caption("No fitted curve: the five-parameter fit needs at least six checkpoints per layer.")


def _dynamics_job(model) -> None:
    shipped = checkpoint_series(model.path)
    with st.expander("Record a checkpoint series"):
        text = st.text_input("Checkpoints (directories or revisions, comma-separated)",
                             value=",".join(shipped), key="dyn_checkpoints")
        prompts = st.text_area("Prompts, one per line", value=DEFAULT_PROMPTS, key="dyn_prompts")
        if st.button("Record checkpoints", key="dyn_run"):
            checkpoints = [c.strip() for c in text.split(",") if c.strip()]
            lines = attempt(validate_prompts, [line for line in prompts.splitlines() if line.strip()])
            config, target = MassiveConfig(relative_only=True), store()
            if lines is not None:
                jobs.start("job:dynamics", "recording checkpoints",
                           lambda job: dynamics(model.spec, checkpoints, lines, target, config=config,
                                                progress=job.progress))
        if (analysis_id := jobs.result("job:dynamics")) is not None:
            st.success(f"Stored the series as analysis {analysis_id}.")


def _ablation(model, run_id: int, analysis: dict) -> None:
    st.subheader("Ablation trial")
    if model is None:
        return
    if not model.is_generative:
        st.info(f"The ablation measures next-token loss, and {model.model_type} is an encoder that does not "
                "generate: load a decoder model to run it.")
        return
    loaded = attempt(reads.massive_findings, db_path(), analysis["analysis_id"])
    if loaded is None or loaded[1].empty:
        return
    layers = loaded[1].set_index("layer")
    strongest = int(layers.ratio.idxmax())
    cols = st.columns([1, 2, 2])
    layer = cols[0].selectbox("Layer", layers.index.tolist(), index=layers.index.get_loc(strongest),
                              key="ablate_layer")
    dims = cols[1].multiselect("Dimensions", list(range(model.d_model)), default=[int(layers.top1_dim[layer])],
                               key="ablate_dims")
    modes = cols[2].multiselect("Modes", ["zero", "mean"], default=["zero", "mean"], key="ablate_modes")
    st.caption(f"Overwrites the massive entries of those dimensions at layer {layer} in the run's prompts and "
               "measures the next-token loss (Sun et al. 2024).")
    if st.button("Run ablation", key="ablate_run"):
        texts = attempt(reads.prompts_of, db_path(), run_id)
        config = MassiveConfig(**{k: v for k, v in analysis["config"].items() if k in MassiveConfig.__annotations__})
        if texts is not None and dims and modes:
            target = store()
            jobs.start("job:ablate", "ablating", lambda job: ablate(model, texts.text.tolist(), layer, dims,
                                                                   target, config, tuple(modes)))
    trials = jobs.result("job:ablate")
    if trials is not None:
        st.plotly_chart(ablation_figure(trials), key="ablate_figure")
        st.dataframe(trials, hide_index=True)


def page() -> None:
    st.title("Massive activations")
    picked = _detection()
    model = current_model()
    if picked is not None:
        _top_activations(*picked)
    _dynamics(model)
    if picked is not None:
        _ablation(model, *picked)
