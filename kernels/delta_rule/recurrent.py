"""Triton recurrent delta rule for decode: token by token, the state carried in registers.

One program per (batch, head, slice of value columns) holds S [K, BV] in fp32 and applies, per token,
S <- exp(g) S, e = beta (v - S^T k), S <- S + k e^T, o = scale S^T q — fla's fused_recurrent
(fla/ops/delta_rule/fused_recurrent.py) with the gate of fla's gated_delta_rule. All arithmetic is
elementwise fp32; there are no matrix products to round.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from workbench_kernels._common import default_scale, next_pow2
from workbench_kernels.delta_rule.checks import validate


@triton.jit
def _recurrent_kernel(
    q_ptr, k_ptr, v_ptr, beta_ptr, g_ptr, o_ptr, h0_ptr, ht_ptr,
    T, H, K, V, scale,
    BK: tl.constexpr, BV: tl.constexpr, USE_G: tl.constexpr, HAS_H0: tl.constexpr, STORE_HT: tl.constexpr,
):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    b, h = i_bh // H, i_bh % H
    offs_k = tl.arange(0, BK)
    offs_v = i_v * BV + tl.arange(0, BV)
    mask_k, mask_v = offs_k < K, offs_v < V
    state_off = i_bh.to(tl.int64) * K * V + offs_k[:, None] * V + offs_v[None, :]  # into [B, H, K, V]
    state_mask = mask_k[:, None] & mask_v[None, :]
    if HAS_H0:
        state = tl.load(h0_ptr + state_off, mask=state_mask, other=0.0).to(tl.float32)
    else:
        state = tl.zeros([BK, BV], tl.float32)
    for i in range(T):
        tok = (b * T + i).to(tl.int64)
        q = tl.load(q_ptr + tok * H * K + h * K + offs_k, mask=mask_k, other=0.0).to(tl.float32)
        k = tl.load(k_ptr + tok * H * K + h * K + offs_k, mask=mask_k, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + tok * H * V + h * V + offs_v, mask=mask_v, other=0.0).to(tl.float32)
        beta = tl.load(beta_ptr + tok * H + h).to(tl.float32)
        if USE_G:
            state = state * tl.exp(tl.load(g_ptr + tok * H + h).to(tl.float32))
        err = beta * (v - tl.sum(k[:, None] * state, 0))  # [BV]
        state += k[:, None] * err[None, :]
        out = tl.sum(q[:, None] * state, 0) * scale
        tl.store(o_ptr + tok * H * V + h * V + offs_v, out.to(o_ptr.dtype.element_ty), mask=mask_v)
    if STORE_HT:
        tl.store(ht_ptr + state_off, state, mask=state_mask)


def _block_v(b: int, h: int, v: int, device: torch.device) -> int:
    """Value columns per program: a decode step is latency-bound, so the narrowest slice (most
    programs, shortest steps) that still fits in one wave of SMs; 64 if even that is more."""
    if device.type != "cuda":
        return next_pow2(v, 16)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    for bv in (16, 32):
        if b * h * triton.cdiv(v, bv) <= sms:
            return bv
    return 64


def recurrent_delta_rule(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, *, g: torch.Tensor | None = None,
    scale: float | None = None, initial_state: torch.Tensor | None = None, output_final_state: bool = True,
    block_v: int | None = None,
):
    """Recurrent delta rule (decode: T is usually 1), gated when g is given.

    Same arguments and layout as `chunk.chunk_delta_rule`: q, k [B, T, H, K], v [B, T, H, V],
    beta [B, T, H], g [B, T, H], initial_state [B, H, K, V]. Returns (o [B, T, H, V] in v's dtype,
    final state [B, H, K, V] fp32, or None without output_final_state).
    """
    validate(q, k, v, beta, g, initial_state)
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
    g = g.contiguous() if g is not None else None
    h0 = initial_state.contiguous() if initial_state is not None else None
    bv = block_v or _block_v(b, h, dv, q.device)
    o = torch.empty_like(v)
    ht = torch.empty((b, h, dk, dv), device=q.device, dtype=torch.float32) if output_final_state else None
    if b * h == 0:
        return o, ht
    _recurrent_kernel[(triton.cdiv(dv, bv), b * h)](
        q, k, v, beta, g if g is not None else beta, o, h0 if h0 is not None else o, ht if ht is not None else o,
        t, h, dk, dv, default_scale(scale, dk),
        BK=next_pow2(dk, 16), BV=bv, USE_G=g is not None, HAS_H0=h0 is not None, STORE_HT=ht is not None,
        num_warps=4,
    )
    return o, ht
