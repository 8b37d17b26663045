"""Triton attention summaries: flash-attention-style passes over the keys, nothing [T, T] in memory.

A program owns BLOCK_M queries of one (batch, query head), all inside one summary tile of TILE queries (TILE is a
multiple of BLOCK_M). Pass 1 streams the causal keys in steps of BLOCK_N with an online max and sum, giving each
row's log-sum-exp; pass 2 streams them again with the weights p = exp2(s - lse) (scores in log2 units, scale *
log2(e) folded into q) and accumulates each row's sum of p * s (the entropy), of p * (i - j) (the distance), its
weight on key 0 (the sink), and the mass each key tile receives from the block's rows, added atomically into the
[NQ, NK] tile map (a tile of TILE keys spans whole steps, since BLOCK_N divides TILE). The host divides each
tile's sum by its number of queries. Compute is two QK^T products per score, no V: about the cost of one
flash-attention forward.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from workbench_kernels._common import LOG2E, interpreting, next_pow2
from workbench_kernels._triton import mma_operand, tl_dtype
from workbench_kernels.attention_tiles.checks import validate

LN2 = math.log(2.0)


@triton.jit
def _scores(q, k_base, offs_n, offs_m, stride_kt, mask_d, T, DTYPE: tl.constexpr, INTERPRET: tl.constexpr):
    """Causal log2-unit scores of the block's queries against BLOCK_N keys (-inf where masked)."""
    k = tl.load(k_base + offs_n[:, None] * stride_kt, mask=(offs_n < T)[:, None] & mask_d[None, :], other=0.0)
    s = tl.dot(q, tl.trans(mma_operand(k.to(tl.float32), DTYPE, INTERPRET)), input_precision="ieee")
    return tl.where((offs_n[None, :] <= offs_m[:, None]) & (offs_n < T)[None, :], s, float("-inf"))


@triton.jit
def _summaries_kernel(
    q_ptr, k_ptr, tiles_ptr, sink_ptr, entropy_ptr, distance_ptr,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt, stride_tb, stride_th, stride_tq,
    stride_rb, stride_rh,
    HQ, T, NUM_M, qk_scale, ln2,
    D: tl.constexpr, G: tl.constexpr, TILE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, DTYPE: tl.constexpr, INTERPRET: tl.constexpr,
):
    pid = tl.program_id(0)
    h = pid // NUM_M % HQ
    b = (pid // (NUM_M * HQ)).to(tl.int64)
    i_m = pid % NUM_M
    offs_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    rows = offs_m < T
    q = tl.load(q_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
                mask=rows[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
    q = mma_operand(q * qk_scale, DTYPE, INTERPRET)
    k_base = k_ptr + b * stride_kb + (h // G) * stride_kh + offs_d[None, :]
    end = tl.minimum((i_m + 1) * BLOCK_M, T)  # the block's last query sees keys up to it
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    for n0 in range(0, end, BLOCK_N):
        s = _scores(q, k_base, n0 + tl.arange(0, BLOCK_N), offs_m, stride_kt, mask_d, T, DTYPE, INTERPRET)
        m_new = tl.maximum(m, tl.max(s, 1))
        l = l * tl.exp2(m - m_new) + tl.sum(tl.exp2(s - m_new[:, None]), 1)
        m = m_new
    lse = m + tl.log2(tl.where(l > 0, l, 1.0))
    weighted = tl.zeros([BLOCK_M], tl.float32)
    distance = tl.zeros([BLOCK_M], tl.float32)
    sink = tl.zeros([BLOCK_M], tl.float32)
    tile_row = tiles_ptr + b * stride_tb + h * stride_th + (i_m * BLOCK_M // TILE) * stride_tq
    for n0 in range(0, end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        s = _scores(q, k_base, offs_n, offs_m, stride_kt, mask_d, T, DTYPE, INTERPRET)
        p = tl.where(rows[:, None], tl.exp2(s - lse[:, None]), 0.0)  # 0 where masked and on rows past T
        weighted += tl.sum(p * tl.where(p > 0, s, 0.0), 1)
        distance += tl.sum(p * (offs_m[:, None] - offs_n[None, :]).to(tl.float32), 1)
        sink += tl.sum(tl.where(offs_n[None, :] == 0, p, 0.0), 1)
        tl.atomic_add(tile_row + n0 // TILE, tl.sum(p))  # the step's keys lie in one key tile
    base = b * stride_rb + h * stride_rh + offs_m
    tl.store(sink_ptr + base, sink, mask=rows)
    tl.store(entropy_ptr + base, ln2 * (lse - weighted), mask=rows)
    tl.store(distance_ptr + base, distance, mask=rows)


def block_sizes(tile: int) -> int | None:
    """The program's BLOCK_M = BLOCK_N for summary tiles of `tile` tokens: the largest power of two <= 128 that
    divides it, at least 16 (tl.dot's smallest); None when there is none (small tiles take the reference)."""
    size = min(128, tile & -tile)
    return size if size >= 16 else None


def tile_summaries(q: torch.Tensor, k: torch.Tensor, block: int, scale: float | None = None
                   ) -> dict[str, torch.Tensor]:
    """Square tiles of `block` tokens (a multiple of 16); the layout and results of `naive.tile_summaries`."""
    validate(q, k, block, block)
    size = block_sizes(block)
    if size is None:
        raise ValueError(f"block: expected a multiple of 16 for the kernel, got {block}")
    if interpreting():
        size = 16  # the interpreter pays per program in Python time
    b, hq, t, d = q.shape
    q, k = q.contiguous(), k.contiguous()
    n_tiles = -(-t // block)
    tiles = torch.zeros(b, hq, n_tiles, n_tiles, device=q.device, dtype=torch.float32)
    rows = {name: torch.empty(b, hq, t, device=q.device, dtype=torch.float32)
            for name in ("sink", "entropy", "distance")}
    scale = d**-0.5 if scale is None else scale
    num_m = -(-t // size)
    _summaries_kernel[(b * hq * num_m,)](
        q, k, tiles, rows["sink"], rows["entropy"], rows["distance"],
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        tiles.stride(0), tiles.stride(1), tiles.stride(2), rows["sink"].stride(0), rows["sink"].stride(1),
        hq, t, num_m, scale * LOG2E, LN2,
        D=d, G=hq // k.shape[1], TILE=block, BLOCK_M=size, BLOCK_N=size, BLOCK_D=next_pow2(d, 16),
        DTYPE=tl_dtype(q.dtype), INTERPRET=interpreting(), num_warps=4, num_stages=2,
    )
    counts = torch.clamp(t - torch.arange(n_tiles, device=q.device) * block, max=block).to(torch.float32)
    return {"tiles": tiles / counts[:, None], **rows}
