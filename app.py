"""The workbench app: `streamlit run app.py` (pages live in workbench/ui/)."""

import streamlit as st

from workbench.ui import (attention_page, directions_page, lens_page, massive_page, memory_page, runs_page,
                          sparse_page, sql_page, steering_page)
from workbench.ui.state import sidebar

st.set_page_config(page_title="Delta Workbench", layout="wide")
sidebar()
st.navigation([
    st.Page(runs_page.page, title="Model and runs", url_path="runs", default=True),
    st.Page(attention_page.page, title="Attention", url_path="attention"),
    st.Page(lens_page.page, title="Logit lens", url_path="lens"),
    st.Page(massive_page.page, title="Massive activations", url_path="massive"),
    st.Page(directions_page.page, title="Concept directions", url_path="directions"),
    st.Page(steering_page.page, title="Steering", url_path="steering"),
    st.Page(sparse_page.page, title="Sparse attention", url_path="sparse"),
    st.Page(memory_page.page, title="Delta-rule memory", url_path="memory"),
    st.Page(sql_page.page, title="SQL", url_path="sql"),
]).run()
