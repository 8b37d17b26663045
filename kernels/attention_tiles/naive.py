"""Reference maths of the attention summaries that scale to long prompts, in plain PyTorch.

Causal softmax attention of q [B, Hq, T, D] over k [B, Hkv, T, D] (grouped heads) is summarised without
ever holding a [T, T] map: two passes over key chunks of `block_k`, for one chunk of `block_q` queries at a
time, the first taking each row's log-sum-exp, the second its weights p = exp(s - lse). From them:
- tiles [B, Hq, NQ, NK]: the attention mass of every query block x key block tile, the mean over the block's
  queries of the weight they put on the block's keys (each row of tiles sums to 1);
- sink [B, Hq, T]: each query's weight on key 0;
- entropy [B, Hq, T]: each query's entropy in nats, lse - sum_j p_j s_j;
- distance [B, Hq, T]: each query's mean attention distance, sum_j p_j (i - j).
Memory is O(block_q x block_k) per head, so it runs at 128k tokens where the map would need 64 GB per head.
"""

from __future__ import annotations

import torch


def tile_summaries(q: torch.Tensor, k: torch.Tensor, block_q: int = 128, block_k: int = 128,
                   scale: float | None = None) -> dict[str, torch.Tensor]:
    """{tiles, sink, entropy, distance} of causal attention (see the module), all fp32."""
    b, hq, t, d = q.shape
    group = hq // k.shape[1]
    scale = d**-0.5 if scale is None else scale
    n_q, n_k = -(-t // block_q), -(-t // block_k)
    out = {"tiles": q.new_zeros(b, hq, n_q, n_k, dtype=torch.float32),
           **{name: q.new_zeros(b, hq, t, dtype=torch.float32) for name in ("sink", "entropy", "distance")}}
    keys = k.float().repeat_interleave(group, dim=1)  # [B, Hq, T, D]
    for qi in range(n_q):
        rows = slice(qi * block_q, min(t, (qi + 1) * block_q))
        qb = q[:, :, rows].float() * scale  # [B, Hq, bq, D]
        query_pos = torch.arange(rows.start, rows.stop, device=q.device)
        chunks = range(0, min(n_k, rows.stop // block_k + 1))  # key chunks a causal row of the block can see

        def scores(ki):
            cols = slice(ki * block_k, min(t, (ki + 1) * block_k))
            s = qb @ keys[:, :, cols].transpose(-1, -2)  # [B, Hq, bq, bk]
            key_pos = torch.arange(cols.start, cols.stop, device=q.device)
            return s.masked_fill(key_pos[None, :] > query_pos[:, None], float("-inf")), key_pos

        lse = torch.full(qb.shape[:3], float("-inf"), device=q.device)
        for ki in chunks:
            lse = torch.logaddexp(lse, torch.logsumexp(scores(ki)[0], dim=-1))
        weighted = torch.zeros_like(lse)
        for ki in chunks:
            s, key_pos = scores(ki)
            p = torch.exp(s - lse[..., None])  # 0 where masked
            out["tiles"][:, :, qi, ki] = p.sum(-1).mean(-1)
            weighted += (p * s.nan_to_num(neginf=0.0)).sum(-1)
            out["distance"][:, :, rows] += (p * (query_pos[:, None] - key_pos[None, :])).sum(-1)
            if ki == 0:
                out["sink"][:, :, rows] = p[..., 0]
        out["entropy"][:, :, rows] = lse - weighted
    return out


def dense_summaries(q: torch.Tensor, k: torch.Tensor, block_q: int = 128, block_k: int = 128,
                    scale: float | None = None) -> dict[str, torch.Tensor]:
    """The same summaries from the full [T, T] map (small sizes only): what `tile_summaries` must equal."""
    b, hq, t, d = q.shape
    scale = d**-0.5 if scale is None else scale
    s = (q.float() @ k.float().repeat_interleave(hq // k.shape[1], dim=1).transpose(-1, -2)) * scale
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    p = torch.softmax(s.masked_fill(~causal, float("-inf")), dim=-1)  # [B, Hq, T, T]
    n_q, n_k = -(-t // block_q), -(-t // block_k)
    padded = torch.nn.functional.pad(p, (0, n_k * block_k - t))
    per_query = padded.unflatten(-1, (n_k, block_k)).sum(-1)  # [B, Hq, T, NK]
    tiles = torch.stack([per_query[:, :, i * block_q:(i + 1) * block_q].mean(2) for i in range(n_q)], dim=2)
    pos = torch.arange(t, device=q.device)
    logp = torch.log(p.clamp_min(1e-38))
    return {"tiles": tiles, "sink": p[..., 0], "entropy": -(p * logp).sum(-1),
            "distance": (p * (pos[:, None] - pos[None, :]).clamp_min(0)).sum(-1)}


def top_keys(q: torch.Tensor, k: torch.Tensor, queries: list[int], top_k: int,
             scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The `top_k` keys each of the query positions `queries` attends to most: (keys int64 [B, Hq, Q, k], weights
    fp32 [B, Hq, Q, k]), largest first; a query that sees fewer keys pads with key -1, weight 0."""
    _, hq, t, d = q.shape
    scale = d**-0.5 if scale is None else scale
    rows = torch.tensor(queries, device=q.device)
    s = (q[:, :, rows].float() @ k.float().repeat_interleave(hq // k.shape[1], dim=1).transpose(-1, -2)) * scale
    s = s.masked_fill(torch.arange(t, device=q.device)[None, :] > rows[:, None], float("-inf"))
    weights, keys = torch.softmax(s, dim=-1).topk(min(top_k, t), dim=-1)
    visible = keys <= rows[:, None]
    return keys.where(visible, -1), weights.where(visible, 0.0)
