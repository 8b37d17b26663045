"""Tiny random instances of structurally different architectures build and run on CPU."""

import pytest
import torch

from workbench import tiny_configs
from workbench.tiny_configs import Architecture, architectures, build_tiny, tiny_config

ARCHS = ["gpt2", "llama", "mixtral", "deepseek_v3", "phi3", "olmo2", "gemma2", "qwen3_moe", "bert", "modernbert"]


def test_architectures_list_causal_lms_and_encoder_only_masked_lms():
    archs = architectures()
    assert archs == sorted(archs, key=lambda a: (a.model_type, a.kind))
    assert Architecture("llama", "causal", "LlamaForCausalLM") in archs
    assert Architecture("modernbert", "masked", "ModernBertForMaskedLM") in archs
    assert {a.kind for a in archs if a.model_type == "bert"} == {"causal", "masked"}
    assert not any(a.model_type == "bart" and a.kind == "masked" for a in archs)  # an encoder-decoder


@pytest.mark.parametrize("model_type", ARCHS)
def test_tiny_model_builds_and_runs(model_type):
    model, _ = build_tiny(model_type)
    assert not model.training and all(p.dtype == torch.float32 for p in model.parameters())
    ids = torch.randint(3, 60, (2, 12))
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    assert out.logits.shape == (2, 12, 64)
    assert out.hidden_states[-1].shape == (2, 12, tiny_configs.HIDDEN)
    assert torch.isfinite(out.logits).all()


def test_tiny_config_sizes_and_special_tokens():
    config = tiny_config("deepseek_v3")
    assert (config.hidden_size, config.num_attention_heads, config.n_routed_experts, config.num_experts_per_tok,
            config.kv_lora_rank) == (64, 4, 4, 2, 32)
    assert config.num_hidden_layers == 2 and config.first_k_dense_replace == 1  # one dense layer, one MoE layer
    assert max(config.bos_token_id, config.eos_token_id) < 64
    assert tiny_config("llama", vocab_size=100, hidden_size=32).vocab_size == 100
    assert tiny_config("llama", hidden_size=32).hidden_size == 32


def test_seed_fixes_the_weights():
    def weights(seed):
        return torch.cat([p.flatten() for p in build_tiny("llama", seed=seed)[0].parameters()])

    assert torch.equal(weights(0), weights(0)) and not torch.equal(weights(0), weights(1))


def test_hybrid_layer_patterns_keep_every_kind():
    assert set(tiny_config("gemma3_text").layer_types) == {"sliding_attention", "full_attention"}
    config = tiny_config("qwen3_next")
    assert set(config.layer_types) == {"linear_attention", "full_attention"}
    assert config.num_hidden_layers == len(config.layer_types) <= 8


def test_unknown_architecture_fails_clearly():
    with pytest.raises(ValueError, match="neither a causal-LM"):
        build_tiny("not_a_model")
    with pytest.raises(ValueError, match="no causal LM class"):
        build_tiny("albert", kind="causal")
