"""Long-prompt attention summaries taken from a real model's layers equal its own attention maps pooled, leave its
output as it was, and refuse what they cannot summarise."""

import pytest
import torch

import workbench as wb
from workbench.attention_summaries import attention_summaries, summarising
from workbench.config import RecordConfig
from workbench.errors import WorkbenchError
from workbench.recording import capture, tokenize

PROMPT = "Once upon a time there was a girl named Lily. She loved to play with her dog in the park every day."


def pooled(p: torch.Tensor, block: int) -> dict[str, torch.Tensor]:
    """The summaries of full maps p [H, T, T] (query rows), as `workbench_kernels.attention_tiles` defines them."""
    t = p.shape[-1]
    n = -(-t // block)
    per_query = torch.nn.functional.pad(p, (0, n * block - t)).unflatten(-1, (n, block)).sum(-1)  # [H, T, NK]
    pos = torch.arange(t)
    return {"tiles": torch.stack([per_query[:, i * block:(i + 1) * block].mean(1) for i in range(n)], dim=1),
            "sink": p[..., 0], "entropy": -(p * p.clamp_min(1e-38).log()).sum(-1),
            "distance": (p * (pos[:, None] - pos[None, :]).clamp_min(0)).sum(-1)}


def test_on_the_demo_model_the_summaries_are_its_attention_maps_pooled():
    model = wb.load_model("demo", attention=True)
    ids = torch.tensor(tokenize(model, [PROMPT]))
    maps = capture(model, ids, torch.ones_like(ids), list(range(model.n_layers)), RecordConfig(attention=True))
    summaries = attention_summaries(model, PROMPT, block=8)
    assert sorted(summaries) == list(range(model.n_layers))
    for layer, got in summaries.items():
        expected = pooled(maps["pattern"][layer][0].float(), 8)
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], atol=1e-4, rtol=1e-4, msg=f"{name} {layer}")
    with torch.no_grad(), summarising(model, [0, 5], 8):  # the model's output is its own while summarised
        logits = model.hf(input_ids=ids).logits
    assert model.hf.config._attn_implementation == "eager"  # and its attention is back afterwards
    torch.testing.assert_close(logits, model.hf(input_ids=ids).logits, atol=1e-4, rtol=1e-4)


def test_what_the_summaries_cannot_take_is_refused_and_the_model_is_left_as_it_was(tiny_dir):
    gemma = wb.load_model(str(tiny_dir("gemma2")))
    before = gemma.hf.config._attn_implementation
    with pytest.raises(WorkbenchError, match="soft-caps its scores or keeps a sliding window"):
        attention_summaries(gemma, PROMPT[:40])
    assert gemma.hf.config._attn_implementation == before
    hybrid = wb.load_model(str(tiny_dir("qwen3_next")))  # Gated DeltaNet layers between its softmax ones
    softmax = [i for i, soft in enumerate(hybrid.structure.softmax) if soft]
    delta = next(i for i, soft in enumerate(hybrid.structure.softmax) if not soft)
    with pytest.raises(WorkbenchError, match=f"layer {delta} has no softmax attention to summarise; those with it"):
        attention_summaries(hybrid, PROMPT, layers=[delta])
    assert sorted(attention_summaries(hybrid, PROMPT[:40], block=4)) == softmax
    with pytest.raises(WorkbenchError, match="does not go through transformers' attention interface, which the "
                                             "long-prompt summaries read"):
        attention_summaries(wb.load_model("demo-hybrid"), PROMPT)
