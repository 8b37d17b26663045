"""The `workbench` command end to end, in subprocesses: output, exit codes, and a SIGKILL midway."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import workbench as wb
from workbench.cli import main

WORKBENCH = [str(Path(sys.executable).parent / "workbench")]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run(*args, **kwargs):
    return subprocess.run(WORKBENCH + [str(a) for a in args], capture_output=True, text=True, env=ENV, **kwargs)


def test_record_runs_sql_models(tiny_dir, db_path, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "one two"}\n{"prompt": "three"}\n')
    out = run("record", "--model", tiny_dir("llama"), "--prompts", prompts, "--db", db_path, "--json",
              "--attention", "--vectors", "--mlp-out", "--batch-size", "1")
    assert out.returncode == 0, out.stderr
    run_id = json.loads(out.stdout)["run_id"]

    runs = json.loads(run("runs", "--db", db_path, "--json").stdout)
    assert [(r["run_id"], r["status"], r["prompts"]) for r in runs] == [(run_id, "complete", 2)]
    assert runs[0]["tokens"] == 1 + 7 + 1 + 5  # BOS + characters

    sql = run("sql", "--db", db_path, "--json", "SELECT kind, count(*) AS n FROM tensor_files GROUP BY kind ORDER BY kind")
    assert json.loads(sql.stdout) == [{"kind": "attention", "n": 2}, {"kind": "mlp_out", "n": 2},
                                      {"kind": "resid_post", "n": 2}]
    table = run("sql", "--db", db_path, "SELECT prompt_id, text FROM prompts ORDER BY prompt_id")
    assert "one two" in table.stdout and "three" in table.stdout

    models = json.loads(run("models", "--json").stdout)
    assert models["architectures"]["causal_lm"] > 100 and set(models["bundled"]) >= {"demo"}
    sharded = json.loads(run("record", "--model", str(tiny_dir("llama")), "--prompt", "one two", "--db", db_path,
                             "--device-map", '{"": "cpu"}', "--dtype", "float32", "--json").stdout)
    assert wb.Store(db_path).run(sharded["run_id"])["status"] == "complete"
    structure = json.loads(run("models", "--model", "demo-hybrid", "--json").stdout)["structure"]
    assert structure["softmax_layers"] == [1, 6] and structure["blocks"] == "model.layers (8)"


@pytest.mark.parametrize("args, message", [
    (["record", "--model", "./missing-model", "--prompt", "hi"], "unknown model spec"),
    (["record", "--model", "{tiny}", "--prompt", ""], "prompt 0 is empty"),
    (["record", "--model", "{tiny}", "--prompts", "/no/such/file.txt"], "does not exist"),
    (["record", "--model", "{tiny}"], "give prompts either inline"),
    (["record", "--model", "{tiny}", "--prompt", "hi", "--layers", "7"], "layer 7 is out of range"),
    (["record", "--model", "{tiny}", "--prompt", "hi", "--device-map", "{cpu"], "--device-map is not valid JSON"),
    (["record", "--model", "{tiny}", "--prompt", "hi", "--device-map", "everywhere"], "unknown device_map 'everywhere'"),
    (["record", "--model", "{tiny}", "--prompt", "hi", "--router"], "have no mixture-of-experts router"),
    (["sql", "DELETE FROM runs"], "read-only"),
    (["sparse", "--model", "{tiny}", "--method", "delta", "--prompt", "x " * 300], "longer than the model's context"),
])
def test_bad_input_exits_non_zero_and_keeps_runs(args, message, tiny_dir, db_path):
    first = wb.record(str(tiny_dir("gpt2")), ["kept"], db_path, progress=False)
    args = [str(tiny_dir("gpt2")) if a == "{tiny}" else a for a in args]
    out = run(*args, "--db", db_path)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert out.stderr.splitlines()[-1].startswith("error: ") and "Traceback" not in out.stderr
    assert wb.Store(db_path).list_runs()[["run_id", "status"]].values.tolist() == [[first, "complete"]]


def test_models_of_an_unknown_spec_is_a_one_line_error():
    out = run("models", "--model", "./missing-model")
    assert out.returncode == 2 and out.stderr.startswith("error: unknown model spec") and "Traceback" not in out.stderr


def test_arguments_are_checked_before_the_model_loads(tiny_dir, tmp_path, monkeypatch, capsys):
    """A misspelled model, an offline hub, a bad database or a layer out of range fail before any weights load."""
    import workbench.models

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(workbench.models, "load_model", never)
    bad = tmp_path / "bad.duckdb"
    bad.write_text("not a database")
    tiny = str(tiny_dir("gpt2"))
    for args, message in [
        (["--model", "dmeo"], "unknown model spec 'dmeo'"),
        (["--model", "dmeo"], "did you mean 'demo'?"),
        (["--model", "someone/no-such-model"], "the hub cannot be reached"),
        (["--model", tiny, "--db", str(bad)], "not a DuckDB database"),
        (["--model", tiny, "--layers", "0,5"], "layer 5 is out of range"),
    ]:
        assert main(["record", "--prompt", "hi", "--db", str(tmp_path / "ok.duckdb"), *args]) == 2
        assert message in capsys.readouterr().err
    assert bad.read_text() == "not a database"


def test_bad_database_file_exits_non_zero(tmp_path):
    bad = tmp_path / "bad.duckdb"
    bad.write_text("not a database")
    out = run("runs", "--db", bad)
    assert out.returncode == 2 and "not a DuckDB database" in out.stderr
    assert bad.read_text() == "not a database"


def test_sigkill_midway_leaves_a_consistent_database(tiny_dir, db_path, tmp_path):
    first = wb.record(str(tiny_dir("gpt2")), ["kept"], db_path, progress=False)
    prompts = tmp_path / "many.txt"
    prompts.write_text("".join(f"prompt number {i}, with some words\n" for i in range(400)))
    writer = subprocess.Popen(WORKBENCH + ["record", "--model", str(tiny_dir("gpt2")), "--prompts", str(prompts),
                                           "--db", str(db_path), "--batch-size", "1", "--vectors"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    reader = wb.Store(db_path, lock_timeout=30)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # read while the other process writes: retries, never crashes
        runs = reader.list_runs()
        if len(runs) == 2 and runs.prompts.iloc[1] >= 5:
            break
        time.sleep(0.2)
    assert writer.poll() is None, "the recording finished before it could be killed"
    writer.send_signal(signal.SIGKILL)
    writer.wait()

    runs = wb.Store(db_path).list_runs()
    assert runs.run_id.tolist() == [first, first + 1]
    assert runs.status.tolist() == ["complete", "abandoned"]
    assert 5 <= runs.prompts.iloc[1] < 400
    with pytest.raises(wb.WorkbenchError, match="not complete"):
        wb.Store(db_path).completed_run(first + 1)
    with pytest.raises(wb.WorkbenchError, match=f"run {first + 1} is abandoned, not complete: .* partial=True"):
        wb.Store(db_path).read_tensors(first + 1, "resid_post")
    # every registered tensor file of the killed run is whole and readable, and the SQL view reads those alone
    # (not a file written after the last commit)
    kept = len(wb.Store(db_path).read_tensors(first + 1, "resid_post", partial=True))
    viewed = wb.Store(db_path).query("SELECT count(*) AS n FROM resid_post WHERE run_id = ?", [first + 1]).n[0]
    assert kept > 0 and viewed == kept


def test_clean_removes_only_the_tensor_files_no_run_registered(tiny_dir, db_path):
    run_id = wb.record(str(tiny_dir("gpt2")), ["kept"], db_path, wb.RecordConfig(vectors=True), progress=False)
    store = wb.Store(db_path)
    folder = store.tensor_dir / f"run_{run_id}"
    left = [folder / "resid_post-0123456789ab.parquet", folder / "resid_post-ba9876543210.partial",
            store.tensor_dir / "run_99" / "attention-000000000000.parquet"]
    for file in left:  # what a recording killed between writing and registering leaves
        file.parent.mkdir(exist_ok=True)
        file.write_bytes(b"half a file")
    listed = run("clean", "--list", "--db", db_path, "--json")
    assert sorted(json.loads(listed.stdout)["files"]) == sorted(map(str, left)) and all(f.exists() for f in left)
    assert "removed 3 tensor file(s)" in run("clean", "--db", db_path).stdout
    assert not any(f.exists() for f in left) and not (store.tensor_dir / "run_99").exists()
    assert len(store.read_tensors(run_id, "resid_post")) > 0 and store.orphan_files() == []


def test_benchmarks_command_stores_kernel_results_and_refuses_a_bad_file(db_path, tmp_path):
    from workbench_kernels.results import Result, write_results

    run_info = {"gpu": "NVIDIA H100", "commit": "0123456789abcdef", "command": "python -m workbench_kernels.bench_all"}
    good, bad = tmp_path / "run.jsonl", tmp_path / "bad.jsonl"
    write_results(good, [Result("sparse_decode", "decode", "B=8", 0.05, "dense SDPA", 0.2, "copy bandwidth", 0.8)],
                  run_info)
    bad.write_text("this is not json\n")
    refused = run("benchmarks", good, bad, "--db", db_path)
    assert refused.returncode == 2 and "bad.jsonl:1: not a JSON line" in refused.stderr
    assert not db_path.exists() or wb.Store(db_path).kernel_benchmarks().empty  # the good file was not stored either
    out = run("benchmarks", good, "--db", db_path, "--json")
    assert out.returncode == 0, out.stderr
    rows = wb.Store(db_path).kernel_benchmarks()
    assert rows[["op", "device", "ratio", "ceiling_fraction", "commit"]].values.tolist() == [
        ["sparse_decode", "NVIDIA H100", 4.0, 0.8, "0123456789abcdef"]]
    assert json.loads(out.stdout)["rows"][0]["ratio"] == 4.0


def test_memory_command_on_a_deltanet_hybrid(tiny_dir, db_path):
    out = run("memory", "--model", tiny_dir("delta_net"), "--prompt", "the cat sat", "--steps", "0,5",
              "--db", db_path, "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert [row["layer"] for row in result["layers"]] == [0, 2]
    steps = wb.Store(db_path).query("SELECT DISTINCT step FROM delta_states ORDER BY step").step.tolist()
    assert steps == [0, 5]
    bad = run("memory", "--model", tiny_dir("delta_net"), "--prompt", "the cat", "--layers", "1", "--db", db_path)
    assert bad.returncode == 2 and "softmax attention" in bad.stderr
    plain = run("memory", "--model", tiny_dir("llama"), "--prompt", "the cat", "--db", db_path)
    assert plain.returncode == 2 and "no delta-rule layers" in plain.stderr
    assert wb.Store(db_path).query("SELECT count(*) AS n FROM analyses").n[0] == 1


def test_the_installed_distribution_lists_every_package():
    """A package left out of pyproject.toml imports from the checkout but not from an installed wheel."""
    import tomllib

    root = Path(__file__).resolve().parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "workbench").rglob("__init__.py")}
    found |= {".".join(("workbench_kernels",) + p.parent.relative_to(root / "kernels").parts)
              for p in (root / "kernels").rglob("__init__.py")}
    found.add("workbench_kernels")
    assert found - listed == set()
