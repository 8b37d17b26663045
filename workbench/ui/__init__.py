"""Streamlit pages of the workbench app: widgets and figures only, computation lives in `workbench`."""
