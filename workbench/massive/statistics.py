"""Per-layer massive-activation statistics over a set of prompts, under two named poolings.

- `mean over prompts` (Gallego-Feliciano et al., arXiv 2508.03616): per prompt the top-1, top-2, top-3 and
  median |activation| of its hidden state, each averaged over the prompts, and the ratio of the averaged
  top-1 to the averaged median. Detection, the checkpoint dynamics and the Massive page report it;
  `detection.layer_table` computes it from a recording.
- `pooled` (the demo model's card and its training-time table): the largest |activation| over every prompt's
  tokens, the median |activation| over every element of every prompt, and their ratio. `pooled_statistics`
  computes it from the model's block outputs.

A metric's name says its pooling (`ratio` against `ratio_pooled`), so a figure never draws one as the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from workbench.config import POOLINGS, RecordConfig
from workbench.models import LoadedModel
from workbench.recording import capture
from workbench.tokens import token_texts

METRIC_LABELS = {metric: f"{metric.removesuffix('_pooled')} ({pooling})"
                 for pooling, metrics in POOLINGS.items() for metric in metrics}


@torch.no_grad()
def block_outputs(model: LoadedModel, text: str) -> list[torch.Tensor]:
    """The residual stream after each block for one text, [T, D] float32 per layer (`recording.capture`)."""
    ids = torch.tensor([model.tokenizer(text)["input_ids"]], device=model.device)
    hidden = capture(model, ids, torch.ones_like(ids), list(range(model.n_layers)), RecordConfig())["resid_post"]
    return [h[0].float() for h in hidden]


def pooled_statistics(model: LoadedModel, prompts: Sequence[str]) -> list[dict]:
    """Per layer, pooled over `prompts`: the largest |activation| of the block outputs (top1_pooled) with where it
    is (position in its prompt, dimension, token), the median |activation| of every element (median_pooled),
    and their ratio (ratio_pooled)."""
    states = [[h.abs().cpu() for h in block_outputs(model, p)] for p in prompts]  # [prompt][layer] -> [T, D]
    rows = []
    for layer in range(model.n_layers):
        per_prompt = [s[layer] for s in states]
        best = max(range(len(per_prompt)), key=lambda i: float(per_prompt[i].max()))
        position, dim = divmod(int(per_prompt[best].argmax()), per_prompt[best].shape[1])
        top = float(per_prompt[best].max())
        median = float(torch.cat([s.flatten() for s in per_prompt]).median())
        token = token_texts(model.tokenizer, [model.tokenizer(prompts[best])["input_ids"][position]])[0]
        rows.append({"layer": layer, "top1_pooled": top, "top_position": position, "top_dim": dim,
                     "median_pooled": median, "ratio_pooled": top / max(median, 1e-12), "top_token": token})
    return rows
