"""Attention summaries that scale to long prompts: the mass of every query block x key block tile, and each
query's sink weight, entropy and mean distance, computed without a [T, T] map (see `naive`)."""

from __future__ import annotations


def tile_summaries(q, k, *, block_q: int = 128, block_k: int = 128, scale=None):
    """q [B, Hq, T, D], k [B, Hkv, T, D] (causal, grouped heads) -> {"tiles": [B, Hq, NQ, NK], "sink", "entropy",
    "distance": [B, Hq, T]}, fp32. Runs the streaming PyTorch reference on every device; its Triton kernel is
    the issue's next step."""
    from workbench_kernels.attention_tiles import checks, naive

    checks.validate(q, k, block_q, block_k)
    return naive.tile_summaries(q, k, block_q, block_k, scale)
