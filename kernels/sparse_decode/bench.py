"""Benchmark `sparse_decode` against dense decode through SDPA (flash and cuDNN) on the same cache.

    python -m workbench_kernels.sparse_decode.bench [--quick] [--sweep]

Hq=32, Hkv=8, D=128, bf16; B in {1, 8}, N in {8k, 32k, 128k}, keep fraction in {50, 25, 12.5, 3}%.
Indices are random, sorted per (batch, KV head); a last table, at B=8, picks whole 16-token pages, as
DELTA does. Bandwidth counts the bytes actually read (gathered K and V rows, indices, q) plus the output
written. --sweep first times each DecodeConfig
of SWEEP at the target size (B=8, N=32k, keep 25%) and runs the tables with the fastest one.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel

from workbench_kernels._bench import (SDPA_BACKENDS, bench_main, dense_decode, graph_time_ms, max_rel_err,
                                      section, table, time_ms)
from workbench_kernels.results import Report, Result
from workbench_kernels.sparse_decode import naive
from workbench_kernels.sparse_decode.decode import DecodeConfig, launch_split, sparse_decode

HQ, HKV, D = 32, 8, 128
SIZES = {"batches": (1, 8), "lengths": (8192, 32768, 131072), "keeps": (0.5, 0.25, 0.125, 0.03)}
QUICK = {"batches": (1, 8), "lengths": (32768,), "keeps": (0.25, 0.03)}
CHECK = {"b": 2, "n": 32768, "k": 8192}
TARGET = {"b": 8, "n": 32768, "keep": 0.25}
# around the default (4 programs per SM, 64 indices a step, 4 warps, 4 stages): more programs, more stages and
# wider blocks each put more gathered bytes in flight; warps are tried too
SWEEP = (  # the default first; 3 stages were far slower than 4 for these gathers
    DecodeConfig(),
    DecodeConfig(waves=1),
    DecodeConfig(waves=2),
    DecodeConfig(waves=3),
    DecodeConfig(waves=6),
    DecodeConfig(num_stages=5),
    DecodeConfig(num_stages=6),
    DecodeConfig(waves=2, num_stages=5),
    DecodeConfig(waves=2, num_stages=6),
    DecodeConfig(waves=1, num_stages=6),
    DecodeConfig(block_k=32, num_stages=6),
    DecodeConfig(block_k=32, num_stages=8),
    DecodeConfig(waves=8, block_k=32, num_stages=6),
    DecodeConfig(block_k=128, num_warps=8, num_stages=3),
    DecodeConfig(waves=2, block_k=128, num_warps=8, num_stages=3),
    DecodeConfig(num_warps=2),
    DecodeConfig(num_warps=8),
)


def random_indices(b: int, n: int, k: int, device) -> torch.Tensor:
    """[B, Hkv, K] int32: K distinct random positions per (batch, KV head), ascending."""
    return torch.rand(b, HKV, n, device=device).topk(k, dim=-1).indices.sort(dim=-1).values.int()


def page_indices(b: int, n: int, k: int, device, page: int = 16) -> torch.Tensor:
    """[B, Hkv, K] int32: the tokens of K / page distinct random pages of `page` positions (DELTA selects pages of
    16), ascending; K rounded down to whole pages (at least one)."""
    pages = random_indices(b, n // page, max(1, k // page), device)  # [B, Hkv, K / page]
    return (pages[..., None] * page + torch.arange(page, device=device, dtype=torch.int32)).flatten(2)


def check(device, config: DecodeConfig) -> str:
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
        out = sparse_decode(q, kc, vc, idx, split_size=split, config=config)
        rows.append([f"kernel, split_size={split or 'auto'}", max_rel_err(out, ref)])
    every = torch.arange(n, device=device, dtype=torch.int32).expand(b, HKV, n).contiguous()
    dense = F.scaled_dot_product_attention(q[:, :, None].float(), kc.float(), vc.float(), enable_gqa=True)[:, :, 0]
    rows.append(["kernel, all N indices vs dense SDPA fp32",
                 max_rel_err(sparse_decode(q, kc, vc, every, config=config), dense)])
    return section(f"sparse_decode correctness (B={b}, N={n}, K={k}, bf16)",
                   table(["what", "max rel err vs fp32"], rows))


def dense_times(q, kc, vc, rep: int, notes: set) -> dict:
    """{backend: (eager ms, graph ms or None)} of one dense SDPA decode step, for each backend that runs."""
    dense = {}
    for name, backend in SDPA_BACKENDS.items():
        fn, note = dense_decode(backend, q, kc, vc)
        if note:
            notes.add(f"{name}: {note}")
        if fn is not None:
            with sdpa_kernel(backend):
                dense[name] = (time_ms(fn, rep), graph_time_ms(fn, rep, notes, f"dense {name}"))
    return dense


def sparse_bytes(b: int, k: int) -> int:
    """Bytes a sparse step moves: gathered K and V rows, the indices, q read and out written."""
    return 2 * b * HKV * k * D * 2 + b * HKV * k * 4 + 2 * b * HQ * D * 2


def sweep(bandwidth: float, device: str = "cuda", rep: int = 100) -> tuple[list[str], DecodeConfig]:
    """Time every config of SWEEP at the target size; return the table and the fastest accurate config
    (max relative error vs fp32 no worse than plain PyTorch in bf16)."""
    device = torch.device(device)
    b, n = TARGET["b"], TARGET["n"]
    k = max(1, round(TARGET["keep"] * n))
    q = torch.randn(b, HQ, D, device=device, dtype=torch.bfloat16)
    kc = torch.randn(b, HKV, n, D, device=device, dtype=torch.bfloat16)
    vc = torch.randn_like(kc)
    idx = random_indices(b, n, k, device)
    notes = set()
    best_dense = min((t[0] for t in dense_times(q, kc, vc, rep, notes).values()), default=None)
    ref, _ = naive.sparse_decode(q.float(), kc.float(), vc.float(), idx)
    bound = max_rel_err(naive.sparse_decode(q, kc, vc, idx)[0], ref)
    rows, timed = [], []
    for config in SWEEP:
        split, splits, _ = launch_split(config.split(b, HKV, k, device), k, config)
        head = [config.waves, config.block_k, config.num_warps, config.num_stages, split, splits * b * HKV]
        fn = functools.partial(sparse_decode, q, kc, vc, idx, config=config)
        try:
            err = max_rel_err(fn(), ref)
            ms = time_ms(fn, rep)
        except Exception as exc:  # noqa: BLE001 - a config the GPU cannot run (e.g. out of shared memory) costs one row
            rows.append([*head, None, None, None, None, None, f"failed: {type(exc).__name__}"])
            continue
        ms_graph = graph_time_ms(fn, rep, notes, f"sparse_decode {config}")
        ok = err <= bound
        if ok:
            timed.append((ms, config))
        rows.append([*head, ms, ms_graph, best_dense / ms if best_dense else None,
                     sparse_bytes(b, k) / (ms * 1e-3) / bandwidth, err, "" if ok else "less accurate than PyTorch"])
    best = min(timed, key=lambda t: t[0])[1] if timed else DecodeConfig()
    body = table(["waves", "block_k", "warps", "stages", "split", "programs", "ms", "graph ms",
                  "speedup vs faster dense", "BW / copy BW", "max rel err", "note"], rows)
    notes_list = [*sorted(notes), f"faster dense backend: {best_dense} ms; PyTorch bf16 max rel err: {bound:.3g}",
                  f"fastest: {best} (the tables below use it)"]
    return [section(f"sparse_decode sweep (B={b}, N={n}, K={k}, Hq={HQ}, Hkv={HKV}, D={D}, bf16)",
                    body, notes_list)], best


def measure_cache(b: int, n: int, keeps, rep: int, bandwidth: float, device, notes: set, config: DecodeConfig,
                  pick=random_indices):
    """Eager and graphed rows for one cache size, and the graphed ones as results: dense baselines once, then
    each keep fraction, with the indices `pick(b, n, k, device)` chooses."""
    q = torch.randn(b, HQ, D, device=device, dtype=torch.bfloat16)
    kc = torch.randn(b, HKV, n, D, device=device, dtype=torch.bfloat16)
    vc = torch.randn_like(kc)
    dense = dense_times(q, kc, vc, rep, notes)
    best = min((t[0] for t in dense.values()), default=None)
    best_graph = min((t[1] for t in dense.values() if t[1] is not None), default=None)
    dense_bytes = 2 * b * HKV * n * D * 2 + 2 * b * HQ * D * 2
    eager, graphs, results = [], [], []
    for keep in keeps:
        idx = pick(b, n, max(1, round(keep * n)), device)
        k = idx.shape[-1]
        fn = functools.partial(sparse_decode, q, kc, vc, idx, config=config)
        ms, ms_graph = time_ms(fn, rep), graph_time_ms(fn, rep, notes, "sparse_decode")
        nbytes = sparse_bytes(b, k)
        eager.append([b, n, f"{keep:.1%}", k, dense.get("flash", (None,))[0], dense.get("cudnn", (None,))[0],
                      ms, best / ms if best else None, nbytes / (ms * 1e-3) / bandwidth,
                      dense_bytes / (best * 1e-3) / bandwidth if best else None])
        graphs.append([b, n, f"{keep:.1%}", best_graph, ms_graph,
                       best_graph / ms_graph if best_graph and ms_graph else None])
        if ms_graph:
            results.append(Result("sparse_decode", f"one decode step, {keep:.1%} of the keys, CUDA graphs",
                                  f"B={b} N={n} Hq={HQ} Hkv={HKV} D={D} bf16", ms_graph,
                                  "dense SDPA decode, faster of flash and cuDNN, CUDA graphs", best_graph,
                                  "copy bandwidth", nbytes / (ms_graph * 1e-3) / bandwidth, {"keep": keep}))
    return eager, graphs, results


def run(quick: bool, bandwidth: float, device: str = "cuda", config: DecodeConfig | None = None) -> Report:
    """The correctness check and the eager and graph tables, with `config` (default DecodeConfig())."""
    device = torch.device(device)
    config = config or DecodeConfig()
    rep = 50 if quick else 100
    sizes = QUICK if quick else SIZES
    eager, graphs, results, notes = [], [], [], set()
    for b in sizes["batches"]:
        for n in sizes["lengths"]:
            rows, graph_rows, found = measure_cache(b, n, sizes["keeps"], rep, bandwidth, device, notes, config)
            eager += rows
            graphs += graph_rows
            results += [r for r in found if r.config["keep"] == TARGET["keep"]]
            torch.cuda.empty_cache()
    body = table(["B", "N", "keep", "K", "dense flash ms", "dense cuDNN ms", "sparse ms", "speedup vs faster dense",
                  "sparse BW / copy BW", "dense BW / copy BW"], eager)
    graph_body = table(["B", "N", "keep", "dense graph ms (faster backend)", "sparse graph ms", "speedup"], graphs)
    page_rows = []
    for n in sizes["lengths"]:
        rows, graph_rows, _ = measure_cache(8, n, sizes["keeps"], rep, bandwidth, device, notes, config, page_indices)
        page_rows += [[*row[:4], row[6], row[7], graph[5], row[8]] for row, graph in zip(rows, graph_rows)]
        torch.cuda.empty_cache()
    page_body = table(["B", "N", "keep", "K", "sparse ms", "speedup vs faster dense", "speedup, CUDA graphs",
                       "sparse BW / copy BW"], page_rows)
    notes_list = [*sorted(notes), "target at B=8, N=32k, keep 25%: speedup >= 3.2x (ideal 4x), sparse BW >= 0.75",
                  f"launch: {config}"]
    return Report([
        check(device, config),
        section("sparse_decode vs dense SDPA decode (Hq=32, Hkv=8, D=128, bf16)", body, notes_list),
        section("sparse_decode vs dense SDPA decode, CUDA graphs", graph_body),
        section("sparse_decode over DELTA's 16-token pages (random pages instead of random tokens)", page_body),
    ], results)


if __name__ == "__main__":
    bench_main(run, __doc__, sweep)
