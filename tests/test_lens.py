"""The logit lens reads every layer through the model's own read-out: exact at the last layer (soft-capped and
scaled logits included), equal to transformers' hidden states read by hand in between, and stored per position."""

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.lens.logit_lens import logit_lens, record_lens
from workbench.models import bundled_models

PROMPT = "the cat sat on the mat"


@pytest.mark.parametrize("family", ["llama", "gemma2", "cohere", "granite", "gpt2", "qwen3_next", "kimi_linear"])
def test_the_lens_reads_each_layer_as_the_model_would(family, tiny_dir):
    """Gemma 2 soft-caps its logits, Cohere and Granite scale them: the last layer's lens is the model's own
    distribution, and every layer's is transformers' hidden state through the final norm and LM head."""
    model = wb.load_model(str(tiny_dir(family)))
    rows = logit_lens(model, PROMPT, top_k=3)
    ids = torch.tensor([model.tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        out = model.hf(input_ids=ids, output_hidden_states=True)
    final = torch.log_softmax(out.logits[0].float(), -1)
    last = rows[rows.layer == model.n_layers - 1].sort_values("position")
    assert np.allclose(last.kl_to_final, 0, atol=1e-5)
    top = final.exp().topk(3, dim=-1)
    assert np.allclose(np.stack(last.top_probs), top.values.numpy(), atol=1e-5)
    assert (np.stack(last.top_ids) == top.indices.numpy()).all()
    layer = 0
    with torch.no_grad():  # by hand: hidden_states[1] is block 0's output
        logits = model.module("unembed")(model.module("final_norm")(out.hidden_states[layer + 1][0])).float()
    config = model.text_config
    if getattr(config, "logit_scale", None) is not None:
        logits = logits * config.logit_scale
    if getattr(config, "logits_scaling", None) is not None:
        logits = logits / config.logits_scaling
    if getattr(config, "final_logit_softcapping", None) is not None:
        logits = torch.tanh(logits / config.final_logit_softcapping) * config.final_logit_softcapping
    logp = torch.log_softmax(logits, -1)
    first = rows[rows.layer == layer].sort_values("position")
    assert np.allclose(first.kl_to_final, (final.exp() * (final - logp)).sum(-1).numpy(), atol=1e-5)
    # the default target is the prompt's next token: its probability and rank under the lens
    nxt = ids[0, 1:]
    assert np.allclose(first.target_prob[:-1], logp[:-1].gather(1, nxt[:, None])[:, 0].exp().numpy(), atol=1e-6)
    assert np.isnan(first.target_prob.iloc[-1]) and first.target_rank.iloc[-1] == -1
    assert ((first.target_rank[:-1] == 0) == (np.stack(first.top_ids)[:-1, 0] == nxt.numpy())).all()


def test_a_chosen_target_is_followed_everywhere_and_bad_requests_are_refused(tiny_dir, tmp_path):
    model = wb.load_model(str(tiny_dir("llama")))
    rows = logit_lens(model, PROMPT, target="t", layers=[1])
    target = model.tokenizer("t", add_special_tokens=False)["input_ids"][0]
    assert (rows.layer == 1).all() and (rows.target_id == target).all() and (rows.target_rank >= 0).all()
    with pytest.raises(WorkbenchError, match="target is empty"):
        logit_lens(model, PROMPT, target="")
    with pytest.raises(WorkbenchError, match="out of range"):
        logit_lens(model, PROMPT, layers=[7])
    with pytest.raises(WorkbenchError, match="top_k"):
        logit_lens(model, PROMPT, top_k=0)
    with pytest.raises(WorkbenchError, match="encoder"):
        logit_lens(wb.load_model(str(tiny_dir("bert"))), PROMPT)
    store = wb.Store(str(tmp_path / "l.duckdb"))
    kept = record_lens(model, [PROMPT], store)
    with pytest.raises(WorkbenchError, match="empty"):
        record_lens(model, [PROMPT, " "], store)  # a bad prompt stores nothing
    assert store.query("SELECT DISTINCT analysis_id FROM lens").analysis_id.tolist() == [kept]


def test_a_model_with_several_residual_streams_is_refused(tiny_dir):
    with pytest.raises(WorkbenchError, match="residual as"):
        logit_lens(wb.load_model(str(tiny_dir("gemma3n_text"))), PROMPT)


@pytest.mark.skipif("demo" not in bundled_models(), reason="the demo model is not on disk yet")
def test_on_the_demo_model_later_layers_predict_more_like_the_last(db_path, capsys):
    """The trained demo model: the lens's KL to the final layer falls from the first layer to the last, and the
    prompt's next token is the lens's top token more often at the last layer than at the first."""
    story = "Once upon a time, there was a little girl named Lily. She loved to play with her dog in the park."
    assert main(["lens", "--model", "demo", "--prompt", story, "--db", str(db_path), "--json"]) == 0
    import json

    layers = json.loads(capsys.readouterr().out)["layers"]
    kl = [row["mean_kl_to_final"] for row in layers]
    assert kl[0] > kl[len(kl) // 2] > kl[-2] > kl[-1] == pytest.approx(0, abs=1e-5)
    assert layers[-1]["target_top1"] > layers[0]["target_top1"]
    assert main(["lens", "--model", "demo", "--prompt", story, "--layers", "99", "--db", str(db_path)]) == 2
    assert "out of range" in capsys.readouterr().err


def test_a_tuned_lens_trains_saves_loads_and_applies(tiny_dir, tmp_path):
    """Identity-initialised translators lower the KL to the final layer on their training texts; they survive a
    round trip through their file; the tuned lens's last layer is the model's own output."""
    from workbench.lens.tuned_lens import lens_kl, load_tuned_lens, save_tuned_lens, train_tuned_lens

    model = wb.load_model(str(tiny_dir("llama")))
    texts = ["the cat sat on the mat", "a dog ran in the park", "she read a book by the sea"]
    lens = train_tuned_lens(model, texts, steps=60, lr=1e-2, batch_tokens=64)
    before, after = lens_kl(model, None, texts), lens_kl(model, lens, texts)
    assert all(a < b for a, b in zip(after[:-1], before[:-1], strict=True)) and after[-1] == before[-1] == 0
    assert sorted(lens.weights) == list(range(model.n_layers - 1))
    path = save_tuned_lens(lens, tmp_path / "lens.safetensors")
    back = load_tuned_lens(path, model)
    assert all(torch.equal(back.weights[k], lens.weights[k]) and torch.equal(back.biases[k], lens.biases[k])
               for k in lens.weights)
    rows = logit_lens(model, PROMPT, tuned=back)
    plain = logit_lens(model, PROMPT)
    assert (rows.lens == "tuned").all() and (plain.lens == "logit").all()
    last = model.n_layers - 1
    assert np.allclose(rows[rows.layer == last].kl_to_final, plain[plain.layer == last].kl_to_final)
    assert not np.allclose(rows[rows.layer == 0].kl_to_final, plain[plain.layer == 0].kl_to_final)


def test_tuned_lens_files_are_checked(tiny_dir, tmp_path):
    from safetensors.torch import save_file

    from workbench.lens.tuned_lens import load_tuned_lens, save_tuned_lens, train_tuned_lens

    model = wb.load_model(str(tiny_dir("llama")))
    with pytest.raises(WorkbenchError, match="no tuned-lens file"):
        load_tuned_lens(tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00\x01 not safetensors")
    with pytest.raises(WorkbenchError, match="not a tuned-lens file"):
        load_tuned_lens(corrupt)
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(plain))
    with pytest.raises(WorkbenchError, match="not a tuned lens"):
        load_tuned_lens(plain)
    other = wb.load_model(str(tiny_dir("qwen3_next")))  # another shape
    path = save_tuned_lens(train_tuned_lens(other, ["a b c d"], steps=1), tmp_path / "other.safetensors")
    with pytest.raises(WorkbenchError, match="was trained for"):
        load_tuned_lens(path, model)
    with pytest.raises(WorkbenchError, match="steps"):
        train_tuned_lens(model, ["a b"], steps=0)


@pytest.mark.skipif("demo" not in bundled_models(), reason="the demo model is not on disk yet")
def test_on_the_demo_model_the_tuned_lens_beats_the_logit_lens_on_held_out_stories(db_path, tmp_path, capsys):
    """Trained on the demo corpus's training stories, the translators bring every layer but the last closer to the
    final distribution on the test split's stories (the tuned-lens paper's figure)."""
    import json

    out = tmp_path / "demo-lens.safetensors"
    assert main(["tune-lens", "--model", "demo", "--out", str(out), "--steps", "120", "--db", str(db_path),
                 "--json"]) == 0
    layers = json.loads(capsys.readouterr().out)["layers"]
    assert all(row["tuned_lens_kl"] < 0.8 * row["logit_lens_kl"] for row in layers[:-1])
    assert main(["lens", "--model", "demo", "--prompt", "Once upon a time", "--tuned", str(out), "--db",
                 str(db_path), "--json"]) == 0
    kinds = {row["lens"] for row in json.loads(capsys.readouterr().out)["layers"]}
    assert kinds == {"logit", "tuned"}


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_direct_logit_attribution_adds_up_to_the_models_own_logits(family, tiny_dir):
    """RMSNorm (Llama), LayerNorm with its bias (GPT-2), parallel attention and MLP (GPT-NeoX): the terms of the
    embedding and every attention and MLP output sum to the model's logit difference, and to the logit alone."""
    from workbench.lens.attribution import direct_logit_attribution

    model = wb.load_model(str(tiny_dir(family)))
    ids = torch.tensor([model.tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        logits = model.hf(input_ids=ids).logits[0].float()
    t, o = (model.tokenizer(x, add_special_tokens=False)["input_ids"][0] for x in ("t", "a"))
    for position in (-1, 2):
        rows = direct_logit_attribution(model, PROMPT, "t", "a", position=position)
        assert rows.attribution.sum() == pytest.approx(float(logits[position, t] - logits[position, o]), abs=1e-4)
        assert rows.component.tolist()[:3] == ["embed", "attn", "mlp"] and len(rows[rows.component == "mlp"]) == \
            model.n_layers
    alone = direct_logit_attribution(model, PROMPT, "t")
    assert alone.attribution.sum() == pytest.approx(float(logits[-1, t]), abs=1e-4)


def test_direct_logit_attribution_refuses_what_it_cannot_split(tiny_dir):
    from workbench.lens.attribution import direct_logit_attribution

    with pytest.raises(WorkbenchError, match="would not add up"):  # Gemma 2 adds normed branch outputs
        direct_logit_attribution(wb.load_model(str(tiny_dir("gemma2"))), PROMPT, "t")
    model = wb.load_model(str(tiny_dir("llama")))
    with pytest.raises(WorkbenchError, match="outside the prompt"):
        direct_logit_attribution(model, PROMPT, "t", position=99)
    with pytest.raises(WorkbenchError, match="target is empty"):
        direct_logit_attribution(model, PROMPT, "")


@pytest.mark.skipif("demo" not in bundled_models(), reason="the demo model is not on disk yet")
def test_on_the_demo_model_a_sad_story_pushes_tears_over_joy(db_path, capsys):
    import json

    sad = "Tom hated the soup. It was cold and stale, and the day ended in"
    assert main(["dla", "--model", "demo", "--prompt", sad, "--target", " tears", "--other", " joy",
                 "--db", str(db_path), "--json"]) == 0
    terms = json.loads(capsys.readouterr().out)["terms"]
    assert sum(t["attribution"] for t in terms) > 2  # the model prefers "tears", and the terms say by how much
    assert {t["component"] for t in terms} == {"embed", "attn", "mlp"}


CLEAN, CORRUPT = "the cat sat on the mat", "the cat sat on the hat"  # they differ at one token, near the end


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen3_next", "kimi_linear"])
def test_activation_patching_restores_exactly_where_it_must(family, tiny_dir):
    """On softmax models and the delta-rule hybrids alike: patching the last layer's residual at the last position gives back the clean logits (restored = 1); patching
    anything before the changed token changes nothing (restored = 0); one batched cell equals the same patch made
    alone by hand."""
    from workbench.lens.patching import activation_patching

    model = wb.load_model(str(tiny_dir(family)))
    rows = activation_patching(model, CLEAN, CORRUPT, "t", "a", sites=("resid_post", "attn_out", "mlp_out"))
    ids = model.tokenizer(CLEAN)["input_ids"]
    changed = next(i for i, (a, b) in enumerate(zip(ids, model.tokenizer(CORRUPT)["input_ids"], strict=True))
                   if a != b)
    resid = rows[rows.site == "resid_post"].set_index(["layer", "position"])
    assert resid.restored[(model.n_layers - 1, len(ids) - 1)] == pytest.approx(1, abs=1e-4)
    assert np.allclose(rows[rows.position < changed].restored, 0, atol=1e-4)
    assert len(rows) == 3 * model.n_layers * len(ids)
    # by hand: the corrupted run with block 1's residual at the changed position taken from the clean run
    clean_ids, corrupt_ids = torch.tensor([ids]), torch.tensor([model.tokenizer(CORRUPT)["input_ids"]])
    with torch.no_grad():
        kept = model.hf(input_ids=clean_ids, output_hidden_states=True).hidden_states[2][0, changed]

        def hook(module, args, output):
            hidden = (output[0] if isinstance(output, tuple) else output).clone()
            hidden[0, changed] = kept
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
        handle = model.module("block", 1).register_forward_hook(hook)
        logits = model.hf(input_ids=corrupt_ids).logits[0, -1]
        handle.remove()
    t, a = (model.tokenizer(x, add_special_tokens=False)["input_ids"][0] for x in ("t", "a"))
    assert resid.metric[(1, changed)] == pytest.approx(float(logits[t] - logits[a]), abs=1e-4)


def test_activation_patching_refuses_bad_requests_and_stores_its_grid(tiny_dir, db_path, capsys):
    from workbench.lens.patching import activation_patching

    model = wb.load_model(str(tiny_dir("llama")))
    with pytest.raises(WorkbenchError, match="same number"):
        activation_patching(model, CLEAN, "the cat sat", "t", "a")
    with pytest.raises(WorkbenchError, match="needs a wrong token"):
        activation_patching(model, CLEAN, CORRUPT, "t")
    with pytest.raises(WorkbenchError, match="unknown site"):
        activation_patching(model, CLEAN, CORRUPT, "t", "a", sites=("heads",))
    with pytest.raises(WorkbenchError, match="metric must be"):
        activation_patching(model, CLEAN, CORRUPT, "t", "a", metric="accuracy")
    kl = activation_patching(model, CLEAN, CORRUPT, "t", metric="kl")
    assert (kl.metric >= -1e-6).all() and kl.clean_metric[0] == pytest.approx(0, abs=1e-6)
    folder = str(tiny_dir("llama"))
    assert main(["patch", "--model", folder, "--clean", CLEAN, "--corrupt", CORRUPT, "--answer", "t", "--wrong", "a",
                 "--db", str(db_path), "--json"]) == 0
    import json

    layers = json.loads(capsys.readouterr().out)["layers"]
    assert [row["layer"] for row in layers] == list(range(model.n_layers))
    stored = wb.Store(db_path).query("SELECT count(*) AS n FROM patching").n[0]
    assert stored == model.n_layers * len(model.tokenizer(CLEAN)["input_ids"])


def test_attribution_patching_is_the_first_order_estimate_of_the_same_grid(tiny_dir, db_path):
    """Where clean and corrupted activations agree (before the changed token) the estimate is the corrupted
    metric; elsewhere it is the corrupted metric plus delta . gradient, checked against a finite difference of
    the model itself; `record_patching` stores it beside the exact grid with their correlation."""
    from workbench.lens.patching import attribution_patching, record_patching

    model = wb.load_model(str(tiny_dir("llama")))
    rows = attribution_patching(model, CLEAN, CORRUPT, "t", "a", sites=("resid_post", "mlp_out"))
    ids, bad = model.tokenizer(CLEAN)["input_ids"], model.tokenizer(CORRUPT)["input_ids"]
    changed = next(i for i, (a, b) in enumerate(zip(ids, bad, strict=True)) if a != b)
    assert np.allclose(rows[rows.position < changed].restored, 0, atol=1e-6)
    t, a = (model.tokenizer(x, add_special_tokens=False)["input_ids"][0] for x in ("t", "a"))
    with torch.no_grad():
        clean_h = model.hf(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[2][0, changed]
        corrupt_ids = torch.tensor([bad])
        corrupt_h = model.hf(input_ids=corrupt_ids, output_hidden_states=True).hidden_states[2][0, changed]
        eps = 0.02

        def moved(step):  # the metric with block 1's residual moved `step` of the way to the clean one
            def nudge(module, args, output):
                hidden = (output[0] if isinstance(output, tuple) else output).clone()
                hidden[0, changed] += step * (clean_h - corrupt_h)
                return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
            handle = model.module("block", 1).register_forward_hook(nudge)
            logits = model.hf(input_ids=corrupt_ids).logits[0, -1]
            handle.remove()
            return float(logits[t] - logits[a])

        base = model.hf(input_ids=corrupt_ids).logits[0, -1]
        slope = (moved(eps) - moved(-eps)) / (2 * eps)  # a central difference
    cell = rows[(rows.site == "resid_post") & (rows.layer == 1) & (rows.position == changed)].iloc[0]
    assert cell.metric - float(base[t] - base[a]) == pytest.approx(slope, rel=1e-2, abs=1e-4)
    kept = record_patching(model, CLEAN, CORRUPT, wb.Store(db_path), "t", "a", sites=("resid_post",))
    stored = wb.Store(db_path).query("SELECT estimated FROM patching WHERE analysis_id = ?", [kept])
    assert stored.estimated.notna().all()
    correlation = wb.Store(db_path).analysis(kept)["summary"]["correlation"]["resid_post"]
    assert -1 <= correlation <= 1


@pytest.mark.skipif("demo" not in bundled_models(), reason="the demo model is not on disk yet")
def test_on_the_demo_model_retrieval_is_assembled_at_the_last_position_by_layer_4():
    """The demo model answers a key-value question with the right value's first digit; patching shows where: the
    residual at the last position carries the clean answer from layer 4 on, and not before."""
    import importlib.util
    from pathlib import Path

    from workbench.lens.patching import activation_patching

    script = Path(__file__).resolve().parents[1] / "analyses" / "lens_report.py"
    spec = importlib.util.spec_from_file_location("lens_report", script)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    model = wb.load_model("demo")
    rows = activation_patching(model, report.CLEAN, report.CORRUPT, "7", "5")
    assert rows.clean_metric[0] > 5 > -5 > rows.corrupt_metric[0]  # "7" clean, "5" corrupted, both confidently
    last = rows[rows.position == rows.position.max()].set_index("layer").restored
    assert (last[:4] < 0.05).all() and (last[4:] > 0.9).all()


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen3_next", "kimi_linear"])
def test_heads_split_each_layers_attention_term_and_patch_one_at_a_time(family, tiny_dir):
    """Per head: the direct logit attribution terms of a layer's heads (and its output projection's bias) sum to
    the layer's attention term (Llama's Linear, GPT-2's Conv1D), and patching one head's output at every position
    equals the same replacement made by hand."""
    from workbench.lens.attribution import direct_logit_attribution, output_projection
    from workbench.lens.patching import activation_patching

    model = wb.load_model(str(tiny_dir(family)))
    rows = direct_logit_attribution(model, PROMPT, "t", "a", heads=True)
    attn = rows[rows.component == "attn"].set_index("layer").attribution
    heads = rows[rows.component == "head"].groupby("layer").attribution.sum()
    assert np.allclose(attn.sort_index(), heads.sort_index(), atol=1e-5)
    assert (rows[rows.component == "head"].groupby("layer").size() >= model.n_heads).all()

    grid = activation_patching(model, CLEAN, CORRUPT, "t", "a", sites=("head",))
    assert len(grid) == model.n_layers * model.n_heads and (grid.position == -1).all()
    layer, head, d = 1, 2, model.structure.head_dim
    module = output_projection(model, layer)[0]
    kept = {}
    with torch.no_grad():
        handle = module.register_forward_pre_hook(lambda m, args: kept.setdefault("z", args[0].clone()))
        model.hf(input_ids=torch.tensor([model.tokenizer(CLEAN)["input_ids"]]))
        handle.remove()

        def swap(m, args):
            z = args[0].clone()
            z[..., head * d:(head + 1) * d] = kept["z"][..., head * d:(head + 1) * d]
            return (z, *args[1:])
        handle = module.register_forward_pre_hook(swap)
        logits = model.hf(input_ids=torch.tensor([model.tokenizer(CORRUPT)["input_ids"]])).logits[0, -1]
        handle.remove()
    t, a = (model.tokenizer(x, add_special_tokens=False)["input_ids"][0] for x in ("t", "a"))
    cell = grid[(grid.layer == layer) & (grid["head"] == head)].metric.iloc[0]
    assert cell == pytest.approx(float(logits[t] - logits[a]), abs=1e-5)


@pytest.mark.skipif("demo" not in bundled_models(), reason="the demo model is not on disk yet")
def test_on_the_demo_model_one_head_carries_the_retrieved_value(db_path):
    """Patching heads one at a time on the demo's retrieval pair: layer 6's head 5 alone brings back most of the
    clean answer, and attribution patching ranks the heads nearly as the exact patching does."""
    import importlib.util
    from pathlib import Path

    from workbench.lens.patching import record_patching

    script = Path(__file__).resolve().parents[1] / "analyses" / "lens_report.py"
    spec = importlib.util.spec_from_file_location("lens_report", script)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    store = wb.Store(db_path)
    kept = record_patching(wb.load_model("demo"), report.CLEAN, report.CORRUPT, store, "7", "5", sites=("head",))
    summary = store.analysis(kept)["summary"]
    assert summary["most_restoring"]["layer"] == 6 and summary["most_restoring"]["restored"] > 0.8
    assert summary["correlation"]["head"] > 0.95
    best = store.query("SELECT head FROM patching WHERE analysis_id = ? ORDER BY restored DESC LIMIT 1", [kept])
    assert best["head"][0] == 5


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
def test_patching_and_the_logit_lens_equal_transformer_lens(family, tiny_dir):
    """TransformerLens's own patching utilities give the same grids (residual, attention and MLP outputs by layer x
    position, heads by layer x head), and its accumulated residual through `ln_final` and the unembedding the same
    logit lens."""
    from transformer_lens import patching
    from transformer_lens.model_bridge import TransformerBridge

    from workbench.lens.patching import activation_patching

    path = tiny_dir(family)
    model = wb.load_model(str(path))
    clean, corrupt = "the cat sat on the mat", "the dog sat on the rug"
    ids = [torch.tensor([model.tokenizer(text)["input_ids"]]) for text in (clean, corrupt)]
    assert ids[0].shape == ids[1].shape
    answer, wrong = (model.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in ("a", "b"))
    rows = activation_patching(model, clean, corrupt, "a", "b", sites=("resid_post", "attn_out", "mlp_out", "head"))
    bridge = TransformerBridge.boot_transformers(str(path), device="cpu")
    _, cache = bridge.run_with_cache(ids[0])

    def metric(logits):
        return logits[0, -1, answer] - logits[0, -1, wrong]

    expected = {
        "resid_post": patching.generic_activation_patch(
            bridge, ids[1], cache, metric, patch_setter=patching.layer_pos_patch_setter, activation_name="resid_post",
            index_axis_names=("layer", "pos")),
        "attn_out": patching.get_act_patch_attn_out(bridge, ids[1], cache, metric),
        "mlp_out": patching.get_act_patch_mlp_out(bridge, ids[1], cache, metric),
        "head": patching.get_act_patch_attn_head_out_all_pos(bridge, ids[1], cache, metric),
    }
    for site, grid in expected.items():
        site_rows = rows[rows.site == site]
        ours = np.full(tuple(grid.shape), np.nan)
        ours[site_rows.layer, site_rows["head"].astype(int) if site == "head" else site_rows.position] = site_rows.metric
        np.testing.assert_allclose(ours, grid.numpy(), atol=1e-4, err_msg=site)

    lens = logit_lens(model, clean, top_k=3)
    stack = cache.accumulated_resid(apply_ln=True)[:, 0]  # [embeddings, block 0 .. block n-1, T, D]
    logp = torch.log_softmax(bridge.unembed(stack).float(), -1).detach()
    final = logp[-1]
    for layer in range(model.n_layers):
        rows_at = lens[lens.layer == layer].sort_values("position")
        tl_kl = (final.exp() * (final - logp[layer + 1])).sum(-1)
        np.testing.assert_allclose(rows_at.kl_to_final, tl_kl.numpy(), atol=1e-4)
        np.testing.assert_allclose(np.stack(rows_at.top_probs), logp[layer + 1].exp().topk(3).values.numpy(), atol=1e-5)
