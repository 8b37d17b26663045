"""Reference maths for AnchorAttention's stripe prefill in plain PyTorch (dense masks, small sizes).

Regions (R = block_size * step tokens, the official code's "big block"): a query at position t in
region r = t // R attends to its anchor region — the first init_blocks regions and the local window
from region r - local_blocks + 1 up to itself, causally — plus the stripes chosen for region r, all
of which lie between the two. Stripes come from `find_stripes`: the anchor of each query is its
largest score over the anchor region; queries are averaged over sub-blocks of block_size (the anchors
too), and a candidate key is kept for region r when any of r's averaged queries scores within theta
of its averaged anchor: mean_q . k * scale >= mean_anchor - theta.
"""

from __future__ import annotations

import torch


def regions(t: int, block_size: int, step: int, init_blocks: int, local_blocks: int, device=None):
    """(anchor [T, T] bool: query row may use key column as anchor, candidate [NR, T] bool: stripe candidates)."""
    r_size = block_size * step
    pos = torch.arange(t, device=device)
    region = pos // r_size  # [T]
    local_start = (region - local_blocks + 1).clamp_min(0) * r_size  # [T], per query
    causal = pos[None, :] <= pos[:, None]
    anchor = causal & ((pos[None, :] < init_blocks * r_size) | (pos[None, :] >= local_start[:, None]))
    starts = (torch.arange(-(-t // r_size), device=device) - local_blocks + 1).clamp_min(0) * r_size  # [NR]
    candidate = (pos[None, :] >= init_blocks * r_size) & (pos[None, :] < starts[:, None])
    return anchor, candidate


def anchors(q, k, block_size, step, init_blocks, local_blocks, scale=None):
    """Largest scaled score of each query over its anchor region -> [B, Hq, T] fp32."""
    _, hq, t, d = q.shape
    scale = d**-0.5 if scale is None else scale
    anchor, _ = regions(t, block_size, step, init_blocks, local_blocks, q.device)
    s = (q.float() @ k.float().repeat_interleave(hq // k.shape[1], dim=1).transpose(-1, -2)) * scale
    return s.masked_fill(~anchor, float("-inf")).amax(-1)


def find_stripes(q, k, theta, block_size, step, init_blocks=1, local_blocks=1, scale=None):
    """Stripes per (batch, query head, region): int32 [B, Hq, NR, W] ascending, -1 padded, and counts [B, Hq, NR]."""
    b, hq, t, d = q.shape
    scale = d**-0.5 if scale is None else scale
    _, candidate = regions(t, block_size, step, init_blocks, local_blocks, q.device)
    q_mean, a_mean = compress(q, anchors(q, k, block_size, step, init_blocks, local_blocks, scale), block_size)
    s = (q_mean @ k.float().repeat_interleave(hq // k.shape[1], dim=1).transpose(-1, -2)) * scale  # [B, Hq, NS, T]
    hit = s >= a_mean[..., None] - theta
    nr, ns = candidate.shape[0], s.shape[2]
    hit = torch.nn.functional.pad(hit, (0, 0, 0, nr * step - ns)).view(b, hq, nr, step, t).any(3) & candidate
    width = stripe_width(t, block_size, step, init_blocks, local_blocks)
    pos = torch.arange(t, device=q.device).expand_as(hit)
    ordered = torch.where(hit, pos, t).sort(-1).values[..., :width]
    return torch.where(ordered < t, ordered, -1).int(), hit.sum(-1).int()


def compress(q, anchor, block_size):
    """Mean query [B, Hq, NS, D] fp32 and mean anchor [B, Hq, NS] over sub-blocks of block_size queries."""
    b, hq, t, d = q.shape
    ns = -(-t // block_size)
    pad = ns * block_size - t
    q_sum = torch.nn.functional.pad(q.float(), (0, 0, 0, pad)).view(b, hq, ns, block_size, d).sum(3)
    a_sum = torch.nn.functional.pad(anchor, (0, pad)).view(b, hq, ns, block_size).sum(3)
    n = torch.full((ns,), block_size, device=q.device, dtype=torch.float32)
    n[-1] = t - (ns - 1) * block_size
    return q_sum / n[:, None], a_sum / n


def stripe_width(t, block_size, step, init_blocks, local_blocks):
    """Most candidate columns any region has: the width of the stripe lists."""
    r_size = block_size * step
    nr = -(-t // r_size)
    return max(0, min(t, (nr - local_blocks) * r_size) - init_blocks * r_size)


def stripe_prefill(q, k, v, stripes, counts, block_size, step, init_blocks=1, local_blocks=1, scale=None):
    """Causal attention over the anchor region plus each region's stripes -> [B, Hq, T, D] in q's dtype."""
    b, hq, t, d = q.shape
    scale = d**-0.5 if scale is None else scale
    anchor, _ = regions(t, block_size, step, init_blocks, local_blocks, q.device)
    r_size = block_size * step
    nr = stripes.shape[2]
    live = torch.arange(stripes.shape[-1], device=q.device) < counts[..., None]  # [B, Hq, NR, W]
    cols = torch.where(live & (stripes >= 0), stripes.long(), t)
    chosen = torch.zeros(b, hq, nr, t + 1, dtype=torch.bool, device=q.device).scatter_(-1, cols, True)[..., :t]
    mask = anchor | chosen.repeat_interleave(r_size, dim=2)[:, :, :t]  # [B, Hq, T, T]
    g = hq // k.shape[1]
    s = (q @ k.repeat_interleave(g, dim=1).transpose(-1, -2)) * scale
    p = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1)
    return p @ v.repeat_interleave(g, dim=1)
