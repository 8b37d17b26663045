"""Delta rule: chunked and recurrent Triton kernels (interpreted on CPU) against naive.py and each other."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kernels.delta_rule import naive
from kernels.delta_rule.chunk import _state_block_v, chunk_delta_rule
from kernels.delta_rule.recurrent import recurrent_delta_rule
from tests.kernels.checks import LOW_PRECISION, assert_close_fp32, assert_close_lowp


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_split_prepare_matches_naive(dtype, gen):
    """The two-kernel parallel pass (w and u read back in the inputs' dtype) keeps the 2x bound."""
    inputs = make_inputs(gen, t=70)
    ref_o, ref_s = naive.recurrence(*inputs[:5], initial_state=inputs[5])
    o, s = run(chunk_delta_rule, dtype, *inputs, chunk_size=64, split_prepare=True)
    if dtype == torch.float32:
        assert_close_fp32(o, ref_o)
        assert_close_fp32(s, ref_s)
    else:
        low = [x.to(dtype) for x in inputs[:5]]
        torch_o, torch_s = naive.recurrence(*low, initial_state=inputs[5])
        assert_close_lowp(o, ref_o, torch_o)
        assert_close_lowp(s, ref_s, torch_s)


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


def test_state_kernel_slices_default_to_one_on_cpu_and_64_on_cuda():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert _state_block_v(128, 128, None, cpu) == 128 and _state_block_v(128, 128, None, cuda) == 64
    assert _state_block_v(24, 20, None, cuda) == 32 and _state_block_v(64, 64, 16, cuda) == 16
    with pytest.raises(ValueError, match="at least 64 on CUDA"):  # miscomputed on the H200 (triton 3.6)
        _state_block_v(128, 128, 32, cuda)
