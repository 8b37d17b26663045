"""DeltaLLM (Qi, Gao, Ren, Chen 2025, arXiv 2507.19608: temporal sparsity for edge inference), emulated.

What is delta-coded here: the attention scores along time. For each head and key, a reference score
holds the last value that was computed; each new query (token) recomputes the score of a key outside the
local window only when it differs from the reference by at least the threshold — otherwise the delta is
treated as zero and the reference (the earlier token's result) is reused, so the delta matrix is sparse.
Keys inside the local window of the last `window` positions are always computed (the context-aware
hybrid). The reference is updated, delta-network style, only where a score was recomputed, so the error
of any score stays below the threshold. The same rule runs in prefill (query by query) and decode (the
reference scores carry over between steps, per layer). The softmax runs over every key with the scores
so obtained; attended fraction counts the recomputed scores, recall the dense mass on them.
Departures and uncertainty: we could not read the paper's method section through our tools, so the
construction follows ALGORITHMS.md's description (previous token's result plus a sparse correction
outside a full local window); the paper sets its threshold for accuracy and memory targets, which we
offer as `budget` — per query, the threshold becomes the k-th largest out-of-window |delta| with k
that share of the out-of-window keys (ties at the threshold are all recomputed) — besides a fixed
`threshold`. The window of
64 is our choice.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from workbench.errors import WorkbenchError
from workbench.sparse.dense import MASKED, AttentionCall, attend

LOG_BLOCK = 32  # query rows per logged row of the delta mask in prefill


@dataclass(frozen=True)
class DeltaLLMConfig:
    """Give either budget (share of out-of-window scores recomputed per query; 0.5 when neither is given)
    or threshold (logit units)."""

    window: int = 64
    budget: float | None = None
    threshold: float | None = None
    name = "deltallm"
    carries = "steps"  # the reference scores of one step serve the next

    def __post_init__(self):
        if self.budget is None and self.threshold is None:
            object.__setattr__(self, "budget", 0.5)
        if self.budget is not None and self.threshold is not None:
            raise WorkbenchError("DeltaLLM takes either a budget (share recomputed) or a threshold, not both")
        if self.window < 1:
            raise WorkbenchError(f"DeltaLLM window must be >= 1 (the newest token is always computed), got {self.window}")
        if self.budget is not None and not 0 <= self.budget <= 1:
            raise WorkbenchError(f"DeltaLLM budget must be in [0, 1], got {self.budget}")
        if self.threshold is not None and self.threshold < 0:
            raise WorkbenchError(f"DeltaLLM threshold must be >= 0, got {self.threshold}")

    def to_dict(self) -> dict:
        return {"method": self.name, **asdict(self)}

    def fire(self, delta: torch.Tensor, outside: torch.Tensor) -> torch.Tensor:
        """Which out-of-window scores are recomputed: delta [B, H, N] fp32, outside [B, H, N] bool."""
        size = delta.abs().masked_fill(~outside, -1.0)
        if self.threshold is not None:
            return outside & (size >= self.threshold)
        k = math.ceil(self.budget * int(outside.sum(-1).max()))
        if k == 0:
            return torch.zeros_like(outside)
        threshold = size.topk(k, dim=-1).values[..., -1:]  # the k-th largest |delta| of each row
        return outside & (size >= threshold)

    def apply(self, call: AttentionCall, session) -> torch.Tensor:
        b, hq, t, n = call.scores.shape
        key = ("deltallm", call.layer)
        reference = session.state.get(key) if n > t else None
        if reference is None:
            reference = torch.zeros(b, hq, n, device=call.scores.device)
        else:  # keys new in this call start uncomputed; each is inside the window when first seen
            reference = torch.nn.functional.pad(reference, (0, n - reference.shape[-1]))
        used = torch.empty_like(call.scores)
        fresh = torch.zeros_like(call.allowed.expand_as(call.scores))
        cols = torch.arange(n, device=call.scores.device)
        for i in range(t):
            position = n - t + i
            scores, allowed = call.scores[:, :, i], call.allowed[:, :, i].expand(b, hq, n)  # [B, Hq, N]
            window = (cols <= position) & (cols > position - self.window)
            fired = self.fire(scores - reference, allowed & ~window)
            fresh[:, :, i] = allowed & (window | fired)
            reference = torch.where(fresh[:, :, i], scores, reference)
            used[:, :, i] = torch.where(allowed, reference, MASKED)
        session.state[key] = reference
        recall = session.log.account(call, fresh)
        self._log(call, session, fresh, recall)
        return attend(used, None, call.value)

    def _log(self, call, session, fresh, recall) -> None:
        """Per block of queries: the keys outside every row's window recomputed by any head, with the
        share of (query, head) pairs that recomputed each — the delta mask over time; attended_fraction
        here is the share of those out-of-window scores recomputed."""
        b, hq, t, n = fresh.shape
        block = LOG_BLOCK if call.phase == "prefill" else 1
        for start in range(0, t, block):
            rows = slice(start, min(t, start + block))
            first = n - t + start
            # keys before first - window + 1 are outside the window of every row of the block
            edge = max(0, first - self.window + 1)
            part = fresh[:, :, rows, :edge]  # [B, Hq, rows, edge]
            share = part.float().mean((1, 2))  # [B, edge]
            allowed = call.allowed[:, 0, rows, :edge].sum((1, 2)).float() * hq  # [B]
            fired = part.sum((1, 2, 3)).float()
            for i in range(b):
                keys = share[i].nonzero().flatten()
                session.log.add(call, sequence=i, head=-1, query_block=first, indices=keys, scores=share[i, keys],
                                attended_fraction=float(fired[i] / allowed[i]) if allowed[i] else 1.0,
                                recall=None if recall is None else float(recall[i, :, rows].mean()))
