"""The stripe ops' argument checks, without Triton: the CPU path runs them too."""

from __future__ import annotations

from workbench_kernels._common import check_device, check_float, check_prefill_qk, check_rank, check_shape


def check_regions(block_size: int, step: int, init_blocks: int, local_blocks: int) -> None:
    """Raise ValueError unless block_size and step are powers of two with R = block_size * step >= 16."""
    for name, x in (("block_size", block_size), ("step", step)):
        if x < 1 or x & (x - 1):
            raise ValueError(f"{name}: expected a power of two, got {x}")
    if init_blocks < 0 or local_blocks < 1:
        raise ValueError(f"expected init_blocks >= 0 and local_blocks >= 1, got {init_blocks}, {local_blocks}")
    if block_size * step < 16:  # a program's queries lie in one region, and tl.dot needs 16 rows
        raise ValueError(f"expected block_size * step >= 16, got {block_size * step}")


def validate(q, k, v=None) -> None:
    """Raise ValueError (expected vs got) for q [B, Hq, T, D], k and v [B, Hkv, T, D]."""
    check_prefill_qk(q, k)
    d = q.shape[-1]
    if v is not None:
        check_rank("v", v, 4, "[B, Hkv, T, D]")
        check_float("v", v, q.dtype)
        check_shape("v", v, k.shape, "[B, Hkv, T, D] (same as k)")
    check_device(q, k=k, v=v)
    if d > 256:
        raise ValueError(f"q: expected head dim D <= 256, got {d}")
