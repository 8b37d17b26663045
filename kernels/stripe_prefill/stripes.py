"""Triton stripe finding for AnchorAttention: anchors, then keys whose approximate score is near them.

`_anchor_kernel`: for each query, the largest scaled score over its anchor region (initial keys and
local window, causal) — maxima only. The queries and anchors are then averaged over sub-blocks of
block_size queries (`naive.compress`, plain PyTorch: a small tensor). `_stripe_kernel`: one program
per (batch, query head, region) scores the region's averaged queries against every candidate key and
keeps a key when any of them is within theta of its averaged anchor, appending the kept positions in
order (a prefix sum gives each its slot) and padding the rest of the list with -1.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from workbench_kernels._common import default_scale, interpreting, next_pow2
from workbench_kernels._triton import mma_operand, tl_dtype
from workbench_kernels.stripe_prefill.checks import check_regions, validate
from workbench_kernels.stripe_prefill.naive import compress, stripe_width


def key_block(device: torch.device) -> int:
    """Keys per inner step: 64 on the GPU; 16 in the interpreter, where every block costs Python time."""
    return 64 if device.type == "cuda" else 16


@triton.jit
def _block_max(q, k_ptrs, valid, mask_d, causal, best, DTYPE: tl.constexpr, INTERPRET: tl.constexpr):
    """Running row maximum of the scores of q against the keys at k_ptrs (masked by valid & causal)."""
    k = tl.load(k_ptrs, mask=valid[:, None] & mask_d[None, :], other=0.0)
    s = tl.dot(q, tl.trans(mma_operand(k, DTYPE, INTERPRET)), input_precision="ieee")
    return tl.maximum(best, tl.max(tl.where(valid[None, :] & causal, s, float("-inf")), 1))


@triton.jit
def _anchor_kernel(
    q_ptr, k_ptr, a_ptr,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt, stride_ab, stride_ah,
    HQ, T, D, scale,
    G: tl.constexpr, R: tl.constexpr, INIT: tl.constexpr, LOCAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DTYPE: tl.constexpr, INTERPRET: tl.constexpr,
):
    pid_m, pid_bh = tl.program_id(0), tl.program_id(1)
    b = (pid_bh // HQ).to(tl.int64)
    h = pid_bh % HQ
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    q = tl.load(q_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
                mask=(offs_m < T)[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
    q = mma_operand(q * scale, DTYPE, INTERPRET)
    k_base = k_ptr + b * stride_kb + (h // G) * stride_kh + offs_d[None, :]
    r = m0 // R
    local_start = tl.maximum(r - LOCAL + 1, 0) * R
    init_end = tl.minimum(INIT * R, local_start)
    best = tl.full([BLOCK_M], float("-inf"), tl.float32)
    everywhere = tl.full([BLOCK_M, BLOCK_N], 1, tl.int1)
    for n0 in range(0, init_end, BLOCK_N):
        offs_n = (n0 + tl.arange(0, BLOCK_N)).to(tl.int64)
        best = _block_max(q, k_base + offs_n[:, None] * stride_kt, offs_n < init_end, mask_d, everywhere, best,
                          DTYPE, INTERPRET)
    for n0 in range(local_start, tl.minimum(m0 + BLOCK_M, T), BLOCK_N):
        offs_n = (n0 + tl.arange(0, BLOCK_N)).to(tl.int64)
        best = _block_max(q, k_base + offs_n[:, None] * stride_kt, offs_n < T, mask_d,
                          offs_n[None, :] <= offs_m[:, None], best, DTYPE, INTERPRET)
    tl.store(a_ptr + b * stride_ab + h * stride_ah + offs_m, best, mask=offs_m < T)


@triton.jit
def _stripe_kernel(
    qm_ptr, am_ptr, k_ptr, stripe_ptr, count_ptr,
    stride_qmb, stride_qmh, stride_qms, stride_amb, stride_amh, stride_kb, stride_kh, stride_kt,
    stride_sb, stride_sh, stride_sr, stride_cb, stride_ch,
    HQ, T, D, NS, W, scale, theta,
    G: tl.constexpr, R: tl.constexpr, STEP: tl.constexpr, INIT: tl.constexpr, LOCAL: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DTYPE: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    r, pid_bh = tl.program_id(0), tl.program_id(1)
    b = (pid_bh // HQ).to(tl.int64)
    h = pid_bh % HQ
    offs_s = r * STEP + tl.arange(0, BLOCK_S)  # the region's sub-blocks (BLOCK_S >= 16 rows for tl.dot)
    mask_s = (tl.arange(0, BLOCK_S) < STEP) & (offs_s < NS)
    offs_d = tl.arange(0, BLOCK_D)
    qm = tl.load(qm_ptr + b * stride_qmb + h * stride_qmh + offs_s[:, None] * stride_qms + offs_d[None, :],
                 mask=mask_s[:, None] & (offs_d < D)[None, :], other=0.0)
    qm = mma_operand(qm * scale, DTYPE, INTERPRET)  # [BLOCK_S, BLOCK_D]
    floor = tl.load(am_ptr + b * stride_amb + h * stride_amh + offs_s, mask=mask_s, other=float("inf")) - theta
    k_base = k_ptr + b * stride_kb + (h // G) * stride_kh + offs_d[None, :]
    s_base = stripe_ptr + b * stride_sb + h * stride_sh + r * stride_sr
    start = INIT * R
    stop = tl.minimum(tl.maximum(r - LOCAL + 1, 0) * R, T)
    count = tl.full([], 0, tl.int32)
    for n0 in range(start, stop, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        valid = offs_n < stop
        k = tl.load(k_base + offs_n[:, None].to(tl.int64) * stride_kt, mask=valid[:, None] & (offs_d < D)[None, :],
                    other=0.0)
        s = tl.dot(qm, tl.trans(mma_operand(k, DTYPE, INTERPRET)), input_precision="ieee")  # [BLOCK_S, BLOCK_N]
        keep = (tl.max((s >= floor[:, None]).to(tl.int32), 0) > 0) & valid
        slot = count + tl.cumsum(keep.to(tl.int32), 0) - 1
        tl.store(s_base + slot, offs_n, mask=keep)
        count += tl.sum(keep.to(tl.int32), 0)
    for p0 in range(count, W, BLOCK_N):
        offs_p = p0 + tl.arange(0, BLOCK_N)
        tl.store(s_base + offs_p, tl.full([BLOCK_N], -1, tl.int32), mask=offs_p < W)
    tl.store(count_ptr + b * stride_cb + h * stride_ch + r, count)


def find_stripes(
    q: torch.Tensor, k: torch.Tensor, *, theta: float = 12.0, block_size: int = 128, step: int = 16,
    init_blocks: int = 1, local_blocks: int = 1, scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """AnchorAttention's stripe identification for a causal prefill.

    q [B, Hq, T, D], k [B, Hkv, T, D]. Regions of R = block_size * step tokens; a query's anchor is
    its largest scaled score over the first init_blocks regions and the local_blocks regions ending
    with its own; a key between those two areas is a stripe of region r when the mean of some
    block_size consecutive queries of r scores >= the mean of their anchors - theta (natural-log
    units; the official default difference is 12). Returns (stripes int32 [B, Hq, NR, W] ascending,
    padded with -1, counts int32 [B, Hq, NR]) for `stripe_prefill`; NR = ceil(T / R).
    """
    validate(q, k)
    check_regions(block_size, step, init_blocks, local_blocks)
    b, hq, t, d = q.shape
    r_size = block_size * step
    q, k = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k))
    nr, width = triton.cdiv(t, r_size), stripe_width(t, block_size, step, init_blocks, local_blocks)
    stripes = torch.empty((b, hq, nr, width), device=q.device, dtype=torch.int32)
    counts = torch.empty((b, hq, nr), device=q.device, dtype=torch.int32)
    if q.numel() == 0:
        return stripes, counts
    scale = default_scale(scale, d)
    anchor = torch.empty((b, hq, t), device=q.device, dtype=torch.float32)
    consts = {"G": hq // k.shape[1], "R": r_size, "INIT": init_blocks, "LOCAL": local_blocks, "BLOCK_D": next_pow2(d, 16),
                  "DTYPE": tl_dtype(q.dtype), "INTERPRET": interpreting()}
    block_m, block_n = min(64, r_size), key_block(q.device)
    _anchor_kernel[(triton.cdiv(t, block_m), b * hq)](
        q, k, anchor, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        anchor.stride(0), anchor.stride(1), hq, t, d, scale, BLOCK_M=block_m, BLOCK_N=block_n, **consts,
        num_warps=4, num_stages=2)
    q_mean, a_mean = compress(q, anchor, block_size)  # [B, Hq, NS, D], [B, Hq, NS] fp32
    _stripe_kernel[(nr, b * hq)](
        q_mean, a_mean, k, stripes, counts,
        q_mean.stride(0), q_mean.stride(1), q_mean.stride(2), a_mean.stride(0), a_mean.stride(1),
        k.stride(0), k.stride(1), k.stride(2), stripes.stride(0), stripes.stride(1), stripes.stride(2),
        counts.stride(0), counts.stride(1), hq, t, d, q_mean.shape[2], width, scale, float(theta),
        STEP=step, BLOCK_S=next_pow2(step, 16), BLOCK_N=block_n, **consts, num_warps=4, num_stages=2)
    return stripes, counts
