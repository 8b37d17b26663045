"""Activation patching: which layer and position carry what makes the clean prompt's answer differ from the
corrupted prompt's.

The corrupted prompt runs with one activation replaced by its value on the clean prompt: the residual stream after
a block (`resid_post`), or a block's attention or MLP output (`attn_out`, `mlp_out`), at one layer and position.
A metric at the last position says how much of the clean behaviour comes back: the logit difference between the
answer and a wrong token, the answer's log-probability, or the KL divergence from the clean distribution (lower is
closer). Each cell keeps the raw metric and the normalised one, (patched - corrupted) / (clean - corrupted): 1 is
fully restored, 0 is the corrupted run. The prompts must have the same number of tokens, so positions correspond.
"""

from __future__ import annotations

import pandas as pd
import torch

from workbench.config import PATCH_METRICS, RecordConfig
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.prompts import validate_prompts
from workbench.recording import capture, tokenize
from workbench.residual import hidden_of

SITES = ("resid_post", "attn_out", "mlp_out")
ROWS_PER_PASS = 32  # corrupted copies patched at once, one position each


def _answer_id(model: LoadedModel, text: str, what: str) -> int:
    if not text:
        raise WorkbenchError(f"{what} is empty: give a token")
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise WorkbenchError(f"{what} {text!r} tokenizes to nothing")
    return ids[0]


def _site_module(model: LoadedModel, site: str, layer: int) -> torch.nn.Module:
    """The module whose output (its first item, for a tuple) is `site` at `layer`."""
    if site == "resid_post":
        return model.module("block", layer)
    part = site.removesuffix("_out")
    return model.module(site if model.part_path(site, layer) is not None else part, layer)


@torch.no_grad()
def activation_patching(model: LoadedModel, clean: str, corrupt: str, answer: str, wrong: str | None = None,
                        metric: str = "logit_diff", sites: tuple[str, ...] = ("resid_post",)) -> pd.DataFrame:
    """One row per site, layer and position: the metric with that activation patched in from the clean run
    (`metric`), and `restored`, the normalised metric (see the module's docstring)."""
    if not model.is_generative:
        raise WorkbenchError(f"{model.model_type} is an encoder: activation patching reads next-token logits")
    if metric not in PATCH_METRICS:
        raise WorkbenchError(f"metric must be one of {PATCH_METRICS}, got {metric!r}")
    if unknown := set(sites) - set(SITES):
        raise WorkbenchError(f"unknown site(s) {sorted(unknown)}: choose from {SITES}")
    if metric == "logit_diff" and wrong is None:
        raise WorkbenchError("the logit_diff metric needs a wrong token beside the answer")
    clean, corrupt = validate_prompts([clean, corrupt])
    clean_ids, corrupt_ids = (torch.tensor([row], device=model.device) for row in tokenize(model, [clean, corrupt]))
    if clean_ids.shape != corrupt_ids.shape:
        raise WorkbenchError(f"the clean prompt has {clean_ids.shape[1]} tokens and the corrupted {corrupt_ids.shape[1]}"
                             ": patching needs the same number, so that positions correspond")
    answer_id = _answer_id(model, answer, "answer")
    wrong_id = _answer_id(model, wrong, "wrong") if wrong is not None else None
    layers = list(range(model.n_layers))
    for site in sites:
        if site != "resid_post" and model.part_path(site.removesuffix("_out"), 0) is None:
            raise WorkbenchError(f"{model.spec} has no separate {site.removesuffix('_out')} to patch")
    clean_sites = capture(model, clean_ids, torch.ones_like(clean_ids), layers, RecordConfig(
        attn_out="attn_out" in sites, mlp_out="mlp_out" in sites))
    clean_logp = torch.log_softmax(model.hf(input_ids=clean_ids).logits[0, -1].float(), -1)

    def score(logits):  # [N, V] at the last position -> [N]
        logp = torch.log_softmax(logits.float(), -1)
        if metric == "logit_diff":
            return logits[:, answer_id].float() - logits[:, wrong_id].float()
        if metric == "logprob":
            return logp[:, answer_id]
        return (clean_logp.exp() * (clean_logp - logp)).sum(-1)

    clean_score = float(score(model.hf(input_ids=clean_ids).logits[:, -1]))
    corrupt_score = float(score(model.hf(input_ids=corrupt_ids).logits[:, -1]))
    n = clean_ids.shape[1]
    rows = []
    for site in sites:
        for layer in layers:
            value = clean_sites[site][layer]  # [1, T, ...] as recorded (a residual as flat rows)
            for start in range(0, n, ROWS_PER_PASS):
                positions = list(range(start, min(start + ROWS_PER_PASS, n)))
                patched = _patched_scores(model, site, layer, value, corrupt_ids, positions, score)
                rows += [{"site": site, "layer": layer, "position": p, "metric": m}
                         for p, m in zip(positions, patched, strict=True)]
    frame = pd.DataFrame(rows)
    span = clean_score - corrupt_score
    tokens = model.tokenizer.convert_ids_to_tokens(corrupt_ids[0].tolist())
    return frame.assign(
        restored=(frame.metric - corrupt_score) / span if span else float("nan"),
        token=[tokens[p] for p in frame.position], clean_metric=clean_score, corrupt_metric=corrupt_score)


def _patched_scores(model, site, layer, value, corrupt_ids, positions, score) -> list[float]:
    """The metric of copies of the corrupted prompt, copy i with `site` at `layer` and positions[i] taken from
    `value` (the clean run's)."""
    batch = corrupt_ids.expand(len(positions), -1)
    rows = torch.arange(len(positions), device=corrupt_ids.device)
    where = torch.tensor(positions, device=corrupt_ids.device)

    def hook(module, args, output):
        hidden = hidden_of(output).clone()
        target = model.residual.view(hidden) if site == "resid_post" else hidden
        source = value.to(hidden.device, hidden.dtype).reshape(1, value.shape[1], *target.shape[2:])
        target[rows, where] = source[0, where]
        return type(output)([hidden, *output[1:]]) if isinstance(output, (tuple, list)) else hidden

    handle = _site_module(model, site, layer).register_forward_hook(hook)
    try:
        logits = model.hf(input_ids=batch).logits[:, -1]
    finally:
        handle.remove()
    return score(logits).tolist()


def record_patching(model: LoadedModel, clean: str, corrupt: str, store, answer: str, wrong: str | None = None,
                    metric: str = "logit_diff", sites: tuple[str, ...] = ("resid_post",)) -> int:
    """`activation_patching` stored as one `activation-patching` analysis (table `patching`); returns its id."""
    rows = activation_patching(model, clean, corrupt, answer, wrong, metric, sites)
    best = rows.loc[rows.restored.idxmax()] if rows.restored.notna().any() else None
    summary = {"clean_metric": float(rows.clean_metric[0]), "corrupt_metric": float(rows.corrupt_metric[0]),
               "most_restoring": None if best is None else {"site": best.site, "layer": int(best.layer),
                                                             "position": int(best.position),
                                                             "restored": float(best.restored)}}
    return store.save_analysis("activation-patching", {"clean": clean, "corrupt": corrupt, "answer": answer,
                                                       "wrong": wrong, "metric": metric, "sites": list(sites)},
                               {"patching": rows.drop(columns=["clean_metric", "corrupt_metric"])},
                               model=model.spec, summary=summary)
