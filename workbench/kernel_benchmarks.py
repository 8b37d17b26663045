"""Kernel benchmark results (`python -m workbench_kernels.bench_all --results FILE`) into the store, so the
Sparse page and SQL see them beside everything else."""

from __future__ import annotations

from pathlib import Path

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
    return [store.save_kernel_benchmarks(rows, {"file": str(path), "command": rows[0].get("command")})
            for path, rows in runs]
