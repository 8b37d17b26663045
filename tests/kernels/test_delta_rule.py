"""Delta rule: chunked and recurrent Triton kernels (interpreted on CPU) against naive.py and each other."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.kernels.checks import LOW_PRECISION, assert_close_fp32, assert_close_lowp
from workbench_kernels.delta_rule import naive
from workbench_kernels.delta_rule.chunk import DEFAULT_CONFIG, chunk_delta_rule, resolve_config
from workbench_kernels.delta_rule.recurrent import recurrent_delta_rule


def make_inputs(gen, b=2, t=37, h=3, dk=24, dv=20, gated=True):
    """q, k (L2-normalised), v, beta in (0, 1), g <= 0 (or None), initial state."""
    q = torch.randn(b, t, h, dk, generator=gen)
    k = F.normalize(torch.randn(b, t, h, dk, generator=gen), dim=-1)
    v = torch.randn(b, t, h, dv, generator=gen)
    beta = torch.rand(b, t, h, generator=gen)
    g = F.logsigmoid(torch.randn(b, t, h, generator=gen)) * 0.5 if gated else None
    h0 = torch.randn(b, h, dk, dv, generator=gen)
    return q, k, v, beta, g, h0


def run(fn, dtype, q, k, v, beta, g, h0, **kw):
    low = [x.to(dtype) if x is not None else None for x in (q, k, v, beta, g)]
    return fn(*low[:4], g=low[4], initial_state=h0, output_final_state=True, **kw)


@pytest.mark.parametrize("dtype", [torch.float32, *LOW_PRECISION])
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("kind", ["chunk", "recurrent"])
def test_matches_naive(kind, dtype, gated, gen):
    inputs = make_inputs(gen, t=37 if kind == "chunk" else 19, gated=gated)  # the recurrence is slow to interpret
    ref_o, ref_s = naive.recurrence(*inputs[:5], initial_state=inputs[5])
    if kind == "chunk":
        o, s = run(chunk_delta_rule, dtype, *inputs, chunk_size=32)  # two chunks, two 16-blocks each
    else:
        o, s = run(recurrent_delta_rule, dtype, *inputs, block_v=16)  # two value slices
    assert o.dtype == dtype and s.dtype == torch.float32
    if dtype == torch.float32:
        assert_close_fp32(o, ref_o)
        assert_close_fp32(s, ref_s)
    else:
        low = [x.to(dtype) if x is not None else None for x in inputs[:5]]
        torch_o, torch_s = naive.recurrence(*low, initial_state=inputs[5])
        assert_close_lowp(o, ref_o, torch_o)
        assert_close_lowp(s, ref_s, torch_s)


@pytest.mark.parametrize("kind", ["chunk", "recurrent"])
def test_takes_fp32_log_decays_beside_low_precision_inputs(kind, gen):
    """Gated DeltaNet layers compute g in fp32 (transformers' qwen3_next, fla's contract): the kernel takes it as
    given beside bf16 q, k, v and beta."""
    q, k, v, beta, g, h0 = make_inputs(gen, t=37 if kind == "chunk" else 19)
    ref_o, _ = naive.recurrence(q, k, v, beta, g, initial_state=h0)
    fn, kw = (chunk_delta_rule, {"chunk_size": 32}) if kind == "chunk" else (recurrent_delta_rule, {})
    low = [x.to(torch.bfloat16) for x in (q, k, v, beta)]
    o, _ = fn(*low, g=g, initial_state=h0, output_final_state=True, **kw)
    torch_o, _ = naive.recurrence(*low, g.to(torch.bfloat16), initial_state=h0)
    assert_close_lowp(o, ref_o, torch_o)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_narrow_slices_and_wide_products_match_naive(dtype, gen):
    """Another corner of the config: narrow value slices in both passes (several programs per head),
    tf32 products (w and u too) and fp32 intermediates, 64-token chunks; still within the bounds."""
    inputs = make_inputs(gen, t=70, dv=40)
    ref_o, ref_s = naive.recurrence(*inputs[:5], initial_state=inputs[5])
    config = {"block_v": 16, "out_block_v": 32, "low_state": False, "low_qs": False, "low_pe": False,
              "fp32_states": True, "fp32_vnew": True, "wu_precision": "wide"}
    o, s = run(chunk_delta_rule, dtype, *inputs, chunk_size=64, config=config)
    if dtype == torch.float32:
        assert_close_fp32(o, ref_o)
        assert_close_fp32(s, ref_s)
    else:
        low = [x.to(dtype) for x in inputs[:5]]
        torch_o, torch_s = naive.recurrence(*low, initial_state=inputs[5])
        assert_close_lowp(o, ref_o, torch_o)
        assert_close_lowp(s, ref_s, torch_s)


@pytest.mark.parametrize("gated", [False, True])
def test_bf16_values_beyond_fp16_range(gated, gen):
    """bf16 v (and state) above fp16's 65504: the fp16 operands of u = T (beta v) are scaled per column,
    so the output is finite and within the bound, as for v of order 1."""
    inputs = list(make_inputs(gen, t=70, dv=40, gated=gated))
    inputs[2], inputs[5] = inputs[2] * 2.0**20, inputs[5] * 2.0**20  # o and S scale with v and S_0
    ref_o, ref_s = naive.recurrence(*inputs[:5], initial_state=inputs[5])
    o, s = run(chunk_delta_rule, torch.bfloat16, *inputs, chunk_size=64, config={"wu_precision": "half"})
    assert o.float().abs().max() > 65504 and o.isfinite().all() and s.isfinite().all()
    low = [x.to(torch.bfloat16) if x is not None else None for x in inputs[:5]]
    torch_o, torch_s = naive.recurrence(*low, initial_state=inputs[5])
    assert_close_lowp(o, ref_o, torch_o)
    assert_close_lowp(s, ref_s, torch_s)


def test_one_huge_value_column_leaves_the_others_precise(gen):
    """The fp16 scaling is per value column: a column 2^20 times the others does not push them into fp16's
    subnormals (with one scale per chunk their error was 6x the bound's)."""
    inputs = list(make_inputs(gen, b=1, t=64, h=1, dk=16, dv=16, gated=False))
    inputs[2] = inputs[2].clone()
    inputs[2][..., 0] *= 2.0**20
    inputs[5] = torch.zeros_like(inputs[5])
    ref_o, _ = naive.recurrence(*inputs[:5], initial_state=inputs[5])
    o, _ = run(chunk_delta_rule, torch.bfloat16, *inputs, chunk_size=64, config={"wu_precision": "half"})
    low = [x.to(torch.bfloat16) if x is not None else None for x in inputs[:5]]
    torch_o, _ = naive.recurrence(*low, initial_state=inputs[5])
    assert_close_lowp(o[..., 1:], ref_o[..., 1:], torch_o[..., 1:])


@pytest.mark.parametrize("precision", ["low", "wide"])
def test_other_wu_precisions_run(precision, gen):
    """w, u on operands in the inputs' dtype ("low", fla's choice) or tf32: finite, close to the
    reference (the bound is for the default; "low" is over it for gated bf16, see DEFAULT_CONFIG)."""
    inputs = make_inputs(gen, t=37)
    ref_o, _ = naive.recurrence(*inputs[:5], initial_state=inputs[5])
    o, _ = run(chunk_delta_rule, torch.bfloat16, *inputs, chunk_size=32, config={"wu_precision": precision})
    low = [x.to(torch.bfloat16) for x in inputs[:5]]
    assert_close_lowp(o, ref_o, naive.recurrence(*low, initial_state=inputs[5])[0], factor=3.0)


def test_state_split_into_64_row_tiles(gen):
    """K = 200: four 64-row state tiles, the last one partial; fp32 exact."""
    q, k, v, beta, g, h0 = make_inputs(gen, b=1, t=40, h=1, dk=200, dv=24)
    ref_o, ref_s = naive.recurrence(q, k, v, beta, g, initial_state=h0)
    o, s = chunk_delta_rule(q, k, v, beta, g=g, initial_state=h0, output_final_state=True, chunk_size=32)
    assert_close_fp32(o, ref_o)
    assert_close_fp32(s, ref_s)


@pytest.mark.parametrize("chunk_size", [32, 64])
def test_chunked_and_recurrent_kernels_agree(chunk_size, gen):
    """Several chunks, the last one partial; no initial state; K, V odd."""
    q, k, v, beta, g, _ = make_inputs(gen, b=1, t=70, h=2, dk=19, dv=33)
    o_c, s_c = chunk_delta_rule(q, k, v, beta, g=g, output_final_state=True, chunk_size=chunk_size)
    o_r, s_r = recurrent_delta_rule(q, k, v, beta, g=g)
    assert_close_fp32(o_c, o_r)
    assert_close_fp32(s_c, s_r)


def test_prefill_then_decode_continues_the_sequence(gen):
    """Chunked prefill of the first 30 tokens, then recurrent decode of the rest from its state."""
    q, k, v, beta, g, h0 = make_inputs(gen, b=1, t=33, h=2)
    ref_o, ref_s = naive.recurrence(q, k, v, beta, g, initial_state=h0)
    o1, s1 = chunk_delta_rule(q[:, :30], k[:, :30], v[:, :30], beta[:, :30], g=g[:, :30], initial_state=h0,
                              output_final_state=True, chunk_size=16)
    o2, s2 = recurrent_delta_rule(q[:, 30:31], k[:, 30:31], v[:, 30:31], beta[:, 30:31], g=g[:, 30:31],
                                  initial_state=s1)
    o3, s3 = recurrent_delta_rule(q[:, 31:], k[:, 31:], v[:, 31:], beta[:, 31:], g=g[:, 31:], initial_state=s2)
    assert_close_fp32(torch.cat([o1, o2, o3], dim=1), ref_o)
    assert_close_fp32(s3, ref_s)


@pytest.mark.parametrize("gated", [False, True])
def test_naive_chunk_form_matches_recurrence(gated, gen):
    inputs = make_inputs(gen, t=50, gated=gated)
    ref_o, ref_s = naive.recurrence(*inputs[:5], initial_state=inputs[5])
    o, s = naive.chunkwise(*inputs[:5], initial_state=inputs[5], chunk_size=16)
    assert_close_fp32(o, ref_o)
    assert_close_fp32(s, ref_s)


def test_without_final_state_and_explicit_scale(gen):
    q, k, v, beta, _, _ = make_inputs(gen, b=1, t=9, h=1, gated=False)
    o, s = chunk_delta_rule(q, k, v, beta, scale=0.5, chunk_size=16)
    assert s is None
    assert_close_fp32(o, naive.recurrence(q, k, v, beta, scale=0.5)[0])


def test_rejects_bad_arguments():
    q = k = torch.zeros(1, 4, 2, 8)
    v, beta = torch.zeros(1, 4, 2, 6), torch.zeros(1, 4, 2)
    for args, kw, words in [
        ((q[0], k, v, beta), {}, "rank 4"),
        ((q, k.half(), v, beta), {}, "dtype"),
        ((q, k, v[:, :3], beta), {}, "shape"),
        ((q, k, v, beta[..., :1]), {}, "beta"),
        ((q, k, v, beta), {"g": torch.zeros(1, 4, 3)}, "g"),
        ((q, k, v, beta), {"initial_state": torch.zeros(1, 2, 6, 8)}, "initial_state"),
        ((q, k, v, beta), {"chunk_size": 48}, "chunk_size"),
    ]:
        with pytest.raises(ValueError, match=words):
            chunk_delta_rule(*args, **kw)


def test_config_defaults_and_checks():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_config(None, None, 128, cpu)["block_v"] == 128  # one slice in the interpreter
    assert resolve_config(None, None, 128, cuda)["block_v"] == DEFAULT_CONFIG["block_v"] == 32
    assert resolve_config(None, 16, 20, cuda)["block_v"] == 16 and resolve_config(None, 64, 20, cuda)["block_v"] == 32
    assert resolve_config({"low_pe": False}, None, 128, cuda)["low_pe"] is False
    with pytest.raises(ValueError, match="power of two"):
        resolve_config({"out_block_v": 48}, None, 128, cuda)
    with pytest.raises(ValueError, match="at least 64 on CUDA"):  # 32 faulted on the H200
        resolve_config({"out_block_v": 32}, None, 128, cuda)
    assert resolve_config({"out_block_v": 32}, None, 128, cpu)["out_block_v"] == 32  # the interpreter computes it
    assert resolve_config({"out_block_v": 32}, None, 20, cuda)["out_block_v"] == 32  # all of V
    with pytest.raises(ValueError, match="config: expected keys"):
        resolve_config({"block_w": 64}, None, 128, cuda)
    assert resolve_config(None, None, 128, cuda)["wu_precision"] == "half"
    with pytest.raises(ValueError, match="wu_precision"):
        resolve_config({"wu_precision": "fp16"}, None, 128, cuda)
    assert resolve_config({"gated_out_maxnreg": None}, None, 128, cuda)["gated_out_maxnreg"] is None
    for cap in (16, 300, 128.0):
        with pytest.raises(ValueError, match="gated_out_maxnreg"):
            resolve_config({"gated_out_maxnreg": cap}, None, 128, cuda)


def test_bench_sweep_runs_on_cpu(monkeypatch, no_gpu_timing):
    """`python -m workbench_kernels.delta_rule.bench --sweep` runs once, in a lent GPU call: smoke-test it here."""
    from workbench_kernels.delta_rule import bench

    for attr, value in {"H": 2, "D": 16, "SIZES": [(1, 40)], "QUICK": [(1, 40)], "CHECK": {"b": 1, "t": 40, "h": 2}}.items():
        monkeypatch.setattr(bench, attr, value)
    configs = {"default": {}, "wide": bench.WIDE, "broken": {"block_v": 24}}
    text = "\n".join(bench.sweep(quick=False, bandwidth=1e12, device="cpu", configs=configs))
    assert "| wide |" in text and "broken: ValueError" in text and "nan" not in text.lower()
    assert set(bench.SWEEP) and all(set(cfg) <= set(DEFAULT_CONFIG) for cfg in bench.SWEEP.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_l2norm_normalises_strided_head_rows_in_one_pass(dtype, gen):
    """q and k come as slices of a layer's fused projection [B, T, H * (2K + ...)]: rows strided, last dim dense."""
    from workbench_kernels.delta_rule import naive
    from workbench_kernels.delta_rule.qk_norm import l2norm

    fused = torch.randn(2, 9, 2 * 3 * 24 + 5, generator=gen).to(dtype)
    x = fused[..., 5: 5 + 3 * 24].unflatten(-1, (3, 24))[..., :20]  # strided rows, D = 20 (not a power of two)
    y = l2norm(x)
    assert y.dtype == dtype and y.shape == x.shape and y.is_contiguous()
    ref = naive.l2norm(x.float())
    if dtype == torch.float32:
        assert_close_fp32(y, ref)
    else:  # the fp32 result rounded once: within one bf16 step of it
        assert ((y.float() - ref).abs() <= 2**-7 * ref.abs() + 1e-6).all()
    assert torch.allclose(y.float().norm(dim=-1), torch.ones(2, 9, 3), atol=1e-2 if dtype != torch.float32 else 1e-5)
