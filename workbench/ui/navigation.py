"""The app's pages in menu order, built where `st.navigation` needs them and where a page links to another."""

from __future__ import annotations

import importlib

import streamlit as st

PAGES = (  # (module in workbench.ui, title, url path); the first is the default page
    ("runs_page", "Model and runs", "runs"),
    ("attention_page", "Attention", "attention"),
    ("lens_page", "Logit lens", "lens"),
    ("massive_page", "Massive activations", "massive"),
    ("directions_page", "Concept directions", "directions"),
    ("steering_page", "Steering", "steering"),
    ("sparse_page", "Sparse attention", "sparse"),
    ("memory_page", "Delta-rule memory", "memory"),
    ("sql_page", "SQL", "sql"),
)


def pages() -> list:
    """Every page as an `st.Page`."""
    return [page(url_path) for _, _, url_path in PAGES]


def page(url_path: str):
    """The `st.Page` at `url_path`, equal to the one in the navigation, so `st.switch_page` can open it."""
    index, (module, title, _) = next((i, p) for i, p in enumerate(PAGES) if p[2] == url_path)
    render = importlib.import_module(f"workbench.ui.{module}").page
    return st.Page(render, title=title, url_path=url_path, default=index == 0)


def open_page(url_path: str, **state) -> None:
    """Set the target page's widgets (`state`: widget key -> value) and switch to it."""
    st.session_state.update(state)
    st.switch_page(page(url_path))
