"""The causal test of massive activations: set them to zero or to their mean, measure the loss.

Sun et al. (2024) overwrite the massive activations in the output of the layer where
they appear: zeroing them destroys LLaMA2-7B (perplexity to infinity) while setting
them to their mean leaves it unchanged. Here the entries to overwrite are found per
text at that layer by the detection criterion, restricted to the given dimensions;
the mean is taken over the same entries of all texts (the paper's means come from
many sequences, per token type; ours pool all flagged tokens per dimension).
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from workbench.config import MassiveConfig
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.prompts import validate_prompts
from workbench.recording import tokenize
from workbench.store import Store

MODES = ("zero", "mean")


def _batch(model: LoadedModel, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = tokenize(model, texts)
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), model.tokenizer.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, tokens in enumerate(ids):
        input_ids[row, :len(tokens)], mask[row, :len(tokens)] = torch.tensor(tokens), 1
    return input_ids.to(model.device), mask.to(model.device)


def _loss(logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean next-token cross-entropy over real positions."""
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), input_ids[:, 1:],
                                               reduction="none")
    real = mask[:, 1:].bool()
    return float(losses[real].mean())


def _run(model, input_ids, mask, layer, overwrite=None):
    """Logits and the layer's residual [B, T, D], after writing `overwrite` = (entries mask [B, T, D], values)
    into it."""
    with torch.no_grad(), model.nn.trace({"input_ids": input_ids, "attention_mask": mask}):
        hidden = model.residual_of(model.blocks()[layer].output)
        if overwrite is not None:
            hidden[overwrite[0].view(hidden.shape)] = overwrite[1]
        hidden = hidden.save()
        logits = model.nn.output.logits.save()  # after any logit scale or soft-cap
    return logits, hidden.reshape(*hidden.shape[:2], -1)


def massive_entries(hidden: torch.Tensor, mask: torch.Tensor, dims: list[int], config: MassiveConfig) -> torch.Tensor:
    """Boolean [B, T, D]: entries in `dims` that are massive against their text's median |x| at this layer."""
    chosen = torch.zeros(hidden.shape, dtype=torch.bool, device=hidden.device)
    for row in range(hidden.shape[0]):
        real = mask[row].bool()
        a = hidden[row].float().abs()
        median = a[real].median()
        flagged = config.is_massive(a, median) & real[:, None]
        chosen[row, :, dims] = flagged[:, dims]
    return chosen


def ablate(model: LoadedModel, texts: list[str], layer: int, dims: list[int], store: Store | None = None,
           config: MassiveConfig | None = None, modes: tuple[str, ...] = MODES) -> pd.DataFrame:
    """Loss and perplexity on `texts` with the massive entries of `dims` at `layer` zeroed or set to their mean.

    Returns one row per mode; with `store`, saves them as a `massive-ablation` trial.
    """
    config = config or MassiveConfig()
    if not model.is_generative:
        raise WorkbenchError(f"the ablation measures next-token loss; {model.model_type} does not generate")
    if unknown := set(modes) - set(MODES):
        raise WorkbenchError(f"unknown ablation mode(s) {sorted(unknown)}; choose from {MODES}")
    model.check_layer(layer)
    if bad := [d for d in dims if not 0 <= d < model.d_model]:
        raise WorkbenchError(f"dims {bad} are outside 0..{model.d_model - 1}")
    input_ids, mask = _batch(model, validate_prompts(texts))
    logits, hidden = _run(model, input_ids, mask, layer)
    base = _loss(logits, input_ids, mask)
    entries = massive_entries(hidden, mask, dims, config)
    if not entries.any():
        criterion = (f"> {config.ratio_threshold:g}x the median" if config.relative_only else
                     f"|a| > {config.abs_threshold:g} and > {config.ratio_threshold:g}x the median")
        raise WorkbenchError(
            f"nothing to ablate: no entry of dims {dims} at layer {layer} meets the criterion ({criterion}) in these "
            "texts, so every mode would equal the base run; relax it (the relative criterion alone, --relative-only "
            "or the app's 'Ratio only', with a lower --ratio) or pick the dims a detection found")
    means = torch.zeros(model.d_model, dtype=hidden.dtype, device=hidden.device)
    for dim in dims:
        values = hidden[..., dim][entries[..., dim]]
        means[dim] = values.mean() if values.numel() else 0
    rows = []
    for mode in modes:
        values = torch.zeros_like(hidden) if mode == "zero" else means.expand_as(hidden)
        ablated_logits, _ = _run(model, input_ids, mask, layer, (entries, values[entries]))
        loss = _loss(ablated_logits, input_ids, mask)
        rows.append({"layer": layer, "mode": mode, "n_ablated": int(entries.sum()), "n_tokens": int(mask.sum()),
                     "loss_base": base, "loss_ablated": loss, "ppl_base": math.exp(base),
                     "ppl_ablated": math.exp(min(loss, 700))})
    trials = pd.DataFrame(rows)
    if store is not None:
        store.save_analysis("massive-ablation", {**config.to_dict(), "layer": layer, "dims": dims,
                                                 "texts": len(texts)}, {"trials": trials}, model=model.spec)
    return trials
