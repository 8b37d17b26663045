"""Concept ("delta") directions per layer: difference of means or PCA of paired differences, with their quality.

A direction at layer L lives in the output of block L (blocks.L.hook_resid_post),
the same place steering adds it. Quality is measured on held-out examples: AUROC
of the projection onto the unit direction, and accuracy at the threshold that best
separates the training projections; plus the direction's norm relative to the
typical residual norm at that layer, and the projections themselves (histograms).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from workbench.config import RecordConfig
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.progress import ProgressArg, tracked
from workbench.recording import capture
from workbench.steering.concepts import ConceptSet, Example
from workbench.store import Store

METHODS = ("diff_means", "pca_pairs")
POSITIONS = ("last", "mean", "mark")
BATCH_SIZE = 16  # examples per forward


def _position(model: LoadedModel, example: Example, ids: list[int]) -> int:
    """The token index a 'mark' reads: the last token overlapping the first occurrence of the marked text."""
    if not example.mark or example.mark not in example.text:
        raise WorkbenchError(f"position 'mark' needs a 'mark' substring of each text; {example.text[:60]!r} has none")
    end = example.text.index(example.mark) + len(example.mark)
    offsets = model.tokenizer(example.text, return_offsets_mapping=True)["offset_mapping"]
    return max(i for i, (start, _) in enumerate(offsets) if start < end and i < len(ids))


def residuals(model: LoadedModel, examples: list[Example], layers: list[int], position: str,
              batch_size: int = BATCH_SIZE, on_batch=lambda: None) -> torch.Tensor:
    """Block outputs at the chosen position of each example, as float32 [N, L, D] on the CPU; `on_batch()` is
    called after each batch."""
    if position not in POSITIONS:
        raise WorkbenchError(f"position must be one of {POSITIONS}, got {position!r}")
    out = []
    for start in range(0, len(examples), batch_size):
        batch = examples[start:start + batch_size]
        ids = [model.tokenizer(e.text)["input_ids"] for e in batch]
        width = max(map(len, ids))
        input_ids = torch.full((len(ids), width), model.tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, tokens in enumerate(ids):
            input_ids[row, :len(tokens)], mask[row, :len(tokens)] = torch.tensor(tokens), 1
        hidden = capture(model, input_ids.to(model.device), mask.to(model.device), layers, RecordConfig())
        stacked = torch.stack(hidden["resid_post"], dim=1).float()  # [B, L, T, D]
        for row, example in enumerate(batch):
            n = len(ids[row])
            if position == "mean":
                out.append(stacked[row, :, :n].mean(dim=1))
            else:
                at = n - 1 if position == "last" else _position(model, example, ids[row])
                out.append(stacked[row, :, at])
        on_batch()
    return torch.stack(out).cpu()  # [N, L, D]


def direction_vectors(acts: torch.Tensor, examples: list[Example], positive: str, method: str) -> torch.Tensor:
    """[L, D] directions from positive to negative examples' activations `acts` [N, L, D].

    'pca_pairs' takes the first right-singular vector of the paired differences (uncentred, so the
    mean difference counts, unlike a centred PCA), sign-aligned with and scaled to the projection of
    the mean difference: the same length scale as 'diff_means'.
    """
    labels = np.array([e.label == positive for e in examples])
    mean_diff = acts[labels].mean(0) - acts[~labels].mean(0)  # [L, D]
    if method == "diff_means":
        return mean_diff
    if method != "pca_pairs":
        raise WorkbenchError(f"method must be one of {METHODS}, got {method!r}")
    pairs = {}
    for i, e in enumerate(examples):
        if e.pair is None:
            raise WorkbenchError("'pca_pairs' needs a paired concept set (each line a pair of texts)")
        pairs.setdefault(e.pair, {})[e.label == positive] = i
    complete = [(p[True], p[False]) for p in pairs.values() if len(p) == 2]
    diffs = acts[[a for a, _ in complete]] - acts[[b for _, b in complete]]  # [P, L, D]
    _, _, vh = torch.linalg.svd(diffs.transpose(0, 1), full_matrices=False)  # per layer
    first = vh[:, 0]  # [L, D] unit vectors
    along = (mean_diff * first).sum(-1, keepdim=True)
    return first * along  # sign and length of the mean difference along the component


def auroc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """Probability that a positive example projects higher than a negative one (ties count half)."""
    diff = positive_scores[:, None] - negative_scores[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def best_threshold(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """The threshold between two training projections that classifies the most of them right (positive above):
    the `best` rule, which the directions' `accuracy` uses."""
    values = np.sort(np.concatenate([positive_scores, negative_scores]))
    candidates = np.concatenate([[values[0] - 1], (values[1:] + values[:-1]) / 2, [values[-1] + 1]])
    correct = [(positive_scores > t).sum() + (negative_scores <= t).sum() for t in candidates]
    return float(candidates[int(np.argmax(correct))])


def midpoint_threshold(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """Halfway between the two classes' mean training projections: the `midpoint` rule, which the demo model's
    card uses for its separability."""
    return float((np.mean(positive_scores) + np.mean(negative_scores)) / 2)


def heldout_accuracy(positive_scores: np.ndarray, negative_scores: np.ndarray, threshold: float) -> float:
    """Share of held-out projections on the right side of `threshold` (positive above)."""
    right = (positive_scores > threshold).sum() + (negative_scores <= threshold).sum()
    return float(right / (len(positive_scores) + len(negative_scores)))


def compute_directions(model: LoadedModel, concepts: ConceptSet, store: Store | None = None,
                       layers: list[int] | None = None, method: str = "diff_means", position: str = "last",
                       normalize: bool = False, progress: ProgressArg = False
                       ) -> tuple[pd.DataFrame, pd.DataFrame, int | None]:
    """Directions and their quality at each layer; with `store`, saved as a `direction` analysis.

    Returns (directions table, projections table, analysis id or None).
    """
    layers = [model.check_layer(layer) for layer in (layers or range(model.n_layers))]
    batches = sum(-(-len(split) // BATCH_SIZE) for split in (concepts.train, concepts.test))
    with tracked(progress, batches, f"{concepts.name} directions", "batch") as step:
        train_acts = residuals(model, concepts.train, layers, position, on_batch=step)
        test_acts = residuals(model, concepts.test, layers, position, on_batch=step)
    vectors = direction_vectors(train_acts, concepts.train, concepts.positive, method)  # [L, D]
    norms = vectors.norm(dim=-1)
    if (norms == 0).any():
        raise WorkbenchError("a direction came out zero: the two sets give identical activations")
    units = vectors / norms[:, None]
    typical = train_acts.norm(dim=-1).mean(0)  # [L]
    rows, projections = [], []
    for split, acts, examples in (("train", train_acts, concepts.train), ("test", test_acts, concepts.test)):
        scores = torch.einsum("nld,ld->nl", acts, units).numpy()  # [N, L]
        for i, example in enumerate(examples):
            projections += [{"layer": layer, "split": split, "example_id": i, "label": example.label,
                             "projection": float(scores[i, j])} for j, layer in enumerate(layers)]
    table = pd.DataFrame(projections)
    for j, layer in enumerate(layers):
        at = table[table.layer == layer]
        score = {s: {lab: at[(at.split == s) & (at.label == lab)].projection.to_numpy()
                     for lab in (concepts.positive, concepts.negative)} for s in ("train", "test")}
        threshold = best_threshold(score["train"][concepts.positive], score["train"][concepts.negative])
        test_pos, test_neg = score["test"][concepts.positive], score["test"][concepts.negative]
        vector = units[j] if normalize else vectors[j]
        rows.append({
            "layer": layer, "method": method, "position": position, "vector": vector.tolist(),
            "norm": float(vector.norm()), "relative_norm": float(norms[j] / typical[j]),
            "auroc": auroc(test_pos, test_neg), "threshold": threshold,
            "accuracy": heldout_accuracy(test_pos, test_neg, threshold),
            "n_train": len(concepts.train), "n_heldout": len(concepts.test),
        })
    directions = pd.DataFrame(rows)
    analysis_id = None
    if store is not None:
        best = directions.loc[directions.auroc.idxmax()]
        analysis_id = store.save_analysis(
            "direction", {"concept": concepts.name, "positive": concepts.positive, "negative": concepts.negative,
                          "method": method, "position": position, "normalize": normalize, "layers": layers,
                          "revision": model.revision, "d_model": model.d_model},
            {"directions": directions, "projections": table}, model=model.spec,
            summary={"best_layer": int(best.layer), "best_auroc": float(best.auroc),
                     "best_accuracy": float(best.accuracy)})
    return directions, table, analysis_id


def stored_directions(store: Store, analysis_id: int) -> dict[int, np.ndarray]:
    """The vectors of a stored direction analysis, by layer."""
    vectors = store.direction_vectors(analysis_id)
    if not vectors:
        raise WorkbenchError(f"analysis {analysis_id} holds no directions")
    return vectors


def cosine_matrix(vectors: dict[int, np.ndarray]) -> pd.DataFrame:
    """Cosine similarity between the directions of every pair of layers."""
    layers = sorted(vectors)
    stacked = np.stack([vectors[layer] / np.linalg.norm(vectors[layer]) for layer in layers])
    return pd.DataFrame(stacked @ stacked.T, index=layers, columns=layers)
