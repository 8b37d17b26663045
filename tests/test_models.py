"""Every family loads with one uniform view and records; bad specs fail with a clear message."""

import json

import pytest
import torch

import workbench as wb
from workbench import random_models
from workbench.errors import ModelSpecError


@pytest.mark.parametrize("family", list(random_models.CONFIGS))
def test_every_family_loads_and_records(family, tiny_dir, db_path):
    model = wb.load_model(str(tiny_dir(family)))
    assert model.model_type == family
    assert model.is_generative == (family not in random_models.ENCODERS)
    assert model.n_layers == 3 and model.d_model == 32
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    for part in ("embed", "unembed"):
        assert isinstance(model.module(part), torch.nn.Module)
    if family in random_models.ENCODERS:  # post-norm layers: nothing normalises after the last one
        assert model.part_path("final_norm") is None
    else:
        assert isinstance(model.module("final_norm"), torch.nn.Module)
    for part in ("block", "attn", "mlp"):
        assert isinstance(model.module(part, 2), torch.nn.Module)

    run_id = wb.record(model, ["abc", "hello there"], db_path, wb.RecordConfig(attn_out=True, mlp_out=True),
                       progress=False)
    store = wb.Store(db_path)
    assert store.run(run_id)["status"] == "complete"
    n_tokens = sum(len(model.tokenizer(p)["input_ids"]) for p in ["abc", "hello there"])
    counts = store.query("SELECT site, count(*) AS n FROM layer_stats GROUP BY site ORDER BY site")
    assert counts.to_dict("list") == {"site": ["attn_out", "mlp_out", "resid_post"], "n": [n_tokens * 3] * 3}


def test_eager_attention_only_when_asked(tiny_dir):
    assert wb.load_model(str(tiny_dir("llama"))).hf.config._attn_implementation == "sdpa"
    assert wb.load_model(str(tiny_dir("llama")), attention=True).hf.config._attn_implementation == "eager"


def test_layer_out_of_range_names_the_range(tiny_dir):
    model = wb.load_model(str(tiny_dir("gpt2")))
    with pytest.raises(ModelSpecError, match=r"layer 3 is out of range.*0\.\.2"):
        model.check_layer(3)


@pytest.mark.parametrize("spec, message", [
    ("", "empty"),
    ("./no/such/dir", "unknown model spec"),
    ("not a model!", "unknown model spec"),
    ("someone/never-downloaded-model", "not in the local Hugging Face cache"),
])
def test_unknown_specs_fail_clearly(spec, message):
    with pytest.raises(ModelSpecError, match=message):
        wb.load_model(spec)


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelSpecError, match="no config.json"):
        wb.load_model(str(tmp_path))


def test_an_architecture_with_no_language_model_head_says_so(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 8}))
    with pytest.raises(ModelSpecError, match=r"transformers cannot build .* \(t5\) as a language model"):
        wb.load_model(str(tmp_path))


def test_remote_code_needs_consent(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "mystery", "auto_map": {"AutoConfig": "configuration_mystery.MysteryConfig"}}))
    with pytest.raises(ModelSpecError, match="trust_remote_code"):
        wb.load_model(str(tmp_path))


def test_bundled_model_is_found_or_explained():
    from workbench.models import BUNDLED_DIR, bundled_models

    if "demo" in bundled_models():
        assert wb.load_model("demo").model_type == "llama"
    else:
        with pytest.raises(ModelSpecError, match="train it with"):
            wb.load_model("demo")
    with pytest.raises(ModelSpecError, match="no checkpoint 'step-0'"):
        wb.load_model("demo", revision="step-0")
    assert BUNDLED_DIR.name == "models"
