"""Triton helpers shared by the kernels: the Triton dtype of a torch dtype and the tensor-core operand casts.

Apart from `_common.py` so that the CPU path, which needs no Triton, never imports it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def tl_dtype(dtype: torch.dtype):
    """The Triton dtype matching a torch floating dtype."""
    return _TL_DTYPES[dtype]


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
