"""Concept directions: choose or upload a concept set, compute per-layer directions, judge them."""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from workbench.plots import cosine_figure, projection_histogram, separation_figure
from workbench.steering.concepts import ConceptSet, bundled_concept_sets, load_concept_set
from workbench.steering.directions import METHODS, POSITIONS, compute_directions
from workbench.ui import jobs, reads
from workbench.ui.state import attempt, current_model, db_path, direction_label, store

UPLOAD = "upload a JSONL file…"


def _read_upload(upload, positive: str | None) -> ConceptSet:
    """Validate an uploaded concept set by reading it from a temporary copy with its own name."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / Path(upload.name).name
        path.write_bytes(upload.getvalue())
        return load_concept_set(path, positive)


def _concept_set() -> ConceptSet | None:
    bundled = bundled_concept_sets()
    cols = st.columns([2, 1])
    choice = cols[0].selectbox("Concept set", [*bundled, UPLOAD], key="concept_choice")
    positive = cols[1].text_input("Positive label (optional)", key="concept_positive",
                                  help="the label the direction points to; default 'positive' or the first") or None
    if choice != UPLOAD:
        return attempt(load_concept_set, bundled[choice], positive)
    upload = st.file_uploader("Concept set (JSONL: text + label, or pairs)", type=["jsonl"], key="concept_upload")
    return attempt(_read_upload, upload, positive) if upload is not None else None


def _compute(model) -> None:
    concepts = _concept_set()
    if concepts is not None:
        st.caption(f"{concepts.name}: {concepts.negative} → {concepts.positive}, {len(concepts.train)} training "
                   f"and {len(concepts.test)} held-out examples{', paired' if concepts.paired else ''}.")
    cols = st.columns(2)
    method = cols[0].selectbox("Method", METHODS, key="direction_method")
    position = cols[1].selectbox("Position", POSITIONS, key="direction_position")
    if st.button("Compute directions", type="primary", key="direction_compute", disabled=concepts is None):
        target = store()
        jobs.start("job:directions", f"computing {concepts.name} directions",
                   lambda job: compute_directions(model, concepts, target, method=method, position=position,
                                                  progress=job.progress)[2])
    if (analysis_id := jobs.result("job:directions", select="direction_analysis")) is not None:
        st.success(f"Stored directions as analysis {analysis_id}.")


def _show() -> None:
    found = reads.analyses("direction", model=st.session_state.get("model_spec"))
    if found is None or found.empty:
        st.info("No directions for this model yet: compute some above.")
        return
    by_id = found.set_index("analysis_id")
    analysis_id = st.selectbox("Directions", by_id.index.tolist(), key="direction_analysis",
                               format_func=lambda a: direction_label(a, by_id.config[a]))
    loaded = attempt(reads.direction_tables, db_path(), analysis_id)
    if loaded is None:
        return
    quality, projections, cosines = loaded
    st.subheader("Separation per layer")
    st.plotly_chart(separation_figure(quality), key="direction_separation")
    left, right = st.columns(2)
    with left:
        st.subheader("Cosine between layers")
        st.plotly_chart(cosine_figure(cosines), key="direction_cosine")
    with right:
        st.subheader("Projections")
        best = int(quality.loc[quality.auroc.idxmax()].layer)
        layer = st.selectbox("Layer", quality.layer.tolist(), index=quality.layer.tolist().index(best),
                             key="direction_layer")
        st.plotly_chart(projection_histogram(projections[projections.layer == layer]), key="direction_hist")
    st.dataframe(quality, hide_index=True)


def page() -> None:
    st.title("Concept directions")
    model = current_model()
    if model is not None:
        _compute(model)
    _show()
