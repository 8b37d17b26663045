"""Activation patching: which layer and position carry what makes the clean prompt's answer differ from the
corrupted prompt's.

The corrupted prompt runs with one activation replaced by its value on the clean prompt: the residual stream after
a block (`resid_post`), or a block's attention or MLP output (`attn_out`, `mlp_out`), at one layer and position; or
one attention head's output (`head`, the head's slice of the output projection's input) at every position.
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
from workbench.lens.attribution import output_projection, projection_inputs
from workbench.lens.logit_lens import first_token_id, kl_divergence
from workbench.models import LoadedModel
from workbench.prompts import validate_prompts
from workbench.recording import capture, tokenize
from workbench.residual import hidden_of
from workbench.tokens import token_texts

SITES = ("resid_post", "attn_out", "mlp_out", "head")  # "head": one attention head's output at every position
ROWS_PER_PASS = 32  # corrupted copies patched at once, one position each


def _site_module(model: LoadedModel, site: str, layer: int) -> torch.nn.Module:
    """The module whose output (its first item, for a tuple) is `site` at `layer`."""
    if site == "resid_post":
        return model.module("block", layer)
    part = site.removesuffix("_out")
    return model.module(site if model.part_path(site, layer) is not None else part, layer)


def _prepared(model: LoadedModel, clean: str, corrupt: str, answer: str, wrong: str | None, metric: str,
              sites: tuple[str, ...]):
    """The checked request: (clean ids [1, T], corrupted ids [1, T], answer id, wrong id or None)."""
    if not model.is_generative:
        raise WorkbenchError(f"{model.model_type} is an encoder: activation patching reads next-token logits")
    if metric not in PATCH_METRICS:
        raise WorkbenchError(f"metric must be one of {PATCH_METRICS}, got {metric!r}")
    if unknown := set(sites) - set(SITES):
        raise WorkbenchError(f"unknown site(s) {sorted(unknown)}: choose from {SITES}")
    if metric == "logit_diff" and wrong is None:
        raise WorkbenchError("the logit_diff metric needs a wrong token beside the answer")
    for site in sites:
        if site in ("attn_out", "mlp_out") and model.part_path(site.removesuffix("_out"), 0) is None:
            raise WorkbenchError(f"{model.spec} has no separate {site.removesuffix('_out')} to patch")
    if "head" in sites:
        output_projection(model, 0)  # refuses a model whose heads cannot be told apart
    clean, corrupt = validate_prompts([clean, corrupt])
    clean_ids, corrupt_ids = (torch.tensor([row], device=model.device) for row in tokenize(model, [clean, corrupt]))
    if clean_ids.shape != corrupt_ids.shape:
        raise WorkbenchError(f"the clean prompt has {clean_ids.shape[1]} tokens and the corrupted {corrupt_ids.shape[1]}"
                             ": patching needs the same number, so that positions correspond")
    return (clean_ids, corrupt_ids, first_token_id(model, answer, "answer"),
            first_token_id(model, wrong, "wrong") if wrong is not None else None)


def _scorer(metric: str, answer_id: int, wrong_id: int | None, clean_logits: torch.Tensor):
    """The metric of last-position logits [N, V] -> [N]; `clean_logits` [V] is the KL's reference."""
    clean_logp = torch.log_softmax(clean_logits.float(), -1)

    def score(logits):
        logp = torch.log_softmax(logits.float(), -1)
        if metric == "logit_diff":
            return logits[:, answer_id].float() - logits[:, wrong_id].float()
        if metric == "logprob":
            return logp[:, answer_id]
        return kl_divergence(clean_logp, logp)
    return score


def _grid(rows: list[dict], clean_score: float, corrupt_score: float, tokens: list[str]) -> pd.DataFrame:
    """The rows with each position's token (none for a head, patched at every position), the head (null for the
    other sites) and `restored`, the metric normalised between the two runs."""
    frame = pd.DataFrame(rows)
    span = clean_score - corrupt_score
    head = frame["head"] if "head" in frame else pd.Series([None] * len(frame))
    return frame.assign(restored=(frame.metric - corrupt_score) / span if span else float("nan"),
                        token=[tokens[p] if p >= 0 else None for p in frame.position], head=head.astype("Int16"),
                        clean_metric=clean_score, corrupt_metric=corrupt_score)


@torch.no_grad()
def activation_patching(model: LoadedModel, clean: str, corrupt: str, answer: str, wrong: str | None = None,
                        metric: str = "logit_diff", sites: tuple[str, ...] = ("resid_post",)) -> pd.DataFrame:
    """One row per site, layer and position: the metric with that activation patched in from the clean run
    (`metric`), and `restored`, the normalised metric (see the module's docstring)."""
    clean_ids, corrupt_ids, answer_id, wrong_id = _prepared(model, clean, corrupt, answer, wrong, metric, sites)
    layers = list(range(model.n_layers))
    clean_sites = capture(model, clean_ids, torch.ones_like(clean_ids), layers, RecordConfig(
        attn_out="attn_out" in sites, mlp_out="mlp_out" in sites))
    clean_logits = model.hf(input_ids=clean_ids).logits[:, -1]
    score = _scorer(metric, answer_id, wrong_id, clean_logits[0])
    clean_score = float(score(clean_logits)[0])
    corrupt_score = float(score(model.hf(input_ids=corrupt_ids).logits[:, -1])[0])
    n = clean_ids.shape[1]
    rows = []
    if "head" in sites:
        clean_z = projection_inputs(model, clean_ids)[0]
        for layer in layers:
            rows += [{"site": "head", "layer": layer, "position": -1, "head": h, "metric": m}
                     for h, m in enumerate(_patched_heads(model, layer, clean_z[layer], corrupt_ids, score))]
    for site in (s for s in sites if s != "head"):
        for layer in layers:
            value = clean_sites[site][layer]  # [1, T, ...] as recorded (a residual as flat rows)
            for start in range(0, n, ROWS_PER_PASS):
                positions = list(range(start, min(start + ROWS_PER_PASS, n)))
                patched = _patched_scores(model, site, layer, value, corrupt_ids, positions, score)
                rows += [{"site": site, "layer": layer, "position": p, "metric": m}
                         for p, m in zip(positions, patched, strict=True)]
    return _grid(rows, clean_score, corrupt_score, token_texts(model.tokenizer, corrupt_ids[0].tolist()))


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


def _patched_heads(model, layer, clean_z, corrupt_ids, score) -> list[float]:
    """The metric of copies of the corrupted prompt, copy h with head h's output at `layer` (at every position)
    taken from the clean run's output-projection input `clean_z` [1, T, H * d]."""
    n_heads, d = model.attention_heads(layer), model.structure.head_dim
    batch = corrupt_ids.expand(n_heads, -1)

    def hook(module, args):
        z = args[0].clone().unflatten(-1, (n_heads, d))  # [H copies, T, H, d]
        source = clean_z.to(z.device, z.dtype).unflatten(-1, (n_heads, d))[0]  # [T, H, d]
        heads = torch.arange(n_heads, device=z.device)
        z[heads, :, heads] = source.transpose(0, 1)  # copy h gets head h at every position
        return (z.flatten(-2), *args[1:])

    handle = output_projection(model, layer)[0].register_forward_pre_hook(hook)
    try:
        logits = model.hf(input_ids=batch).logits[:, -1]
    finally:
        handle.remove()
    return score(logits).tolist()


def attribution_patching(model: LoadedModel, clean: str, corrupt: str, answer: str, wrong: str | None = None,
                         metric: str = "logit_diff", sites: tuple[str, ...] = ("resid_post",)) -> pd.DataFrame:
    """The gradient estimate of the same grid (Nanda 2023, "attribution patching"): one forward and one backward
    pass on the corrupted prompt give, per site, layer and position, the corrupted metric plus (clean - corrupted
    activation) . d metric / d activation. Columns as `activation_patching`'s, `metric` and `restored` estimated."""
    clean_ids, corrupt_ids, answer_id, wrong_id = _prepared(model, clean, corrupt, answer, wrong, metric, sites)
    layers = list(range(model.n_layers))
    config = RecordConfig(attn_out="attn_out" in sites, mlp_out="mlp_out" in sites)
    with torch.no_grad():
        clean_sites = capture(model, clean_ids, torch.ones_like(clean_ids), layers, config)
        corrupt_sites = capture(model, corrupt_ids, torch.ones_like(corrupt_ids), layers, config)
        clean_logits = model.hf(input_ids=clean_ids).logits[:, -1]
        if "head" in sites:  # each head's output side by side: the output projection's input
            clean_sites["head"], corrupt_sites["head"] = (projection_inputs(model, ids)[0]
                                                          for ids in (clean_ids, corrupt_ids))
    score = _scorer(metric, answer_id, wrong_id, clean_logits[0])
    kept: dict[tuple[str, int], torch.Tensor] = {}

    def keep(site, layer):
        def hook(module, args, output):
            hidden = hidden_of(output)
            hidden.retain_grad()
            kept[(site, layer)] = hidden
        return hook

    def keep_heads(layer):
        def hook(module, args):
            args[0].retain_grad()
            kept[("head", layer)] = args[0]
        return hook

    def differentiable(module, args, output):  # the embeddings start the graph; the weights stay frozen
        return output.detach().requires_grad_(True)

    handles = [model.module("embed").register_forward_hook(differentiable)]
    handles += [_site_module(model, site, layer).register_forward_hook(keep(site, layer))
                for site in sites if site != "head" for layer in layers]
    if "head" in sites:
        handles += [output_projection(model, layer)[0].register_forward_pre_hook(keep_heads(layer))
                    for layer in layers]
    try:
        with torch.enable_grad():
            corrupt_score = score(model.hf(input_ids=corrupt_ids).logits[:, -1])[0]
            corrupt_score.backward()
    finally:
        for handle in handles:
            handle.remove()
    rows = []
    for (site, layer), hidden in kept.items():
        grad = model.residual.rows(hidden.grad) if site == "resid_post" else hidden.grad
        delta = (clean_sites[site][layer] - corrupt_sites[site][layer]).float()
        if site == "head":  # summed over positions and each head's d entries
            change = (delta * grad.float())[0].sum(0).unflatten(-1, (model.attention_heads(layer), -1)).sum(-1)
            rows += [{"site": site, "layer": layer, "position": -1, "head": h,
                      "metric": float(c) + float(corrupt_score.detach())} for h, c in enumerate(change.tolist())]
            continue
        estimate = (delta * grad.float()).sum(-1)[0] + float(corrupt_score.detach())  # [T]: the metric, estimated
        rows += [{"site": site, "layer": layer, "position": p, "metric": m} for p, m in enumerate(estimate.tolist())]
    return _grid(rows, float(score(clean_logits)[0]), float(corrupt_score.detach()),
                 token_texts(model.tokenizer, corrupt_ids[0].tolist()))


def record_patching(model: LoadedModel, clean: str, corrupt: str, store, answer: str, wrong: str | None = None,
                    metric: str = "logit_diff", sites: tuple[str, ...] = ("resid_post",)) -> int:
    """`activation_patching` with `attribution_patching`'s estimate beside each cell (`estimated_metric`,
    `estimated`), stored as one `activation-patching` analysis (table `patching`) whose summary gives the
    correlation between the exact and the estimated grids; returns its id."""
    rows = activation_patching(model, clean, corrupt, answer, wrong, metric, sites)
    estimate = attribution_patching(model, clean, corrupt, answer, wrong, metric, sites)
    rows = rows.merge(estimate[["site", "layer", "position", "head", "metric", "restored"]].rename(
        columns={"metric": "estimated_metric", "restored": "estimated"}), on=["site", "layer", "position", "head"])
    best = rows.loc[rows.restored.idxmax()] if rows.restored.notna().any() else None
    summary = {"clean_metric": float(rows.clean_metric[0]), "corrupt_metric": float(rows.corrupt_metric[0]),
               "correlation": {site: _correlation(per_site) for site, per_site in rows.groupby("site")},
               "most_restoring": None if best is None else {"site": best.site, "layer": int(best.layer),
                                                             "position": int(best.position),
                                                             "restored": float(best.restored)}}
    return store.save_analysis("activation-patching", {"clean": clean, "corrupt": corrupt, "answer": answer,
                                                       "wrong": wrong, "metric": metric, "sites": list(sites)},
                               {"patching": rows.drop(columns=["clean_metric", "corrupt_metric"])},
                               model=model.spec, summary=summary)


def _correlation(rows: pd.DataFrame) -> float | None:
    """Pearson correlation of the exact and estimated metrics over a site's grid (None where either is constant)."""
    if rows.metric.std() == 0 or rows.estimated_metric.std() == 0:
        return None
    return float(rows.metric.corr(rows.estimated_metric))
