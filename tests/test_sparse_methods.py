"""Sparse attention inside real models: a full budget reproduces dense attention on every generating
family, the replacement is per layer and removable, and smaller budgets really change what is attended."""

import logging
import math

import pytest
import torch
import transformers as T

import workbench as wb
from workbench import random_models
from workbench.errors import WorkbenchError
from workbench.models import default_attention
from workbench.sparse import DenseConfig, sparse_attention
from workbench.sparse.anchor import AnchorConfig
from workbench.sparse.accuracy import cache_argument
from workbench.sparse.delta import DeltaConfig, default_full_layers
from workbench.sparse.deltallm import DeltaLLMConfig
from workbench.sparse.inspection import inspect_texts
from workbench_kernels import dispatch

FULL_BUDGET = {
    "dense": DenseConfig(),
    "delta": DeltaConfig(budget=1.0, page_size=4),
    "anchor": AnchorConfig(theta=math.inf, block_size=4, step=2, budget=1.0),
    "deltallm": DeltaLLMConfig(window=4, budget=1.0),
}
PREFILL, DECODE = 24, 3


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: on a shared 2-core machine, torch's thread pool costs far more than it saves."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _load(tiny_dir, family):
    """The attention the workbench loads the family with (SDPA, or eager for Gemma 2's soft-capping)."""
    path = tiny_dir(family)
    return T.AutoModelForCausalLM.from_pretrained(
        path, attn_implementation=default_attention(T.AutoConfig.from_pretrained(path))).eval()


@torch.no_grad()
def _decode(hf, ids):
    """Logits of a prefill of PREFILL tokens and DECODE single-token steps through the cache: [1, N, V]."""
    cache = T.DynamicCache(config=hf.config)
    out = [hf(ids[:, :PREFILL], **{cache_argument(hf): cache}).logits]
    out += [hf(ids[:, t:t + 1], **{cache_argument(hf): cache}).logits for t in range(PREFILL, PREFILL + DECODE)]
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("family", [f for f in random_models.GENERATIVE if f != "delta_net"])  # no KV cache
def test_full_budget_equals_dense_attention_on_every_family(tiny_dir, family):
    hf = _load(tiny_dir, family)
    own = hf.config._attn_implementation
    ids = torch.randint(10, 60, (1, PREFILL + DECODE), generator=torch.Generator().manual_seed(1))
    reference = _decode(hf, ids)
    windows = random_models.CONFIGS[family]().sliding_window if family in ("gemma2", "gemma3_text") else None
    for name, config in FULL_BUDGET.items():
        if windows is not None and name in ("delta", "deltallm"):  # their selections would outlive the window
            with pytest.raises(WorkbenchError, match="sliding window"), sparse_attention(hf, config):
                _decode(hf, ids)
            continue
        with sparse_attention(hf, config, recall=True) as session:
            got = _decode(hf, ids)
        torch.testing.assert_close(got, reference, atol=2e-5, rtol=1e-5, msg=f"{family}/{name}")
        assert session.log.attended_fraction() == pytest.approx(1.0), name
        assert session.log.mean_recall() == pytest.approx(1.0, abs=1e-5), name
    assert hf.config._attn_implementation == own


def test_gemma2_soft_capping_is_applied_and_an_unknown_attention_argument_is_refused(tiny_dir):
    """Gemma 2 passes its logit soft-cap as a keyword: without it the dense control would differ from the model
    (the test above holds it equal); an argument the methods do not know stops the call instead of being dropped."""
    from workbench.sparse import registry

    hf = _load(tiny_dir, "gemma2")
    assert hf.config.attn_logit_softcapping == 2.0 and hf.config._attn_implementation == "eager"
    module = hf.model.layers[0].self_attn
    q, k = torch.randn(1, 4, 3, 8), torch.randn(1, 2, 3, 8)
    with sparse_attention(hf, DenseConfig(), layers=[0]):  # the calls below are layer 0's
        capped, _ = registry.sparse_attention_forward(module, q, k, k, None, scaling=1.0, softcap=0.5)
        plain, _ = registry.sparse_attention_forward(module, q, k, k, None, scaling=1.0)
        assert not torch.allclose(capped, plain)
        with pytest.raises(WorkbenchError, match=r"passes its attention \['s_aux'\]"):
            registry.sparse_attention_forward(module, q, k, k, None, s_aux=torch.zeros(4))


def test_small_budgets_attend_less_and_change_the_output(tiny_dir):
    hf = _load(tiny_dir, "llama")
    ids = torch.randint(10, 60, (1, PREFILL + DECODE), generator=torch.Generator().manual_seed(2))
    reference = _decode(hf, ids)
    sparse = {"delta": DeltaConfig(budget=0.25, page_size=4), "deltallm": DeltaLLMConfig(window=4, budget=0.1),
              "anchor": AnchorConfig(theta=0.0, block_size=4, step=1, budget=0.2)}
    for name, config in sparse.items():
        with sparse_attention(hf, config, recall=True) as session:
            got = _decode(hf, ids)
        assert (got - reference).abs().max() > 1e-3, name
        phase = "decode" if name == "delta" else None  # DELTA's prefill is dense, as in the paper
        assert session.log.attended_fraction(phase) < 0.9, name
        assert 0 < session.log.mean_recall() < 1, name
        assert not session.log.frame().empty, name


def test_padding_in_a_batch_gives_each_row_its_own_result(tiny_dir):
    hf = _load(tiny_dir, "qwen2")
    ids = torch.randint(10, 60, (2, 12), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding
    with torch.no_grad():
        reference = hf(ids, attention_mask=mask).logits
        with sparse_attention(hf, DenseConfig(), recall=True) as session:
            got = hf(ids, attention_mask=mask).logits
    torch.testing.assert_close(got[mask.bool()], reference[mask.bool()], atol=2e-5, rtol=1e-5)
    assert session.log.mean_recall() == pytest.approx(1.0, abs=1e-5)  # padding rows are not counted


def test_the_replacement_is_per_layer_and_removed_even_after_an_error(tiny_dir):
    hf = _load(tiny_dir, "gpt2")
    ids = torch.randint(10, 60, (1, 20), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        reference = hf(ids).logits
        with sparse_attention(hf, DeltaLLMConfig(window=2, budget=0.0), layers=[]) as session:
            untouched = hf(ids).logits
            session.set_layer(1, DeltaLLMConfig(window=2, budget=0.0))
            changed = hf(ids).logits
            session.set_layer(1, None)
            back = hf(ids).logits
        torch.testing.assert_close(untouched, reference)
        torch.testing.assert_close(back, reference)
        assert (changed - reference).abs().max() > 1e-3
        assert {row["layer"] for row in session.log.rows} == {1}
        with pytest.raises(RuntimeError, match="boom"), sparse_attention(hf, DenseConfig()):
            assert hf.config._attn_implementation == "workbench_sparse"
            raise RuntimeError("boom")
        assert hf.config._attn_implementation == "sdpa"
        torch.testing.assert_close(hf(ids).logits, reference)


def test_bad_settings_are_refused_with_the_fix(tiny_dir):
    hf = _load(tiny_dir, "llama")
    with pytest.raises(WorkbenchError, match="budget"):
        DeltaConfig(budget=1.5)
    with pytest.raises(WorkbenchError, match="not both"):
        DeltaLLMConfig(budget=0.5, threshold=1.0)
    with pytest.raises(WorkbenchError, match="start with layer 0"), sparse_attention(hf, DeltaConfig(full_layers=(1,))):
        pass
    with pytest.raises(WorkbenchError, match="out of range"), sparse_attention(hf, DenseConfig(), layers=[7]):
        pass
    assert hf.config._attn_implementation == "sdpa"


def test_delta_layer_groups_scale_the_official_pattern():
    assert default_full_layers(28) == (0, 1, 2, 14, 22)
    assert default_full_layers(8) == (0, 4, 6)
    assert DeltaConfig().roles(8) == ["select", "sparse", "sparse", "sparse", "select", "sparse", "select", "sparse"]


def test_delta_decode_through_the_kernels_path_matches_the_emulation(tiny_dir, monkeypatch, caplog):
    monkeypatch.setattr(dispatch, "warned", set())  # the CPU fallback logs once per process and op
    caplog.set_level(logging.INFO, logger="workbench_kernels")
    hf = _load(tiny_dir, "mistral")
    ids = torch.randint(10, 60, (1, PREFILL + DECODE), generator=torch.Generator().manual_seed(5))
    config = DeltaConfig(budget=0.3, page_size=4)
    with sparse_attention(hf, config) as emulated:
        slow = _decode(hf, ids)
    with sparse_attention(hf, config, fast=True) as fast:
        quick = _decode(hf, ids)
    assert any("PyTorch reference" in r.getMessage() for r in caplog.records)  # the kernels' path ran
    torch.testing.assert_close(quick, slow, atol=2e-5, rtol=1e-5)
    assert torch.equal(fast.state["delta"][:, :1], emulated.state["delta"])


def test_a_layer_the_model_never_routes_through_the_replacement_is_reported(tiny_dir):
    """A model whose attention skipped the interface at some layers would give those layers' own results under
    the method's name: the session says so on exit."""
    from workbench.sparse import registry

    hf = _load(tiny_dir, "llama")
    module = hf.model.layers[0].self_attn
    q = torch.randn(1, 4, 3, 8)
    with (pytest.raises(WorkbenchError, match=r"layers \[1, 2\] never called transformers' attention interface"),
          sparse_attention(hf, DenseConfig())):
        registry.sparse_attention_forward(module, q, q[:, :2], q[:, :2], None, scaling=1.0)
    assert hf.config._attn_implementation != registry.IMPLEMENTATION  # put back all the same


def test_a_mask_that_biases_the_scores_is_refused_not_dropped():
    """An additive mask with finite non-zero entries (Doge's dynamic mask, a positional bias) would be read as
    'masked' by the methods: the call stops instead."""
    from workbench.sparse.dense import prepare

    q = torch.randn(1, 2, 3, 4)
    mask = torch.zeros(1, 2, 3, 3)
    mask[..., 0] = -0.5
    with pytest.raises(WorkbenchError, match="attention mask adds a bias to the scores"):
        prepare(0, 0, q, q, q, mask, None)
    mask[..., 0] = torch.finfo(torch.float32).min  # masking only: accepted
    assert not prepare(0, 0, q, q, q, mask, None).allowed[..., 0].any()


def test_a_prompt_or_items_longer_than_the_context_are_refused_before_any_work(tiny_dir):
    model = wb.load_model(str(tiny_dir("llama")))
    with pytest.raises(WorkbenchError, match="longer than the model's context of 128"):
        inspect_texts(model, "delta", prompt="x " * 300)
    with pytest.raises(WorkbenchError, match="items of 4096 tokens are longer than the model's context of 128"):
        inspect_texts(model, "delta", length=4096)
