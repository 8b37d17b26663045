"""Initialise a DeltaNet hybrid from a trained Llama of the same shape (a warm start, as linearisation work does).

Everything whose shape matches is copied: embeddings, norms, MLPs, and whole attention layers where the hybrid
keeps softmax attention. A DeltaNet layer takes the Llama layer's q and o projections and its k and v
projections repeated over the query heads of each KV group (so it starts out reading what that attention
read), short convolutions that pass the current token through, and fresh write strengths (b_proj).
"""

from __future__ import annotations

import torch

from workbench.deltanet.modeling import DeltaNetAttention, DeltaNetForCausalLM


@torch.no_grad()
def init_from_llama(hybrid: DeltaNetForCausalLM, llama) -> list[str]:
    """Copy `llama`'s weights into `hybrid` in place; returns the hybrid parameters left at their own init."""
    src, cfg = llama.state_dict(), hybrid.config
    if (llama.config.hidden_size, llama.config.num_hidden_layers) != (cfg.hidden_size, cfg.num_hidden_layers):
        raise ValueError(f"shapes differ: Llama {llama.config.hidden_size} x {llama.config.num_hidden_layers} layers, "
                         f"hybrid {cfg.hidden_size} x {cfg.num_hidden_layers}")
    copied = {"model.embeddings.weight": "model.embed_tokens.weight", "model.norm.weight": "model.norm.weight"}
    if not cfg.tie_word_embeddings:
        copied["lm_head.weight"] = "lm_head.weight"
    for i in range(cfg.num_hidden_layers):
        ours, theirs = f"model.layers.{i}.", f"model.layers.{i}."
        copied |= {ours + "attn_norm.weight": theirs + "input_layernorm.weight",
                   ours + "mlp_norm.weight": theirs + "post_attention_layernorm.weight",
                   **{ours + f"mlp.{p}.weight": theirs + f"mlp.{p}.weight" for p in ("gate_proj", "up_proj", "down_proj")},
                   **{ours + f"attn.{p}.weight": theirs + f"self_attn.{p}.weight" for p in ("q_proj", "o_proj")}}
        layer = hybrid.model.layers[i].attn
        if isinstance(layer, DeltaNetAttention):
            head_dim = llama.config.hidden_size // llama.config.num_attention_heads
            groups = layer.num_heads // llama.config.num_key_value_heads
            for p in ("k_proj", "v_proj"):
                weight = src[theirs + f"self_attn.{p}.weight"].unflatten(0, (-1, head_dim))  # [G, Dh, D]
                getattr(layer, p).weight.copy_(weight.repeat_interleave(groups, 0).flatten(0, 1))
            for conv in (layer.q_conv1d, layer.k_conv1d, layer.v_conv1d):
                conv.weight.zero_()
                conv.weight[..., -1] = 1.0  # the current token only
        else:
            copied |= {ours + f"attn.{p}.weight": theirs + f"self_attn.{p}.weight" for p in ("k_proj", "v_proj")}
    params = dict(hybrid.named_parameters())
    for name, source in copied.items():
        if params[name].shape != src[source].shape:
            raise ValueError(f"{name} is {tuple(params[name].shape)} but the Llama's {source} is "
                             f"{tuple(src[source].shape)}")
        params[name].copy_(src[source])
    converted = {n for n in params if ".attn." in n and ("k_proj" in n or "v_proj" in n or "conv1d" in n)}
    return sorted(set(params) - set(copied) - converted - {"lm_head.weight"})
