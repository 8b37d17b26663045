"""The DuckDB store: the only code that knows the database's tables and columns.

One database file holds the tables; dense tensors go to Parquet files in a folder beside it
(`<db>.tensors/`). A newcomer finds each job in one file:

- `schema.py`: the tables, by schema version, and the migration of older files;
- `connection.py`: opening the file (short connections, retries while another process holds it, locks
  named, DuckDB's errors turned into one-line `StoreError`s);
- `writes.py`: runs and their status, a recording's batches, stored analyses;
- `writer.py`: the background writer that commits a recording's batches while the model runs;
- `parquet.py`: the tensor files;
- `recording_rows.py`: the rows a recording writes, built from the capture's arrays;
- `reads.py`: every read by name, and the user's own read-only SQL.
"""

from workbench.store.connection import DB_ENV_VAR, DEFAULT_DB, default_db_path
from workbench.store.reads import EXAMPLE_QUERY, SQL_HELP, Reads
from workbench.store.schema import SCHEMA_VERSION
from workbench.store.writer import BatchWriter
from workbench.store.writes import RUN_STATUSES, Writes

__all__ = ["DB_ENV_VAR", "DEFAULT_DB", "EXAMPLE_QUERY", "RUN_STATUSES", "SCHEMA_VERSION", "SQL_HELP", "BatchWriter",
           "Store", "default_db_path"]


class Store(Reads, Writes):
    """A workbench database file and its tensor folder: named reads and writes, one short connection each.

    `with store.write() as con:` is one transaction (committed on exit, rolled back on error), `with
    store.read() as con:` a read-only look; both exist for the store's own modules.
    """
