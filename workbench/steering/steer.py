"""Steering: add `alpha * v` to chosen blocks' outputs while the model generates, through nnsight.

The addition happens inside nnsight's per-step loop (`tracer.iter`), so it reaches
every forward pass of the generation: step 0 is the prompt (all its positions),
each later step is one generated position, or, for a model that generates without a
cache (the DeltaNet hybrids), the whole sequence so far. `positions` picks positions
by where they sit in the sequence (before or after the prompt), so both kinds of model
are steered alike. Steered and unsteered runs share the padding, the seed and the sampling
settings, so they differ only by the intervention; with alpha = 0 the output is
bit-identical.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.prompts import validate_prompts
from workbench.recording import tokenize

POSITIONS = ("all", "prompt", "generated")
EMPTY_GENERATION = "(nothing: the model ended the document at once)"  # shown for an empty continuation


@dataclass(frozen=True)
class Steer:
    """Add `alpha * vector` to the output of block `layer` (TransformerLens's blocks.L.hook_resid_post)."""

    layer: int
    vector: torch.Tensor | np.ndarray
    alpha: float


def steering_additions(model: LoadedModel, steers) -> list[tuple[int, torch.Tensor]]:
    """Validate steers against the model; return (layer, alpha * vector) on that block's device, in the model's dtype
    and the residual's own shape (several streams on hyper-connection models)."""
    checked = []
    for steer in steers:
        model.check_layer(steer.layer)
        vector = torch.as_tensor(np.asarray(steer.vector, dtype=np.float32))
        if vector.shape != (model.d_model,):
            raise WorkbenchError(f"steering vector for layer {steer.layer} has shape {tuple(vector.shape)}, "
                                 f"expected ({model.d_model},) for {model.spec}")
        if not torch.isfinite(vector).all():
            raise WorkbenchError(f"steering vector for layer {steer.layer} holds NaN or infinite values")
        if not np.isfinite(float(steer.alpha)):
            raise WorkbenchError(f"the steering strength (alpha) must be a finite number, got {steer.alpha}")
        addition = model.residual.unflatten(steer.alpha * vector)
        checked.append((steer.layer, addition.to(model.layer_device(steer.layer), model.dtype)))
    return checked


def checked_request(model: LoadedModel, prompts, steers, max_new_tokens: int, positions: str):
    """A generation request checked before anything runs: (prompts, their token ids, the steering additions)."""
    if not model.is_generative:
        raise WorkbenchError(f"{model.model_type} is an encoder: it does not generate, so it cannot be steered")
    if positions not in POSITIONS:
        raise WorkbenchError(f"positions must be one of {POSITIONS}, got {positions!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise WorkbenchError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    prompts = validate_prompts(prompts)
    ids = tokenize(model, prompts, extra=max_new_tokens)
    return prompts, ids, steering_additions(model, steers)


def generate(model: LoadedModel, prompts: list[str] | str, steers=(), *, max_new_tokens: int = 24,
             positions: str = "all", do_sample: bool = False, seed: int = 0, temperature: float = 1.0,
             top_p: float | None = None) -> list[str]:
    """Continuations of `prompts` (greedy, or sampled from `seed`) with every `Steer` applied at `positions`."""
    ids = generate_ids(model, prompts, steers, max_new_tokens=max_new_tokens, positions=positions,
                       do_sample=do_sample, seed=seed, temperature=temperature, top_p=top_p)
    return [model.tokenizer.decode(row, skip_special_tokens=True) for row in ids]


def generate_ids(model: LoadedModel, prompts: list[str] | str, steers=(), *, max_new_tokens: int = 24,
                 positions: str = "all", do_sample: bool = False, seed: int = 0, temperature: float = 1.0,
                 top_p: float | None = None) -> list[list[int]]:
    """The generated token ids (prompt excluded) of each prompt; see `generate`."""
    prompts, _, additions = checked_request(model, prompts, steers, max_new_tokens, positions)
    sampling = {"do_sample": do_sample}
    if do_sample:
        sampling |= {"temperature": temperature, "top_p": top_p}
    prompt_width = max(len(model.tokenizer(p)["input_ids"]) for p in prompts)  # nnsight left-pads to this
    torch.manual_seed(seed)
    with torch.no_grad(), model.nn.generate(max_new_tokens=max_new_tokens, pad_token_id=model.tokenizer.pad_token_id,
                                            **sampling) as tracer:
        with tracer.invoke(prompts):
            for step in tracer.iter[:max_new_tokens]:
                for layer, addition in additions:
                    hidden = model.residual_of(model.blocks()[layer].output)  # [B, n, ...]: n positions end at prompt + step
                    start = prompt_width + step - hidden.shape[1]
                    lo, hi = {"all": (0, None), "prompt": (0, max(0, prompt_width - start)),
                              "generated": (max(0, prompt_width - start), None)}[positions]
                    hidden[:, lo:hi] = hidden[:, lo:hi] + addition
        # A generation that ends early (every row at EOS) cuts the loop short and skips what follows it in the
        # same invoke, so the result is read in its own.
        with tracer.invoke(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*was never reached")  # nnsight: the loop was cut short
            result = tracer.result.save()
    return [strip_after_eos(row[prompt_width:].tolist(), model.tokenizer.eos_token_id) for row in result]


def strip_after_eos(ids: list[int], eos: int | None) -> list[int]:
    """The ids up to the first end of sequence."""
    return ids[: ids.index(eos)] if eos is not None and eos in ids else ids
