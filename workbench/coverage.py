"""What each capability does on one architecture: the checks behind docs/MODELS.md and the CI coverage test.

Each check runs the capability the way a user does (the library's own functions, a real DuckDB file) on a
tiny random instance and compares it with an independent computation; the result is "ok", "n/a: why" where
the capability cannot apply (stated by the workbench's own error), or "FAIL: why".
"""

from __future__ import annotations

import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from workbench.errors import WorkbenchError
from workbench.models import LoadedModel, wrap_model
from workbench.residual import hidden_of

CAPABILITIES = ("load", "record", "parity", "transformer_lens", "attention", "massive", "directions", "steering",
                "export", "sparse")
PROMPTS = ["The cat sat on the mat.", "Hello there!"]
TOLERANCE = 1e-4


class NotApplicable(Exception):
    """The capability cannot apply to this model, for the reason given."""


def check_architecture(model_type: str, seed: int = 0) -> dict[str, str]:
    """Every capability's result on a tiny random `model_type` (see `workbench.tiny_configs`)."""
    from workbench.random_models import VOCAB, tokenizer_for
    from workbench.tiny_configs import build_tiny

    try:
        hf = build_tiny(model_type, seed=seed, vocab_size=len(VOCAB))[0]
        eager = build_tiny(model_type, seed=seed, vocab_size=len(VOCAB), attn_implementation="eager")[0]
        tokenizer = tokenizer_for(hf.can_generate())
        model = wrap_model(hf, tokenizer, model_type)
        eager_model = wrap_model(eager, tokenizer, model_type)
    except Exception as e:  # noqa: BLE001 - any failure to build is this architecture's result
        return {"load": f"FAIL: {_reason(e)}"}
    return {"load": "ok"} | check_model(model, eager_model)


def check_model(model: LoadedModel, eager_model: LoadedModel | None = None) -> dict[str, str]:
    """Every capability after loading, on `model` (and attention maps on `eager_model`, the same weights loaded
    with eager attention)."""
    with tempfile.TemporaryDirectory() as folder:
        db = str(Path(folder) / "coverage.duckdb")
        done: dict = {}

        def need(name):
            if name not in done:
                raise Missing(name)
            return done[name]
        checks: dict[str, Callable[[], None]] = {
            "record": lambda: done.update(record=_record(model, db)),
            "parity": lambda: _parity(model, db, need("record")),
            "transformer_lens": lambda: _transformer_lens(model, Path(folder) / "saved"),
            "attention": lambda: _attention(eager_model or model, db),
            "massive": lambda: _massive(db, need("record")),
            "directions": lambda: done.update(direction=_directions(model, db)),
            "steering": lambda: _steering(model),
            "export": lambda: _export(model, need("direction"), Path(folder)),
            "sparse": lambda: _sparse(model),
        }
        return {name: _outcome(check) for name, check in checks.items()}


class Missing(Exception):
    """An earlier check this one builds on failed."""


def _outcome(check: Callable[[], None]) -> str:
    try:
        check()
    except NotApplicable as e:
        return f"n/a: {e}"
    except Missing as e:
        return f"FAIL: needs {e.args[0]}"
    except Exception as e:  # noqa: BLE001 - each capability's failure is reported, the others still run
        return f"FAIL: {_reason(e)}"
    return "ok"


def _reason(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    where = traceback.extract_tb(e.__traceback__)[-1]
    return f"{type(e).__name__}: {lines[0][:200] if lines else ''} ({Path(where.filename).name}:{where.lineno})"


def _record(model: LoadedModel, db: str) -> int:
    from workbench.config import RecordConfig
    from workbench.recording import record

    def everywhere(part):
        return all(model.part_path(part, layer) is not None for layer in range(model.n_layers))
    config = RecordConfig(batch_size=2, vectors=True, attn_out=everywhere("attn"), mlp_out=everywhere("mlp"))
    return record(model, PROMPTS, db, config, progress=False)


def _parity(model: LoadedModel, db: str, run_id: int) -> None:
    """Stored resid_post equals transformers' own hidden states (each prompt run alone, no padding).

    Where a family reports the model's final output in place of the last block's (after the final norm, or
    after merging several residual streams into one), the last layer is checked after the final norm, or else
    against the last block's output taken by a plain forward hook on the prompt run alone."""
    from workbench.store import Store

    stored = Store(db).read_tensors(run_id, "resid_post")
    last_block = model.module("block", model.n_layers - 1)
    for prompt_id, prompt in enumerate(PROMPTS):
        ids = torch.tensor([model.tokenizer(prompt)["input_ids"]], device=model.device)
        block_output = []
        handle = last_block.register_forward_hook(lambda m, a, output: block_output.append(hidden_of(output)))
        try:
            with torch.no_grad():
                hidden = model.hf(input_ids=ids, output_hidden_states=True).hidden_states
        finally:
            handle.remove()
        if len(hidden) != model.n_layers + 1:
            raise AssertionError(f"transformers gives {len(hidden)} hidden states for {model.n_layers} blocks")
        rows = stored[stored.prompt_id == prompt_id]
        outputs = [torch.tensor(np.stack(rows[rows.layer == layer].sort_values("position").vector.to_numpy()))
                   for layer in range(model.n_layers)]

        def per_token(tensor):  # as recorded, where it holds the whole residual (not a merged final output)
            if tensor.numel() == ids.numel() * model.d_model:
                batch_first = tensor.shape[:2] == ids.shape  # XLNet: tokens first in blocks, not in hidden_states
                tensor = tensor.reshape(*ids.shape, -1) if batch_first else model.residual.rows(tensor)
            return tensor[0].float().cpu()
        # hidden_states start with the embeddings, except where a family starts them at block 0's output (Mamba)
        offset = 0 if _close(outputs[0], per_token(hidden[0])) else 1
        for layer, got in enumerate(outputs):
            last = layer == model.n_layers - 1 and offset
            expected = per_token(hidden[layer + offset])
            if last and not _close(got, expected) and model.structure.final_norm and got.shape == expected.shape:
                with torch.no_grad():  # the last hidden state is reported after the final norm
                    normed = model.module("final_norm")(got.to(model.device, model.dtype)).float().cpu()
                got = normed if _close(normed, expected) else got
            if last and not _close(got, expected):  # reported after the family's own final step
                expected = per_token(block_output[-1])
            if not _close(got, expected):
                diff = (got - expected).abs().max().item() if got.shape == expected.shape else got.shape
                raise AssertionError(f"layer {layer} of prompt {prompt_id}, batched with padding, differs from "
                                     f"output_hidden_states by {diff}")


def _transformer_lens(model: LoadedModel, path: Path) -> None:
    """The residual stream equals TransformerLens's TransformerBridge (`blocks.L.hook_resid_post`) wherever
    TransformerLens boots the architecture."""
    from transformer_lens.model_bridge import TransformerBridge

    from workbench.config import RecordConfig
    from workbench.recording import capture

    model.hf.save_pretrained(path)
    model.tokenizer.save_pretrained(path)
    try:
        bridge = TransformerBridge.boot_transformers(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001 - whatever TransformerLens raises, it does not take this model
        raise NotApplicable(f"TransformerLens does not boot it ({_reason(e)})") from e
    ids = torch.tensor([model.tokenizer(PROMPTS[0])["input_ids"]], device=model.device)
    layers = list(range(model.n_layers))
    ours = capture(model, ids, torch.ones_like(ids), layers, RecordConfig())["resid_post"]
    try:
        _, cache = bridge.run_with_cache(ids.cpu())
        theirs = [cache[f"blocks.{layer}.hook_resid_post"][0].float() for layer in layers]
    except Exception as e:  # noqa: BLE001 - TransformerLens booted the model but cannot run it or has no such hook
        raise NotApplicable(f"TransformerLens boots it but cannot give its residual stream ({_reason(e)})") from e
    for layer in layers:
        if not _close(ours[layer][0].float().cpu(), theirs[layer]):
            raise AssertionError(f"layer {layer} differs from TransformerLens's hook_resid_post")


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, atol=TOLERANCE, rtol=TOLERANCE)


def _attention(model: LoadedModel, db: str) -> None:
    """Attention maps of the softmax layers: each query's weights over the keys are probabilities summing to one,
    or to less where the model's attention has a sink (gpt-oss)."""
    from workbench.config import RecordConfig
    from workbench.recording import record
    from workbench.store import Store

    layers = [layer for layer, soft in enumerate(model.structure.softmax) if soft]
    if not layers:
        raise NotApplicable("no softmax attention layer")
    if not model.eager_attention:
        raise NotApplicable("no eager attention implementation")
    run_id = record(model, PROMPTS[:1], db, RecordConfig(attention=True, layers=layers), progress=False)
    maps = Store(db).read_tensors(run_id, "attention")
    sums = maps.groupby(["layer", "head", "query"]).weight.sum().to_numpy()
    sink = bool(getattr(model.text_config, "attention_sink", False)) or any(
        "sink" in name for name, _ in model.hf.named_parameters())
    if maps.empty or (maps.weight < 0).any() or (sums > 1 + 1e-3).any() or not (
            sink or np.allclose(sums, 1.0, atol=1e-3)):
        raise AssertionError(f"attention rows do not sum to one (range {sums.min():.4f}..{sums.max():.4f})")


def _massive(db: str, run_id: int) -> None:
    from workbench.config import MassiveConfig
    from workbench.massive.detection import detect
    from workbench.store import Store

    store = Store(db)
    analysis = store.analysis(detect(store, run_id, MassiveConfig(relative_only=True)))
    if "statement" not in analysis["summary"]:
        raise AssertionError("the massive-activation analysis has no summary statement")


def _directions(model: LoadedModel, db: str) -> dict[int, np.ndarray]:
    from workbench.steering.concepts import ConceptSet, Example
    from workbench.steering.directions import compute_directions, stored_directions
    from workbench.store import Store

    texts = {"positive": ["good day", "kind words", "a happy song", "warm sun"],
             "negative": ["bad day", "cruel words", "a sad song", "cold rain"]}
    train = [Example(t, label) for label, ts in texts.items() for t in ts[:3]]
    test = [Example(ts[3], label) for label, ts in texts.items()]
    concepts = ConceptSet("coverage", "positive", "negative", train=train, test=test)
    _, _, analysis_id = compute_directions(model, concepts, Store(db))
    return stored_directions(Store(db), analysis_id)


def _steering(model: LoadedModel) -> None:
    """Steering through nnsight equals the same addition made by a plain forward hook: a traced forward gives
    the hooked forward's logits, and steered greedy generation the tokens of transformers' own greedy generate
    with the hook."""
    from workbench.steering.steer import Steer, generate_ids, strip_after_eos

    if not model.is_generative:
        raise NotApplicable("an encoder does not generate")
    layer, alpha, steps = model.n_layers // 2, 8.0, 4
    vector = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([model.tokenizer(PROMPTS[0])["input_ids"]], device=model.device)
    addition = (alpha * vector).to(model.device, model.dtype)
    with torch.no_grad(), model.nn.trace(ids):
        hidden = model.residual_of(model.blocks()[layer].output)
        hidden[:] = hidden + model.residual.unflatten(addition)
        traced = model.nn.output.logits.save()

    def add(module, args, output):
        hidden = hidden_of(output).clone()
        model.residual.view(hidden)[:] += model.residual.unflatten(addition)
        return type(output)([hidden, *output[1:]]) if isinstance(output, (tuple, list)) else hidden
    handle = model.module("block", layer).register_forward_hook(add)
    try:
        with torch.no_grad():
            hooked = model.hf(input_ids=ids).logits
            greedy = model.hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps,
                                       do_sample=False, pad_token_id=model.tokenizer.pad_token_id)
    finally:
        handle.remove()
    if not torch.allclose(traced.float(), hooked.float(), atol=TOLERANCE, rtol=TOLERANCE):
        raise AssertionError("the steered trace differs from the same addition by a forward hook")
    expected = strip_after_eos(greedy[0, ids.shape[1]:].tolist(), model.tokenizer.eos_token_id)
    steered = generate_ids(model, PROMPTS[:1], [Steer(layer, vector.numpy(), alpha)], max_new_tokens=steps)[0]
    if steered != expected:
        raise AssertionError(f"steered generation gave {steered}, transformers' generate with the addition "
                             f"{expected}")


def _export(model: LoadedModel, vectors: dict[int, np.ndarray], folder: Path) -> None:
    from workbench.steering.export import export_vector, import_vector

    path = export_vector(vectors, {"model": model.spec}, folder / "direction.safetensors", "safetensors")
    back, _ = import_vector(path, expected_d_model=model.d_model, expected_n_layers=model.n_layers)
    if sorted(back) != sorted(vectors) or not all(np.allclose(back[k], vectors[k]) for k in vectors):
        raise AssertionError("the exported vectors read back different")


def _sparse(model: LoadedModel) -> None:
    """The sparse methods' dense control, run in place of the model's attention, gives the model's logits."""
    from workbench.sparse import DenseConfig, sparse_attention

    if not model.is_generative:
        raise NotApplicable("an encoder does not decode")
    ids = torch.tensor([model.tokenizer(PROMPTS[0])["input_ids"]], device=model.device)
    with torch.no_grad():
        own = model.hf(input_ids=ids).logits
    try:
        with torch.no_grad(), sparse_attention(model, DenseConfig()):
            replaced = model.hf(input_ids=ids).logits
    except WorkbenchError as e:
        raise NotApplicable(str(e)) from e
    if not torch.allclose(own.float(), replaced.float(), atol=TOLERANCE, rtol=TOLERANCE):
        raise AssertionError(f"dense control differs by {(own - replaced).abs().max().item():.2e}")
