"""Long-prompt attention summaries taken from a real model's layers equal its own attention maps pooled, leave its
output as it was, and refuse what they cannot summarise."""

import json

import pytest
import torch

import workbench as wb
from workbench.attention_summaries import Request, attention_summaries, summarising
from workbench.config import RecordConfig
from workbench.errors import WorkbenchError
from workbench.recording import capture, tokenize

PROMPT = "Once upon a time there was a girl named Lily. She loved to play with her dog in the park every day."


def pooled(p: torch.Tensor, block: int) -> dict[str, torch.Tensor]:
    """The summaries of full maps p [H, T, T] (query rows), as `workbench_kernels.attention_tiles` defines them."""
    t = p.shape[-1]
    n = -(-t // block)
    per_query = torch.nn.functional.pad(p, (0, n * block - t)).unflatten(-1, (n, block)).sum(-1)  # [H, T, NK]
    pos = torch.arange(t)
    return {"tiles": torch.stack([per_query[:, i * block:(i + 1) * block].mean(1) for i in range(n)], dim=1),
            "sink": p[..., 0], "entropy": -(p * p.clamp_min(1e-38).log()).sum(-1),
            "distance": (p * (pos[:, None] - pos[None, :]).clamp_min(0)).sum(-1)}


def test_on_the_demo_model_the_summaries_are_its_attention_maps_pooled():
    model = wb.load_model("demo", attention=True)
    ids = torch.tensor(tokenize(model, [PROMPT]))
    maps = capture(model, ids, torch.ones_like(ids), list(range(model.n_layers)), RecordConfig(attention=True))
    summaries = attention_summaries(model, PROMPT, block=8)
    assert sorted(summaries) == list(range(model.n_layers))
    for layer, got in summaries.items():
        expected = pooled(maps["pattern"][layer][0].float(), 8)
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], atol=1e-4, rtol=1e-4, msg=f"{name} {layer}")
    with torch.no_grad(), summarising(model, [0, 5], Request(8)):  # the model's output is its own while summarised
        logits = model.hf(input_ids=ids).logits
    assert model.hf.config._attn_implementation == "eager"  # and its attention is back afterwards
    torch.testing.assert_close(logits, model.hf(input_ids=ids).logits, atol=1e-4, rtol=1e-4)


def test_what_the_summaries_cannot_take_is_refused_and_the_model_is_left_as_it_was(tiny_dir):
    gemma = wb.load_model(str(tiny_dir("gemma2")))
    before = gemma.hf.config._attn_implementation
    with pytest.raises(WorkbenchError, match="soft-caps its scores or keeps a sliding window"):
        attention_summaries(gemma, PROMPT[:40])
    assert gemma.hf.config._attn_implementation == before
    hybrid = wb.load_model(str(tiny_dir("qwen3_next")))  # Gated DeltaNet layers between its softmax ones
    softmax = [i for i, soft in enumerate(hybrid.structure.softmax) if soft]
    delta = next(i for i, soft in enumerate(hybrid.structure.softmax) if not soft)
    with pytest.raises(WorkbenchError, match=f"layer {delta} has no softmax attention to summarise; those with it"):
        attention_summaries(hybrid, PROMPT, layers=[delta])
    assert sorted(attention_summaries(hybrid, PROMPT[:40], block=4)) == softmax
    with pytest.raises(WorkbenchError, match="does not go through transformers' attention interface, which the "
                                             "long-prompt summaries read"):
        attention_summaries(wb.load_model("demo-hybrid"), PROMPT)


def test_summaries_are_stored_and_a_zoomed_window_is_the_maps_own_entries(db_path):
    from workbench.attention_summaries import attention_window, block_for, record_summaries

    model = wb.load_model("demo", attention=True)
    prompts = [PROMPT, "key 4821 : value 7735 . Question: what is the value of key 4821? Answer:"]
    store = wb.Store(db_path)
    analysis_id = record_summaries(model, prompts, store, layers=[2, 5], tiles=4)
    n = len(tokenize(model, [PROMPT])[0])
    tiles = store.attention_tiles(analysis_id, 0, 5, 1)
    block = block_for(n, 4)
    assert (tiles.block == block).all() and tiles.query_block.max() == tiles.key_block.max() == 3
    expected = attention_summaries(model, PROMPT, [5], block)[5]["tiles"][1]
    got = tiles.pivot(index="query_block", columns="key_block", values="mass").to_numpy()
    torch.testing.assert_close(torch.tensor(got, dtype=torch.float32), expected)
    queries = store.attention_queries(analysis_id, 1, 2)
    assert len(queries) == model.n_heads * len(tokenize(model, [prompts[1]])[0]) and " value" in set(queries.token)
    top = store.attention_top_keys(analysis_id, 0, 5)  # the last query's top keys, by default
    assert set(top["query"]) == {n - 1} and (top.groupby("head").weight.apply(lambda w: w.is_monotonic_decreasing)).all()
    row = attention_window(model, PROMPT, 5, 1, (n - 1, n), (0, n))[0]
    first = top[top["head"] == 1].iloc[0]
    assert first.key == row.argmax() and first.weight == pytest.approx(row.max(), abs=1e-5)

    ids = torch.tensor(tokenize(model, [PROMPT]))
    full = capture(model, ids, torch.ones_like(ids), [4], RecordConfig(attention=True))["pattern"][0][0, 3]
    window = attention_window(model, PROMPT, 4, 3, (10, 20), (2, 15))
    torch.testing.assert_close(torch.tensor(window), full[10:20, 2:15].float(), atol=1e-5, rtol=1e-4)
    with pytest.raises(WorkbenchError, match="inside the prompt's"):
        attention_window(model, PROMPT, 4, 3, (10, n + 1), (0, 5))


def test_the_command_stores_the_summaries_and_refuses_bad_tiles(db_path, capsys):
    from workbench.cli import main

    assert main(["attention-summary", "--model", "demo", "--prompt", PROMPT, "--tiles", "4", "--layers", "1,6",
                 "--db", str(db_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [row["layer"] for row in report["layers"]] == [1, 6]
    assert all(0 <= row["mean_sink"] <= 1 and row["mean_entropy"] > 0 for row in report["layers"])
    assert main(["attention-summary", "--model", "demo", "--prompt", PROMPT, "--tiles", "0", "--db", str(db_path)]) == 2
    assert "--tiles and --top-k must be at least 1" in capsys.readouterr().err
    assert main(["attention-summary", "--model", "demo", "--prompt", PROMPT, "--queries", "0,-2", "--top-k", "3",
                 "--db", str(db_path), "--json"]) == 0
    analysis_id = json.loads(capsys.readouterr().out)["analysis_id"]
    top = wb.Store(db_path).attention_top_keys(analysis_id, 0, 0)
    demo = wb.load_model("demo")
    n = len(tokenize(demo, [PROMPT])[0])
    # the first token sees only itself: one key per head
    assert sorted(set(top["query"])) == [0, n - 2] and top[top["query"] == 0].key.tolist() == [0] * demo.n_heads


def test_a_recording_keeps_summaries_for_prompts_past_its_map_limit(db_path):
    """Maps for the short prompts, summaries (linked to the run, under the run's prompt ids) for the long ones."""
    model = wb.load_model("demo", attention=True)
    prompts = ["the cat sat", PROMPT, "a dog ran", PROMPT + " Then it rained."]
    run_id = wb.record(model, prompts, db_path, wb.RecordConfig(attention=True, map_limit=12, batch_size=4),
                       progress=False)
    store = wb.Store(db_path)
    assert store.run(run_id)["status"] == "complete"
    mapped = store.read_tensors(run_id, "attention")
    assert sorted(mapped.prompt_id.unique()) == [0, 2]
    (summary,) = store.analyses("attention-summary", run_id=run_id).itertuples()
    assert json.loads(summary.config)["prompt_ids"] == [1, 3]
    n = len(tokenize(model, [PROMPT])[0])
    tiles = store.attention_tiles(summary.analysis_id, 1, 4, 0)
    from workbench.attention_summaries import block_for

    expected = attention_summaries(model, PROMPT, [4], block_for(n))[4]["tiles"][0]
    got = tiles.pivot(index="query_block", columns="key_block", values="mass").to_numpy()
    torch.testing.assert_close(torch.tensor(got, dtype=torch.float32), expected)
    with pytest.raises(WorkbenchError, match="kept no attention maps for prompt 1 .*map limit"):
        from workbench.attention import attention_maps

        attention_maps(store, run_id, 1)
    with pytest.raises(WorkbenchError, match="map_limit must be a positive number of tokens"):
        wb.RecordConfig(map_limit=0)
