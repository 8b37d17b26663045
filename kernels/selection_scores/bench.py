"""Benchmark `selection_scores` + top-k against one dense decode step over the same cache.

    python -m workbench_kernels.selection_scores.bench [--quick] [--sweep]

Hq=32, Hkv=8, D=128, bf16, one query step; B in {1, 8}, N in {8k, 32k, 128k}. Selection as in
DELTA: page scores over 16-token pages (summed by the scores kernel's own pass), the last 8 pages
forced, a budget of 25% of the pages, by `topk.page_topk` on those page scores (one launch; the
PyTorch path on token scores is timed beside it). The scores kernel reads K once where its one-pass plan
fits (every size here), else twice (the two passes, timed beside it); bandwidth is reported on the bytes the
default plan reads. --sweep first times the launch tunables at B=1 (plan, keys a program, warps; the top-k's
warps and radix), each at every N, in CUDA graphs; the tables then use the top-k config whose worst ratio to
a dense step over N is the smallest.
"""

from __future__ import annotations

import torch
from torch.nn.attention import sdpa_kernel

from workbench_kernels._bench import (SDPA_BACKENDS, bench_main, dense_decode, graph_time_ms, graphed,
                                      max_rel_err, section, table, time_ms)
from workbench_kernels.results import Report, Result
from workbench_kernels.selection_scores import naive
from workbench_kernels.selection_scores.scores import selection_scores
from workbench_kernels.selection_scores.select import page_scores, select_topk
from workbench_kernels.selection_scores.topk import TopkConfig, page_topk

HQ, HKV, D, PAGE, RECENT, KEEP = 32, 8, 128, 16, 8, 0.25
SIZES = {"batches": (1, 8), "lengths": (8192, 32768, 131072)}
QUICK = {"batches": (1, 8), "lengths": (32768,)}
CHECK = {"b": 2, "n": 32768}
SWEEP_B = 1  # where the step is latency-bound and the target was missed
# page-score plans: two passes (pass-1 keys a program, pass-2 warps) and the one pass (keys a program, warps);
# None: the default
SCORE_SWEEP = ({"one_pass": False, "split_size": None, "warps": None},
               *({"one_pass": True, "split_size": s, "warps": w}
                 for s in (None, 256, 512, 1024, 2048) for w in (4, 8, 16)))
TOPK_SWEEP = (TopkConfig(), *(TopkConfig(num_warps=w, radix=8) for w in (None, 2, 4, 8, 16)),
              *(TopkConfig(num_warps=w, radix=2) for w in (None, 4, 8)), TopkConfig(radix=4))


def budget(n: int) -> int:
    return max(1, round(KEEP * -(-n // PAGE)))


def page_selection(q: torch.Tensor, k: torch.Tensor, config: TopkConfig | None = None, **launch) -> torch.Tensor:
    """DELTA's page selection on the GPU: page scores from the scores kernel, then `page_topk` (three launches)."""
    pages = selection_scores(q, k, page_size=PAGE, **launch)
    return page_topk(pages, budget(k.shape[2]), page_size=1, recent=RECENT, config=config)


def torch_select_pages(scores: torch.Tensor) -> torch.Tensor:
    """The same selection from token scores through the PyTorch path (several launches)."""
    return select_topk(page_scores(scores, PAGE), budget(scores.shape[-1]), recent=RECENT)


def check(device, config: TopkConfig | None = None) -> str:
    """Max relative error against the fp32 reference, and agreement of the chosen pages."""
    gen = torch.Generator(device=device).manual_seed(0)
    b, n = CHECK["b"], CHECK["n"]
    q = torch.randn(b, HQ, D, device=device, generator=gen, dtype=torch.bfloat16) * 2
    k = torch.randn(b, HKV, n, D, device=device, generator=gen, dtype=torch.bfloat16)
    ref = naive.selection_scores(q.float(), k.float())
    out = selection_scores(q, k)
    pages = selection_scores(q, k, page_size=PAGE)
    torch_bf16 = naive.selection_scores(q, k)
    picks_ref, picks_out = torch_select_pages(ref), page_selection(q, k, config)
    same = sum(len(set(a.tolist()) & set(c.tolist())) for a, c in zip(picks_ref, picks_out)) / picks_ref.numel()
    ranked = page_topk(page_scores(ref, PAGE), budget(n), page_size=1, recent=RECENT, config=config)
    rows = [["naive in bf16 (PyTorch)", max_rel_err(torch_bf16, ref), "", "", ""],
            ["kernel", max_rel_err(out, ref), f"{same:.4f}", str(torch.equal(pages, page_scores(out, PAGE))),
             str(torch.equal(picks_out, torch_select_pages(out)))],
            ["naive in fp32", 0.0, "1.0000", "", str(torch.equal(ranked, picks_ref))],
            ["kernel, per KV head", max_rel_err(selection_scores(q, k, per_kv_head=True),
                                                naive.selection_scores(q.float(), k.float(), per_kv_head=True)),
             "", "", ""],
            ["kernel, two passes", max_rel_err(two := selection_scores(q, k, one_pass=False), ref), "",
             str(torch.equal(selection_scores(q, k, page_size=PAGE, one_pass=False), page_scores(two, PAGE))), ""]]
    return section(f"selection_scores correctness (B={b}, N={n}, bf16; page_topk {config or TopkConfig()})",
                   table(["what", "max rel err vs fp32", "pages chosen as by the fp32 reference",
                          "kernel's page sums = page_scores of its token scores",
                          "page_topk = PyTorch path, same scores"], rows),
                   [f"page scores replayed from a CUDA graph, twice, q changed before each = eager: "
                    f"{graph_replays_match(q, k)}"])


def graph_replays_match(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether page scores replayed from one CUDA graph equal eager ones on new q each time: the workspace (the
    one pass's barrier counts) is zeroed again at every replay."""
    out = {}
    replay = graphed(lambda: out.__setitem__("pages", selection_scores(q, k, page_size=PAGE)))
    same = []
    for _ in range(2):
        q.copy_(torch.randn_like(q))
        replay()
        same.append(torch.equal(out["pages"], selection_scores(q, k, page_size=PAGE)))
    return all(same)


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
    """Time the launch tunables at B=SWEEP_B and every N, in CUDA graphs: the page scores over SCORE_SWEEP's
    plans, then page_topk over TOPK_SWEEP; each against one dense step. Returns the top-k config
    whose worst ratio over N is the smallest (of those choosing the PyTorch path's pages), for the tables."""
    device = torch.device(device)
    notes, score_rows, topk_rows = set(), [], []
    worst = dict.fromkeys(TOPK_SWEEP, 0.0)
    for n in SIZES["lengths"]:
        q, k, v = inputs(SWEEP_B, n, device)
        _, dense = dense_times(q, k, v, rep, notes)
        expected = torch_select_pages(selection_scores(q, k))
        for plan in SCORE_SWEEP:
            try:
                selection_scores(q, k, page_size=PAGE, **plan)
            except ValueError:  # the one pass does not fit this split
                score_rows.append([n, "one" if plan["one_pass"] else "two", plan["split_size"] or "default",
                                   plan["warps"] or "default", None, "does not fit"])
                continue
            ms = graph_time_ms(lambda plan=plan: selection_scores(q, k, page_size=PAGE, **plan), rep, notes,
                               f"scores {plan}")
            score_rows.append([n, "one" if plan["one_pass"] else "two", plan["split_size"] or "default",
                               plan["warps"] or "default", ms, ms / dense if ms and dense else None])
        pages = selection_scores(q, k, page_size=PAGE)
        for config in TOPK_SWEEP:
            same = torch.equal(page_topk(pages, budget(n), page_size=1, recent=RECENT, config=config), expected)
            ms = graph_time_ms(lambda config=config: page_topk(pages, budget(n), page_size=1, recent=RECENT,
                                                               config=config), rep, notes, f"page_topk {config}")
            ratio = ms / dense if ms and dense else None
            topk_rows.append([n, config.num_warps or "default", config.radix or "default", ms, ratio,
                              "" if same else "pages differ from the PyTorch path"])
            worst[config] = max(worst[config], ratio if same and ratio else float("inf"))
        torch.cuda.empty_cache()
    return [section(f"selection_scores launch sweep (B={SWEEP_B}, page scores, CUDA graphs)",
                    table(["N", "passes over K", "keys a program", "warps", "ms", "/ dense step"], score_rows),
                    sorted(notes)),
            section(f"page_topk sweep (B={SWEEP_B}, on page scores, {KEEP:.0%} of the pages, CUDA graphs)",
                    table(["N", "warps", "radix", "ms", "/ dense step", "note"], topk_rows))], min(worst, key=worst.get)


def passes(q: torch.Tensor, k: torch.Tensor) -> int:
    """Times the default plan reads K: once where the one pass fits, else twice."""
    try:
        selection_scores(q, k, page_size=PAGE, one_pass=True)
    except ValueError:
        return 2
    return 1


def measure_cache(b: int, n: int, rep: int, bandwidth: float, device, notes: set,
                  config: TopkConfig | None) -> tuple[list, Result | None]:
    """One table row: dense decode, token scores, per-KV-head scores, page scores (the default plan, and the two
    passes), page top-k (the kernel's, and the PyTorch path from token scores it replaces), and the whole
    selection in a CUDA graph; and that last as a result against one dense step in a graph."""
    q, k, v = inputs(b, n, device)
    best, best_graph = dense_times(q, k, v, rep, notes)
    scores = selection_scores(q, k)
    pages = selection_scores(q, k, page_size=PAGE)
    ms_scores = time_ms(lambda: selection_scores(q, k), rep)
    ms_group = time_ms(lambda: selection_scores(q, k, per_kv_head=True), rep)
    ms_pages = time_ms(lambda: selection_scores(q, k, page_size=PAGE), rep)
    ms_two = time_ms(lambda: selection_scores(q, k, page_size=PAGE, one_pass=False), rep)
    ms_torch = time_ms(lambda: torch_select_pages(scores), rep)
    ms_select = time_ms(lambda: page_topk(pages, budget(n), page_size=1, recent=RECENT, config=config), rep)
    total = ms_pages + ms_select
    ms_graph = graph_time_ms(lambda: page_selection(q, k, config), rep, notes, "page scores + top-k")
    nbytes = passes(q, k) * b * HKV * n * D * 2
    result = Result("selection_scores", "DELTA's selection (page scores + top-k of 25% of the pages), CUDA graphs",
                    f"B={b} N={n} Hq={HQ} Hkv={HKV} D={D} bf16", ms_graph,
                    "one dense SDPA decode step, faster of flash and cuDNN, CUDA graphs", best_graph,
                    "copy bandwidth (K read once)", nbytes / (ms_graph * 1e-3) / bandwidth) if ms_graph else None
    return [b, n, best, ms_scores, ms_group, ms_pages, ms_two, ms_torch, ms_select, total,
            total / best if best else None,
            best_graph, ms_graph, ms_graph / best_graph if best_graph and ms_graph else None,
            nbytes / (ms_pages * 1e-3) / bandwidth], result


def run(quick: bool, bandwidth: float, device: str = "cuda", config: TopkConfig | None = None) -> Report:
    """The correctness check and the table, page_topk launched with `config` (default: TopkConfig())."""
    device = torch.device(device)
    rep = 50 if quick else 100
    sizes = QUICK if quick else SIZES
    rows, results, notes = [], [], set()
    for b in sizes["batches"]:
        for n in sizes["lengths"]:
            row, result = measure_cache(b, n, rep, bandwidth, device, notes, config)
            rows.append(row)
            results += [result] if result else []
            torch.cuda.empty_cache()
    body = table(["B", "N", "dense decode ms (faster backend)", "token scores ms", "scores per KV head ms",
                  "page scores ms", "page scores, two passes ms", "PyTorch page top-k ms", "page_topk ms",
                  "page scores + page_topk ms",
                  "(scores + top-k) / dense", "dense graph ms", "scores + top-k graph ms", "ratio, graphs",
                  "page scores BW / copy BW"], rows)
    notes_list = [*sorted(notes),
                  ("target: (scores + top-k) / dense <= 1.3; DELTA decodes inside CUDA graphs, so the graph columns "
                   "are the deployed case; the selection is a zeroing memset and two launches (the one-pass "
                   "scores, the top-k), the PyTorch path several"),
                  f"top-k: {PAGE}-token pages, last {RECENT} forced, budget {KEEP:.0%} of pages; "
                  f"page_topk {config or TopkConfig()}"]
    return Report([check(device, config),
                   section("selection_scores + top-k vs one dense decode step (Hq=32, Hkv=8, D=128, bf16)", body,
                           notes_list)], results)


if __name__ == "__main__":
    bench_main(run, __doc__, sweep)
