"""Benchmark `selection_scores` + top-k against one dense decode step over the same cache.

    python -m kernels.selection_scores.bench [--quick] [--sweep]

Hq=32, Hkv=8, D=128, bf16, one query step; B in {1, 8}, N in {8k, 32k, 128k}. Selection as in
DELTA: page scores over 16-token pages, the last 8 pages forced, a budget of 25% of the pages, by
the fused `topk.page_topk` (two launches; the PyTorch path it replaces is timed beside it). The scores
kernel reads K twice; bandwidth is reported on those bytes. --sweep first times each TopkConfig of
SWEEP at the target size (B=8, N=32k) and runs the tables with the fastest one that picks exactly
the PyTorch path's pages.
"""

from __future__ import annotations

import torch
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
from kernels._common import next_pow2
from kernels.selection_scores import naive
from kernels.selection_scores.scores import selection_scores
from kernels.selection_scores.select import page_scores, select_topk
from kernels.selection_scores.topk import TopkConfig, page_topk

HQ, HKV, D, PAGE, RECENT, KEEP = 32, 8, 128, 16, 8, 0.25
SIZES = {"batches": (1, 8), "lengths": (8192, 32768, 131072)}
QUICK = {"batches": (1, 8), "lengths": (32768,)}
CHECK = {"b": 2, "n": 32768}
TARGET = {"b": 8, "n": 32768}
# warps from 4 to 32 (the selection kernel is one program a row: more warps, wider reductions), the tokens
# per page-sum program, and the radix bits per counting pass (fewer passes against more compares each)
SWEEP = (
    TopkConfig(),
    TopkConfig(num_warps=4),
    TopkConfig(num_warps=16),
    TopkConfig(num_warps=32),
    TopkConfig(radix=1),
    TopkConfig(radix=4),
    TopkConfig(chunk=1024),
    TopkConfig(chunk=8192),
    TopkConfig(num_warps=16, chunk=8192),
    TopkConfig(num_warps=16, radix=4),
)


def budget(n: int) -> int:
    return max(1, round(KEEP * -(-n // PAGE)))


def select_pages(scores: torch.Tensor, config: TopkConfig | None = None) -> torch.Tensor:
    """DELTA's page selection by `page_topk` (two launches)."""
    return page_topk(scores, budget(scores.shape[-1]), page_size=PAGE, recent=RECENT, config=config)


def torch_select_pages(scores: torch.Tensor) -> torch.Tensor:
    """The same selection through the PyTorch path (several launches)."""
    return select_topk(page_scores(scores, PAGE), budget(scores.shape[-1]), recent=RECENT)


def check(device, config: TopkConfig) -> str:
    """Max relative error against the fp32 reference, and agreement of the chosen pages."""
    gen = torch.Generator(device=device).manual_seed(0)
    b, n = CHECK["b"], CHECK["n"]
    q = torch.randn(b, HQ, D, device=device, generator=gen, dtype=torch.bfloat16) * 2
    k = torch.randn(b, HKV, n, D, device=device, generator=gen, dtype=torch.bfloat16)
    ref = naive.selection_scores(q.float(), k.float())
    out = selection_scores(q, k)
    torch_bf16 = naive.selection_scores(q, k)
    picks_ref, picks_out = torch_select_pages(ref), select_pages(out, config)
    same = sum(len(set(a.tolist()) & set(c.tolist())) for a, c in zip(picks_ref, picks_out)) / picks_ref.numel()
    exact = [torch.equal(select_pages(s, config), torch_select_pages(s)) for s in (ref, out)]
    rows = [["naive in bf16 (PyTorch)", max_rel_err(torch_bf16, ref), "", ""],
            ["kernel", max_rel_err(out, ref), f"{same:.4f}", str(exact[1])],
            ["naive in fp32", 0.0, "1.0000", str(exact[0])],
            ["kernel, per KV head", max_rel_err(selection_scores(q, k, per_kv_head=True),
                                                naive.selection_scores(q.float(), k.float(), per_kv_head=True)), "", ""]]
    return section(f"selection_scores correctness (B={b}, N={n}, bf16; page_topk {config})",
                   table(["what", "max rel err vs fp32", "pages (page_topk) chosen as by the fp32 reference",
                          "page_topk = PyTorch path, same scores"], rows))


def inputs(b: int, n: int, device):
    q = torch.randn(b, HQ, D, device=device, dtype=torch.bfloat16)
    k = torch.randn(b, HKV, n, D, device=device, dtype=torch.bfloat16)
    return q, k, torch.randn_like(k)


def dense_times(q, k, v, rep: int, notes: set) -> tuple[float | None, float | None]:
    """(eager ms, graph ms) of one dense SDPA decode step, the faster backend of each."""
    dense, dense_graph = [], []
    for name, backend in SDPA_BACKENDS.items():
        fn, note = dense_decode(backend, q, k, v)
        if note:
            notes.add(f"{name}: {note}")
        if fn is not None:
            with sdpa_kernel(backend):
                dense.append(time_ms(fn, rep))
                dense_graph.append(graph_time_ms(fn, rep, notes, f"dense {name}"))
    return min(dense, default=None), min((t for t in dense_graph if t is not None), default=None)


def sweep(bandwidth: float, device: str = "cuda", rep: int = 100) -> tuple[list[str], TopkConfig]:
    """Time every config of SWEEP at the target size; return the table and the fastest config that
    chooses exactly the PyTorch path's pages."""
    device = torch.device(device)
    b, n = TARGET["b"], TARGET["n"]
    q, k, v = inputs(b, n, device)
    notes = set()
    best_dense, best_graph = dense_times(q, k, v, rep, notes)
    scores = selection_scores(q, k)
    ms_scores = time_ms(lambda: selection_scores(q, k), rep)
    expected = torch_select_pages(scores)
    rows, timed = [], []
    for config in SWEEP:
        head = [config.warps(next_pow2(-(-n // PAGE), 16)), config.chunk, config.radix]
        try:
            same = torch.equal(select_pages(scores, config), expected)
            ms = time_ms(lambda config=config: select_pages(scores, config), rep)
        except Exception as exc:  # noqa: BLE001 - a config the GPU cannot run costs one row
            rows.append([*head, None, None, None, None, f"failed: {type(exc).__name__}"])
            continue
        ms_graph = graph_time_ms(lambda config=config: select_pages(selection_scores(q, k), config), rep, notes,
                                 f"scores + page_topk {config}")
        if same:
            timed.append((ms, config))
        rows.append([*head, ms, (ms_scores + ms) / best_dense if best_dense else None, ms_graph,
                     ms_graph / best_graph if best_graph and ms_graph else None,
                     "" if same else "pages differ from the PyTorch path"])
    best = min(timed, key=lambda t: t[0])[1] if timed else TopkConfig()
    body = table(["warps", "chunk", "radix", "page_topk ms", "(scores + top-k) / dense", "scores + top-k graph ms",
                  "ratio, graphs", "note"], rows)
    notes_list = [*sorted(notes), f"dense decode {best_dense} ms ({best_graph} ms in a graph); scores {ms_scores} ms",
                  f"fastest: {best} (the tables below use it)"]
    return [section(f"page_topk sweep (B={b}, N={n}, {budget(n)} of {-(-n // PAGE)} pages)", body, notes_list)], best


def measure_cache(b: int, n: int, rep: int, bandwidth: float, device, notes: set, config: TopkConfig) -> list:
    """One table row: dense decode, scores, per-KV-head scores, page top-k (fused, and the PyTorch path
    it replaces), all of it in a CUDA graph."""
    q, k, v = inputs(b, n, device)
    best, best_graph = dense_times(q, k, v, rep, notes)
    scores = selection_scores(q, k)
    ms_scores = time_ms(lambda: selection_scores(q, k), rep)
    ms_group = time_ms(lambda: selection_scores(q, k, per_kv_head=True), rep)
    ms_torch = time_ms(lambda: torch_select_pages(scores), rep)
    ms_select = time_ms(lambda: select_pages(scores, config), rep)
    total = ms_scores + ms_select
    ms_graph = graph_time_ms(lambda: select_pages(selection_scores(q, k), config), rep, notes, "scores + top-k")
    nbytes = 2 * b * HKV * n * D * 2
    return [b, n, best, ms_scores, ms_group, ms_torch, ms_select, total, total / best if best else None,
            best_graph, ms_graph, ms_graph / best_graph if best_graph and ms_graph else None,
            nbytes / (ms_scores * 1e-3) / bandwidth]


def run(quick: bool, bandwidth: float, device: str = "cuda", config: TopkConfig | None = None) -> list[str]:
    """The correctness check and the table, page_topk launched with `config` (default TopkConfig())."""
    device = torch.device(device)
    config = config or TopkConfig()
    rep = 50 if quick else 100
    sizes = QUICK if quick else SIZES
    rows, notes = [], set()
    for b in sizes["batches"]:
        for n in sizes["lengths"]:
            rows.append(measure_cache(b, n, rep, bandwidth, device, notes, config))
            torch.cuda.empty_cache()
    body = table(["B", "N", "dense decode ms (faster backend)", "scores ms", "scores per KV head ms",
                  "PyTorch page top-k ms", "page_topk ms", "scores + page_topk ms", "(scores + top-k) / dense",
                  "dense graph ms", "scores + top-k graph ms", "ratio, graphs", "scores BW / copy BW"], rows)
    notes_list = [*sorted(notes),
                  ("target: (scores + top-k) / dense <= 1.3; DELTA decodes inside CUDA graphs, "
                   "so the graph columns are the deployed case; page_topk is two launches, the PyTorch path several"),
                  f"top-k: {PAGE}-token pages, last {RECENT} forced, budget {KEEP:.0%} of pages; page_topk {config}"]
    return [check(device, config), section("selection_scores + top-k vs one dense decode step (Hq=32, Hkv=8, D=128, bf16)",
                                   body, notes_list)]


if __name__ == "__main__":
    bench_main(run, __doc__, sweep)
