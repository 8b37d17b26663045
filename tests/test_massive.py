"""Massive activations: a planted one is found exactly, the fit recovers known parameters, ablation acts causally."""

import json
import warnings

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.cli import main
from workbench.config import MassiveConfig
from workbench.massive import detection as massive
from workbench.massive.ablation import ablate
from workbench.massive.dynamics import emergence_curve, fit_emergence

PROMPTS = ["The cat sat. On the mat.", "Hello there, world!", "A dog runs\nfast."]
LAYER, DIM, UNIT = 1, 11, 7


@pytest.fixture
def planted(tiny_dir):
    """A tiny Llama whose layer-1 MLP writes one hidden unit, scaled 1e5, into dimension 11."""
    model = wb.load_model(str(tiny_dir("llama")), attention=True)
    with torch.no_grad():
        model.hf.model.layers[LAYER].mlp.down_proj.weight[DIM, UNIT] *= 1e5
    return model


def _unit_argmax(model, prompt):
    """Independently: the token whose layer-1 MLP hidden unit 7 is largest in magnitude."""
    seen = {}
    hook = model.hf.model.layers[LAYER].mlp.down_proj.register_forward_hook(
        lambda m, inputs, out: seen.update(x=inputs[0][0, :, UNIT].abs()))
    with torch.no_grad():
        model.hf(torch.tensor([model.tokenizer(prompt)["input_ids"]]))
    hook.remove()
    return int(seen["x"].argmax())


def test_planted_activation_found_at_its_layer_token_and_dim(planted, db_path):
    store = wb.Store(db_path)
    analysis = store.analysis(massive.detect_prompts(planted, PROMPTS, store, progress=False))
    found = store.query("SELECT * FROM massive_findings WHERE analysis_id = ? AND is_massive",
                        [analysis["analysis_id"]])
    assert analysis["summary"]["massive_found"] and analysis["summary"]["first_layer"] == LAYER
    assert set(found.dim) == {DIM} and found.layer.min() == LAYER
    for prompt_id, prompt in enumerate(PROMPTS):
        top = found[(found.prompt_id == prompt_id) & (found.layer == LAYER) & (found["rank"] == 1)]
        assert top.position.tolist() == [_unit_argmax(planted, prompt)]
    value = float(found.value.abs().max())
    above = store.analysis(massive.detect(store, analysis["run_id"], MassiveConfig(abs_threshold=value * 1.01)))
    assert not above["summary"]["massive_found"]
    assert "No massive activations" in above["summary"]["statement"]


def test_unplanted_model_has_none_and_relative_mode_is_looser(tiny_dir, db_path):
    store = wb.Store(db_path)
    model = wb.load_model(str(tiny_dir("llama")))
    plain = store.analysis(massive.detect_prompts(model, PROMPTS, store, progress=False))
    assert not plain["summary"]["massive_found"]
    loose = MassiveConfig(relative_only=True, ratio_threshold=1.0)
    assert store.analysis(massive.detect(store, plain["run_id"], loose))["summary"]["massive_found"]


def test_top_n_beyond_the_recorded_top_k_is_refused(tiny_dir, db_path):
    run_id = wb.record(str(tiny_dir("gpt2")), PROMPTS, db_path, wb.RecordConfig(top_k=2), progress=False)
    with pytest.raises(wb.WorkbenchError, match="would not be exact"):
        massive.detect(wb.Store(db_path), run_id, MassiveConfig(top_n=3))


def test_sink_shares_match_attention_computed_by_hand(planted, db_path):
    store = wb.Store(db_path)
    detection = massive.detect_prompts(planted, PROMPTS, store, progress=False)
    shares = store.query("SELECT * FROM sink_attention WHERE analysis_id = ?",
                         [massive.sink_attention(planted, store, detection)])
    sinks = massive.sink_positions(store, detection)
    total, queries = torch.zeros(planted.n_layers, planted.n_heads), 0
    for prompt_id, prompt in enumerate(PROMPTS):
        with torch.no_grad():
            out = planted.hf(torch.tensor([planted.tokenizer(prompt)["input_ids"]]), output_attentions=True)
        for layer, attention in enumerate(out.attentions):
            total[layer] += attention[0][:, :, sinks[prompt_id]].sum(dim=(-1, -2))
        queries += attention.shape[-1]
    expected = (total / queries).flatten()
    torch.testing.assert_close(torch.tensor(shares.sort_values(["layer", "head"]).sink_share.to_numpy()), expected)
    assert shares.top_abs[shares.layer == LAYER].iloc[0] > 100


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_recovers_known_parameters(seed):
    true = {"A": 40.0, "lambda": 0.05, "gamma": 1e-3, "t0": 1.0, "K": 5.0}
    steps = np.unique(np.concatenate([2 ** np.arange(10), np.arange(1000, 143001, 2000)]))
    clean = emergence_curve(steps, *true.values())
    noisy = clean + 0.01 * clean.std() * np.random.default_rng(seed).standard_normal(len(steps))
    fit = fit_emergence(steps, noisy)
    for name, value in true.items():
        assert fit.params[name] == pytest.approx(value, rel=0.05), name
        assert 0 < fit.stderr[name] < abs(value)
    assert fit.r2 > 0.99 and fit.identified


def test_a_curve_its_checkpoints_cannot_pin_down_is_fitted_but_its_parameters_are_not_claimed():
    """Linear growth is Eq. 9 only in a limit (t0 -> infinity): the curve fits, its five parameters are
    reported without standard errors, and its peak is the last step."""
    steps = np.array([0, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings on the way
        fit = fit_emergence(steps, 5.0 + 0.015 * steps)
    assert fit.r2 > 0.99 and not fit.identified and all(np.isnan(e) for e in fit.stderr.values())
    assert fit.peak_step == steps[-1] and fit.peak_value == pytest.approx(5.0 + 0.015 * steps[-1], rel=1e-3)


def test_the_demo_training_table_fits_every_layer_of_the_pooled_ratio():
    from workbench.massive.views import fit_training_table
    from workbench.models import bundled_models

    _, fits, failed = fit_training_table(bundled_models()["demo"] / "massive_by_checkpoint.csv")
    ratio = fits[fits.metric == "ratio_pooled"]
    assert ratio.layer.nunique() == 8 and (ratio.r2 > 0.8).all()
    assert not [f for f in failed if f["metric"] == "ratio_pooled"]


def test_fit_refuses_too_few_points():
    with pytest.raises(wb.WorkbenchError, match="at least 6"):
        fit_emergence([1, 2, 3], [1.0, 2.0, 3.0])


def test_ablation_zero_hurts_mean_barely_and_an_empty_mask_is_refused(planted):
    model = planted
    trials = ablate(model, PROMPTS, LAYER, [DIM]).set_index("mode")
    assert trials.n_ablated.min() >= len(PROMPTS)
    zero = trials.loss_ablated["zero"] - trials.loss_base["zero"]
    mean = trials.loss_ablated["mean"] - trials.loss_base["mean"]
    assert zero > 0 and abs(mean) < abs(zero) / 5
    with pytest.raises(wb.WorkbenchError, match=r"nothing to ablate: no entry of dims \[\d+\] at layer \d+ meets the "
                                               r"criterion \(\|a\| > 100 and > 1000x the median\).*relative criterion"):
        ablate(model, PROMPTS, LAYER, [DIM + 1])
    with pytest.raises(wb.WorkbenchError, match="outside"):
        ablate(model, PROMPTS, LAYER, [10_000])


def test_overflow_is_reported_where_it_first_appears(tiny_dir, db_path):
    model = wb.load_model(str(tiny_dir("gpt2")), dtype=torch.float16)
    token = model.tokenizer("z")["input_ids"][0]
    with torch.no_grad():
        model.hf.transformer.wte.weight[token, 5] = 60000
        model.hf.transformer.h[0].mlp.c_proj.bias[5] = 10000
    store = wb.Store(db_path)
    summary = store.analysis(massive.detect_prompts(model, ["abz"], store, progress=False))["summary"]
    assert summary["nonfinite"] == {"layer": 0, "prompt_id": 0, "position": 2}
    assert "Non-finite values" in summary["statement"]


def test_massive_commands(tiny_dir, db_path, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS))
    steps = []
    for step, seed in ((10, 1), (100, 2), (1000, 3), (3000, 4), (10000, 5), (30000, 6)):
        from workbench.random_models import build
        steps.append(str(build("gpt2", tmp_path / f"step{step}", seed=seed)))
    args = ["--db", str(db_path), "--prompts", str(prompts), "--json"]
    assert main(["massive", "--model", steps[-1], "--sinks", *args]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["layers"]) == 3 and "max_head_sink_share" in report["layers"][0]
    assert main(["massive-dynamics", "--model", "gpt2-checkpoints", "--checkpoints", ",".join(steps),
                 "--relative-only", "--ratio", "1", *args]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["fits"]) + len(report["not_fitted"]) > 0
    for row in report["fits"]:  # a layer's fit: the curve's R^2 and peak, and each parameter (or "—")
        assert {"r2", "peak_step", "peak_value", "A", "lambda", "gamma", "t0", "K"} <= set(row)
    assert main(["massive-dynamics", "--model", "gpt2-checkpoints", "--checkpoints", ",".join(steps[:3]),
                 "--relative-only", "--ratio", "1", "--db", str(db_path), "--prompts", str(prompts)]) == 0
    out = capsys.readouterr().out
    assert "(no rows)" not in out and "fitting needs at least 6 checkpoints, got 3" in out
    assert main(["massive-ablate", "--model", steps[-1], "--layer", "1", "--dims", "3", "--relative-only",
                 "--ratio", "2", *args]) == 0
    trials = json.loads(capsys.readouterr().out)
    assert [t["mode"] for t in trials] == ["zero", "mean"]
    assert main(["massive", "--run", "999", "--db", str(db_path)]) == 2
