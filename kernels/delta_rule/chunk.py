"""Triton chunked delta rule (WY/UT form) for prefill, optionally gated, with the state returned.

Two kernels. `_prepare_kernel` runs on every chunk in parallel: it builds T = (I + A)^-1 by blocked
forward substitution (A_ij = beta_i k_i.k_j exp(gc_i - gc_j), i > j), then w = T(beta exp(gc) k),
u = T(beta v), the causal intra-chunk scores P = scale tril(q k^T exp(gc_i - gc_j)), and from them
q~ = scale exp(gc) q - P w and o~ = P u. `_state_kernel` then walks the chunks in order, carrying the
state S [K, BV] in registers: e = u - w S, o = o~ + q~ S, S <- exp(gc_last) S + k^T (exp(gc_last - gc) e).

Departure from flash-linear-attention (fla/ops/delta_rule/chunk.py + wy_fast.py + common/chunk_delta_h.py
+ chunk_o.py): fla stores the state of every chunk ([B, NT, H, K, V]) and the corrected values, then
runs a third, parallel kernel for the output. Folding the output's state-independent parts into
q~ and o~ (o = P e + scale exp(gc) q S = o~ + q~ S) lets the sequential kernel finish the output with
one more matrix product and never write the per-chunk states: fewer bytes, one launch less, the same
number of products on the sequential path as fla's state kernel.

Precision (a departure too): fla rounds to bf16 throughout (w, u, the per-chunk states, the
corrected values); a variant of this kernel making the same choices measured 1.5x (2.3x gated) as
far from fp32 as the plain bf16 recurrence (docs/kernels-notes.md). Here the products of T, of P and of the state use tf32 (exact fp32 for fp32 inputs), q~ and o~ are
stored in fp32, and only w and u are stored in the inputs' dtype: within the 2x bound, at the cost
of two fp32 intermediates and tf32 (half-rate) products.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._common import (
    check_device,
    check_float,
    check_rank,
    check_shape,
    default_scale,
    interpreting,
    mma_operand,
    next_pow2,
    tl_dtype,
    wide_operand,
    wide_precision,
)


@triton.jit
def _unit_lower_inverse(a, BT: tl.constexpr, WIDE: tl.constexpr, INTERPRET: tl.constexpr):
    """(I - a)^-1 for a strictly lower [BT, BT] fp32 matrix, BT a multiple of 16.

    Split a = D + O into its 16 x 16 diagonal blocks D and the blocks below them, O. Forward
    substitution inverts I - D in the diagonal blocks, all at once (15 steps instead of BT - 1);
    then I - a = (I - D)(I - N) with N = (I - D)^-1 O strictly block-lower, so N^(BT/16) = 0 and
    (I - a)^-1 = (I + N + ... + N^(BT/16 - 1)) (I - D)^-1: a few [BT, BT] products instead of a
    long sequential loop. (fla's solve_tril also substitutes in 16 x 16 blocks, then merges them
    block by block.)
    """
    o_b, o_r = tl.arange(0, BT // 16), tl.arange(0, 16)
    bi, bj = o_b[:, None, None, None], o_b[None, None, :, None]
    r1, r2 = o_r[None, :, None], o_r[None, None, :]
    d = tl.sum(tl.where(bi == bj, tl.reshape(a, [BT // 16, 16, BT // 16, 16]), 0.0), 2)  # [NB, 16, 16] diagonal blocks
    for r in tl.static_range(1, 16):  # row r of every diagonal block: e_r + sum_{c<r} a_rc T_c
        row = tl.sum(tl.where(r1 == r, d, 0.0), 1)  # [NB, 16]
        row = row + tl.sum(row[:, :, None] * d, 1) * (o_r[None, :] < r)
        d = tl.where(r1 == r, row[:, None, :], d)
    d = d + (r1 == r2).to(tl.float32)
    d_inv = wide_operand(tl.reshape(tl.where(bi == bj, d[:, :, None, :], 0.0), [BT, BT]), WIDE, INTERPRET)
    offs = tl.arange(0, BT)
    eye = (offs[:, None] == offs[None, :]).to(tl.float32)
    below_blocks = (offs[:, None] // 16) > (offs[None, :] // 16)
    n = tl.dot(d_inv, wide_operand(tl.where(below_blocks, a, 0.0), WIDE, INTERPRET), input_precision=WIDE)
    n_wide = wide_operand(n, WIDE, INTERPRET)
    series = eye + n
    for _ in tl.static_range(BT // 16 - 2):  # Horner: I + N (I + N (...)), NB = BT / 16 terms
        series = eye + tl.dot(n_wide, wide_operand(series, WIDE, INTERPRET), input_precision=WIDE)
    return tl.dot(wide_operand(series, WIDE, INTERPRET), d_inv, input_precision=WIDE)


@triton.jit
def _prepare_kernel(
    q_ptr, k_ptr, v_ptr, beta_ptr, g_ptr, w_ptr, u_ptr, qt_ptr, ot_ptr,
    T, H, K, V, scale,
    BT: tl.constexpr, BK: tl.constexpr, BV_ALL: tl.constexpr, BV: tl.constexpr, USE_G: tl.constexpr,
    PART: tl.constexpr, DTYPE: tl.constexpr, WIDE: tl.constexpr, INTERPRET: tl.constexpr,
):
    """PART 0 does everything; PART 1 only T, w, u; PART 2 only P, q~, o~, reading w and u back."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    b, h = i_bh // H, i_bh % H
    offs_c = tl.arange(0, BT)
    mask_t = i_t * BT + offs_c < T
    first = (b * T + i_t * BT).to(tl.int64) * H + h  # (token, head) index of the chunk's first row
    offs_k, offs_v = tl.arange(0, BK), tl.arange(0, BV)
    at_k = offs_c[:, None] * H * K + offs_k[None, :]  # [BT, BK] offsets from q/k/w/q~ + first * K
    mask_k = mask_t[:, None] & (offs_k < K)[None, :]

    beta = tl.load(beta_ptr + first + offs_c * H, mask=mask_t, other=0.0).to(tl.float32)
    if USE_G:
        gc = tl.cumsum(tl.load(g_ptr + first + offs_c * H, mask=mask_t, other=0.0).to(tl.float32), 0)
    else:
        gc = tl.zeros([BT], tl.float32)
    # exp(gc_i - gc_j) on and below the diagonal, 0 above; recomputed where used (register pressure)
    causal = offs_c[:, None] >= offs_c[None, :]
    k_mma = mma_operand(tl.load(k_ptr + first * K + at_k, mask=mask_k, other=0.0), DTYPE, INTERPRET)

    if PART != 2:
        kk = tl.dot(k_mma, tl.trans(k_mma), input_precision="ieee")  # [BT, BT]
        decay = tl.exp(tl.where(causal, gc[:, None] - gc[None, :], float("-inf")))
        a = tl.where(offs_c[:, None] > offs_c[None, :], -beta[:, None] * kk * decay, 0.0)  # L = -A, strictly lower
        t_wide = wide_operand(_unit_lower_inverse(a, BT, WIDE, INTERPRET), WIDE, INTERPRET)  # T = (I + A)^-1
        k_scaled = k_mma.to(tl.float32) * (beta * tl.exp(gc))[:, None]  # exact: k is already in DTYPE
        w = tl.dot(t_wide, wide_operand(k_scaled, WIDE, INTERPRET), input_precision=WIDE)
        tl.store(w_ptr + first * K + at_k, w.to(w_ptr.dtype.element_ty), mask=mask_k)
    else:
        w = tl.load(w_ptr + first * K + at_k, mask=mask_k, other=0.0).to(tl.float32)
    if PART != 1:
        q = tl.load(q_ptr + first * K + at_k, mask=mask_k, other=0.0).to(tl.float32)
        decay = tl.exp(tl.where(causal, gc[:, None] - gc[None, :], float("-inf")))
        p = tl.dot(mma_operand(q, DTYPE, INTERPRET), tl.trans(k_mma), input_precision="ieee") * decay * scale
        p_wide = wide_operand(p, WIDE, INTERPRET)
        qt = q * (tl.exp(gc) * scale)[:, None] - tl.dot(p_wide, wide_operand(w, WIDE, INTERPRET),
                                                         input_precision=WIDE)
        tl.store(qt_ptr + first * K + at_k, qt, mask=mask_k)
    for i_v in tl.static_range(0, BV_ALL // BV):  # value slices (BV divides BV_ALL): fewer live registers
        at_v = offs_c[:, None] * H * V + i_v * BV + offs_v[None, :]  # [BT, BV] offsets from v/u/o~ + first * V
        mask_v = mask_t[:, None] & (i_v * BV + offs_v < V)[None, :]
        if PART != 2:
            v = tl.load(v_ptr + first * V + at_v, mask=mask_v, other=0.0).to(tl.float32)
            u = tl.dot(t_wide, wide_operand(v * beta[:, None], WIDE, INTERPRET), input_precision=WIDE)
            tl.store(u_ptr + first * V + at_v, u.to(u_ptr.dtype.element_ty), mask=mask_v)
        else:
            u = tl.load(u_ptr + first * V + at_v, mask=mask_v, other=0.0).to(tl.float32)
        if PART != 1:
            ot = tl.dot(p_wide, wide_operand(u, WIDE, INTERPRET), input_precision=WIDE)
            tl.store(ot_ptr + first * V + at_v, ot, mask=mask_v)


@triton.jit
def _state_kernel(
    k_ptr, g_ptr, w_ptr, u_ptr, qt_ptr, ot_ptr, o_ptr, h0_ptr, ht_ptr,
    T, NT, H, K, V,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, USE_G: tl.constexpr,
    HAS_H0: tl.constexpr, STORE_HT: tl.constexpr, DTYPE: tl.constexpr, WIDE: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    b, h = i_bh // H, i_bh % H
    offs_c, offs_k = tl.arange(0, BT), tl.arange(0, BK)
    offs_v = i_v * BV + tl.arange(0, BV)
    state_at = i_bh.to(tl.int64) * K * V + offs_k[:, None] * V + offs_v[None, :]  # into [B, H, K, V]
    state_mask = (offs_k < K)[:, None] & (offs_v < V)[None, :]
    if HAS_H0:
        state = tl.load(h0_ptr + state_at, mask=state_mask, other=0.0).to(tl.float32)
    else:
        state = tl.zeros([BK, BV], tl.float32)
    at_k = offs_c[:, None] * H * K + offs_k[None, :]
    at_v = offs_c[:, None] * H * V + offs_v[None, :]
    for i_t in range(NT):  # the chunks, in order
        mask_t = i_t * BT + offs_c < T
        first = (b * T + i_t * BT).to(tl.int64) * H + h
        mask_k = mask_t[:, None] & (offs_k < K)[None, :]
        mask_v = mask_t[:, None] & (offs_v < V)[None, :]
        w = wide_operand(tl.load(w_ptr + first * K + at_k, mask=mask_k, other=0.0), WIDE, INTERPRET)
        qt = wide_operand(tl.load(qt_ptr + first * K + at_k, mask=mask_k, other=0.0), WIDE, INTERPRET)
        k = tl.load(k_ptr + first * K + at_k, mask=mask_k, other=0.0)
        u = tl.load(u_ptr + first * V + at_v, mask=mask_v, other=0.0).to(tl.float32)
        ot = tl.load(ot_ptr + first * V + at_v, mask=mask_v, other=0.0).to(tl.float32)
        s_wide = wide_operand(state, WIDE, INTERPRET)
        err = u - tl.dot(w, s_wide, input_precision=WIDE)  # [BT, BV]
        out = ot + tl.dot(qt, s_wide, input_precision=WIDE)
        tl.store(o_ptr + first * V + at_v, out.to(o_ptr.dtype.element_ty), mask=mask_v)
        if USE_G:
            g = tl.load(g_ptr + first + offs_c * H, mask=mask_t, other=0.0).to(tl.float32)
            g_last = tl.sum(g, 0)
            state = state * tl.exp(g_last)
            err = err * tl.exp(g_last - tl.cumsum(g, 0))[:, None]  # (k exp(..))^T e = k^T (exp(..) e): fewer registers
        state += tl.dot(tl.trans(mma_operand(k, DTYPE, INTERPRET)), mma_operand(err, DTYPE, INTERPRET),
                        input_precision="ieee")
    if STORE_HT:
        tl.store(ht_ptr + state_at, state, mask=state_mask)


def validate(q, k, v, beta, g, initial_state) -> None:
    """Raise ValueError (expected vs got) for arguments the delta-rule functions cannot take."""
    check_rank("q", q, 4, "[B, T, H, K]")
    check_rank("k", k, 4, "[B, T, H, K]")
    check_rank("v", v, 4, "[B, T, H, V]")
    check_rank("beta", beta, 3, "[B, T, H]")
    for name, t in (("q", q), ("k", k), ("v", v), ("beta", beta)):
        check_float(name, t, None if name == "q" else q.dtype)
    b, t, h, dk = q.shape
    check_shape("k", k, q.shape, "[B, T, H, K] (same as q)")
    check_shape("v", v, (b, t, h, v.shape[-1]), "[B, T, H, V] matching q")
    check_shape("beta", beta, (b, t, h), "[B, T, H]")
    if g is not None:
        check_rank("g", g, 3, "[B, T, H]")
        check_float("g", g, q.dtype)
        check_shape("g", g, (b, t, h), "[B, T, H]")
    if initial_state is not None:
        check_rank("initial_state", initial_state, 4, "[B, H, K, V]")
        check_float("initial_state", initial_state)
        check_shape("initial_state", initial_state, (b, h, dk, v.shape[-1]), "[B, H, K, V]")
    check_device(q, k=k, v=v, beta=beta, g=g, initial_state=initial_state)
    if dk > 256 or v.shape[-1] > 256:
        raise ValueError(f"expected head dims K, V <= 256, got K={dk}, V={v.shape[-1]}")


def _state_block_v(dk: int, dv: int, block_v: int | None, device: torch.device) -> int:
    """Value columns per program of the state kernel: all of them on CPU (one slice is fastest in the
    interpreter), 64 on CUDA.

    Narrower slices would give more programs, but with K = 128 they broke on the H200 under triton 3.6
    (2026-12-01: 16 columns an illegal memory access, 32 columns NaN outputs, 64 columns right), so
    they are refused there rather than left to fail silently.
    """
    if block_v is None:
        return next_pow2(dv, 16) if device.type != "cuda" else min(64, next_pow2(dv, 16))
    if device.type == "cuda" and dk > 64 and block_v < 64:
        raise ValueError(f"block_v: expected at least 64 on CUDA for K > 64 (narrower slices miscompute with "
                         f"triton 3.6), got {block_v} with K={dk}")
    return block_v


def chunk_delta_rule(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, *, g: torch.Tensor | None = None,
    scale: float | None = None, initial_state: torch.Tensor | None = None, output_final_state: bool = False,
    chunk_size: int = 64, block_v: int | None = None, split_prepare: bool = False,
):
    """Chunked delta rule forward (the gated variant when g is given).

    q, k [B, T, H, K] (k L2-normalised by the caller, as in DeltaNet), v [B, T, H, V], beta [B, T, H]
    in (0, 1) (or (0, 2) for negative eigenvalues), g [B, T, H] log decay <= 0, initial_state
    [B, H, K, V]. scale defaults to K**-0.5. chunk_size: 16, 32 or 64. block_v: value columns per
    program of the sequential pass (default: all on CPU, 64 on CUDA). split_prepare runs the parallel pass as
    two lighter kernels (T, w, u; then P, q~, o~ from w, u read back in the inputs' dtype): more
    programs per SM for one more launch and a re-read; the benchmark times both.

    Returns (o [B, T, H, V] in v's dtype, final state [B, H, K, V] fp32 or None).
    """
    validate(q, k, v, beta, g, initial_state)
    if chunk_size not in (16, 32, 64):
        raise ValueError(f"chunk_size: expected 16, 32 or 64, got {chunk_size}")
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
    g = g.contiguous() if g is not None else None
    h0 = initial_state.contiguous() if initial_state is not None else None
    bk, bv_all = next_pow2(dk, 16), next_pow2(dv, 16)
    bv = _state_block_v(dk, dv, block_v, q.device)
    w, u = torch.empty_like(q), torch.empty_like(v)
    qt, ot = torch.empty_like(q, dtype=torch.float32), torch.empty_like(v, dtype=torch.float32)
    o = torch.empty_like(v)
    ht = torch.empty((b, h, dk, dv), device=q.device, dtype=torch.float32) if output_final_state else None
    if b * h == 0:
        return o, ht
    consts = {"BT": chunk_size, "BK": bk, "USE_G": g is not None, "DTYPE": tl_dtype(q.dtype), "WIDE": wide_precision(q.dtype),
                  "INTERPRET": interpreting()}
    if t > 0:
        for part in (1, 2) if split_prepare else (0,):
            _prepare_kernel[(triton.cdiv(t, chunk_size), b * h)](
                q, k, v, beta, g if g is not None else beta, w, u, qt, ot, t, h, dk, dv, default_scale(scale, dk),
                BV_ALL=bv_all, BV=min(bv_all, 64), PART=part, **consts, num_warps=8, num_stages=1)
    _state_kernel[(triton.cdiv(dv, bv), b * h)](
        k, g if g is not None else beta, w, u, qt, ot, o, h0 if h0 is not None else o, ht if ht is not None else o,
        t, triton.cdiv(t, chunk_size), h, dk, dv, BV=bv, HAS_H0=h0 is not None, STORE_HT=ht is not None,
        **consts, num_warps=8, num_stages=2)
    return o, ht
