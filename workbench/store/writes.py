"""Everything the workbench writes: runs and their status, a recording's batches, and stored analyses.

A run's status is committed last: a run killed midway stays `running` in the file and is reported as
`abandoned` once its process is gone. An analysis is one `analyses` row and its result tables, written in
one transaction; callers name their results (`findings`, `fits`, ...) and `ANALYSES` says which table
each goes to, so only this package knows the tables.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pandas as pd
import pyarrow as pa

from workbench.errors import WorkbenchError
from workbench.store.connection import Connections
from workbench.store.parquet import write_tensors
from workbench.store.schema import APPENDABLE
from workbench.store.writer import FLUSH_ROWS, FLUSH_SECONDS, BatchWriter

RUN_STATUSES = ("running", "complete", "interrupted", "failed")
# analysis kind -> {result name -> table}
ANALYSES = {
    "massive": {"findings": "massive_findings"},
    "massive-sinks": {"shares": "sink_attention"},
    "massive-ablation": {"trials": "massive_trials"},
    "massive-dynamics": {"metrics": "massive_dynamics", "fits": "dynamics_fits"},
    "direction": {"directions": "directions", "projections": "direction_projections"},
    "steering-sweep": {"sweep": "steering_sweep", "trials": "steering_trials"},
    "sparse": {"selections": "sparse_selections", "steps": "sparse_accuracy"},
    "sparse-sweep": {"sweep": "sparse_sweep", "steps": "sparse_accuracy"},
    "delta-memory": {"memory": "delta_memory", "states": "delta_states", "decay": "delta_decay"},
    "delta-memory-compare": {"heads": "delta_compare_heads", "tokens": "delta_compare_tokens"},
    "logit-lens": {"lens": "lens"},
    "tuned-lens": {"kl": "tuned_lens_kl"},
    "logit-attribution": {"attribution": "logit_attribution"},
    "activation-patching": {"patching": "patching"},
    "kernel-benchmarks": {"rows": "kernel_benchmarks"},
    "attention-summary": {"tiles": "attention_tiles", "queries": "attention_queries",
                          "top_keys": "attention_top_keys"},
}


# a kernel benchmark result's field -> its column in kernel_benchmarks
_KERNEL_RESULT_COLUMNS = {"op": "op", "what": "benchmark", "shape": "shape", "config": "config", "gpu": "device",
                          "ms": "ms", "baseline": "baseline", "baseline_ms": "baseline_ms", "speedup": "ratio",
                          "ceiling": "ceiling", "ceiling_fraction": "ceiling_fraction", "commit": "commit"}


class Writes(Connections):
    """The write side of a `Store`."""

    def create_run(self, kind: str, model: dict, config: dict) -> int:
        """Register a new run as `running` and return its id.

        `model` holds model, revision, model_path, model_type, n_layers, d_model, dtype, device.
        """
        with self.write() as con:
            row = con.execute(
                """INSERT INTO runs (kind, model, revision, model_path, model_type, n_layers, d_model, dtype,
                       device, config, status, pid, host)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?) RETURNING run_id""",
                [kind, model["model"], model.get("revision"), model.get("model_path"), model.get("model_type"),
                 model.get("n_layers"), model.get("d_model"), model.get("dtype"), model.get("device"),
                 json.dumps(config), os.getpid(), socket.gethostname()],
            ).fetchone()
        return int(row[0])

    def finish_run(self, run_id: int, status: str, error: str | None = None) -> None:
        """Mark a run complete, interrupted or failed (its last write)."""
        if status not in RUN_STATUSES[1:]:
            raise ValueError(f"run status must be one of {RUN_STATUSES[1:]}, got {status!r}")
        with self.write() as con:
            con.execute(
                "UPDATE runs SET status = ?, error = ?, finished_at = current_timestamp WHERE run_id = ?",
                [status, error, run_id],
            )

    def save_analysis(self, kind: str, config: dict, results: dict[str, pd.DataFrame], *, run_id: int | None = None,
                      model: str | None = None, summary: dict | None = None) -> int:
        """Store one analysis of `kind` (its row and its named results) in one transaction; return its id."""
        tables = ANALYSES.get(kind)
        if tables is None:
            raise WorkbenchError(f"unknown analysis kind {kind!r}; expected one of {sorted(ANALYSES)}")
        unknown = sorted(set(results) - set(tables))
        if unknown:
            raise WorkbenchError(f"a {kind!r} analysis has no results named {unknown}; expected {sorted(tables)}")
        with self.write() as con:
            analysis_id = con.execute(
                "INSERT INTO analyses (kind, run_id, model, config, summary) VALUES (?, ?, ?, ?, ?) "
                "RETURNING analysis_id",
                [kind, run_id, model, json.dumps(config), json.dumps(summary or {}, default=str)],
            ).fetchone()[0]
            for name, frame in results.items():
                _insert(con, tables[name], frame.assign(analysis_id=analysis_id))
        return int(analysis_id)

    def remove_orphan_files(self) -> list[Path]:
        """Delete `orphan_files()` (and run folders left empty); returns what was deleted."""
        removed = self.orphan_files()
        for file in removed:
            file.unlink(missing_ok=True)
        for folder in {file.parent for file in removed}:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        return removed

    def start_analysis(self, kind: str, config: dict, total: int, *, run_id: int | None = None,
                       model: str | None = None) -> int:
        """An analysis whose results arrive in parts (`append_analysis`), so that a job stopped midway keeps what
        it finished: until `finish_analysis` its summary reads {"status": "partial", "done": n, "total": total}."""
        return self.save_analysis(kind, config, {}, run_id=run_id, model=model,
                                  summary={"status": "partial", "done": 0, "total": total})

    def append_analysis(self, analysis_id: int, results: dict[str, pd.DataFrame], done: int) -> None:
        """Add a started analysis's next results and count `done` parts finished, in one transaction."""
        analysis_id = int(analysis_id)
        with self.write() as con:
            rows = con.execute("SELECT kind, summary FROM analyses WHERE analysis_id = ?", [analysis_id]).fetchall()
            found = rows[0] if rows else None
            if found is None or json.loads(found[1] or "{}").get("status") != "partial":
                raise WorkbenchError(f"analysis {analysis_id} is not a started analysis receiving parts")
            tables = ANALYSES[found[0]]
            for name, frame in results.items():
                _insert(con, tables[name], frame.assign(analysis_id=analysis_id))
            summary = {**json.loads(found[1]), "done": done}
            con.execute("UPDATE analyses SET summary = ? WHERE analysis_id = ?", [json.dumps(summary), analysis_id])

    def finish_analysis(self, analysis_id: int, summary: dict) -> None:
        """Replace a started analysis's partial summary by its final one."""
        with self.write() as con:
            con.execute("UPDATE analyses SET summary = ? WHERE analysis_id = ?",
                        [json.dumps(summary, default=str), int(analysis_id)])

    def save_kernel_benchmarks(self, results: list[dict], config: dict) -> int:
        """Store one benchmark run's results (rows as `workbench_kernels.results` writes them) as a
        `kernel-benchmarks` analysis; return its id."""
        table = pd.DataFrame(results).rename(columns=_KERNEL_RESULT_COLUMNS)[list(_KERNEL_RESULT_COLUMNS.values())]
        table["config"] = [json.dumps(c or {}) for c in table.config]
        first = results[0]
        return self.save_analysis("kernel-benchmarks", config, {"rows": table},
                                  summary={"gpu": first["gpu"], "commit": first["commit"], "results": len(results)})

    def append_batch(self, run_id: int, tables: dict[str, pa.Table | pd.DataFrame],
                     tensors: dict[str, pa.Table] | None = None) -> None:
        """Append rows to tables and tensors to Parquet in one transaction; tensor files are written first.

        A crash between the two leaves an orphan Parquet file, never a table row pointing at a missing file.
        """
        self._append(run_id, tables, write_tensors(self.tensor_dir, run_id, tensors or {}))

    def writer(self, run_id: int, *, flush_rows: int | None = None, flush_seconds: float | None = None,
               compression: str = "zstd") -> BatchWriter:
        """A background writer for one run's batches: `with store.writer(run_id) as w: w.submit(make)`.

        `flush_rows` and `flush_seconds` default to `FLUSH_ROWS` and `FLUSH_SECONDS`; `compression` is the
        tensor files' Parquet compression."""
        return BatchWriter(self, run_id, flush_rows=FLUSH_ROWS if flush_rows is None else flush_rows,
                           flush_seconds=FLUSH_SECONDS if flush_seconds is None else flush_seconds,
                           compression=compression)

    def _append(self, run_id: int, tables: dict, files: list[tuple[str, str, int]]) -> None:
        """One transaction: rows into tables, and the tensor files (already written) into `tensor_files`."""
        with self.write() as con:
            for name, rows in tables.items():
                _insert(con, name, rows)
            if files:
                _insert(con, "tensor_files", pa.table({
                    "run_id": pa.array([run_id] * len(files), pa.int64()), "kind": [f[0] for f in files],
                    "path": [f[1] for f in files], "n_rows": pa.array([f[2] for f in files], pa.int64())}))


def _insert(con, table: str, rows) -> None:
    if table not in APPENDABLE:
        raise ValueError(f"cannot append to table {table!r}")
    con.register("incoming", rows)
    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
    con.unregister("incoming")
