"""Compile every kernel for an H100 (sm_90) on a machine without a GPU, and report its resources.

    python tests/kernels/compile_sm90.py

The interpreter runs kernels as Python and never lowers them, so a kernel can pass every CPU test
and still fail to compile on the GPU. Triton ships ptxas: this script installs a stand-in driver
that only names the target, makes every launch a compile-only warmup, calls each public function
with CPU tensors at GPU-like sizes (and the GPU's block sizes), and prints registers, shared
memory and spilled (stack/local) bytes from the cubins. Exits non-zero if anything fails to compile
or spills more than SPILL_LIMIT bytes per thread (the delta-rule prepare kernel spills a few words).
Run by tests/kernels/test_compile_sm90.py in a subprocess (TRITON_INTERPRET must be off). To check
against the GPU machine's Triton instead of the local one: `pip install --target DIR triton==3.6.0`
and run with `PYTHONPATH=DIR:. TRITON_CACHE_DIR=...` (3.6 found a constexpr bug 3.9 accepted).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)

import torch
import torch.nn.functional as F
import triton
from triton.backends.compiler import GPUTarget
from triton.runtime import driver
from triton.runtime.jit import JITFunction

SPILL_LIMIT = 64
CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


class TargetOnlyDriver:
    """Just enough of a driver for JITFunction to pick the sm_90 target."""

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_active_torch_device(self):
        return torch.device("cpu")


def compile_all() -> list:
    compiled, label = [], [""]
    run = JITFunction.run

    def compile_only(self, *args, grid, warmup, **kwargs):
        kernel = run(self, *args, grid=grid, warmup=True, **kwargs)
        compiled.append((self.fn.__name__ + label[0], kernel))
        return kernel

    JITFunction.run = compile_only
    driver.set_active(TargetOnlyDriver())

    from workbench_kernels.delta_rule import bench as delta_bench
    from workbench_kernels.delta_rule.chunk import DEFAULT_CONFIG as DELTA_CONFIG
    from workbench_kernels.delta_rule.chunk import chunk_delta_rule
    from workbench_kernels.delta_rule.recurrent import recurrent_delta_rule
    from workbench_kernels.selection_scores.scores import selection_scores
    from workbench_kernels.selection_scores.topk import TopkConfig, page_topk
    from workbench_kernels.sparse_decode.decode import sparse_decode
    from workbench_kernels.stripe_prefill import prefill, stripes
    from workbench_kernels.token_summaries.summaries import token_summaries

    stripes.key_block = lambda device: 64  # the GPU's choice
    bf16 = torch.bfloat16
    for dtype in (bf16, torch.float32):
        q, k = torch.randn(2, 32, 128, dtype=dtype), torch.randn(2, 8, 4096, 128, dtype=dtype)
        idx = torch.randint(0, 4096, (2, 8, 1024), dtype=torch.int32)
        sparse_decode(q, k, k, idx, split_size=256)
        if dtype == bf16:
            selection_scores(q, k, split_size=1024, one_pass=False)
            selection_scores(q, k, per_kv_head=True, split_size=1024, one_pass=False)
            selection_scores(q, k, page_size=16, one_pass=False)  # pages summed in pass 2, one program a key block
            selection_scores(q, k, page_size=16, heads_per_program=1, one_pass=False)  # a (key block, KV head)
            for split in (512, 1024, 2048):  # the one pass, holding 8, 16 and 32 key blocks
                selection_scores(q, k, page_size=16, split_size=split)
            selection_scores(q, k, per_kv_head=True, one_pass=True)
            selection_scores(q.view(2, 32, 1, 128).expand(2, 32, 4, 128), k, page_size=16, one_pass=True)  # 16 rows
    for n in (8192, 32768, 131072):  # 512, 2048 and 8192 pages
        for config in (TopkConfig(), TopkConfig(radix=8), TopkConfig(radix=2)):  # the default, histograms, counts
            page_topk(torch.rand(8, n), n // 64, page_size=16, recent=8, position_bias=1e-7, config=config)
    q, k = torch.randn(2, 1024, 4, 128, dtype=bf16), F.normalize(torch.randn(2, 1024, 4, 128), dim=-1).to(bf16)
    beta, g = torch.rand(2, 1024, 4, dtype=bf16), -torch.rand(2, 1024, 4, dtype=bf16)
    for gate in (None, g):
        chunk_delta_rule(q, k, q, beta, g=gate, config=DELTA_CONFIG)  # what chunk_delta_rule picks on CUDA
        chunk_delta_rule(q, k, q, beta, g=gate, config={**DELTA_CONFIG, **delta_bench.WIDE, "block_v": 32})
        for name, over in delta_bench.SWEEP.items():  # the variants its GPU sweep times
            label[0] = f" [{name}]"
            chunk_delta_rule(q, k, q, beta, g=gate, config={**DELTA_CONFIG, **over})
        label[0] = ""
        recurrent_delta_rule(q[:, :1], k[:, :1], q[:, :1], beta[:, :1], g=None if gate is None else gate[:, :1],
                             block_v=32)
    q, k = torch.randn(1, 4, 8192, 128, dtype=bf16), torch.randn(1, 1, 8192, 128, dtype=bf16)
    found, counts = stripes.find_stripes(q, k)
    prefill.stripe_prefill(q, k, k, found, counts)
    from workbench_kernels.stripe_prefill import bench as stripe_bench

    for name, over in stripe_bench.SWEEP.items():  # the variants its GPU sweep times
        if over:
            label[0] = f" [{name}]"
            prefill.stripe_prefill(q, k, k, found, counts, config=dataclasses.replace(prefill.PrefillConfig(), **over))
    label[0] = ""
    for dtype in (bf16, torch.float16, torch.float32):  # int32 keys, int32 keys, int64 keys
        token_summaries(torch.randn(2, 1100, 2048).to(dtype), torch.arange(1000), [900, 100], 8)
    return compiled


def resources(kernel) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        out = subprocess.run([CUOBJDUMP, "--dump-resource-usage", f.name], capture_output=True, text=True, check=False).stdout
    found = re.search(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)", out)
    regs, stack, _, local = map(int, found.groups())
    return {"regs": regs, "stack": stack, "local": local, "shared": kernel.metadata.shared,
            "warps": kernel.metadata.num_warps}


def main() -> int:
    seen, spills = set(), []
    for name, kernel in compile_all():
        use = resources(kernel)
        row = f"{name:24s} " + " ".join(f"{k}={v}" for k, v in use.items())
        if row not in seen:
            seen.add(row)
            print(row)
        if use["local"] + use["stack"] > SPILL_LIMIT:
            spills.append(name)
    if spills:
        print(f"spill more than {SPILL_LIMIT} bytes per thread: {sorted(set(spills))}")
    return 1 if spills else 0


if __name__ == "__main__":
    sys.exit(main())
