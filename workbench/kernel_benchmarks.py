"""Kernel benchmark results (`python -m workbench_kernels.bench_all --results FILE`) into the store, so the
Sparse page and SQL see them beside everything else."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from workbench.errors import WorkbenchError
from workbench_kernels.results import read_results


def _read(path: str | Path) -> list[dict]:
    try:
        rows = read_results(path)
    except OSError as e:
        raise WorkbenchError(f"cannot read benchmark results {path}: {e.strerror}") from None
    except ValueError as e:
        raise WorkbenchError(str(e)) from None
    if not rows:
        raise WorkbenchError(f"{path} holds no benchmark results")
    return rows


def store_kernel_results(store, paths: list[str | Path]) -> list[int]:
    """Store each results file as a `kernel-benchmarks` analysis; return their ids. Every file is read and
    checked first, so a missing or malformed one stores nothing."""
    runs = [(path, _read(path)) for path in paths]
    ids = []
    for path, rows in runs:
        table = pd.DataFrame({
            "op": [r["op"] for r in rows], "benchmark": [r["what"] for r in rows],
            "shape": [r["shape"] for r in rows], "config": [json.dumps(r.get("config") or {}) for r in rows],
            "device": [r["gpu"] for r in rows], "ms": [r["ms"] for r in rows], "baseline": [r["baseline"] for r in rows],
            "baseline_ms": [r["baseline_ms"] for r in rows], "ratio": [r["speedup"] for r in rows],
            "ceiling": [r["ceiling"] for r in rows], "ceiling_fraction": [r["ceiling_fraction"] for r in rows],
            "commit": [r["commit"] for r in rows]})
        first = rows[0]
        ids.append(store.save_analysis("kernel-benchmarks", {"file": str(path), "command": first.get("command")},
                                       {"rows": table}, summary={"gpu": first["gpu"], "commit": first["commit"],
                                                                 "results": len(rows)}))
    return ids
