"""`selection_scores`' argument checks, without Triton: the CPU path runs them too."""

from __future__ import annotations

import torch

from workbench_kernels._common import check_device, check_float, check_groups, check_rank, check_shape


def validate(q, k) -> None:
    """Raise ValueError (expected vs got) for arguments `selection_scores` cannot take."""
    if not isinstance(q, torch.Tensor) or q.ndim not in (3, 4):
        got = tuple(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__
        raise ValueError(f"q: expected rank 3 [B, Hq, D] or rank 4 [B, Hq, Q, D], got {got}")
    check_rank("k", k, 4, "[B, Hkv, N, D]")
    check_float("q", q)
    check_float("k", k, q.dtype)
    b, hq, d = q.shape[0], q.shape[1], q.shape[-1]
    nq = q.shape[2] if q.ndim == 4 else 1
    check_shape("k", k, (b, k.shape[1], k.shape[2], d), "[B, Hkv, N, D] matching q")
    check_groups(hq, k.shape[1])
    check_device(q, k=k)
    if not 1 <= nq <= k.shape[2]:
        raise ValueError(f"q: expected 1 <= Q <= N query steps, got Q={nq}, N={k.shape[2]}")
    if d > 256:
        raise ValueError(f"q: expected head dim D <= 256, got {d}")
