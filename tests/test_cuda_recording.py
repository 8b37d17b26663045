"""On a GPU, recording takes paths of its own (the Triton summaries, vectors copied on a side stream into pinned
memory): they must give the numbers the CPU path gives. Skipped where there is no CUDA device (CI)."""

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.recording import capture_batch, start_batch
from workbench_kernels.token_summaries import naive, summaries

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

PROMPTS = ["A much longer prompt, padded by its partner.", "Hi.", "Three words here", "x"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_summary_kernel_equals_reference_at_full_size(dtype):
    torch.manual_seed(0)
    x = (torch.randn(3, 1500, 2048, device="cuda") * 30).to(dtype)
    x[1, :700, :1000] = 0.0  # ties at zero
    x[2, 5, 7] = torch.inf
    rows, lengths = torch.arange(100, 1500, device="cuda"), [1000, 1, 399]
    got, want = (f(x, rows, lengths, 8) for f in (summaries.token_summaries, naive.token_summaries))
    for key in ("max_abs", "median_abs", "prompt_median_abs", "prompt_max_abs"):
        assert torch.equal(got[key], want[key]), key
    for key in ("max_dim", "prompt_n_nonfinite", "prompt_first_nonfinite"):
        assert torch.equal(got[key].long(), want[key].long()), key
    torch.testing.assert_close(got["l2_norm"], want["l2_norm"], rtol=1e-5, atol=0)


@pytest.mark.parametrize("vectors", [False, True])
def test_capture_on_cuda_equals_capture_on_cpu(vectors, tiny_dir):
    path = str(tiny_dir("llama"))
    cpu, gpu = (wb.load_model(path, device=d, dtype=torch.float32) for d in ("cpu", "cuda"))
    batch = cpu.tokenizer(PROMPTS, padding=True, return_tensors="pt")
    config = wb.RecordConfig(vectors=vectors, attn_out=True, mlp_out=True)
    layers = list(range(cpu.n_layers))
    want = capture_batch(cpu, batch["input_ids"], batch["attention_mask"], layers, config)
    got = capture_batch(gpu, batch["input_ids"].cuda(), batch["attention_mask"].cuda(), layers, config)
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        if key.endswith(("max_dim", "topk_dims", "nonfinite")):
            assert np.array_equal(got[key], value), key
        else:
            np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-5, err_msg=key)


def test_record_on_cuda_reads_back_what_the_cpu_records(tiny_dir, tmp_path):
    path = str(tiny_dir("llama"))
    config = wb.RecordConfig(vectors=True, batch_size=3)
    runs = {d: wb.record(wb.load_model(path, device=d, dtype=torch.float32), PROMPTS, tmp_path / f"{d}.duckdb",
                         config, progress=False) for d in ("cpu", "cuda")}
    rows = {}
    for d, run_id in runs.items():
        frame = wb.Store(tmp_path / f"{d}.duckdb").read_tensors(run_id, "resid_post")
        rows[d] = np.stack(frame.sort_values(["prompt_id", "layer", "position"]).vector)
    np.testing.assert_allclose(rows["cuda"], rows["cpu"], rtol=1e-4, atol=1e-5)


def test_batches_queued_before_waiting_keep_their_own_arrays(tiny_dir):
    """start_batch returns before the GPU is done: a second batch queued on top must not disturb the first."""
    model = wb.load_model(str(tiny_dir("llama")), device="cuda", dtype=torch.float32)
    config = wb.RecordConfig(vectors=True, attn_out=True)
    layers = list(range(model.n_layers))
    first, second = (model.tokenizer(p, padding=True, return_tensors="pt") for p in (PROMPTS[:2], PROMPTS[2:]))
    want = [capture_batch(model, b["input_ids"], b["attention_mask"], layers, config) for b in (first, second)]
    waits = [start_batch(model, b["input_ids"], b["attention_mask"], layers, config) for b in (first, second)]
    for got, expected in zip([w() for w in waits], want):
        for key, value in expected.items():
            assert np.array_equal(got[key], value, equal_nan=True), key


def test_bf16_vectors_cross_in_bf16_and_are_stored_exactly(tiny_dir, tmp_path):
    model = wb.load_model(str(tiny_dir("llama")), device="cuda", dtype=torch.bfloat16)
    config = wb.RecordConfig(vectors=True)
    batch = model.tokenizer(PROMPTS, padding=True, return_tensors="pt")
    host = capture_batch(model, batch["input_ids"], batch["attention_mask"], list(range(model.n_layers)), config)
    assert host["resid_post.vector"].dtype == torch.bfloat16  # half the bytes over PCIe
    run_id = wb.record(model, PROMPTS, tmp_path / "bf16.duckdb", wb.RecordConfig(vectors=True, batch_size=len(PROMPTS)),
                       progress=False)
    frame = wb.Store(tmp_path / "bf16.duckdb").read_tensors(run_id, "resid_post")
    stored = np.stack(frame.sort_values(["layer", "prompt_id", "position"]).vector)  # rows as capture orders them
    assert np.array_equal(stored, host["resid_post.vector"].float().reshape(-1, model.d_model).numpy())
