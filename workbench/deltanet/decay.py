"""How long a delta-rule head remembers: the half-life of its decay over a prompt, how far back its effective
attention reaches, and whether that makes it a long-range memory or a local mixer.

A gated rule multiplies the state by exp(g_t) before token t writes (per head in Gated DeltaNet, per key channel in
Kimi Delta Attention), so with the prompt's mean log decay m a write halves every ln(1/2) / m tokens from the decay
alone: that is the half-life (infinite for DeltaNet, which never decays). Erasing by later writes shortens a write's
life further, so the span is read from the exact effective attention instead: for query t, the farthest distance d
such that at least `span_mass` of the query's absolute attention lies at distance d or further back. A head whose
median span is at most `local_span` tokens is a local mixer; one whose median span reaches a quarter of the prompt
is a long-range memory; the rest are mid-range.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

ROLES = ("local mixer", "mid-range", "long-range memory")


def log_decay_per_token(g: torch.Tensor | None, n_heads: int, n_tokens: int) -> torch.Tensor:
    """[H, T]: each token's log decay (the mean over key channels for a per-channel decay; 0 where none)."""
    if g is None:
        return torch.zeros(n_heads, n_tokens)
    g = g[0].float()  # [T, H] or [T, H, K]
    return (g if g.dim() == 2 else g.mean(-1)).transpose(0, 1).cpu()


def half_life(mean_log_decay: float) -> float:
    """Tokens over which the decay alone halves a write (inf where it does not decay)."""
    return math.log(0.5) / mean_log_decay if mean_log_decay < 0 else math.inf


def memory_spans(attention: torch.Tensor, span_mass: float) -> torch.Tensor:
    """[H, T]: per query, the farthest distance d with at least `span_mass` of its absolute effective attention
    [H, T, T] at distance d or beyond (0 when nearly all of it is on the query's own token)."""
    h, t, _ = attention.shape
    queries = torch.arange(t)[:, None]
    distance = torch.arange(t)[None, :]
    keys = (queries - distance).clamp(min=0)  # [T, T]: the key at each distance back from each query
    by_distance = attention.abs().gather(2, keys.expand(h, t, t)) * (distance <= queries)
    tail = by_distance.flip(-1).cumsum(-1).flip(-1)  # mass at distance d or further
    share = tail / tail[..., :1].clamp(min=torch.finfo(tail.dtype).tiny)
    return ((share >= span_mass) * distance).amax(-1)


def role(median_span: float, n_tokens: int, local_span: int) -> str:
    """The head's part on this prompt, from its median span (see the module's docstring)."""
    if median_span <= local_span:
        return ROLES[0]
    return ROLES[2] if median_span >= n_tokens / 4 else ROLES[1]


def decay_rows(layer: int, g: torch.Tensor | None, attention: torch.Tensor, span_mass: float,
               local_span: int) -> pd.DataFrame:
    """One row per head of a layer on one prompt: its mean log decay and half-life (with the fastest and slowest
    key channel's for a per-channel decay), its memory span (mean, median and at the last token) and its role.
    `g` is the rule's log decay [1, T, H(, K)] or None, `attention` the effective attention [H, T, T]."""
    h, t, _ = attention.shape
    per_token = log_decay_per_token(g, h, t)
    if g is not None and g.dim() == 4:  # per channel: the channels' own half-lives bound the head's
        channels = g[0].float().mean(0).cpu()  # [H, K]
        fastest, slowest = channels.min(-1).values, channels.max(-1).values
    else:
        fastest = slowest = per_token.mean(-1)
    spans = memory_spans(attention.float().cpu(), span_mass).float()
    medians = spans.median(-1).values
    return pd.DataFrame({
        "layer": layer, "head": np.arange(h), "n_tokens": t,
        "mean_log_decay": per_token.mean(-1).numpy(),
        "half_life": [half_life(float(m)) for m in per_token.mean(-1)],
        "half_life_fastest": [half_life(float(m)) for m in fastest],
        "half_life_slowest": [half_life(float(m)) for m in slowest],
        "span_mean": spans.mean(-1).numpy(), "span_median": medians.numpy(), "span_last": spans[:, -1].numpy(),
        "role": [role(float(m), t, local_span) for m in medians]})
