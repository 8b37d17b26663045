"""On the demo model: the sentiment direction separates held-out sentences, and steering with it turns
continuations of negative held-out story starts positive at a modest fluency cost."""

import numpy as np
import pytest

import workbench as wb
from workbench.models import bundled_models
from workbench.paths import DATA_DIR
from workbench.prompts import load_prompts
from workbench.steering.concepts import concept_set_path, load_concept_set
from workbench.steering.directions import compute_directions, stored_directions
from workbench.steering.evaluation import best_setting, geometric_mean, sweep

pytestmark = pytest.mark.skipif("demo" not in bundled_models(), reason="the demo model is not on disk")



def test_sentiment_direction_separates_held_out_sentences(demo):
    table, _, _ = compute_directions(demo, load_concept_set(concept_set_path("sentiment")))
    best = table.loc[table.auroc.idxmax()]
    assert best.auroc >= 0.95 and best.accuracy >= 0.95
    assert table.auroc.iloc[0] < 0.7  # the embedding layer knows words, not yet the sentence's sentiment


def test_steering_turns_negative_story_starts_positive_within_twice_the_perplexity(demo, tmp_path):
    store = wb.Store(tmp_path / "steer.duckdb")
    concepts = load_concept_set(concept_set_path("sentiment_pairs"))
    _, _, direction = compute_directions(demo, concepts, store, position="mean")
    vectors = {layer: v for layer, v in stored_directions(store, direction).items() if layer in (0, 1)}
    prompts = load_prompts(DATA_DIR / "prompts" / "steering_negative.txt")[:24]
    neutral = load_prompts(DATA_DIR / "prompts" / "neutral.txt")[:8]
    table = sweep(demo, vectors, prompts, [0.0, 6.0, 8.0], neutral, store, direction_id=direction)
    assert (table[table.alpha == 0].success_rate == 0).all()  # alpha 0 changes nothing
    best = best_setting(table)
    assert best is not None and best["success_rate"] >= 0.8 and best["perplexity_ratio"] < 2.0, table
    trials = store.steering_trials(int(store.analyses("steering-sweep").analysis_id.iloc[0]))
    base = trials[~trials.steered].perplexity
    for row in table.itertuples():  # each trial's own perplexity is stored, and the sweep's ratio is made of them
        steered = trials[trials.steered & (trials.layers == str(row.layer)) & (trials.alpha == row.alpha)].perplexity
        assert len(steered) == len(prompts) and np.isfinite(steered).all()
        assert row.perplexity_ratio == pytest.approx(geometric_mean(steered) / geometric_mean(base), rel=1e-4)
