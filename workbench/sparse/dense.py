"""The attention maths every emulated method shares, and dense attention as the control.

Each method sees one `AttentionCall`: the scaled scores of every query against every key in float32 with
the model's own mask already applied (masked entries at the float32 minimum, as eager attention does), the
boolean mask of allowed pairs, and the values expanded to the query heads. A method returns which pairs it
keeps (and, for DeltaLLM, the scores it used); `attend` turns that into the output. With every allowed
pair kept the result is eager attention in float32, which is why a full budget reproduces dense attention.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from workbench.errors import WorkbenchError

MASKED = torch.finfo(torch.float32).min


@dataclass(frozen=True)
class DenseConfig:
    """Dense attention through the same path as the sparse methods: the control line."""

    name = "dense"

    def apply(self, call: AttentionCall, session) -> torch.Tensor:
        session.log.account(call, call.allowed)
        return attend(call.scores, None, call.value)

    def fast_decode(self, query, key, value, scale, layer, session) -> torch.Tensor:
        from workbench.sparse.decode import dense_decode

        return dense_decode(query, key, value, scale)

    def to_dict(self) -> dict:
        return {"method": self.name, **asdict(self)}


@dataclass
class AttentionCall:
    """One attention call of one layer, in float32.

    scores [B, Hq, T, N] (masked pairs at MASKED), allowed [B, 1, T, N] bool, value [B, Hq, N, Dv];
    query [B, Hq, T, D] and key [B, Hkv, N, D] as the model gave them (AnchorAttention needs them).
    Query t sits at position N - T + t when the cache holds N - T earlier tokens.
    """

    layer: int
    phase: str  # "prefill" (a forward over several new tokens) or "decode" (one new token after a cache)
    step: int  # 0 for the first call of a layer in a session, then 1, 2, ... per call
    scores: torch.Tensor
    allowed: torch.Tensor
    value: torch.Tensor
    query: torch.Tensor
    key: torch.Tensor
    scale: float


def prepare(layer: int, step: int, query, key, value, attention_mask, scaling,
            softcap: float | None = None) -> AttentionCall:
    """Scores and mask of one call; query [B, Hq, T, D], key/value [B, Hkv, N, D], mask additive [B, 1, T, N].

    `softcap` bounds the scores to (-softcap, softcap) by softcap * tanh(s / softcap), as Gemma 2 does before
    its mask."""
    _b, hq, t, d = query.shape
    n = key.shape[2]
    scale = d**-0.5 if scaling is None else float(scaling)
    groups = hq // key.shape[1]
    k = key.float().repeat_interleave(groups, dim=1)  # [B, Hq, N, D]
    v = value.float().repeat_interleave(groups, dim=1)
    scores = (query.float() @ k.transpose(-1, -2)) * scale  # [B, Hq, T, N]
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    if attention_mask is None:
        positions = torch.arange(n - t, n, device=query.device)
        allowed = (torch.arange(n, device=query.device)[None, :] <= positions[:, None])[None, None]
    elif attention_mask.dtype == torch.bool:
        allowed = attention_mask[..., :n]
    else:
        mask = attention_mask[..., :n]
        allowed = mask == 0
        if (~allowed & (mask > torch.finfo(mask.dtype).min / 2)).any():
            raise WorkbenchError(f"layer {layer}'s attention mask adds a bias to the scores (a per-head dynamic "
                                 "mask or positional bias) that the sparse methods do not apply; sparse attention "
                                 "does not support this model family")
    scores = scores.masked_fill(~allowed, MASKED)
    phase = "decode" if t == 1 and n > 1 else "prefill"
    return AttentionCall(layer, phase, step, scores, allowed, v, query, key, scale)


def attend(scores: torch.Tensor, keep: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
    """softmax over the kept pairs, times the values: scores [B, Hq, T, N], keep broadcastable -> [B, Hq, T, Dv]."""
    if keep is not None:
        scores = scores.masked_fill(~keep, MASKED)
    return torch.softmax(scores, dim=-1) @ value


def dense_probs(call: AttentionCall) -> torch.Tensor:
    """Full attention probabilities of the call [B, Hq, T, N]: what recall is measured against."""
    return torch.softmax(call.scores, dim=-1)


def recall_of(probs: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Share of each query's dense attention mass on the kept keys -> [B, Hq, T]."""
    return (probs * keep).sum(-1)
