"""Helpers shared by every op: argument checks, dtype mapping and the tensor-core operand cast.

Nothing here imports from `workbench/`; the module is safe to import on a machine without a GPU.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
LOG2E = 1.4426950408889634

_TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def tl_dtype(dtype: torch.dtype):
    """The Triton dtype matching a torch floating dtype."""
    return _TL_DTYPES[dtype]


def next_pow2(n: int, minimum: int = 1) -> int:
    """Smallest power of two >= max(n, minimum): Triton block shapes must be powers of two."""
    return max(triton.next_power_of_2(max(int(n), 1)), minimum)


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


def default_scale(scale: float | None, d: int) -> float:
    return d**-0.5 if scale is None else float(scale)


@triton.jit
def mma_operand(x, DTYPE: tl.constexpr, INTERPRET: tl.constexpr):
    """Round x to the tensor-core input type DTYPE before tl.dot.

    The CPU interpreter stores bf16 as raw uint16 bits and tl.dot would multiply the bits, so there
    the rounded value is carried in fp32 instead: the products are exact either way and both
    accumulate in fp32, so the arithmetic tested on CPU is the arithmetic run on the GPU.
    """
    y = x.to(DTYPE)
    if INTERPRET:
        y = y.to(tl.float32)
    return y


def wide_precision(dtype: torch.dtype) -> str:
    """input_precision for products that need more than bf16/fp16: tf32 for low-precision inputs,
    exact fp32 ("ieee") when the inputs themselves are fp32."""
    return "ieee" if dtype == torch.float32 else "tf32"


@triton.jit
def wide_operand(x, WIDE: tl.constexpr, INTERPRET: tl.constexpr):
    """An fp32 operand of tl.dot(..., input_precision=WIDE).

    With WIDE == "tf32" the GPU's tensor cores read only the top 19 bits of each fp32 operand; the
    interpreter multiplies in full fp32, so there the low 13 mantissa bits are cleared to match.
    """
    x = x.to(tl.float32)
    if INTERPRET:  # noqa: SIM102 - nested: each condition stays a plain constexpr test for Triton's compiler
        if WIDE == "tf32":
            x = (x.to(tl.uint32, bitcast=True) & 0xFFFFE000).to(tl.float32, bitcast=True)
    return x
