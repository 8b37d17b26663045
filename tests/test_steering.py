"""Steering through nnsight equals a hand-written forward hook, at every generated token and chosen positions."""

import json

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.errors import WorkbenchError
from workbench.steering.steer import Steer, generate, generate_ids

PROMPTS = ["hello there", "a cat"]
N = 8


@pytest.fixture(scope="module")
def model(tiny_dir):
    return wb.load_model(str(tiny_dir("llama")))


def _hooked(model, prompt, steers, when):
    """Greedy ids with forward hooks adding alpha * v to block outputs; `when(seq_len)` picks the passes."""
    def hook_for(addition):
        return lambda module, inputs, output: output + addition if when(output.shape[1]) else output

    hooks = [model.module("block", s.layer).register_forward_hook(hook_for(s.alpha * torch.as_tensor(s.vector)))
             for s in steers]
    try:
        ids = model.tokenizer([prompt], return_tensors="pt")
        out = model.hf.generate(**ids, max_new_tokens=N, do_sample=False)
    finally:
        for h in hooks:
            h.remove()
    return out[0, ids["input_ids"].shape[1]:].tolist()


@pytest.mark.parametrize("positions, when", [
    ("all", lambda n: True),
    ("prompt", lambda n: n > 1),       # only the prefill pass carries prompt positions
    ("generated", lambda n: n == 1),   # every later pass is one generated position
])
def test_steering_equals_a_forward_hook_at_every_step(model, positions, when):
    torch.manual_seed(0)
    steers = [Steer(1, torch.randn(model.d_model), 3.0), Steer(2, torch.randn(model.d_model), -2.0)]
    got = generate_ids(model, PROMPTS[:1], steers, max_new_tokens=N, positions=positions)[0]
    assert got == _hooked(model, PROMPTS[0], steers, when)
    assert got != _hooked(model, PROMPTS[0], [], lambda n: True)  # the vectors do change the continuation


def test_alpha_zero_is_bit_identical_and_batching_keeps_each_prompt(model):
    vector = torch.randn(model.d_model)
    plain = generate_ids(model, PROMPTS, max_new_tokens=N)
    assert generate_ids(model, PROMPTS, [Steer(1, vector, 0.0)], max_new_tokens=N) == plain
    assert [generate_ids(model, [p], max_new_tokens=N)[0] for p in PROMPTS] == plain


def test_seeded_sampling_differs_only_by_the_intervention(model):
    a = generate(model, PROMPTS, max_new_tokens=N, do_sample=True, seed=7)
    assert generate(model, PROMPTS, max_new_tokens=N, do_sample=True, seed=7) == a
    steered = generate(model, PROMPTS, [Steer(1, np.ones(model.d_model, np.float32), 4.0)], max_new_tokens=N,
                       do_sample=True, seed=7)
    assert steered != a


@pytest.mark.parametrize("steer, message", [
    (Steer(1, np.ones(5), 1.0), "expected \\(32,\\)"),
    (Steer(1, np.full(32, np.nan), 1.0), "NaN or infinite"),
    (Steer(9, np.ones(32), 1.0), "out of range"),
    (Steer(1, np.ones(32), float("nan")), "alpha\\) must be a finite number, got nan"),
    (Steer(1, np.ones(32), float("-inf")), "must be a finite number, got -inf"),
])
def test_bad_vectors_are_refused(model, steer, message):
    with pytest.raises(WorkbenchError, match=message):
        generate(model, PROMPTS, [steer])


def test_bad_arguments_and_encoders(model, tiny_dir):
    with pytest.raises(WorkbenchError, match="positions must be"):
        generate(model, PROMPTS, positions="middle")
    with pytest.raises(WorkbenchError, match="prompt 0 is empty"):
        generate(model, [""])
    with pytest.raises(WorkbenchError, match=r"prompt 0 is \d+ tokens and \d+ generated, longer than the model's context"):
        generate(model, ["hi"], max_new_tokens=model.max_positions)
    with pytest.raises(WorkbenchError, match="does not generate"):
        generate(wb.load_model(str(tiny_dir("bert"))), PROMPTS)


def test_direction_and_steer_commands(tiny_dir, db_path, tmp_path, capsys):
    from workbench.cli import main

    rows = [{"text": f"case {i}: it was {w}", "label": lab} for i in range(6)
            for w, lab in (("nice", "positive"), ("awful", "negative"))]
    concepts = tmp_path / "mood.jsonl"
    concepts.write_text("\n".join(json.dumps(r) for r in rows))
    model = str(tiny_dir("llama"))
    assert main(["direction", "--model", model, "--concepts", str(concepts), "--db", str(db_path), "--json"]) == 0
    direction = json.loads(capsys.readouterr().out)
    assert len(direction["layers"]) == 3 and direction["layers"][0]["n_heldout"] == 4
    assert main(["steer", "--model", model, "--direction", str(direction["analysis_id"]), "--alpha", "8",
                 "--prompt", "it was", "--db", str(db_path), "--json", "--max-new-tokens", "6"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["steered"] != row["unsteered"]
    assert main(["steer", "--model", model, "--direction", str(direction["analysis_id"]), "--alpha", "1",
                 "--layers", "7", "--prompt", "x", "--db", str(db_path)]) == 2
    assert "layer 7 is out of range" in capsys.readouterr().err
    assert main(["steer", "--model", model, "--direction", str(direction["analysis_id"]), "--alpha", "nan",
                 "--prompt", "x", "--db", str(db_path)]) == 2
    assert "--alpha must be a finite number, got nan" in capsys.readouterr().err
    assert main(["steer", "--model", model, "--direction", str(direction["analysis_id"]), "--alpha", "8",
                 "--prompt", "it was", "--db", str(db_path), "--max-new-tokens", "6"]) == 0
    best = direction["layers"][max(range(3), key=lambda i: direction["layers"][i]["auroc"])]["layer"]
    assert f"steering layer(s) [{best}] at alpha 8" in capsys.readouterr().out  # the direction's best layer

    vector = tmp_path / "mood.safetensors"
    assert main(["export-vector", str(direction["analysis_id"]), "--format", "safetensors", "--layers", "1,2",
                 "--out", str(vector), "--db", str(db_path)]) == 0
    capsys.readouterr()
    from workbench.steering.export import import_vector

    meta = import_vector(vector)[1]
    assert (meta["site"], meta["normalized"], meta["layers"], meta["model"]) == ("resid_post", False, [1, 2], model)
    gguf = tmp_path / "mood.gguf"  # every layer llama.cpp can take: block 0 is left out, and the user told why
    assert main(["export-vector", str(direction["analysis_id"]), "--format", "gguf", "--out", str(gguf),
                 "--db", str(db_path)]) == 0
    assert "layer 0 left out" in capsys.readouterr().err and sorted(import_vector(gguf)[0]) == [1, 2]

    def steered(*layers):
        args = ["--layers", ",".join(map(str, layers))] if layers else []
        assert main(["steer", "--model", model, "--vector", str(vector), "--alpha", "2", "--prompt", "it was",
                     "--json", "--max-new-tokens", "6", *args]) == 0
        return json.loads(capsys.readouterr().out)[0]["steered"]

    assert steered() == steered(1, 2) != steered(2)  # a vector file applies every layer it holds, as llama.cpp does


def test_a_bad_step_list_is_a_usage_error_not_a_traceback(capsys):
    from workbench.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["massive-dynamics", "--model", "demo", "--checkpoints", "a", "--prompts", "p", "--steps", "a"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --steps: expected comma-separated integers, got 'a'" in err and "Traceback" not in err


def test_mean_perplexity_is_the_geometric_mean_of_the_continuations(model):
    from workbench.steering.evaluation import continuation_perplexity, mean_perplexity

    prompts, continuations = ["hello there", "a cat"], [" is it", "zzzzzz"]
    each = [continuation_perplexity(model, p, c) for p, c in zip(prompts, continuations)]
    assert mean_perplexity(model, prompts, continuations) == pytest.approx(float(np.sqrt(each[0] * each[1])))


def test_a_generation_that_ends_early_still_returns(model):
    eos = model.tokenizer.eos_token_id
    towards_eos = model.module("unembed").weight[eos].detach() * 50  # every row emits EOS at the first step
    ids = generate_ids(model, PROMPTS, [Steer(model.n_layers - 1, towards_eos, 1.0)], max_new_tokens=N)
    assert ids == [[], []]
    assert generate_ids(model, PROMPTS, max_new_tokens=N) != ids


def test_the_cli_says_when_a_steered_generation_is_empty(model, tmp_path, capsys):
    from workbench.cli import main
    from workbench.steering.export import export_vector
    from workbench.steering.steer import EMPTY_GENERATION

    towards_eos = model.module("unembed").weight[model.tokenizer.eos_token_id].detach().numpy() * 50
    path = export_vector({model.n_layers - 1: towards_eos}, {"model": model.spec}, tmp_path / "eos.safetensors",
                         "safetensors")
    assert main(["steer", "--model", model.spec, "--vector", str(path), "--alpha", "1", "--prompt", PROMPTS[0],
                 "--max-new-tokens", str(N)]) == 0
    assert f"steered:   {EMPTY_GENERATION}" in capsys.readouterr().out


def test_a_stopped_sweep_keeps_the_settings_it_finished(model, db_path):
    """Each setting is stored as it finishes: a sweep cancelled after its third step keeps two settings and says
    it is partial; a finished one replaces that summary by its best setting."""
    from workbench.errors import Cancelled
    from workbench.steering.evaluation import sweep

    store = wb.Store(db_path)
    seen = []

    def stop_at_third(done, total):
        seen.append((done, total))
        if done == 3:
            raise Cancelled

    vector = {1: np.ones(32, dtype=np.float32)}
    with pytest.raises(Cancelled):
        sweep(model, vector, PROMPTS, [1.0, 2.0, 4.0], ["x"], store, max_new_tokens=3, progress=stop_at_third)
    assert seen == [(1, 4), (2, 4), (3, 4)]
    (stopped,) = store.analyses("steering-sweep").itertuples()
    assert json.loads(stopped.summary) == {"status": "partial", "done": 3, "total": 4}
    assert store.steering_sweep(stopped.analysis_id).alpha.tolist() == [1.0, 2.0]
    table = sweep(model, vector, PROMPTS, [1.0], ["x"], store, max_new_tokens=3)
    finished = store.analyses("steering-sweep").iloc[0]
    assert "status" not in json.loads(finished.summary) and len(store.steering_sweep(finished.analysis_id)) == len(table)
    with pytest.raises(WorkbenchError, match="finite number, got inf"):
        sweep(model, vector, PROMPTS, [float("inf")], ["x"], store)


def test_the_sweep_script_fails_in_one_line_on_bad_arguments(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "analyses" / "steering_sweep.py"
    for args, message in [(["--n-prompts", "0"], "error: --n-prompts must be at least 1"),
                          (["--position", "marked"], "argument --position: invalid choice: 'marked'")]:
        out = subprocess.run([sys.executable, script, *args, "--db", tmp_path / "s.duckdb"], capture_output=True,
                             text=True)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
