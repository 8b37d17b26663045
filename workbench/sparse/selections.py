"""What a sparse-attention session saw: one row per selection, plus totals of attended and allowed pairs.

A row is one (phase, step, layer, head, query block): the key positions kept (indices, ascending), their
scores where the method ranks them, the attended fraction (kept / allowed query-key pairs of that block)
and the recall (share of the dense attention mass on the kept keys, when the session measures it). head
is -1 when one selection serves every head (DELTA); sequence is the row of the batch. A stored inspection
keeps these rows as its `selections`.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd
import torch

from workbench.sparse.dense import AttentionCall, dense_probs, recall_of

COLUMNS = ["phase", "step", "layer", "sequence", "head", "query_block", "indices", "scores", "attended_fraction", "recall"]


class SelectionLog:
    """Rows of selections and running totals per phase; `recall=True` also measures recall."""

    def __init__(self, recall: bool = False):
        self.recall = recall
        self.rows: list[dict] = []
        self.kept = defaultdict(float)  # phase -> kept query-key pairs (summed over heads)
        self.allowed = defaultdict(float)
        self.recall_sum = defaultdict(float)  # phase -> summed recall of query rows
        self.recall_rows = defaultdict(int)

    def account(self, call: AttentionCall, keep: torch.Tensor) -> torch.Tensor | None:
        """Add a call's kept/allowed pair counts; return the recall per query row [B, Hq, T] when measured."""
        keep = (keep & call.allowed).expand_as(call.scores)
        self.kept[call.phase] += float(keep.sum())
        self.allowed[call.phase] += float(call.allowed.expand_as(call.scores).sum())
        if not self.recall:
            return None
        recall = recall_of(dense_probs(call), keep)  # [B, Hq, T]
        real = call.allowed.any(-1).expand_as(recall)  # rows of padding tokens see nothing: not counted
        self.recall_sum[call.phase] += float(recall[real].sum())
        self.recall_rows[call.phase] += int(real.sum())
        return recall

    def add(self, call: AttentionCall, *, sequence: int, head: int, query_block: int, indices, scores=None,
            attended_fraction: float, recall: float | None) -> None:
        self.rows.append({
            "phase": call.phase, "step": call.step, "layer": call.layer, "sequence": sequence, "head": head,
            "query_block": query_block,
            "indices": _as_list(indices, int), "scores": None if scores is None else _as_list(scores, float),
            "attended_fraction": float(attended_fraction), "recall": None if recall is None else float(recall),
        })

    def frame(self) -> pd.DataFrame:
        """All rows, one per selection, in the columns `COLUMNS`."""
        return pd.DataFrame(self.rows, columns=COLUMNS)

    def attended_fraction(self, phase: str | None = None) -> float:
        """Kept / allowed query-key pairs over the session (or one phase); 1.0 for dense attention."""
        phases = [phase] if phase else list(self.allowed)
        allowed = sum(self.allowed[p] for p in phases)
        return sum(self.kept[p] for p in phases) / allowed if allowed else float("nan")

    def mean_recall(self, phase: str | None = None) -> float:
        phases = [phase] if phase else list(self.recall_rows)
        rows = sum(self.recall_rows[p] for p in phases)
        return sum(self.recall_sum[p] for p in phases) / rows if rows else float("nan")


def _as_list(x, kind) -> list:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return [kind(v) for v in np.asarray(x).ravel()]


def block_fraction(keep: torch.Tensor, allowed: torch.Tensor) -> float:
    """Kept / allowed pairs of one block of rows (keep and allowed broadcastable to each other)."""
    keep = keep & allowed
    total = float(allowed.expand_as(keep).sum())
    return float(keep.sum()) / total if total else float("nan")


def selection_matrix(frame: pd.DataFrame, layer: int, *, by: str = "step", head: int = -1, sequence: int = 0,
                     phase: str | None = None) -> pd.DataFrame:
    """The picture data of one layer: rows `by` (step for DELTA's token x step matrix, query_block for
    AnchorAttention's stripe mask per region or DeltaLLM's delta mask over time), columns key positions,
    values the logged scores (1 where a selection has none), 0 where a key was not selected."""
    rows = frame[(frame.layer == layer) & (frame["head"] == head) & (frame["sequence"] == sequence)]
    if phase:
        rows = rows[rows.phase == phase]
    if rows.empty:
        raise ValueError(f"no selections logged for layer {layer}, head {head}, sequence {sequence}")
    cells = []
    for r in rows.itertuples(index=False):
        scores = r.scores if isinstance(r.scores, (list, tuple, np.ndarray)) else [1.0] * len(r.indices)
        cells += [(getattr(r, by), int(key), float(score)) for key, score in zip(r.indices, scores)]
    cells = pd.DataFrame(cells, columns=[by, "key", "value"])
    return cells.pivot_table(index=by, columns="key", values="value", aggfunc="max", fill_value=0.0)


# What each method's picture is: (rows of the matrix, phase drawn, whether selections are per query head).
PICTURES = {
    "delta": ("step", "decode", False),  # token x decode step: what the sparse layers attend to
    "anchor": ("query_block", "prefill", True),  # region x key: the stripes kept for each query region
    "deltallm": ("query_block", None, False),  # query position x key: the recomputed (delta) scores over time
}


def method_picture(frame: pd.DataFrame, method: str, layer: int, *, sequence: int = 0,
                   head: int = 0) -> pd.DataFrame:
    """`selection_matrix` as each method is drawn (`PICTURES`), over every key position up to the last
    one selected."""
    if method not in PICTURES:
        raise ValueError(f"{method!r} logs no selections to draw; expected one of {', '.join(PICTURES)}")
    by, phase, per_head = PICTURES[method]
    matrix = selection_matrix(frame, layer, by=by, head=head if per_head else -1, sequence=sequence,
                              phase=phase)
    return matrix.reindex(columns=range(int(matrix.columns.max()) + 1), fill_value=0.0)


def recall_by_layer(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean attended fraction and recall of each layer and phase over a session's rows."""
    return (frame.groupby(["layer", "phase"], as_index=False)
            .agg(attended_fraction=("attended_fraction", "mean"), recall=("recall", "mean"),
                 rows=("step", "size")))
