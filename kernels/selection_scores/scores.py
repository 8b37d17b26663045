"""Triton `selection_scores`: head-aggregated attention probabilities without a per-head matrix.

`selection_scores` reads K once by one_pass.py's plan where it fits (a program's scores held in registers
across a grid barrier), else twice by this module's two passes, which need no barrier. Pass 1 (split
over the keys, like flash-decoding) finds each head's and query's log-sum-exp. Pass 2 owns a block of
keys for one batch row and either one KV head or all of them in turn: it recomputes the scores of those query heads, turns them into probabilities with the
merged log-sum-exp and takes their max in registers. With one KV head a program, the KV heads of a key
block meet in an atomic max of [B, Q, N] running maxima (exact: max does not depend on the order), and
the last to arrive writes the block. The block's scores are summed over query steps, and over pages if
asked: only the [B, N] (or [B, Hkv, N], or page) result leaves the kernel, never a per-head matrix.
The price is reading K twice, the same bytes as one dense decode step reading K and V once; at small B
the second read comes from L2. Where both plans fit, the one pass is the faster at every size the bench
times (docs/BENCHMARKS.md), so it is the default.

A program a (key block, KV head) suits small grids: at B=1, N=8k a program a key block leaves 128
programs each waiting on eight loads in turn, most of a dense step's time; side by side, the loads are
all in flight at once. On large grids the loop wins (`pass2_heads`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from workbench_kernels._common import LOG2E, default_scale, interpreting, next_pow2
from workbench_kernels._triton import tl_dtype
from workbench_kernels.selection_scores.checks import validate
from workbench_kernels.selection_scores.one_pass import HELD_LIMIT, held_blocks, one_pass_scores
from workbench_kernels.selection_scores.rows import finish, log2_sum, meet, merge_lse, row_scores


@triton.jit
def _lse_kernel(
    q_ptr, k_ptr, lse_ptr, best_ptr, arrived_ptr,
    stride_qb, stride_qh, stride_qq, stride_kb, stride_kh, stride_kn,
    stride_lb, stride_lh, stride_ls,
    HKV, N, NQ, D, split, qk_scale,
    G: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, CLEAR: tl.constexpr, DTYPE: tl.constexpr, INTERPRET: tl.constexpr,
):
    """Pass 1: log2-sum-exp2 of every (head, query) row over this program's split of the keys.

    With CLEAR, the programs of KV head 0 also zero pass 2's running maxima and arrival counts for
    their split's keys (stream order puts this before pass 2, and spares a memset launch).
    """
    pid_s, pid_bh = tl.program_id(0), tl.program_id(1)
    b = (pid_bh // HKV).to(tl.int64)
    h = pid_bh % HKV
    m = tl.full([BLOCK_R], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_R], tl.float32)
    start = pid_s * split
    stop = tl.minimum(start + split, N)
    for off in range(start, stop, BLOCK_N):
        offs_n = off + tl.arange(0, BLOCK_N)
        s = row_scores(q_ptr, k_ptr, b, h, offs_n, N, NQ, D, qk_scale,
                       stride_qb, stride_qh, stride_qq, stride_kb, stride_kh, stride_kn,
                       G, BLOCK_Q, BLOCK_R, BLOCK_D, DTYPE, INTERPRET)
        m_new = tl.maximum(m, tl.max(s, 1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        l = l * tl.exp2(m - m_ref) + tl.sum(tl.exp2(s - m_ref[:, None]), 1)
        m = m_new
    lse = log2_sum(m, l)
    tl.store(lse_ptr + b * stride_lb + h * stride_lh + pid_s * stride_ls + tl.arange(0, BLOCK_R), lse)
    if CLEAR:
        if h == 0:
            offs_q = tl.arange(0, BLOCK_Q)
            for off in range(start, stop, BLOCK_N):  # split is a multiple of BLOCK_N: whole key blocks
                offs_n = off + tl.arange(0, BLOCK_N)
                tl.store(best_ptr + (b * BLOCK_Q + offs_q[:, None]) * N + offs_n[None, :],
                         tl.zeros([BLOCK_Q, BLOCK_N], tl.float32), mask=(offs_n < N)[None, :])
                tl.store(arrived_ptr + b * tl.cdiv(N, BLOCK_N) + off // BLOCK_N, 0)


@triton.jit
def _scores_kernel(
    q_ptr, k_ptr, lse_ptr, best_ptr, arrived_ptr, out_ptr,
    stride_qb, stride_qh, stride_qq, stride_kb, stride_kh, stride_kn,
    stride_lb, stride_lh, stride_ls, stride_ob, stride_oh,
    HKV, N, NQ, D, S, qk_scale,
    G: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr, HEADS: tl.constexpr, SHARED: tl.constexpr,
    PAGE: tl.constexpr, PER_KV_HEAD: tl.constexpr, DTYPE: tl.constexpr, INTERPRET: tl.constexpr,
):
    """Pass 2: probabilities of one key block for HEADS KV heads' query heads, in turn; max over them.

    Per KV head, or when one program takes every KV head, the program owns its output. Otherwise
    (SHARED) the programs of a key block meet in the running maxima [B, BLOCK_Q, N] (atomic max:
    order-free, so exact), and the last of them to arrive (an atomic count) reads the complete
    maxima and writes the block's scores.
    """
    pid_n, pid_bh = tl.program_id(0), tl.program_id(1)
    sharers = HKV // HEADS  # programs a key block
    b = (pid_bh // sharers).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_s = tl.arange(0, BLOCK_S)
    best = tl.zeros([BLOCK_Q, BLOCK_N], tl.float32)
    for i in range(HEADS):
        h = pid_bh % sharers * HEADS + i
        parts = tl.load(lse_ptr + b * stride_lb + h * stride_lh + offs_s[:, None] * stride_ls
                        + tl.arange(0, BLOCK_R)[None, :], mask=(offs_s < S)[:, None], other=float("-inf"))
        lse = merge_lse(parts)  # [BLOCK_R]: the (head, query) rows' log-sum-exp, merged over the splits
        s = row_scores(q_ptr, k_ptr, b, h, offs_n, N, NQ, D, qk_scale,
                       stride_qb, stride_qh, stride_qq, stride_kb, stride_kh, stride_kn,
                       G, BLOCK_Q, BLOCK_R, BLOCK_D, DTYPE, INTERPRET)
        p = tl.exp2(s - tl.where(lse == float("-inf"), 0.0, lse)[:, None])  # masked rows/keys give 0
        group = tl.max(tl.reshape(p, [BLOCK_R // BLOCK_Q, BLOCK_Q, BLOCK_N]), 0)  # [BLOCK_Q, BLOCK_N]
        if PER_KV_HEAD:
            finish(group, out_ptr + b * stride_ob + h * stride_oh, pid_n * BLOCK_N, N, BLOCK_N, PAGE)
        else:
            best = tl.maximum(best, group)
    if not PER_KV_HEAD:
        if SHARED:
            meet(best, best_ptr + b * BLOCK_Q * N, arrived_ptr + b * tl.cdiv(N, BLOCK_N) + pid_n, sharers,
                 out_ptr + b * stride_ob, pid_n * BLOCK_N, N, BLOCK_N, PAGE)
        else:
            finish(best, out_ptr + b * stride_ob, pid_n * BLOCK_N, N, BLOCK_N, PAGE)


def pass2_heads(programs: int, hkv: int, sms: int) -> int:
    """KV heads a pass-2 program takes: one when a program a key block leaves the GPU short of programs (at
    most 2 a multiprocessor), so the heads' loads are in flight side by side, else all of them (no atomics).
    A program a (block, head) helps the short caches (few blocks) and costs the long ones, where atomics across
    heads meet more often (`bench --sweep` compares both)."""
    return 1 if programs < 2 * sms else hkv


MAX_PAGE = 64  # pages are summed inside one key block of pass 2


def fits_page(page_size) -> bool:
    """Whether pass 2 can sum pages of this size itself: a power of two up to MAX_PAGE."""
    return isinstance(page_size, int) and 1 <= page_size <= MAX_PAGE and not page_size & (page_size - 1)


def check_page(page_size) -> None:
    """Raise ValueError unless page_size is None or fits_page."""
    if page_size is not None and not fits_page(page_size):
        raise ValueError(f"page_size: expected a power of two from 1 to {MAX_PAGE} (or None), got {page_size!r}")


def selection_scores(
    q: torch.Tensor, k: torch.Tensor, *, scale: float | None = None, per_kv_head: bool = False,
    page_size: int | None = None, split_size: int | None = None, one_pass: bool | None = None,
    heads_per_program: int | None = None, warps: int | None = None,
) -> torch.Tensor:
    """Attention probabilities of the last query step(s) over all N cached keys, aggregated over heads.

    q [B, Hq, D] or [B, Hq, Q, D] (the last Q positions; query j sees keys 0..N-Q+j); k [B, Hkv, N, D].
    Per head and query: softmax over the keys; then max over all heads -> [B, N] fp32, or with
    per_kv_head max over each KV group's heads -> [B, Hkv, N]; then summed over the Q steps (DELTA's
    aggregation, see naive.py). page_size (a power of two up to MAX_PAGE): the sums over pages of that
    many tokens instead, [B, ceil(N / page_size)] (or [B, Hkv, ...]), equal to
    `select.page_scores(scores, page_size)` and written by the same launch. one_pass: read K once
    (one_pass.py; None: where it fits, unless heads_per_program is given) or twice (this module's two passes);
    split_size: keys a program (of the one pass, default `held_blocks`; of pass 1, default enough programs to
    fill the GPU); heads_per_program: KV heads a pass-2 program takes in turn (1 or Hkv; default
    `pass2_heads`); warps: of the program writing the scores.
    """
    validate(q, k)
    check_page(page_size)
    if q.ndim == 3:
        q = q[:, :, None]
    q, k = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k))
    b, hq, nq, d = q.shape
    hkv, n = k.shape[1], k.shape[2]
    if heads_per_program not in (None, 1, hkv):
        raise ValueError(f"heads_per_program: expected 1 or Hkv={hkv}, got {heads_per_program}")
    if one_pass and heads_per_program is not None:
        raise ValueError("heads_per_program: a setting of the two passes, not of one_pass=True")
    g = hq // hkv
    block_q = next_pow2(nq)
    block_r = next_pow2(g, max(1, 16 // block_q)) * block_q
    block_n = max(64 if n >= 64 else 16, page_size or 1)  # a key block holds whole pages
    block_d = next_pow2(d, 16)
    sms = torch.cuda.get_device_properties(q.device).multi_processor_count if q.is_cuda else None
    width = n if page_size is None else triton.cdiv(n, page_size)
    out = torch.empty((b, hkv, width) if per_kv_head else (b, width), device=q.device, dtype=torch.float32)
    if out.numel() == 0:
        return out
    consts = {"G": g, "BLOCK_Q": block_q, "BLOCK_R": block_r, "BLOCK_N": block_n, "BLOCK_D": block_d,
              "DTYPE": tl_dtype(q.dtype), "INTERPRET": interpreting()}
    qk_scale = default_scale(scale, d) * LOG2E
    rows = next_pow2(g) * block_q
    two = one_pass is False or (one_pass is None and heads_per_program is not None)
    held = None if two else held_blocks(n, rows, block_n, split_size, sms)
    if one_pass and held is None:
        raise ValueError(f"one_pass: a program would hold more than {HELD_LIMIT} scores, or on a GPU a head "
                         f"take more splits than its multiprocessors (N={n}, Q={nq}, split_size={split_size}); "
                         "pass one_pass=None to fall back to two passes")
    if held is not None:
        return one_pass_scores(q, k, out, rows, held, consts, qk_scale, page_size=page_size,
                               per_kv_head=per_kv_head, sync=not interpreting(), warps=warps)
    blocks = triton.cdiv(n, block_n)
    heads = heads_per_program or pass2_heads(b * blocks, hkv, sms or 1)
    shared = heads < hkv and not per_kv_head
    if split_size is None:
        programs = 2 * sms if sms else 1
        # at least 512 keys a program: the fastest of 256, 512 and 1024 at B=1, N=8k (`bench --sweep`); larger
        # caches get more keys a program anyway
        split_size = max(512, triton.cdiv(n, max(1, programs // (b * hkv))))
    split = triton.cdiv(split_size, block_n) * block_n
    splits = triton.cdiv(n, split)
    lse = torch.empty((b, hkv, splits, block_r), device=q.device, dtype=torch.float32)
    best = torch.empty((b, block_q, n) if shared else (0,), device=q.device, dtype=torch.float32)
    arrived = torch.empty((b, blocks) if shared else (0,), device=q.device, dtype=torch.int32)
    strides = (q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
               lse.stride(0), lse.stride(1), lse.stride(2))
    _lse_kernel[(splits, b * hkv)](q, k, lse, best, arrived, *strides, hkv, n, nq, d, split, qk_scale,
                                  CLEAR=shared, **consts, num_warps=4, num_stages=3)
    stride_oh = out.stride(1) if per_kv_head else 0
    _scores_kernel[(blocks, b * (hkv // heads))](
        q, k, lse, best, arrived, out, *strides, out.stride(0), stride_oh, hkv, n, nq, d, splits, qk_scale,
        BLOCK_S=next_pow2(splits), HEADS=heads, SHARED=shared, PAGE=page_size or 0, PER_KV_HEAD=per_kv_head,
        **consts, num_warps=warps or (2 if heads > 1 and n >= 32768 else 4), num_stages=3)
    return out
