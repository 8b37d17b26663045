"""The residual stream's layout read from the model: ordinary [B, T, D], several streams (hyper-connections,
AltUp) and tokens first (XLNet), and what recording, steering and ablation do with it."""

import numpy as np
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.residual import ResidualLayout


@pytest.mark.parametrize("shape, batch_axis, token_axis, residual", [
    ((1, 7, 64), 0, 1, (64,)),  # most models
    ((1, 7, 4, 64), 0, 1, (4, 64)),  # DeepSeek-V4's hyper-connections
    ((4, 1, 7, 64), 1, 2, (4, 64)),  # Gemma 3n's AltUp
    ((7, 1, 64), 1, 0, (64,)),  # XLNet
])
def test_the_layout_is_read_from_a_block_outputs_shape(shape, batch_axis, token_axis, residual):
    layout = ResidualLayout.from_shape(shape, batch=1, tokens=7)
    assert (layout.batch_axis, layout.token_axis, layout.shape) == (batch_axis, token_axis, residual)
    output = torch.randint(-5, 5, shape).float()
    view = layout.view(output)
    assert view.shape == (1, 7, *residual)
    before = output.clone()
    view[0, 3] += 1.0  # the view writes into the block output, as steering does
    added = (output - before).movedim((batch_axis, token_axis), (0, 1))
    assert torch.equal(added[0, 3], torch.ones(residual)) and added.abs().sum() == layout.width
    rows = layout.rows(output)
    assert rows.shape == (1, 7, layout.width)
    assert torch.equal(layout.unflatten(rows[0, 3]), view[0, 3])


def test_a_block_output_without_one_token_axis_is_refused():
    with pytest.raises(WorkbenchError, match=r"shape \(1, 39, 64\).*cannot be read per token"):
        ResidualLayout.from_shape((1, 39, 64), batch=1, tokens=7)  # CPM-Ant's prompt positions added
    with pytest.raises(WorkbenchError, match="no single batch and token axis"):
        ResidualLayout.from_shape((1, 7, 7, 64), batch=1, tokens=7)


@pytest.fixture(scope="module")
def hyper_connected():
    """A tiny Gemma 3n (AltUp: four residual streams of 64, [4, B, T, 64] between blocks)."""
    from workbench.models import wrap_model
    from workbench.random_models import VOCAB, tokenizer_for
    from workbench.tiny_configs import build_tiny

    hf = build_tiny("gemma3n_text", vocab_size=len(VOCAB))[0]
    return wrap_model(hf, tokenizer_for(True), "gemma3n_text")


def test_a_multi_stream_model_records_and_steers_its_whole_residual(hyper_connected, tmp_path):
    from workbench.config import RecordConfig
    from workbench.recording import record
    from workbench.steering.steer import Steer, generate_ids
    from workbench.store import Store

    model = hyper_connected
    assert model.residual.shape == (4, model.config.hidden_size) and model.d_model == 4 * model.config.hidden_size
    run = record(model, ["Hello there"], str(tmp_path / "r.duckdb"), RecordConfig(vectors=True), progress=False)
    stored = Store(str(tmp_path / "r.duckdb")).read_tensors(run, "resid_post")
    ids = torch.tensor([model.tokenizer("Hello there")["input_ids"]])
    with torch.no_grad():
        hidden = model.hf(input_ids=ids, output_hidden_states=True).hidden_states
    layer0 = np.stack(stored[stored.layer == 0].sort_values("position").vector.to_numpy())
    np.testing.assert_allclose(layer0, hidden[1][:, 0].transpose(0, 1).reshape(ids.shape[1], -1).numpy(), atol=1e-5)

    with pytest.raises(WorkbenchError, match=rf"expected \({model.d_model},\)"):
        generate_ids(model, "Hi", [Steer(1, np.ones(model.config.hidden_size), 1.0)], max_new_tokens=2)
    one_stream = np.zeros(model.d_model, dtype=np.float32)
    one_stream[: model.config.hidden_size] = 50.0  # a push on the first stream only
    plain = generate_ids(model, "Hi", max_new_tokens=4)
    steered = generate_ids(model, "Hi", [Steer(0, one_stream, 1.0)], max_new_tokens=4)
    assert steered != plain


def test_massive_ablation_writes_into_the_right_stream(hyper_connected):
    from workbench.massive.ablation import _run

    model = hyper_connected
    ids = torch.tensor([model.tokenizer("Hello")["input_ids"]])
    mask = torch.ones_like(ids)
    _, before = _run(model, ids, mask, 1)
    chosen = torch.zeros_like(before, dtype=torch.bool)
    chosen[0, 2, model.config.hidden_size + 5] = True  # stream 1, channel 5, token 2
    _, after = _run(model, ids, mask, 1, (chosen, torch.tensor([123.0])))
    assert after[chosen].item() == 123.0
    assert torch.equal(after[~chosen], before[~chosen])
