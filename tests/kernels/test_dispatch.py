"""Each op package's public function on CPU: runs naive.py without Triton, warns once per op, validates."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from workbench_kernels import dispatch
from workbench_kernels.delta_rule import chunk_delta_rule, l2norm, recurrent_delta_rule
from workbench_kernels.delta_rule import naive as delta_naive
from workbench_kernels.selection_scores import naive as scores_naive
from workbench_kernels.selection_scores import page_scores, selection_scores
from workbench_kernels.sparse_decode import naive as decode_naive
from workbench_kernels.sparse_decode import sparse_decode
from workbench_kernels.stripe_prefill import find_stripes, stripe_prefill
from workbench_kernels.stripe_prefill import naive as stripe_naive
from workbench_kernels.token_summaries import token_summaries

REPO = Path(__file__).resolve().parents[2]


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
        ("l2norm", lambda: l2norm(qd), delta_naive.l2norm(qd)),
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


def bad_calls():
    """(op name, CPU call with an argument the op rejects, part of the ValueError message) for each op."""
    q, k = torch.zeros(1, 4, 8), torch.zeros(1, 2, 5, 8)
    qd, qs, ks = torch.zeros(1, 4, 2, 8), torch.zeros(1, 2, 32, 8), torch.zeros(1, 1, 32, 8)
    vs = torch.zeros(1, 1, 32, 4)  # a head dim other than k's
    return [
        ("sparse_decode", lambda: sparse_decode(q, k, k, torch.zeros(1, 2, 3, dtype=torch.int64)), "int32"),
        ("selection_scores", lambda: selection_scores(torch.zeros(1, 3, 8), k), "multiple of KV heads"),
        ("chunk_delta_rule", lambda: chunk_delta_rule(qd, qd, qd, torch.zeros(1, 4, 3)), "beta"),
        ("recurrent_delta_rule", lambda: recurrent_delta_rule(qd, qd, qd.int(), qd[..., 0]), "v: "),
        ("find_stripes", lambda: find_stripes(qs, ks, block_size=12), "power of two"),
        ("stripe_prefill", lambda: stripe_prefill(qs, ks, vs, None, None, block_size=8, step=2), "v: "),
        ("token_summaries", lambda: token_summaries(q, torch.tensor([0, 2]), [2], 0), "top_k"),
    ]


def test_cpu_path_validates_too():
    for _, call, match in bad_calls():
        with pytest.raises(ValueError, match=match):
            call()


NO_TRITON = """
import json, sys, warnings
sys.modules["triton"] = None  # before any import: `import triton` fails, as where it is not installed
import torch
from tests.kernels.test_dispatch import bad_calls, calls
from workbench_kernels.token_summaries import naive, token_summaries

gen = torch.Generator().manual_seed(0)
x, rows = torch.randn(2, 5, 8, generator=gen), torch.tensor([0, 1, 4])
summaries = ("token_summaries", lambda: token_summaries(x, rows, [2, 1], 3),
             naive.token_summaries(x, rows, [2, 1], 3))
ran, errors = [], {}
with warnings.catch_warnings():
    warnings.simplefilter("error")
    for op, call, expected in [*calls(gen), summaries]:
        torch.testing.assert_close(call(), expected, rtol=1e-5, atol=1e-6)
        ran.append(op)
    for op, call, _ in bad_calls():
        try:
            call()
        except ValueError as e:
            errors[op] = str(e)
print(json.dumps({"ran": ran, "errors": errors}))
"""


def test_cpu_path_needs_no_triton(gen):
    """Triton is a dependency of the CUDA path only: with `import triton` failing, every op's public function
    runs on CPU tensors and rejects bad arguments with the same messages as where Triton is installed."""
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", NO_TRITON], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["ran"] == [op for op, _, _ in calls(gen)] + ["token_summaries"]
    expected = {}
    for op, call, _ in bad_calls():
        with pytest.raises(ValueError) as raised:
            call()
        expected[op] = str(raised.value)
    assert found["errors"] == expected
