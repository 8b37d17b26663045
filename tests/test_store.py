"""The store refuses files it must not touch, explains locks, and stays read-only where promised."""

import os
import re
import subprocess
import sys
import textwrap

import duckdb
import numpy as np
import pytest

import workbench as wb
from workbench.errors import DatabaseLockedError, StoreError, WorkbenchError
from workbench.store import SCHEMA_VERSION, SQL_HELP

MODEL = {"model": "m", "n_layers": 1, "d_model": 2}


def _one_run(path):
    store = wb.Store(path)
    run_id = store.create_run("record", MODEL, {"batch_size": 1})
    store.finish_run(run_id, "complete")
    return store, run_id


def test_not_a_duckdb_file_is_left_untouched(tmp_path):
    path = tmp_path / "notes.duckdb"
    path.write_bytes(b"my precious notes " * 100)
    for action in (lambda s: s.create_run("record", MODEL, {}), lambda s: s.list_runs()):
        with pytest.raises(StoreError, match="not a DuckDB database"):
            action(wb.Store(path))
    assert path.read_bytes() == b"my precious notes " * 100


def test_a_foreign_duckdb_database_is_not_migrated(tmp_path):
    path = tmp_path / "other.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE sales (x INTEGER)")
    with pytest.raises(StoreError, match="something else"):
        wb.Store(path).create_run("record", MODEL, {})
    with duckdb.connect(str(path), read_only=True) as con:
        assert [t[0] for t in con.execute("SHOW TABLES").fetchall()] == ["sales"]


def test_read_only_location(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    store, run_id = _one_run(folder / "runs.duckdb")
    folder.chmod(0o555)
    (folder / "runs.duckdb").chmod(0o444)
    try:
        if os.access(folder / "runs.duckdb", os.W_OK):
            pytest.skip("running as a user who can write read-only files (root)")
        with pytest.raises(StoreError, match="read-only"):
            store.create_run("record", MODEL, {})
        with pytest.raises(StoreError, match="read-only"):
            wb.Store(folder / "new.duckdb").create_run("record", MODEL, {})
        assert store.list_runs().run_id.tolist() == [run_id]
    finally:
        folder.chmod(0o755)


def test_read_only_location_checked_by_permission(tmp_path, monkeypatch):
    """The same refusal, forced through the permission check (root ignores chmod)."""
    store, run_id = _one_run(tmp_path / "runs.duckdb")
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(StoreError, match="is read-only"):
        store.create_run("record", MODEL, {})
    monkeypatch.undo()
    assert store.list_runs().run_id.tolist() == [run_id]


def test_missing_folder_and_directory_path(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        wb.Store(tmp_path / "nope" / "runs.duckdb").create_run("record", MODEL, {})
    with pytest.raises(StoreError, match="is a directory"):
        wb.Store(tmp_path)
    with pytest.raises(StoreError, match="no database"):
        wb.Store(tmp_path / "absent.duckdb").run(1)


def test_newer_schema_is_refused(tmp_path):
    store, _ = _one_run(tmp_path / "runs.duckdb")
    with duckdb.connect(str(store.path)) as con:
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    for action in (store.list_runs, lambda: store.create_run("record", MODEL, {})):
        with pytest.raises(StoreError, match="newer than this workbench"):
            action()


def test_lock_held_by_another_process_is_named(tmp_path):
    store, run_id = _one_run(tmp_path / "runs.duckdb")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, sys, time
            con = duckdb.connect({str(store.path)!r})
            print("locked", flush=True)
            sys.stdin.readline()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        impatient = wb.Store(store.path, lock_timeout=0.3)
        with pytest.raises(DatabaseLockedError, match=rf"locked by another process .*PID {holder.pid}"):
            impatient.list_runs()
    finally:
        holder.communicate("\n")
    assert store.list_runs().run_id.tolist() == [run_id]


def test_sql_is_read_only(tmp_path):
    store, run_id = _one_run(tmp_path / "runs.duckdb")
    assert store.query("SELECT run_id, status FROM runs").to_dict("list") == {"run_id": [run_id],
                                                                             "status": ["complete"]}
    assert "runs" in store.query("SHOW TABLES").name.tolist()
    for sql in ("DELETE FROM runs", "DROP TABLE runs", "SELECT 1; DELETE FROM runs",
                f"COPY runs TO '{tmp_path / 'x.csv'}'", f"ATTACH '{tmp_path / 'y.duckdb'}'"):
        with pytest.raises(StoreError, match="read-only"):
            store.query(sql)
    with pytest.raises(StoreError, match="query failed"):
        store.query("SELECT * FROM no_such_table")
    with pytest.raises(StoreError, match="empty"):
        store.query("  ")
    assert store.list_runs().run_id.tolist() == [run_id]


def test_abandoned_runs_are_not_reported_running(tmp_path):
    store = wb.Store(tmp_path / "runs.duckdb")
    run_id = store.create_run("record", MODEL, {})
    assert store.list_runs().status.tolist() == ["running"]  # our own process is alive
    with duckdb.connect(str(store.path)) as con:
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        con.execute("UPDATE runs SET pid = ? WHERE run_id = ?", [int(dead.stdout), run_id])
    assert store.list_runs().status.tolist() == ["abandoned"]


def test_version_1_database_migrates_and_keeps_its_runs(tmp_path):
    from workbench.store.schema import MIGRATIONS

    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as con:  # a database as schema version 1 left it
        con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        con.execute(MIGRATIONS[1])
        con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        con.execute("INSERT INTO runs (kind, model, status) VALUES ('record', 'old-model', 'complete')")
    store = wb.Store(path)
    new_run = store.create_run("record", MODEL, {})
    runs = store.list_runs()
    assert runs[["model", "status"]].values.tolist() == [["old-model", "complete"], ["m", "running"]]
    assert new_run == 2
    assert store.query("SELECT value FROM meta WHERE key = 'schema_version'").value.tolist() == [str(SCHEMA_VERSION)]
    assert store.query("SELECT count(*) AS n FROM prompt_layer_stats").n.tolist() == [0]


def test_large_tensor_tables_are_written_in_parts_and_read_back_whole(tmp_path, monkeypatch):
    import numpy as np
    import pyarrow as pa

    from workbench.store import parquet

    monkeypatch.setattr(parquet, "PARQUET_PART_BYTES", 100)
    monkeypatch.setattr(parquet.os, "cpu_count", lambda: 3)
    store, run_id = _one_run(tmp_path / "runs.duckdb")
    vectors = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    table = pa.table({"position": np.arange(50, dtype=np.int32),
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 8)})
    store.append_batch(run_id, {}, {"resid_post": table})
    assert len(store.tensor_paths(run_id, "resid_post")) == 3  # one file per core
    back = store.read_tensors(run_id, "resid_post").sort_values("position")
    assert back.position.tolist() == list(range(50))
    np.testing.assert_array_equal(np.stack(back.vector), vectors)


def _rows(start, n):
    import numpy as np
    import pyarrow as pa

    return pa.table({"run_id": np.full(n, 1, dtype=np.int64), "prompt_id": np.arange(start, start + n, dtype=np.int32),
                     "text": [f"p{i}" for i in range(start, start + n)], "n_tokens": np.ones(n, dtype=np.int32)})


def test_background_writer_commits_whole_row_groups_and_everything_at_close(tmp_path, monkeypatch):
    from workbench.store import writer as writer_module

    monkeypatch.setattr(writer_module, "ROW_GROUP_ROWS", 4)
    store, run_id = _one_run(tmp_path / "runs.duckdb")
    committed = []
    append = store._append
    monkeypatch.setattr(store, "_append", lambda r, tables, files: (committed.append(len(tables["prompts"])),
                                                                    append(r, tables, files)))
    with store.writer(run_id, flush_rows=4, flush_seconds=60) as writer:
        for start in (0, 3, 6):
            writer.submit(lambda start=start: ({"prompts": _rows(start, 3)}, {}))
    assert committed == [4, 4, 1]  # 3 wait; 6 -> 4 committed, 2 wait; 5 -> 4 committed, 1 waits; close: 1
    assert store.query("SELECT prompt_id FROM prompts ORDER BY prompt_id").prompt_id.tolist() == list(range(9))


def test_background_writer_commits_waiting_rows_after_flush_seconds(tmp_path):
    import time

    store, run_id = _one_run(tmp_path / "runs.duckdb")
    with store.writer(run_id, flush_seconds=0.05) as writer:
        writer.submit(lambda: ({"prompts": _rows(0, 2)}, {}))
        deadline = time.monotonic() + 10
        while store.query("SELECT count(*) AS n FROM prompts").n[0] < 2:  # readable while the writer lives
            assert time.monotonic() < deadline, "the writer never committed the waiting rows"
            time.sleep(0.05)


def test_a_failing_background_writer_surfaces_and_stops(tmp_path):
    store, run_id = _one_run(tmp_path / "runs.duckdb")

    def broken():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), store.writer(run_id, flush_rows=1) as writer:
        writer.submit(lambda: ({"prompts": _rows(0, 2)}, {}))
        writer.submit(broken)
        for start in range(2, 100):  # the error comes back on a later submit (or at close), never a hang
            writer.submit(lambda start=start: ({"prompts": _rows(start, 1)}, {}))
    assert store.query("SELECT prompt_id FROM prompts").prompt_id.tolist() == [0, 1]  # the batch before it


def test_a_failing_background_writer_still_commits_the_batches_it_gathered(tmp_path):
    store, run_id = _one_run(tmp_path / "runs.duckdb")

    def broken():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), store.writer(run_id, flush_seconds=60) as writer:
        writer.submit(lambda: ({"prompts": _rows(0, 2)}, {}))  # gathered, below flush_rows, not yet committed
        writer.submit(lambda: ({"prompts": _rows(2, 2)}, {}))
        writer.submit(broken)
        writer.close()
    assert store.query("SELECT prompt_id FROM prompts ORDER BY 1").prompt_id.tolist() == [0, 1, 2, 3]


def test_rows_wait_at_most_flush_seconds_while_batches_keep_coming(tmp_path):
    import time

    def slow(start):  # each batch takes 0.05 s to build, and the next one is always queued behind it
        time.sleep(0.05)
        return {"prompts": _rows(start, 1)}, {}

    store, run_id = _one_run(tmp_path / "runs.duckdb")
    with store.writer(run_id, flush_seconds=0.2) as writer:
        for start in range(16):
            writer.submit(lambda start=start: slow(start))
        committed_while_running = store.query("SELECT count(*) AS n FROM prompts").n[0]
    assert committed_while_running >= 4  # 0.7 s of batches: several 0.2 s flushes happened before close


def test_an_aborted_background_writer_keeps_what_it_gathered(tmp_path):
    store, run_id = _one_run(tmp_path / "runs.duckdb")
    with pytest.raises(KeyboardInterrupt), store.writer(run_id, flush_seconds=60) as writer:
        writer.submit(lambda: ({"prompts": _rows(0, 2)}, {}))
        raise KeyboardInterrupt
    assert store.query("SELECT count(*) AS n FROM prompts").n[0] in (0, 2)  # whole batches only


def test_a_reader_in_the_writing_process_waits_for_the_write(tmp_path):
    import threading
    import time

    store, run_id = _one_run(tmp_path / "runs.duckdb")
    holding = threading.Event()

    def hold():
        with store.write():
            holding.set()
            time.sleep(0.3)

    thread = threading.Thread(target=hold)
    thread.start()
    holding.wait()
    assert store.list_runs().run_id.tolist() == [run_id]  # DuckDB refused it while held; the store retried
    thread.join()


def test_stored_vectors_and_maps_are_sql_views_read_in_place(tiny_dir, tmp_path, capsys):
    """The SQL page's tables include a view per stored tensor kind over the runs' Parquet files, with run_id; each
    run may pick its own compression, and a progress bar reports tokens/s and bytes written."""
    import pyarrow.parquet as pq

    model = wb.load_model(str(tiny_dir("gpt2")), attention=True)
    db = str(tmp_path / "v.duckdb")
    store = wb.Store(db)
    first = wb.record(model, ["hello there", "a cat"], db, wb.RecordConfig(), progress=False)
    with pytest.raises(StoreError, match="resid_post"):  # no vectors stored yet: no view
        store.query("SELECT * FROM resid_post")
    first = wb.record(model, ["hello there", "a cat"], db, wb.RecordConfig(vectors=True), progress=False)
    second = wb.record(model, ["the dog"], db, wb.RecordConfig(vectors=True, attention=True, compression="lz4"))
    bar = capsys.readouterr().err
    assert "tok/s" in bar and "MB written" in bar
    counts = store.query("SELECT run_id, count(*) AS n FROM resid_post GROUP BY run_id ORDER BY run_id")
    for run in (first, second):
        rows = store.read_tensors(run, "resid_post")
        assert counts.set_index("run_id").n[run] == len(rows)
    got = store.query("SELECT vector FROM resid_post WHERE run_id = ? AND prompt_id = 0 AND layer = 1 "
                      "ORDER BY position", [second])
    expected = store.read_tensors(second, "resid_post", prompt_id=0)
    expected = expected[expected.layer == 1].sort_values("position")
    assert all(np.array_equal(a, b) for a, b in zip(got.vector, expected.vector, strict=True))
    assert store.query("SELECT count(*) AS n FROM attention").n[0] == len(store.read_tensors(second, "attention"))
    example = re.search(r"e\.g\. (SELECT .*?)\.$", SQL_HELP).group(1).replace("run_id = 1", f"run_id = {second}")
    assert len(store.query(example)) == model.n_layers  # the SQL page's own example runs
    codecs = {run: {pq.ParquetFile(store.tensor_dir / p).metadata.row_group(0).column(0).compression
                    for p in store.tensor_paths(run, "resid_post")} for run in (first, second)}
    assert codecs == {first: {"ZSTD"}, second: {"LZ4"}}
    with pytest.raises(WorkbenchError, match="compression must be one of"):
        wb.RecordConfig(compression="brotli")
