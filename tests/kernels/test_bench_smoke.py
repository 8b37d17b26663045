"""The GPU benchmarks run once, in one lent call: smoke-test their code paths here on CPU.

Sizes are shrunk, timing runs each function once, CUDA graphs are skipped; SDPA's flash and cuDNN
backends do not exist on CPU, so the dense baselines take their "unavailable" branch.
"""

from __future__ import annotations

import importlib

import pytest

SHRINK = {
    "workbench_kernels.stripe_prefill.bench": {
        "HQ": 4, "HKV": 2, "D": 16, "BLOCK": 8, "STEP": 2, "SIZES": (70,), "QUICK": (70,),
        "CHECK": {"t": 64, "block_size": 8, "step": 2, "hq": 4, "hkv": 2},
    },
    "workbench_kernels.delta_rule.bench": {
        "H": 2, "D": 16, "SIZES": [(1, 40)], "QUICK": [(1, 40)], "CHECK": {"b": 1, "t": 40, "h": 2}, "DECODE_B": 2,
    },
    "workbench_kernels.sparse_decode.bench": {
        "HQ": 4, "HKV": 2, "D": 16,
        "SIZES": {"batches": (1,), "lengths": (40,), "keeps": (0.5,)},
        "QUICK": {"batches": (1,), "lengths": (40,), "keeps": (0.5,)},
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


@pytest.mark.parametrize("name", sorted(SHRINK))
def test_bench_runs(name, monkeypatch, no_gpu_timing):
    module = importlib.import_module(name)
    for attr, value in SHRINK[name].items():
        monkeypatch.setattr(module, attr, value)
    parts = module.run(quick=False, bandwidth=1e12, device="cpu")
    text = "\n".join(parts)
    assert "|" in text and "nan" not in text.lower()


def test_bench_all_reports_a_failing_op_and_goes_on(monkeypatch, tmp_path, capsys):
    from workbench_kernels import bench_all
    from workbench_kernels.delta_rule import bench as delta_bench
    from workbench_kernels.sparse_decode import bench as decode_bench

    def broken(**_):
        raise RuntimeError("boom")

    monkeypatch.setattr(bench_all.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bench_all, "copy_bandwidth", lambda: 1e12)
    monkeypatch.setattr(bench_all, "header", lambda bandwidth: "## header\n")
    monkeypatch.setattr(decode_bench, "run", broken)
    monkeypatch.setattr(delta_bench, "run", lambda quick, bandwidth: [f"### delta quick={quick}\n"])
    out = tmp_path / "bench.md"
    monkeypatch.setattr("sys.argv", ["bench_all", "--out", str(out), "--quick", "--only", "sparse_decode,delta_rule"])
    bench_all.main()
    text = out.read_text()
    assert "### sparse_decode: FAILED" in text and "boom" in text
    assert "### delta quick=True" in text and "selection_scores" not in text
    assert "written to" in capsys.readouterr().out
