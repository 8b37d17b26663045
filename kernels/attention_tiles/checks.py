"""The attention summaries' argument checks, without Triton."""

from __future__ import annotations

from workbench_kernels._common import check_device, check_float, check_groups, check_rank, check_shape


def validate(q, k, block_q: int, block_k: int) -> None:
    """Raise ValueError (expected vs got) for q [B, Hq, T, D], k [B, Hkv, T, D] and the tile sizes."""
    check_rank("q", q, 4, "[B, Hq, T, D]")
    check_rank("k", k, 4, "[B, Hkv, T, D]")
    check_float("q", q)
    check_float("k", k, q.dtype)
    b, hq, t, d = q.shape
    check_shape("k", k, (b, k.shape[1], t, d), "[B, Hkv, T, D] matching q")
    check_groups(hq, k.shape[1])
    check_device(q, k=k)
    for name, size in (("block_q", block_q), ("block_k", block_k)):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"{name}: expected a positive integer, got {size!r}")
