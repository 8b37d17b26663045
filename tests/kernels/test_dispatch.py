"""The public function of each op package: on CPU it runs naive.py, warns once per op, validates."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
import torch.nn.functional as F

from workbench_kernels import dispatch
from workbench_kernels.delta_rule import chunk_delta_rule, recurrent_delta_rule
from workbench_kernels.delta_rule import naive as delta_naive
from workbench_kernels.selection_scores import naive as scores_naive
from workbench_kernels.selection_scores import page_scores, selection_scores
from workbench_kernels.sparse_decode import naive as decode_naive
from workbench_kernels.sparse_decode import sparse_decode
from workbench_kernels.stripe_prefill import find_stripes, stripe_prefill
from workbench_kernels.stripe_prefill import naive as stripe_naive


def calls(gen):
    """(op name, public call, reference result) for each public op, on small CPU inputs."""
    q, k = torch.randn(1, 4, 16, generator=gen), torch.randn(1, 2, 9, 16, generator=gen)
    idx = torch.tensor([[[0, 3, -1], [8, 1, 2]]], dtype=torch.int32)
    qs, ks = torch.randn(1, 2, 40, 16, generator=gen), torch.randn(1, 1, 40, 16, generator=gen)
    qd, kd = torch.randn(1, 5, 2, 8, generator=gen), F.normalize(torch.randn(1, 5, 2, 8, generator=gen), dim=-1)
    beta = torch.rand(1, 5, 2, generator=gen)
    stripes, counts = stripe_naive.find_stripes(qs, ks, 2.0, 8, 2)
    return [
        ("sparse_decode", lambda: sparse_decode(q, k, k, idx), decode_naive.sparse_decode(q, k, k, idx)[0]),
        ("selection_scores", lambda: selection_scores(q, k, page_size=4),
         page_scores(scores_naive.selection_scores(q, k), 4)),
        ("chunk_delta_rule", lambda: chunk_delta_rule(qd, kd, qd, beta)[0],
         delta_naive.recurrence(qd, kd, qd, beta)[0]),
        ("recurrent_delta_rule", lambda: recurrent_delta_rule(qd, kd, qd, beta)[0],
         delta_naive.recurrence(qd, kd, qd, beta)[0]),
        ("find_stripes", lambda: find_stripes(qs, ks, theta=2.0, block_size=8, step=2)[0], stripes),
        ("stripe_prefill", lambda: stripe_prefill(qs, ks, ks, stripes, counts, block_size=8, step=2),
         stripe_naive.stripe_prefill(qs, ks, ks, stripes, counts, 8, 2)),
    ]


def test_cpu_runs_the_reference_and_says_so_once_per_op_without_a_warning(gen, caplog):
    caplog.set_level(logging.INFO, logger="workbench_kernels")
    for op, call, expected in calls(gen):
        dispatch.warned.discard(op)
        caplog.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a CPU user cannot act on it: no warning
            out = call()
            call()
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
        assert [r.getMessage() for r in caplog.records if "PyTorch reference" in r.getMessage()] == [
            f"workbench_kernels.{op}: tensors on cpu, running the PyTorch reference instead of the Triton kernel "
            "(which needs CUDA)"]


def test_cpu_path_validates_too():
    q, k = torch.zeros(1, 4, 8), torch.zeros(1, 2, 5, 8)
    with pytest.raises(ValueError, match="int32"):
        sparse_decode(q, k, k, torch.zeros(1, 2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="multiple of KV heads"):
        selection_scores(torch.zeros(1, 3, 8), k)
    with pytest.raises(ValueError, match="beta"):
        chunk_delta_rule(torch.zeros(1, 4, 2, 8), torch.zeros(1, 4, 2, 8), torch.zeros(1, 4, 2, 8),
                                 torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match="power of two"):
        find_stripes(torch.zeros(1, 2, 32, 8), torch.zeros(1, 1, 32, 8), block_size=12)
