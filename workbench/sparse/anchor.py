"""AnchorAttention (difference-aware sparse attention with stripe granularity, 2025), emulated in prefill.

Follows the paper and our kernels (workbench_kernels.stripe_prefill, whose naive.py helpers this reuses): queries
fall in regions of block_size * step tokens; (1) each query's anchor is its largest scaled score over the
anchor region — the first `init_blocks` regions and the local window up to its own region, causally;
(2) queries and anchors are averaged over sub-blocks of block_size, and a candidate key (between the
initial and the local region) becomes a stripe of region r when some sub-block of r scores it within
theta of its averaged anchor; (3) each query attends to its anchor region plus its region's stripes.
The defaults are the paper's (theta 12, block 128, step 16 — regions of 2048 tokens); `for_length`
scales the region to short contexts, where 2048-token regions would leave nothing to select.
Departures: `budget` caps the stripes of a region at that share of its candidates, keeping the ones
closest to the anchor (largest margin, ties to the earlier key) — a knob for accuracy–sparsity curves
that the paper does not have (budget 1 is the paper's rule). AnchorAttention is a prefill method: a
prefill over a cache and single-token decode steps run dense attention. Left padding is not accounted
for in the region layout (regions count from the first column).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from workbench.errors import WorkbenchError
from workbench.sparse.dense import AttentionCall, attend
from workbench.sparse.selections import block_fraction
from workbench_kernels.stripe_prefill import naive


@dataclass(frozen=True)
class AnchorConfig:
    """AnchorAttention's settings (theta in units of the scaled logits)."""

    theta: float = 12.0
    block_size: int = 128
    step: int = 16
    init_blocks: int = 1
    local_blocks: int = 1
    budget: float = 1.0
    name = "anchor"

    def __post_init__(self):
        if self.block_size < 1 or self.step < 1 or self.init_blocks < 1 or self.local_blocks < 1:
            raise WorkbenchError("AnchorAttention block_size, step, init_blocks and local_blocks must be >= 1")
        if not 0 < self.budget <= 1 or self.theta < 0:
            raise WorkbenchError(f"AnchorAttention budget must be in (0, 1] and theta >= 0, got "
                                 f"{self.budget}, {self.theta}")

    @classmethod
    def for_length(cls, length: int, **settings) -> AnchorConfig:
        """Regions of about length/16 tokens (a power of two, at least 16) in sub-blocks of 16 queries."""
        region = max(16, 2 ** round(math.log2(max(length, 16) / 16)))
        return cls(block_size=16, step=region // 16, **settings)

    @property
    def region(self) -> int:
        return self.block_size * self.step

    def to_dict(self) -> dict:
        return {"method": self.name, **asdict(self)}

    def margins(self, query: torch.Tensor, key: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(margin [B, Hq, NR, T]: best sub-block score minus its anchor, per region and key; candidate [NR, T])."""
        b, hq, t, _ = query.shape
        shape = (self.block_size, self.step, self.init_blocks, self.local_blocks)
        _, candidate = naive.regions(t, *shape, device=query.device)
        q_mean, a_mean = naive.compress(query, naive.anchors(query, key, *shape, scale), self.block_size)
        keys = key.float().repeat_interleave(hq // key.shape[1], dim=1)
        s = (q_mean @ keys.transpose(-1, -2)) * scale - a_mean[..., None]  # [B, Hq, NS, T]
        nr, ns = candidate.shape[0], s.shape[2]
        s = torch.nn.functional.pad(s, (0, 0, 0, nr * self.step - ns), value=float("-inf"))
        return s.view(b, hq, nr, self.step, t).amax(3), candidate

    def stripes(self, query: torch.Tensor, key: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen [B, Hq, NR, T] bool: the stripes of each region, margin [B, Hq, NR, T])."""
        margin, candidate = self.margins(query, key, scale)
        hit = candidate & (margin >= -self.theta)
        if self.budget < 1:
            allowed = torch.ceil(self.budget * candidate.sum(-1)).long()  # [NR]
            ranked = margin.masked_fill(~hit, float("-inf"))
            order = ranked.sort(dim=-1, descending=True, stable=True).indices
            rank = torch.empty_like(order).scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
            hit &= rank < allowed[:, None]
        return hit, margin

    def apply(self, call: AttentionCall, session) -> torch.Tensor:
        t, n = call.scores.shape[2], call.scores.shape[3]
        if t != n:  # decode, or prefill over a cache: dense (AnchorAttention is a prefill method)
            session.log.account(call, call.allowed)
            return attend(call.scores, None, call.value)
        chosen, margin = self.stripes(call.query, call.key, call.scale)
        anchor, _ = naive.regions(t, self.block_size, self.step, self.init_blocks, self.local_blocks, call.query.device)
        keep = anchor | chosen.repeat_interleave(self.region, dim=2)[:, :, :t]  # [B, Hq, T, T]
        recall = session.log.account(call, keep)
        self._log(call, session, keep, chosen, margin, recall)
        return attend(call.scores, keep, call.value)

    def _log(self, call, session, keep, chosen, margin, recall) -> None:
        b, hq, nr, _ = chosen.shape
        for i in range(b):
            for h in range(hq):
                for r in range(nr):
                    rows = slice(r * self.region, (r + 1) * self.region)
                    cols = chosen[i, h, r].nonzero().flatten()
                    session.log.add(call, sequence=i, head=h, query_block=r, indices=cols,
                                    scores=margin[i, h, r, cols],
                                    attended_fraction=block_fraction(keep[i, h, rows], call.allowed[i, 0, rows]),
                                    recall=None if recall is None else float(recall[i, h, rows].mean()))
