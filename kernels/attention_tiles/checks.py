"""The attention summaries' argument checks, without Triton."""

from __future__ import annotations

from workbench_kernels._common import check_device, check_prefill_qk


def validate(q, k, block_q: int, block_k: int) -> None:
    """Raise ValueError (expected vs got) for q [B, Hq, T, D], k [B, Hkv, T, D] and the tile sizes."""
    check_prefill_qk(q, k)
    check_device(q, k=k)
    for name, size in (("block_q", block_q), ("block_k", block_k)):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"{name}: expected a positive integer, got {size!r}")
