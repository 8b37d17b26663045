"""DeltaNet and hybrid DeltaNet language models with flash-linear-attention's module and weight names.

A block is `attn_norm -> attn -> + -> mlp_norm -> mlp -> +`; `attn` is a DeltaNet layer, or softmax attention
on the layers `config.attn["layers"]` (fla's hybrids). Weights load from and save to fla's layout
(`model.embeddings`, `model.layers.N.attn.{q,k,v,b}_proj`, `{q,k,v}_conv1d`, `o_norm`, `o_proj`, ...), and
the maths is fla's (`fla/layers/delta_net.py`, `fla/layers/attn.py`, `fla/modules/mlp.py`), written in plain
PyTorch except for the delta rule itself, which runs `workbench_kernels.delta_rule.chunk_delta_rule` (Triton on CUDA, the
reference elsewhere) through the `DeltaRule` module, so tracing can read its inputs and output.

Departures from fla, and why: no generation cache (generation recomputes the prefix; the models here are
small); padding is handled by zeroing padded positions' projections and write strengths (exactly what
unpadding computes for the real tokens) instead of fla's varlen unpadding; with eager attention the DeltaNet
layers return their exact effective attention (`memory.effective_attention`) as attention weights, so
attention maps are recorded for every layer through one path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from workbench.deltanet import memory
from workbench.deltanet.configuration import DeltaNetConfig


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 (as fla's fused kernel is), returned in the input's dtype."""

    def __init__(self, size: int, eps: float, dtype: torch.dtype | None = None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = x.float()
        return (wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()).to(x.dtype)


class ShortConvolution(nn.Conv1d):
    """fla's causal depthwise convolution over time ([B, T, D] in and out), optionally followed by SiLU."""

    def __init__(self, size: int, kernel_size: int, bias: bool, activation: str | None):
        super().__init__(size, size, kernel_size, groups=size, padding=kernel_size - 1, bias=bias)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2)
        return F.silu(y) if self.activation == "silu" else y


def _activate(x: torch.Tensor, name: str) -> torch.Tensor:
    return {"silu": F.silu, "relu": F.relu, "elu": lambda y: F.elu(y) + 1.0, "identity": lambda y: y}[name](x)


class DeltaRule(nn.Module):
    """The delta rule as a module: inputs (q, k, v, beta) [B, T, H, *], output o [B, T, H, V].

    It holds no weights; it exists so that tracing sees the rule's inputs and output. `function` is
    `workbench_kernels.delta_rule.chunk_delta_rule` unless a training script swaps in another with the same signature (fla's
    `chunk_delta_rule`, which has a backward).
    """

    def __init__(self):
        super().__init__()
        from workbench_kernels.delta_rule import chunk_delta_rule

        self.function = chunk_delta_rule

    def forward(self, q, k, v, beta):
        return self.function(q, k, v, beta, output_final_state=False)[0]


class DeltaNetAttention(nn.Module):
    """fla's DeltaNet layer: projections, short convolutions, L2-normalised q and k, beta = sigmoid(b_proj x)."""

    def __init__(self, config: DeltaNetConfig, layer_idx: int):
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        d, h = config.hidden_size, config.num_heads
        self.key_dim, self.value_dim = int(d * config.expand_k), int(d * config.expand_v)
        self.num_heads, self.head_k_dim, self.head_v_dim = h, self.key_dim // h, self.value_dim // h
        self.q_proj = nn.Linear(d, self.key_dim, bias=False)
        self.k_proj = nn.Linear(d, self.key_dim, bias=False)
        self.v_proj = nn.Linear(d, self.value_dim, bias=False)
        if config.use_beta:
            self.b_proj = nn.Linear(d, h, bias=False)
        if config.use_short_conv:
            qk_act = "silu" if config.qk_activation == "silu" else None
            self.q_conv1d = ShortConvolution(self.key_dim, config.conv_size, False, qk_act)
            self.k_conv1d = ShortConvolution(self.key_dim, config.conv_size, False, qk_act)
            self.v_conv1d = ShortConvolution(self.value_dim, config.conv_size, False, "silu")
        if config.use_gate:
            self.g_proj = nn.Linear(d, self.value_dim, bias=False)
            self.o_norm = RMSNorm(self.head_v_dim, config.norm_eps)
        else:
            self.o_norm = RMSNorm(self.head_v_dim, config.norm_eps, dtype=torch.float32)
        self.o_proj = nn.Linear(self.value_dim, d, bias=False)
        self.rule = DeltaRule()

    def rule_inputs(self, x: torch.Tensor, attention_mask: torch.Tensor | None):
        """(q, k, v, beta) as the rule sees them: q, k [B, T, H, K] (L2-normed), v [B, T, H, V], beta [B, T, H]."""
        cfg = self.config
        keep = None if attention_mask is None else attention_mask[..., None].bool()  # [B, T, 1]
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if keep is not None:  # padded positions feed zeros to the convolutions, as if absent
            q, k, v = (y.masked_fill(~keep, 0.0) for y in (q, k, v))
        if cfg.use_short_conv:  # the convolutions apply SiLU themselves (to q and k only if qk_activation is silu)
            q, k, v = self.q_conv1d(q), self.k_conv1d(k), self.v_conv1d(v)
        else:
            v = F.silu(v)
            if cfg.qk_activation == "silu":
                q, k = F.silu(q), F.silu(k)
        q, k = (y.unflatten(-1, (self.num_heads, self.head_k_dim)) for y in (q, k))
        v = v.unflatten(-1, (self.num_heads, self.head_v_dim))
        if cfg.qk_activation != "silu":
            q, k = _activate(q, cfg.qk_activation), _activate(k, cfg.qk_activation)
        if cfg.qk_norm == "l2":
            q, k = ((y.float() * torch.rsqrt(y.float().pow(2).sum(-1, keepdim=True) + 1e-6)).to(y.dtype)
                    for y in (q, k))
        else:
            q, k = (F.normalize(y, p=1, dim=-1, eps=1e-6) for y in (q, k))
        beta = self.b_proj(x).sigmoid() if cfg.use_beta else torch.ones_like(q[..., 0])
        if cfg.allow_neg_eigval:
            beta = beta * 2.0
        if keep is not None:  # a padded position writes nothing
            beta = beta.masked_fill(~keep, 0.0)
        return q, k, v, beta

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        q, k, v, beta = self.rule_inputs(hidden_states, attention_mask)
        o = self.rule(q, k, v, beta)  # [B, T, H, V]
        if self.config.use_gate:
            gate = self.g_proj(hidden_states).unflatten(-1, (self.num_heads, self.head_v_dim))
            o = self.o_norm(o) * F.silu(gate.float()).to(o.dtype)
        else:
            o = self.o_norm(o)
        o = self.o_proj(o.flatten(-2).to(hidden_states.dtype))
        weights = None
        if self.config._attn_implementation == "eager":
            weights = memory.effective_attention(q, k, beta).to(hidden_states.dtype)
        return o, weights


def _rotate(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding on the two halves of the head dimension (fla's default, GPT-NeoX style); x [B, T, H, D]."""
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d))
    angles = positions.float()[:, None] * inv_freq  # [T, D/2]
    cos, sin = angles.cos()[:, None], angles.sin()[:, None]  # [T, 1, D/2]
    x1, x2 = x.float().chunk(2, -1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).to(x.dtype)


class SoftmaxAttention(nn.Module):
    """fla's `Attention` layer (causal, grouped-query, rotary, optional sliding window) on SDPA or eagerly."""

    def __init__(self, config: DeltaNetConfig, layer_idx: int):
        super().__init__()
        spec = config.attn
        self.config, self.layer_idx = config, layer_idx
        d = config.hidden_size
        self.num_heads, self.num_kv_heads = spec["num_heads"], spec["num_kv_heads"]
        self.head_dim = d // self.num_heads
        self.window, self.theta = spec["window_size"], spec["rope_theta"]
        self.q_proj = nn.Linear(d, d, bias=spec["qkv_bias"])
        self.k_proj = nn.Linear(d, self.num_kv_heads * self.head_dim, bias=spec["qkv_bias"])
        self.v_proj = nn.Linear(d, self.num_kv_heads * self.head_dim, bias=spec["qkv_bias"])
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        b, t, _ = hidden_states.shape
        q, k, v = (p(hidden_states).unflatten(-1, (-1, self.head_dim)) for p in (self.q_proj, self.k_proj, self.v_proj))
        positions = torch.arange(t, device=q.device)
        q, k = _rotate(q, positions, self.theta), _rotate(k, positions, self.theta)
        q, k, v = (y.transpose(1, 2) for y in (q, k, v))  # [B, H, T, D]
        groups = self.num_heads // self.num_kv_heads
        k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
        allowed = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
        if self.window is not None:
            allowed = allowed & ~torch.ones_like(allowed).tril(-self.window)
        allowed = allowed.expand(b, 1, t, t)
        if attention_mask is not None:  # a query with no visible key (a left pad) sees itself, not NaN
            allowed = (allowed & attention_mask[:, None, None, :].bool()) | torch.eye(t, dtype=torch.bool, device=q.device)
        weights = None
        if self.config._attn_implementation == "eager":
            scores = (q.float() @ k.float().transpose(-1, -2)) * self.head_dim**-0.5
            weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1).to(q.dtype)
            o = weights @ v
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.o_proj(o.transpose(1, 2).flatten(-2)), weights


class GatedMLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: DeltaNetConfig):
        super().__init__()
        d, m = config.hidden_size, config.mlp_size
        self.gate_proj, self.up_proj = nn.Linear(d, m, bias=False), nn.Linear(d, m, bias=False)
        self.down_proj = nn.Linear(m, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DeltaNetBlock(nn.Module):
    """Pre-norm block; returns the residual stream as a plain tensor (like transformers 5's decoder layers)."""

    def __init__(self, config: DeltaNetConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.attn_norm = RMSNorm(config.hidden_size, config.norm_eps)
        is_softmax = layer_idx in config.softmax_layers
        self.attn = (SoftmaxAttention if is_softmax else DeltaNetAttention)(config, layer_idx)
        self.mlp_norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.mlp = GatedMLP(config)

    def forward(self, hidden_states, attention_mask=None):
        hidden_states = hidden_states + self.attn(self.attn_norm(hidden_states), attention_mask)[0]
        return hidden_states + self.mlp(self.mlp_norm(hidden_states))


class DeltaNetPreTrainedModel(PreTrainedModel):
    config_class = DeltaNetConfig
    base_model_prefix = "model"
    _no_split_modules = ["DeltaNetBlock"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module):
        """fla's initialisation, through transformers' `initialization` helpers, which leave a weight that was
        loaded from a checkpoint as it is."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding, nn.Conv1d)):
            init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, RMSNorm):
            init.ones_(module.weight)


class DeltaNetModel(DeltaNetPreTrainedModel):
    def __init__(self, config: DeltaNetConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(DeltaNetBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, value):
        self.embeddings = value

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, **kwargs):
        hidden = self.embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # nothing padded: the cheaper path, same numbers
        for layer in self.layers:
            hidden = layer(hidden, attention_mask)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden))


class DeltaNetForCausalLM(DeltaNetPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}

    def __init__(self, config: DeltaNetConfig):
        super().__init__(config)
        self.model = DeltaNetModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embeddings

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, **kwargs):
        hidden = self.model(input_ids, attention_mask, inputs_embeds).last_hidden_state
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, inputs_embeds=None, **kwargs):
        """No cache: every step sees the whole sequence so far."""
        return {"input_ids": input_ids, "attention_mask": attention_mask}
