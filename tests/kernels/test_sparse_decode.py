"""sparse_decode: the Triton kernel (interpreted on CPU) against naive.py and dense SDPA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.kernels.checks import LOW_PRECISION, assert_close_fp32, assert_close_lowp
from workbench_kernels.sparse_decode import naive
from workbench_kernels.sparse_decode.decode import DecodeConfig, launch_split, sparse_decode


def random_indices(b: int, hkv: int, n: int, k: int, gen: torch.Generator, pad: int = 0) -> torch.Tensor:
    """[B, Hkv, K] int32: distinct positions of [0, N) in random order, `pad` of them replaced by -1."""
    rows = [torch.randperm(max(n, k), generator=gen)[:k] for _ in range(b * hkv)]
    idx = torch.stack(rows).view(b, hkv, k)
    idx = torch.where(idx < n, idx, -1)  # K > N: the surplus becomes padding
    if pad:
        idx.view(-1, k)[:, torch.randperm(k, generator=gen)[:pad]] = -1
    return idx.to(torch.int32)


def make_inputs(b, hq, hkv, n, d, gen):
    q = torch.randn(b, hq, d, generator=gen)
    k = torch.randn(b, hkv, n, d, generator=gen)
    v = torch.randn(b, hkv, n, d, generator=gen)
    return q, k, v


@pytest.mark.parametrize("dtype", [torch.float32, *LOW_PRECISION])
@pytest.mark.parametrize("split_size", [None, 16])
def test_matches_naive(dtype, split_size, gen):
    b, hq, hkv, n, d, kk = 2, 6, 3, 37, 24, 29
    q, k, v = make_inputs(b, hq, hkv, n, d, gen)
    idx = random_indices(b, hkv, n, kk, gen, pad=5)
    idx[1, 2] = -1  # a whole group with nothing to attend to
    ref, ref_lse = naive.sparse_decode(q, k, v, idx)
    low = [t.to(dtype) for t in (q, k, v)]
    out, lse = sparse_decode(*low, idx, return_lse=True, split_size=split_size)
    assert out.dtype == dtype and lse.dtype == torch.float32
    assert torch.equal(out[1, 4:6].float(), torch.zeros(2, d))
    assert torch.isneginf(lse[1, 4:6]).all()
    live = torch.isfinite(ref_lse)
    if dtype == torch.float32:
        assert_close_fp32(out, ref)
        assert_close_fp32(lse[live], ref_lse[live])
    else:
        torch_out, torch_lse = naive.sparse_decode(*low, idx)
        assert_close_lowp(out, ref, torch_out)
        assert_close_lowp(lse[live], ref_lse[live], torch_lse[live])


@pytest.mark.parametrize("split_size", [None, 32])
def test_all_positions_equal_dense_attention(split_size, gen):
    """K > N: every position once plus padding; GQA with 4 query heads per KV head."""
    b, hq, hkv, n, d = 2, 8, 2, 37, 24
    q, k, v = make_inputs(b, hq, hkv, n, d, gen)
    idx = random_indices(b, hkv, n, 45, gen)
    out = sparse_decode(q, k, v, idx, split_size=split_size)
    dense = F.scaled_dot_product_attention(q[:, :, None], k, v, enable_gqa=True)[:, :, 0]
    assert_close_fp32(out, dense)


@pytest.mark.parametrize("config", [DecodeConfig(block_k=16, num_warps=2, num_stages=2),
                                    DecodeConfig(block_k=32, num_warps=8, num_stages=4),
                                    DecodeConfig(block_k=128, num_warps=4, num_stages=1)])
def test_launch_configs(config, gen):
    """The tunables the benchmark sweeps change the launch, never the result (bf16, two splits)."""
    b, hq, hkv, n, d, kk = 2, 8, 2, 300, 32, 200
    q, k, v = (t.bfloat16() for t in make_inputs(b, hq, hkv, n, d, gen))
    idx = random_indices(b, hkv, n, kk, gen, pad=7)
    split = 128 if config.block_k == 128 else 100
    assert launch_split(split, kk, config)[1] == 2
    ref, _ = naive.sparse_decode(q.float(), k.float(), v.float(), idx)
    out = sparse_decode(q, k, v, idx, split_size=split, config=config)
    assert_close_lowp(out, ref, naive.sparse_decode(q, k, v, idx)[0])


def test_launch_split_rounding():
    config = DecodeConfig(block_k=64)
    assert launch_split(2048, 8192, config) == (2048, 4, 64)
    assert launch_split(100, 8192, config) == (128, 64, 64)  # whole blocks
    assert launch_split(40, 8192, config) == (64, 128, 64)  # at most MAX_SPLITS = 128 splits
    assert launch_split(40, 100, config) == (48, 3, 16)  # below block_k: blocks of 16
    with pytest.raises(ValueError, match="block_k"):
        DecodeConfig(block_k=48)


def test_strided_cache_and_scale(gen):
    """A cache viewed out of a larger [B, Nmax, Hkv, D] buffer, and an explicit scale."""
    b, hq, hkv, n, d = 1, 3, 1, 21, 40
    buf = torch.randn(b, 50, hkv, 2, d, generator=gen)
    k, v = buf[:, :n, :, 0].transpose(1, 2), buf[:, :n, :, 1].transpose(1, 2)  # [B, Hkv, N, D], strided
    q = torch.randn(b, hq, d, generator=gen)
    idx = random_indices(b, hkv, n, 11, gen)
    out = sparse_decode(q, k, v, idx, scale=0.3)
    ref, _ = naive.sparse_decode(q, k.contiguous(), v.contiguous(), idx, scale=0.3)
    assert_close_fp32(out, ref)


def test_no_indices_at_all(gen):
    q, k, v = make_inputs(1, 2, 1, 9, 16, gen)
    out, lse = sparse_decode(q, k, v, torch.empty(1, 1, 0, dtype=torch.int32), return_lse=True)
    assert torch.equal(out, torch.zeros_like(out)) and torch.isneginf(lse).all()


def test_rejects_bad_arguments():
    q, k, v = torch.zeros(1, 4, 8), torch.zeros(1, 2, 5, 8), torch.zeros(1, 2, 5, 8)
    idx = torch.zeros(1, 2, 3, dtype=torch.int32)
    cases = [
        ((q[0], k, v, idx), "rank 3"),
        ((torch.zeros(1, 3, 8), k, v, idx), "multiple of KV heads"),
        ((q, k.half(), v, idx), "dtype"),
        ((q, k, v, idx.long()), "int32"),
        ((q, k, v[:, :, :4], idx), "shape"),
        ((q, k, v, idx[:, :1]), "indices"),
    ]
    for args, words in cases:
        with pytest.raises(ValueError, match=words):
            sparse_decode(*args)


def test_bench_sweep_runs_on_cpu(monkeypatch, no_gpu_timing):
    """The sweep's code path, shrunk (the GPU run is one lent call): every config timed, one chosen."""
    from workbench_kernels.sparse_decode import bench

    for attr, value in {"HQ": 4, "HKV": 2, "D": 16, "TARGET": {"b": 1, "n": 48, "keep": 0.5},
                        "QUICK": {"batches": (1,), "lengths": (40,), "keeps": (0.5,)}, "CHECK": {"b": 1, "n": 40, "k": 20},
                        "SWEEP": (DecodeConfig(), DecodeConfig(block_k=16, num_stages=2))}.items():
        monkeypatch.setattr(bench, attr, value)
    parts, best = bench.sweep(bandwidth=1e12, device="cpu")
    assert best in bench.SWEEP
    text = "\n".join(parts)
    assert text.count("\n| ") >= 3 and "failed" not in text and "nan" not in text.lower()
    assert "\n".join(bench.run(quick=True, bandwidth=1e12, device="cpu", config=best).sections).count("launch:") == 1
