"""Recording: padding never changes a prompt's numbers, summaries are right, bad input loses nothing."""

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.errors import WorkbenchError
from workbench.prompts import load_prompts

SHORT, LONG = "Hi.", "A much longer prompt, padded partner."


def _stats(store, run_id, prompt_id):
    return store.query(
        "SELECT position, layer, l2_norm, max_abs, max_dim, median_abs FROM layer_stats "
        "WHERE run_id = ? AND prompt_id = ? ORDER BY layer, position", [run_id, prompt_id])


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2", "gemma3_text", "bert", "roberta"])
def test_batched_with_padding_equals_alone(family, tiny_dir, db_path):
    model = wb.load_model(str(tiny_dir(family)))
    config = wb.RecordConfig(batch_size=2, vectors=True)
    together = wb.record(model, [LONG, SHORT], db_path, config, progress=False)
    alone = wb.record(model, [SHORT], db_path, wb.RecordConfig(batch_size=1, vectors=True), progress=False)
    store = wb.Store(db_path)
    a, b = _stats(store, together, 1), _stats(store, alone, 0)
    assert len(a) == len(model.tokenizer(SHORT)["input_ids"]) * model.n_layers  # padded positions not stored
    np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), rtol=1e-5, atol=1e-5)
    va = store.read_tensors(together, "resid_post", prompt_id=1).sort_values(["layer", "position"])
    vb = store.read_tensors(alone, "resid_post").sort_values(["layer", "position"])
    np.testing.assert_allclose(np.stack(va.vector), np.stack(vb.vector), rtol=1e-5, atol=1e-5)


def test_summaries_agree_with_the_stored_vectors(tiny_dir, db_path):
    model = wb.load_model(str(tiny_dir("qwen3")))
    run_id = wb.record(model, [LONG], db_path, wb.RecordConfig(vectors=True, top_k=3), progress=False)
    store = wb.Store(db_path)
    vectors = store.read_tensors(run_id, "resid_post").sort_values(["layer", "position"])
    stats = store.query("SELECT * FROM layer_stats ORDER BY layer, position")
    x = torch.tensor(np.stack(vectors.vector))
    torch.testing.assert_close(torch.tensor(stats.l2_norm.to_numpy()), x.norm(dim=-1))
    torch.testing.assert_close(torch.tensor(stats.max_abs.to_numpy()), x.abs().max(-1).values)
    assert stats.max_dim.tolist() == x.abs().argmax(-1).tolist()
    assert [list(d) for d in stats.topk_dims] == x.abs().topk(3).indices.tolist()
    assert stats.topk_dims.map(lambda d: d[0]).tolist() == stats.max_dim.tolist()


def test_layer_subset_and_range(tiny_dir, db_path):
    model = wb.load_model(str(tiny_dir("gpt2")))
    run_id = wb.record(model, [SHORT], db_path, wb.RecordConfig(layers=[0, 2]), progress=False)
    layers = wb.Store(db_path).query("SELECT DISTINCT layer FROM layer_stats WHERE run_id = ? ORDER BY 1", [run_id])
    assert layers.layer.tolist() == [0, 2]
    with pytest.raises(WorkbenchError, match="out of range"):
        wb.record(model, [SHORT], db_path, wb.RecordConfig(layers=[5]), progress=False)


@pytest.mark.parametrize("prompts, message", [([], "no prompts"), (["ok", "  "], "prompt 1 is empty"),
                                              ([3], "expected a string")])
def test_bad_prompts_fail_before_anything_is_written(prompts, message, tiny_dir, db_path):
    model = wb.load_model(str(tiny_dir("gpt2")))
    first = wb.record(model, [SHORT], db_path, progress=False)
    with pytest.raises(WorkbenchError, match=message):
        wb.record(model, prompts, db_path, progress=False)
    runs = wb.Store(db_path).list_runs()
    assert runs.run_id.tolist() == [first] and runs.status.tolist() == ["complete"]


def test_size_is_capped_up_front(tiny_dir, db_path):
    model = wb.load_model(str(tiny_dir("gpt2")))
    with pytest.raises(WorkbenchError, match="raise the cap"):
        wb.record(model, [LONG] * 4, db_path, wb.RecordConfig(vectors=True, max_tensor_gb=1e-6), progress=False)
    assert not db_path.exists()


def test_attention_needs_eager_attention(tiny_dir, db_path):
    model = wb.load_model(str(tiny_dir("gpt2")))
    with pytest.raises(WorkbenchError, match="eager attention"):
        wb.record(model, [SHORT], db_path, wb.RecordConfig(attention=True), progress=False)


def test_too_long_prompt_is_refused(tiny_dir, db_path):
    model = wb.load_model(str(tiny_dir("gpt2")))
    with pytest.raises(WorkbenchError, match="longer than the model's context of 128"):
        wb.record(model, ["x" * 200], db_path, progress=False)


def test_ctrl_c_marks_the_run_interrupted(tiny_dir, db_path):
    model = wb.load_model(str(tiny_dir("gpt2")))
    done = wb.record(model, [SHORT], db_path, progress=False)

    def stop_after_first_batch(finished, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        wb.record(model, [SHORT, LONG], db_path, wb.RecordConfig(batch_size=1), progress=stop_after_first_batch)
    store = wb.Store(db_path)
    runs = store.list_runs().set_index("run_id")
    assert runs.loc[done, "status"] == "complete"
    assert runs.loc[done + 1, "status"] == "interrupted"
    with pytest.raises(WorkbenchError, match="interrupted, not complete"):
        store.completed_run(done + 1)


def test_prompt_files(tmp_path):
    text = tmp_path / "p.txt"
    text.write_text("first\n\nsecond\n")
    assert load_prompts(text) == ["first", "second"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a"}\n{"text": "b"}\n"c"\n')
    assert load_prompts(jsonl) == ["a", "b", "c"]
    jsonl.write_text('{"prompt": "a"}\n{oops\n')
    with pytest.raises(WorkbenchError, match=r"p.jsonl:2 is not valid JSON"):
        load_prompts(jsonl)
    jsonl.write_text('{"question": "a"}\n')
    with pytest.raises(WorkbenchError, match="no 'prompt' or 'text'"):
        load_prompts(jsonl)
    jsonl.write_text('"a"\n[1, 2]\n')
    with pytest.raises(WorkbenchError, match=r"p.jsonl:2 is a JSON list, expected a string or an object"):
        load_prompts(jsonl)
    jsonl.write_text('{"text": 7}\n')
    with pytest.raises(WorkbenchError, match=r"p.jsonl:1 is a JSON int"):
        load_prompts(jsonl)
    with pytest.raises(WorkbenchError, match="does not exist"):
        load_prompts(tmp_path / "missing.txt")


def test_prompt_statistics_are_exact_over_the_whole_hidden_state(tiny_dir, db_path):
    model = wb.load_model(str(tiny_dir("llama")))
    run_id = wb.record(model, [LONG, SHORT], db_path, wb.RecordConfig(vectors=True, batch_size=2), progress=False)
    store = wb.Store(db_path)
    vectors = store.read_tensors(run_id, "resid_post")
    stats = store.query("SELECT * FROM prompt_layer_stats WHERE run_id = ? ORDER BY prompt_id, layer", [run_id])
    assert len(stats) == 2 * model.n_layers
    for row in stats.itertuples():
        x = np.stack(vectors[(vectors.prompt_id == row.prompt_id) & (vectors.layer == row.layer)].vector)
        assert row.median_abs == pytest.approx(float(torch.tensor(np.abs(x)).flatten().median()), rel=1e-6)
        assert row.max_abs == pytest.approx(float(np.abs(x).max()), rel=1e-6)
        assert row.n_nonfinite == 0 and row.first_nonfinite_position == -1


def test_half_precision_overflow_is_located(tiny_dir, db_path):
    model = wb.load_model(str(tiny_dir("gpt2")), dtype=torch.float16)
    token = model.tokenizer("z")["input_ids"][0]
    with torch.no_grad():  # "z" embeds at 60000 in dim 5; block 0's MLP adds 10000 there: fp16 overflows at "z" only
        model.hf.transformer.wte.weight[token, 5] = 60000
        model.hf.transformer.h[0].mlp.c_proj.bias[5] = 10000
    run_id = wb.record(model, ["abz"], db_path, progress=False)
    stats = wb.Store(db_path).query(
        "SELECT layer, n_nonfinite, first_nonfinite_position FROM prompt_layer_stats WHERE run_id = ? "
        "AND n_nonfinite > 0 ORDER BY layer", [run_id])
    assert stats.layer.min() == 0 and stats.first_nonfinite_position.iloc[0] == 2  # "z" is the third character


def test_a_failing_writer_fails_the_run_and_keeps_the_others(tiny_dir, db_path, monkeypatch):
    model = wb.load_model(str(tiny_dir("gpt2")))
    done = wb.record(model, [SHORT], db_path, progress=False)

    def disk_full(self, run_id, tables, files):
        raise OSError("disk full")

    monkeypatch.setattr(wb.Store, "_append", disk_full)
    with pytest.raises(OSError, match="disk full"):
        wb.record(model, [SHORT, LONG, SHORT], db_path, wb.RecordConfig(batch_size=1), progress=False)
    monkeypatch.undo()
    store = wb.Store(db_path)
    runs = store.list_runs().set_index("run_id")
    assert runs.loc[done, "status"] == "complete" and runs.loc[done + 1, "status"] == "failed"
    assert "disk full" in store.run(done + 1)["error"]
    assert store.query("SELECT count(*) AS n FROM layer_stats WHERE run_id = ?", [done + 1]).n[0] == 0


def test_tokens_are_stored_as_decoded_one_by_one(tiny_dir, db_path):
    model = wb.load_model(str(tiny_dir("llama")))
    run_id = wb.record(model, [LONG, SHORT, LONG], db_path, wb.RecordConfig(batch_size=2), progress=False)
    tokens = wb.Store(db_path).query(
        "SELECT prompt_id, position, token_id, token FROM tokens WHERE run_id = ? ORDER BY prompt_id, position",
        [run_id])
    ids = [model.tokenizer(p)["input_ids"] for p in (LONG, SHORT, LONG)]
    assert tokens.token_id.tolist() == [t for row in ids for t in row]
    assert tokens.position.tolist() == [p for row in ids for p in range(len(row))]
    assert tokens.token.tolist() == model.tokenizer.batch_decode([[t] for row in ids for t in row])


def test_a_mixture_of_experts_router_is_recorded_as_its_own_site(db_path):
    """The router's logits per token and expert, stored as the site `router`, equal the router's own output; a
    model without a router refuses the site before recording anything."""
    from workbench.models import wrap_model
    from workbench.random_models import VOCAB, char_tokenizer
    from workbench.tiny_configs import build_tiny

    hf, _ = build_tiny("mixtral", vocab_size=len(VOCAB))
    model = wrap_model(hf, char_tokenizer(), "mixtral")
    run = wb.record(model, ["The cat sat.", "Hi"], db_path, wb.RecordConfig(router=True, vectors=True),
                    progress=False)
    stored = wb.Store(db_path).read_tensors(run, "router", prompt_id=1).query("layer == 1").sort_values("position")
    seen = {}
    handle = model.module("router", 1).register_forward_hook(lambda module, args, out: seen.update(logits=out[0]))
    with torch.no_grad():
        model.hf(torch.tensor([model.tokenizer("Hi")["input_ids"]]))
    handle.remove()
    assert np.stack(stored.vector.to_numpy()).shape == (len(model.tokenizer("Hi")["input_ids"]), 4)
    np.testing.assert_allclose(np.stack(stored.vector.to_numpy()), seen["logits"].numpy(), atol=1e-6)

    dense = wrap_model(build_tiny("llama", vocab_size=len(VOCAB))[0], char_tokenizer(), "llama")
    runs = len(wb.Store(db_path).list_runs())
    with pytest.raises(WorkbenchError, match=r"layers \[0, 1\] of llama have no mixture-of-experts router"):
        wb.record(dense, ["Hi"], db_path, wb.RecordConfig(router=True), progress=False)
    assert len(wb.Store(db_path).list_runs()) == runs


def test_a_model_whose_outputs_change_with_padding_records_each_prompt_alone(db_path):
    """ConvBERT's convolutions reach past the attention mask: batched with padding, a short prompt's numbers
    would depend on its partner, so the recording measures that once and runs each prompt alone."""
    from workbench.models import wrap_model
    from workbench.random_models import VOCAB, char_tokenizer
    from workbench.recording import capture
    from workbench.tiny_configs import build_tiny

    model = wrap_model(build_tiny("convbert", vocab_size=len(VOCAB))[0], char_tokenizer("[CLS]", "[SEP]"), "convbert")
    prompts = ["A much longer prompt than its partner.", "Hi."]
    with pytest.warns(UserWarning, match="padding changes convbert's outputs"):
        run = wb.record(model, prompts, db_path, wb.RecordConfig(batch_size=2, vectors=True), progress=False)
    store = wb.Store(db_path)
    assert store.run(run)["config"]["batch_size"] == 1
    ids = torch.tensor([model.tokenizer(prompts[1])["input_ids"]])
    alone = capture(model, ids, torch.ones_like(ids), [1], wb.RecordConfig())["resid_post"][0][0]
    stored = store.read_tensors(run, "resid_post", prompt_id=1).query("layer == 1").sort_values("position")
    np.testing.assert_allclose(np.stack(stored.vector.to_numpy()), alone.numpy(), atol=1e-5)
