"""The configuration of DeltaNet and hybrid DeltaNet models, in flash-linear-attention's format.

Field names and defaults are fla's (`fla.models.delta_net.DeltaNetConfig`, model_type "delta_net"), so a
checkpoint saved by fla loads here and one saved here loads in fla. `attn` names the layers that are
softmax attention instead of DeltaNet (fla's hybrid models): {"layers": [...], "num_heads": H,
"num_kv_heads": G, "window_size": W or None, "rope_theta": theta, "qkv_bias": False}. fla's fusion
switches (fuse_norm, fuse_swiglu, fuse_cross_entropy, ...) are kept for round trips and change nothing
here: they select fla kernels that compute the same maths.
"""

from __future__ import annotations

from transformers import PretrainedConfig

_ATTN_DEFAULTS = {"num_kv_heads": None, "qkv_bias": False, "window_size": None, "rope_theta": 10000.0}
QK_ACTIVATIONS = ("silu", "relu", "elu", "identity")
QK_NORMS = ("l2", "sum")


class DeltaNetConfig(PretrainedConfig):
    """fla's DeltaNet configuration; see the module docstring for the hybrid `attn` field."""

    model_type = "delta_net"
    keys_to_ignore_at_inference = ["past_key_values"]
    attribute_map = {"num_attention_heads": "num_heads"}

    def __init__(self, attn_mode="chunk", hidden_size=2048, expand_k=1.0, expand_v=1.0, use_gate=False,
                 use_short_conv=True, allow_neg_eigval=False, conv_size=4, use_beta=True, use_output_norm=True,
                 num_heads=16, qk_norm="l2", qk_activation="silu", max_position_embeddings=2048, hidden_ratio=4,
                 intermediate_size=None, hidden_act="swish", num_hidden_layers=24, norm_eps=1e-6, attn=None,
                 use_cache=True, pad_token_id=None, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
                 initializer_range=0.02, fuse_norm=True, fuse_swiglu=True, fuse_cross_entropy=True,
                 fuse_linear_cross_entropy=False, use_l2warp=False, vocab_size=32000, **kwargs):
        if qk_activation not in QK_ACTIVATIONS:
            raise ValueError(f"qk_activation must be one of {QK_ACTIVATIONS}, got {qk_activation!r}")
        if qk_norm not in QK_NORMS:
            raise ValueError(f"qk_norm must be one of {QK_NORMS}, got {qk_norm!r}")
        if hidden_act != "swish":
            raise ValueError(f"only hidden_act='swish' (SwiGLU) is supported, got {hidden_act!r}")
        if kwargs.get("attnres_block_size") is not None:
            raise ValueError("fla's attention residuals (attnres_block_size) are not supported")
        for name, dim in (("expand_k", hidden_size * expand_k), ("expand_v", hidden_size * expand_v)):
            if dim != int(dim) or int(dim) % num_heads:
                raise ValueError(f"hidden_size * {name} = {dim} must be an integer divisible by num_heads={num_heads}")
        self.attn_mode, self.hidden_size, self.expand_k, self.expand_v = attn_mode, hidden_size, expand_k, expand_v
        self.use_gate, self.use_short_conv, self.allow_neg_eigval = use_gate, use_short_conv, allow_neg_eigval
        self.conv_size, self.use_beta, self.use_output_norm = conv_size, use_beta, use_output_norm
        self.num_heads, self.qk_norm, self.qk_activation = num_heads, qk_norm, qk_activation
        self.max_position_embeddings, self.hidden_ratio = max_position_embeddings, hidden_ratio
        self.intermediate_size, self.hidden_act = intermediate_size, hidden_act
        self.num_hidden_layers, self.norm_eps, self.use_cache = num_hidden_layers, norm_eps, use_cache
        self.attn = _parse_attn(attn, num_hidden_layers, hidden_size)
        self.initializer_range, self.vocab_size = initializer_range, vocab_size
        self.fuse_norm, self.fuse_swiglu, self.fuse_cross_entropy = fuse_norm, fuse_swiglu, fuse_cross_entropy
        self.fuse_linear_cross_entropy, self.use_l2warp = fuse_linear_cross_entropy, use_l2warp
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)

    @property
    def softmax_layers(self) -> list[int]:
        """The layers that are softmax attention (the rest are DeltaNet)."""
        return list(self.attn["layers"]) if self.attn else []

    @property
    def mlp_size(self) -> int:
        """fla's GatedMLP width: `intermediate_size`, else 2/3 * hidden_ratio * hidden_size rounded up to 256."""
        if self.intermediate_size is not None:
            return self.intermediate_size
        width = int(self.hidden_size * (self.hidden_ratio or 4) * 2 / 3)
        return 256 * -(-width // 256)


def _parse_attn(attn, n_layers: int, hidden_size: int) -> dict | None:
    """fla's single-dict `attn` with its defaults filled in, or None; ValueError on a bad one."""
    if attn is None:
        return None
    if not isinstance(attn, dict) or "layers" not in attn or "num_heads" not in attn:
        raise ValueError(f"attn must be a dict with 'layers' and 'num_heads' (fla's hybrid format), got {attn!r}")
    attn = {**_ATTN_DEFAULTS, **attn}
    attn["layers"] = sorted(int(i) for i in attn["layers"])
    bad = [i for i in attn["layers"] if not 0 <= i < n_layers]
    if bad:
        raise ValueError(f"attn layers {bad} are out of range 0..{n_layers - 1}")
    attn["num_kv_heads"] = attn["num_kv_heads"] or attn["num_heads"]
    if hidden_size % attn["num_heads"] or attn["num_heads"] % attn["num_kv_heads"]:
        raise ValueError(f"attn heads must divide: hidden {hidden_size}, heads {attn['num_heads']}, "
                         f"KV heads {attn['num_kv_heads']}")
    return attn
