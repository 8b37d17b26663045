"""The read-side helpers behind the app's pages: attention maps and sink mass, massive-activation tables,
vector downloads, and the app's store, whose pages and jobs share one process."""

import threading

import numpy as np
import pandas as pd
import pytest
import torch

import workbench as wb
from workbench.attention import attention_maps, attention_runs, recorded_layers, sink_mass
from workbench.errors import WorkbenchError
from workbench.massive.dynamics import emergence_curve
from workbench.massive.views import fit_training_table, fitted_curves, layer_dim_max, training_metrics
from workbench.recording import capture
from workbench.steering.export import import_vector
from workbench.steering.vector_files import vector_file_bytes


@pytest.fixture(scope="module")
def recorded(tiny_dir, tmp_path_factory):
    store = wb.Store(tmp_path_factory.mktemp("attn") / "a.duckdb")
    model = wb.load_model(str(tiny_dir("gpt2")), attention=True)
    prompts = ["abc def", "hello"]
    run_id = wb.record(model, prompts, store, wb.RecordConfig(attention=True, layers=(0, 2)), progress=False)
    return store, model, prompts, run_id


def test_attention_maps_are_the_model_s_own_weights(recorded):
    store, model, prompts, run_id = recorded
    maps = attention_maps(store, run_id, 0)  # [L, H, T, T]
    ids = torch.tensor([model.tokenizer(prompts[0])["input_ids"]])
    expected = capture(model, ids, torch.ones_like(ids), [0, 2], wb.RecordConfig(attention=True))["pattern"]
    for i in range(2):
        reference = expected[i][0].numpy()
        causal = np.tril(np.ones(reference.shape[-2:], dtype=bool))
        np.testing.assert_allclose(maps[i][:, causal], reference[:, causal], atol=1e-6)
        assert np.isnan(maps[i][:, ~causal]).all()
    assert recorded_layers(store, run_id) == [0, 2]
    assert attention_runs(store).run_id.tolist() == [run_id]


def test_sink_mass_averages_the_weight_on_position_0_over_later_queries(recorded):
    store, _, prompts, run_id = recorded
    table = sink_mass(store, run_id)
    maps = [attention_maps(store, run_id, p) for p in range(len(prompts))]
    expected = np.concatenate([m[..., 1:, 0] for m in maps], axis=-1).mean(-1)  # [L, H]
    np.testing.assert_allclose(table.sink_mass.to_numpy().reshape(expected.shape), expected, rtol=1e-5)
    n = [m.shape[-1] for m in maps]
    uniform = np.mean([1 / (q + 1) for length in n for q in range(1, length)])
    np.testing.assert_allclose(table.uniform_mass, uniform, rtol=1e-6)


def test_a_run_without_attention_maps_says_how_to_get_them(tiny_dir, tmp_path):
    run_id = wb.record(str(tiny_dir("gpt2")), ["abc"], tmp_path / "x.duckdb", progress=False)
    with pytest.raises(WorkbenchError, match="attention maps"):
        sink_mass(wb.Store(tmp_path / "x.duckdb"), run_id)


def test_layer_dim_max_is_the_largest_recorded_value_per_layer_and_dimension(recorded):
    store, _, _, run_id = recorded
    table = layer_dim_max(store, run_id, max_dims=5)
    assert table.dim.nunique() <= 5
    stats = store.query("SELECT layer, max_abs, max_dim FROM layer_stats WHERE run_id = ?", [run_id])
    strongest = stats.loc[stats.max_abs.idxmax()]
    row = table[(table.layer == strongest.layer) & (table.dim == strongest.max_dim)]
    assert row.max_abs.item() == pytest.approx(strongest.max_abs)


def test_training_table_fits_recover_the_curve(tmp_path):
    steps = np.array([0, 16, 32, 64, 128, 256, 512, 1024, 2048])
    truth = emergence_curve(steps, 3.0, 0.3, 0.01, 1.0, 1.0)
    pd.DataFrame({"step": steps, "layer": 0, "top1_pooled": truth, "median_pooled": 1.0,
                  "ratio_pooled": truth}).to_csv(tmp_path / "t.csv", index=False)
    metrics, fits, failed = fit_training_table(tmp_path / "t.csv")
    assert set(metrics.metric) == {"top1_pooled", "median_pooled", "ratio_pooled"}  # named for their pooling
    assert [(f["metric"], f["reason"]) for f in failed] == [  # a flat series has no curve to fit
        ("median_pooled", "the series is flat (1 at every checkpoint): there is no curve to fit")]
    curve = fitted_curves(fits, "top1_pooled", steps)
    np.testing.assert_allclose(np.interp(steps, curve.step, curve.value), truth, rtol=1e-2, atol=1e-2)
    assert fitted_curves(fits, "no-such-metric", steps).empty


def test_a_table_with_other_columns_is_refused(tmp_path):
    (tmp_path / "t.csv").write_text("step,layer,loss\n0,0,1.0\n")
    with pytest.raises(WorkbenchError, match="lacks the columns"):
        training_metrics(tmp_path / "t.csv")


@pytest.mark.parametrize("format", ["safetensors", "gguf", "repeng"])
def test_download_bytes_read_back_as_the_same_vector(format, tmp_path):
    vectors = {2: np.arange(4, dtype=np.float32)}
    data = vector_file_bytes(vectors, {"model": "m", "layers": [2]}, format)
    path = tmp_path / ("v.safetensors" if format == "safetensors" else "v.gguf")
    path.write_bytes(data)
    np.testing.assert_array_equal(import_vector(path)[0][2], vectors[2])


def test_app_store_lets_a_job_write_while_a_page_reads(tmp_path):
    from workbench.ui.state import AppStore

    store = AppStore(tmp_path / "busy.duckdb")
    store.save_analysis("massive-ablation", {}, {})
    failures = []

    def writer():
        try:
            for _ in range(30):
                store.save_analysis("massive-ablation", {}, {})
        except Exception as e:  # noqa: BLE001
            failures.append(e)

    thread = threading.Thread(target=writer)
    thread.start()
    while thread.is_alive():
        store.query("SELECT count(*) FROM analyses")
    thread.join()
    assert not failures and store.query("SELECT count(*) AS n FROM analyses").n[0] == 31
