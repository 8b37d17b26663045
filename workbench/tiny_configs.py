"""Small random-instance configs for every language-model architecture of the installed transformers.

A coverage sweep builds a tiny model of each architecture and runs it on CPU. Hand-written configs for ~250
architectures would rot with every transformers release, so `tiny_config` starts from the architecture's default
config and shrinks it generically: keys are recognised by name (widths, layers, heads, experts, MLA ranks, SSM and
linear-attention dims, windows, token ids), per-layer lists are cut to the shortest prefix that still holds every
kind of layer, and nested sub-configs (text, vision, audio) are shrunk the same way. `HINTS` holds the few
per-architecture fixes the generic rules cannot infer.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import torch
import transformers as T
from transformers.models.auto import modeling_auto

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN, EXPERT_FFN = 64, 4, 2, 16, 128, 32
LAYERS, POSITIONS, EXPERTS, TOP_K, WINDOW = 2, 256, 4, 2, 8
MAX_PREFIX = 8  # a per-layer pattern whose kinds first appear later than this is subsampled, not cut to a prefix

LAYER_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "decoder_layers", "encoder_layers",
              "num_decoder_layers", "num_encoder_layers", "depth", "num_blocks")
HEAD_KEYS = ("num_attention_heads", "n_head", "n_heads", "num_heads")
KV_HEAD_KEYS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "num_query_groups")
WIDTH_KEYS = ("hidden_size", "n_embd", "d_model", "dim", "emb_dim")
PROPORTIONAL = ("attention_hidden_size", "lru_width")  # widths defined as a multiple of the hidden size

# Stored key (as in `to_dict()`) -> tiny value, or a function of the default value.
SIZES = {
    **dict.fromkeys([*WIDTH_KEYS, "embedding_size", "embedding_dim", "word_embed_proj_dim", "out_hidden_size",
                     "d_latents", "hidden_size_global", "backbone_hidden_size", "projector_input_dim",
                     "projector_output_dim", "prediction_head_size", "output_embedding_size"], HIDDEN),
    **dict.fromkeys([*HEAD_KEYS, "decoder_attention_heads", "encoder_attention_heads", "attention_heads",
                     "num_encoder_attention_heads", "num_decoder_attention_heads", "swa_num_attention_heads",
                     "num_self_attention_heads", "num_cross_attention_heads"], HEADS),
    **dict.fromkeys(["head_dim", "d_head", "dim_head", "kv_channels", "attention_head_size", "attention_head_dim",
                     "swa_head_dim", "index_head_dim", "indexer_head_dim", "d_kv", "linear_head_dim",
                     "linear_key_head_dim", "linear_value_head_dim", "mamba_d_head", "mamba_head_dim",
                     "mamba_headdim"], HEAD_DIM),
    **dict.fromkeys(["intermediate_size", "ffn_dim", "decoder_ffn_dim", "encoder_ffn_dim", "n_inner", "d_inner",
                     "dff", "dim_ff", "d_ff", "feed_forward_size", "ffn_hidden_size", "hidden_dim",
                     "intermediate_size_mlp", "mlp_dim", "first_dense_intermediate_size", "dense_intermediate_size",
                     "mlp_only_intermediate_size", "prefix_dense_intermediate_size"], FFN),
    **dict.fromkeys(["moe_intermediate_size", "shared_expert_intermediate_size", "shared_experts_intermediate_size",
                     "shared_intermediate_size", "moe_shared_expert_intermediate_size", "expert_ffn_hidden_size"],
                    EXPERT_FFN),
    **dict.fromkeys(["max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "max_source_positions",
                     "max_target_positions", "context_length", "model_max_length", "num_position_embeddings"],
                    POSITIONS),
    **dict.fromkeys(["num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"], EXPERTS),
    **dict.fromkeys(["num_experts_per_tok", "moe_topk", "top_k_experts", "moe_k", "num_experts_per_token"], TOP_K),
    **dict.fromkeys(["n_shared_experts", "num_shared_experts", "moe_num_shared_experts", "first_k_dense_replace",
                     "num_dense_layers", "n_group", "topk_group", "num_expert_group", "mamba_n_groups", "n_groups",
                     "mamba_ngroups", "num_nextn_predict_layers"], lambda v: min(v, 1)),
    **dict.fromkeys(["sliding_window", "sliding_window_size", "window_size", "attention_window_size",
                     "local_attention", "local_attention_window_len", "attention_chunk_size", "keep_window_size"],
                    WINDOW),
    # multi-head latent attention (DeepSeek and its descendants) and sparse-attention indexers
    "q_lora_rank": 32, "kv_lora_rank": 32, "o_lora_rank": 32, "qk_rope_head_dim": HEAD_DIM,
    "qk_nope_head_dim": HEAD_DIM, "v_head_dim": HEAD_DIM, "qk_head_dim": 2 * HEAD_DIM,
    "index_n_heads": 2, "index_num_heads": 2, "indexer_n_heads": 2, "index_topk": 8,
    # linear attention, Mamba and other recurrent mixers
    "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_num_heads": 4, "swa_num_key_value_heads": 2,
    "mamba_n_heads": 8, "mamba_num_heads": 8, "mamba_d_ssm": 2 * HIDDEN, "mamba_d_state": 16, "state_size": 16,
    "ssm_state_size": 16, "mamba_dt_rank": 8, "time_step_rank": 8, "mamba_expand": 2, "expand": 2,
    "chunk_size": 8, "mamba_chunk_size": 8, **dict.fromkeys(["linear_conv_kernel_dim", "mamba_d_conv",
                                                             "conv_kernel"], lambda v: min(v, 4)),
    "rotary_dim": 8, "query_pre_attn_scalar": HEAD_DIM, "hidden_size_per_layer_input": lambda v: min(v, 8),
    "laurel_rank": 8,
}
# Keys set even where the default leaves them None: several default configs cannot build a model as they are.
FILL_NONE = {
    **{k: SIZES[k] for k in ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts",
                             "num_experts_per_tok", "moe_topk", "top_k_experts", "moe_k", "num_experts_per_token")},
    **dict.fromkeys(KV_HEAD_KEYS, HEADS), "head_dim": HEAD_DIM, "n_shared_experts": 1,
}
SPECIAL_IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
SUB_CONFIG = re.compile(r"_config$|^(encoder|decoder|text_encoder|audio_encoder)$")

# Per-architecture fixes, applied after shrinking; "a.b" sets key b of sub-config a. Mostly hybrids whose default
# pattern has no second kind of layer early on, and default configs that are incomplete.
HINTS: dict[str, dict] = {
    "bamba": {"attn_layer_indices": [1]},
    "blt": {"num_hidden_layers": LAYERS},  # its forward builds a cache from the top-level config
    "cohere_compass_text": {"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e4,
                                                                   "mrope_section": [4, 2, 2]}}},
    "dbrx": {"attn_config.rope_theta": 1e4, "attn_config.clip_qkv": 8.0},
    "dots3_note": {"head_dim": 2 * HEAD_DIM},  # its sliding layers' qk_nope_head_dim + qk_rope_head_dim
    "dory": {"layer_types": ["sliding_attention", "mlp", "full_attention", "mlp", "sliding_attention", "mlp"],
             "num_hidden_layers": 6, "n_input_layers": 2, "n_recurrent_layers": 2, "n_output_layers": 2},
    "esm": {"pad_token_id": 0},
    "funnel": {"block_sizes": [1, 1, 1]},
    "granitemoehybrid": {"layer_types": ["linear_attention", "full_attention"]},
    "hrm_text": {"num_layers_per_stack": None},  # recomputed from num_hidden_layers
    "jamba": {"attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2, "expert_layer_offset": 1},
    "lfm2": {"layer_types": ["conv", "full_attention"], "full_attn_idxs": [1]},
    "lfm2_moe": {"layer_types": ["conv", "full_attention"]},
    "musicgen": {"decoder.num_codebooks": 1},  # so that input_ids need no codebook axis
    "musicgen_melody": {"decoder.num_codebooks": 1},
    "mamba2": {"num_heads": 8},  # num_heads * head_dim = expand * hidden_size
    "qwen4_exp": {"indexer_n_heads": 2, "indexer_kv_heads": 1, "indexer_head_dim": HEAD_DIM, "indexer_budget": 8,
                  "indexer_compress_ratio": 4},  # its default leaves the indexer of its indexed layers unset
    "recurrent_gemma": {"num_hidden_layers": 3},  # block_types is a 3-long repeating pattern
    "reformer": {"axial_pos_embds_dim": [16, 48]},  # sums to hidden_size
    "xlstm": {"qk_dim_factor": 1.0},  # its kernels assume hidden_size * qk_dim_factor is a multiple of 64
    "xmod": {"default_language": "en_XX"},
    "zamba": {"layers_block_type": ["linear_attention", "hybrid", "hybrid"], "num_hidden_layers": 3},  # ties hybrids
    "zaya": {"num_experts_per_tok": 1},
}
HINTS["dots3_note_text"] = HINTS["dots3_note"]  # a composite config's hints go to its text config
HINTS["qwen4_exp_text"] = HINTS["qwen4_exp"]
# Constructor arguments for architectures whose default config does not validate.
DEFAULTS = {"gemma4_assistant": {"text_config": {"hidden_size_per_layer_input": 0, "vocab_size_per_layer_input": 0}}}


@dataclass(frozen=True)
class Architecture:
    """One language-model architecture: its config `model_type`, the head `kind` and the Auto mapping's class."""

    model_type: str
    kind: str  # "causal" or "masked"
    class_name: str


def architectures() -> list[Architecture]:
    """Every causal-LM architecture, plus every encoder-only masked-LM architecture, sorted."""
    archs = [Architecture(t, "causal", name) for t, name in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items()]
    for t, name in modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES.items():
        if not T.CONFIG_MAPPING[t].is_encoder_decoder:
            archs.append(Architecture(t, "masked", name))
    return sorted(archs, key=lambda a: (a.model_type, a.kind))


def tiny_config(model_type: str, vocab_size: int = 64, **overrides) -> T.PreTrainedConfig:
    """The default config of `model_type` shrunk to a model of about a hundred thousand parameters.

    `overrides` replace keys after shrinking: a top-level key, a key of the text sub-config when the top level
    lacks it, or "sub_config.key".
    """
    default = T.AutoConfig.for_model(model_type, **DEFAULTS.get(model_type, {}))
    d = _shrink(default.to_dict(), vocab_size)
    for key, value in {**HINTS.get(model_type, {}), **overrides}.items():
        if "." not in key and key not in d and isinstance(d.get("text_config"), dict):
            key = f"text_config.{key}"
        *path, last = key.split(".")
        target = d
        for part in path:
            target = target[part]
        target[last] = value
    return type(default).from_dict(d)


def build_tiny(model_type: str, seed: int = 0, kind: str | None = None, vocab_size: int = 64,
               attn_implementation: str | None = None) -> tuple[torch.nn.Module, T.PreTrainedConfig]:
    """A seeded float32 tiny model of `model_type` in eval mode, and its config.

    `kind` picks the head ("causal" or "masked"); by default an encoder-only masked-LM architecture gets its
    masked-LM head and everything else its causal-LM head. `attn_implementation` ("eager", "sdpa") is passed to
    transformers. Raises `RuntimeError` saying why the model cannot be built here (a missing package, a GPU-only
    kernel, an invalid config).
    """
    archs = {a.kind: a for a in architectures() if a.model_type == model_type}
    if not archs:
        raise ValueError(f"{model_type!r} has neither a causal-LM nor an encoder-only masked-LM class")
    kind = kind or ("masked" if "masked" in archs else "causal")
    if kind not in archs:
        raise ValueError(f"{model_type!r} has no {kind} LM class (it has {sorted(archs)})")
    auto = T.AutoModelForMaskedLM if kind == "masked" else T.AutoModelForCausalLM
    try:
        model_class = getattr(T, archs[kind].class_name)
        config = tiny_config(model_type, vocab_size)
        if kind == "causal" and hasattr(config, "is_decoder"):
            config.is_decoder = True  # encoders that also have an LM head (BERT, RoBERTa) need the causal mask
        torch.manual_seed(seed)
        kwargs = {"dtype": torch.float32}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        part = next((getattr(config, name) for name in config.sub_configs
                     if isinstance(getattr(config, name), model_class.config_class)), None)
        if part is None or isinstance(config, model_class.config_class):
            model = auto.from_config(config, **kwargs)
        else:  # the causal LM of a composite config is one of its parts (MusicGen's decoder)
            config, model = part, model_class._from_config(part, **kwargs)
    except ImportError as e:
        raise RuntimeError(f"{model_type}: needs a package that is not installed: {' '.join(str(e).split())}") from e
    except Exception as e:
        gpu = re.search(r"cuda|gpu|triton", str(e), re.IGNORECASE)
        reason = "needs a GPU" if gpu else "cannot build a tiny model"
        raise RuntimeError(f"{model_type}: {reason}: {type(e).__name__}: {e}") from e
    return model.float().eval(), config


def _shrink(d: dict, vocab_size: int, old_heads: int | None = None, outer_width: int | None = None) -> dict:
    """`d` (a config's `to_dict()`) with every size made tiny, recursing into sub-configs.

    `old_heads` is the default head count where `d` lacks one (a layer's overrides); `outer_width` the width of
    the enclosing config, which a sub-config's adapter to it shares.
    """
    old_layers = next((d[k] for k in LAYER_KEYS if isinstance(d.get(k), int)), None)
    old_heads = next((d[k] for k in HEAD_KEYS if isinstance(d.get(k), int)), old_heads)
    old_width = _width(d) or _width(d.get("text_config") or {})  # a composite config's parts adapt to its text width
    widths = {old_width, outer_width} - {None}
    keep = _layers_to_keep(d, old_layers) if old_layers else None
    out, extra_ids = {}, iter(range(vocab_size - 1, 2, -1))
    for key, value in d.items():
        if key == "per_layer_config" and value and keep is not None:  # {layer index: that layer's overrides}
            value = {keep.index(int(i)): _shrink(v, vocab_size, old_heads, old_width) for i, v in value.items()
                     if int(i) in keep}
        elif isinstance(value, dict) and SUB_CONFIG.search(key):
            value = _shrink(value, vocab_size, outer_width=old_width)
        elif key == "vocab_size" or ("vocab" in key and isinstance(value, int) and value > vocab_size):
            value = vocab_size
        elif value is None and key in FILL_NONE:
            value = FILL_NONE[key]
        elif isinstance(value, bool) or value is None:
            pass
        elif keep is not None and key in LAYER_KEYS:
            value = len(keep)
        elif key == "num_kv_shared_layers" and keep is not None:  # the last layers reuse earlier layers' K/V
            value = sum(i >= old_layers - value for i in keep)
        elif isinstance(value, list) and keep is not None and _is_layer_index_list(key, value, old_layers):
            value = [keep.index(i) for i in value if i in keep]
        elif isinstance(value, list) and keep is not None and len(value) == old_layers:
            value = [value[i] for i in keep]
            if "source" in key:  # the layer whose K/V each layer reads
                value = [max(j for j, k in enumerate(keep) if k <= v) for v in value]
            else:
                value = [_tiny(key, v, old_heads) for v in value]
        elif key.endswith(("token_id", "token_index", "token_ids")) or key in ("cls_token_id", "mask_token_id"):
            value = _token_id(key, value, vocab_size, extra_ids)
        elif key in PROPORTIONAL and old_width and isinstance(value, int):
            value = HIDDEN * value // old_width
        elif type(value) is int and value in widths and key not in SIZES and re.search("dim|size|width", key):
            value = HIDDEN  # an adapter to this config's or the enclosing config's width (adapter_in_dim)
        else:
            value = _tiny(key, value, old_heads)
        out[key] = value
    mla = [d.get(k) for k in ("head_dim", "qk_nope_head_dim", "qk_rope_head_dim")]
    if all(type(v) is int for v in mla) and mla[0] == mla[1] + mla[2]:  # MLA where head_dim is the whole q/k head
        out["head_dim"] = out["qk_nope_head_dim"] + out["qk_rope_head_dim"]
    return out


def _width(d: dict) -> int | None:
    """The hidden size of the config dict `d`, if it has one."""
    return next((d[k] for k in WIDTH_KEYS if isinstance(d.get(k), int)), None)


def _tiny(key: str, value, old_heads: int | None):
    """The tiny value of one scalar key (unchanged when the key is not a size)."""
    if not isinstance(value, int) or isinstance(value, bool):
        return value
    if key in KV_HEAD_KEYS:
        return 1 if value == 1 else HEADS if value == old_heads else KV_HEADS
    rule = SIZES.get(key)
    if rule is None:
        return value
    return rule(value) if callable(rule) else rule


def _token_id(key: str, value, vocab_size: int, extra_ids):
    """Special token ids inside the tiny vocabulary: pad/bos/eos at 0/1/2, others (image, audio...) at the top."""
    if isinstance(value, list):
        return [_token_id(key, v, vocab_size, extra_ids) for v in value]
    if not isinstance(value, int) or (key in SPECIAL_IDS and value < vocab_size):
        return value
    return SPECIAL_IDS.get(key, next(extra_ids))


def _is_layer_index_list(key: str, value: list, old_layers: int) -> bool:
    """Whether `value` lists layer indices (`mlp_only_layers`, `full_attn_idxs`) rather than one entry per layer."""
    return (bool(re.search(r"layer|idx|ids|indices", key)) and all(type(v) is int for v in value)
            and all(0 <= a < b for a, b in itertools.pairwise(value)) and all(v < old_layers for v in value))


def _layers_to_keep(d: dict, old_layers: int) -> list[int]:
    """Indices of the layers the tiny model keeps: the shortest prefix holding every kind of every per-layer list.

    A prefix keeps interval rules (`full_attention_interval`, `attn_layer_period`) consistent with the lists;
    when the prefix would be long, the first layer of each kind is kept instead. Layers that reuse another
    layer's K/V (`num_kv_shared_layers`, always the last ones) are a second segment chosen the same way.
    """
    shared = d.get("num_kv_shared_layers") or 0
    segments = [(0, old_layers - shared), (old_layers - shared, old_layers)] if 0 < shared < old_layers else [
        (0, old_layers)]
    keep = []
    for start, end in segments:
        firsts = {0}
        for key, value in d.items():
            if isinstance(value, list) and value and _is_layer_index_list(key, value, old_layers):
                value = [i in value for i in range(old_layers)]  # listed layers are one kind, the others another
            elif not isinstance(value, list) or len(value) != old_layers:
                continue
            kinds = [str(v) for v in value[start:end]]  # layer types; a few distinct ints are kinds too (RoPE on/off)
            if all(isinstance(v, (str, bool, type(None))) for v in value) or (
                    all(type(v) is int for v in value) and len(set(kinds)) <= 3):
                firsts |= {kinds.index(v) for v in set(kinds)}
        if max(firsts) < MAX_PREFIX:
            firsts = set(range(max(max(firsts) + 1, min(LAYERS, end - start))))
        keep += [start + i for i in sorted(firsts)]
    return keep
