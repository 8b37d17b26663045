"""Every kernel benchmark in one GPU call: correctness at realistic sizes first, then the timings.

    python -m workbench_kernels.bench_all --out docs/BENCHMARKS-run.md [--quick] [--only sparse_decode,delta_rule]

Measures the device-to-device copy bandwidth once, then runs each op's `bench.run` (which checks the
kernels against naive.py on the GPU and times them against baselines measured in the same process),
prints the markdown and writes it to --out (again after each op) with the date, the command, the GPU and
the versions.
An op that fails is reported with its error and the others still run.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import platform
import sys
import time
import traceback

import torch
import triton

from workbench_kernels._bench import copy_bandwidth

OPS = ("sparse_decode", "selection_scores", "delta_rule", "stripe_prefill", "token_summaries")


def header(bandwidth: float) -> str:
    try:
        import fla

        fla_version = getattr(fla, "__version__", "installed")
    except ImportError:
        fla_version = "fla not installed"
    props = torch.cuda.get_device_properties(0)
    return "\n".join([
        f"## Kernel benchmarks, {datetime.date.today().isoformat()}",
        "",
        f"- command: `python -m workbench_kernels.bench_all {' '.join(sys.argv[1:])}`",
        f"- GPU: {props.name}, {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB",
        (f"- python {platform.python_version()}, torch {torch.__version__}, triton {triton.__version__}, "
         f"CUDA {torch.version.cuda}, flash-linear-attention: {fla_version}"),
        f"- device-to-device copy bandwidth: {bandwidth / 1e9:.0f} GB/s (the 'BW / copy BW' columns divide by it)",
        "- times are medians of workbench_kernels._bench.time_ms (do_bench's method, the L2 flushed by a read, not by zeroing); "
        "every ratio compares times from this run",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="markdown file to write")
    parser.add_argument("--quick", action="store_true", help="fewer sizes, shorter timing")
    parser.add_argument("--only", default=",".join(OPS), help=f"comma-separated subset of {','.join(OPS)}")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_all needs a CUDA GPU")
    ops = [op.strip() for op in args.only.split(",") if op.strip()]
    unknown = sorted(set(ops) - set(OPS))
    if unknown:
        raise SystemExit(f"--only: unknown ops {unknown}; expected some of {list(OPS)}")

    bandwidth = copy_bandwidth()
    parts = [header(bandwidth)]
    print(parts[0], flush=True)
    for op in ops:
        start = time.perf_counter()
        try:
            sections = importlib.import_module(f"workbench_kernels.{op}.bench").run(quick=args.quick, bandwidth=bandwidth)
        except Exception:  # noqa: BLE001 - one op's failure is reported and the others still run
            sections = [f"### {op}: FAILED\n\n```\n{traceback.format_exc()[-3000:]}```\n"]
        sections.append(f"_{op}: {time.perf_counter() - start:.0f} s_\n")
        for section in sections:
            print(section, flush=True)
        parts += sections
        torch.cuda.empty_cache()
        with open(args.out, "w") as f:  # after every op: a run cut short by a time limit keeps what finished
            f.write("\n".join(parts))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
