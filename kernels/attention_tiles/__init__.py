"""Attention summaries that scale to long prompts: the mass of every query block x key block tile, each query's
sink weight, entropy and mean distance, and the top keys of chosen queries, computed without a [T, T] map (see
`naive`)."""

from __future__ import annotations

from workbench_kernels.dispatch import use_triton


def tile_summaries(q, k, *, block_q: int = 128, block_k: int = 128, scale=None):
    """q [B, Hq, T, D], k [B, Hkv, T, D] (causal, grouped heads) -> {"tiles": [B, Hq, NQ, NK], "sink", "entropy",
    "distance": [B, Hq, T]}, fp32. CUDA tensors with square tiles of a multiple of 16 tokens run the Triton kernel
    (`tiles`); anything else the streaming PyTorch reference (`naive`)."""
    from workbench_kernels.attention_tiles import checks, naive

    checks.validate(q, k, block_q, block_k)
    if block_q == block_k and block_q % 16 == 0 and use_triton("attention_tiles", q):
        from workbench_kernels.attention_tiles import tiles

        return tiles.tile_summaries(q, k, block_q, scale)
    return naive.tile_summaries(q, k, block_q, block_k, scale)


def top_keys(q, k, queries: list[int], *, top_k: int = 8, scale=None):
    """The `top_k` keys of each query position in `queries` -> (keys int64 [B, Hq, Q, k], weights fp32); rows x T
    memory, never T x T."""
    from workbench_kernels.attention_tiles import checks, naive

    checks.validate(q, k, 1, 1)
    if not queries or not all(0 <= p < q.shape[2] for p in queries):
        raise ValueError(f"queries: expected positions in 0..{q.shape[2] - 1}, got {queries}")
    if top_k < 1:
        raise ValueError(f"top_k: expected >= 1, got {top_k}")
    return naive.top_keys(q, k, list(queries), top_k, scale)
