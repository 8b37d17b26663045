"""Reference maths for `selection_scores` in plain PyTorch (computes in its inputs' dtype).

DELTA's official engine (hoenza/DELTA, backend.py, page-score implementation "del3_legacy_softmax",
its default) dumps the scaled logits of the last query for every head, takes the softmax over the
keys per head, the max over all query heads, the sum over query steps, and then the sum over each
16-token page. This module does the same maths, with two additions: scores per KV group
(max over that group's heads only), and several trailing query steps with causal masking.
"""

from __future__ import annotations

import torch


def selection_scores(
    q: torch.Tensor, k: torch.Tensor, scale: float | None = None, per_kv_head: bool = False
) -> torch.Tensor:
    """Head-aggregated attention probabilities of the last query step(s) over all cached keys.

    q [B, Hq, D] or [B, Hq, Q, D] (the last Q positions of the sequence; query j sits at position
    N - Q + j and sees keys 0..N-Q+j); k [B, Hkv, N, D]. Returns fp32 scores [B, N]
    (max over all heads) or [B, Hkv, N] with per_kv_head (max over each group's heads), summed over
    the Q query steps.
    """
    if q.ndim == 3:
        q = q[:, :, None]
    b, hq, nq, d = q.shape
    hkv, n = k.shape[1], k.shape[2]
    scale = d**-0.5 if scale is None else scale
    s = (q.reshape(b, hkv, hq // hkv * nq, d) @ k.transpose(-1, -2)) * scale  # [B, Hkv, G*Q, N]
    s = s.view(b, hkv, hq // hkv, nq, n)
    visible = torch.arange(n, device=q.device) <= (n - nq + torch.arange(nq, device=q.device))[:, None]  # [Q, N]
    p = torch.softmax(s.masked_fill(~visible, float("-inf")), dim=-1)
    group = p.amax(dim=2)  # [B, Hkv, Q, N]: max over the group's heads
    scores = group.sum(dim=2) if per_kv_head else group.amax(dim=1).sum(dim=1)
    return scores.float()

