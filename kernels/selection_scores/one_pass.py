"""`selection_scores` in one pass over the keys: each program holds its keys' scores across a grid barrier.

A head's probabilities need its log-sum-exp over all N keys, so the two-pass plan (scores.py) reads K twice.
Here a program (batch row, KV head, split of the keys) computes its split's scores once and holds them in
registers ([rows, split] fp32, at most HELD_LIMIT values), stores its split's log-sum-exp, and waits at a
barrier (an atomic count per batch row and KV head) until every split of its head has stored one; then it
merges them, turns the held scores into probabilities and, as pass 2 does, takes the max over heads and sums
steps and pages. K is read once, and nothing per head leaves a program but its rows' log-sum-exp.

A barrier inside a kernel needs the programs it waits for to be running. A barrier's S programs are adjacent
in launch order (the split is the grid's fastest axis), and S is at most the multiprocessor count, while two
programs fit a multiprocessor (116 registers a thread at 8 warps, 37 KB shared; sm_90). The plan assumes what
CUDA does but does not promise: programs start in launch order. Then the oldest unfinished barrier's programs
fit on the GPU together whatever else of this grid is resident, as long as other work (a kernel on another
stream, an MPS thread limit) leaves at least half the multiprocessors free; else it can hang, and
`one_pass=False` is the plan without a barrier. The CPU interpreter runs programs one after another, so there
the same kernel is launched twice: once to store the log-sum-exps, once to finish without waiting.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from workbench_kernels._common import next_pow2
from workbench_kernels.selection_scores.rows import finish, log2_sum, meet, merge_lse, row_scores

HELD_LIMIT = 8192  # fp32 scores a program holds: 32 registers a thread at 8 warps, 64 at 4
MIN_SPLIT = 256  # keys a program at least
WARPS = 8  # faster than 4 and 16 at 8k, 32k and 128k keys in `bench --sweep`


@triton.jit
def _one_pass_kernel(
    q_ptr, k_ptr, lse_ptr, ready_ptr, best_ptr, arrived_ptr, out_ptr,
    stride_qb, stride_qh, stride_qq, stride_kb, stride_kh, stride_kn, stride_ob, stride_oh,
    HKV, N, NQ, D, S, qk_scale,
    G: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_R: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCKS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr, PAGE: tl.constexpr,
    PER_KV_HEAD: tl.constexpr, SHARED: tl.constexpr, STORE: tl.constexpr, FINISH: tl.constexpr,
    DTYPE: tl.constexpr, INTERPRET: tl.constexpr,
):
    """Scores of BLOCKS key blocks for one KV head's ROWS rows: its G heads padded to a power of two, times
    BLOCK_Q steps (row_scores' BLOCK_R rows pad these further, up to the tensor-core tile, and are folded away).
    STORE: store the split's log-sum-exp; FINISH: merge every split's and write the scores; both: wait in
    between (the GPU)."""
    pid_s, pid_bh = tl.program_id(0), tl.program_id(1)
    b = (pid_bh // HKV).to(tl.int64)
    h = pid_bh % HKV
    first = pid_s * (BLOCKS * BLOCK_N)
    which = tl.arange(0, BLOCKS)
    held = tl.full([ROWS, BLOCKS, BLOCK_N], float("-inf"), tl.float32)
    for i in range(tl.minimum(BLOCKS, tl.cdiv(N - first, BLOCK_N))):
        offs_n = first + i * BLOCK_N + tl.arange(0, BLOCK_N)
        s = row_scores(q_ptr, k_ptr, b, h, offs_n, N, NQ, D, qk_scale,
                       stride_qb, stride_qh, stride_qq, stride_kb, stride_kh, stride_kn,
                       G, BLOCK_Q, BLOCK_R, BLOCK_D, DTYPE, INTERPRET)
        s = tl.max(tl.reshape(s, [BLOCK_R // ROWS, ROWS, BLOCK_N]), 0)  # rows past ROWS are padding: -inf
        held = tl.where((which == i)[None, :, None], s[:, None, :], held)
    rows = tl.arange(0, ROWS)
    lse_row = lse_ptr + pid_bh.to(tl.int64) * S * ROWS  # this head's [S, ROWS] parts
    if STORE:
        m = tl.max(tl.max(held, 2), 1)
        l = tl.sum(tl.sum(tl.exp2(held - tl.where(m == float("-inf"), 0.0, m)[:, None, None]), 2), 1)
        tl.store(lse_row + pid_s * ROWS + rows, log2_sum(m, l))
        if FINISH:  # the barrier: every split of this head has stored its part
            tl.debug_barrier()  # every thread's part is stored before the count
            count = tl.atomic_add(ready_ptr + pid_bh, 1, sem="acq_rel") + 1
            while count < S:
                count = tl.atomic_add(ready_ptr + pid_bh, 0, sem="acquire")
            tl.debug_barrier()
    if FINISH:
        offs_s = tl.arange(0, BLOCK_S)
        parts = tl.load(lse_row + offs_s[:, None] * ROWS + rows[None, :], mask=(offs_s < S)[:, None],
                        other=float("-inf"), cache_modifier=".cg")  # .cg: from L2, where the others stored
        lse = merge_lse(parts)
        p = tl.exp2(held - tl.where(lse == float("-inf"), 0.0, lse)[:, None, None])  # masked keys give 0
        group = tl.max(tl.reshape(p, [ROWS // BLOCK_Q, BLOCK_Q, BLOCKS * BLOCK_N]), 0)  # [BLOCK_Q, split]
        if PER_KV_HEAD:
            finish(group, out_ptr + b * stride_ob + h * stride_oh, first, N, BLOCKS * BLOCK_N, PAGE)
        elif SHARED:
            meet(group, best_ptr + b * BLOCK_Q * N, arrived_ptr + b * tl.num_programs(0) + pid_s, HKV,
                 out_ptr + b * stride_ob, first, N, BLOCKS * BLOCK_N, PAGE)
        else:
            finish(group, out_ptr + b * stride_ob, first, N, BLOCKS * BLOCK_N, PAGE)


def held_blocks(n: int, rows: int, block_n: int, split_size: int | None, sms: int | None) -> int | None:
    """Key blocks a program of the one-pass plan holds (split_size keys, rounded up to a power of two of key
    blocks), or None where the plan does not fit: more than HELD_LIMIT scores a program, or (sms given: a GPU)
    more splits of a head than multiprocessors.

    By default about sqrt(8 n) keys a program (so sqrt(n / 8) splits a head), at least MIN_SPLIT, and on a GPU
    at least n / sms (the long caches): a program's serial work grows with its keys, the barrier's and the
    merge's with the splits. `bench --sweep` times 256 to 2048 keys a program: this rule picks the fastest at
    8k, 32k and 128k keys (256, 512, 1024)."""
    keys = split_size or max(MIN_SPLIT, math.isqrt(8 * n), triton.cdiv(n, sms) if sms else 0)
    blocks = next_pow2(triton.cdiv(keys, block_n))
    fits = rows * blocks * block_n <= HELD_LIMIT and (sms is None or triton.cdiv(n, blocks * block_n) <= sms)
    return blocks if fits else None


def one_pass_scores(q, k, out, rows: int, blocks: int, consts: dict, qk_scale: float, *, page_size: int | None,
                    per_kv_head: bool, sync: bool, warps: int | None) -> torch.Tensor:
    """Launch the one-pass plan into out, `held_blocks`' blocks a program of `rows` rows; q [B, Hq, Q, D] and k
    with unit last stride. sync: one launch with the barrier (the GPU); else two launches (the interpreter)."""
    b, hkv, n = q.shape[0], k.shape[1], k.shape[2]
    splits = triton.cdiv(n, blocks * consts["BLOCK_N"])
    shared = hkv > 1 and not per_kv_head
    lse = torch.empty((b, hkv, splits, rows), device=q.device, dtype=torch.float32)
    # one zeroed workspace: the barrier counts, the arrival counts, the running maxima (fp32 0.0 is int 0)
    counts = b * hkv + (b * splits if shared else 0)
    work = torch.zeros(counts + (b * consts["BLOCK_Q"] * n if shared else 0), device=q.device, dtype=torch.int32)
    ready, arrived, best = work[:b * hkv], work[b * hkv:counts], work[counts:].view(torch.float32)
    strides = (q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
               out.stride(0), out.stride(1) if per_kv_head else 0)
    steps = [{"STORE": True, "FINISH": True}] if sync else [{"STORE": True, "FINISH": False},
                                                           {"STORE": False, "FINISH": True}]
    for step in steps:
        _one_pass_kernel[(splits, b * hkv)](
            q, k, lse, ready, best, arrived, out, *strides, hkv, n, q.shape[2], q.shape[3], splits, qk_scale,
            ROWS=rows, BLOCKS=blocks, BLOCK_S=next_pow2(splits), PAGE=page_size or 0, PER_KV_HEAD=per_kv_head,
            SHARED=shared, **step, **consts, num_warps=warps or WARPS, num_stages=3)
    return out
