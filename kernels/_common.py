"""Helpers shared by every op that need only torch: argument checks, block sizes, the scale, precisions.

The ops' CPU paths import the checks, so nothing here imports Triton (needed by the CUDA path only; its
helpers are in `_triton.py`) or anything from `workbench/`.
"""

from __future__ import annotations

import os

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
LOG2E = 1.4426950408889634


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def next_pow2(n: int, minimum: int = 1) -> int:
    """Smallest power of two >= max(n, minimum): Triton block shapes must be powers of two."""
    return max(1 << (max(int(n), 1) - 1).bit_length(), minimum)


def check_rank(name: str, t: torch.Tensor, rank: int, layout: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor {layout}, got {type(t).__name__}")
    if t.ndim != rank:
        raise ValueError(f"{name}: expected rank {rank} {layout}, got shape {tuple(t.shape)}")


def check_float(name: str, t: torch.Tensor, dtype: torch.dtype | None = None) -> None:
    """t is fp32/fp16/bf16, and equal to `dtype` when given."""
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name}: expected dtype float32, float16 or bfloat16, got {t.dtype}")
    if dtype is not None and t.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {dtype} (same as q), got {t.dtype}")


def check_shape(name: str, t: torch.Tensor, expected: tuple, layout: str) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {tuple(expected)} {layout}, got {tuple(t.shape)}")


def check_device(q: torch.Tensor, **others: torch.Tensor | None) -> None:
    for name, t in others.items():
        if t is not None and t.device != q.device:
            raise ValueError(f"{name}: expected device {q.device} (same as q), got {t.device}")


def check_groups(hq: int, hkv: int) -> int:
    """Query heads per KV head (grouped-query attention)."""
    if hkv <= 0 or hq % hkv != 0:
        raise ValueError(f"expected query heads to be a multiple of KV heads, got Hq={hq}, Hkv={hkv}")
    return hq // hkv


def check_prefill_qk(q: torch.Tensor, k: torch.Tensor) -> None:
    """Raise ValueError (expected vs got) unless q [B, Hq, T, D] and k [B, Hkv, T, D] are one prompt's floating
    queries and keys, Hq a multiple of Hkv."""
    check_rank("q", q, 4, "[B, Hq, T, D]")
    check_rank("k", k, 4, "[B, Hkv, T, D]")
    check_float("q", q)
    check_float("k", k, q.dtype)
    b, hq, t, d = q.shape
    check_shape("k", k, (b, k.shape[1], t, d), "[B, Hkv, T, D] matching q")
    check_groups(hq, k.shape[1])


def default_scale(scale: float | None, d: int) -> float:
    return d**-0.5 if scale is None else float(scale)


def wide_precision(dtype: torch.dtype) -> str:
    """input_precision for products that need more than bf16/fp16: tf32 for low-precision inputs,
    exact fp32 ("ieee") when the inputs themselves are fp32."""
    return "ieee" if dtype == torch.float32 else "tf32"
