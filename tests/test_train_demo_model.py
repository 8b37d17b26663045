"""`train_demo_model.py --tiny` runs end to end on CPU and writes a loadable model with its tables."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "analyses"))

import train_demo_model  # noqa: E402
import write_model_card  # noqa: E402

from workbench import demo_model as dm  # noqa: E402
from workbench.corpus import build  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    out = tmp / "models" / "demo"
    result = subprocess.run([sys.executable, str(ROOT / "analyses" / "train_demo_model.py"), "--tiny",
                             "--out", str(out), "--work", str(tmp / "work")],
                            capture_output=True, text=True, timeout=300, cwd=tmp)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def _csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_output_loads_and_generates(run):
    model = AutoModelForCausalLM.from_pretrained(run, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(run)
    ids = tokenizer("One day, Maya went to the farm.", return_tensors="pt").input_ids
    assert ids[0, 0].item() == tokenizer.bos_token_id == 0  # BOS prepended by the tokenizer itself
    assert tokenizer.decode(ids[0], skip_special_tokens=True) == "One day, Maya went to the farm."
    gen = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert gen.shape[1] == ids.shape[1] + 4
    cfg = model.config
    assert cfg.model_type == "llama" and cfg.num_key_value_heads < cfg.num_attention_heads
    assert cfg.tie_word_embeddings and cfg.vocab_size >= len(tokenizer)
    assert json.loads((run / "config.json").read_text())["dtype"] == "float16"
    assert (run / "generation_config.json").exists() and (run / "model.safetensors").exists()


def test_two_earlier_checkpoints_ship_beside_the_model(run):
    metrics = json.loads((run / "metrics.json").read_text())
    shipped = metrics["training"]["shipped_checkpoints"]
    assert len(shipped) == 2 and max(shipped) < metrics["training"]["steps"]
    for step in shipped:
        path = run.parent / "demo-checkpoints" / f"step-{step}"
        assert AutoModelForCausalLM.from_pretrained(path).config.num_hidden_layers == dm.TINY.num_layers
        assert AutoTokenizer.from_pretrained(path)("a").input_ids[0] == 0


def test_tables_and_metrics(run):
    massive = _csv(run / "massive_by_checkpoint.csv")
    assert list(massive[0])[:8] == ["step", "tokens_seen", "layer", "top1_pooled", "top_position", "top_dim",
                                    "median_pooled", "ratio_pooled"]
    steps = sorted({int(r["step"]) for r in massive})
    assert steps == train_demo_model.checkpoint_steps(train_demo_model.TINY.max_steps, 4)
    for r in massive:
        assert float(r["ratio_pooled"]) == pytest.approx(float(r["top1_pooled"]) / float(r["median_pooled"]))
    assert {int(r["layer"]) for r in massive} == set(range(dm.TINY.num_layers))

    log = _csv(run / "train_log.csv")
    assert {"step", "tokens_seen", "lr", "train_loss"} <= set(log[0])
    assert float(log[-1]["train_loss"]) < float(log[0]["train_loss"])

    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["heldout"]) == {"stories", "retrieval"}
    assert all(v["perplexity"] > 1 for v in metrics["heldout"].values())
    assert set(metrics["retrieval"]["by_length"]) == {"256", "512", "1024"}
    assert 0 <= metrics["concepts"]["sentiment"]["test_accuracy"] <= 1
    assert len(metrics["samples"]) == 10 and metrics["model"]["parameters"] > 0
    assert metrics["training"]["tokens_seen"] == metrics["training"]["steps"] * 4 * dm.TINY.context_length

    card = (run / "README.md").read_text()
    massive_rows = write_model_card.read_massive(run / "massive_by_checkpoint.csv")
    assert card == write_model_card.render(metrics, massive_rows)
    assert "massive activations" in card and f"{metrics['model']['parameters']:,}" in card


def test_retrieval_check_agrees_with_greedy_generation(run):
    model = AutoModelForCausalLM.from_pretrained(run, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(run)
    checked = 0
    for prompt in dm.STORY_PROMPTS:  # the greedy continuation, taken as an answer, must count as correct
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        gen = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        gen = gen[0, ids.shape[1]:].tolist()
        answer = tokenizer.decode(gen[:3]).strip()
        if tokenizer(f"{prompt} {answer}").input_ids[ids.shape[1]:] != gen[:3]:
            continue  # greedy tokens that the tokenizer would spell differently cannot be an answer
        checked += 1
        wrong = answer + ("1" if tokenizer.convert_ids_to_tokens(gen[3]) == "0" else "0")
        assert dm.retrieval_correct(model, tokenizer, [{"prompt": prompt, "answer": answer},
                                                       {"prompt": prompt, "answer": wrong}]) == [True, False]
    assert checked
    items = [json.loads(line) for line in (run / "heldout_retrieval.jsonl").read_text().splitlines()]
    assert dm.retrieval_accuracy(model, tokenizer, items) < 0.5  # 24 tiny steps learn no retrieval


def test_tokenizer_is_deterministic_and_items_fit(run):
    corpus = run.parent.parent / "work" / "corpus"
    docs = build.read_documents(corpus / "stories/train.txt")[:500] + build.read_documents(
        corpus / "retrieval/train.txt")[:50]
    first, second = dm.train_tokenizer(docs), dm.train_tokenizer(docs)
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    assert first.convert_ids_to_tokens(first("key 4821").input_ids) == ["<s>", "key", "Ġ", "4", "8", "2", "1"]
    shipped = AutoTokenizer.from_pretrained(run)
    for item in build.read_jsonl(corpus / "retrieval/items_test.jsonl"):
        assert len(shipped(f"{item['prompt']} {item['answer']}").input_ids) <= item["length"]


def test_a_stale_or_mismatched_corpus_is_refused(run, tmp_path):
    manifest = json.loads((run.parent.parent / "work" / "corpus" / "manifest.json").read_text())
    assert manifest["generator"] == build.generator_hash()
    for change, message in ((("generator", "old"), "other corpus code"), (("seed", 7), "seed 7")):
        stale = {**manifest, "config": dict(manifest["config"])}
        if change[0] == "seed":
            stale["config"]["seed"] = change[1]
        else:
            stale["generator"] = change[1]
        (tmp_path / "manifest.json").write_text(json.dumps(stale))
        with pytest.raises(SystemExit, match=message):
            train_demo_model.prepare_data(tmp_path, train_demo_model.TINY)


def test_massive_summary_names_layers_that_pass_sun_criterion():
    def row(step, layer, top, median, dim=7):
        return {"step": step, "tokens_seen": step * 10, "layer": layer, "top1_pooled": top, "top_position": 0,
                "top_dim": dim, "median_pooled": median, "ratio_pooled": top / median, "top_token": "<s>"}

    rows = [row(0, 0, 1.0, 0.5, dim=3), row(0, 1, 1.0, 0.5), row(64, 0, 5.0, 0.001), row(64, 1, 300.0, 0.1)]
    text = write_model_card.massive_summary(rows)
    assert "massive activations appear, in layers 1." in text  # 300 > 100 and 3000x the median
    assert "they appear in layers 0, 1." in text  # layer 0: 5000x the median, but only 5 in absolute terms
    assert "In layer 0 the top activation has sat in dimension 7 since step 64" in text  # dim 3 at step 0
