"""Reference maths for the delta rule in plain PyTorch.

Layout follows flash-linear-attention: q, k [B, T, H, K], v [B, T, H, V], beta and g [B, T, H],
state [B, H, K, V] (fla's h; the transpose of the S = V x K of the DeltaNet paper). Per token t:

    S <- exp(g_t) S                          (gated variant only; g_t <= 0 is a log decay)
    e_t = beta_t (v_t - S^T k_t)             (the delta: what the memory gets wrong about v_t)
    S <- S + k_t e_t^T
    o_t = scale * S^T q_t

`recurrence` is this loop (fla's naive.delta_rule_recurrence, plus the gate) and computes in its
inputs' dtype, so the tests use it both as the fp32 reference and as plain PyTorch in low precision.
`chunkwise` is the WY/UT chunk form in fp32, an independent check of the algebra the kernel uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def l2norm(x, eps=1e-6):
    """x * rsqrt(|x|^2 + eps) along the last dimension, computed in fp32, returned in x's dtype."""
    wide = x.float()
    return (wide * torch.rsqrt((wide * wide).sum(-1, keepdim=True) + eps)).to(x.dtype)


def recurrence(q, k, v, beta, g=None, scale=None, initial_state=None):
    """Token-by-token delta rule -> (o [B, T, H, V] in v's dtype, final state [B, H, K, V])."""
    b, t, h, dk = k.shape
    scale = dk**-0.5 if scale is None else scale
    state = torch.zeros(b, h, dk, v.shape[-1], dtype=v.dtype, device=v.device)
    if initial_state is not None:
        state = state + initial_state.to(v.dtype)
    out = torch.empty_like(v)
    for i in range(t):
        if g is not None:
            state = state * g[:, i].exp()[..., None, None]
        err = beta[:, i, :, None] * (v[:, i] - (k[:, i, :, :, None] * state).sum(-2))  # [B, H, V]
        state = state + k[:, i, :, :, None] * err[:, :, None, :]
        out[:, i] = (q[:, i, :, :, None] * scale * state).sum(-2)
    return out, state


def chunkwise(q, k, v, beta, g=None, scale=None, initial_state=None, chunk_size=64):
    """The same map in the chunked WY/UT form, computed in fp32 -> (o in v's dtype, final state fp32).

    Within a chunk, with gc the cumulative log decay and A_ij = beta_i (k_i . k_j) exp(gc_i - gc_j)
    for i > j, T = (I + A)^-1 turns the sequential updates into matrix products:
    u = T (beta v), w = T (beta exp(gc) k), and for the state S entering the chunk
    e = u - w S, o = scale (exp(gc) q S + tril(q k^T exp(gc_i - gc_j)) e),
    S' = exp(gc_last) S + (exp(gc_last - gc) k)^T e.
    """
    b, t, h, dk = k.shape
    dv = v.shape[-1]
    scale = dk**-0.5 if scale is None else scale
    c = chunk_size
    pad = -t % c
    # [B, H, NT, C, D]; padding tokens have k = v = beta = g = 0 and leave the state alone
    q, k, v = (F.pad(x.float(), (0, 0, 0, 0, 0, pad)).transpose(1, 2).unflatten(2, (-1, c)) for x in (q, k, v))
    beta = F.pad(beta.float(), (0, 0, 0, pad)).transpose(1, 2).unflatten(2, (-1, c))  # [B, H, NT, C]
    gc = torch.zeros_like(beta) if g is None else F.pad(g.float(), (0, 0, 0, pad)).transpose(1, 2).unflatten(2, (-1, c))
    gc = gc.cumsum(-1)
    decay = (gc[..., :, None] - gc[..., None, :]).tril().exp().tril()  # [B, H, NT, C, C]: exp(gc_i - gc_j), i >= j
    eye = torch.eye(c, device=k.device)
    a = (beta[..., None] * (k @ k.transpose(-1, -2)) * decay).tril(-1)
    u = torch.linalg.solve_triangular(eye + a, beta[..., None] * v, upper=False)
    w = torch.linalg.solve_triangular(eye + a, (beta * gc.exp())[..., None] * k, upper=False)
    attn = (q @ k.transpose(-1, -2)) * decay * scale
    state = torch.zeros(b, h, dk, dv, device=k.device)
    if initial_state is not None:
        state = state + initial_state.float()
    out = torch.empty_like(u)
    for i in range(u.shape[2]):
        err = u[:, :, i] - w[:, :, i] @ state  # [B, H, C, V]
        out[:, :, i] = (q[:, :, i] * gc[:, :, i, :, None].exp() * scale) @ state + attn[:, :, i] @ err
        last = gc[:, :, i, -1:]  # [B, H, 1]
        state = last.exp()[..., None] * state + ((last - gc[:, :, i]).exp()[..., None] * k[:, :, i]).transpose(-1, -2) @ err
    out = out.flatten(2, 3)[:, :, :t].transpose(1, 2)
    return out.to(v.dtype), state
