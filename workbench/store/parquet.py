"""Dense tensors (residual vectors, full attention maps) as Parquet files in the database's tensor folder.

DuckDB ingests Parquet about five times faster than array columns and reads the files back in place, so a
run's vectors go to `<db>.tensors/run_<id>/<kind>-<random>.parquet`, registered in `tensor_files`. A large
table is written as several files at once, since encoding one Parquet file uses one core.
"""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_PART_BYTES = 64 << 20  # tensor tables larger than this are split into files written in parallel


def parts(table: pa.Table) -> list[pa.Table]:
    """`table` in row slices of about `PARQUET_PART_BYTES`, at most one per CPU core."""
    n = max(1, min(os.cpu_count() or 1, table.nbytes // PARQUET_PART_BYTES))
    step = max(1, -(-table.num_rows // n))
    return [table.slice(start, step) for start in range(0, table.num_rows, step)] or [table]


def float_encoding(schema: pa.Schema) -> dict:
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


def write_file(tensor_dir: Path, run_id: int, kind: str, table: pa.Table, compression: str = "zstd"
               ) -> tuple[str, int]:
    """One Parquet file of `table` ("none": uncompressed); its path relative to `tensor_dir`, and its row count."""
    folder = tensor_dir / f"run_{run_id}"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{kind}-{uuid.uuid4().hex[:12]}.parquet"
    partial = final.with_suffix(".partial")
    pq.write_table(table, partial, compression=compression, **float_encoding(table.schema))
    partial.rename(final)  # atomic: a reader never sees half a file
    return str(final.relative_to(tensor_dir)), table.num_rows


def write_tensors(tensor_dir: Path, run_id: int, tensors: dict[str, pa.Table], compression: str = "zstd"
                  ) -> list[tuple[str, str, int]]:
    """Write tensor tables to Parquet, large ones as parts in parallel; (kind, path, rows) of each file."""
    pieces = [(kind, part) for kind, table in tensors.items() for part in parts(table)]
    if not pieces:
        return []
    with ThreadPoolExecutor(max(1, min(len(pieces), os.cpu_count() or 1))) as pool:  # pyarrow releases the GIL
        return list(pool.map(lambda piece: (piece[0], *write_file(tensor_dir, run_id, *piece, compression)),
                             pieces))
