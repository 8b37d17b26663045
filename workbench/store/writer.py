"""The background writer of a recording: builds and commits batches while the model computes the next ones.

A background writer gathers batches and commits whole row groups: DuckDB writes an insert of whole row
groups straight to the file, but routes the rest through the WAL and encodes it again at the checkpoint that
closing the file forces, so one 65k-row batch per transaction cost 2-3x what the same rows in whole row
groups do. Rows past the last whole group wait for the next batch, at most `flush_seconds`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import pandas as pd
import pyarrow as pa

from workbench.errors import StoreError
from workbench.store.parquet import write_tensors

ROW_GROUP_ROWS = 122_880  # DuckDB's default row group size
FLUSH_ROWS = ROW_GROUP_ROWS
FLUSH_SECONDS = 2.0

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
    `bytes_written` counts the Parquet files written and the Arrow size of the rows handed to DuckDB so far.
    """

    def __init__(self, store, run_id: int, *, flush_rows: int, flush_seconds: float, compression: str = "zstd"):
        self.store, self.run_id = store, run_id
        self.flush_rows, self.flush_seconds, self.compression = flush_rows, flush_seconds, compression
        self.bytes_written = 0
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._pending: dict[str, list] = {}
        self._files: list[tuple[str, str, int]] = []
        self._thread = threading.Thread(target=self._loop, name=f"workbench-writer-run-{run_id}", daemon=True)
        self._thread.start()

    def __enter__(self) -> BatchWriter:
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
                files = write_tensors(self.store.tensor_dir, self.run_id, tensors or {}, self.compression)
                self._files += files
                self.bytes_written += sum((self.store.tensor_dir / path).stat().st_size for _, path, _ in files)
                for name, rows in tables.items():
                    self._pending.setdefault(name, []).append(rows)
                    self.bytes_written += rows.nbytes if isinstance(rows, pa.Table) else int(
                        rows.memory_usage(deep=False).sum())
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
