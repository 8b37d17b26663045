"""Opening the database file: short connections, retries while another holder finishes, one-line errors.

DuckDB lets one process hold a file for writing and then locks out everyone else, readers included, so
writers open the file only for the length of one batch and both sides retry briefly when the other holds
it. Every DuckDB error leaves here as a `StoreError` (or `DatabaseLockedError`) with a one-line message.
"""

from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb

from workbench.errors import DatabaseLockedError, StoreError
from workbench.paths import DATA_DIR
from workbench.store.schema import SCHEMA_VERSION, migrate, schema_version, too_new

DEFAULT_DB = DATA_DIR / "workbench.duckdb"
DB_ENV_VAR = "WORKBENCH_DB"
_LOCK_PID = re.compile(r"Conflicting lock is held in (.*?) \(PID (\d+)\)")


def default_db_path() -> Path:
    """The database used when none is given: $WORKBENCH_DB, else data/workbench.duckdb."""
    return Path(os.environ.get(DB_ENV_VAR) or DEFAULT_DB)


def one_line(error: BaseException) -> str:
    """DuckDB's message without the query excerpt and caret it adds on further lines."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


class Connections:
    """A database file (and its tensor folder `<db>.tensors/`), opened one short connection at a time.

    `with self.write() as con:` is one transaction (committed on exit, rolled back on error), `with
    self.read() as con:` a read-only look; a DuckDB error inside either becomes a `StoreError`.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, lock_timeout: float = 10.0):
        self.path = Path(path) if path is not None else default_db_path()
        if self.path.is_dir():
            raise StoreError(f"database path {self.path} is a directory; give a file path such as runs.duckdb")
        self.tensor_dir = Path(str(self.path) + ".tensors")
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.Error as e:
                message = str(e)
                held = _LOCK_PID.search(message)
                if ("different configuration" in message or held) and time.monotonic() < deadline:
                    # another process holds the file, or this one does in another thread (a background writer)
                    # and DuckDB refuses a connection of the other kind beside it until it closes
                    time.sleep(0.05)
                    continue
                if held:
                    raise DatabaseLockedError(
                        f"database {self.path} is locked by another process ({held.group(1)}, PID {held.group(2)}); "
                        "wait for it to finish or stop it, or use another database file") from None
                if "not a valid DuckDB database" in message:
                    raise StoreError(f"{self.path} is not a DuckDB database (or was written by an incompatible "
                                     "DuckDB); it was left untouched: use another database file") from None
                raise StoreError(f"cannot open database {self.path}: {one_line(e)}") from None

    def _check_writable(self) -> None:
        target = self.path if self.path.exists() else self.path.parent
        if not target.exists():
            raise StoreError(f"cannot create database {self.path}: folder {target} does not exist")
        if not os.access(target, os.W_OK):
            raise StoreError(f"cannot write database {self.path}: {target} is read-only; use a database file in a writable folder")

    def check(self) -> None:
        """Open the database for writing once (creating or migrating it) so that a corrupt, locked or read-only
        file is refused before slow work starts."""
        with self.write():
            pass

    @contextmanager
    def write(self):
        """One read-write transaction; the file is held only while the block runs."""
        self._check_writable()
        con = self._connect(read_only=False)
        try:
            with _as_store_errors(self.path):
                migrate(con, self.path)
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
            raise StoreError(f"no database at {self.path}: record a run first or choose the right database file")
        con = self._connect(read_only=True)
        try:
            with _as_store_errors(self.path):
                version = schema_version(con)
                if version is None:
                    raise StoreError(f"{self.path} is a DuckDB file but not a workbench database (no schema)")
                if version > SCHEMA_VERSION:
                    raise too_new(self.path, version)
                yield con
        finally:
            con.close()


@contextmanager
def _as_store_errors(path: Path):
    try:
        yield
    except duckdb.Error as e:
        raise StoreError(f"database {path}: {one_line(e)}") from e
