"""Concept sets are validated; directions, their separation and their storage are computed right."""

import json

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.errors import WorkbenchError
from workbench.steering.concepts import Example, load_concept_set
from workbench.steering.directions import (auroc, best_threshold, compute_directions, cosine_matrix,
                                           direction_vectors, residuals, stored_directions)


def _write(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def concept_file(tmp_path):
    rows = [{"text": f"case {i}: it was {w}", "label": lab} for i in range(6)
            for w, lab in (("nice", "positive"), ("awful", "negative"))]
    return _write(tmp_path / "mood.jsonl", rows)


@pytest.mark.parametrize("rows, message", [
    ([], "is empty"),
    ([{"text": "a", "label": "x"}] * 4, "exactly two labels"),
    ([{"text": "", "label": "x"}], "has no text"),
    ([{"text": "a"}], "has no 'label'"),
    ([{"a": "x", "b": "y", "c": "z"}], "neither labelled"),
    ([{"text": "a", "label": "x", "split": "dev"}], "split 'dev'"),
    ([{"text": "a", "label": "x"}, {"text": "b", "label": "y"}], "fewer than 2"),
])
def test_bad_concept_sets(tmp_path, rows, message):
    with pytest.raises(WorkbenchError, match=message):
        load_concept_set(_write(tmp_path / "bad.jsonl", rows))


def test_corrupt_and_missing_files(tmp_path):
    (tmp_path / "broken.jsonl").write_text('{"text": "a", "label": \n')
    with pytest.raises(WorkbenchError, match="broken.jsonl:1 is not valid JSON"):
        load_concept_set(tmp_path / "broken.jsonl")
    with pytest.raises(WorkbenchError, match="does not exist"):
        load_concept_set(tmp_path / "nope.jsonl")


def test_paired_sets_keep_pairs_together(tmp_path):
    rows = [{"positive": f"good {i}", "negative": f"bad {i}"} for i in range(8)]
    concepts = load_concept_set(_write(tmp_path / "pairs.jsonl", rows))
    assert concepts.paired and (concepts.positive, concepts.negative) == ("positive", "negative")
    train_pairs, test_pairs = {e.pair for e in concepts.train}, {e.pair for e in concepts.test}
    assert not train_pairs & test_pairs and len(test_pairs) == 2


def test_pca_of_pairs_finds_a_planted_direction():
    torch.manual_seed(0)
    planted = torch.nn.functional.normalize(torch.randn(16), dim=0)
    examples, acts = [], []
    for i in range(20):
        base = torch.randn(16)
        acts += [base + 3 * planted + 0.05 * torch.randn(16), base]
        examples += [Example("p", "positive", i), Example("n", "negative", i)]
    vectors = direction_vectors(torch.stack(acts)[:, None], examples, "positive", "pca_pairs")
    assert torch.nn.functional.cosine_similarity(vectors[0], planted, dim=0) > 0.99
    assert vectors[0].norm() == pytest.approx(3.0, rel=0.05)


def test_auroc_and_threshold_against_brute_force():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 30), rng.normal(0, 1, 40)
    assert auroc(pos, neg) == pytest.approx(np.mean([[p > n for n in neg] for p in pos]))
    t = best_threshold(pos, neg)
    best = max((pos > c).sum() + (neg <= c).sum() for c in np.concatenate([pos, neg, [-1e9]]))
    assert (pos > t).sum() + (neg <= t).sum() == best


def test_directions_equal_the_mean_difference_of_recorded_vectors(tiny_dir, concept_file, db_path):
    model = wb.load_model(str(tiny_dir("qwen2")))
    concepts = load_concept_set(concept_file)
    table, projections, analysis_id = compute_directions(model, concepts, wb.Store(db_path), method="diff_means")
    acts = residuals(model, concepts.train, list(range(model.n_layers)), "last")
    labels = np.array([e.label == "positive" for e in concepts.train])
    expected = acts[labels].mean(0) - acts[~labels].mean(0)
    vectors = stored_directions(wb.Store(db_path), analysis_id)
    for layer in range(model.n_layers):
        np.testing.assert_allclose(vectors[layer], expected[layer].numpy(), rtol=1e-5, atol=1e-6)
    assert table.auroc.max() == 1.0  # the last tokens differ: "e" against "l"
    assert set(projections.split) == {"train", "test"}
    cos = cosine_matrix(vectors)
    np.testing.assert_allclose(np.diag(cos.to_numpy()), 1.0, rtol=1e-6)
    summary = wb.Store(db_path).analysis(analysis_id)["summary"]
    assert summary["best_auroc"] == 1.0


def test_mean_and_marked_positions(tiny_dir):
    model = wb.load_model(str(tiny_dir("llama")))

    def last(text):
        return residuals(model, [Example(text, "x")], [0], "last")

    marked = residuals(model, [Example("the cat sat", "x", mark="cat")], [0], "mark")
    torch.testing.assert_close(marked, last("the cat"))  # causal: the state at "t" of "cat" ignores " sat"
    mean = residuals(model, [Example("ab", "x")], [0], "mean")
    torch.testing.assert_close(mean, (last("") + last("a") + last("ab")) / 3)  # BOS, "a", "b"
    with pytest.raises(WorkbenchError, match="needs a 'mark'"):
        residuals(model, [Example("no mark here", "x")], [0], "mark")
