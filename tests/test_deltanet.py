"""DeltaNet hybrids: fla's format, exact memory views, recorded states, padding, bad input."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

import workbench as wb
from workbench.config import MemoryConfig
from workbench.deltanet import DeltaNetConfig, memory
from workbench.deltanet.inspection import delta_layers, inspect_prompt, record_memory, stored_state
from workbench.errors import WorkbenchError
from workbench_kernels.delta_rule import naive

pytestmark = pytest.mark.filterwarnings("ignore:workbench_kernels.chunk_delta_rule")
PROMPT = "the cat sat on the mat, then the dog sat on the cat."


@pytest.fixture(scope="module")
def hybrid(tiny_dir):
    return wb.load_model(str(tiny_dir("delta_net")))


def random_rule_inputs(b=2, t=37, h=3, dk=16, dv=12, gated=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, t, h, dk, generator=g)
    k = F.normalize(torch.randn(b, t, h, dk, generator=g), dim=-1)
    v = torch.randn(b, t, h, dv, generator=g)
    beta = torch.rand(b, t, h, generator=g)
    return q, k, v, beta, (-torch.rand(b, t, h, generator=g) * 0.3 if gated else None)


def test_weights_and_config_are_in_fla_format(tiny_dir):
    folder = tiny_dir("delta_net")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "delta_net" and config["attn"]["layers"] == [1]
    with safe_open(folder / "model.safetensors", "pt") as f:
        shapes = {name: f.get_slice(name).get_shape() for name in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    assert shapes["model.layers.0.attn.q_conv1d.weight"] == [32, 1, 4]  # depthwise causal conv, fla's ShortConvolution
    assert shapes["model.layers.0.attn.b_proj.weight"] == [4, 32]
    assert shapes["model.layers.0.attn.o_norm.weight"] == [8]  # per-head RMSNorm
    assert "model.layers.1.attn.b_proj.weight" not in shapes  # layer 1 is softmax attention
    assert shapes["model.layers.1.attn.k_proj.weight"] == [16, 32]  # 2 KV heads of 8


@pytest.mark.parametrize("gated", [False, True])
def test_effective_attention_applied_to_values_is_the_rule_output(gated):
    q, k, v, beta, g = random_rule_inputs(gated=gated)
    reference, _ = naive.recurrence(q, k, v, beta, g)
    weights = memory.effective_attention(q, k, beta, g)  # [B, H, T, T]
    assert torch.allclose(torch.einsum("bhtj,bjhv->bthv", weights, v), reference, atol=1e-5, rtol=1e-4)
    assert (weights.triu(1) == 0).all()


def test_effective_attention_reproduces_a_deltanet_layers_output(hybrid):
    layer = hybrid.module("attn", 0)
    x = torch.randn(1, 23, 32)
    q, k, v, beta = layer.rule_inputs(x, None)
    weights = memory.effective_attention(q, k, beta)[0]  # [H, T, T]
    rule_out = torch.einsum("htj,jhv->thv", weights, v[0])[None]
    with torch.no_grad():
        expected = layer(x)[0]
        rebuilt = layer.o_proj(layer.o_norm(rule_out).flatten(-2))
    assert torch.allclose(rebuilt, expected, atol=1e-5, rtol=1e-4)


def test_survival_is_one_until_overwritten_and_zero_after_an_exact_erase():
    k = F.normalize(torch.randn(1, 4, 1, 8), dim=-1)
    k[:, 2] = k[:, 1]  # token 2 writes along token 1's key with beta = 1: token 1's write is erased
    beta = torch.tensor([[[0.0], [1.0], [1.0], [0.0]]])
    survival = memory.write_survival(k, beta)[0, 0]
    assert torch.allclose(survival.diagonal(), torch.ones(4))
    overlap = float((k[0, 0, 0] * k[0, 1, 0]).sum())  # the erase along k_1 removes k_0's component along k_1
    assert survival[1, 0] == pytest.approx((1 - overlap**2) ** 0.5, rel=1e-5)
    assert survival[2, 1] == pytest.approx(0.0, abs=1e-6) and survival[3, 1] == pytest.approx(0.0, abs=1e-6)


def test_trajectory_matches_the_recurrence_and_its_own_bookkeeping():
    q, k, v, beta, g = random_rule_inputs(gated=True)
    out, final = naive.recurrence(q, k, v, beta, g)
    tr = memory.trajectory(q, k, v, beta, g, keep_steps=[0, 36])
    assert torch.allclose(tr["states"][-1], final, atol=1e-5)
    assert torch.allclose(tr["readout"] * 16**-0.5, out, atol=1e-5)
    assert torch.allclose(tr["state_norm"], tr["singular_values"].norm(dim=-1), atol=1e-4)
    first = tr["states"][0]  # after token 0 the state is beta_0 k_0 v_0^T: rank one
    assert (memory.numerical_rank(torch.linalg.svdvals(first)) == 1).all()
    assert torch.allclose(tr["written"][:, :, 0], tr["delta"][:, :, 0], atol=1e-6)  # nothing to erase yet


def _independent_rule_inputs(layer, x):
    """q, k, v, beta of fla's DeltaNet layer recomputed here from its weights, step by step."""
    def conv(proj, conv_module):
        y = proj(x).transpose(1, 2)  # [B, D, T]
        w = conv_module.weight[:, 0]  # [D, W]
        padded = F.pad(y, (w.shape[1] - 1, 0))
        out = torch.stack([(padded[..., i:i + w.shape[1]] * w).sum(-1) for i in range(y.shape[-1])], -1)
        return F.silu(out).transpose(1, 2)

    heads = layer.num_heads
    q, k, v = (conv(getattr(layer, f"{n}_proj"), getattr(layer, f"{n}_conv1d")).unflatten(-1, (heads, -1))
               for n in "qkv")
    return F.normalize(q, dim=-1), F.normalize(k, dim=-1), v, torch.sigmoid(layer.b_proj(x))


def test_recorded_states_equal_a_plain_recurrence(hybrid, db_path):
    store = wb.Store(db_path)
    config = MemoryConfig(steps=(0, 5, 17))
    analysis = record_memory(hybrid, [PROMPT], store, config)
    ids = hybrid.tokenizer(PROMPT, return_tensors="pt").input_ids
    hidden = {}
    hooks = [hybrid.module("attn", i).register_forward_pre_hook(
        lambda _m, args, i=i: hidden.__setitem__(i, args[0])) for i in delta_layers(hybrid)]
    with torch.no_grad():
        hybrid.hf(ids)
    for h in hooks:
        h.remove()
    assert delta_layers(hybrid) == [0, 2]
    for layer in (0, 2):
        with torch.no_grad():
            _, k, v, beta = _independent_rule_inputs(hybrid.module("attn", layer), hidden[layer])
        state = torch.zeros(4, 8, 8)  # [H, K, V], stepped token by token
        for t in range(ids.shape[1]):
            kt, vt, bt = k[0, t], v[0, t], beta[0, t]  # [H, K], [H, V], [H]
            state = state + bt[:, None, None] * kt[:, :, None] * (vt - torch.einsum("hk,hkv->hv", kt, state))[:, None]
            if t in config.steps:
                for head in range(4):
                    got = stored_state(store, analysis, 0, layer, head, t)
                    assert torch.allclose(torch.from_numpy(got), state[head], atol=1e-5), (layer, head, t)
    rows = store.query("SELECT layer, count(*) AS n, min(beta) AS lo, max(beta) AS hi FROM delta_memory "
                       "WHERE analysis_id = ? GROUP BY layer ORDER BY layer", [analysis])
    assert rows.layer.tolist() == [0, 2] and (rows.n == 4 * ids.shape[1]).all()
    assert (rows.lo > 0).all() and (rows.hi < 1).all()


def test_states_asked_for_out_of_order_are_stored_under_their_own_step(hybrid, db_path):
    store = wb.Store(db_path)
    analysis = record_memory(hybrid, [PROMPT], store, MemoryConfig(steps=(9, 2, 9)))
    norms = store.query("SELECT position, state_norm FROM delta_memory WHERE analysis_id = ? AND layer = 0 AND "
                        "head = 0 ORDER BY position", [analysis]).set_index("position").state_norm
    for step in (2, 9):
        state = stored_state(store, analysis, 0, 0, 0, step)
        assert abs(float((state**2).sum() ** 0.5) - norms[step]) < 1e-5


def test_large_states_keep_only_singular_values(hybrid, db_path):
    store = wb.Store(db_path)
    analysis = record_memory(hybrid, [PROMPT], store, MemoryConfig(max_state_floats=10, n_steps=2))
    with pytest.raises(WorkbenchError, match="singular values"):
        stored_state(store, analysis, 0, 0, 0, int(store.query("SELECT max(step) AS s FROM delta_states").s[0]))
    sv = store.query("SELECT singular_values FROM delta_memory WHERE analysis_id = ? LIMIT 1", [analysis])
    assert len(sv.singular_values[0]) == 8


def test_padding_changes_nothing_for_the_real_tokens(hybrid):
    tok = hybrid.tokenizer
    short, long = tok("a cat").input_ids, tok("the dog sat on the mat").input_ids
    pad = tok.pad_token_id
    with torch.no_grad():
        alone = hybrid.hf(torch.tensor([short])).logits[0]
        right = hybrid.hf(torch.tensor([long, short + [pad] * (len(long) - len(short))]),
                          attention_mask=torch.tensor([[1] * len(long), [1] * len(short) + [0] * (len(long) - len(short))])).logits
        left = hybrid.hf(torch.tensor([long, [pad] * (len(long) - len(short)) + short]),
                         attention_mask=torch.tensor([[1] * len(long), [0] * (len(long) - len(short)) + [1] * len(short)])).logits
    assert torch.allclose(right[1, :len(short)], alone, atol=1e-5)
    assert torch.allclose(left[1, -len(short):], alone, atol=1e-5)


def test_recording_stores_the_effective_attention_of_delta_layers(tiny_dir, db_path):
    model = wb.load_model(str(tiny_dir("delta_net")), attention=True)
    run = wb.record(model, [PROMPT], db_path, wb.RecordConfig(attention=True), progress=False)
    maps = wb.Store(db_path).read_tensors(run, "attention").query("layer == 0 and head == 1")
    n = len(model.tokenizer(PROMPT).input_ids)
    got = torch.zeros(n, n)
    got[torch.tensor(maps["query"].to_numpy()), torch.tensor(maps["key"].to_numpy())] = torch.tensor(maps["weight"].to_numpy())
    _, views = inspect_prompt(model, PROMPT, MemoryConfig(layers=(0,)))
    assert torch.allclose(got, views[0].effective_attention[1], atol=1e-5)


def test_bad_memory_requests_are_refused_and_store_nothing(hybrid, tiny_dir, db_path):
    store = wb.Store(db_path)
    kept = record_memory(hybrid, [PROMPT], store, MemoryConfig(n_steps=1))
    before = store.query("SELECT count(*) AS n FROM delta_memory").n[0]
    with pytest.raises(WorkbenchError, match="softmax attention; its DeltaNet layers are \\[0, 2\\]"):
        record_memory(hybrid, [PROMPT], store, MemoryConfig(layers=(1,)))
    with pytest.raises(WorkbenchError, match="out of range"):
        record_memory(hybrid, [PROMPT], store, MemoryConfig(layers=(7,)))
    with pytest.raises(WorkbenchError, match="outside the prompt"):
        record_memory(hybrid, ["ok", PROMPT], store, MemoryConfig(steps=(40,)))
    with pytest.raises(WorkbenchError, match="prompt is empty"):
        record_memory(hybrid, [PROMPT, " "], store)
    with pytest.raises(WorkbenchError, match="no delta-rule layers"):
        record_memory(wb.load_model(str(tiny_dir("llama"))), [PROMPT], store)
    assert store.query("SELECT analysis_id FROM analyses").analysis_id.tolist() == [kept]
    assert store.query("SELECT count(*) AS n FROM delta_memory").n[0] == before


def test_bad_hybrid_configs_are_refused():
    with pytest.raises(ValueError, match="out of range"):
        DeltaNetConfig(hidden_size=32, num_heads=4, num_hidden_layers=2, attn={"layers": [2], "num_heads": 4})
    with pytest.raises(ValueError, match="divisible by num_heads"):
        DeltaNetConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="qk_activation"):
        DeltaNetConfig(qk_activation="tanh")


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_steering_a_hybrid_adds_by_position_at_every_pass(hybrid, positions):
    from workbench.steering.steer import Steer, generate_ids

    vector = torch.randn(32, generator=torch.Generator().manual_seed(1))
    ids = hybrid.tokenizer(["the cat"], return_tensors="pt")
    n = ids.input_ids.shape[1]
    where = {"all": slice(None), "prompt": slice(0, n), "generated": slice(n, None)}[positions]

    def hook(_module, _inputs, output):  # the hybrid recomputes the whole sequence at every step
        steered = output.clone()
        steered[:, where] += 3.0 * vector
        return steered

    handle = hybrid.module("block", 0).register_forward_hook(hook)
    try:
        expected = hybrid.hf.generate(**ids, max_new_tokens=6, do_sample=False)[0, n:].tolist()
    finally:
        handle.remove()
    got = generate_ids(hybrid, ["the cat"], [Steer(0, vector, 3.0)], max_new_tokens=6, positions=positions)[0]
    assert got == expected[: len(got)] and len(got) > 0
    plain = generate_ids(hybrid, ["the cat"], max_new_tokens=6)[0]
    assert plain == hybrid.hf.generate(**ids, max_new_tokens=6, do_sample=False)[0, n:].tolist()[: len(plain)]
    assert got != plain  # the vector does change the continuation


def test_directions_on_a_hybrid_equal_the_mean_difference_of_block_outputs(hybrid, db_path):
    from workbench.steering.concepts import ConceptSet, Example
    from workbench.steering.directions import compute_directions, stored_directions

    texts = {"positive": ["a sunny day", "sunny and warm", "the sun is out"],
             "negative": ["a rainy day", "rain and cold", "the rain is back"]}
    examples = [Example(t, label) for label, items in texts.items() for t in items]
    concepts = ConceptSet("weather", "positive", "negative", examples, examples)
    _, _, analysis = compute_directions(hybrid, concepts, wb.Store(db_path), layers=[0, 1, 2])
    vectors = stored_directions(wb.Store(db_path), analysis)
    last = {}
    for text in [e.text for e in examples]:
        outputs = []
        handles = [hybrid.module("block", i).register_forward_hook(
            lambda _m, _a, o, outputs=outputs: outputs.append(o[0, -1])) for i in range(3)]
        with torch.no_grad():
            hybrid.hf(hybrid.tokenizer(text, return_tensors="pt").input_ids)
        for handle in handles:
            handle.remove()
        last[text] = torch.stack(outputs)  # [L, D]
    mean = {label: torch.stack([last[t] for t in items]).mean(0) for label, items in texts.items()}
    for layer in range(3):
        expected = (mean["positive"] - mean["negative"])[layer].numpy()
        assert torch.allclose(torch.from_numpy(vectors[layer]), torch.from_numpy(expected), atol=1e-5)


def test_sparse_attention_methods_refuse_a_hybrid_clearly(hybrid):
    from workbench.sparse import DenseConfig, sparse_attention

    with (pytest.raises(WorkbenchError, match="attention of 'delta_net' \\(layers \\[1\\]\\) does not go through transformers' attention"),
          sparse_attention(hybrid, DenseConfig())):
        pass
    assert hybrid.hf.config._attn_implementation == "sdpa"  # nothing was switched


@pytest.mark.parametrize("variant", [
    {"use_short_conv": False}, {"use_gate": True}, {"qk_activation": "relu", "qk_norm": "sum"},
    {"allow_neg_eigval": True, "use_beta": False}, {"qk_activation": "elu", "expand_v": 2.0},
])
def test_every_fla_deltanet_variant_runs_and_its_effective_attention_is_exact(variant):
    from workbench.deltanet import DeltaNetForCausalLM

    torch.manual_seed(0)
    model = DeltaNetForCausalLM(DeltaNetConfig(hidden_size=32, num_heads=4, num_hidden_layers=1, vocab_size=50,
                                               intermediate_size=64, **variant)).eval()
    layer = model.model.layers[0].attn
    q, k, v, beta = layer.rule_inputs(torch.randn(1, 19, 32), None)
    assert (beta > 0).all() and (beta <= (2.0 if variant.get("allow_neg_eigval") else 1.0)).all()
    with torch.no_grad():
        o = layer.rule(q, k, v, beta)
        assert torch.isfinite(model(torch.randint(0, 50, (2, 19))).logits).all()
    weights = memory.effective_attention(q, k, beta)
    assert torch.allclose(torch.einsum("bhtj,bjhv->bthv", weights, v), o, atol=1e-5, rtol=1e-4)


def test_a_checkpoint_saved_by_flash_linear_attention_loads_completely():
    """tests/data/fla-deltanet was written by fla 0.6.0's own DeltaNetForCausalLM.save_pretrained (output gate
    on, random weights); every tensor in it must land in our model, and the memory views work on it."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    folder = Path(__file__).parent / "data" / "fla-deltanet"
    hf, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    saved = load_file(folder / "model.safetensors")
    params = dict(hf.named_parameters())
    for name, tensor in saved.items():
        assert torch.equal(params[name], tensor), name
    model = wb.load_model(str(folder))
    assert model.model_type == "delta_net" and model.config.use_gate and delta_layers(model) == [0, 1]
    _, views = inspect_prompt(model, "the cat sat on the mat")
    assert torch.allclose(torch.einsum("htj,jhv->thv", views[1].effective_attention, views[1].v[0]),
                          views[1].output[0], atol=1e-5)


def test_attention_figures_show_negative_effective_attention_instead_of_clipping_it(hybrid):
    from workbench.plots import attention_grid, attention_map

    _, views = inspect_prompt(hybrid, PROMPT, MemoryConfig(layers=(0,)))
    weights = views[0].effective_attention.numpy()  # [H, T, T]
    assert weights.min() < 0
    single = attention_map(weights[0], list(range(weights.shape[1]))).data[0]
    assert single.zmin == -single.zmax and single.zmax >= abs(weights[0]).max() - 1e-6
    assert attention_grid(weights, list(range(weights.shape[1]))).layout.coloraxis.cmin < 0


def test_attention_maps_of_layers_with_different_head_counts_are_refused_clearly(tmp_path, db_path):
    from transformers import AutoModelForCausalLM

    from workbench import random_models

    config = random_models.CONFIGS["delta_net"]()
    config.attn = {**config.attn, "num_heads": 2, "num_kv_heads": 2}  # softmax layer 1: 2 heads, DeltaNet: 4
    folder = tmp_path / "mixed"
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    random_models.char_tokenizer().save_pretrained(folder)
    model = wb.load_model(str(folder), attention=True)
    with pytest.raises(WorkbenchError, match="record the layers of each count separately"):
        wb.record(model, [PROMPT], db_path, wb.RecordConfig(attention=True), progress=False)
    run = wb.record(model, [PROMPT], db_path, wb.RecordConfig(attention=True, layers=(0, 2)), progress=False)
    assert sorted(wb.Store(db_path).read_tensors(run, "attention").layer.unique()) == [0, 2]
