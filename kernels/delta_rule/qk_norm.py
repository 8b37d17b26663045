"""Triton L2 normalisation of q and k rows before the gated delta rule, in one pass.

Gated DeltaNet layers ask the rule to L2-normalise q and k (use_qk_l2norm_in_kernel): x / sqrt(|x|^2 + eps) per
head row, in fp32, as transformers' `l2norm` and fla's do. Done in eager PyTorch on [B, T, H, K] bf16 tensors it is
a chain of fp32 elementwise passes (about 4 ms for q and k at T = 64k, H = 16, K = 128 on an H100, more than the
rule itself); here it reads each row once and writes it once in the input's dtype. The rows may be strided (q and k
are slices of a layer's fused projection): only the last dimension must be contiguous.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from workbench_kernels._common import next_pow2

ROWS = 16  # head rows a program normalises


@triton.jit
def _l2norm_kernel(x_ptr, y_ptr, n_rows, H, stride_n, stride_h, eps,
                   D: tl.constexpr, BD: tl.constexpr, ROWS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BD)
    mask = (rows < n_rows)[:, None] & (cols < D)[None, :]
    n, h = (rows // H).to(tl.int64), rows % H
    x = tl.load(x_ptr + (n * stride_n + h * stride_h)[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    y = x * tl.rsqrt(tl.sum(x * x, 1) + eps)[:, None]
    tl.store(y_ptr + rows.to(tl.int64)[:, None] * D + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x [..., H, D] L2-normalised along D (x * rsqrt(|x|^2 + eps) in fp32), contiguous, in x's dtype."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    *lead, h, d = x.shape
    rows = x.reshape(-1, h, d)  # a view for a slice of a projection: batch and tokens merge
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    n_rows = rows.shape[0] * h
    if n_rows:
        _l2norm_kernel[(triton.cdiv(n_rows, ROWS),)](rows, y, n_rows, h, rows.stride(0), rows.stride(1), eps,
                                                   D=d, BD=next_pow2(d, 16), ROWS=ROWS)
    return y
