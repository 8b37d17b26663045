"""The sweep script and the `workbench sparse` command store what they print, and budget 1 is dense."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workbench.cli import main
from workbench.store import Store

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: on a shared 2-core machine, torch's thread pool costs far more than it saves."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_sweep_script_stores_the_table_and_full_budget_matches_dense(tiny_dir, db_path):
    done = subprocess.run(
        [sys.executable, "analyses/sparsity_sweep.py", "--model", str(tiny_dir("llama")), "--lengths", "128",
         "--budgets", "1,0.3", "--items", "1", "--tasks", "kv", "--decode-tokens", "8", "--threads", "1",
         "--db", str(db_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert "retrieval accuracy by budget" in done.stdout
    sweep = Store(db_path).query("SELECT * FROM sparse_sweep ORDER BY method, budget")
    assert len(sweep) == 7  # dense once, three methods at two budgets
    full = sweep[sweep.budget == 1]
    assert (full.kl.abs() < 1e-6).all() and (full.top1_agreement == 1).all()
    assert (full.attended_fraction > 0.999).all()
    low = sweep[sweep.budget < 1]
    assert (low.attended_fraction < 1).all()
    steps = Store(db_path).query("SELECT count(*) AS n FROM sparse_accuracy")
    assert steps.n[0] == 7 * 8


def test_sparse_command_logs_selections(tiny_dir, db_path, capsys):
    code = main(["sparse", "--method", "delta", "--model", str(tiny_dir("qwen3")), "--prompt",
                 "A prompt long enough to have pages to choose from while decoding.", "--budget", "0.3",
                 "--decode-tokens", "6", "--db", str(db_path), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    store = Store(db_path)
    rows = store.query("SELECT * FROM sparse_selections WHERE analysis_id = ?", [out["analysis_id"]])
    assert set(rows.phase) == {"decode"} and len(rows) > 0
    assert rows.recall.notna().all()
    assert out["items"][0]["attended_fraction"] < 1
    assert main(["sparse", "--method", "delta", "--model", str(tiny_dir("qwen3")), "--task", "retrieval",
                 "--db", str(db_path)]) == 2


def test_decode_benchmark_runs_and_appends_its_table(tmp_path):
    out = tmp_path / "BENCH.md"
    done = subprocess.run(
        [sys.executable, "analyses/bench_sparse_decode.py", "--shape", "tiny", "--device", "cpu", "--contexts", "96",
         "--batches", "1", "--steps", "2", "--warmup", "1", "--budget", "32", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "## Sparse decode: DELTA vs dense" in text and "| 96 | 1 |" in text
    assert "1.54x" in text  # the paper's number stands beside ours


def test_a_stopped_sweep_keeps_each_task_it_finished(tiny_dir, db_path):
    """Each length and task is stored as it finishes: stopped during its second task, the sweep keeps the first's
    rows and says it is partial."""
    import workbench as wb
    from workbench.errors import Cancelled
    from workbench.sparse.sweep import record_sweep

    model = wb.load_model(str(tiny_dir("llama")))
    store = Store(db_path)
    runs_per_task = 1 + 3  # dense, and three methods at one budget

    def stop_in_second_task(done, total):
        if done == runs_per_task + 1:
            raise Cancelled

    with pytest.raises(Cancelled):
        record_sweep(store, "tiny", model.hf, model.tokenizer, {}, budgets=(0.3,), lengths=(128,),
                     tasks=("kv", "passkey"), n_items=1, decode_tokens=4, progress=stop_in_second_task)
    (stopped,) = store.analyses("sparse-sweep").itertuples()
    assert json.loads(stopped.summary) == {"status": "partial", "done": 1, "total": 2}
    kept = store.query("SELECT DISTINCT task FROM sparse_sweep WHERE analysis_id = ?", [stopped.analysis_id])
    assert kept.task.tolist() == ["kv"]
