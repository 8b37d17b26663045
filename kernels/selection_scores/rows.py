"""The Triton pieces both plans of `selection_scores` share (scores.py's two passes, one_pass.py's one).

A program owns the scores of one KV head's query rows for some keys: row r is query head h * G + r // BLOCK_Q
at query step r % BLOCK_Q. It needs those rows' log-sum-exp over all N keys, merged from per-split parts;
then takes the max over the group's heads, meets the other KV heads' programs of the same keys (`meet`) and
writes token or page scores (`finish`). All in log2 units: scores are pre-scaled by log2(e).
"""

from __future__ import annotations

import triton
import triton.language as tl

from workbench_kernels._triton import mma_operand


@triton.jit
def row_scores(q_ptr, k_ptr, b, h, offs_n, N, NQ, D, qk_scale,
               stride_qb, stride_qh, stride_qq, stride_kb, stride_kh, stride_kn,
               G: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
               DTYPE: tl.constexpr, INTERPRET: tl.constexpr):
    """Scaled scores (log2 units) of KV head h's query rows against keys offs_n -> [BLOCK_R, BLOCK_N].

    Row r is head h * G + r // BLOCK_Q and query step r % BLOCK_Q; masked entries are -inf.
    """
    offs_r = tl.arange(0, BLOCK_R)
    head, step = offs_r // BLOCK_Q, offs_r % BLOCK_Q
    row_ok = (head < G) & (step < NQ)
    offs_d = tl.arange(0, BLOCK_D)
    q = tl.load(q_ptr + b * stride_qb + (h * G + head)[:, None] * stride_qh + step[:, None] * stride_qq
                + offs_d[None, :], mask=row_ok[:, None] & (offs_d < D)[None, :], other=0.0).to(tl.float32)
    k_head = k_ptr + b * stride_kb + h.to(tl.int64) * stride_kh  # int64: h * stride_kh can pass 2**31
    k = tl.load(k_head + offs_n[:, None].to(tl.int64) * stride_kn + offs_d[None, :],
                mask=(offs_n < N)[:, None] & (offs_d < D)[None, :], other=0.0)
    s = tl.dot(mma_operand(q * qk_scale, DTYPE, INTERPRET), tl.trans(mma_operand(k, DTYPE, INTERPRET)),
               input_precision="ieee")
    visible = row_ok[:, None] & (offs_n[None, :] <= (N - NQ + step)[:, None])  # causal; also < N
    return tl.where(visible, s, float("-inf"))


@triton.jit
def log2_sum(m, l):
    """m + log2(l) (a row's log2-sum-exp2 from its max and its sum of exp2(s - m)); -inf where l = 0 (no key)."""
    return tl.where(l == 0.0, float("-inf"), m + tl.log2(tl.where(l == 0.0, 1.0, l)))


@triton.jit
def merge_lse(parts):
    """Per-split log2-sum-exp2 parts [S, R] (-inf: nothing visible in that split) -> the rows' [R]."""
    top = tl.max(parts, 0)
    top = tl.where(top == float("-inf"), 0.0, top)
    return log2_sum(top, tl.sum(tl.exp2(parts - top[None, :]), 0))


@triton.jit
def finish(best, out_ptr, first, N,
           WIDTH: tl.constexpr, PAGE: tl.constexpr):
    """Write the scores of keys first .. first + WIDTH (first a multiple of PAGE): best [BLOCK_Q, WIDTH] (max
    over heads per query step) summed over the steps -> token scores, or with PAGE > 0 their sums over
    PAGE-token pages (fp64, rounded once, as select.page_scores: the same sums whatever the order of the
    additions)."""
    tokens = tl.sum(best, 0)  # [WIDTH]; keys past N are 0
    if PAGE == 0:
        offs_n = first + tl.arange(0, WIDTH)
        tl.store(out_ptr + offs_n, tokens, mask=offs_n < N)
    else:
        pages = tl.sum(tl.reshape(tokens.to(tl.float64), [WIDTH // PAGE, PAGE]), 1).to(tl.float32)
        offs_p = first // PAGE + tl.arange(0, WIDTH // PAGE)
        tl.store(out_ptr + offs_p, pages, mask=offs_p < tl.cdiv(N, PAGE))


@triton.jit
def meet(group, best_ptr, arrived_ptr, sharers, out_ptr, first, N, WIDTH: tl.constexpr, PAGE: tl.constexpr):
    """The KV heads of keys first .. first + WIDTH meet: each of the `sharers` programs folds its group maxima
    [BLOCK_Q, WIDTH] into the running maxima at best_ptr ([BLOCK_Q, N], zeroed; an atomic max is exact in any
    order), and the last to arrive (an atomic count at arrived_ptr, zeroed) reads them back and `finish`es."""
    offs_n = first + tl.arange(0, WIDTH)
    offs_q = tl.arange(0, group.shape[0])
    slots = best_ptr + offs_q[:, None] * N + offs_n[None, :]
    in_range = tl.broadcast_to((offs_n < N)[None, :], group.shape)
    tl.atomic_max(slots, group, mask=in_range)  # acq_rel: ordered before the count below
    tl.debug_barrier()  # every thread's maxima are in before the keys count as arrived
    if tl.atomic_add(arrived_ptr, 1) == sharers - 1:
        # the maxima read back by an atomic: served by L2, which holds every program's contribution
        best = tl.maximum(tl.atomic_max(slots, group, mask=in_range), group)
        finish(tl.where(in_range, best, 0.0), out_ptr, first, N, WIDTH, PAGE)
