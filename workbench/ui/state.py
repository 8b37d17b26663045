"""What the app shares across pages and reruns: the loaded model, the store, one lock for model use."""

from __future__ import annotations

import threading

import streamlit as st

from workbench.models import LoadedModel, load_model
from workbench.store import Store, default_db_path

MODEL_LOCK = threading.RLock()  # nnsight traces are not thread-safe: one model use at a time


@st.cache_resource(show_spinner="Loading model…", max_entries=2)
def cached_model(spec: str, attention: bool) -> LoadedModel:
    with MODEL_LOCK:
        return load_model(spec, attention=attention)


def store() -> Store:
    """The store chosen in the sidebar (default: $WORKBENCH_DB or data/workbench.duckdb)."""
    return Store(st.session_state.get("db_path") or default_db_path())


def sidebar() -> None:
    st.sidebar.text_input("Database", value=str(default_db_path()), key="db_path",
                          help="DuckDB file the app reads and records into")


def current_model() -> LoadedModel | None:
    """The model picked on the Model page, or None (with a message) if none is loaded."""
    spec = st.session_state.get("model_spec")
    if not spec:
        st.info("Pick and load a model on the **Model and runs** page first.")
        return None
    return cached_model(spec, attention=True)
