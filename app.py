"""The workbench app: `streamlit run app.py` (pages live in workbench/ui/)."""

import streamlit as st

from workbench.ui import runs_page, sql_page
from workbench.ui.state import sidebar

st.set_page_config(page_title="Delta Workbench", layout="wide")
sidebar()
st.navigation([
    st.Page(runs_page.page, title="Model and runs", url_path="runs", default=True),
    st.Page(sql_page.page, title="SQL", url_path="sql"),
]).run()
