"""The workbench app: `streamlit run app.py` (pages live in workbench/ui/)."""

import streamlit as st

from workbench.ui.navigation import pages
from workbench.ui.state import sidebar

st.set_page_config(page_title="Delta Workbench", layout="wide")
sidebar()
st.navigation(pages()).run()
