"""The shipped DeltaNet hybrid: it loads, its files match its card, it retrieves, its memory views are exact on
its trained weights, and the workbench's commands (record, memory, directions, steering) work on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import workbench as wb
from workbench import demo_model as dm
from workbench.config import MemoryConfig
from workbench.corpus.build import heldout_items
from workbench.deltanet.inspection import delta_layers, inspect_prompt
from workbench.models import bundled_models
from workbench.paths import DATA_DIR
from workbench.prompts import load_prompts
from workbench.steering.concepts import concept_set_path, load_concept_set
from workbench.steering.directions import compute_directions, stored_directions
from workbench.steering.evaluation import best_setting, sweep

pytestmark = [pytest.mark.skipif("demo-hybrid" not in bundled_models(), reason="demo-hybrid is not on disk"),
              pytest.mark.filterwarnings("ignore:workbench_kernels.chunk_delta_rule")]
HYBRID = bundled_models().get("demo-hybrid")
WORKBENCH = [str(Path(sys.executable).parent / "workbench")]
KV_PROMPT = ("Remember the value of each key.\nkey 4821 : value 7735\nkey 1093 : value 5512\nkey 6620 : value 3154\n"
             "Question: what is the value of key 1093? Answer:")


@pytest.fixture(scope="module")
def hybrid():
    return wb.load_model("demo-hybrid")


@pytest.fixture(scope="module")
def metrics():
    return json.loads((HYBRID / "metrics.json").read_text())


def test_files_match_the_card_and_the_layers_are_what_it_says(hybrid, metrics):
    arch, card = metrics["model"], (HYBRID / "README.md").read_text()
    assert hybrid.model_type == "delta_net" and hybrid.config.softmax_layers == arch["softmax_layers"] == [1, 6]
    assert delta_layers(hybrid) == [0, 2, 3, 4, 5, 7]
    assert sum(p.numel() for p in hybrid.hf.parameters()) == arch["parameters"]
    assert len(hybrid.tokenizer) == arch["vocab_size"]
    assert "## Side by side with the demo model" in card
    accuracy = metrics["retrieval"]["by_length"]["1024"]["accuracy"]
    assert f"| retrieval accuracy, 1024 tokens | {100 * accuracy:.1f}% |" in card
    sys.path.insert(0, str(HYBRID.parents[2] / "analyses"))
    import write_model_card

    demo = (json.loads((HYBRID.parent / "demo" / "metrics.json").read_text()), "demo")
    massive = write_model_card.read_massive(HYBRID / "massive_by_checkpoint.csv")
    assert write_model_card.render(metrics, massive, demo) == card  # the card is the script's, unedited


def test_retrieval_at_1024_tokens_measures_what_the_readme_and_the_card_say(hybrid, metrics):
    """The card's 120 held-out test items at 1024 tokens, measured on the CPU reference of the rule: 95%."""
    items = heldout_items("test", 1024)
    measured = dm.retrieval_accuracy(hybrid.hf, hybrid.tokenizer, items)
    assert measured >= 0.95
    assert measured == pytest.approx(metrics["retrieval"]["by_length"]["1024"]["accuracy"], abs=1 / 120)


def test_memory_views_are_exact_on_the_trained_weights(hybrid):
    tokens, views = inspect_prompt(hybrid, KV_PROMPT, MemoryConfig(layers=(0, 5)))
    for layer, view in views.items():
        rebuilt = torch.einsum("htj,jhv->thv", view.effective_attention, view.v[0])
        assert torch.allclose(rebuilt, view.output[0], atol=1e-4, rtol=1e-3), layer
        assert torch.allclose(view.trajectory["readout"][0] * view.k.shape[-1] ** -0.5, view.output[0], atol=1e-4)
        assert view.survival.max() <= 1 + 1e-5
    assert len(tokens) == views[0].q.shape[1]


def test_record_and_memory_commands_run_on_demo_hybrid(tmp_path):
    db = tmp_path / "hybrid.duckdb"
    record = subprocess.run(WORKBENCH + ["record", "--model", "demo-hybrid", "--prompt", KV_PROMPT, "--attention",
                                         "--db", str(db), "--json"], capture_output=True, text=True)
    assert record.returncode == 0, record.stderr
    run = json.loads(record.stdout)["run_id"]
    maps = wb.Store(db).read_tensors(run, "attention")
    assert sorted(maps.layer.unique()) == list(range(8))  # softmax maps and DeltaNet effective attention
    assert (maps[maps.layer == 1].weight >= 0).all() and (maps[maps.layer == 0].weight < 0).any()
    inspected = subprocess.run(WORKBENCH + ["memory", "--model", "demo-hybrid", "--prompt", KV_PROMPT, "--db", str(db),
                                            "--json"], capture_output=True, text=True)
    assert inspected.returncode == 0, inspected.stderr
    assert [row["layer"] for row in json.loads(inspected.stdout)["layers"]] == [0, 2, 3, 4, 5, 7]


def test_sentiment_direction_separates_held_out_sentences(hybrid):
    table, _, _ = compute_directions(hybrid, load_concept_set(concept_set_path("sentiment")))
    best = table.loc[table.auroc.idxmax()]
    assert best.auroc >= 0.95 and best.accuracy >= 0.95


def test_steering_turns_negative_story_starts_positive_within_twice_the_perplexity(hybrid, tmp_path):
    store = wb.Store(tmp_path / "steer.duckdb")
    _, _, direction = compute_directions(hybrid, load_concept_set(concept_set_path("sentiment_pairs")), store,
                                         position="mean")
    vectors = {1: stored_directions(store, direction)[1]}
    prompts = load_prompts(DATA_DIR / "prompts" / "steering_negative.txt")[:24]
    neutral = load_prompts(DATA_DIR / "prompts" / "neutral.txt")[:8]
    table = sweep(hybrid, vectors, prompts, [0.0, 8.0], neutral, store, direction_id=direction)
    assert (table[table.alpha == 0].success_rate == 0).all()
    best = best_setting(table)
    assert best is not None and best["success_rate"] >= 0.8 and best["perplexity_ratio"] < 2.0, table


def test_tokens_are_labelled_as_text_not_as_byte_level_pieces(hybrid):
    """The demo's byte-level BPE calls ' cat' 'Ġcat' and a newline 'Ċ' inside: the memory page, the lens and the
    patching grids show what a reader sees, as the recordings store it."""
    from workbench.deltanet.inspection import layer_views
    from workbench.lens.logit_lens import logit_lens

    text = "the cat sat\nhere"
    internal = hybrid.tokenizer.convert_ids_to_tokens(hybrid.tokenizer(text)["input_ids"])
    assert "Ġcat" in internal and "Ċ" in internal
    shown = layer_views(hybrid, text, delta_layers(hybrid)[0])["tokens"]
    assert " cat" in shown and "\n" in shown and not any("Ġ" in t or "Ċ" in t for t in shown)
    assert logit_lens(hybrid, text, layers=[0]).sort_values("position").token.tolist() == shown
