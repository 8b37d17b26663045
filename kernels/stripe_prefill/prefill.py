"""Triton stripe prefill: flash attention over the anchor region plus discretely loaded key columns.

A program owns block_m queries of one (batch, query head); they all lie in one region r. It runs an
online softmax over (1) the initial keys, (2) the stripes of region r, gathered row by row from the
index list (AnchorAttention's "fine-grained sparse computation": single positions, no block
rounding), (3) the local window up to the program's first query, and (4) the diagonal block. Only
the diagonal (causality) and the stripe list's tail mask scores; the other steps skip the select per
score, which competes with the exponentials for the same cores and, on 128-row stripe steps, pushed
the kernel past 255 registers. A first small launch (`_clean_kernel`) finds each list's clean
prefix, the leading entries that lie in the gap between the initial and the local region (all of
them, for `find_stripes`' lists); its whole steps run unmasked at block_s rows, and the rest (the
partial last step, padding, and anything after an entry outside the gap, which is ignored) in masked
steps of tail_s rows. Scores come out in log2 units (scale * log2(e) folded into q), so
the softmax takes exp2 directly. Tile sizes (contiguous steps and stripe steps), warps, stages,
launch order and the step order are a `PrefillConfig`.

Departure from the AnchorAttention code: there, the anchor pass also accumulates the anchor-region
attention and hands (max, sum, accumulator) buffers — fp32, [B, H, T, D] — to this pass. Here the
prefill is self-contained (any stripe list works, e.g. an oracle's in the emulation) and recomputes
the anchor region; the anchor pass only takes maxima (no exp, no V). The official candidate range
[block_size, region_start - block_size) also overlaps the initial region and skips the block before
the window; here candidates are exactly the keys between the two, so no key counts twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from workbench_kernels._common import (LOG2E, check_device, check_rank, check_shape, default_scale,
                                       interpreting, next_pow2)
from workbench_kernels._triton import mma_operand, tl_dtype
from workbench_kernels.stripe_prefill.checks import check_regions, validate


@dataclass(frozen=True)
class PrefillConfig:
    """GPU launch tunables of `stripe_prefill`; `python -m workbench_kernels.stripe_prefill.bench --sweep` times them.

    block_m: queries per program (capped at the region size R, so a program's queries share one
    region); block_n: keys per step over the contiguous parts, the initial region, the window before
    the diagonal and the diagonal itself (at most block_m, so they split into whole steps); block_s:
    keys per stripe step over a list's clean prefix (gathered rows, no score mask; None: block_n);
    tail_s: keys per stripe step over the rest of the list (masked). heavy_first: launch the last query blocks,
    which attend to the most stripes, first, so the short ones fill the tail of the launch.
    group_heads: launch the query heads of one KV head side by side (head index fastest), so the
    anchor region's K/V rows are fetched from memory once per group and read from L2 by the others;
    stripe lists are per query head, so their rows are shared only where the heads' lists overlap.
    acc_in_dot: the Triton fused-attention tutorial's step order, the rescaled accumulator fed to the
    P V product as its accumulator (tl.dot(p, v, acc)), l updated last, and no -inf guard on the
    running max in unmasked steps (within 1% of the default on the H200).

    Measured slower (docs/benchmarks-history.md) and so not offered: TMA descriptors
    for the contiguous K/V tiles, per-loop stages, unrolling. triton 3.6 ignores
    tl.range(warp_specialize=True) for this kernel on sm_90 at 8 warps, and its Hopper pass crashes on
    it at 4 warps.
    """

    block_m: int = 128
    block_n: int = 128  # faster than 64 at 128k (`bench --sweep`); stripes are still gathered 64 at a time
    num_warps: int = 8
    num_stages: int = 3
    heavy_first: bool = True
    group_heads: bool = True
    block_s: int | None = None
    tail_s: int = 64  # 128-row gathers with the score mask spill at 8 warps (triton 3.6 and 3.9)
    acc_in_dot: bool = False

    def __post_init__(self):
        sizes = (self.block_m, self.block_n, self.block_s or 16, self.tail_s)
        if any(x < 16 or x & (x - 1) for x in sizes) or self.block_n > self.block_m:
            raise ValueError(f"PrefillConfig: expected powers of two >= 16 with block_n <= block_m, got {self}")
        if self.num_warps not in (1, 2, 4, 8, 16) or self.num_stages < 1:
            raise ValueError(f"PrefillConfig: expected num_warps in (1, 2, 4, 8, 16) and num_stages >= 1, got {self}")


INTERPRETER_CONFIG = PrefillConfig(block_m=32, block_n=16, block_s=16, tail_s=16)  # each block costs Python time there


@triton.jit
def _attend(q, m, l, acc, k_ptrs, v_ptrs, kv_mask, keep,
            MASK_LOAD: tl.constexpr, MASK_SCORE: tl.constexpr, ACC_IN_DOT: tl.constexpr,
            DTYPE: tl.constexpr, INTERPRET: tl.constexpr):
    """One online-softmax step over a block of keys (the rows of k_ptrs and v_ptrs, [BLOCK_N, BLOCK_D]).

    MASK_LOAD: load only where kv_mask [BLOCK_N, BLOCK_D] holds (zeros elsewhere). MASK_SCORE: scores
    where keep [BLOCK_M, BLOCK_N] is false become -inf. Whole steps take neither, and no select.
    """
    if MASK_LOAD:
        k = tl.load(k_ptrs, mask=kv_mask, other=0.0)
    else:
        k = tl.load(k_ptrs)
    s = tl.dot(q, tl.trans(mma_operand(k, DTYPE, INTERPRET)), input_precision="ieee")  # [BLOCK_M, BLOCK_N]
    if MASK_SCORE:
        s = tl.where(keep, s, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, 1))
    if MASK_SCORE:
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing yet: no NaN from -inf - -inf
    elif ACC_IN_DOT:
        m_ref = m_new  # a whole step gives every row a finite score
    else:
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m - m_ref)
    p = tl.exp2(s - m_ref[:, None])
    if MASK_LOAD:
        v = tl.load(v_ptrs, mask=kv_mask, other=0.0)
    else:
        v = tl.load(v_ptrs)
    if ACC_IN_DOT:  # the tutorial's order: the MMA accumulates into the rescaled acc in place
        l_step = tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(mma_operand(p, DTYPE, INTERPRET), mma_operand(v, DTYPE, INTERPRET), acc, input_precision="ieee")
        l = l * alpha + l_step
    else:
        acc = acc * alpha[:, None] + tl.dot(mma_operand(p, DTYPE, INTERPRET), mma_operand(v, DTYPE, INTERPRET),
                                            input_precision="ieee")
        l = l * alpha + tl.sum(p, 1)
    return m_new, l, acc


@triton.jit
def _region_bounds(r, R: tl.constexpr, INIT: tl.constexpr, LOCAL: tl.constexpr):
    """(init_end, local_start) of region r: its stripes lie in between."""
    local_start = tl.maximum(r - LOCAL + 1, 0) * R
    return tl.minimum(INIT * R, local_start), local_start


@triton.jit
def _clean_kernel(stripe_ptr, count_ptr, clean_ptr, stride_sb, stride_sh, stride_sr, stride_cb, stride_ch,
                  HQ, NR, W, R: tl.constexpr, INIT: tl.constexpr, LOCAL: tl.constexpr, BLOCK: tl.constexpr):
    """Per stripe list: how many of its leading entries lie in the region's gap (at most min(count, W))
    -> clean [B, Hq, NR]. The prefill attends to those without a score mask."""
    pid = tl.program_id(0)
    r, h, b = pid % NR, pid // NR % HQ, (pid // (NR * HQ)).to(tl.int64)
    init_end, local_start = _region_bounds(r, R, INIT, LOCAL)
    count = tl.minimum(tl.load(count_ptr + b * stride_cb + h * stride_ch + r), W)
    row = stripe_ptr + b * stride_sb + h * stride_sh + r * stride_sr
    clean = tl.maximum(count, 0)
    for j0 in range(0, count, BLOCK):
        offs = j0 + tl.arange(0, BLOCK)
        cols = tl.load(row + offs, mask=offs < count, other=init_end)
        bad = (cols < init_end) | (cols >= local_start)
        clean = tl.minimum(clean, tl.min(tl.where(bad, offs, count), 0))
    tl.store(clean_ptr + pid, clean)


@triton.jit
def _prefill_kernel(
    q_ptr, k_ptr, v_ptr, stripe_ptr, count_ptr, clean_ptr, o_ptr,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt, stride_vb, stride_vh, stride_vt,
    stride_sb, stride_sh, stride_sr, stride_cb, stride_ch, stride_ob, stride_oh, stride_ot,
    HQ, T, NR, W, NUM_M, qk_scale,
    D: tl.constexpr, G: tl.constexpr, R: tl.constexpr, INIT: tl.constexpr, LOCAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr, TAIL_S: tl.constexpr, BLOCK_D: tl.constexpr,
    EVEN_D: tl.constexpr, HEAVY_FIRST: tl.constexpr, GROUP_HEADS: tl.constexpr, ACC_IN_DOT: tl.constexpr,
    DTYPE: tl.constexpr, INTERPRET: tl.constexpr,
):
    pid = tl.program_id(0)
    if GROUP_HEADS:  # [B * Hkv, NUM_M, G]: a KV head's query heads side by side
        h = (pid // (NUM_M * G)) % (HQ // G) * G + pid % G
        b = pid // (NUM_M * HQ)
        i_m = pid // G % NUM_M
    else:  # [B * Hq, NUM_M]
        h = pid // NUM_M % HQ
        b = pid // (NUM_M * HQ)
        i_m = pid % NUM_M
    if HEAVY_FIRST:
        i_m = NUM_M - 1 - i_m
    b = b.to(tl.int64)
    m0 = i_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D  # with EVEN_D (D == BLOCK_D) only the diagonal's loads take a mask (rows past T)
    q = tl.load(q_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
                mask=(offs_m < T)[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
    q = mma_operand(q * qk_scale, DTYPE, INTERPRET)  # [BLOCK_M, BLOCK_D], scores in log2 units
    k_base = k_ptr + b * stride_kb + (h // G) * stride_kh + offs_d[None, :]
    v_base = v_ptr + b * stride_vb + (h // G) * stride_vh + offs_d[None, :]

    r = m0 // R
    init_end, local_start = _region_bounds(r, R, INIT, LOCAL)
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    cols_d = mask_d[None, :]
    for n0 in range(0, init_end, BLOCK_N):  # initial keys: whole steps (BLOCK_N divides R), before every query
        offs_n = (n0 + tl.arange(0, BLOCK_N)).to(tl.int64)
        m, l, acc = _attend(q, m, l, acc, k_base + offs_n[:, None] * stride_kt, v_base + offs_n[:, None] * stride_vt,
                            cols_d, None, not EVEN_D, False, ACC_IN_DOT, DTYPE, INTERPRET)
    count = tl.minimum(tl.load(count_ptr + b * stride_cb + h * stride_ch + r), W)
    s_base = stripe_ptr + b * stride_sb + h * stride_sh + r * stride_sr
    clean = tl.load(clean_ptr + (b * HQ + h) * NR + r) // BLOCK_S * BLOCK_S  # whole unmasked steps
    offs_j = tl.arange(0, BLOCK_S)
    cols_next = tl.load(s_base + offs_j, mask=offs_j < clean, other=0)
    for j0 in range(0, clean, BLOCK_S):  # the list's clean prefix, gathered: every entry lies in the gap
        rows = cols_next.to(tl.int64)
        offs_j = j0 + BLOCK_S + tl.arange(0, BLOCK_S)
        cols_next = tl.load(s_base + offs_j, mask=offs_j < clean, other=0)
        m, l, acc = _attend(q, m, l, acc, k_base + rows[:, None] * stride_kt, v_base + rows[:, None] * stride_vt,
                            cols_d, None, not EVEN_D, False, ACC_IN_DOT, DTYPE, INTERPRET)
    offs_j = clean + tl.arange(0, TAIL_S)
    cols_next = tl.load(s_base + offs_j, mask=offs_j < count, other=-1)
    for j0 in range(clean, count, TAIL_S):  # the rest, masked: padding, and entries outside the gap
        cols = cols_next
        offs_j = j0 + TAIL_S + tl.arange(0, TAIL_S)
        cols_next = tl.load(s_base + offs_j, mask=offs_j < count, other=-1)
        valid = (cols >= init_end) & (cols < local_start)
        rows = tl.where(valid, cols, 0).to(tl.int64)  # ignored entries load row 0, a real row
        m, l, acc = _attend(q, m, l, acc, k_base + rows[:, None] * stride_kt, v_base + rows[:, None] * stride_vt,
                            cols_d, valid[None, :], not EVEN_D, True, ACC_IN_DOT, DTYPE, INTERPRET)
    for n0 in range(local_start, m0, BLOCK_N):  # local window before the block: whole steps (BLOCK_N | BLOCK_M)
        offs_n = (n0 + tl.arange(0, BLOCK_N)).to(tl.int64)
        m, l, acc = _attend(q, m, l, acc, k_base + offs_n[:, None] * stride_kt, v_base + offs_n[:, None] * stride_vt,
                            cols_d, None, not EVEN_D, False, ACC_IN_DOT, DTYPE, INTERPRET)
    for n0 in range(m0, tl.minimum(m0 + BLOCK_M, T), BLOCK_N):  # the diagonal block, causal
        offs_n = (n0 + tl.arange(0, BLOCK_N)).to(tl.int64)
        m, l, acc = _attend(q, m, l, acc, k_base + offs_n[:, None] * stride_kt, v_base + offs_n[:, None] * stride_vt,
                            (offs_n < T)[:, None] & cols_d, offs_n[None, :] <= offs_m[:, None], True, True,
                            ACC_IN_DOT, DTYPE, INTERPRET)
    out = acc / tl.where(l == 0.0, 1.0, l)[:, None]
    tl.store(o_ptr + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :],
             out.to(o_ptr.dtype.element_ty), mask=(offs_m < T)[:, None] & mask_d[None, :])


def default_config() -> PrefillConfig:
    """The GPU's tunables, or small tiles in the interpreter (TRITON_INTERPRET=1)."""
    return INTERPRETER_CONFIG if interpreting() else PrefillConfig()


def stripe_prefill(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, stripes: torch.Tensor, counts: torch.Tensor, *,
    block_size: int = 128, step: int = 16, init_blocks: int = 1, local_blocks: int = 1, scale: float | None = None,
    config: PrefillConfig | None = None,
) -> torch.Tensor:
    """Causal prefill attention over each query's anchor region plus its region's stripes.

    q [B, Hq, T, D], k and v [B, Hkv, T, D] (Hq a multiple of Hkv). Regions are R = block_size * step
    tokens; a query in region r sees the first init_blocks regions, the local_blocks regions ending
    with its own (causally), and stripes[b, h, r, :counts[b, h, r]] — int32 [B, Hq, NR, W] key
    positions, as `find_stripes` returns them; entries outside the gap between the initial and the
    local region are ignored. Returns [B, Hq, T, D] in q's dtype. config: launch tunables
    (`default_config()` when None); block_m is capped at R and block_n at the capped block_m.
    """
    validate(q, k, v)
    check_regions(block_size, step, init_blocks, local_blocks)
    b, hq, t, d = q.shape
    r_size = block_size * step
    nr = triton.cdiv(t, r_size)
    check_rank("stripes", stripes, 4, "[B, Hq, NR, W]")
    check_shape("stripes", stripes, (b, hq, nr, stripes.shape[3]), f"[B, Hq, NR={nr}, W]")
    check_shape("counts", counts, (b, hq, nr), f"[B, Hq, NR={nr}]")
    for name, x in (("stripes", stripes), ("counts", counts)):
        if x.dtype != torch.int32:
            raise ValueError(f"{name}: expected dtype torch.int32, got {x.dtype}")
    check_device(q, stripes=stripes, counts=counts)
    q, k, v, stripes, counts = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v, stripes, counts))
    out = torch.empty_like(q)
    if out.numel() == 0:
        return out
    config = config or default_config()
    block_m = min(config.block_m, r_size)  # divides R: a program's queries share one region
    block_n = min(config.block_n, block_m)
    block_d = next_pow2(d, 16)
    num_m = triton.cdiv(t, block_m)
    width = stripes.shape[3]
    clean = torch.empty((b, hq, nr), device=q.device, dtype=torch.int32)
    _clean_kernel[(b * hq * nr,)](stripes, counts, clean, stripes.stride(0), stripes.stride(1), stripes.stride(2),
                                  counts.stride(0), counts.stride(1), hq, nr, width, R=r_size, INIT=init_blocks,
                                  LOCAL=local_blocks, BLOCK=1024, num_warps=4)
    _prefill_kernel[(num_m * b * hq,)](
        q, k, v, stripes, counts, clean, out,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), stripes.stride(0), stripes.stride(1), stripes.stride(2),
        counts.stride(0), counts.stride(1), out.stride(0), out.stride(1), out.stride(2),
        hq, t, nr, width, num_m, default_scale(scale, d) * LOG2E,
        D=d, G=hq // k.shape[1], R=r_size, INIT=init_blocks, LOCAL=local_blocks,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_S=config.block_s or block_n, TAIL_S=config.tail_s, BLOCK_D=block_d,
        EVEN_D=d == block_d,
        HEAVY_FIRST=config.heavy_first, GROUP_HEADS=config.group_heads, ACC_IN_DOT=config.acc_in_dot,
        DTYPE=tl_dtype(q.dtype), INTERPRET=interpreting(), num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return out
