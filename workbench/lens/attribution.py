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
from workbench.tokens import token_texts

RESIDUAL_SUM = 1e-3  # embedding + outputs must give the last residual to this, relative to its size


OUTPUT_PROJECTIONS = ("o_proj", "out_proj", "c_proj", "dense", "wo")  # the attention's last linear map, by family


def output_projection(model: LoadedModel, layer: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor | None]:
    """The attention's output projection at `layer`: (module, W [D, H * d] with out = z @ W.T + b, bias b or None),
    where its input z holds the heads' outputs side by side. WorkbenchError where none is found."""
    attn = model.module("attn", layer)
    width = model.attention_heads(layer) * model.structure.head_dim
    for name in OUTPUT_PROJECTIONS:
        module = getattr(attn, name, None)
        weight = getattr(module, "weight", None)
        if weight is None or weight.dim() != 2:
            continue
        matrix = weight.T if hasattr(module, "nf") else weight  # GPT-2's Conv1D keeps W as [in, out]
        if matrix.shape[1] == width:
            return module, matrix, getattr(module, "bias", None)
    raise WorkbenchError(f"{type(attn).__name__} at layer {layer} has no output projection taking {width} inputs "
                         f"(one of {', '.join(OUTPUT_PROJECTIONS)}): its heads cannot be told apart")


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
                             position: int = -1, heads: bool = False) -> pd.DataFrame:
    """One row per component (embed, attn and mlp of every layer, the final norm's bias and the unembedding's
    bias where the model has them) with its share of logit(target) - logit(other) at `position`. With `heads`, each
    attention term is also split by head (component "head", column `head`; the output projection's bias as head
    -1), the heads of a layer summing to its attention term."""
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
    if heads:
        for layer, terms in enumerate(_head_outputs(model, ids, position)):
            rows += [{"component": "head", "layer": layer, "head": h, "attribution": float(linear(x) @ u)}
                     for h, x in terms]
    if constant.abs().max() > 0:
        rows.append({"component": "final norm bias", "layer": model.n_layers, "attribution": float(constant @ u)})
    if getattr(unembed, "bias", None) is not None:
        b = unembed.bias.float()
        rows.append({"component": "unembed bias", "layer": model.n_layers,
                     "attribution": float(b[t] - (b[o] if o is not None else 0))})
    frame = pd.DataFrame(rows)
    return frame.assign(position=position, token=token_texts(model.tokenizer, ids[0].tolist())[position])


def projection_inputs(model: LoadedModel, ids: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """One forward of `ids`: per layer the output projection's input z [B, T, H * d] (the heads' outputs side by
    side) and the attention's output [B, T, D]."""
    inputs, outputs = {}, {}
    hooks = []
    for layer in range(model.n_layers):
        module = output_projection(model, layer)[0]
        hooks.append(module.register_forward_pre_hook(lambda m, args, layer=layer: inputs.__setitem__(layer, args[0])))
        hooks.append(model.module("attn", layer).register_forward_hook(
            lambda m, args, out, layer=layer: outputs.__setitem__(layer, out[0] if isinstance(out, tuple) else out)))
    try:
        model.hf(input_ids=ids)
    finally:
        for hook in hooks:
            hook.remove()
    return [inputs[layer] for layer in range(model.n_layers)], [outputs[layer] for layer in range(model.n_layers)]


def _head_outputs(model: LoadedModel, ids: torch.Tensor, position: int) -> list[list[tuple[int, torch.Tensor]]]:
    """Per layer, each head's share of the attention output at `position` [(head, vector [D])], the output
    projection's bias as head -1; checked to sum to the attention's output."""
    inputs, outputs = projection_inputs(model, ids)
    result = []
    for layer in range(model.n_layers):
        _, weight, bias = output_projection(model, layer)
        n_heads, d = model.attention_heads(layer), model.structure.head_dim
        z = inputs[layer][0, position].float().view(n_heads, d)
        terms = [(h, weight[:, h * d:(h + 1) * d].float() @ z[h]) for h in range(n_heads)]
        if bias is not None:
            terms.append((-1, bias.float()))
        total, expected = torch.stack([t for _, t in terms]).sum(0), outputs[layer][0, position].float()
        if float((total - expected).norm()) > RESIDUAL_SUM * max(float(expected.norm()), 1e-6):
            raise WorkbenchError(f"layer {layer}'s attention output is not its output projection of the heads: "
                                 "its heads cannot be attributed one by one")
        result.append(terms)
    return result


def record_attribution(model: LoadedModel, prompts: list[str], store, target: str, other: str | None = None,
                       position: int = -1, heads: bool = False) -> int:
    """`direct_logit_attribution` of every prompt, stored as one `logit-attribution` analysis; returns its id."""
    prompts = validate_prompts(prompts)
    frames = [direct_logit_attribution(model, p, target, other, position, heads).assign(prompt_id=i)
              for i, p in enumerate(prompts)]
    rows = pd.concat(frames, ignore_index=True)
    totals = rows[rows.component != "head"].groupby("prompt_id").attribution.sum()
    return store.save_analysis("logit-attribution", {"prompts": prompts, "target": target, "other": other,
                                                     "position": position, "heads": heads}, {"attribution": rows},
                               model=model.spec, summary={"total": totals.round(6).tolist()})
