"""Kernel tests run the Triton kernels on CPU through Triton's interpreter.

TRITON_INTERPRET must be set before triton is first imported, so it is set here, at collection time.
Every test also runs with PyTorch's uninitialised-memory fill on: torch.empty returns NaN (floats)
or the largest integer (ints), so an output element a kernel forgets to write cannot pass.
"""

from __future__ import annotations

import os
import zlib

os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch


@pytest.fixture(autouse=True)
def poison_uninitialised_memory():
    deterministic = torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.utils.deterministic.fill_uninitialized_memory = fill


@pytest.fixture
def gen(request) -> torch.Generator:
    """A generator seeded from the test id: fresh inputs per case, reproducible per test."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def no_gpu_timing(monkeypatch):
    """Benchmarks on CPU: each timing runs its function once and reports 1 ms; CUDA graphs replay nothing new."""
    import importlib

    import workbench_kernels._bench
    from workbench_kernels.bench_all import OPS

    def once(fn, rep_ms=100):
        fn()
        return 1.0

    for module in [workbench_kernels._bench, *(importlib.import_module(f"workbench_kernels.{op}.bench") for op in OPS)]:
        if hasattr(module, "time_ms"):
            monkeypatch.setattr(module, "time_ms", once)
        if hasattr(module, "graphed"):
            monkeypatch.setattr(module, "graphed", lambda fn: fn)  # graph_time_ms looks it up in _bench
