"""The app runs on a real model: pick it, record, browse the run, query it; errors show as messages."""

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import workbench as wb

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def finish(at: AppTest, job: str) -> AppTest:
    """Wait for a job the page started in its worker thread, then redraw the page."""
    at.session_state[job].thread.join(timeout=120)
    return at.run()


@pytest.fixture
def app(db_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DB", str(db_path))
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=60)
    return at.run()


def test_pick_a_model_record_and_browse(app, tiny_dir, db_path):
    assert not app.exception
    app.text_input(key="spec_input").set_value(str(tiny_dir("llama"))).run()
    app.button(key="load").click().run()
    assert not app.error and "llama, 3 layers" in app.success[0].value
    app.text_area(key="prompts").set_value("first prompt\nsecond one").run()
    app.button(key="record").click().run()
    finish(app, "job:record")
    assert not app.exception and "Recorded run 1" in app.success[1].value
    assert app.dataframe[0].value.run_id.tolist() == [1]
    assert wb.Store(db_path).run(1)["status"] == "complete"
    assert wb.Store(db_path).tensor_paths(1, "attention")  # attention maps are kept by default
    heatmap = app.get("plotly_chart")[0].proto.spec
    assert "1:'f'" in heatmap and "2:'i'" in heatmap  # the tokens of "first prompt" label the x axis
    app.radio(key="statistic").set_value("max_abs").run()
    assert '"max_abs"' in app.get("plotly_chart")[0].proto.spec


def test_bad_model_spec_shows_a_message(app):
    app.text_input(key="spec_input").set_value("./no/such/model").run()
    app.button(key="load").click().run()
    assert not app.exception and "unknown model spec" in app.error[0].value


def test_a_bad_prompt_list_shows_a_message_and_starts_nothing(app, tiny_dir):
    app.text_input(key="spec_input").set_value(str(tiny_dir("gpt2"))).run()
    app.button(key="load").click().run()
    app.text_area(key="prompts").set_value("   \n").run()
    app.button(key="record").click().run()
    assert not app.exception and "no prompts given" in app.error[0].value
    assert "job:record" not in app.session_state


def _sql_page():
    from workbench.ui import sql_page

    sql_page.page()


def test_sql_page_is_read_only(app, tiny_dir, db_path):
    wb.record(str(tiny_dir("gpt2")), ["hello"], db_path, progress=False)
    at = AppTest.from_function(_sql_page, default_timeout=30).run()
    at.text_area(key="sql").set_value("SELECT count(*) AS n FROM prompts").run()
    at.button(key="run_sql").click().run()
    assert at.dataframe[0].value.n.tolist() == [1]
    at.text_area(key="sql").set_value("DELETE FROM prompts").run()
    at.button(key="run_sql").click().run()
    assert "read-only" in at.error[0].value
    assert wb.Store(db_path).query("SELECT count(*) AS n FROM prompts").n.tolist() == [1]


def test_every_page_has_its_screenshot_in_the_readme():
    """The browser test screenshots every page as the slug of its title; the README shows each one."""
    import re

    from workbench.ui.navigation import PAGES

    root = Path(__file__).resolve().parent.parent
    titles = [title for _, title, _ in PAGES]
    readme = (root / "README.md").read_text()
    assert len(titles) == 9
    for title in titles:
        shot = f"docs/screenshots/{re.sub(r'[^a-z]+', '-', title.lower()).strip('-')}.png"
        assert (root / shot).is_file() and f"({shot})" in readme, title
