"""On a GPU, recording takes paths of its own (histogram medians, vectors copied on a side stream into pinned
memory): they must give the numbers the CPU path gives. Skipped where there is no CUDA device (CI)."""

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.recording import capture_batch
from workbench.summaries import kth_smallest

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

PROMPTS = ["A much longer prompt, padded by its partner.", "Hi.", "Three words here", "x"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_kth_smallest_on_cuda_equals_kthvalue(dtype):
    torch.manual_seed(0)
    a = (torch.randn(5, 300_001) * 30).to(dtype).abs()
    a[1, :1000] = 0.0
    a[2, 7] = torch.inf
    for k in (0, 150_000, 300_000):
        got = kth_smallest(a.cuda(), k).cpu()
        assert torch.equal(got, a.float().kthvalue(k + 1, dim=-1).values.to(dtype))


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
