"""What a delta-rule layer's memory holds, computed exactly from the recurrence in plain fp32 PyTorch.

Layout is fla's and `workbench_kernels.delta_rule`'s: q, k [B, T, H, K], v [B, T, H, V], beta [B, T, H] and the
optional log decay g, per head [B, T, H] (Gated DeltaNet) or per key channel [B, T, H, K] (Kimi Delta Attention);
the state S is [B, H, K, V] (the transpose of the paper's V x K). Per token t, with D_t = diag(exp(g_t)) (exp(g_t) I
for a per-head decay) applied before the write, and A_t = (I - beta_t k_t k_t^T) D_t:

    S_t = A_t S_{t-1} + beta_t k_t v_t^T,        o_t = scale * S_t^T q_t

so S_t = sum_{j<=t} P_{t,j} beta_j k_j v_j^T with P_{t,j} = A_t ... A_{j+1}, and o_t = sum_j a_tj v_j with
the effective attention a_tj = scale * beta_j * q_t^T P_{t,j} k_j. Token j's write survives at step t as
P_{t,j} k_j: its norm (1 when nothing has erased it, 0 when it is gone) is `write_survival`. Nothing here needs
|k| = 1; the layers' k are L2-normalised (up to their eps).
"""

from __future__ import annotations

import torch


def _heads_first(*xs):
    """[B, T, H, ...] -> [B, H, T, ...] in fp32 (None passes through)."""
    return [None if x is None else x.float().transpose(1, 2) for x in xs]


def _decay(g, i) -> torch.Tensor:
    """exp(g) of token i (g heads-first) as [B, H, 1, 1] per head or [B, H, 1, K] per channel, to scale the last
    (key) dimension of a [B, H, N, K] tensor."""
    step = g[:, :, i].exp()
    return step[:, :, None, None] if step.dim() == 2 else step[:, :, None, :]


def effective_attention(q, k, beta, g=None, scale=None) -> torch.Tensor:
    """[B, H, T, T] weights a_tj with o_t = sum_j a_tj v_j, exactly (zero above the diagonal).

    Walks j from the last token back: r_t holds P_{t,j}^T q_t for every query t >= j at once, so the cost is
    T steps of [B, H, T, K] work instead of T^2 matrix products.
    """
    scale = k.shape[-1] ** -0.5 if scale is None else scale
    q, k, beta, g = _heads_first(q, k, beta, g)  # [B, H, T, K], beta [B, H, T], g [B, H, T(, K)]
    b, h, t, _ = k.shape
    r = q.clone()
    out = torch.zeros(b, h, t, t, device=k.device)
    for j in range(t - 1, -1, -1):  # rows j: are the queries that have reached token j
        kj = k[:, :, j, None]  # [B, H, 1, K]
        rk = (r[:, :, j:] * kj).sum(-1)  # [B, H, T - j]: r_t . k_j
        out[:, :, j:, j] = scale * beta[:, :, j, None] * rk
        # step past j: r <- A_j^T r = D_j (r - beta_j (r . k_j) k_j)
        r[:, :, j:] -= beta[:, :, j, None, None] * rk[..., None] * kj
        if g is not None:
            r[:, :, j:] *= _decay(g, j)
    return out


def write_survival(k, beta, g=None) -> torch.Tensor:
    """[B, H, T, T]: |P_{t,j} k_j| for t >= j (row t = step, column j = the token that wrote), else 0."""
    k, beta, g = _heads_first(k, beta, g)
    b, h, t, _ = k.shape
    x = k.clone()  # x_j = P_{i,j} k_j after step i
    out = torch.zeros(b, h, t, t, device=k.device)
    for i in range(t):
        ki = k[:, :, i]
        decayed = x if g is None else x * _decay(g, i)  # x <- A_i x: decay first, then erase along k_i
        stepped = decayed - beta[:, :, i, None, None] * (decayed * ki[:, :, None]).sum(-1, keepdim=True) * ki[:, :, None]
        earlier = torch.arange(t, device=k.device) < i  # token i's own write is k_i itself at step i
        x = torch.where(earlier[:, None], stepped, x)
        out[:, :, i, : i + 1] = x[:, :, : i + 1].norm(dim=-1)
    return out


def trajectory(q, k, v, beta, g=None, keep_steps=(), initial_state=None) -> dict[str, torch.Tensor]:
    """Run the recurrence and report, per head and token, what each write did to the state.

    Returns fp32 tensors [B, H, T] unless noted: `beta`; `written` = |beta v| (the size of the write);
    `erased` = |beta S_{t-1}^T k| (what the erase along k removed); `delta` = |S_t - S_{t-1}| =
    |beta (v - S_{t-1}^T k)| (with |k| = 1); `overwrite` = delta / |S_{t-1}| (0 at the first token). With a
    gate, S_{t-1} here is the decayed state D_t S_{t-1}: these measure the write, not the decay;
    `state_norm` = |S_t|_F; `singular_values` [B, H, T, min(K, V)]; `readout` [B, T, H, V] = S_t^T q_t
    (the layer's output before scaling); and `states` [len(keep_steps), B, H, K, V] at the chosen steps.
    """
    qh, kh, vh, bh, gh = _heads_first(q, k, v, beta, g)
    b, h, t, dk = kh.shape
    state = torch.zeros(b, h, dk, vh.shape[-1], device=k.device)
    if initial_state is not None:
        state = state + initial_state.float()
    keep = sorted({int(s) for s in keep_steps})
    if any(not 0 <= s < t for s in keep):
        raise ValueError(f"keep_steps must be positions 0..{t - 1}, got {keep}")
    rows = {name: torch.zeros(b, h, t, device=k.device) for name in ("written", "erased", "delta", "overwrite")}
    norms, readout, states = torch.zeros(b, h, t, device=k.device), torch.zeros(b, h, t, vh.shape[-1], device=k.device), []
    singular = torch.zeros(b, h, t, min(dk, vh.shape[-1]), device=k.device)
    for i in range(t):
        if gh is not None:
            state = state * _decay(gh, i).transpose(-1, -2)  # scales the key rows of S
        before = state.norm(dim=(-2, -1))
        recalled = (kh[:, :, i, :, None] * state).sum(-2)  # [B, H, V] = S^T k
        err = bh[:, :, i, None] * (vh[:, :, i] - recalled)
        state = state + kh[:, :, i, :, None] * err[:, :, None, :]
        rows["written"][:, :, i] = (bh[:, :, i, None] * vh[:, :, i]).norm(dim=-1)
        rows["erased"][:, :, i] = (bh[:, :, i, None] * recalled).norm(dim=-1)
        rows["delta"][:, :, i] = (kh[:, :, i, :, None] * err[:, :, None, :]).norm(dim=(-2, -1))
        rows["overwrite"][:, :, i] = torch.where(before > 0, rows["delta"][:, :, i] / before.clamp_min(1e-30), 0.0)
        norms[:, :, i] = state.norm(dim=(-2, -1))
        singular[:, :, i] = torch.linalg.svdvals(state)
        readout[:, :, i] = (qh[:, :, i, :, None] * state).sum(-2)
        if i in keep:
            states.append(state.clone())
    return {"beta": bh, **rows, "state_norm": norms, "singular_values": singular,
            "readout": readout.transpose(1, 2),
            "states": torch.stack(states) if states else torch.zeros(0, b, h, dk, vh.shape[-1])}


def numerical_rank(singular_values: torch.Tensor, rtol: float = 1e-2) -> torch.Tensor:
    """Singular values above `rtol` times the largest, counted (0 for an all-zero state)."""
    top = singular_values[..., :1]
    return ((singular_values > rtol * top) & (top > 0)).sum(-1)
