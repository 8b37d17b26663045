"""Attention summaries computed in chunks equal the same summaries of the full map, and never build it."""

from __future__ import annotations

import pytest
import torch

from workbench_kernels.attention_tiles import naive, tile_summaries


@pytest.mark.parametrize("t, block_q, block_k, hkv", [(37, 8, 16, 2), (64, 16, 16, 4), (100, 32, 8, 1)])
def test_chunked_summaries_equal_the_full_map_pooled(t, block_q, block_k, hkv):
    gen = torch.Generator().manual_seed(t)
    q = torch.randn(2, 4, t, 16, generator=gen)
    k = torch.randn(2, hkv, t, 16, generator=gen) * 2  # peaked rows: entropy and distance vary
    got = tile_summaries(q, k, block_q=block_q, block_k=block_k)
    expected = naive.dense_summaries(q, k, block_q, block_k)
    for name in ("tiles", "sink", "entropy", "distance"):
        torch.testing.assert_close(got[name], expected[name], atol=2e-4, rtol=1e-5, msg=name)
    torch.testing.assert_close(got["tiles"].sum(-1), torch.ones(2, 4, -(-t // block_q)))  # each row is a whole
    assert (got["tiles"].tril(-1 if block_q == block_k else -t) >= 0).all()


PEAK_GROWTH = """
import resource, sys, torch
from workbench_kernels.attention_tiles import naive
t = 8192
q, k = torch.randn(1, 1, t, 8), torch.randn(1, 1, t, 8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
getattr(naive, sys.argv[1])(q, k, 256, 256)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_a_long_prompt_is_summarised_in_memory_of_a_tile_not_of_the_map():
    """At 8,192 tokens one head's map takes 256 MiB: the full-map pooling's peak grows by at least that, the
    chunked summaries' by a small fraction of it (each measured in a fresh process)."""
    import subprocess
    import sys

    def growth(function: str) -> int:
        run = subprocess.run([sys.executable, "-c", PEAK_GROWTH, function], capture_output=True, text=True,
                             check=True)
        return int(run.stdout.split()[-1])

    full_map = 8192 * 8192 * 4
    assert growth("dense_summaries") >= full_map  # the measure sees a map when there is one
    assert growth("tile_summaries") < full_map // 8


def test_bad_arguments_are_refused():
    q = torch.zeros(1, 3, 8, 4)
    with pytest.raises(ValueError, match="multiple of KV heads"):
        tile_summaries(q, torch.zeros(1, 2, 8, 4))
    with pytest.raises(ValueError, match="block_q: expected a positive integer"):
        tile_summaries(q, torch.zeros(1, 1, 8, 4), block_q=0)


@pytest.mark.parametrize("t, block, hkv, d", [(100, 32, 2, 16), (64, 16, 4, 24), (90, 48, 1, 16)])
def test_the_triton_kernel_equals_the_reference(t, block, hkv, d):
    """Under the interpreter: two streaming passes, tile masses added atomically, each row's statistics."""
    from workbench_kernels.attention_tiles import tiles

    gen = torch.Generator().manual_seed(t + d)
    q = torch.randn(2, 4, t, d, generator=gen)
    k = torch.randn(2, hkv, t, d, generator=gen) * 2
    got = tiles.tile_summaries(q, k, block)
    expected = naive.tile_summaries(q, k, block, block)
    for name in ("tiles", "sink", "entropy", "distance"):
        torch.testing.assert_close(got[name], expected[name], atol=2e-4, rtol=1e-4, msg=name)
    with pytest.raises(ValueError, match="multiple of 16"):
        tiles.tile_summaries(q, k, 24)
