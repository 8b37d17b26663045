"""Triton `selection_scores`: head-aggregated attention probabilities without a per-head matrix.

Two passes over the keys. Pass 1 (split over the keys, like flash-decoding) finds each head's and
query's log-sum-exp. Pass 2 owns a block of keys for one batch row, recomputes the scores of every
head against it, turns them into probabilities with the merged log-sum-exp, and reduces max over
heads and sum over query steps in registers: only the [B, N] (or [B, Hkv, N]) result is written.
The price is reading K twice, the same bytes as one dense decode step reading K and V once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._common import (
    LOG2E,
    check_device,
    check_float,
    check_groups,
    check_rank,
    check_shape,
    default_scale,
    interpreting,
    mma_operand,
    next_pow2,
    tl_dtype,
)


@triton.jit
def _row_scores(q_ptr, k_ptr, b, h, offs_n, N, NQ, D, qk_scale,
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
    k = tl.load(k_ptr + b * stride_kb + h * stride_kh + offs_n[:, None].to(tl.int64) * stride_kn + offs_d[None, :],
                mask=(offs_n < N)[:, None] & (offs_d < D)[None, :], other=0.0)
    s = tl.dot(mma_operand(q * qk_scale, DTYPE, INTERPRET), tl.trans(mma_operand(k, DTYPE, INTERPRET)),
               input_precision="ieee")
    visible = row_ok[:, None] & (offs_n[None, :] <= (N - NQ + step)[:, None])  # causal; also < N
    return tl.where(visible, s, float("-inf"))


@triton.jit
def _lse_kernel(
    q_ptr, k_ptr, lse_ptr,
    stride_qb, stride_qh, stride_qq, stride_kb, stride_kh, stride_kn,
    stride_lb, stride_lh, stride_ls,
    HKV, N, NQ, D, split, qk_scale,
    G: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, DTYPE: tl.constexpr, INTERPRET: tl.constexpr,
):
    """Pass 1: log2-sum-exp2 of every (head, query) row over this program's split of the keys."""
    pid_s, pid_bh = tl.program_id(0), tl.program_id(1)
    b = (pid_bh // HKV).to(tl.int64)
    h = pid_bh % HKV
    m = tl.full([BLOCK_R], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_R], tl.float32)
    start = pid_s * split
    for off in range(start, tl.minimum(start + split, N), BLOCK_N):
        offs_n = off + tl.arange(0, BLOCK_N)
        s = _row_scores(q_ptr, k_ptr, b, h, offs_n, N, NQ, D, qk_scale,
                        stride_qb, stride_qh, stride_qq, stride_kb, stride_kh, stride_kn,
                        G, BLOCK_Q, BLOCK_R, BLOCK_D, DTYPE, INTERPRET)
        m_new = tl.maximum(m, tl.max(s, 1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        l = l * tl.exp2(m - m_ref) + tl.sum(tl.exp2(s - m_ref[:, None]), 1)
        m = m_new
    lse = tl.where(l == 0.0, float("-inf"), m + tl.log2(tl.where(l == 0.0, 1.0, l)))
    tl.store(lse_ptr + b * stride_lb + h * stride_lh + pid_s * stride_ls + tl.arange(0, BLOCK_R), lse)


@triton.jit
def _scores_kernel(
    q_ptr, k_ptr, lse_ptr, out_ptr,
    stride_qb, stride_qh, stride_qq, stride_kb, stride_kh, stride_kn,
    stride_lb, stride_lh, stride_ls, stride_ob, stride_oh,
    HKV, N, NQ, D, S, qk_scale,
    G: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr, PER_KV_HEAD: tl.constexpr,
    DTYPE: tl.constexpr, INTERPRET: tl.constexpr,
):
    """Pass 2: probabilities of one key block for every head; max over heads, sum over query steps."""
    pid_n, b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_s = tl.arange(0, BLOCK_S)
    offs_r = tl.arange(0, BLOCK_R)
    best = tl.zeros([BLOCK_Q, BLOCK_N], tl.float32)  # max over heads so far, per query step
    for h in range(HKV):
        parts = tl.load(lse_ptr + b * stride_lb + h * stride_lh + offs_s[:, None] * stride_ls + offs_r[None, :],
                        mask=(offs_s < S)[:, None], other=float("-inf"))  # [BLOCK_S, BLOCK_R]
        top = tl.max(parts, 0)
        top = tl.where(top == float("-inf"), 0.0, top)
        total = tl.sum(tl.exp2(parts - top[None, :]), 0)
        lse = tl.where(total == 0.0, float("-inf"), top + tl.log2(tl.where(total == 0.0, 1.0, total)))  # log2 units
        s = _row_scores(q_ptr, k_ptr, b, h, offs_n, N, NQ, D, qk_scale,
                        stride_qb, stride_qh, stride_qq, stride_kb, stride_kh, stride_kn,
                        G, BLOCK_Q, BLOCK_R, BLOCK_D, DTYPE, INTERPRET)
        p = tl.exp2(s - tl.where(lse == float("-inf"), 0.0, lse)[:, None])  # masked rows/keys give 0
        group = tl.max(tl.reshape(p, [BLOCK_R // BLOCK_Q, BLOCK_Q, BLOCK_N]), 0)  # [BLOCK_Q, BLOCK_N]
        if PER_KV_HEAD:
            tl.store(out_ptr + b * stride_ob + h * stride_oh + offs_n, tl.sum(group, 0), mask=offs_n < N)
        else:
            best = tl.maximum(best, group)
    if not PER_KV_HEAD:
        tl.store(out_ptr + b * stride_ob + offs_n, tl.sum(best, 0), mask=offs_n < N)


def pass2_warps(n: int) -> int:
    """Warps of a pass-2 program: 2 from 32k keys (more programs resident to keep the reads in flight), else 4.
    B=1, CUDA graphs, H200 (2026-12-02, sixth session): 128k 0.138 against 0.160 ms, 32k 0.0432 against 0.0443,
    8k 0.0257 against 0.0231; B=8 32k the same."""
    return 2 if n >= 32768 else 4


def validate(q, k) -> None:
    """Raise ValueError (expected vs got) for arguments `selection_scores` cannot take."""
    if not isinstance(q, torch.Tensor) or q.ndim not in (3, 4):
        got = tuple(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__
        raise ValueError(f"q: expected rank 3 [B, Hq, D] or rank 4 [B, Hq, Q, D], got {got}")
    check_rank("k", k, 4, "[B, Hkv, N, D]")
    check_float("q", q)
    check_float("k", k, q.dtype)
    b, hq, d = q.shape[0], q.shape[1], q.shape[-1]
    nq = q.shape[2] if q.ndim == 4 else 1
    check_shape("k", k, (b, k.shape[1], k.shape[2], d), "[B, Hkv, N, D] matching q")
    check_groups(hq, k.shape[1])
    check_device(q, k=k)
    if not 1 <= nq <= k.shape[2]:
        raise ValueError(f"q: expected 1 <= Q <= N query steps, got Q={nq}, N={k.shape[2]}")
    if d > 256:
        raise ValueError(f"q: expected head dim D <= 256, got {d}")


def selection_scores(
    q: torch.Tensor, k: torch.Tensor, *, scale: float | None = None, per_kv_head: bool = False,
    split_size: int | None = None,
) -> torch.Tensor:
    """Attention probabilities of the last query step(s) over all N cached keys, aggregated over heads.

    q [B, Hq, D] or [B, Hq, Q, D] (the last Q positions; query j sees keys 0..N-Q+j); k [B, Hkv, N, D].
    Per head and query: softmax over the keys; then max over all heads -> [B, N] fp32, or with
    per_kv_head max over each KV group's heads -> [B, Hkv, N]; then summed over the Q steps (DELTA's
    aggregation, see naive.py). Page scores: `select.page_scores(scores, 16)`. split_size: keys per
    program in pass 1 (default: enough programs to fill the GPU).
    """
    validate(q, k)
    if q.ndim == 3:
        q = q[:, :, None]
    q, k = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k))
    b, hq, nq, d = q.shape
    hkv, n = k.shape[1], k.shape[2]
    g = hq // hkv
    block_q = next_pow2(nq)
    block_r = next_pow2(g, max(1, 16 // block_q)) * block_q
    block_n, block_d = (64 if n >= 64 else 16), next_pow2(d, 16)
    if split_size is None:
        programs = torch.cuda.get_device_properties(q.device).multi_processor_count * 2 if q.is_cuda else 1
        # at least 512 keys a program: at B=1, N=8k, 0.0236 ms against 0.0262 with 1024 and 0.0250 with 256
        # (CUDA graphs, H200, 2026-12-02); larger caches get more keys a program anyway
        split_size = max(512, triton.cdiv(n, max(1, programs // (b * hkv))))
    split = triton.cdiv(split_size, block_n) * block_n
    splits = triton.cdiv(n, split)
    out = torch.empty((b, hkv, n) if per_kv_head else (b, n), device=q.device, dtype=torch.float32)
    lse = torch.empty((b, hkv, splits, block_r), device=q.device, dtype=torch.float32)
    if out.numel() == 0:
        return out
    consts = {"G": g, "BLOCK_Q": block_q, "BLOCK_R": block_r, "BLOCK_N": block_n, "BLOCK_D": block_d,
                  "DTYPE": tl_dtype(q.dtype), "INTERPRET": interpreting()}
    strides = (q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
               lse.stride(0), lse.stride(1), lse.stride(2))
    qk_scale = default_scale(scale, d) * LOG2E
    _lse_kernel[(splits, b * hkv)](q, k, lse, *strides, hkv, n, nq, d, split, qk_scale,
                                  **consts, num_warps=4, num_stages=3)
    stride_oh = out.stride(1) if per_kv_head else 0
    _scores_kernel[(triton.cdiv(n, block_n), b)](
        q, k, lse, out, *strides, out.stride(0), stride_oh, hkv, n, nq, d, splits, qk_scale,
        BLOCK_S=next_pow2(splits), PER_KV_HEAD=per_kv_head, **consts, num_warps=pass2_warps(n), num_stages=3)
    return out
