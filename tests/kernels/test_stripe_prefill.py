"""Stripe finding and stripe prefill (Triton, interpreted on CPU) against naive.py and dense SDPA."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from tests.kernels.checks import LOW_PRECISION, assert_close_fp32, assert_close_lowp
from workbench_kernels.stripe_prefill import naive
from workbench_kernels.stripe_prefill.prefill import PrefillConfig, stripe_prefill
from workbench_kernels.stripe_prefill.stripes import find_stripes

REGIONS = {"block_size": 8, "step": 2}  # regions of 16 tokens: T = 100 spans 7 of them


def make_inputs(gen, b=1, hq=4, hkv=2, t=100, d=24):
    q = torch.randn(b, hq, t, d, generator=gen) * 2
    return q, torch.randn(b, hkv, t, d, generator=gen), torch.randn(b, hkv, t, d, generator=gen)


@pytest.mark.parametrize("init_blocks, local_blocks", [(1, 1), (0, 2)])
def test_find_stripes_matches_naive(init_blocks, local_blocks, gen):
    q, k, _ = make_inputs(gen)
    kw = dict(REGIONS, init_blocks=init_blocks, local_blocks=local_blocks)
    stripes, counts = find_stripes(q, k, theta=3.0, **kw)
    ref_stripes, ref_counts = naive.find_stripes(q, k, 3.0, **kw)
    assert counts.sum() > 0 and torch.equal(counts, ref_counts)
    assert torch.equal(stripes, ref_stripes)  # ascending, then -1 padding


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_find_stripes_low_precision_agrees(dtype, gen):
    """Rounding moves keys that sit at the threshold only: the lists overlap almost entirely."""
    q, k, _ = make_inputs(gen)
    stripes, counts = find_stripes(q.to(dtype), k.to(dtype), theta=3.0, **REGIONS)
    ref_stripes, _ = naive.find_stripes(q, k, 3.0, **REGIONS)
    got, want = set(), set()
    for idx in itertools.product(*map(range, counts.shape)):
        row = stripes[idx][: counts[idx]].tolist()
        assert row == sorted(row) and (stripes[idx][counts[idx]:] == -1).all()
        got |= {(*idx, c) for c in row}
        want |= {(*idx, c) for c in ref_stripes[idx].tolist() if c >= 0}
    assert want and len(got ^ want) <= 0.05 * len(got | want)


@pytest.mark.parametrize("dtype", [torch.float32, *LOW_PRECISION])
def test_prefill_matches_naive(dtype, gen):
    q, k, v = make_inputs(gen, t=93, hq=6, hkv=3)
    stripes, counts = naive.find_stripes(q, k, 2.0, **REGIONS)
    ref = naive.stripe_prefill(q, k, v, stripes, counts, **REGIONS)
    low = [x.to(dtype) for x in (q, k, v)]
    out = stripe_prefill(*low, stripes, counts, **REGIONS)
    if dtype == torch.float32:
        assert_close_fp32(out, ref)
    else:
        assert_close_lowp(out, ref, naive.stripe_prefill(*low, stripes, counts, **REGIONS))


@pytest.mark.parametrize("config, d", [
    (PrefillConfig(block_m=32, block_n=16, heavy_first=False, group_heads=False), 32),  # D = BLOCK_D: no load masks
    (PrefillConfig(block_m=32, block_n=32), 24),  # one key step per block: the diagonal alone is masked
    (PrefillConfig(block_m=64, block_n=16, heavy_first=True, group_heads=True), 32),  # block_m capped at R = 32
    # the shapes and the step order the GPU default and sweep use, at interpreter sizes
    (PrefillConfig(block_m=32, block_n=32, block_s=16), 24),  # wide contiguous steps, narrow stripe gathers
    (PrefillConfig(block_m=32, block_n=16, block_s=32, acc_in_dot=True), 32),  # stripe steps wider than the rest
    (PrefillConfig(block_m=32, block_n=32, block_s=16, acc_in_dot=True), 24),
])
def test_prefill_configs_match_naive(config, d, gen):
    """Tile sizes, launch orders (GQA groups side by side, heavy blocks first) and the tutorial's step
    order change no output. T = 157 is no multiple of the tiles: the diagonal block runs past T."""
    regions = {"block_size": 16, "step": 2}
    q, k, v = make_inputs(gen, b=2, hq=8, hkv=2, t=157, d=d)
    stripes, counts = naive.find_stripes(q, k, 2.0, **regions)
    ref = naive.stripe_prefill(q, k, v, stripes, counts, **regions)
    assert_close_fp32(stripe_prefill(q, k, v, stripes, counts, **regions, config=config), ref)
    low = [x.bfloat16() for x in (q, k, v)]
    assert_close_lowp(stripe_prefill(*low, stripes, counts, **regions, config=config), ref,
                      naive.stripe_prefill(*low, stripes, counts, **regions))


def test_every_stripe_is_dense_causal_attention(gen):
    q, k, v = make_inputs(gen, t=77)
    stripes, counts = find_stripes(q, k, theta=1e9, **REGIONS)
    out = stripe_prefill(q, k, v, stripes, counts, **REGIONS)
    assert_close_fp32(out, F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True))


def test_prefill_ignores_entries_outside_the_gap(gen):
    """A stripe list naming anchor-region keys (or -1) attends to nothing extra."""
    q, k, v = make_inputs(gen, t=64, hq=2, hkv=1)
    stripes = torch.full((1, 2, 4, 32), -1, dtype=torch.int32)
    stripes[:, :, 3, :3] = torch.tensor([20, 5, 60], dtype=torch.int32)  # region 3: only key 20 is a candidate
    counts = torch.tensor([[[0, 0, 0, 4]] * 2], dtype=torch.int32)
    out = stripe_prefill(q, k, v, stripes, counts, **REGIONS)
    clean = stripes.clone()
    clean[:, :, 3, :3] = torch.tensor([20, -1, -1], dtype=torch.int32)
    assert_close_fp32(out, naive.stripe_prefill(q, k, v, clean, counts, **REGIONS))


def test_prefill_masks_from_the_first_entry_outside_the_gap(gen):
    """Whole steps over a list's clean prefix go unmasked; from its first bad entry on, steps are masked. A
    count past the list's width reads nothing beyond it."""
    from workbench_kernels.stripe_prefill.prefill import _clean_kernel

    q, k, v = make_inputs(gen, t=100, hq=2, hkv=1)
    stripes = torch.full((1, 2, 7, 80), -1, dtype=torch.int32)
    good = torch.randperm(80, generator=gen)[:50].sort().values.int() + 16  # region 6's gap: keys 16..95
    stripes[0, 0, 6, :50] = good
    stripes[0, 0, 6, 37] = 3  # in the initial region: ignored, and the steps from here on are masked
    stripes[0, 1, 6, :80] = torch.arange(16, 96, dtype=torch.int32)  # every candidate, count beyond the width
    counts = torch.zeros(1, 2, 7, dtype=torch.int32)
    counts[0, :, 6] = torch.tensor([50, 1000], dtype=torch.int32)
    clean = torch.empty(1, 2, 7, dtype=torch.int32)
    _clean_kernel[(14,)](stripes, counts, clean, *stripes.stride()[:3], *counts.stride()[:2], 2, 7, 80,
                         R=16, INIT=1, LOCAL=1, BLOCK=32)
    assert clean[0, :, 6].tolist() == [37, 80] and clean[0, :, :6].eq(0).all()
    out = stripe_prefill(q, k, v, stripes, counts, **REGIONS)
    fixed, fixed_counts = stripes.clone(), counts.clone()
    fixed[0, 0, 6, 37] = -1
    fixed_counts[0, 1, 6] = 80
    assert_close_fp32(out, naive.stripe_prefill(q, k, v, fixed, fixed_counts, **REGIONS))


def test_rejects_bad_arguments():
    q, k = torch.zeros(1, 2, 32, 16), torch.zeros(1, 1, 32, 16)
    stripes, counts = torch.zeros(1, 2, 2, 0, dtype=torch.int32), torch.zeros(1, 2, 2, dtype=torch.int32)
    for args, kw, words in [
        ((q[0], k, k, stripes, counts), {}, "rank 4"),
        ((q, k.half(), k, stripes, counts), {}, "dtype"),
        ((q, k, k, stripes, counts.long()), {}, "int32"),
        ((q, k, k, stripes[:, :, :1], counts), {}, "NR=2"),
        ((q, k, k, stripes, counts), {"block_size": 12}, "power of two"),
    ]:
        with pytest.raises(ValueError, match=words):
            stripe_prefill(*args, **{**REGIONS, **kw})
    with pytest.raises(ValueError, match=">= 16"):
        find_stripes(q, k, block_size=4, step=2)
    with pytest.raises(ValueError, match=">= 16"):
        stripe_prefill(q, k, k, stripes, counts, block_size=4, step=2)
    for bad in ({"block_m": 16, "block_n": 32}, {"block_n": 24}, {"num_warps": 3}, {"num_stages": 0},
                {"block_s": 24}, {"tail_s": 8}):
        with pytest.raises(ValueError, match="PrefillConfig"):
            PrefillConfig(**bad)


def test_bench_sweep_runs(monkeypatch, no_gpu_timing):
    """The GPU-only --sweep path on CPU: shrunk sizes, each timing one call, every config's errors filled in."""
    from tests.kernels.test_bench_smoke import SHRINK
    from workbench_kernels import _bench
    from workbench_kernels.stripe_prefill import bench

    for attr, value in SHRINK["workbench_kernels.stripe_prefill.bench"].items():
        monkeypatch.setattr(bench, attr, value)
    parts, best = bench.sweep(bandwidth=1e12, device="cpu", configs={"a": {}, "b": {"block_m": 16, "block_n": 16}})
    text = "\n".join(parts)
    assert best in (PrefillConfig(), PrefillConfig(block_m=16, block_n=16)) and "n/a | n/a" not in text.split("| a |")[1]
    assert "| b |" in text and "nan" not in text.lower()
    monkeypatch.setattr(_bench, "MATMUL_N", 8)
    assert len(bench.run(quick=True, bandwidth=1e12, device="cpu", config=best).results) == len(bench.QUICK)
