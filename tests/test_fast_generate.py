"""Generation on a static cache with the steering as forward hooks (the path CUDA graphs capture) gives the
eager nnsight path's tokens, steered or not, at every position mode, with left padding in the batch."""

import numpy as np
import pytest

import workbench as wb
from workbench.errors import WorkbenchError
from workbench.steering.fast_generate import fast_generate_ids
from workbench.steering.steer import POSITIONS, Steer, generate_ids

PROMPTS = ["Once upon a time", "The food was awful and the waiter was rude, so", "hi"]  # three widths: padding
N = 12


@pytest.mark.parametrize("family", ["demo", "gpt2", "qwen2"])
def test_the_static_cache_path_equals_the_eager_path_token_for_token(family, tiny_dir):
    model = wb.load_model("demo" if family == "demo" else str(tiny_dir(family)))
    vector = np.random.default_rng(0).standard_normal(model.d_model).astype(np.float32)
    steers = [Steer(model.n_layers // 2, vector, 4.0)]
    plain = generate_ids(model, PROMPTS, max_new_tokens=N)
    assert fast_generate_ids(model, PROMPTS, max_new_tokens=N) == plain
    assert max(map(len, plain)) == N  # real continuations, not an immediate end of sequence
    for positions in POSITIONS:
        steered = generate_ids(model, PROMPTS, steers, max_new_tokens=N, positions=positions)
        assert fast_generate_ids(model, PROMPTS, steers, max_new_tokens=N, positions=positions) == steered
        assert steered != plain, positions  # the addition changed something, so equality means something


def test_the_static_cache_path_refuses_what_it_cannot_do(tiny_dir):
    model = wb.load_model(str(tiny_dir("llama")))
    with pytest.raises(WorkbenchError, match="compile=True captures CUDA graphs: it needs the model on a GPU"):
        fast_generate_ids(model, PROMPTS, compile=True)
    with pytest.raises(WorkbenchError, match="positions must be"):
        fast_generate_ids(model, PROMPTS, positions="middle")
    with pytest.raises(WorkbenchError, match="finite number"):
        fast_generate_ids(model, PROMPTS, [Steer(0, np.ones(model.d_model), float("nan"))])
    with pytest.raises(WorkbenchError, match="longer than the model's context"):
        fast_generate_ids(model, PROMPTS, max_new_tokens=model.max_positions)


def test_steer_fast_prints_what_the_eager_path_prints(tiny_dir, tmp_path, capsys):
    import json

    from workbench.cli import main
    from workbench.steering.export import export_vector

    model = wb.load_model(str(tiny_dir("qwen2")))
    vector = np.random.default_rng(0).standard_normal(model.d_model).astype(np.float32)
    path = export_vector({1: vector}, {"model": model.spec}, tmp_path / "v.safetensors", "safetensors")
    args = ["steer", "--model", model.spec, "--vector", str(path), "--alpha", "4", "--prompt", *PROMPTS,
            "--max-new-tokens", str(N), "--json"]
    assert main(args) == 0
    eager = json.loads(capsys.readouterr().out)
    assert main([*args, "--fast"]) == 0
    assert json.loads(capsys.readouterr().out) == eager
    assert main([*args, "--fast", "--sample"]) == 2
    assert "--fast decodes greedily" in capsys.readouterr().err
