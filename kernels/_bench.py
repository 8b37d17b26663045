"""Timing and reporting helpers shared by the per-op benchmarks (GPU only).

Every time is a median of `time_ms` (do_bench's method, the L2 flushed by a read); ratios are only
ever taken between times measured in the same process, and bandwidth is reported as a fraction of
the device-to-device copy bandwidth measured once at the start of the run (FLOPs as a fraction of a
large bf16 matmul's rate, measured once too).
"""

from __future__ import annotations

import functools
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from workbench_kernels.results import Report, current_table, rows, run_info

SDPA_BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}


FLUSH_BYTES = 256 * 2**20  # well over any current GPU's L2 (H100/H200: 50 MB), as in do_bench


@functools.cache
def _flush_buffer(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The buffer `time_ms` reads to flush the L2, and the scalar its sum goes to (kept for the process)."""
    flush = torch.empty(FLUSH_BYTES // 4, dtype=torch.int32, device=device)
    return flush, torch.empty((), dtype=torch.int64, device=device)


def time_ms(fn, rep_ms: int = 100) -> float:
    """Median milliseconds per call of fn(), with the L2 cache flushed by a read before each call.

    triton.testing.do_bench's method (25 ms of warm-up, then about rep_ms of calls, each between two
    events, the median) but for the flush: do_bench zeroes its buffer, which leaves the L2 full of
    dirty lines whose write-back then lands in the timed call (on the H200 about 10 us, a large share of
    a sparse decode step). What precedes attention in a decode
    step mostly reads (weights), so the flush here reads a buffer and leaves the L2 clean.
    """
    flush_buf, sink = _flush_buffer(torch.device("cuda", torch.cuda.current_device()))
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        torch.sum(flush_buf, dim=0, out=sink)
        fn()
    end.record()
    torch.cuda.synchronize()
    estimate = max(start.elapsed_time(end) / 5, 1e-3)  # ms a call, flush included
    for _ in range(max(1, int(25 / estimate))):
        fn()
    calls = max(1, int(rep_ms / estimate))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(calls)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(calls)]
    for begin, finish in zip(starts, ends):
        torch.sum(flush_buf, dim=0, out=sink)
        begin.record()
        fn()
        finish.record()
    torch.cuda.synchronize()
    return statistics.median(begin.elapsed_time(finish) for begin, finish in zip(starts, ends))


def copy_bandwidth(device: torch.device | str = "cuda", gib: float = 1.0) -> float:
    """Device-to-device copy bandwidth in bytes/s (a copy reads and writes each byte once)."""
    n = int(gib * 2**30) // 4
    src = torch.empty(n, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), rep_ms=200)
    return 2 * src.numel() * 4 / (ms * 1e-3)


def dense_ms(q, k, v, rep: int, notes: set) -> dict:
    """Median ms of dense causal SDPA per available backend (flash, cuDNN): the prefill baselines; a backend
    that cannot run is named in `notes`."""
    dense = {}
    fn = functools.partial(F.scaled_dot_product_attention, q, k, v, is_causal=True, enable_gqa=True)
    for name, backend in SDPA_BACKENDS.items():
        try:
            with sdpa_kernel(backend):
                dense[name] = time_ms(fn, rep)
        except RuntimeError as err:
            notes.add(f"{name}: unavailable: {str(err).splitlines()[0][:80]}")
    return dense


MATMUL_N = 8192  # the square bf16 matmul whose rate stands for the GPU's peak tensor-core FLOPs


@functools.cache
def matmul_flops(device: str = "cuda") -> float:
    """The bf16 FLOP/s of a large square matmul on `device`, measured once a process: the compute ceiling the
    benchmarks report against (a measured rate, so a little under the datasheet's peak)."""
    a = torch.randn(MATMUL_N, MATMUL_N, device=device, dtype=torch.bfloat16)
    b = torch.randn_like(a)
    return 2 * MATMUL_N**3 / (time_ms(lambda: a @ b, rep_ms=200) * 1e-3)


def graphed(fn):
    """Capture fn() in a CUDA graph and return a callable replaying it (launch overhead removed)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def graph_time_ms(fn, rep_ms: int, notes: set, label: str) -> float | None:
    """Median ms of fn replayed from a CUDA graph; None (and a note) if capture fails, so the run goes on."""
    try:
        return time_ms(graphed(fn), rep_ms)
    except Exception as err:  # noqa: BLE001 - a capture failure costs one column, not the whole table
        notes.add(f"{label}: CUDA graph failed: {type(err).__name__}: {str(err).splitlines()[0][:80]}")
        return None


def dense_decode(backend, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """(fn, note): fn() runs one dense SDPA decode step, q [B, Hq, D], k/v [B, Hkv, N, D], on `backend`.

    If the backend rejects grouped-query attention, KV is expanded to Hq heads once, outside the
    timed call (the baseline then reads Hq/Hkv times the bytes; the note says so). fn is None when
    the backend cannot run at all. Time fn inside `sdpa_kernel(backend)`.
    """
    q4 = q[:, :, None]  # [B, Hq, 1, D]
    groups = q.shape[1] // k.shape[1]
    error = "no attempt"
    with sdpa_kernel(backend):
        for expand in (False, True):
            kk, vv = (t.repeat_interleave(groups, dim=1) for t in (k, v)) if expand else (k, v)
            fn = functools.partial(F.scaled_dot_product_attention, q4, kk, vv, enable_gqa=not expand)
            try:
                fn()
            except RuntimeError as err:
                error = str(err).splitlines()[0][:80]
                continue
            return fn, ("expanded KV (no GQA support)" if expand else "")
    return None, f"unavailable: {error}"


def max_rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max |ref|, computed in fp32."""
    ref = ref.float()
    return ((out.float() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:.0f}"


def table(headers: list[str], rows: list[list]) -> str:
    """A markdown table; floats get 3 significant digits, None prints as n/a."""
    cells = [[fmt(c) if isinstance(c, float) or c is None else str(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def section(title: str, body: str, notes: list[str] | None = None) -> str:
    parts = [f"### {title}", "", body]
    if notes:
        parts += ["", *[f"- {n}" for n in notes]]
    return "\n".join(parts) + "\n"


def bench_main(run, description: str, sweep=None) -> None:
    """Entry point of `python -m workbench_kernels.<op>.bench`: measure copy bandwidth, run, print markdown.

    With a `sweep(bandwidth) -> (sections, config)` the command takes --sweep: time the op's tunables
    at its target size first, then run the table with the fastest (`run(..., config=config)`).
    """
    import argparse

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer sizes, shorter timing")
    if sweep is not None:
        parser.add_argument("--sweep", action="store_true", help="time the tunables first; the table uses the fastest")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")
    bandwidth = copy_bandwidth()
    print(f"copy bandwidth: {bandwidth / 1e9:.0f} GB/s\n")
    chosen = {}
    if getattr(args, "sweep", False):
        parts, chosen["config"] = sweep(bandwidth=bandwidth)
        for part in parts:
            print(part, flush=True)
    report = run(quick=args.quick, bandwidth=bandwidth, **chosen)
    for part in report.sections if isinstance(report, Report) else report:
        print(part)
    if isinstance(report, Report) and report.results:
        print(current_table(rows(report.results, run_info())))
