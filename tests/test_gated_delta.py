"""Memory views on transformers' own gated delta-rule layers (Gated DeltaNet: qwen3_next, qwen3_5, olmo_hybrid;
Kimi Delta Attention: kimi_linear) are exact: they rebuild the rule's own output and final state."""

import importlib
import json
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers.models.qwen3_next import modeling_qwen3_next

import workbench as wb
from workbench.cli import main
from workbench.config import MemoryConfig
from workbench.deltanet import memory
from workbench.deltanet.inspection import (
    delta_layers,
    inspect_prompt,
    layer_views,
    record_memory,
    stored_state,
)
from workbench.errors import WorkbenchError

PROMPT = "the cat sat on the mat, then the dog sat on the cat."
# model type -> (delta-rule layers of the tiny model, softmax layer, the decay's trailing shape)
ARCHS = {"qwen3_next": ([0, 1, 2], 3, ()), "qwen3_5": ([0, 1, 2], 3, ()), "olmo_hybrid": ([0, 1, 2], 3, ()),
         "kimi_linear": ([0, 1, 2, 3], 4, (16,))}
HAS_KDA = hasattr(transformers, "KimiLinearConfig")  # Kimi Linear arrived after transformers 5.9
needs_kda = pytest.mark.skipif(not HAS_KDA, reason="this transformers has no Kimi Linear")


@pytest.fixture(scope="module", params=[a for a in ARCHS if HAS_KDA or a != "kimi_linear"])
def arch(request, tiny_dir):
    """(the loaded tiny model, its delta-rule layers, its softmax layer, the decay's trailing shape)."""
    return wb.load_model(str(tiny_dir(request.param))), *ARCHS[request.param]


def assert_close(got, expected, rtol=1e-4):
    """Max error within `rtol` of the reference's largest entry (tiny random models have small outputs)."""
    assert got.shape == expected.shape
    error, size = float((got - expected).abs().max()), float(expected.abs().max())
    assert size > 0 and error <= rtol * size, (error, size)


def test_effective_attention_and_replayed_state_are_the_rules_own(arch):
    model, layers, _, decay_shape = arch
    assert delta_layers(model) == layers
    tokens, views = inspect_prompt(model, PROMPT)  # the default steps end at the last token
    for view in views.values():
        t, h = view.v.shape[1:3]
        assert t == len(tokens) and view.g.shape == (1, t, h, *decay_shape)
        assert view.q.shape[2] == h  # q and k are repeated to the value heads, as the rule repeats them
        rebuilt = torch.einsum("htj,jhv->thv", view.effective_attention, view.v[0])
        assert_close(rebuilt, view.output[0])  # the core output as the model's rule function returned it
        assert view.final_state is not None  # a model run with its cache asks the rule for its final state
        assert_close(view.trajectory["states"][-1], view.final_state)
        assert_close(view.trajectory["readout"] * view.scale, view.output)
        assert (view.survival.diagonal(dim1=-2, dim2=-1) <= 1).all() and (view.survival.triu(1) == 0).all()


def test_record_memory_stores_the_delta_layers_and_refuses_a_softmax_layer(arch, db_path):
    model, layers, softmax, _ = arch
    store = wb.Store(db_path)
    kept = record_memory(model, [PROMPT], store, MemoryConfig(n_steps=2))
    rows = store.query("SELECT layer, count(*) AS n FROM delta_memory WHERE analysis_id = ? GROUP BY layer "
                       "ORDER BY layer", [kept])
    _, views = inspect_prompt(model, PROMPT)
    heads, n = views[layers[0]].v.shape[2], views[layers[0]].v.shape[1]
    assert rows.layer.tolist() == layers and (rows.n == heads * n).all()
    for head in range(heads):
        got = torch.from_numpy(stored_state(store, kept, 0, layers[-1], head, n - 1))
        assert_close(got, views[layers[-1]].final_state[0, head])
    with pytest.raises(WorkbenchError, match=f"layer\\(s\\) \\[{softmax}\\] .* are softmax attention; its DeltaNet "
                                             f"layers are \\[{', '.join(map(str, layers))}\\]"):
        record_memory(model, [PROMPT], store, MemoryConfig(layers=(softmax,)))
    assert store.query("SELECT analysis_id FROM analyses").analysis_id.tolist() == [kept]


@needs_kda
def test_the_memory_command_and_page_data_work_on_kimi_delta_attention(tiny_dir, db_path, capsys):
    folder = tiny_dir("kimi_linear")
    assert main(["memory", "--model", str(folder), "--prompt", "the cat sat", "--steps", "0,5", "--db", str(db_path),
                 "--json"]) == 0
    assert [row["layer"] for row in json.loads(capsys.readouterr().out)["layers"]] == [0, 1, 2, 3]
    views = layer_views(wb.load_model(str(folder)), "the cat sat", 2)
    n = len(views["tokens"])
    assert views["effective_attention"].shape == views["survival"].shape == (4, n, n)
    assert sorted(views["rows"].layer.unique()) == [2]
    assert main(["memory", "--model", str(folder), "--prompt", "the cat", "--layers", "4", "--db", str(db_path)]) == 2
    assert "softmax attention" in capsys.readouterr().err


def _random_rule_inputs(per_channel, b=2, t=29, h=3, dk=8, dv=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(b, t, h, dk, generator=g), F.normalize(torch.randn(b, t, h, dk, generator=g), dim=-1)
    v, beta = torch.randn(b, t, h, dv, generator=g), torch.rand(b, t, h, generator=g)
    decay = -torch.rand(b, t, h, *((dk,) if per_channel else ()), generator=g)
    return q, k, v, beta, decay


@pytest.mark.parametrize("per_channel", [False, True])
def test_decay_per_head_and_per_channel_against_transformers_torch_recurrences(per_channel):
    """The decay multiplies the state's key rows before the erase and write: qwen3_next's and kimi_linear's
    token-by-token torch references, with their in-kernel normalisation off."""
    if per_channel and not HAS_KDA:
        pytest.skip("this transformers has no Kimi Linear")
    rule = (importlib.import_module("transformers.models.kimi_linear.modeling_kimi_linear")
            .recurrent_kimi_delta_attention if per_channel else modeling_qwen3_next.torch_recurrent_gated_delta_rule)
    q, k, v, beta, decay = _random_rule_inputs(per_channel)
    out, final = rule(q, k, v, g=decay, beta=beta, initial_state=None, output_final_state=True)
    weights = memory.effective_attention(q, k, beta, decay)
    assert_close(torch.einsum("bhtj,bjhv->bthv", weights, v), out, rtol=1e-5)
    tr = memory.trajectory(q, k, v, beta, decay, keep_steps=[28])
    assert_close(tr["states"][-1], final, rtol=1e-5)
    # survival by definition: |A_t ... A_{j+1} k_j| with A_i = (I - beta_i k_i k_i^T) diag(exp(g_i))
    survival = memory.write_survival(k, beta, decay)
    for t, j in [(5, 2), (28, 0), (17, 16)]:
        x = k[1, j, 2]
        for i in range(j + 1, t + 1):
            x = x * decay[1, i, 2].exp()
            x = x - beta[1, i, 2] * (x @ k[1, i, 2]) * k[1, i, 2]
        assert float(survival[1, 2, t, j]) == pytest.approx(float(x.norm()), rel=1e-5)


@pytest.mark.parametrize("model_type", ["qwen3_next", "qwen3_5", "olmo_hybrid"])
def test_the_workbench_kernel_runs_gated_deltanet_layers_with_the_models_outputs(model_type, tiny_dir, monkeypatch):
    """delta_kernel="workbench": every Gated DeltaNet layer calls our delta rule (prompt and cached decode steps),
    the logits and the greedy continuation equal the model's own path, and the swap stays inside the layer."""
    from workbench.deltanet import workbench_rule

    folder = str(tiny_dir(model_type))
    own, ours = wb.load_model(folder), wb.load_model(folder, delta_kernel="workbench")
    calls = []
    for name in ("chunk_delta_rule", "recurrent_delta_rule"):
        kernel = getattr(workbench_rule, name)
        monkeypatch.setattr(workbench_rule, name, lambda *a, _k=kernel, _n=name, **kw: calls.append(_n) or _k(*a, **kw))
    ids = own.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        expected, got = own.hf(ids).logits, ours.hf(ids).logits
    assert calls == ["chunk_delta_rule"] * 3
    assert_close(got, expected)
    steps = dict(max_new_tokens=4, do_sample=False, pad_token_id=own.tokenizer.pad_token_id)
    with torch.no_grad():
        assert ours.hf.generate(ids, **steps).tolist() == own.hf.generate(ids, **steps).tolist()
    assert calls.count("recurrent_delta_rule") == 3 * 3  # three layers, three cached steps after the prompt
    mixer = ours.module("attn", 0)  # the rule is ours only while a layer runs: after it, the model's own again
    everywhere = [*vars(sys.modules[type(mixer).__module__]).values(), *vars(mixer).values()]
    assert not any(f is workbench_rule.chunk_gated_delta_rule or f is workbench_rule.recurrent_gated_delta_rule
                   for f in everywhere)


def test_the_workbench_kernel_is_refused_where_no_layer_can_use_it(tiny_dir):
    if HAS_KDA:
        with pytest.raises(WorkbenchError, match=r"layers \[0, 1, 2, 3\] decay each key channel separately"):
            wb.load_model(str(tiny_dir("kimi_linear")), delta_kernel="workbench")
    with pytest.raises(WorkbenchError, match="no Gated DeltaNet layer .* it has none"):
        wb.load_model(str(tiny_dir("llama")), delta_kernel="workbench")
    with pytest.raises(WorkbenchError, match="unknown delta_kernel 'fla'"):
        wb.load_model(str(tiny_dir("llama")), delta_kernel="fla")


def test_memory_spans_and_half_lives_by_hand():
    from workbench.deltanet.decay import decay_rows, memory_spans

    t = 21
    local = torch.eye(t)[None]  # every query reads only its own token
    uniform = torch.tril(torch.ones(t, t))[None] / torch.arange(1, t + 1)[None, :, None]
    spans = memory_spans(torch.cat([local, -uniform]), span_mass=0.05)  # the sign does not matter, |a| does
    assert spans[0].tolist() == [0] * t
    # uniform over the query's t + 1 keys: (t + 1 - d) / (t + 1) of the mass lies at distance d or beyond
    assert spans[1].tolist() == [max(d for d in range(q + 1) if (q + 1 - d) / (q + 1) >= 0.05) for q in range(t)]
    g = torch.full((1, t, 2), math.log(0.5) / 10)  # halves every 10 tokens
    g[..., 1] = 0.0  # no decay
    rows = decay_rows(3, g, torch.cat([local, uniform]), span_mass=0.05, local_span=2)
    assert rows.half_life.tolist() == pytest.approx([10.0, math.inf])
    assert rows.role.tolist() == ["local mixer", "long-range memory"] and (rows.layer == 3).all()
    per_channel = torch.stack([torch.full((1, t, 2), math.log(0.5) / 4), torch.full((1, t, 2), math.log(0.5) / 16)],
                              dim=-1)  # two key channels: one halves every 4 tokens, the other every 16
    rows = decay_rows(0, per_channel, torch.cat([local, uniform]), span_mass=0.05, local_span=2)
    assert rows.half_life_fastest.tolist() == pytest.approx([4.0, 4.0])
    assert rows.half_life_slowest.tolist() == pytest.approx([16.0, 16.0])
    assert rows.half_life.tolist() == pytest.approx([math.log(0.5) / ((math.log(0.5) / 4 + math.log(0.5) / 16) / 2)] * 2)


def test_a_fast_decaying_head_is_a_local_mixer_and_a_slow_one_remembers(tiny_dir, db_path):
    """Gated DeltaNet's decay is g = -exp(A_log) softplus(a + dt_bias): a large A_log forgets within a token, a very
    negative one keeps everything; the stored half-lives are the rule's own g, and the spans follow."""
    model = wb.load_model(str(tiny_dir("qwen3_next")))
    mixer = model.module("attn", 0)
    with torch.no_grad():
        mixer.A_log[0], mixer.A_log[1] = math.log(40.0), -30.0
        mixer.dt_bias[:2] = 5.0  # softplus(a + 5) ~ 5: every token decays
    store = wb.Store(db_path)
    prompt = PROMPT * 2
    kept = record_memory(model, [prompt], store, MemoryConfig(layers=(0,), n_steps=1, local_span=2))
    rows = store.query("SELECT * FROM delta_decay WHERE analysis_id = ? ORDER BY head", [kept])
    _, views = inspect_prompt(model, prompt, MemoryConfig(layers=(0,)))
    mean_g = views[0].g[0].mean(0)  # [H]
    assert rows.half_life[0] == pytest.approx(math.log(0.5) / float(mean_g[0]), rel=1e-5)
    assert rows.half_life[1] == pytest.approx(math.log(0.5) / float(mean_g[1]), rel=1e-4) and rows.half_life[1] > 1e9
    assert rows.half_life[0] < 0.1 and rows.role[0] == "local mixer" and rows.span_median[0] == 0
    assert rows.span_median[1] > 2 and rows.role[1] != "local mixer"
    per_token = store.query("SELECT head, avg(log_decay) AS g FROM delta_memory WHERE analysis_id = ? GROUP BY head "
                            "ORDER BY head", [kept])
    assert per_token.g.tolist() == pytest.approx(rows.mean_log_decay.tolist(), rel=1e-5)
    summary = store.delta_memory_by_layer(kept)
    assert summary.local_heads[0] >= 1 and summary.long_range_heads[0] + summary.local_heads[0] <= len(rows)


def test_record_attention_stores_a_gated_layers_effective_attention(arch, tmp_path):
    """`record --attention` on a hybrid: softmax layers store their weights, delta-rule layers their exact effective
    attention (the map that applied to the values gives the layer's output), prompts batched with padding."""
    model, layers, softmax, _ = arch
    attention_model = wb.load_model(model.path, attention=True)
    db = str(tmp_path / "a.duckdb")
    prompts = [PROMPT, "the dog"]
    run = wb.record(attention_model, prompts, db, wb.RecordConfig(attention=True, batch_size=2), progress=False)
    maps = wb.Store(db).read_tensors(run, "attention")
    _, views = inspect_prompt(model, PROMPT)
    for layer in layers:
        rows = maps[(maps.prompt_id == 0) & (maps.layer == layer)]
        expected = views[layer].effective_attention  # [H, T, T]
        h, t, _ = expected.shape
        got = torch.zeros(h, t, t)
        index = [torch.from_numpy(rows[c].to_numpy(dtype=np.int64)) for c in ("head", "query", "key")]
        got[index] = torch.from_numpy(rows.weight.to_numpy(dtype=np.float32))
        assert_close(got, expected)
    sums = maps[(maps.layer == softmax)].groupby(["prompt_id", "head", "query"]).weight.sum()
    assert np.allclose(sums, 1, atol=1e-4)
    short = maps[(maps.prompt_id == 1) & (maps.layer == layers[0])]
    assert short["query"].max() == len(model.tokenizer("the dog")["input_ids"]) - 1  # no padded queries stored


def test_comparing_two_prompts_memories_finds_where_they_diverge(tiny_dir, db_path, capsys):
    """A key the question asks about changes nothing in a first layer that forgets it before the question, and
    changes the state of a later layer that does not forget; the same prompt twice differs nowhere."""
    from workbench.deltanet.compare import compare_memories

    folder = str(tiny_dir("qwen3_next"))
    model = wb.load_model(folder)
    with torch.no_grad():
        model.module("attn", 0).A_log[:], model.module("attn", 0).dt_bias[:] = math.log(40.0), 5.0  # forgets at once
        model.module("attn", 1).A_log[:] = -30.0  # keeps everything
    with_key, without = "key 12 is 7. what is key 12?", "key 99 is 3. what is key 12?"
    same = compare_memories(model, with_key, with_key, MemoryConfig(layers=(0, 1)))
    assert (same["heads"][["state_distance", "readout_distance_mean"]] == 0).all().all()
    result = compare_memories(model, with_key, without, MemoryConfig(layers=(0, 1)))
    heads = result["heads"].set_index(["layer", "head"])
    _, views_a = inspect_prompt(model, with_key, MemoryConfig(layers=(1,)))
    _, views_b = inspect_prompt(model, without, MemoryConfig(layers=(1,)))
    final_a, final_b = views_a[1].final_state[0], views_b[1].final_state[0]  # the model's own last states [H, K, V]
    for head in range(final_a.shape[0]):
        a, b = final_a[head].flatten(), final_b[head].flatten()
        expected = float((a - b).norm() / max(a.norm(), b.norm()))
        assert heads.loc[(1, head), "state_distance"] == pytest.approx(expected, rel=1e-4) and expected > 0.05
    assert (heads.loc[0, "state_distance"] < 1e-4).all()  # forgotten before the question
    tokens = result["tokens"]
    last = tokens[(tokens.layer == 1) & (tokens["head"] == 0)].sort_values("step").iloc[-1]
    n = len(model.tokenizer(with_key)["input_ids"])
    assert (last.position_a, last.position_b, last.token_a) == (n - 1, n - 1, last.token_b)
    assert last.readout_distance > 0.01  # the same question gets another answer from layer 1's memory

    assert main(["memory", "--model", folder, "--prompt", with_key, "--compare", without, "--db", str(db_path),
                 "--json"]) == 0
    assert [row["layer"] for row in json.loads(capsys.readouterr().out)["layers"]] == [0, 1, 2]
    assert main(["memory", "--model", folder, "--prompt", "a", "--prompt", "b", "--compare", "c",
                 "--db", str(db_path)]) == 2
    assert "--compare compares one --prompt" in capsys.readouterr().err
    assert main(["memory", "--model", folder, "--prompt", "a", "--compare", " ", "--db", str(db_path)]) == 2
    assert "--compare is empty" in capsys.readouterr().err
    with pytest.raises(WorkbenchError, match="align must be one of"):
        compare_memories(model, with_key, without, align="middle")


def test_the_prefill_benchmark_runs_and_its_paths_agree():
    """`analyses/bench_gated_delta.py` on a tiny model on the CPU: a row per path, errors against the fp32 fallback
    within bf16's reach (its GPU numbers are in docs/BENCHMARKS.md)."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "analyses/bench_gated_delta.py", "--shape", "tiny", "--device", "cpu",
                           "--lengths", "80"], cwd=root, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| 80 |")]
    assert [r[1].strip() for r in rows] == ["forward", "rule, one layer"]
    logits_err, rule_err = float(rows[0][8]), float(rows[0][9])
    assert 0 < logits_err < 0.05 and 0 < rule_err < 0.05  # bf16 against the fp32 fallback
