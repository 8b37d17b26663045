"""Run transformers' Gated DeltaNet layers (Qwen3-Next, Qwen3.5, OLMo hybrid) on workbench_kernels' delta rule.

The layers call fla's `chunk_gated_delta_rule` contract (q, k [B, T, Hk, K], v [B, T, Hv, V], g and beta
[B, T, Hv], the state [B, Hv, K, V] in fp32), served by flash-linear-attention where it is installed and by
transformers' PyTorch fallback elsewhere. `use_workbench_kernel` makes each such layer call ours instead, while
it runs (`gated.replace_while_running`): the Triton kernel on CUDA, its fp32 PyTorch reference elsewhere.
Kimi Delta Attention decays each key channel separately, which our kernel does not compute: its layers stay on
transformers' path.
"""

from __future__ import annotations

import torch

from workbench.deltanet.gated import gated_rule, replace_while_running
from workbench.errors import WorkbenchError
from workbench_kernels.delta_rule import chunk_delta_rule, l2norm, recurrent_delta_rule


def use_workbench_kernel(model) -> list[int]:
    """Make every Gated DeltaNet layer of `model` (a LoadedModel) run our delta rule; returns their indices.
    WorkbenchError where the model has none that our kernel computes."""
    layers, per_channel = [], []
    for layer in range(model.n_layers):
        mixer = model.module("attn", layer)
        rule = gated_rule(mixer)
        if rule is None:
            continue
        if rule.channel_decay:
            per_channel.append(layer)
            continue
        replace_while_running(mixer, rule.chunk, lambda _: chunk_gated_delta_rule)
        replace_while_running(mixer, rule.recurrent, lambda _: recurrent_gated_delta_rule)
        layers.append(layer)
    if not layers:
        why = (f"its delta layers {per_channel} decay each key channel separately (Kimi Delta Attention), which "
               "workbench_kernels' delta rule does not compute" if per_channel else "it has none")
        raise WorkbenchError(f"{model.spec} has no Gated DeltaNet layer for the workbench kernel to run: {why}; "
                             "load it with the model's own delta rule")
    return layers


def chunk_gated_delta_rule(query, key, value, g, beta, chunk_size=64, initial_state=None, output_final_state=False,
                           use_qk_l2norm_in_kernel=False, cu_seqlens=None, **kwargs):
    """fla's `chunk_gated_delta_rule` contract, computed by `workbench_kernels.delta_rule.chunk_delta_rule`."""
    q, k = _queries_and_keys(query, key, value, use_qk_l2norm_in_kernel, cu_seqlens)
    out, state = chunk_delta_rule(q, k, value, beta.to(value.dtype), g=g.float(), initial_state=initial_state,
                                  output_final_state=output_final_state, chunk_size=chunk_size)
    return out.to(query.dtype), state


def recurrent_gated_delta_rule(query, key, value, g, beta, initial_state=None, output_final_state=False,
                               use_qk_l2norm_in_kernel=False, cu_seqlens=None, **kwargs):
    """fla's `fused_recurrent_gated_delta_rule` contract (a cached decode step), computed by
    `workbench_kernels.delta_rule.recurrent_delta_rule`."""
    q, k = _queries_and_keys(query, key, value, use_qk_l2norm_in_kernel, cu_seqlens)
    out, state = recurrent_delta_rule(q, k, value, beta.to(value.dtype), g=g.float(), initial_state=initial_state,
                                      output_final_state=output_final_state)
    return out.to(query.dtype), state


def _queries_and_keys(query, key, value, normalise: bool, cu_seqlens) -> tuple[torch.Tensor, torch.Tensor]:
    """q and k as our kernel takes them: L2-normalised in fp32 where the layer asks (transformers' `l2norm`, one
    Triton pass on CUDA), in value's dtype, each of the Hk heads repeated for the Hv / Hk value heads it serves."""
    if cu_seqlens is not None:
        raise WorkbenchError("packed sequences (cu_seqlens) are not supported by the workbench delta-rule kernel; "
                             "load the model with its own delta rule")
    q, k = (l2norm(x) if normalise else x for x in (query, key))
    groups = value.shape[2] // key.shape[2]
    return (x.to(value.dtype).repeat_interleave(groups, 2) if groups > 1 else x.to(value.dtype) for x in (q, k))
