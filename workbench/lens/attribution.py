"""Direct logit attribution: how much the embedding and each layer's attention and MLP output push one token's
logit (or the difference between two tokens' logits) at a position, through the final norm's scale there.

The residual at the last block is the embedding plus every attention and MLP output (checked on every call:
models whose blocks add something else, such as post-norms on the branch outputs, are refused). The final norm
is linear once its scale at that position is frozen (RMSNorm: x -> g * x / rms(h); LayerNorm: x -> g * (x -
mean(x)) / std(h), its bias a term of its own), so the logit difference u . norm(h) splits exactly into one term
per component, u the difference of the two tokens' unembedding rows. The terms sum to the model's own
(pre-soft-cap) logit difference; the unembedding's bias, if any, is one more term.
"""

from __future__ import annotations

import pandas as pd
import torch

from workbench.config import RecordConfig
from workbench.errors import WorkbenchError
from workbench.lens.logit_lens import first_token_id
from workbench.models import LoadedModel
from workbench.prompts import validate_prompts
from workbench.recording import capture, tokenize

RESIDUAL_SUM = 1e-3  # embedding + outputs must give the last residual to this, relative to its size


def _frozen_norm(model: LoadedModel, h: torch.Tensor):
    """(x -> the final norm's linear part at residual h [D], the norm's constant term [D])."""
    norm = model.module("final_norm")
    out = norm(h[None])[0].float()
    h = h.float()
    bias = getattr(norm, "bias", None)
    if isinstance(norm, torch.nn.LayerNorm) or (bias is not None and bias.shape == h.shape):
        beta = bias.float() if bias is not None else torch.zeros_like(h)
        centred = h - h.mean()
        i = int(centred.abs().argmax())
        gain = norm.weight.float() if norm.weight is not None else torch.ones_like(h)
        scale = gain / ((gain[i] * centred[i]) / (out[i] - beta[i]))  # gain / std(h)
        return (lambda x: (x - x.mean(-1, keepdim=True)) * scale), beta
    ones = norm(torch.ones_like(h)[None])[0].float()  # the effective gain over rms(1) ~ 1
    i = int(h.abs().argmax())
    scale = ones * (out[i] / (ones[i] * h[i]))  # gain / rms(h), from h's largest entry
    return (lambda x: x * scale), torch.zeros_like(h)


@torch.no_grad()
def direct_logit_attribution(model: LoadedModel, prompt: str, target: str, other: str | None = None,
                             position: int = -1) -> pd.DataFrame:
    """One row per component (embed, attn and mlp of every layer, the final norm's bias and the unembedding's
    bias where the model has them) with its share of logit(target) - logit(other) at `position`, and `total`."""
    if not model.is_generative:
        raise WorkbenchError(f"{model.model_type} is an encoder: direct logit attribution reads next-token logits")
    if model.part_path("mlp", 0) is None or model.part_path("attn", 0) is None:
        raise WorkbenchError(f"{model.spec} has blocks without a separate attention and MLP output to attribute")
    (prompt,) = validate_prompts([prompt])
    ids = torch.tensor(tokenize(model, [prompt]), device=model.device)
    n = ids.shape[1]
    if not -n <= position < n:
        raise WorkbenchError(f"position {position} is outside the prompt's {n} tokens")
    position %= n
    t, o = first_token_id(model, target, "target"), (first_token_id(model, other, "other") if other is not None
                                                      else None)
    layers = list(range(model.n_layers))
    sites = capture(model, ids, torch.ones_like(ids), layers, RecordConfig(attn_out=True, mlp_out=True))
    embedding = model.hf(input_ids=ids, output_hidden_states=True).hidden_states[0][0, position].float()
    parts = [("embed", -1, embedding)] + [
        (site, layer, sites[f"{site}_out"][layer][0, position].float()) for layer in layers for site in ("attn", "mlp")]
    final = sites["resid_post"][-1][0, position].float()
    summed = torch.stack([p[2] for p in parts]).sum(0)
    if float((summed - final).norm()) > RESIDUAL_SUM * float(final.norm()):
        raise WorkbenchError(f"{model.spec}'s last residual is not its embedding plus every attention and MLP output "
                             "(its blocks add something more, such as normed branch outputs): direct logit "
                             "attribution would not add up")
    unembed = model.module("unembed")
    u = unembed.weight[t].float() - (unembed.weight[o].float() if o is not None else 0)
    linear, constant = _frozen_norm(model, sites["resid_post"][-1][0, position])
    rows = [{"component": name, "layer": layer, "attribution": float(linear(x) @ u)} for name, layer, x in parts]
    if constant.abs().max() > 0:
        rows.append({"component": "final norm bias", "layer": model.n_layers, "attribution": float(constant @ u)})
    if getattr(unembed, "bias", None) is not None:
        b = unembed.bias.float()
        rows.append({"component": "unembed bias", "layer": model.n_layers,
                     "attribution": float(b[t] - (b[o] if o is not None else 0))})
    frame = pd.DataFrame(rows)
    return frame.assign(position=position, token=model.tokenizer.convert_ids_to_tokens(ids[0].tolist())[position])


def record_attribution(model: LoadedModel, prompts: list[str], store, target: str, other: str | None = None,
                       position: int = -1) -> int:
    """`direct_logit_attribution` of every prompt, stored as one `logit-attribution` analysis; returns its id."""
    prompts = validate_prompts(prompts)
    frames = [direct_logit_attribution(model, p, target, other, position).assign(prompt_id=i)
              for i, p in enumerate(prompts)]
    rows = pd.concat(frames, ignore_index=True)
    return store.save_analysis("logit-attribution", {"prompts": prompts, "target": target, "other": other,
                                                     "position": position}, {"attribution": rows},
                               model=model.spec, summary={"total": rows.groupby("prompt_id").attribution.sum()
                                                          .round(6).tolist()})
