"""What the app shares across pages and reruns: the loaded model, the store, one lock for model use."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager

import streamlit as st

from workbench.errors import WorkbenchError
from workbench.models import LoadedModel, bundled_models, load_model
from workbench.store import Store, default_db_path

MODEL_LOCK = threading.RLock()  # nnsight traces are not thread-safe: one model use at a time
_DB_TURN = threading.RLock()


class AppStore(Store):
    """A `Store` whose connections take turns within the app's process.

    DuckDB refuses to open a file read-only while the same process holds it read-write (and the
    reverse), so a page reading while a job writes would fail; each connection here is short, so
    waiting for one's turn is brief and neither pages nor jobs block for long.
    """

    @contextmanager
    def read(self):
        with _DB_TURN, super().read() as con:
            yield con

    @contextmanager
    def write(self):
        with _DB_TURN, super().write() as con:
            yield con


@st.cache_resource(show_spinner="Loading model…", max_entries=2)
def cached_model(spec: str, attention: bool, device_map: str | None = None, dtype: str | None = None,
                 delta_kernel: str = "model") -> LoadedModel:
    with MODEL_LOCK:
        return load_model(spec, attention=attention, device_map=device_map, dtype=dtype, delta_kernel=delta_kernel)


def load_options() -> dict:
    """The placement, dtype and delta-rule kernel chosen with the model on the Model page (device_map, dtype,
    delta_kernel; None: the defaults)."""
    return dict(st.session_state.get("load_options") or {})


def db_path() -> str:
    return str(st.session_state.get("db_path") or default_db_path())


def store() -> AppStore:
    """The store chosen in the sidebar (default: $WORKBENCH_DB or data/workbench.duckdb)."""
    return AppStore(db_path())


def sidebar() -> None:
    st.session_state.setdefault("model_spec", "demo" if "demo" in bundled_models() else None)
    st.sidebar.text_input("Database", value=str(default_db_path()), key="db_path",
                          help="DuckDB file the app reads and records into")
    st.sidebar.caption(f"Model: **{st.session_state.get('model_spec') or 'none'}** (change it on Model and runs)")


def current_model() -> LoadedModel | None:
    """The model picked on the Model page (the demo model by default), or None with a message."""
    spec = st.session_state.get("model_spec")
    if not spec:
        st.info("Pick and load a model on the **Model and runs** page first.")
        return None
    return attempt(cached_model, spec, True, **load_options())


def generative_model(why: str) -> LoadedModel | None:
    """`current_model()` for a page that needs generation; for an encoder, None with a polite message
    ending in `why` (what the page would have done)."""
    model = current_model()
    if model is not None and not model.is_generative:
        st.info(f"{model.spec} is a {model.model_type} encoder: {why}. Load a decoder model (GPT-2, Pythia, "
                "Llama, ...) on **Model and runs**.")
        return None
    return model


def attempt(read, *args, **kwargs):
    """`read(*args, **kwargs)`, or None after showing why it failed (bad input, database busy or unreadable)."""
    try:
        return read(*args, **kwargs)
    except WorkbenchError as e:
        st.error(str(e))
    return None


def direction_label(analysis_id: int, config: str) -> str:
    """How a stored direction analysis is named in the pages' pickers."""
    c = json.loads(config)
    return (f"analysis {analysis_id}: {c['concept']} ({c['negative']} → {c['positive']}), {c['method']} "
            f"at the {c['position']} token")
