"""Every kernel benchmark in one GPU call: correctness at realistic sizes first, then the timings.

    python -m workbench_kernels.bench_all --out run.md --results run.jsonl [--quick] [--only sparse_decode,...]
    python -m workbench_kernels.bench_all --table docs/benchmarks/first.jsonl docs/benchmarks/second.jsonl

Measures the device-to-device copy bandwidth once, then runs each op's `bench.run` (which checks the
kernels against naive.py on the GPU and times them against baselines measured in the same process),
prints the markdown and writes it to --out (again after each op) with the date, the command, the GPU and
the versions; the headline results go to --results as JSON Lines, which `workbench benchmarks FILE --db DB`
stores for the app's Sparse page. An op that fails is reported with its error and the others still run.
`--table` needs no GPU: it prints the current-results table of docs/BENCHMARKS.md from one run's results,
or from two runs on fresh machine starts with whether the second agrees.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import platform
import time
import traceback

import torch
import triton

from workbench_kernels._bench import copy_bandwidth
from workbench_kernels.results import Report, current_table, read_results, rows, run_info, write_results

OPS = ("sparse_decode", "selection_scores", "delta_rule", "stripe_prefill", "token_summaries", "attention_tiles")


def header(bandwidth: float, run: dict) -> str:
    try:
        import fla

        fla_version = getattr(fla, "__version__", "installed")
    except ImportError:
        fla_version = "fla not installed"
    props = torch.cuda.get_device_properties(0)
    return "\n".join([
        f"## Kernel benchmarks, {datetime.date.today().isoformat()}",
        "",
        f"- command: `{run['command']}` at {run['commit']}",
        f"- GPU: {props.name}, {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB",
        (f"- python {platform.python_version()}, torch {torch.__version__}, triton {triton.__version__}, "
         f"CUDA {torch.version.cuda}, flash-linear-attention: {fla_version}"),
        f"- device-to-device copy bandwidth: {bandwidth / 1e9:.0f} GB/s (the 'BW / copy BW' columns divide by it)",
        "- times are medians of workbench_kernels._bench.time_ms (do_bench's method, the L2 flushed by a read, "
        "not by zeroing); every ratio compares times from this run",
        "",
    ])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="markdown file to write (every section)")
    parser.add_argument("--results", help="JSON Lines file to write (the headline results)")
    parser.add_argument("--quick", action="store_true", help="fewer sizes, shorter timing")
    parser.add_argument("--only", default=",".join(OPS), help=f"comma-separated subset of {','.join(OPS)}")
    parser.add_argument("--table", nargs="+", metavar="RESULTS", help="print the current-results table of one "
                        "run's results file, or of two (the second a run on a fresh machine start), and stop")
    args = parser.parse_args(argv)
    if args.table:
        if len(args.table) > 2:
            parser.error("--table takes one results file, or two to check that they agree")
        return args
    if not args.out or not args.results:
        parser.error("a run needs --out FILE.md and --results FILE.jsonl")
    args.ops = [op.strip() for op in args.only.split(",") if op.strip()]
    unknown = sorted(set(args.ops) - set(OPS))
    if unknown:
        parser.error(f"--only: unknown ops {unknown}; expected some of {list(OPS)}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.table:
        try:
            runs = [read_results(path) for path in args.table]
        except (OSError, ValueError) as e:
            raise SystemExit(f"bench_all --table: {e}") from None
        print(current_table(*runs))
        return
    if not torch.cuda.is_available():
        raise SystemExit("bench_all needs a CUDA GPU")
    run = run_info()
    bandwidth = copy_bandwidth()
    parts, results = [header(bandwidth, run)], []
    print(parts[0], flush=True)
    for op in args.ops:
        start = time.perf_counter()
        try:
            report = importlib.import_module(f"workbench_kernels.{op}.bench").run(quick=args.quick,
                                                                                 bandwidth=bandwidth)
        except Exception:  # noqa: BLE001 - one op's failure is reported and the others still run
            report = Report([f"### {op}: FAILED\n\n```\n{traceback.format_exc()[-3000:]}```\n"])
        sections = [*report.sections, f"_{op}: {time.perf_counter() - start:.0f} s_\n"]
        for section in sections:
            print(section, flush=True)
        parts += sections
        results += report.results
        torch.cuda.empty_cache()
        with open(args.out, "w") as f:  # after every op: a run cut short by a time limit keeps what finished
            f.write("\n".join(parts))
        write_results(args.results, results, run)
    print(current_table(rows(results, run)))
    print(f"written to {args.out} and {args.results}")


if __name__ == "__main__":
    main()
