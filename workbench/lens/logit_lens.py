"""The logit lens: the residual stream after every block, read out through the model's own final norm and
unembedding, per layer and position.

Per layer and position: the top-k tokens (as text) with their probabilities, the probability and rank of a target token (by
default the prompt's own next token), the entropy, and the KL divergence from the final layer's distribution to
the lens's, KL(final || lens) as in the tuned-lens paper (Belrose et al. 2023). The read-out applies what the model
applies after its last block: the final norm, the LM head, and the logit scaling or soft-capping of the families that
have one (Cohere, Granite, Gemma 2/3). The last layer's lens is checked against the model's own logits; a family
that does more after its last block (several residual streams, a final attention over blocks) is refused.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from workbench.config import RecordConfig
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.prompts import validate_prompts
from workbench.recording import capture, tokenize
from workbench.tokens import token_texts

EXACT = 1e-3  # the last layer's lens must give the model's log-probabilities to this (fp32)
POSITION_CHUNK = 256  # positions read out at once: [chunk, vocab] logits at a time


def read_out(model: LoadedModel, hidden: torch.Tensor) -> torch.Tensor:
    """Logits [..., V] of residual vectors [..., D] as the model makes them after its last block."""
    config = model.text_config
    normed = model.module("final_norm")(hidden) if model.structure.final_norm else hidden
    logits = model.module("unembed")(normed).float()
    if (scale := getattr(config, "logit_scale", None)) is not None and not isinstance(scale, bool):
        logits = logits * scale  # Cohere
    if (divisor := getattr(config, "logits_scaling", None)) is not None:
        logits = logits / divisor  # Granite
    if (cap := getattr(config, "final_logit_softcapping", None)) is not None:
        logits = torch.tanh(logits / cap) * cap  # Gemma 2 and 3
    return logits


def check_readable(model: LoadedModel, what: str) -> None:
    """Refuse, naming `what`, a model whose residual the lens cannot read: an encoder, or several streams."""
    if not model.is_generative:
        raise WorkbenchError(f"{model.model_type} is an encoder: the {what} reads next-token predictions")
    if model.d_model != model.text_config.hidden_size:
        raise WorkbenchError(f"{model.spec} carries its residual as {model.residual.shape}: the {what} reads "
                             "one stream through the final norm, which this model does not do")


def kl_divergence(reference: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """KL(reference || logp) over the last dimension, both log-probabilities."""
    return (reference.exp() * (reference - logp)).sum(-1)


@torch.no_grad()
def logit_lens(model: LoadedModel, prompt: str, *, target: str | None = None, top_k: int = 5,
               layers: list[int] | None = None, tuned=None) -> pd.DataFrame:
    """One row per layer and position of `prompt` (see the module's docstring). `target`: a token whose
    probability and rank to follow (its first token id); None follows each position's next token of the prompt.
    `tuned`: a `TunedLens` whose translators are applied first (the tuned lens); column `lens` says which."""
    check_readable(model, "logit lens")
    if not isinstance(top_k, int) or top_k < 1:
        raise WorkbenchError(f"top_k must be a positive integer, got {top_k!r}")
    (prompt,) = validate_prompts([prompt])
    layers = sorted({model.check_layer(layer) for layer in layers}) if layers else list(range(model.n_layers))
    ids = torch.tensor(tokenize(model, [prompt]), device=model.device)  # [1, T]
    target_ids = _targets(model, ids[0], target)
    residual = capture(model, ids, torch.ones_like(ids), list(range(model.n_layers)), RecordConfig())["resid_post"]
    final = torch.log_softmax(model.hf(input_ids=ids).logits[0].float(), dim=-1)  # [T, V]
    last = torch.log_softmax(read_out(model, residual[-1][0]), dim=-1)
    if not torch.allclose(last, final, atol=EXACT * max(1.0, float(final.abs().max()))):
        raise WorkbenchError(f"{model.spec} ({model.model_type}) does more after its last block than a final norm "
                             "and its LM head: the logit lens cannot read its layers faithfully")
    tokens = token_texts(model.tokenizer, ids[0].tolist())
    frames = [_layer_rows(model, layer, tuned.translate(layer, residual[layer][0]) if tuned else residual[layer][0],
                          final, target_ids, top_k, tokens) for layer in layers]
    return pd.concat(frames, ignore_index=True).assign(lens="tuned" if tuned else "logit")


def first_token_id(model: LoadedModel, text: str, what: str) -> int:
    """The first token id of `text` (no special tokens); a clear error where it is empty or tokenizes to nothing."""
    if not text:
        raise WorkbenchError(f"{what} is empty: give a token")
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise WorkbenchError(f"{what} {text!r} tokenizes to nothing")
    return ids[0]


def _targets(model: LoadedModel, ids: torch.Tensor, target: str | None) -> torch.Tensor:
    """[T] token ids to follow: the next token of the prompt (-1 at the last position), or `target`'s first id."""
    if target is None:
        return torch.cat([ids[1:], ids.new_full((1,), -1)])
    if not target:
        raise WorkbenchError("target is empty: give a token, or leave it out to follow the prompt's next tokens")
    return ids.new_full(ids.shape, first_token_id(model, target, "target"))


def _layer_rows(model, layer, hidden, final, target_ids, top_k, tokens) -> pd.DataFrame:
    """The rows of one layer: [T, D] residual -> per position top-k, target, entropy and KL(final || lens)."""
    parts = []
    for start in range(0, hidden.shape[0], POSITION_CHUNK):
        span = slice(start, start + POSITION_CHUNK)
        logp = torch.log_softmax(read_out(model, hidden[span]), dim=-1)  # [n, V]
        probs = logp.exp()
        top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        wanted = target_ids[span]
        has = wanted >= 0
        target_logp = logp.gather(1, wanted.clamp(min=0)[:, None])[:, 0]
        rank = (logp > target_logp[:, None]).sum(-1)
        kl = kl_divergence(final[span], logp)
        parts.append({
            "top_ids": top.indices.cpu().numpy(), "top_probs": top.values.cpu().numpy(),
            "target_id": wanted.cpu().numpy(),
            "target_prob": torch.where(has, target_logp.exp(), torch.nan).cpu().numpy(),
            "target_rank": torch.where(has, rank, -1).cpu().numpy(),
            "entropy": (-(probs * logp).nan_to_num().sum(-1)).cpu().numpy(), "kl_to_final": kl.cpu().numpy()})
    merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    n = hidden.shape[0]
    return pd.DataFrame({
        "layer": layer, "position": np.arange(n), "token": tokens,
        "top_tokens": [token_texts(model.tokenizer, row.tolist()) for row in merged["top_ids"]],
        "top_ids": list(merged["top_ids"]), "top_probs": list(merged["top_probs"]),
        "target_id": merged["target_id"], "target_prob": merged["target_prob"],
        "target_rank": merged["target_rank"], "entropy": merged["entropy"], "kl_to_final": merged["kl_to_final"]})


def record_lens(model: LoadedModel, prompts: list[str], store, *, target: str | None = None, top_k: int = 5,
                layers: list[int] | None = None, tuned=None) -> int:
    """The logit lens of every prompt (and the tuned lens's beside it, given `tuned`), stored as one `logit-lens`
    analysis (table `lens`); returns its id. Everything is computed before the single write, so a bad prompt stores
    nothing."""
    prompts = validate_prompts(prompts)
    frames = [logit_lens(model, p, target=target, top_k=top_k, layers=layers, tuned=t).assign(prompt_id=i)
              for i, p in enumerate(prompts) for t in ([None, tuned] if tuned else [None])]
    rows = pd.concat(frames, ignore_index=True)
    per_layer = rows.groupby(["lens", "layer"]).kl_to_final.mean()
    summary = {"prompts": len(prompts), "mean_kl_by_layer": {
        kind: {int(layer): float(v) for layer, v in per_layer[kind].items()} for kind in per_layer.index.levels[0]}}
    config = {"prompts": prompts, "target": target, "top_k": top_k, "layers": layers,
              "tuned": tuned.meta if tuned else None}
    return store.save_analysis("logit-lens", config, {"lens": rows}, model=model.spec, summary=summary)
