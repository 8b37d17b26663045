"""`sparse_decode`'s argument checks, without Triton: the CPU path runs them too."""

from __future__ import annotations

import torch

from workbench_kernels._common import check_device, check_float, check_groups, check_rank, check_shape


def validate(q, k, v, indices, split_size: int | None = None) -> None:
    """Raise ValueError (expected vs got) for arguments `sparse_decode` cannot take."""
    check_rank("q", q, 3, "[B, Hq, D]")
    check_rank("k", k, 4, "[B, Hkv, N, D]")
    check_rank("v", v, 4, "[B, Hkv, N, D]")
    check_rank("indices", indices, 3, "[B, Hkv, K]")
    check_float("q", q)
    check_float("k", k, q.dtype)
    check_float("v", v, q.dtype)
    if indices.dtype != torch.int32:
        raise ValueError(f"indices: expected dtype torch.int32, got {indices.dtype}")
    b, hq, d = q.shape
    hkv, n = k.shape[1], k.shape[2]
    check_shape("k", k, (b, hkv, n, d), "[B, Hkv, N, D] matching q [B, Hq, D]")
    check_shape("v", v, k.shape, "[B, Hkv, N, D] (same as k)")
    check_shape("indices", indices, (b, hkv, indices.shape[2]), "[B, Hkv, K] matching k")
    check_groups(hq, hkv)
    check_device(q, k=k, v=v, indices=indices)
    if split_size is not None and split_size < 1:
        raise ValueError(f"split_size: expected a positive integer, got {split_size}")
    if d > 256:
        raise ValueError(f"q: expected head dim D <= 256, got {d}")
