"""Triton chunked delta rule (WY/UT form) for prefill, optionally gated, with the state returned.

Three kernels, fla's structure (fla/ops/delta_rule/chunk.py: chunk_scaled_dot_kkt + solve_tril +
wy_fast.recompute_w_u, then common/chunk_delta_h.py, then common/chunk_o.py):

1. `_prepare_kernel`, every chunk in parallel: A_ij = beta_i k_i.k_j exp(gc_i - gc_j) (i > j, gc the
   cumulative log decay), T = (I + A)^-1 by blocked forward substitution, then w = T(beta exp(gc) k)
   and u = T(beta v), stored in the inputs' dtype, and gc itself (fp32 [B, H, T], fla's
   chunk_local_cumsum). One kernel where fla launches three (kkt, the 16x16 -> 64x64 inverse, w/u):
   A and T never leave registers.
2. `_state_kernel`, one program per (batch, head, value slice) walking the chunks in order: it stores
   the state S entering each chunk (h [B, NT, H, K, V]), the corrected values e = u - w S, and updates
   S <- exp(gc_last) S + k^T (exp(gc_last - gc) e), with gc loaded (no reduction in the chain). As in
   fla the state's K rows are held as up to four separate 64-row tiles, never one [128, BV] tile: the
   previous single-kernel design, which kept a [128, BV] state, miscomputed on the H200 for BV < 64
   (triton 3.6), so it had only B*H*V/64 programs.
3. `_output_kernel`, every chunk in parallel: o = scale exp(gc) q S + tril(scale q k^T exp(gc_i - gc_j)) e.

Why not the previous design (a fat parallel kernel folding the state-independent part of the output
into fp32 q~ = scale exp(gc) q - P w and o~ = P u, then one sequential kernel doing e = u - w S,
o = o~ + q~ S and the state update with tf32 products): its sequential pass made three half-rate
products per chunk and read fp32 intermediates, over few programs; it measured 2.1-3.6x slower than
fla on the H200. The sequential pass is the critical path, so it now does only fla's two products.

Precision. Products of the inputs (k k^T, q k^T) are exact in fp32 accumulation. T is built with
tf32 products (exact fp32 for fp32 inputs). w = T(beta exp(gc) k) and u = T(beta v) take fp16
operands by default ("half": tf32's mantissa at the tensor cores' bf16 rate; each column of a chunk's beta v
scaled by a power of two to stay within fp16's range), or bf16 (fla's choice, over the tests' bound gated)
or tf32. The other products each take "low" (operands rounded to the inputs' dtype, fla's choice
throughout) or tf32, and the per-chunk states and corrected values are stored in the inputs' dtype
or fp32: all of it set by `config` (DEFAULT_CONFIG says which was
measured to keep the tests' bound: at most 2x the RMS error of the plain-PyTorch recurrence in the
same precision), so a benchmark can sweep speed against error. With fp32 inputs every choice is
exact fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from workbench_kernels._common import default_scale, interpreting, next_pow2, wide_precision
from workbench_kernels._triton import mma_operand, tl_dtype, wide_operand
from workbench_kernels.delta_rule.checks import validate

DEFAULT_CONFIG = {
    # value columns per program of the sequential state pass (None: all of them): 32 gives twice the programs of
    # 64, about 10% faster plain and gated at B=2 T=16k (`bench --sweep`)
    "block_v": 32,
    # value columns per program of the output kernel (None: all of them); on CUDA not below 64 when V has 64 or
    # more (32-column slices of V = 128 made an illegal memory access on the H200; narrower V: one slice, untried)
    "out_block_v": 64,
    "prep_warps": 4,
    "state_warps": 4,
    # 4 stages: as fast as 3 at B=2 T=16k, and 2 stages much slower (`bench --sweep`)
    "state_stages": 4,
    "out_warps": 4,
    # register cap of the gated output kernel when its products are in bf16/fp16 (None: none). Uncapped it takes 142
    # registers and fits 3 programs an SM, capped 4, which is faster at B=2 T=16k (no spills under triton 3.6 or
    # 3.9). The plain kernel takes 126, and a cap made it slower
    "gated_out_maxnreg": 128,
    # operands of w = T (beta exp(gc) k), u = T (beta v): "half" fp16 (each column of beta v scaled by a power of
    # two, so any bf16 v fits), "low" the inputs' dtype (fla's choice; gated bf16 it is past the tests' bound, 2.2x
    # torch's RMS error), "wide" tf32 (about 20% slower than "low" plain at B=2 T=16k). Exact fp32 for fp32 inputs.
    "wu_precision": "half",
    "low_state": True,  # the state pass's products w S and k^T e in the inputs' dtype (else tf32)
    "low_qs": True,  # the output's q S in the inputs' dtype (else tf32)
    "low_pe": True,  # the output's P e in the inputs' dtype (else tf32)
    "fp32_states": False,  # per-chunk states h stored in fp32 (else in the inputs' dtype)
    "fp32_vnew": False,  # corrected values e stored in fp32 (else in the inputs' dtype)
}
CPU_WIDTHS = {"block_v": None, "out_block_v": None}  # the interpreter is fastest with one value slice


@triton.jit
def _dot(a, b, PREC: tl.constexpr, DTYPE: tl.constexpr, INTERPRET: tl.constexpr):
    """a @ b in fp32 accumulation; PREC "low": operands rounded to DTYPE (the inputs' type), "half":
    rounded to fp16 (tf32's 10 mantissa bits at bf16's speed; the caller keeps them within fp16's
    range), else fp32 operands read at PREC ("tf32", or "ieee" for exact fp32)."""
    if PREC == "low":
        r = tl.dot(mma_operand(a, DTYPE, INTERPRET), mma_operand(b, DTYPE, INTERPRET), input_precision="ieee")
    elif PREC == "half":
        r = tl.dot(mma_operand(a, tl.float16, INTERPRET), mma_operand(b, tl.float16, INTERPRET), input_precision="ieee")
    else:
        r = tl.dot(wide_operand(a, PREC, INTERPRET), wide_operand(b, PREC, INTERPRET), input_precision=PREC)
    return r


@triton.jit
def _pow2_scale(m):
    """(2^-e, 2^e) with m * 2^-e in [0.5, 1) for m >= 0 (clamped for zero and huge m): scaling an
    operand by them before and after a product is exact, and keeps it within fp16's range."""
    e = (m.to(tl.int32, bitcast=True) >> 23) & 0xFF  # m's biased exponent: m = 1.f * 2^(e - 127)
    e = tl.minimum(tl.maximum(e, 1), 252)
    return ((253 - e) << 23).to(tl.float32, bitcast=True), ((e + 1) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _load(ptr, rows, cols, n_rows, n_cols, stride):
    """The [rows, cols] tile of a row-major matrix (row stride `stride`), zero outside n_rows x n_cols."""
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    return tl.load(ptr + rows[:, None] * stride + cols[None, :], mask=mask, other=0.0)


@triton.jit
def _store(ptr, x, rows, cols, n_rows, n_cols, stride):
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    tl.store(ptr + rows[:, None] * stride + cols[None, :], x.to(ptr.dtype.element_ty), mask=mask)


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
    k_ptr, v_ptr, beta_ptr, g_ptr, gc_ptr, w_ptr, u_ptr,
    T, H, K, V,
    BT: tl.constexpr, BK: tl.constexpr, BV_ALL: tl.constexpr, BV: tl.constexpr, USE_G: tl.constexpr,
    PREC_WU: tl.constexpr, DTYPE: tl.constexpr, WIDE: tl.constexpr, INTERPRET: tl.constexpr,
):
    """One chunk: T = (I + A)^-1, w = T (beta exp(gc) k), u = T (beta v); with a gate also stores gc
    (fp32 [B, H, T]) so that the other two kernels load it instead of summing g again.

    With PREC_WU "half" the products take fp16 operands. |T_ij| <= 2 (column j of T is the chunk's
    errors beta_i (v_i - S^T k_i) for beta_j v_j = 1 and the other v zero, from a zero state, and the
    delta rule's steps S <- exp(g)(I - beta k k^T) S do not grow S for beta <= 2) and
    |beta exp(gc) k| <= 2 for L2-normalised k: only beta v needs scaling.
    """
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    b, h = i_bh // H, i_bh % H
    offs_c, offs_k, offs_v = tl.arange(0, BT), tl.arange(0, BK), tl.arange(0, BV)
    n_t = T - i_t * BT  # valid rows of this chunk
    mask_t = offs_c < n_t
    first = (b * T + i_t * BT).to(tl.int64) * H + h  # (token, head) index of the chunk's first row

    beta = tl.load(beta_ptr + first + offs_c * H, mask=mask_t, other=0.0).to(tl.float32)
    if USE_G:
        gc = tl.cumsum(tl.load(g_ptr + first + offs_c * H, mask=mask_t, other=0.0).to(tl.float32), 0)
        tl.store(gc_ptr + i_bh.to(tl.int64) * T + i_t * BT + offs_c, gc, mask=mask_t)
    else:
        gc = tl.zeros([BT], tl.float32)
    causal = offs_c[:, None] >= offs_c[None, :]
    k_mma = mma_operand(_load(k_ptr + first * K, offs_c, offs_k, n_t, K, H * K), DTYPE, INTERPRET)
    kk = tl.dot(k_mma, tl.trans(k_mma), input_precision="ieee")  # [BT, BT], exact products of the inputs
    decay = tl.exp(tl.where(causal, gc[:, None] - gc[None, :], float("-inf")))
    a = tl.where(offs_c[:, None] > offs_c[None, :], -beta[:, None] * kk * decay, 0.0)  # L = -A, strictly lower
    t_inv = _unit_lower_inverse(a, BT, WIDE, INTERPRET)  # T = (I + A)^-1
    k_scaled = k_mma.to(tl.float32) * (beta * tl.exp(gc))[:, None]
    _store(w_ptr + first * K, _dot(t_inv, k_scaled, PREC_WU, DTYPE, INTERPRET), offs_c, offs_k, n_t, K, H * K)
    for i_v in tl.static_range(0, BV_ALL // BV):  # value slices (BV divides BV_ALL): fewer live registers
        cols = i_v * BV + offs_v
        bv = _load(v_ptr + first * V, offs_c, cols, n_t, V, H * V).to(tl.float32) * beta[:, None]
        if PREC_WU == "half":  # beta v may exceed fp16's range: scale each column's largest to [0.5, 1), undo
            # after (exact; T mixes rows only, and per column a large one cannot push the others below fp16's range)
            down, up = _pow2_scale(tl.max(tl.abs(bv), 0))
            u = _dot(t_inv, bv * down[None, :], PREC_WU, DTYPE, INTERPRET) * up[None, :]
        else:
            u = _dot(t_inv, bv, PREC_WU, DTYPE, INTERPRET)
        _store(u_ptr + first * V, u, offs_c, cols, n_t, V, H * V)


@triton.jit
def _state_kernel(
    k_ptr, gc_ptr, w_ptr, u_ptr, h_ptr, vn_ptr, h0_ptr, ht_ptr,
    T, NT, H, K, V,
    BT: tl.constexpr, KB: tl.constexpr, NKB: tl.constexpr, BV: tl.constexpr, USE_G: tl.constexpr,
    HAS_H0: tl.constexpr, STORE_HT: tl.constexpr, PREC: tl.constexpr, DTYPE: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    """The chunks in order for one (batch, head, value slice); the state's K rows in NKB (<= 4)
    tiles s1..s4 of KB rows each (fla's chunk_gated_delta_rule_fwd_kernel_h_blockdim64).

    The gate comes as the precomputed gc: each chunk loads it and g_last (gc at the chunk's last
    valid row) and takes their exp's before the w S products, so no reduction sits in the
    sequential chain from one chunk's state to the next.
    """
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    b, h = i_bh // H, i_bh % H
    offs_c, offs_kb = tl.arange(0, BT), tl.arange(0, KB)
    offs_v = i_v * BV + tl.arange(0, BV)
    r1, r2, r3, r4 = offs_kb, KB + offs_kb, 2 * KB + offs_kb, 3 * KB + offs_kb  # the tiles' state rows
    h0_at = h0_ptr + i_bh.to(tl.int64) * K * V  # [B, H, K, V]
    s1 = tl.zeros([KB, BV], tl.float32)
    if HAS_H0:
        s1 += _load(h0_at, r1, offs_v, K, V, V).to(tl.float32)
    if NKB > 1:
        s2 = tl.zeros([KB, BV], tl.float32)
        if HAS_H0:
            s2 += _load(h0_at, r2, offs_v, K, V, V).to(tl.float32)
    if NKB > 2:
        s3 = tl.zeros([KB, BV], tl.float32)
        s4 = tl.zeros([KB, BV], tl.float32)
        if HAS_H0:
            s3 += _load(h0_at, r3, offs_v, K, V, V).to(tl.float32)
            s4 += _load(h0_at, r4, offs_v, K, V, V).to(tl.float32)
    for i_t in range(NT):
        n_t = T - i_t * BT
        first = (b * T + i_t * BT).to(tl.int64) * H + h
        h_at = h_ptr + ((b * NT + i_t).to(tl.int64) * H + h) * K * V  # [B, NT, H, K, V]
        w_at = w_ptr + first * K
        if USE_G:  # independent of the state: loads and exp's off the chain
            gc_at = gc_ptr + i_bh.to(tl.int64) * T + i_t * BT
            gc = tl.load(gc_at + offs_c, mask=offs_c < n_t, other=0.0)
            g_last = tl.load(gc_at + tl.minimum(n_t, BT) - 1)
            decay_last = tl.exp(g_last)
            decay_e = tl.exp(g_last - gc)[:, None]  # (k exp(g_last - gc))^T e = k^T (exp(..) e)
        _store(h_at, s1, r1, offs_v, K, V, V)
        wx = _dot(_load(w_at, offs_c, r1, n_t, K, H * K), s1, PREC, DTYPE, INTERPRET)  # [BT, BV]
        if NKB > 1:
            _store(h_at, s2, r2, offs_v, K, V, V)
            wx += _dot(_load(w_at, offs_c, r2, n_t, K, H * K), s2, PREC, DTYPE, INTERPRET)
        if NKB > 2:
            _store(h_at, s3, r3, offs_v, K, V, V)
            _store(h_at, s4, r4, offs_v, K, V, V)
            wx += _dot(_load(w_at, offs_c, r3, n_t, K, H * K), s3, PREC, DTYPE, INTERPRET)
            wx += _dot(_load(w_at, offs_c, r4, n_t, K, H * K), s4, PREC, DTYPE, INTERPRET)
        err = _load(u_ptr + first * V, offs_c, offs_v, n_t, V, H * V).to(tl.float32) - wx
        _store(vn_ptr + first * V, err, offs_c, offs_v, n_t, V, H * V)
        if USE_G:
            err = err * decay_e
            s1 *= decay_last
            if NKB > 1:
                s2 *= decay_last
            if NKB > 2:
                s3 *= decay_last
                s4 *= decay_last
        k_at = k_ptr + first * K
        s1 += _dot(tl.trans(_load(k_at, offs_c, r1, n_t, K, H * K)), err, PREC, DTYPE, INTERPRET)
        if NKB > 1:
            s2 += _dot(tl.trans(_load(k_at, offs_c, r2, n_t, K, H * K)), err, PREC, DTYPE, INTERPRET)
        if NKB > 2:
            s3 += _dot(tl.trans(_load(k_at, offs_c, r3, n_t, K, H * K)), err, PREC, DTYPE, INTERPRET)
            s4 += _dot(tl.trans(_load(k_at, offs_c, r4, n_t, K, H * K)), err, PREC, DTYPE, INTERPRET)
    if STORE_HT:
        ht_at = ht_ptr + i_bh.to(tl.int64) * K * V
        _store(ht_at, s1, r1, offs_v, K, V, V)
        if NKB > 1:
            _store(ht_at, s2, r2, offs_v, K, V, V)
        if NKB > 2:
            _store(ht_at, s3, r3, offs_v, K, V, V)
            _store(ht_at, s4, r4, offs_v, K, V, V)


@triton.jit
def _output_kernel(
    q_ptr, k_ptr, gc_ptr, h_ptr, vn_ptr, o_ptr,
    T, NT, H, K, V, scale,
    BT: tl.constexpr, KB: tl.constexpr, NKB: tl.constexpr, BV: tl.constexpr, USE_G: tl.constexpr,
    PREC_QS: tl.constexpr, PREC_PE: tl.constexpr, DTYPE: tl.constexpr, INTERPRET: tl.constexpr,
):
    """One chunk and value slice: o = scale exp(gc) q S + tril(scale q k^T exp(gc_i - gc_j)) e, gc
    loaded as the prepare kernel stored it."""
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = i_bh // H, i_bh % H
    offs_c, offs_kb = tl.arange(0, BT), tl.arange(0, KB)
    offs_v = i_v * BV + tl.arange(0, BV)
    n_t = T - i_t * BT
    first = (b * T + i_t * BT).to(tl.int64) * H + h
    h_at = h_ptr + ((b * NT + i_t).to(tl.int64) * H + h) * K * V
    qs = tl.zeros([BT, BV], tl.float32)
    p = tl.zeros([BT, BT], tl.float32)
    for j in tl.static_range(NKB):  # KB columns of q and k (rows of S) at a time
        rows = j * KB + offs_kb
        q = _load(q_ptr + first * K, offs_c, rows, n_t, K, H * K)
        k = mma_operand(_load(k_ptr + first * K, offs_c, rows, n_t, K, H * K), DTYPE, INTERPRET)
        qs += _dot(q, _load(h_at, rows, offs_v, K, V, V), PREC_QS, DTYPE, INTERPRET)
        p += tl.dot(mma_operand(q, DTYPE, INTERPRET), tl.trans(k), input_precision="ieee")
    causal = offs_c[:, None] >= offs_c[None, :]
    if USE_G:
        gc = tl.load(gc_ptr + i_bh.to(tl.int64) * T + i_t * BT + offs_c, mask=offs_c < n_t, other=0.0)
        qs = qs * tl.exp(gc)[:, None]
        p = p * tl.exp(tl.where(causal, gc[:, None] - gc[None, :], float("-inf")))
    p = tl.where(causal, p * scale, 0.0)
    e = _load(vn_ptr + first * V, offs_c, offs_v, n_t, V, H * V)
    o = qs * scale + _dot(p, e, PREC_PE, DTYPE, INTERPRET)
    _store(o_ptr + first * V, o, offs_c, offs_v, n_t, V, H * V)


def resolve_config(config: dict | None, block_v: int | None, dv: int, device: torch.device) -> dict:
    """DEFAULT_CONFIG updated with `config` (and block_v, when given); value-slice widths None mean
    all columns (the default on CPU, where the interpreter is fastest with one slice) and are capped
    at V rounded up to a power of two."""
    cfg = {**DEFAULT_CONFIG, **(CPU_WIDTHS if device.type != "cuda" else {})}
    unknown = sorted(set(config or {}) - set(DEFAULT_CONFIG))
    if unknown:
        raise ValueError(f"config: expected keys among {sorted(DEFAULT_CONFIG)}, got {unknown}")
    cfg.update(config or {})
    if cfg["wu_precision"] not in ("half", "low", "wide"):
        raise ValueError(f"wu_precision: expected 'half', 'low' or 'wide', got {cfg['wu_precision']!r}")
    cap = cfg["gated_out_maxnreg"]
    if cap is not None and not (isinstance(cap, int) and 32 <= cap <= 255):
        raise ValueError(f"gated_out_maxnreg: expected None or registers per thread in [32, 255], got {cap!r}")
    if block_v is not None:
        cfg["block_v"] = block_v
    bv_all = next_pow2(dv, 16)
    for key in ("block_v", "out_block_v"):
        width = cfg[key]
        if width is None:
            width = bv_all
        if not isinstance(width, int) or width < 16 or width & (width - 1):
            raise ValueError(f"{key}: expected a power of two >= 16, got {width}")
        if key == "out_block_v" and device.type == "cuda" and width < min(64, bv_all):
            raise ValueError(f"out_block_v: expected at least 64 on CUDA for V >= 64 (32-column slices made an illegal "
                             f"memory access on the H200, triton 3.6), got {width}")
        cfg[key] = min(width, bv_all)
    return cfg


def chunk_delta_rule(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, *, g: torch.Tensor | None = None,
    scale: float | None = None, initial_state: torch.Tensor | None = None, output_final_state: bool = False,
    chunk_size: int = 64, block_v: int | None = None, config: dict | None = None,
):
    """Chunked delta rule forward (the gated variant when g is given).

    q, k [B, T, H, K] (k L2-normalised by the caller, as in DeltaNet), v [B, T, H, V], beta [B, T, H]
    in (0, 1) (or (0, 2) for negative eigenvalues), g [B, T, H] log decay <= 0, initial_state
    [B, H, K, V]. scale defaults to K**-0.5. chunk_size: 16, 32 or 64. block_v: value columns per
    program of the sequential pass (shorthand for config["block_v"]). config: tunables overriding
    DEFAULT_CONFIG (value-slice widths, warps, stages, and which products and intermediates stay in
    the inputs' dtype; see there), for benchmarks to sweep.

    Returns (o [B, T, H, V] in v's dtype, final state [B, H, K, V] fp32 or None).
    """
    validate(q, k, v, beta, g, initial_state)
    if chunk_size not in (16, 32, 64):
        raise ValueError(f"chunk_size: expected 16, 32 or 64, got {chunk_size}")
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    cfg = resolve_config(config, block_v, dv, q.device)
    q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
    g = g.contiguous() if g is not None else None
    h0 = initial_state.contiguous() if initial_state is not None else None
    o = torch.empty_like(v)
    ht = torch.empty((b, h, dk, dv), device=q.device, dtype=torch.float32) if output_final_state else None
    if b * h == 0:
        return o, ht
    nt = triton.cdiv(t, chunk_size)
    bk, bv_all = next_pow2(dk, 16), next_pow2(dv, 16)
    kb = min(64, bk)  # rows of a state tile; bk / kb is 1, 2 or 4
    wide = wide_precision(q.dtype)

    def prec(low: bool) -> str:
        return "low" if low else wide

    prec_wu = {"half": "half", "low": "low", "wide": wide}[cfg["wu_precision"]] if q.dtype != torch.float32 else "low"
    w, u = torch.empty_like(q), torch.empty_like(v)
    states = torch.empty((b, nt, h, dk, dv), device=q.device,
                         dtype=torch.float32 if cfg["fp32_states"] else q.dtype)
    v_new = torch.empty_like(v, dtype=torch.float32 if cfg["fp32_vnew"] else v.dtype)
    # chunk-local cumulative gate, stored by the prepare kernel: fp32 [B, H, T] (a chunk's 64 values contiguous)
    gc = torch.empty((b, h, t), device=q.device, dtype=torch.float32) if g is not None else None
    g_arg, gc_arg = (g, gc) if g is not None else (beta, beta)
    consts = {"BT": chunk_size, "USE_G": g is not None, "DTYPE": tl_dtype(q.dtype), "INTERPRET": interpreting()}
    if t > 0:
        _prepare_kernel[(nt, b * h)](
            k, v, beta, g_arg, gc_arg, w, u, t, h, dk, dv, BK=bk, BV_ALL=bv_all, BV=min(bv_all, 64),
            PREC_WU=prec_wu, WIDE=wide, **consts,
            num_warps=cfg["prep_warps"], num_stages=1)
    _state_kernel[(triton.cdiv(dv, cfg["block_v"]), b * h)](
        k, gc_arg, w, u, states, v_new, h0 if h0 is not None else o, ht if ht is not None else o,
        t, nt, h, dk, dv, KB=kb, NKB=bk // kb, BV=cfg["block_v"], HAS_H0=h0 is not None,
        STORE_HT=ht is not None, PREC=prec(cfg["low_state"]), **consts,
        num_warps=cfg["state_warps"], num_stages=cfg["state_stages"])
    # the register cap was measured for the output's products in bf16/fp16 (126-142 registers); with tf32 or fp32
    # ones the kernel needs 163 and the cap would spill
    low_output = q.dtype != torch.float32 and cfg["low_qs"] and cfg["low_pe"]
    capped = g is not None and low_output and cfg["gated_out_maxnreg"] is not None
    cap = {"maxnreg": cfg["gated_out_maxnreg"]} if capped else {}
    if t > 0:
        _output_kernel[(triton.cdiv(dv, cfg["out_block_v"]), nt, b * h)](
            q, k, gc_arg, states, v_new, o, t, nt, h, dk, dv, default_scale(scale, dk),
            KB=kb, NKB=bk // kb, BV=cfg["out_block_v"], PREC_QS=prec(cfg["low_qs"]), PREC_PE=prec(cfg["low_pe"]),
            **consts, num_warps=cfg["out_warps"], **cap)
    return o, ht
