"""Convert a Hugging Face Llama-architecture model directory (the demo model) to a GGUF file llama.cpp loads.

A small converter of our own on the `gguf` package, following llama.cpp's
convert_hf_to_gguf.py for the Llama architecture: tensor names from
`gguf.get_tensor_name_map`, Q and K rows permuted from HF's rotate-half RoPE
layout to llama.cpp's interleaved pairs, hyperparameters under `llama.*`, and a
byte-level BPE tokenizer written as `tokenizer.ggml.model = "gpt2"`. It exists so
the workbench can prove its exported control vectors against llama.cpp without
llama.cpp's own script (which is not a package and pulls in its own gguf copy).

Only what the demo model uses is supported (RMSNorm, SiLU gates, default RoPE,
no biases, a byte-level BPE tokenizer); anything else is refused by name rather
than converted wrongly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from workbench.errors import WorkbenchError
from workbench.steering.export import write_atomically

WEIGHT_TYPES = {"f32": np.float32, "f16": np.float16}

# How llama.cpp names the pre-tokenizers that match ours (src/llama-vocab.cpp):
# "gpt-2" is GPT-2's regex alone, i.e. HF's ByteLevel(use_regex=True);
# "starcoder" splits every digit first (\p{N}) and then applies GPT-2's regex,
# i.e. HF's Sequence([Digits(individual_digits=True), ByteLevel]) of the demo tokenizer.
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
_DIGITS = {"type": "Digits", "individual_digits": True}


def convert_to_gguf(model_dir: str | os.PathLike, out_path: str | os.PathLike, weights: str = "f32") -> Path:
    """Write the HF Llama model in `model_dir` as a GGUF file with `weights` ("f32" or "f16") matrices."""
    from transformers import AutoConfig, AutoTokenizer

    model_dir = Path(model_dir)
    if weights not in WEIGHT_TYPES:
        raise WorkbenchError(f"weights must be one of {', '.join(WEIGHT_TYPES)}, got {weights!r}")
    if not (model_dir / "config.json").is_file():
        raise WorkbenchError(f"{model_dir} is not a Hugging Face model directory: it has no config.json")
    config = AutoConfig.from_pretrained(model_dir)
    _check_supported(config)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tensors = _gguf_tensors(_read_weights(model_dir), config, WEIGHT_TYPES[weights])

    def write(path: Path) -> None:
        import gguf

        writer = gguf.GGUFWriter(str(path), "llama")
        writer.add_name(model_dir.name)
        file_type = gguf.LlamaFileType.ALL_F32 if weights == "f32" else gguf.LlamaFileType.MOSTLY_F16
        writer.add_file_type(file_type)
        _add_hyperparameters(writer, config)
        _add_tokenizer(writer, tokenizer, config.vocab_size)
        for name, array in tensors.items():
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    return write_atomically(Path(out_path), write)


def _check_supported(config) -> None:
    if config.model_type != "llama":
        raise WorkbenchError("cannot convert this model to GGUF: unsupported architecture "
                             f"{config.model_type!r} (only 'llama')")
    problems = []
    if config.hidden_act != "silu":
        problems.append(f"activation {config.hidden_act!r} (only 'silu')")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        problems.append("bias terms in attention or MLP")
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        problems.append(f"RoPE scaling {rope.get('rope_type')!r} (only the default RoPE)")
    if problems:
        raise WorkbenchError("cannot convert this model to GGUF: unsupported " + "; ".join(problems))


def _read_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise WorkbenchError(f"{model_dir} has no .safetensors weights; "
                             "re-save the model with save_pretrained")
    weights = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            weights.update({name: f.get_tensor(name) for name in f.keys()})  # noqa: SIM118 (not a dict)
    return weights


def permute_for_rope(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder Q/K projection rows from HF's rotate-half pairs (i, i + d/2) to llama.cpp's adjacent
    pairs (2i, 2i + 1), per head.

    The same permutation as `LlamaModel.permute` in llama.cpp's converter;
    `n_heads` is the number of heads the rows belong to (KV heads for K).
    """
    rows = weight.shape[0]
    per_head = weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:])  # [H, 2, d/2, in]
    return per_head.swapaxes(1, 2).reshape(weight.shape)  # [H, d/2, 2, in] -> rows


def _gguf_tensors(hf_weights: dict[str, torch.Tensor], config, matrix_type) -> dict[str, np.ndarray]:
    """GGUF name -> array: matrices in `matrix_type`, norms (1-D) always F32 as llama.cpp requires."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    out = {}
    for hf_name, tensor in hf_weights.items():
        if hf_name.endswith("rotary_emb.inv_freq"):  # recomputed from rope_theta by llama.cpp
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise WorkbenchError(f"cannot convert tensor {hf_name!r}: it has no llama.cpp counterpart")
        tensor = tensor.float()
        if hf_name.endswith("q_proj.weight"):
            tensor = permute_for_rope(tensor, config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            tensor = permute_for_rope(tensor, config.num_key_value_heads)
        array = tensor.numpy()
        out[name] = array.astype(matrix_type if array.ndim > 1 else np.float32)
    # With tied embeddings HF saves no lm_head and llama.cpp reuses token_embd when `output` is absent.
    if "output.weight" not in out and not config.tie_word_embeddings:
        raise WorkbenchError("the model has untied embeddings but its weights have no lm_head.weight")
    return out


def _add_hyperparameters(writer, config) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)


def llama_cpp_pre_tokenizer(pre_tokenizer: dict | None) -> str:
    """llama.cpp's name for an HF byte-level pre-tokenizer (tokenizer.json form); refuses any other."""
    if pre_tokenizer is not None and pre_tokenizer.get("type") == "Sequence":
        steps = [_subset(step, _DIGITS if step.get("type") == "Digits" else _BYTE_LEVEL)
                 for step in pre_tokenizer["pretokenizers"]]
        if steps == [_DIGITS, _BYTE_LEVEL]:
            return "starcoder"
    elif pre_tokenizer is not None and _subset(pre_tokenizer, _BYTE_LEVEL) == _BYTE_LEVEL:
        return "gpt-2"
    raise WorkbenchError(f"no llama.cpp pre-tokenizer matches {json.dumps(pre_tokenizer)}; supported: "
                         "ByteLevel (GPT-2's regex) alone or after Digits(individual_digits=True)")


def _subset(step: dict, like: dict) -> dict:
    return {key: step.get(key) for key in like}


def _add_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    """Tokens, types, merges, special ids and pre-tokenizer, as llama.cpp's BPE vocabulary reads them."""
    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec["model"]
    if model["type"] != "BPE" or spec.get("normalizer") is not None:
        raise WorkbenchError("only byte-level BPE tokenizers without a normalizer convert to GGUF; "
                             f"this one is {model['type']} with normalizer {spec.get('normalizer')}")
    by_id = {i: token for token, i in model["vocab"].items()}
    special = {t["id"]: t["special"] for t in spec["added_tokens"]}
    by_id.update({t["id"]: t["content"] for t in spec["added_tokens"]})
    if max(by_id) >= vocab_size:
        raise WorkbenchError(f"the tokenizer has id {max(by_id)} but the model's vocabulary has "
                             f"{vocab_size} rows")
    tokens, types = [], []
    for i in range(vocab_size):  # rows past the tokenizer (vocabulary rounded up) are placeholders
        tokens.append(by_id.get(i, f"[PAD{i}]"))
        types.append(gguf.TokenType.UNUSED if i not in by_id else
                     gguf.TokenType.NORMAL if i not in special else
                     gguf.TokenType.CONTROL if special[i] else gguf.TokenType.USER_DEFINED)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(llama_cpp_pre_tokenizer(spec.get("pre_tokenizer")))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model["merges"]])
    for token_id, add in ((tokenizer.bos_token_id, writer.add_bos_token_id), (tokenizer.eos_token_id,
                          writer.add_eos_token_id), (tokenizer.pad_token_id, writer.add_pad_token_id)):
        if token_id is not None:
            add(token_id)
    ids = tokenizer("a").input_ids
    writer.add_add_bos_token(tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id)
    writer.add_add_eos_token(tokenizer.eos_token_id is not None and ids[-1] == tokenizer.eos_token_id)
