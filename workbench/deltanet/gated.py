"""transformers' gated delta-rule layers: which mixers they are, the rule functions their forward calls, and how
to replace a rule function for one layer's forward only.

Each of these layers calls a function of its modeling module by name (the chunked rule on a prompt, the recurrent
rule on a cached decode step), or, in transformers before 5.20, a function it keeps as an attribute of the layer;
replacing that name in the module's namespace (or that attribute) while the layer runs, and only then, changes the
rule for that layer and leaves every other model of the same family alone.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from workbench_kernels.delta_rule import naive


# Gated DeltaNet's in-kernel L2 norm (transformers' qwen3_next, qwen3_5, olmo_hybrid `l2norm`): x * rsqrt(|x|^2 + eps)
l2norm_rsqrt = naive.l2norm


def l2norm_div(x: torch.Tensor) -> torch.Tensor:
    """Kimi Delta Attention's in-kernel L2 norm (transformers' kimi_linear `l2norm`)."""
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)


@dataclass(frozen=True)
class RuleFunction:
    """Where a layer finds one of its rule functions: a name in its modeling module, or (older transformers) an
    attribute of the layer."""

    name: str
    attribute: str | None = None


@dataclass(frozen=True)
class GatedRule:
    """A mixer class's rule functions, the L2 norm they apply to q and k under use_qk_l2norm_in_kernel=True, and
    whether the decay is per key channel (KDA) rather than per head."""

    chunk: RuleFunction
    recurrent: RuleFunction
    l2norm: Callable[[torch.Tensor], torch.Tensor]
    channel_decay: bool


_GATED_DELTANET = GatedRule(RuleFunction("torch_chunk_gated_delta_rule", "chunk_gated_delta_rule"),
                            RuleFunction("torch_recurrent_gated_delta_rule", "recurrent_gated_delta_rule"),
                            l2norm_rsqrt, False)
GATED_RULES = {  # mixer class (module.qualname) -> its rule
    "transformers.models.qwen3_next.modeling_qwen3_next.Qwen3NextGatedDeltaNet": _GATED_DELTANET,
    "transformers.models.qwen3_5.modeling_qwen3_5.Qwen3_5GatedDeltaNet": _GATED_DELTANET,
    "transformers.models.olmo_hybrid.modeling_olmo_hybrid.OlmoHybridGatedDeltaNet": _GATED_DELTANET,
    "transformers.models.kimi_linear.modeling_kimi_linear.KimiLinearDeltaAttention":
        GatedRule(RuleFunction("chunk_kimi_delta_attention"), RuleFunction("recurrent_kimi_delta_attention"),
                  l2norm_div, True),
}


def gated_rule(mixer: torch.nn.Module) -> GatedRule | None:
    """`GATED_RULES`' entry for `mixer`'s class, or None."""
    return GATED_RULES.get(f"{type(mixer).__module__}.{type(mixer).__qualname__}")


def replace_while_running(mixer: torch.nn.Module, function: RuleFunction, make: Callable[[Callable], Callable]
                          ) -> list:
    """While `mixer` runs, its rule `function` is `make(f)`, f the function it replaces (which may itself be a
    replacement made by an earlier call). Returns the hook handles; removing them ends it. Replacements nest: the
    last one made is undone first, also when the forward raises."""
    if function.attribute is not None and function.attribute in vars(mixer):
        namespace, name = vars(mixer), function.attribute
    else:
        namespace, name = vars(sys.modules[type(mixer).__module__]), function.name
    saved = []

    def swap(*_):
        saved.append(namespace[name])
        namespace[name] = make(saved[-1])

    def restore(*_):
        namespace[name] = saved.pop()

    return [mixer.register_forward_pre_hook(swap),
            mixer.register_forward_hook(restore, prepend=True, always_call=True)]
