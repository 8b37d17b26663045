"""Benchmark `sparse_decode` against dense decode through SDPA (flash and cuDNN) on the same cache.

    python -m kernels.sparse_decode.bench [--quick]

Hq=32, Hkv=8, D=128, bf16; B in {1, 8}, N in {8k, 32k, 128k}, keep fraction in {50, 25, 12.5, 3}%.
Indices are random, sorted per (batch, KV head). Bandwidth counts the bytes actually read
(gathered K and V rows, indices, q) plus the output written.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel

from kernels._bench import (
    SDPA_BACKENDS,
    bench_main,
    dense_decode,
    graph_time_ms,
    max_rel_err,
    section,
    table,
    time_ms,
)
from kernels.sparse_decode import naive
from kernels.sparse_decode.decode import sparse_decode

HQ, HKV, D = 32, 8, 128
SIZES = {"batches": (1, 8), "lengths": (8192, 32768, 131072), "keeps": (0.5, 0.25, 0.125, 0.03)}
QUICK = {"batches": (1, 8), "lengths": (32768,), "keeps": (0.25, 0.03)}
CHECK = {"b": 2, "n": 32768, "k": 8192}


def random_indices(b: int, n: int, k: int, device) -> torch.Tensor:
    """[B, Hkv, K] int32: K distinct random positions per (batch, KV head), ascending."""
    return torch.rand(b, HKV, n, device=device).topk(k, dim=-1).indices.sort(dim=-1).values.int()


def check(device) -> str:
    """Correctness at a realistic size: max relative error against the fp32 reference."""
    gen = torch.Generator(device=device).manual_seed(0)
    b, n, k = CHECK["b"], CHECK["n"], CHECK["k"]
    q = torch.randn(b, HQ, D, device=device, generator=gen, dtype=torch.bfloat16)
    kc = torch.randn(b, HKV, n, D, device=device, generator=gen, dtype=torch.bfloat16)
    vc = torch.randn(b, HKV, n, D, device=device, generator=gen, dtype=torch.bfloat16)
    idx = random_indices(b, n, k, device)
    ref, _ = naive.sparse_decode(q.float(), kc.float(), vc.float(), idx)
    torch_bf16, _ = naive.sparse_decode(q, kc, vc, idx)
    rows = [["naive in bf16 (PyTorch)", max_rel_err(torch_bf16, ref)]]
    for split in (None, 512, k):
        out = sparse_decode(q, kc, vc, idx, split_size=split)
        rows.append([f"kernel, split_size={split or 'auto'}", max_rel_err(out, ref)])
    every = torch.arange(n, device=device, dtype=torch.int32).expand(b, HKV, n).contiguous()
    dense = F.scaled_dot_product_attention(q[:, :, None].float(), kc.float(), vc.float(), enable_gqa=True)[:, :, 0]
    rows.append(["kernel, all N indices vs dense SDPA fp32", max_rel_err(sparse_decode(q, kc, vc, every), dense)])
    return section(f"sparse_decode correctness (B={b}, N={n}, K={k}, bf16)",
                   table(["what", "max rel err vs fp32"], rows))


def measure_cache(b: int, n: int, keeps, rep: int, bandwidth: float, device, notes: set):
    """Eager and graphed rows for one cache size: dense baselines once, then each keep fraction."""
    q = torch.randn(b, HQ, D, device=device, dtype=torch.bfloat16)
    kc = torch.randn(b, HKV, n, D, device=device, dtype=torch.bfloat16)
    vc = torch.randn_like(kc)
    dense = {}
    for name, backend in SDPA_BACKENDS.items():
        fn, note = dense_decode(backend, q, kc, vc)
        if note:
            notes.add(f"{name}: {note}")
        if fn is not None:
            with sdpa_kernel(backend):
                dense[name] = (time_ms(fn, rep), graph_time_ms(fn, rep, notes, f"dense {name}"))
    best = min((t[0] for t in dense.values()), default=None)
    best_graph = min((t[1] for t in dense.values() if t[1] is not None), default=None)
    dense_bytes = 2 * b * HKV * n * D * 2 + 2 * b * HQ * D * 2
    eager, graphs = [], []
    for keep in keeps:
        k = max(1, round(keep * n))
        idx = random_indices(b, n, k, device)
        fn = functools.partial(sparse_decode, q, kc, vc, idx)
        ms, ms_graph = time_ms(fn, rep), graph_time_ms(fn, rep, notes, "sparse_decode")
        nbytes = 2 * b * HKV * k * D * 2 + b * HKV * k * 4 + 2 * b * HQ * D * 2
        eager.append([b, n, f"{keep:.1%}", k, dense.get("flash", (None,))[0], dense.get("cudnn", (None,))[0],
                      ms, best / ms if best else None, nbytes / (ms * 1e-3) / bandwidth,
                      dense_bytes / (best * 1e-3) / bandwidth if best else None])
        graphs.append([b, n, f"{keep:.1%}", best_graph, ms_graph,
                       best_graph / ms_graph if best_graph and ms_graph else None])
    return eager, graphs


def run(quick: bool, bandwidth: float, device: str = "cuda") -> list[str]:
    device = torch.device(device)
    rep = 50 if quick else 100
    sizes = QUICK if quick else SIZES
    eager, graphs, notes = [], [], set()
    for b in sizes["batches"]:
        for n in sizes["lengths"]:
            rows, graph_rows = measure_cache(b, n, sizes["keeps"], rep, bandwidth, device, notes)
            eager += rows
            graphs += graph_rows
            torch.cuda.empty_cache()
    body = table(["B", "N", "keep", "K", "dense flash ms", "dense cuDNN ms", "sparse ms", "speedup vs faster dense",
                  "sparse BW / copy BW", "dense BW / copy BW"], eager)
    notes_list = [*sorted(notes), "target at B=8, N=32k, keep 25%: speedup >= 3.2x (ideal 4x), sparse BW >= 0.75"]
    graph_body = table(["B", "N", "keep", "dense graph ms (faster backend)", "sparse graph ms", "speedup"], graphs)
    return [
        check(device),
        section("sparse_decode vs dense SDPA decode (Hq=32, Hkv=8, D=128, bf16)", body, notes_list),
        section("sparse_decode vs dense SDPA decode, CUDA graphs", graph_body),
    ]


if __name__ == "__main__":
    bench_main(run, __doc__)
