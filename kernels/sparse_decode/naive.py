"""Reference maths for `sparse_decode` in plain PyTorch.

It computes in the dtype of its inputs, so the tests can run it in fp32 for the reference and in
fp16/bf16 to measure how far plain PyTorch drifts in low precision.
"""

from __future__ import annotations

import torch


def sparse_decode(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, indices: torch.Tensor, scale: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of one query step over the KV rows listed in `indices`.

    q [B, Hq, D], k and v [B, Hkv, N, D], indices [B, Hkv, K] (entries outside [0, N), e.g. -1, are
    padding). Returns out [B, Hq, D] and the log-sum-exp of the scaled scores, lse [B, Hq] fp32.
    A row with no valid index gives out = 0 and lse = -inf. Repeated indices count once per entry.
    """
    b, hq, d = q.shape
    hkv, n = k.shape[1], k.shape[2]
    scale = d**-0.5 if scale is None else scale
    valid = (indices >= 0) & (indices < n)  # [B, Hkv, K]
    rows = torch.where(valid, indices, 0).long()[..., None].expand(-1, -1, -1, d)
    ks = torch.gather(k, 2, rows)  # [B, Hkv, K, D]
    vs = torch.gather(v, 2, rows)
    qg = q.view(b, hkv, hq // hkv, d)  # [B, Hkv, G, D]
    s = (qg @ ks.transpose(-1, -2)) * scale  # [B, Hkv, G, K]
    s = s.masked_fill(~valid[:, :, None, :], float("-inf"))
    lse = torch.logsumexp(s, dim=-1, keepdim=True)  # [B, Hkv, G, 1]
    p = torch.exp(s - torch.where(torch.isinf(lse), 0.0, lse).to(s.dtype))
    out = p @ vs  # [B, Hkv, G, D]
    return out.reshape(b, hq, d), lse.reshape(b, hq).float()
