"""Steering: unsteered and steered continuations side by side, the layer x alpha sweep, vector downloads."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import streamlit as st

from workbench.errors import WorkbenchError
from workbench.paths import DATA_DIR
from workbench.plots import sweep_heatmap
from workbench.prompts import load_prompts
from workbench.steering.evaluation import sweep
from workbench.steering.export import import_vector
from workbench.steering.steer import EMPTY_GENERATION, POSITIONS, Steer, generate
from workbench.steering.vector_files import FILE_SUFFIX, direction_meta, vector_file_bytes
from workbench.ui import jobs, reads
from workbench.ui.state import attempt, db_path, direction_label, generative_model, store

STORED, UPLOADED = "a stored direction", "a vector file"
PROMPTS_DIR = DATA_DIR / "prompts"
SWEEP_METRICS = ("concept_shift", "success_rate", "perplexity_ratio", "kl")
DOWNLOADS = {"safetensors": "safetensors", "llama.cpp / repeng (.gguf)": "gguf"}  # label -> format


def _read_upload(upload, model) -> dict[int, np.ndarray]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / Path(upload.name).name
        path.write_bytes(upload.getvalue())
        return import_vector(path, expected_d_model=model.d_model, expected_n_layers=model.n_layers)[0]


def _vectors(model):
    """(vectors by layer, the direction analysis or None) from the chosen source, or None."""
    source = st.radio("Steer with", [STORED, UPLOADED], horizontal=True, key="steer_source")
    if source == UPLOADED:
        upload = st.file_uploader("Steering vector (.safetensors or llama.cpp .gguf)", key="steer_upload")
        vectors = attempt(_read_upload, upload, model) if upload is not None else None
        return (vectors, None) if vectors is not None else None
    found = reads.analyses("direction", model=model.spec)
    if found is None or found.empty:
        st.info("No stored direction for this model: compute one on **Concept directions**, or upload a vector.")
        return None
    by_id = found.set_index("analysis_id")
    analysis_id = st.selectbox("Direction", by_id.index.tolist(), key="steer_direction",
                               format_func=lambda a: direction_label(a, by_id.config[a]))
    vectors = attempt(reads.direction_vectors, db_path(), analysis_id)
    return (vectors, reads.analysis(db_path(), analysis_id)) if vectors is not None else None


def _side_by_side(model, vectors: dict, default_layer: int) -> tuple[list[int], float]:
    layers_all = sorted(vectors)
    cols = st.columns([2, 1, 1, 1])
    layers = cols[0].multiselect("Layers", layers_all, default=[default_layer], key="steer_layers")
    alpha = cols[1].number_input("Alpha", -100.0, 100.0, 4.0, step=0.5, key="steer_alpha")
    new_tokens = cols[2].number_input("New tokens", 1, 200, 24, key="steer_tokens")
    positions = cols[3].selectbox("Positions", POSITIONS, key="steer_positions")
    prompt = st.text_area("Prompt", value=_steering_prompts()[0], key="steer_prompt")
    if st.button("Generate", type="primary", key="steer_generate", disabled=not layers):
        steers = [Steer(layer, vectors[layer], alpha) for layer in layers]
        options = {"max_new_tokens": int(new_tokens)}
        setting = f"layers {layers}, alpha {alpha:g}, positions {positions}"
        jobs.start("job:steer", "generating", lambda job: (
            generate(model, prompt, **options)[0], generate(model, prompt, steers, positions=positions, **options)[0],
            setting))
    if (done := jobs.result("job:steer")) is not None:
        plain, steered, setting = done
        left, right = st.columns(2)
        left.markdown("**Unsteered**")
        left.code(plain or EMPTY_GENERATION, language=None, wrap_lines=True)
        right.markdown(f"**Steered** ({setting})")
        right.code(steered or EMPTY_GENERATION, language=None, wrap_lines=True)
    return layers, alpha


def _steering_prompts() -> list[str]:
    return load_prompts(PROMPTS_DIR / "steering_negative.txt")


def _sweep(model, vectors: dict, analysis: dict | None) -> None:
    st.subheader("Layer x alpha sweep")
    cols = st.columns([2, 2, 1])
    best = (analysis or {}).get("summary", {}).get("best_layer")
    around = [layer for layer in (best - 1, best, best + 1) if layer in vectors] if best is not None else []
    layers = cols[0].multiselect("Layers", sorted(vectors), default=around or sorted(vectors)[-3:], key="sweep_layers",
                                 help="default: the direction's best layer by held-out AUROC and its neighbours")
    alphas = cols[1].multiselect("Alphas", [-8.0, -4.0, -2.0, 2.0, 4.0, 8.0, 16.0], default=[2.0, 4.0, 8.0],
                                 key="sweep_alphas")
    n_prompts = cols[2].number_input("Prompts", 1, 50, 4, key="sweep_prompts")
    st.caption("Concept score: the demo corpus's sentiment lexicon; fluency: perplexity under the unsteered model "
               "and next-token KL on neutral prompts.")
    if st.button("Run sweep", key="sweep_run", disabled=not (layers and alphas)):
        prompts, neutral = _steering_prompts()[:int(n_prompts)], load_prompts(PROMPTS_DIR / "neutral.txt")[:8]
        chosen, target = {layer: vectors[layer] for layer in layers}, store()
        direction_id = analysis["analysis_id"] if analysis else None
        jobs.start("job:sweep", "sweeping", lambda job: sweep(model, chosen, prompts, sorted(alphas), neutral,
                                                             target, max_new_tokens=16, direction_id=direction_id,
                                                             progress=job.progress))
    jobs.result("job:sweep")
    found = reads.analyses("steering-sweep", model=model.spec)
    if found is None or found.empty:
        st.info("No sweep stored for this model yet.")
        return
    cols = st.columns(2)
    newest = int(found.analysis_id.max())  # a key per newest sweep: a finished sweep shows up selected
    summaries = found.set_index("analysis_id").summary
    analysis_id = cols[0].selectbox("Sweep", found.analysis_id.tolist(), key=f"sweep_analysis_{newest}",
                                    format_func=lambda a: f"analysis {a}{reads.partial_label(summaries[a])}")
    metric = cols[1].selectbox("Metric", SWEEP_METRICS, key="sweep_metric")
    table = attempt(reads.sweep_table, db_path(), analysis_id, summaries[analysis_id])
    if table is not None and not table.empty:
        st.plotly_chart(sweep_heatmap(table, metric), key="sweep_figure")


@st.cache_data(show_spinner=False, max_entries=64)
def _file_bytes(db: str, analysis_id: int, layers: tuple[int, ...], alpha: float, format: str) -> bytes:
    vectors = reads.direction_vectors(db, analysis_id)
    meta = direction_meta(reads.analysis(db, analysis_id), list(layers), alpha)
    return vector_file_bytes({layer: vectors[layer] for layer in layers}, meta, format)


def _downloads(analysis: dict | None, layers: list[int], alpha: float) -> None:
    st.subheader("Download the vector")
    if analysis is None or not layers:
        st.caption("Pick a stored direction and its layers to download them.")
        return
    st.caption("safetensors: one tensor `layer.L` per layer, for PyTorch and the steering-vectors library. GGUF: "
               "llama.cpp's control vector (`--control-vector`), the same file repeng's `ControlVector.import_gguf` "
               "reads.")
    for (label, format), column in zip(DOWNLOADS.items(), st.columns(len(DOWNLOADS))):
        with column:
            try:
                data = _file_bytes(db_path(), analysis["analysis_id"], tuple(sorted(layers)), alpha, format)
            except WorkbenchError as e:
                st.caption(f"**{label}**: {e}")
                continue
            st.download_button(label, data, key=f"download_{format}", mime="application/octet-stream",
                               file_name=f"direction-{analysis['analysis_id']}{FILE_SUFFIX[format]}")


def page() -> None:
    st.title("Steering")
    model = generative_model("it does not generate text, so there is nothing to steer")
    if model is None:
        return
    chosen = _vectors(model)
    if chosen is None:
        return
    vectors, analysis = chosen
    best = (analysis or {}).get("summary", {}).get("best_layer", max(vectors))
    layers, alpha = _side_by_side(model, vectors, best if best in vectors else max(vectors))
    _downloads(analysis, layers, alpha)
    _sweep(model, vectors, analysis)
