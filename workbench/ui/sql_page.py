"""SQL: a read-only query box over the database, with a result table and CSV download."""

from __future__ import annotations

import streamlit as st

from workbench.errors import WorkbenchError
from workbench.store import EXAMPLE_QUERY, SQL_HELP
from workbench.ui.state import store


def page() -> None:
    st.title("SQL")
    st.caption(SQL_HELP)
    sql = st.text_area("Query", value=EXAMPLE_QUERY, key="sql")
    if st.button("Run query", type="primary", key="run_sql"):
        try:
            result = store().query(sql)
        except WorkbenchError as e:
            st.error(str(e))
            return
        st.dataframe(result, hide_index=True)
        st.download_button("Download CSV", result.to_csv(index=False), file_name="query.csv", mime="text/csv")
