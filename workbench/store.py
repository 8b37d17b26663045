"""The DuckDB store: schema, migrations, every read and write the workbench makes.

One database file holds the tables; dense tensors (residual vectors, full
attention maps) go to Parquet files in a folder beside it (`<db>.tensors/`),
registered in the `tensor_files` table, because DuckDB ingests Parquet about
five times faster than array columns; a large tensor table is written as
several files at once, since encoding one Parquet file uses one core. DuckDB
lets one process hold a file for writing and then locks out everyone else,
readers included, so writers open the file only for the length of one batch
and both sides retry briefly when the other holds it. A run's status is
committed last: a run killed midway stays `running` in the file and is
reported as `abandoned` once its process is gone.
"""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from workbench.errors import DatabaseLockedError, StoreError

SCHEMA_VERSION = 5
DEFAULT_DB = Path(__file__).resolve().parent.parent / "data" / "workbench.duckdb"
DB_ENV_VAR = "WORKBENCH_DB"

_SCHEMA_V1 = """
CREATE SEQUENCE run_ids START 1;
CREATE TABLE runs (
    run_id BIGINT PRIMARY KEY DEFAULT nextval('run_ids'),
    kind VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    revision VARCHAR,
    model_path VARCHAR,
    model_type VARCHAR,
    n_layers INTEGER,
    d_model INTEGER,
    dtype VARCHAR,
    device VARCHAR,
    config JSON,
    status VARCHAR NOT NULL,
    error VARCHAR,
    pid INTEGER,
    host VARCHAR,
    created_at TIMESTAMP DEFAULT current_timestamp,
    finished_at TIMESTAMP
);
CREATE TABLE prompts (run_id BIGINT, prompt_id INTEGER, text VARCHAR, n_tokens INTEGER);
CREATE TABLE tokens (run_id BIGINT, prompt_id INTEGER, position INTEGER, token_id INTEGER, token VARCHAR);
CREATE TABLE layer_stats (
    run_id BIGINT, prompt_id INTEGER, position INTEGER, layer SMALLINT, site VARCHAR,
    l2_norm FLOAT, max_abs FLOAT, max_dim INTEGER, median_abs FLOAT,
    topk_dims INTEGER[], topk_values FLOAT[]
);
CREATE TABLE tensor_files (run_id BIGINT, kind VARCHAR, path VARCHAR, n_rows BIGINT);
"""
# Version 2: per prompt and layer, the exact median |x| of the whole hidden state (the massive-activation
# criterion's denominator) and where non-finite values appear (fp16 overflow); plus the analyses tables.
_SCHEMA_V2 = """
CREATE TABLE prompt_layer_stats (
    run_id BIGINT, prompt_id INTEGER, layer SMALLINT, site VARCHAR,
    median_abs FLOAT, max_abs FLOAT, n_nonfinite BIGINT, first_nonfinite_position INTEGER
);
CREATE SEQUENCE analysis_ids START 1;
CREATE TABLE analyses (
    analysis_id BIGINT PRIMARY KEY DEFAULT nextval('analysis_ids'),
    kind VARCHAR NOT NULL, run_id BIGINT, model VARCHAR, config JSON, summary JSON,
    created_at TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE massive_findings (
    analysis_id BIGINT, prompt_id INTEGER, layer SMALLINT, rank SMALLINT, position INTEGER, token VARCHAR,
    token_kind VARCHAR, dim INTEGER, value FLOAT, median_abs FLOAT, ratio FLOAT, is_massive BOOLEAN
);
CREATE TABLE sink_attention (
    analysis_id BIGINT, layer SMALLINT, head SMALLINT, sink_share FLOAT, uniform_share FLOAT, top_abs FLOAT
);
CREATE TABLE massive_dynamics (
    analysis_id BIGINT, checkpoint VARCHAR, step BIGINT, layer SMALLINT, metric VARCHAR, value DOUBLE
);
CREATE TABLE dynamics_fits (
    analysis_id BIGINT, layer SMALLINT, metric VARCHAR, parameter VARCHAR, estimate DOUBLE, stderr DOUBLE,
    r2 DOUBLE, n_points INTEGER
);
CREATE TABLE massive_trials (
    analysis_id BIGINT, layer SMALLINT, mode VARCHAR, n_ablated BIGINT, n_tokens BIGINT,
    loss_base DOUBLE, loss_ablated DOUBLE, ppl_base DOUBLE, ppl_ablated DOUBLE
);
"""
# Version 3: concept directions (one row per layer, the vector inline: one d_model array per layer is small),
# the projections they give each example, and steering trials and sweeps.
_SCHEMA_V3 = """
CREATE TABLE directions (
    analysis_id BIGINT, layer SMALLINT, method VARCHAR, position VARCHAR, vector FLOAT[], norm FLOAT,
    relative_norm FLOAT, auroc FLOAT, accuracy FLOAT, threshold FLOAT, n_train INTEGER, n_heldout INTEGER
);
CREATE TABLE direction_projections (
    analysis_id BIGINT, layer SMALLINT, split VARCHAR, example_id INTEGER, label VARCHAR, projection FLOAT
);
CREATE TABLE steering_trials (
    analysis_id BIGINT, prompt_id INTEGER, prompt VARCHAR, layers VARCHAR, alpha FLOAT, positions VARCHAR,
    steered BOOLEAN, continuation VARCHAR, concept_score FLOAT, perplexity FLOAT
);
CREATE TABLE steering_sweep (
    analysis_id BIGINT, layer SMALLINT, alpha FLOAT, concept_shift FLOAT, success_rate FLOAT,
    perplexity_ratio FLOAT, kl FLOAT, n_prompts INTEGER
);
"""
# Version 4: sparse attention under inspection: each selection (per step, layer, sequence, head and query
# block), per-step agreement with dense attention, the accuracy-sparsity sweep, and kernel timings.
_SCHEMA_V4 = """
CREATE TABLE sparse_selections (
    analysis_id BIGINT, phase VARCHAR, step INTEGER, layer SMALLINT, sequence INTEGER, head SMALLINT,
    query_block INTEGER, indices INTEGER[], scores FLOAT[], attended_fraction FLOAT, recall FLOAT
);
CREATE TABLE sparse_accuracy (
    analysis_id BIGINT, method VARCHAR, budget FLOAT, length INTEGER, task VARCHAR, item INTEGER, step INTEGER,
    position INTEGER, kl FLOAT, top1_agree BOOLEAN, nll FLOAT, dense_nll FLOAT
);
CREATE TABLE sparse_sweep (
    analysis_id BIGINT, method VARCHAR, budget FLOAT, length INTEGER, task VARCHAR, n_items INTEGER,
    accuracy FLOAT, ppl FLOAT, kl FLOAT, top1_agreement FLOAT, attended_fraction FLOAT, recall FLOAT
);
CREATE TABLE kernel_benchmarks (
    analysis_id BIGINT, op VARCHAR, config JSON, device VARCHAR, ms DOUBLE, baseline_ms DOUBLE, ratio DOUBLE,
    bandwidth_fraction DOUBLE
);
"""
# Version 5: the memory of delta-rule layers: per token and head what each write did (with the state's
# singular values after it), and whole states at chosen steps (NULL where too large to keep).
_SCHEMA_V5 = """
CREATE TABLE delta_memory (
    analysis_id BIGINT, prompt_id INTEGER, layer SMALLINT, head SMALLINT, position INTEGER, token VARCHAR,
    beta FLOAT, written FLOAT, erased FLOAT, delta FLOAT, overwrite FLOAT, state_norm FLOAT, state_rank SMALLINT,
    readout FLOAT[], singular_values FLOAT[]
);
CREATE TABLE delta_states (
    analysis_id BIGINT, prompt_id INTEGER, layer SMALLINT, head SMALLINT, step INTEGER, key_dim INTEGER,
    value_dim INTEGER, state FLOAT[]
);
"""
_MIGRATIONS = {1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: _SCHEMA_V3, 4: _SCHEMA_V4, 5: _SCHEMA_V5}  # version -> SQL that brings version-1 to version
APPENDABLE = ("prompts", "tokens", "layer_stats", "prompt_layer_stats", "massive_findings", "sink_attention",
              "massive_dynamics", "dynamics_fits", "massive_trials", "directions", "direction_projections",
              "steering_trials", "steering_sweep", "sparse_selections", "sparse_accuracy", "sparse_sweep",
              "kernel_benchmarks", "delta_memory", "delta_states")

PARQUET_PART_BYTES = 64 << 20  # tensor tables larger than this are split into files written in parallel
# A background writer gathers batches and commits whole row groups: DuckDB writes an insert of whole row
# groups straight to the file, but routes the rest through the WAL and encodes it again at the checkpoint that
# closing the file forces, so one 65k-row batch per transaction cost 2-3x what the same rows in whole row
# groups do. Rows past the last whole group wait for the next batch, at most FLUSH_SECONDS.
ROW_GROUP_ROWS = 122_880  # DuckDB's default row group size
FLUSH_ROWS = ROW_GROUP_ROWS
FLUSH_SECONDS = 2.0
RUN_STATUSES = ("running", "complete", "interrupted", "failed")
_LOCK_PID = re.compile(r"Conflicting lock is held in (.*?) \(PID (\d+)\)")


def default_db_path() -> Path:
    """The database used when none is given: $WORKBENCH_DB, else data/workbench.duckdb."""
    return Path(os.environ.get(DB_ENV_VAR) or DEFAULT_DB)


def _parts(table: pa.Table) -> list[pa.Table]:
    """`table` in row slices of about `PARQUET_PART_BYTES`, at most one per CPU core."""
    n = max(1, min(os.cpu_count() or 1, table.nbytes // PARQUET_PART_BYTES))
    step = max(1, -(-table.num_rows // n))
    return [table.slice(start, step) for start in range(0, table.num_rows, step)] or [table]


def _float_encoding(schema: pa.Schema) -> dict:
    """Parquet options for float columns, flat or lists (vectors): byte-stream-split encoding, which makes
    zstd about twice as fast and the file smaller (float32 copies of bf16 values end in two zero bytes),
    and no dictionary or statistics, which dense floats only pay for."""
    floats, others = [], []
    for field in schema:
        leaf = field.type.value_type if pa.types.is_list(field.type) or pa.types.is_fixed_size_list(field.type) \
            else field.type
        if pa.types.is_floating(leaf):
            floats.append(field.name if leaf is field.type else f"{field.name}.list.element")
        else:
            others.append(field.name)
    return {"use_dictionary": others, "write_statistics": others, "use_byte_stream_split": floats}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Store:
    """A workbench database file and its tensor folder.

    Use `with store.write() as con:` for one transaction (committed on exit,
    rolled back on error) and `with store.read() as con:` for a read-only look.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, lock_timeout: float = 10.0):
        self.path = Path(path) if path is not None else default_db_path()
        if self.path.is_dir():
            raise StoreError(f"database path {self.path} is a directory; give a file path such as runs.duckdb")
        self.tensor_dir = Path(str(self.path) + ".tensors")
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # -- connections ---------------------------------------------------------

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except (duckdb.IOException, duckdb.ConnectionException) as e:
                message = str(e)
                held = _LOCK_PID.search(message)
                if "different configuration" in message and time.monotonic() < deadline:
                    time.sleep(0.05)  # this process holds the file for writing in another thread (a background
                    continue  # writer) and DuckDB refuses a read-only connection beside it until it closes
                if held and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                if held:
                    raise DatabaseLockedError(
                        f"database {self.path} is locked by another process ({held.group(1)}, PID {held.group(2)}); "
                        "wait for it to finish or stop it, or use another --db"
                    ) from e
                if "not a valid DuckDB database" in message:
                    raise StoreError(
                        f"{self.path} is not a DuckDB database (or was written by an incompatible DuckDB); "
                        "it was left untouched: pass a new path with --db"
                    ) from e
                raise StoreError(f"cannot open database {self.path}: {message}") from e

    def _check_writable(self) -> None:
        target = self.path if self.path.exists() else self.path.parent
        if not target.exists():
            raise StoreError(f"cannot create database {self.path}: folder {target} does not exist")
        if not os.access(target, os.W_OK):
            raise StoreError(f"cannot write database {self.path}: {target} is read-only; pass a writable --db path")

    @contextmanager
    def write(self):
        """One read-write transaction; the file is held only while the block runs."""
        self._check_writable()
        con = self._connect(read_only=False)
        try:
            self._migrate(con)
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.close()

    @contextmanager
    def read(self):
        """A read-only connection; raises `StoreError` if there is no database yet."""
        if not self.path.exists():
            raise StoreError(f"no database at {self.path}: record a run first or pass the right --db")
        con = self._connect(read_only=True)
        try:
            version = self._version(con)
            if version is None:
                raise StoreError(f"{self.path} is a DuckDB file but not a workbench database (no schema)")
            if version > SCHEMA_VERSION:
                raise StoreError(self._too_new(version))
            yield con
        finally:
            con.close()

    def _too_new(self, version: int) -> str:
        return (
            f"{self.path} has schema version {version}, newer than this workbench knows ({SCHEMA_VERSION}); "
            "upgrade the workbench"
        )

    @staticmethod
    def _version(con) -> int | None:
        has_meta = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta'"
        ).fetchone()[0]
        if not has_meta:
            return None
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else None

    def _migrate(self, con) -> None:
        version = self._version(con)
        if version is None:
            tables = con.execute("SELECT count(*) FROM information_schema.tables").fetchone()[0]
            if tables:
                raise StoreError(
                    f"{self.path} is a DuckDB database of something else (it has tables but no workbench schema); "
                    "it was left untouched: pass a new path with --db"
                )
            version = 0
        if version > SCHEMA_VERSION:
            raise StoreError(self._too_new(version))
        if version == SCHEMA_VERSION:
            return
        con.execute("BEGIN TRANSACTION")
        if version == 0:
            con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            con.execute(_MIGRATIONS[target])
        con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
        con.execute("COMMIT")

    # -- runs ----------------------------------------------------------------

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

    def list_runs(self) -> pd.DataFrame:
        """Every run with its prompt and token counts; a dead writer's `running` run shows as `abandoned`."""
        if not self.path.exists():
            return pd.DataFrame(columns=["run_id", "kind", "model", "revision", "status", "prompts", "tokens",
                                         "created_at", "finished_at"])
        with self.read() as con:
            runs = con.execute(
                """SELECT r.run_id, r.kind, r.model, r.revision, r.status, r.pid, r.host,
                          coalesce(p.n, 0) AS prompts, coalesce(p.t, 0) AS tokens, r.created_at, r.finished_at
                   FROM runs r LEFT JOIN (SELECT run_id, count(*) AS n, sum(n_tokens) AS t FROM prompts
                                          GROUP BY run_id) p USING (run_id)
                   ORDER BY r.run_id"""
            ).df()
        here = socket.gethostname()
        running = (runs["status"] == "running") & (runs["host"] == here) & runs["pid"].notna()
        dead = running & ~runs["pid"].where(running, 0).astype(int).map(_pid_alive)
        runs.loc[dead, "status"] = "abandoned"
        return runs.drop(columns=["pid", "host"])

    def run(self, run_id: int) -> dict:
        """One run's row as a dict (config parsed); `StoreError` if there is no such run."""
        with self.read() as con:
            found = con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]).df()
        if found.empty:
            raise StoreError(f"no run {run_id} in {self.path}")
        row = found.iloc[0].to_dict()
        row["config"] = json.loads(row["config"]) if row["config"] else {}
        return row

    def completed_run(self, run_id: int) -> dict:
        """Like `run`, but refuses a run that did not finish, so it is never read as complete."""
        row = self.run(run_id)
        if row["status"] != "complete":
            raise StoreError(f"run {run_id} is {row['status']}, not complete; its data is partial")
        return row

    def save_analysis(self, kind: str, config: dict, tables: dict[str, pd.DataFrame], *, run_id: int | None = None,
                      model: str | None = None, summary: dict | None = None) -> int:
        """Store one analysis (its row and its result tables, tagged with its id) in one transaction."""
        with self.write() as con:
            analysis_id = con.execute(
                "INSERT INTO analyses (kind, run_id, model, config, summary) VALUES (?, ?, ?, ?, ?) RETURNING analysis_id",
                [kind, run_id, model, json.dumps(config), json.dumps(summary or {}, default=str)],
            ).fetchone()[0]
            for name, frame in tables.items():
                self._insert(con, name, frame.assign(analysis_id=analysis_id))
        return int(analysis_id)

    def analysis(self, analysis_id: int) -> dict:
        """One analysis row as a dict (config and summary parsed)."""
        found = self.query("SELECT * FROM analyses WHERE analysis_id = ?", [analysis_id])
        if found.empty:
            raise StoreError(f"no analysis {analysis_id} in {self.path}")
        row = found.iloc[0].to_dict()
        return {**row, "config": json.loads(row["config"]), "summary": json.loads(row["summary"])}

    @staticmethod
    def _insert(con, table: str, rows) -> None:
        if table not in APPENDABLE and table != "tensor_files":
            raise ValueError(f"cannot append to table {table!r}")
        con.register("incoming", rows)
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
        con.unregister("incoming")

    # -- bulk writes -----------------------------------------------------------

    def append_batch(
        self, run_id: int, tables: dict[str, pa.Table | pd.DataFrame], tensors: dict[str, pa.Table] | None = None
    ) -> None:
        """Append rows to tables and tensors to Parquet in one transaction; tensor files are written first.

        A crash between the two leaves an orphan Parquet file, never a table row pointing at a missing file.
        """
        self._append(run_id, tables, self._write_tensors(run_id, tensors or {}))

    def writer(self, run_id: int, *, flush_rows: int | None = None, flush_seconds: float | None = None,
               ) -> BatchWriter:
        """A background writer for one run's batches: `with store.writer(run_id) as w: w.submit(make)`.

        `flush_rows` and `flush_seconds` default to `FLUSH_ROWS` and `FLUSH_SECONDS`."""
        return BatchWriter(self, run_id, flush_rows=FLUSH_ROWS if flush_rows is None else flush_rows,
                           flush_seconds=FLUSH_SECONDS if flush_seconds is None else flush_seconds)

    def _write_tensors(self, run_id: int, tensors: dict[str, pa.Table]) -> list[tuple[str, str, int]]:
        """Write tensor tables to Parquet, large ones as parts in parallel; (kind, path, rows) of each file."""
        parts = [(kind, part) for kind, table in tensors.items() for part in _parts(table)]
        if not parts:
            return []
        with ThreadPoolExecutor(max(1, min(len(parts), os.cpu_count() or 1))) as pool:  # pyarrow releases the GIL
            return list(pool.map(lambda part: (part[0], *self._write_parquet(run_id, *part)), parts))

    def _append(self, run_id: int, tables: dict, files: list[tuple[str, str, int]]) -> None:
        """One transaction: rows into tables, and the tensor files (already written) into `tensor_files`."""
        with self.write() as con:
            for name, rows in tables.items():
                self._insert(con, name, rows)
            if files:
                self._insert(con, "tensor_files", pa.table({
                    "run_id": pa.array([run_id] * len(files), pa.int64()), "kind": [f[0] for f in files],
                    "path": [f[1] for f in files], "n_rows": pa.array([f[2] for f in files], pa.int64())}))

    def _write_parquet(self, run_id: int, kind: str, table: pa.Table) -> tuple[str, int]:
        folder = self.tensor_dir / f"run_{run_id}"
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{kind}-{uuid.uuid4().hex[:12]}.parquet"
        partial = final.with_suffix(".partial")
        pq.write_table(table, partial, compression="zstd", **_float_encoding(table.schema))
        partial.rename(final)  # atomic: a reader never sees half a file
        return str(final.relative_to(self.tensor_dir)), table.num_rows

    # -- reads -----------------------------------------------------------------

    def query(self, sql: str, params: list | dict | None = None) -> pd.DataFrame:
        """Run read-only SQL (SELECT, SHOW, DESCRIBE, EXPLAIN only) and return the result."""
        if not isinstance(sql, str) or not sql.strip():
            raise StoreError("the query is empty")
        with self.read() as con:
            try:
                statements = con.extract_statements(sql)
            except duckdb.Error as e:
                raise StoreError(f"SQL does not parse: {e}") from e
            allowed = (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN)
            refused = [s.type.name for s in statements if s.type not in allowed]
            if refused or len(statements) != 1:
                raise StoreError(f"only one read-only query (SELECT, SHOW, DESCRIBE, EXPLAIN) is allowed, got "
                                 f"{refused or f'{len(statements)} statements'}")
            try:
                return con.execute(sql, params or []).df()
            except duckdb.Error as e:
                raise StoreError(f"query failed: {e}") from e

    def tensor_paths(self, run_id: int, kind: str) -> list[str]:
        """Absolute Parquet paths holding `kind` tensors of a run."""
        with self.read() as con:
            rows = con.execute(
                "SELECT path FROM tensor_files WHERE run_id = ? AND kind = ? ORDER BY path", [run_id, kind]
            ).fetchall()
        return [str(self.tensor_dir / r[0]) for r in rows]

    def read_tensors(self, run_id: int, kind: str, where: str = "", params: list | None = None) -> pd.DataFrame:
        """Rows of a run's `kind` tensor files, optionally filtered by a SQL condition over their columns."""
        paths = self.tensor_paths(run_id, kind)
        if not paths:
            raise StoreError(f"run {run_id} stored no {kind!r} tensors (record with the option that keeps them)")
        with self.read() as con:
            condition = f"WHERE {where}" if where else ""
            return con.execute(f"SELECT * FROM read_parquet(?) {condition}", [paths, *(params or [])]).df()


_DONE = object()  # the queue's end marker


class BatchWriter:
    """Writes a run's batches in one background thread while the caller computes the next ones.

    `submit(make)` queues a callable returning `(tables, tensors)` as `Store.append_batch` takes them; the
    thread calls it (so building the tables overlaps the caller's work too), writes the tensors to Parquet at
    once and gathers table rows; once a table has `flush_rows` rows it commits them in one transaction (of a
    table past one DuckDB row group, its whole row groups only: see `ROW_GROUP_ROWS`), and no row waits more
    than about `flush_seconds`. The queue holds one batch, so at most three are in memory:
    one computed, one queued, one written. A failure in the thread is raised by the next `submit` or by
    `close`, and the thread takes no more work; the batches it had gathered before the failing one are still
    committed. Leaving the `with` block closes it on success and aborts it on an exception: queued batches are
    dropped, rows already gathered are still committed (their tensor files exist), and the exception goes on.
    """

    def __init__(self, store: Store, run_id: int, *, flush_rows: int, flush_seconds: float):
        self.store, self.run_id = store, run_id
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._pending: dict[str, list] = {}
        self._files: list[tuple[str, str, int]] = []
        self._thread = threading.Thread(target=self._loop, name=f"workbench-writer-run-{run_id}", daemon=True)
        self._thread.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def submit(self, make: Callable[[], tuple[dict, dict]]) -> None:
        """Queue one batch; waits while the queue is full, raises the writer's error if it failed."""
        while True:
            self._raise_error()
            if not self._thread.is_alive():
                raise StoreError("the background writer has stopped; no more batches can be written")
            try:
                self._queue.put(make, timeout=0.1)  # a timeout, so a failure or Ctrl-C is seen while waiting
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Write everything submitted, stop the thread, and raise its error if it had one.

        Interrupted while waiting (Ctrl-C), it aborts instead, so no thread outlives the call."""
        self._raise_error()
        try:
            while self._thread.is_alive():
                try:
                    self._queue.put(_DONE, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self._thread.join()
        except BaseException:
            self.abort()
            raise
        self._raise_error()

    def abort(self) -> None:
        """Drop what is queued, commit what is gathered, and stop the thread (errors are not raised)."""
        self._stop.set()
        self._thread.join()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _loop(self) -> None:
        try:
            started = None  # when the oldest gathered row arrived
            while not self._stop.is_set():
                wait = 0.1 if started is None else max(0.0, min(0.1, started + self.flush_seconds - time.monotonic()))
                try:
                    make = self._queue.get(timeout=wait)
                except queue.Empty:
                    if started is not None and time.monotonic() >= started + self.flush_seconds:
                        self._flush(whole_groups=False)
                        started = None
                    continue
                if make is _DONE:
                    break
                tables, tensors = make()
                self._files += self.store._write_tensors(self.run_id, tensors or {})
                for name, rows in tables.items():
                    self._pending.setdefault(name, []).append(rows)
                started = time.monotonic() if started is None else started
                gathered = max(sum(len(p) for p in parts) for parts in self._pending.values()) if self._pending else 0
                if time.monotonic() >= started + self.flush_seconds:  # batches keep coming: still no row waits long
                    self._flush(whole_groups=False)
                    started = None
                elif gathered >= self.flush_rows and not self._flush(whole_groups=True):
                    started = None  # else the rows left waiting keep their age
            self._flush(whole_groups=False)
        except BaseException as e:  # noqa: BLE001 -- handed to the caller's thread, which raises it
            self._error = e
            try:  # the batches gathered before the failure are whole: commit them, as `abort` does
                self._flush(whole_groups=False)
            except Exception:  # noqa: BLE001, S110 -- the store itself failed; the first error is the one raised
                pass

    def _flush(self, whole_groups: bool) -> bool:
        """Commit the gathered rows; with `whole_groups`, of a table past one row group only its whole groups.

        True when rows are left waiting.
        """
        if not self._pending and not self._files:
            return False
        tables, waiting = {}, {}
        for name, parts in self._pending.items():
            table = _concat(parts)
            keep = len(table) // ROW_GROUP_ROWS * ROW_GROUP_ROWS if whole_groups and len(table) >= ROW_GROUP_ROWS \
                else len(table)
            if keep < len(table):
                tables[name], waiting[name] = table[:keep], [table[keep:]]  # Arrow and pandas both slice so
            else:
                tables[name] = table
        self.store._append(self.run_id, tables, self._files)
        self._pending, self._files = waiting, []
        return bool(waiting)


def _concat(parts: list):
    """One table of several batches' rows (Arrow tables or DataFrames, as they came)."""
    if all(isinstance(p, pa.Table) for p in parts):  # contiguous: DuckDB ingests one chunk faster than many
        return parts[0].combine_chunks() if len(parts) == 1 else pa.concat_tables(parts).combine_chunks()
    frames = [p.to_pandas() if isinstance(p, pa.Table) else p for p in parts]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
