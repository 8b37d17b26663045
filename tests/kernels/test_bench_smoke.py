"""The GPU benchmarks run once, in one lent call: smoke-test their code paths here on CPU.

Sizes are shrunk, timing runs each function once, CUDA graphs are skipped; SDPA's flash and cuDNN
backends do not exist on CPU, so the dense baselines take their "unavailable" branch.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest

from workbench_kernels import _bench

SHRINK = {
    "workbench_kernels.attention_tiles.bench": {"HQ": 4, "HKV": 2, "D": 16, "TILES": 4, "SIZES": (64,),
                                                "QUICK": (64,), "CHECK": {"t": 64, "hq": 4, "hkv": 2}},
    "workbench_kernels.stripe_prefill.bench": {
        "HQ": 4, "HKV": 2, "D": 16, "BLOCK": 8, "STEP": 2, "SIZES": (70,), "QUICK": (70,),
        "CHECK": {"t": 64, "block_size": 8, "step": 2, "hq": 4, "hkv": 2},
    },
    "workbench_kernels.delta_rule.bench": {
        "H": 2, "D": 16, "SIZES": [(1, 40)], "QUICK": [(1, 40)], "CHECK": {"b": 1, "t": 40, "h": 2}, "DECODE_B": 2,
    },
    "workbench_kernels.sparse_decode.bench": {
        "HQ": 4, "HKV": 2, "D": 16,
        "SIZES": {"batches": (1,), "lengths": (40,), "keeps": (0.5, 0.25)},
        "QUICK": {"batches": (1,), "lengths": (40,), "keeps": (0.5, 0.25)},
        "CHECK": {"b": 1, "n": 40, "k": 20},
    },
    "workbench_kernels.token_summaries.bench": {"LAYERS": 2, "PROMPTS": 2, "LENGTH": 5, "D": 24},
    "workbench_kernels.selection_scores.bench": {
        "HQ": 4, "HKV": 2, "D": 16, "PAGE": 4, "RECENT": 1,
        "SIZES": {"batches": (1,), "lengths": (40,)},
        "QUICK": {"batches": (1,), "lengths": (40,)},
        "CHECK": {"b": 1, "n": 40},
    },
}


# Per op: the headline results a shrunken run gives (one per size), and the bytes each one's ceiling divides,
# from the shapes in SHRINK; every timing is the stub's 1 ms.
EXPECTED = {
    "workbench_kernels.sparse_decode.bench": [  # B=1, N=40, keep 25%: K=10 gathered K and V rows, indices, q and out
        ("B=1 N=40 Hq=4 Hkv=2 D=16 bf16", 2 * 2 * 10 * 16 * 2 + 2 * 10 * 4 + 2 * 4 * 16 * 2)],
    "workbench_kernels.selection_scores.bench": [("B=1 N=40 Hq=4 Hkv=2 D=16 bf16", 2 * 40 * 16 * 2)],  # K once
    "workbench_kernels.token_summaries.bench": [  # x read twice (the summaries, the bracket's counts)
        (f"L=2 2x5 tokens D=24 {dtype}", 2 * 2 * 10 * 24 * size) for dtype, size in (("bfloat16", 2), ("float32", 4))],
}


@pytest.mark.parametrize("name", sorted(SHRINK))
def test_bench_runs(name, monkeypatch, no_gpu_timing):
    module = importlib.import_module(name)
    for attr, value in SHRINK[name].items():
        monkeypatch.setattr(module, attr, value)
    monkeypatch.setattr(_bench, "MATMUL_N", 8)
    report = module.run(quick=False, bandwidth=1e12, device="cpu")
    assert "nan" not in "\n".join(report.sections).lower()
    assert report.results and all(r.ms == 1.0 for r in report.results)  # the stubbed timing
    assert all(0 < r.ceiling_fraction < 1 for r in report.results if r.ceiling.startswith("copy bandwidth"))
    assert all(math.isfinite(r.ceiling_fraction) and r.ceiling_fraction > 0 for r in report.results)
    if name in EXPECTED:
        got = [(r.shape, r.ceiling_fraction) for r in report.results]
        assert got == [(shape, pytest.approx(nbytes / 1e-3 / 1e12)) for shape, nbytes in EXPECTED[name]]


def test_results_round_trip_and_the_table_flags_disagreement(tmp_path):
    from workbench_kernels.results import Result, current_table, read_results, write_results

    run = {"gpu": "H100", "commit": "abc1234def", "command": "python -m x", "date": "d"}
    first = [Result("op", "what", "B=1", 2.0, "dense", 4.0, "copy bandwidth", 0.5),
             Result("op", "what", "B=8", 1.0, "dense", 1.5, "copy bandwidth", 0.9)]
    second = [Result("op", "what", "B=1", 2.1, "dense", 4.0, "copy bandwidth", 0.5),  # 1.90x: agrees with 2.00x
              Result("op", "what", "B=8", 1.0, "dense", 2.0, "copy bandwidth", 0.9)]  # 2.00x: not with 1.50x
    write_results(tmp_path / "a.jsonl", first, run)
    write_results(tmp_path / "b.jsonl", second, run)
    rows = read_results(tmp_path / "a.jsonl")
    assert [r["speedup"] for r in rows] == [2.0, 1.5] and rows[0]["commit"] == "abc1234def"
    table = current_table(rows, read_results(tmp_path / "b.jsonl")).splitlines()
    assert table[2].split(" | ")[5:8] == ["2", "1.9", "yes"] and table[3].split(" | ")[5:8] == ["1.5", "2", "NO"]
    assert "- op: baseline dense; ceiling: copy bandwidth; H100, abc1234, `python -m x`" in table
    (tmp_path / "bad.jsonl").write_text('{"op": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: not a benchmark result"):
        read_results(tmp_path / "bad.jsonl")


def test_bench_all_reports_a_failing_op_and_goes_on(monkeypatch, tmp_path, capsys):
    from workbench_kernels import bench_all
    from workbench_kernels.delta_rule import bench as delta_bench
    from workbench_kernels.results import Report, Result, read_results
    from workbench_kernels.sparse_decode import bench as decode_bench

    def broken(**_):
        raise RuntimeError("boom")

    monkeypatch.setattr(bench_all.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bench_all, "copy_bandwidth", lambda: 1e12)
    monkeypatch.setattr(bench_all, "run_info", lambda: {"gpu": "GPU", "commit": "c0ffee", "command": "bench_all"})
    monkeypatch.setattr(bench_all, "header", lambda bandwidth, run: "## header\n")
    monkeypatch.setattr(decode_bench, "run", broken)
    delta = Result("delta_rule", "forward", "B=1", 1.0, "fla", 2.0, "copy bandwidth", 0.5)
    monkeypatch.setattr(delta_bench, "run", lambda quick, bandwidth: Report([f"### delta quick={quick}\n"], [delta]))
    out, results = tmp_path / "bench.md", tmp_path / "bench.jsonl"
    bench_all.main(["--out", str(out), "--results", str(results), "--quick", "--only", "sparse_decode,delta_rule"])
    text = out.read_text()
    assert "### sparse_decode: FAILED" in text and "boom" in text
    assert "### delta quick=True" in text and "selection_scores" not in text
    assert [r["speedup"] for r in read_results(results)] == [2.0]
    assert "written to" in capsys.readouterr().out


def test_the_docs_current_kernel_table_is_the_committed_runs_and_every_row_agrees():
    from workbench_kernels.results import current_table, read_results

    root = Path(__file__).resolve().parents[2]
    runs = [read_results(root / f"docs/benchmarks/kernels-h100-run{i}.jsonl") for i in (1, 2)]
    table = current_table(*runs)
    current = (root / "docs/BENCHMARKS.md").read_text().split("## Measured once")[0]
    assert table in current
    assert all(line.split(" | ")[7] == "yes" for line in table.splitlines()[2:] if line.startswith("| "))
