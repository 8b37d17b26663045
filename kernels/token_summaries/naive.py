"""The summaries in plain PyTorch: the CPU path of recording, and the reference of the Triton kernel.

|x|, maxima and medians are elements of the hidden state, so computing them in the model's dtype gives exactly
the float32 numbers; norms accumulate in float32. Ties go to the lowest dimension for the maximum; torch.topk
leaves the order of tied values unspecified.
"""

from __future__ import annotations

import torch


def token_summaries(x: torch.Tensor, rows: torch.Tensor, lengths: list[int], top_k: int) -> dict[str, torch.Tensor]:
    """Summaries of the `rows` [N] of `x` [L, M, D]; the N rows are prompts of `lengths` tokens, one after another.

    Per token, each [L, N]: `l2_norm`, `max_abs`, `max_dim`, `median_abs` (the lower median of |x|); `topk_dims`
    and `topk_values` (signed) [L, N, k] by |x|. Per prompt, each [L, B], over the prompt's whole hidden state:
    `prompt_median_abs`, `prompt_max_abs`, `prompt_n_nonfinite`, `prompt_first_nonfinite` (the first position
    holding one, -1 if none). NaN propagates: a token or prompt holding NaN has NaN maximum and median.
    """
    x = x[:, rows]
    if x.element_size() > 4:
        x = x.float()
    a = x.abs()
    token_max, max_dim = a.max(dim=-1)
    top_dims = a.topk(min(top_k, x.shape[-1]), dim=-1).indices
    finite = (a < torch.inf).sum(-1)  # [L, N] finite values (NaN compares false)
    medians, maxima, nonfinite, first = [], [], [], []
    start = 0
    for n in lengths:
        span = slice(start, start + n)
        start += n
        medians.append(a[:, span].flatten(1).median(dim=-1).values)
        maxima.append(token_max[:, span].amax(-1))
        bad = finite[:, span] < x.shape[-1]  # [L, n]
        nonfinite.append((x.shape[-1] - finite[:, span]).sum(-1))
        first.append(torch.where(bad.any(-1), bad.int().argmax(-1), -1))
    return {
        "l2_norm": torch.linalg.vector_norm(x, dim=-1, dtype=torch.float32),
        "max_abs": token_max.float(),
        "max_dim": max_dim,
        "median_abs": a.median(dim=-1).values.float(),
        "topk_dims": top_dims,
        "topk_values": x.gather(-1, top_dims).float(),
        "prompt_median_abs": torch.stack(medians, 1).float(),
        "prompt_max_abs": torch.stack(maxima, 1).float(),
        "prompt_n_nonfinite": torch.stack(nonfinite, 1),
        "prompt_first_nonfinite": torch.stack(first, 1),
    }
