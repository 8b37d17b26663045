"""Recorded residual streams and attention maps equal TransformerLens's, and what DuckDB gives back."""

import numpy as np
import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

import workbench as wb

PROMPTS = ["The cat sat on the mat.", "Hello there, world!"]


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama", "qwen2", "gemma2", "gemma3_text", "bert", "roberta"])
def test_recording_matches_transformer_lens(family, tiny_dir, db_path):
    path = tiny_dir(family)
    model = wb.load_model(str(path), attention=True)
    config = wb.RecordConfig(batch_size=2, attention=True, vectors=True)
    run_id = wb.record(model, PROMPTS, db_path, config, progress=False)
    store = wb.Store(db_path)
    vectors = store.read_tensors(run_id, "resid_post")
    attention = store.read_tensors(run_id, "attention")

    bridge = TransformerBridge.boot_transformers(str(path), device="cpu")
    for prompt_id, prompt in enumerate(PROMPTS):
        ids = torch.tensor([model.tokenizer(prompt)["input_ids"]])  # the same ids: no extra BOS
        _, cache = bridge.run_with_cache(ids)
        n = ids.shape[1]
        for layer in range(model.n_layers):
            expected = cache[f"blocks.{layer}.hook_resid_post"][0]  # [T, D]
            rows = vectors[(vectors.prompt_id == prompt_id) & (vectors.layer == layer)].sort_values("position")
            stored = torch.tensor(np.stack(rows.vector.to_numpy()))
            assert stored.shape == expected.shape
            torch.testing.assert_close(stored, expected, atol=1e-4, rtol=1e-4)

            pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0]  # [H, T, T]
            rows = attention[(attention.prompt_id == prompt_id) & (attention.layer == layer)]
            stored_pattern = torch.zeros(model.n_heads, n, n)
            index = tuple(torch.tensor(rows[c].to_numpy(), dtype=torch.long) for c in ("head", "query", "key"))
            stored_pattern[index] = torch.tensor(rows.weight.to_numpy())
            torch.testing.assert_close(stored_pattern, pattern, atol=1e-4, rtol=1e-4)
