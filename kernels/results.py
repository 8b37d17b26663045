"""A benchmark's headline results: our time, the fastest baseline a user could pick timed in the same run, and
the physical ceiling; as JSON Lines (one file a run) and as the current-results table of docs/BENCHMARKS.md.

Each op's `bench.run` returns a `Report`: its markdown sections (every measurement, for the record) and its
`Result`s (the rows a reader compares). `python -m workbench_kernels.bench_all --results FILE` writes the
results of a run; `--table RUN1 RUN2` prints the table from two runs on fresh machine starts, with the ratio
of the first and whether the second agrees with it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

AGREE = 0.10  # two runs agree when their speedups differ by at most this fraction


@dataclass(frozen=True)
class Result:
    """One measurement: `ms` of ours against `baseline_ms` of `baseline`, and the share of `ceiling` reached.

    `speedup` is baseline_ms / ms (above 1: ours is faster). `ceiling_fraction` above 1 is a bug in the bench.
    """

    op: str
    what: str
    shape: str
    ms: float
    baseline: str
    baseline_ms: float | None
    ceiling: str
    ceiling_fraction: float | None
    config: dict = field(default_factory=dict)

    @property
    def speedup(self) -> float | None:
        return self.baseline_ms / self.ms if self.baseline_ms and self.ms else None


@dataclass
class Report:
    """What one op's benchmark produced: markdown sections and headline results."""

    sections: list[str]
    results: list[Result] = field(default_factory=list)


def run_info() -> dict:
    """Where and at what the results were measured: GPU, commit of the kernels' checkout ($WORKBENCH_COMMIT where
    the tree is a copy without git), command, versions."""
    import torch
    import triton

    commit = os.environ.get("WORKBENCH_COMMIT") or git_commit()  # a copied tree without .git names it so
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    return {"gpu": gpu, "commit": commit, "command": command(),
            "date": datetime.date.today().isoformat(), "torch": torch.__version__, "triton": triton.__version__}


def git_commit() -> str:
    """The commit of the kernels' checkout, marked `+changes` when the kernels differ from it."""
    here = Path(__file__).parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=here, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + ("+changes" if dirty else "")


def command() -> str:
    """The command line that is running, as `python -m workbench_kernels.<module> ARGS`."""
    script = Path(sys.argv[0]).resolve()
    here = Path(__file__).resolve().parent
    if script.is_relative_to(here):
        module = ".".join(("workbench_kernels", *script.relative_to(here).with_suffix("").parts))
        return " ".join(["python -m", module, *sys.argv[1:]])
    return " ".join(["python", *sys.argv])


def rows(results: list[Result], run: dict) -> list[dict]:
    """Each result as a flat dict with its speedup and the run's details (`run_info`)."""
    return [{**dataclasses.asdict(r), "speedup": r.speedup, **run} for r in results]


def write_results(path: str | Path, results: list[Result], run: dict) -> None:
    """One JSON object a line: `rows(results, run)`."""
    with open(path, "w") as f:
        for row in rows(results, run):
            f.write(json.dumps(row) + "\n")


def read_results(path: str | Path) -> list[dict]:
    """The rows `write_results` wrote; a clear error for a file that is not such a file."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{number}: not a JSON line ({e.msg})") from None
        missing = {"op", "what", "shape", "ms", "speedup", "gpu", "commit"} - set(row)
        if missing:
            raise ValueError(f"{path}:{number}: not a benchmark result (no {sorted(missing)})")
        rows.append(row)
    return rows


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def current_table(first: list[dict], second: list[dict] | None = None) -> str:
    """The markdown table of results: each row's speedup over its baseline and the share of its ceiling from
    `first`, and, given `second` (a run on a fresh machine start), its speedup there and whether the two agree;
    then, per op, what the baseline and the ceiling are, the GPU, the commit and the command."""
    again = {(r["op"], r["what"], r["shape"]): r for r in second or []}
    header = ["op", "what", "shape", "ours ms", "baseline ms", "speedup", "ceiling reached"]
    if second is not None:
        header[6:6] = ["second run", "agree"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    legend = {}
    for r in first:
        cells = [r["op"], r["what"], r["shape"], _fmt(r["ms"]), _fmt(r["baseline_ms"]), _fmt(r["speedup"]),
                 _fmt(r["ceiling_fraction"], 2)]
        if second is not None:
            other = again.get((r["op"], r["what"], r["shape"]))
            speedups = (r["speedup"], other and other["speedup"])
            agree = all(speedups) and abs(speedups[1] / speedups[0] - 1) <= AGREE
            cells[6:6] = [_fmt(speedups[1]), "yes" if agree else "NO"]
        lines.append("| " + " | ".join(cells) + " |")
        legend.setdefault(r["op"], f"- {r['op']}: baseline {r['baseline']}; ceiling: {r['ceiling']}; {r['gpu']}, "
                                   f"{r['commit'][:7]}, `{r.get('command', '?')}`")
    return "\n".join([*lines, "", *legend.values()])
