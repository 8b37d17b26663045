"""SQL: a read-only query box over the database, with a result table and CSV download."""

from __future__ import annotations

import streamlit as st

from workbench.errors import WorkbenchError
from workbench.ui.state import store


def page() -> None:
    st.title("SQL")
    st.caption("Read-only: SELECT, SHOW, DESCRIBE and EXPLAIN. Tensor files: read_parquet over tensor_files.path.")
    sql = st.text_area("Query", value="SELECT * FROM runs ORDER BY run_id DESC LIMIT 20", key="sql")
    if st.button("Run query", type="primary", key="run_sql"):
        try:
            result = store().query(sql)
        except WorkbenchError as e:
            st.error(str(e))
            return
        st.dataframe(result, hide_index=True)
        st.download_button("Download CSV", result.to_csv(index=False), file_name="query.csv", mime="text/csv")
