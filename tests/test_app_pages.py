"""Every page of the app on a tiny model: it draws its figures, its main widgets change them, errors are messages.

Pages are functions under `st.navigation`, so each is run on its own with the model and
database preset in the session state, as the Model page and the sidebar would set them.
"""

import base64
import json

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest
from test_app import finish

import workbench as wb
from workbench.config import MassiveConfig
from workbench.massive.detection import detect
from workbench.models import bundled_models
from workbench.steering.concepts import load_concept_set
from workbench.steering.directions import compute_directions


def _page(name: str):
    import importlib

    importlib.import_module(f"workbench.ui.{name}").page()


def concept_lines(n: int = 6) -> str:
    """A small labelled concept set (sunny vs rainy), with fixed training and held-out splits."""
    rows = [{"text": f"{w} day number {i}", "label": label, "split": "train" if i < n - 2 else "test"}
            for label, w in (("positive", "sunny"), ("negative", "rainy")) for i in range(n)]
    return "\n".join(json.dumps(r) for r in rows) + "\n"


@pytest.fixture(scope="module")
def filled(tiny_dir, tmp_path_factory):
    """A database with a recording (attention kept), a detection, directions and a stored sweep."""
    folder = tmp_path_factory.mktemp("app-pages")
    store = wb.Store(folder / "app.duckdb")
    model = wb.load_model(str(tiny_dir("llama")), attention=True)
    run_id = wb.record(model, ["The cat sat.", "Once upon a time"], store, wb.RecordConfig(attention=True),
                       progress=False)
    detect(store, run_id, MassiveConfig(relative_only=True, ratio_threshold=2.0))
    (folder / "weather.jsonl").write_text(concept_lines())
    _, _, direction = compute_directions(model, load_concept_set(folder / "weather.jsonl"), store)
    sweep = pd.DataFrame([{"layer": layer, "alpha": alpha, "concept_shift": 0.1 * layer * alpha,
                           "success_rate": 0.5, "perplexity_ratio": 1.0 + alpha, "kl": 0.01 * alpha, "n_prompts": 2}
                          for layer in (1, 2) for alpha in (2.0, 4.0)])
    store.save_analysis("steering-sweep", {"direction": direction}, {"sweep": sweep}, model=model.spec)
    return {"db": store.path, "spec": model.spec, "run": run_id, "direction": direction, "folder": folder}


def page_test(name: str, db, spec: str) -> AppTest:
    st.cache_resource.clear()
    at = AppTest.from_function(_page, args=(name,), default_timeout=60)
    at.session_state["model_spec"] = spec
    at.session_state["db_path"] = str(db)
    return at.run()


def figure(at: AppTest, index: int = 0) -> dict:
    return json.loads(at.get("plotly_chart")[index].proto.spec)


def _array(values) -> np.ndarray:
    """A figure's data array, whether plotly wrote it as a list or as typed binary."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return np.asarray(values)


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_attention_page_draws_maps_grid_and_sink_mass(filled):
    at = page_test("attention_page", filled["db"], filled["spec"])
    assert_clean(at)
    single, grid, sinks = (figure(at, i) for i in range(3))
    assert single["data"][0]["x"][:3] == ["0:'<s>'", "1:'T'", "2:'h'"] == single["data"][0]["y"][:3]
    assert single["layout"]["title"]["text"] == "layer 2, head 0"
    assert (single["data"][0]["zmin"], single["data"][0]["zmax"]) == (0, 1)  # softmax weights: 0..1, masked keys NaN
    assert len(grid["data"]) == 4  # one small map per head
    assert len(sinks["data"][0]["z"]) == 3  # layers x heads
    at.selectbox(key="attn_head").set_value(3).run()
    at.selectbox(key="attn_layer").set_value(0).run()
    assert figure(at)["layout"]["title"]["text"] == "layer 0, head 3"
    at.selectbox(key="attn_prompt").set_value(1).run()
    assert figure(at)["data"][0]["x"][1] == "1:'O'"


def test_massive_page_detects_and_shows_layers_dimensions_and_ablation(filled):
    at = page_test("massive_page", filled["db"], filled["spec"])
    assert_clean(at)
    assert [figure(at, i)["layout"]["xaxis"]["title"]["text"] for i in range(2)] == ["layer", "dimension"]
    at.number_input(key="massive_ratio").set_value(5.0).run()
    at.button(key="massive_detect").click().run()
    assert_clean(at)
    newest = wb.Store(filled["db"]).query("SELECT max(analysis_id) AS a FROM analyses WHERE kind = 'massive'")
    assert at.selectbox(key="massive_analysis").value == newest.a[0]  # the new detection is shown
    first = at.dataframe[0].value
    at.selectbox(key="massive_prompt").set_value(1).run()
    assert not at.dataframe[0].value.equals(first)
    at.button(key="ablate_run").click().run()
    finish(at, "job:ablate")
    assert "nothing to ablate" in at.error[0].value and "Ratio only" in at.error[0].value  # |a| > 100 on a tiny model
    at.checkbox(key="massive_relative").check().run()
    at.button(key="massive_detect").click().run()
    at.button(key="ablate_run").click().run()
    finish(at, "job:ablate")
    assert_clean(at)
    bars = figure(at, 2)["data"][0]
    assert bars["x"] == ["none", "zero", "mean"] and all(v > 0 for v in bars["y"])


def test_massive_page_shows_training_dynamics_with_fitted_curves(filled, tiny_dir, tmp_path):
    import shutil

    import numpy as np

    from workbench.massive.dynamics import emergence_curve

    model_dir = tmp_path / "trained"
    shutil.copytree(tiny_dir("llama"), model_dir)
    steps = np.array([0, 32, 64, 128, 256, 512, 1024, 2048])
    rows = [{"step": s, "layer": layer, "top1_pooled": 5 + layer * emergence_curve(s, 3.0, 0.2, 0.01, 1.0, 1.0),
             "median_pooled": 0.5, "ratio_pooled": 10 + layer * emergence_curve(s, 3.0, 0.2, 0.01, 1.0, 1.0)}
            for s in steps for layer in (0, 1)]
    pd.DataFrame(rows).to_csv(model_dir / "massive_by_checkpoint.csv", index=False)
    at = page_test("massive_page", filled["db"], str(model_dir))
    assert_clean(at)
    dynamics = figure(at, 2)
    assert [t["name"] for t in dynamics["data"]] == ["layer 0", "layer 1", "layer 1 fit"]  # layer 0 is flat: no fit
    assert at.selectbox(key="dyn_metric").options == ["top1 (pooled)", "median (pooled)", "ratio (pooled)"]
    at.selectbox(key="dyn_metric").set_value("ratio_pooled").run()
    assert figure(at, 2)["layout"]["yaxis"]["title"]["text"] == "ratio (pooled)"  # the figure names its pooling


def test_directions_page_computes_from_an_upload_and_draws_its_charts(filled):
    at = page_test("directions_page", filled["db"], filled["spec"])
    assert_clean(at)
    assert len(at.get("plotly_chart")) == 3  # separation, cosine matrix, projections
    at.selectbox(key="concept_choice").set_value("upload a JSONL file…").run()
    at.file_uploader(key="concept_upload").set_value(("weather.jsonl", concept_lines(8).encode(), "text/plain")).run()
    assert "positive, 12 training and 4 held-out" in at.caption[0].value
    at.button(key="direction_compute").click().run()
    finish(at, "job:directions")
    assert_clean(at)
    assert "Stored directions as analysis" in at.success[0].value
    hist = figure(at, 2)
    at.selectbox(key="direction_layer").set_value(0).run()
    assert figure(at, 2) != hist


def test_directions_page_names_the_fault_of_a_bad_upload(filled):
    at = page_test("directions_page", filled["db"], filled["spec"])
    at.selectbox(key="concept_choice").set_value("upload a JSONL file…").run()
    at.file_uploader(key="concept_upload").set_value(("bad.jsonl", b'{"text": "only one"\n', "text/plain")).run()
    assert not at.exception and "bad.jsonl:1 is not valid JSON" in at.error[0].value
    assert at.button(key="direction_compute").disabled


def test_steering_page_generates_side_by_side_sweeps_and_offers_every_format(filled):
    at = page_test("steering_page", filled["db"], filled["spec"])
    assert_clean(at)
    at.multiselect(key="steer_layers").set_value([2]).run()
    at.number_input(key="steer_alpha").set_value(100.0).run()
    at.number_input(key="steer_tokens").set_value(1).run()
    at.button(key="steer_generate").click().run()
    finish(at, "job:steer")
    assert_clean(at)
    assert len(at.code) == 2 and at.code[0].value != at.code[1].value
    assert [b.label for b in at.get("download_button")] == ["safetensors", "llama.cpp / repeng (.gguf)"]
    assert any("repeng" in c.value and "reads" in c.value for c in at.caption)
    at.multiselect(key="steer_layers").set_value([0, 2]).run()  # llama.cpp has no slot for block 0
    assert [b.label for b in at.get("download_button")] == ["safetensors"]
    heat = figure(at)
    assert heat["data"][0]["colorbar"]["title"]["text"] == "concept_shift"
    at.selectbox(key="sweep_metric").set_value("kl").run()
    assert figure(at)["data"][0]["colorbar"]["title"]["text"] == "kl"


def test_sparse_page_inspects_methods_draws_selections_and_the_curve(filled):
    at = page_test("sparse_page", filled["db"], filled["spec"])
    assert_clean(at)
    assert "No inspection stored" in at.info[0].value
    at.radio(key="sparse_source").set_value("a prompt").run()
    at.text_area(key="sparse_prompt").set_value("Once upon a time there was a cat who sat on a mat.").run()
    at.number_input(key="sparse_decode").set_value(6).run()
    at.button(key="sparse_run").click().run()
    finish(at, "job:sparse")
    assert_clean(at)
    recall, picture = figure(at, 0), figure(at, 1)
    assert {t["name"] for t in recall["data"]} >= {"attended fraction (decode)", "recall (decode)"}
    assert picture["layout"]["yaxis"]["title"]["text"] == "step"  # DELTA: token x decode step
    first = at.selectbox(key="sparse_analysis").value
    layers = at.selectbox(key="sparse_layer").options
    at.selectbox(key="sparse_layer").set_value(layers[-1]).run()
    assert_clean(at)
    at.selectbox(key="sparse_method").set_value("anchor").run()
    at.button(key="sparse_run").click().run()
    finish(at, "job:sparse")
    assert_clean(at)
    assert at.selectbox(key="sparse_analysis").value == first + 1  # the new inspection shows up selected
    assert figure(at, 1)["layout"]["yaxis"]["title"]["text"] == "query block"  # stripes per region
    at.selectbox(key="sparse_head").set_value(at.selectbox(key="sparse_head").options[-1]).run()
    assert_clean(at)
    at.selectbox(key="curve_length").set_value("128").run()
    at.multiselect(key="curve_budgets").set_value([1.0, 0.25]).run()
    at.number_input(key="curve_items").set_value(1).run()
    at.button(key="curve_run").click().run()
    finish(at, "job:curve")
    assert_clean(at)
    curve = figure(at, 2)
    assert {t["name"] for t in curve["data"]} == {"dense", "delta", "anchor", "deltallm"}
    dense = next(t for t in curve["data"] if t["name"] == "dense")
    assert len(set(_array(dense["y"]))) == 1 and len(_array(dense["x"])) == 2  # the control: one flat line
    assert "No kernel timings" in at.caption[-1].value


def test_sparse_page_shows_stored_kernel_benchmarks(tmp_path, tiny_dir):
    from workbench.kernel_benchmarks import store_kernel_results
    from workbench_kernels.results import Result, write_results

    results = tmp_path / "run.jsonl"
    write_results(results, [Result("selection_scores", "selection", "B=1 N=8192", 0.02, "one dense step", 0.019,
                                   "copy bandwidth", 0.25)], {"gpu": "NVIDIA H200", "commit": "abcdef0"})
    store_kernel_results(wb.Store(tmp_path / "bench.duckdb"), [results])
    at = page_test("sparse_page", tmp_path / "bench.duckdb", str(tiny_dir("llama")))
    assert_clean(at)
    shown = at.dataframe[-1].value
    assert shown[["op", "device", "commit"]].values.tolist() == [["selection_scores", "NVIDIA H200", "abcdef0"]]
    assert shown.speedup.tolist() == [pytest.approx(0.95)]


def test_sparse_page_is_polite_for_encoders(filled, tiny_dir):
    at = page_test("sparse_page", filled["db"], str(tiny_dir("bert")))
    assert_clean(at)
    assert "encoder" in at.info[0].value and not at.get("plotly_chart")


def test_steering_page_is_polite_for_encoders(filled, tiny_dir):
    at = page_test("steering_page", filled["db"], str(tiny_dir("bert")))
    assert_clean(at)
    assert "encoder" in at.info[0].value and not at.get("plotly_chart")


def test_attention_page_works_for_an_encoder(tiny_dir, tmp_path):
    wb.record(wb.load_model(str(tiny_dir("bert")), attention=True), ["hello there"], tmp_path / "b.duckdb",
              wb.RecordConfig(attention=True), progress=False)
    at = page_test("attention_page", tmp_path / "b.duckdb", str(tiny_dir("bert")))
    assert_clean(at)
    full = figure(at)["data"][0]["z"]
    assert all(v is not None for row in full for v in row)  # an encoder attends both ways


def test_pages_say_what_to_do_on_an_empty_database(tmp_path, tiny_dir):
    for name in ("attention_page", "massive_page", "directions_page", "steering_page", "sparse_page"):
        at = page_test(name, tmp_path / "empty.duckdb", str(tiny_dir("gpt2")))
        assert_clean(at)
        assert at.info, name


def test_a_file_that_is_not_a_database_is_a_message(tmp_path, tiny_dir):
    (tmp_path / "notes.duckdb").write_text("not a database")
    for name in ("attention_page", "massive_page", "directions_page", "steering_page", "sparse_page"):
        at = page_test(name, tmp_path / "notes.duckdb", str(tiny_dir("gpt2")))
        assert not at.exception and "not a DuckDB database" in at.error[0].value, name
    assert (tmp_path / "notes.duckdb").read_text() == "not a database"


def _failing_job(error: str):
    import streamlit as st

    from workbench.ui import jobs

    def work(job):
        raise {"memory": MemoryError(), "bug": RuntimeError("boom")}[error]

    if st.button("go", key="go"):
        jobs.start("job:x", "failing", work)
    jobs.result("job:x")


@pytest.mark.parametrize("error, message", [("memory", "out of memory"), ("bug", "RuntimeError: boom")])
def test_a_failing_job_is_a_message_and_the_app_keeps_running(error, message):
    at = AppTest.from_function(_failing_job, args=(error,), default_timeout=30).run()
    at.button(key="go").click().run()
    finish(at, "job:x")
    assert not at.exception and message in at.error[0].value
    at.button(key="go").click().run()  # and it can be started again
    assert at.session_state["job:x"].thread.is_alive() or at.session_state["job:x"].finished



PAGES = ("runs_page", "attention_page", "massive_page", "directions_page", "steering_page", "sparse_page",
         "sql_page")


@pytest.mark.skipif("demo" not in bundled_models(), reason="the demo model is not on disk yet")
def test_every_page_runs_on_the_demo_model(tmp_path):
    db = tmp_path / "demo.duckdb"
    run_id = wb.record(wb.load_model("demo", attention=True), ["Once upon a time, there was a child named Leo."],
                       db, wb.RecordConfig(attention=True), progress=False)
    detect(wb.Store(db), run_id, MassiveConfig(relative_only=True, ratio_threshold=10.0))
    for name in PAGES:
        at = page_test(name, db, "demo")
        assert_clean(at)
    assert len(page_test("attention_page", db, "demo").get("plotly_chart")) == 3


def test_memory_page_draws_a_delta_layers_memory_and_stores_it(tiny_dir, tmp_path):
    spec = str(tiny_dir("delta_net"))
    at = page_test("memory_page", tmp_path / "m.duckdb", spec)
    assert_clean(at)
    assert at.selectbox(key="memory_layer").options == ["0", "2"]  # layer 1 is softmax attention
    writes, state, spans, retention, attention, survival = (figure(at, i) for i in range(6))
    tokens = wb.load_model(spec).tokenizer(at.text_area(key="memory_prompt").value).input_ids
    assert len(_array(writes["data"][0]["y"])) == len(tokens)  # one bar per token
    assert len(state["data"]) == 2 * 4  # norm and rank per head
    n = len(tokens)
    weights = _array(attention["data"][0]["z"]).reshape(n, n)
    assert np.allclose(np.triu(weights, 1), 0)
    assert np.allclose(np.diag(_array(survival["data"][0]["z"]).reshape(n, n)), 1, atol=1e-4)  # |k| = 1 - eps
    assert np.allclose(_array(retention["data"][0]["z"]).reshape(4, n), 1)  # DeltaNet never decays
    half_lives = [t for t in spans["data"] if t["name"].startswith("half-life")]
    assert sum(len(t["x"]) for t in half_lives) == 4 and all(  # no decay: no bar, and the title says so
        np.isinf(_array(t["customdata"])).all() for t in half_lives)
    assert "no decay" in spans["layout"]["title"]["text"]
    at.selectbox(key="memory_head").set_value(2).run()
    assert_clean(at)
    assert not np.allclose(_array(figure(at, 4)["data"][0]["z"]).reshape(n, n), weights)
    at.button(key="memory_store").click().run()
    assert "Stored as analysis" in at.success[0].value
    rows = wb.Store(tmp_path / "m.duckdb").query("SELECT DISTINCT layer FROM delta_memory")
    assert rows.layer.tolist() == [0]


def test_memory_page_is_polite_for_models_without_delta_layers(tiny_dir, tmp_path):
    at = page_test("memory_page", tmp_path / "m.duckdb", str(tiny_dir("llama")))
    assert_clean(at)
    assert "no delta-rule layers" in at.info[0].value and not at.get("plotly_chart")


@pytest.mark.parametrize("model_type", ["qwen3_next", "qwen3_5", "olmo_hybrid", "kimi_linear"])
def test_memory_page_opens_on_transformers_gated_hybrids(model_type, tiny_dir, tmp_path):
    """Its layers and heads are the model's delta-rule layers and their value heads."""
    from workbench.deltanet.inspection import delta_layers

    model = wb.load_model(str(tiny_dir(model_type)))
    at = page_test("memory_page", tmp_path / "m.duckdb", str(tiny_dir(model_type)))
    assert_clean(at)
    layers = delta_layers(model)
    assert at.selectbox(key="memory_layer").options == [str(layer) for layer in layers] and layers
    heads = len(at.selectbox(key="memory_head").options)
    assert heads == len(figure(at, 1)["data"]) // 2  # norm and rank per head
    kept = _array(figure(at, 3)["data"][0]["z"]).reshape(heads, -1)  # a gated rule forgets a little every token
    assert ((kept > 0) & (kept < 1)).all()


def test_memory_page_compares_two_prompts(tiny_dir, tmp_path):
    at = page_test("memory_page", tmp_path / "m.duckdb", str(tiny_dir("qwen3_next")))
    charts = len(at.get("plotly_chart"))
    at.text_area(key="memory_compare").set_value("key 99 : value 1. Question: what is the value of key 4821?").run()
    assert_clean(at)
    divergence, readouts = figure(at, charts), figure(at, charts + 1)
    assert _array(divergence["data"][0]["z"]).size == 3 * 4  # the three delta-rule layers x four heads
    assert len(readouts["data"]) == 4 and (_array(readouts["data"][0]["y"]) >= 0).all()


def test_lens_page_draws_the_logit_and_tuned_lens_and_stores_them(tiny_dir, tmp_path):
    from workbench.lens.tuned_lens import save_tuned_lens, train_tuned_lens

    spec = str(tiny_dir("llama"))
    model = wb.load_model(spec)
    at = page_test("lens_page", tmp_path / "l.duckdb", spec)
    assert_clean(at)
    tokens = model.tokenizer(at.text_area(key="lens_prompt").value)["input_ids"]
    grid, kl = figure(at, 0), figure(at, 1)
    assert _array(grid["data"][0]["z"]).size == model.n_layers * len(tokens)
    assert len(kl["data"]) == 1 and _array(kl["data"][0]["y"])[-1] == pytest.approx(0, abs=1e-5)
    path = save_tuned_lens(train_tuned_lens(model, ["a cat sat"], steps=2), tmp_path / "lens.safetensors")
    at.text_input(key="lens_tuned").set_value(str(path)).run()
    assert_clean(at)
    assert len(at.get("plotly_chart")) == 3 and len(figure(at, 2)["data"]) == 2  # two maps, both lenses' KL
    at.text_input(key="lens_tuned").set_value(str(tmp_path / "missing.safetensors")).run()
    assert "no tuned-lens file" in at.error[0].value
    at.text_input(key="lens_tuned").set_value("").run()
    at.button(key="lens_store").click().run()
    assert "Stored as analysis" in at.success[0].value
    assert wb.Store(tmp_path / "l.duckdb").query("SELECT DISTINCT lens FROM lens").lens.tolist() == ["logit"]


def test_lens_page_is_polite_for_encoders(tiny_dir, tmp_path):
    at = page_test("lens_page", tmp_path / "l.duckdb", str(tiny_dir("bert")))
    assert_clean(at)
    assert "encoder" in at.info[0].value and not at.get("plotly_chart")


def test_lens_page_patches_a_pair_and_draws_both_grids(tiny_dir, tmp_path):
    spec = str(tiny_dir("llama"))
    at = page_test("lens_page", tmp_path / "l.duckdb", spec)
    charts = len(at.get("plotly_chart"))
    at.text_area(key="patch_clean").set_value("the cat sat on the mat")
    at.text_area(key="patch_corrupt").set_value("the cat sat on the hat")
    at.text_input(key="patch_answer").set_value("t")
    at.text_input(key="patch_wrong").set_value("a")
    at.button(key="patch_run").click().run()
    assert_clean(at)
    resid, resid_estimate, heads, heads_estimate = (figure(at, charts + i) for i in range(4))
    model = wb.load_model(spec)
    n = len(model.tokenizer("the cat sat on the mat")["input_ids"])
    assert _array(resid["data"][0]["z"]).size == model.n_layers * n
    assert _array(heads["data"][0]["z"]).size == model.n_layers * model.n_heads
    last = _array(resid["data"][0]["z"]).reshape(model.n_layers, n)[-1, -1]
    assert last == pytest.approx(1, abs=1e-4)  # the last layer's residual at the last position restores it all
    at.text_area(key="patch_corrupt").set_value("the cat sat").run()
    at.button(key="patch_run").click().run()
    assert "same number" in at.error[0].value


def test_lens_page_opens_a_cell_on_the_attention_and_massive_pages(tiny_dir, tmp_path):
    """The link records the prompt with its attention maps once and sets the other page's run and layer."""
    at = page_test("lens_page", tmp_path / "l.duckdb", str(tiny_dir("llama")))
    at.selectbox(key="lens_cell_layer").set_value(1)
    at.selectbox(key="lens_cell_position").set_value(2).run()
    assert "Top tokens here:" in " ".join(c.value for c in at.caption)
    at.button(key="lens_to_attention").click().run()
    runs = wb.Store(tmp_path / "l.duckdb").list_runs()
    assert runs.status.tolist() == ["complete"] and at.session_state["attn_layer"] == 1
    assert at.session_state["attn_run"] == runs.run_id[0]
    at.button(key="lens_to_massive").click().run()
    assert len(wb.Store(tmp_path / "l.duckdb").list_runs()) == 1  # recorded once
    assert at.session_state["massive_run"] == runs.run_id[0] and at.session_state["massive_analysis"] >= 1


def test_attention_page_summarises_a_long_prompt_and_zooms_into_a_window(tmp_path):
    """No maps are stored: the tile overview comes from a summary, and a window's exact weights from the model."""
    from workbench.attention_summaries import attention_window

    prompt = "key 4821 : value 7735 . Question: what is the value of key 4821? Answer:"
    at = page_test("attention_page", tmp_path / "s.duckdb", "demo")
    assert_clean(at)
    at.text_area(key="summary_prompt").set_value(prompt)
    at.number_input(key="summary_tiles").set_value(4).run()
    at.button(key="summary_run").click().run()
    finish(at, "job:summary")
    assert_clean(at)
    tiles = figure(at, 0)
    assert len(_array(tiles["data"][0]["z"])) == 16  # 4 x 4 tiles
    at.number_input(key="window_q0").set_value(20)
    at.number_input(key="window_q1").set_value(25)
    at.number_input(key="window_k0").set_value(0)
    at.number_input(key="window_k1").set_value(9).run()
    at.button(key="window_run").click().run()
    assert_clean(at)
    window = figure(at, 1)
    expected = attention_window(wb.load_model("demo", attention=True), prompt, at.selectbox(key="summary_layer").value,
                                at.selectbox(key="summary_head").value, (20, 26), (0, 10))
    np.testing.assert_allclose(_array(window["data"][0]["z"]).reshape(6, 10), expected, atol=1e-6)
    assert window["data"][0]["y"][0].startswith("20:")  # a narrow window is labelled with its tokens
