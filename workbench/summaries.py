"""The cheap summaries a recording always keeps, computed on the model's device in the model's dtype.

Per token: L2 norm, max |x| and its dimension, median |x| (lower median), top-k dimensions by |x|. Per prompt
and layer: the exact median and max |x| of the whole hidden state and where non-finite values appear. |x|,
maxima and medians are elements of the hidden state, so computing them in bf16 or fp16 gives exactly the
float32 numbers at half the memory traffic; norms accumulate in float32.
"""

from __future__ import annotations

import torch

DIGIT = 1 << 16  # one radix-histogram pass resolves 16 bits of a value


def kth_smallest(a: torch.Tensor, k: int) -> torch.Tensor:
    """Exact k-th smallest (0-based) of each row of non-negative `a` [R, M] (float32, fp16 or bf16).

    The bit patterns of non-negative floats sort like their values, so counting them in 16-bit histograms
    finds the k-th value in one pass for 16-bit dtypes and two for float32, with no sort and no
    synchronisation. Rows holding NaN give an arbitrary value (the caller replaces it).
    """
    width = a.element_size() * 8
    bits = a.view(torch.int16 if width == 16 else torch.int32).int() & ((1 << (width - 1)) - 1)  # [R, M]
    rows = bits.shape[0]
    base = torch.arange(rows, device=a.device, dtype=torch.int32)[:, None] * DIGIT
    one = torch.ones(1, dtype=torch.int64, device=a.device)
    rank = torch.full((rows,), k, dtype=torch.int64, device=a.device)
    prefix = torch.zeros(rows, dtype=torch.int64, device=a.device)  # the digits found so far
    for shift in range(width - 16, -1, -16):
        index = base + ((bits >> shift) & (DIGIT - 1))
        if shift + 16 < width:  # count only values whose higher digits are the ones found
            index = torch.where((bits >> (shift + 16)) == prefix[:, None], index, rows * DIGIT)
        index = index.flatten()
        counts = torch.zeros(rows * DIGIT + 1, dtype=torch.int64, device=a.device)
        counts = counts.index_add_(0, index, one.expand(index.numel()))[:-1].view(rows, DIGIT)
        below = counts.cumsum(1)  # [R, DIGIT] values with this digit or a smaller one
        digit = (below <= rank[:, None]).sum(1)
        rank = rank - torch.where(digit > 0, below.gather(1, (digit - 1).clamp(min=0)[:, None])[:, 0], 0)
        prefix = prefix * DIGIT + digit
    return prefix.to(torch.int16 if width == 16 else torch.int32).view(a.dtype)


def lower_median(a: torch.Tensor) -> torch.Tensor:
    """torch.median of each row of non-negative `a` [R, M] (NaN where a row holds one).

    On CUDA torch.median gives each row to one thread block, which takes milliseconds for the million
    values of a whole hidden state; there the histogram selection of `kth_smallest` replaces it.
    """
    if not a.is_cuda:
        return a.median(dim=-1).values
    median = kth_smallest(a, (a.shape[-1] - 1) // 2)
    return torch.where(a.isnan().any(-1), torch.nan, median)


def summarize(x: torch.Tensor, lengths: list[int], top_k: int) -> dict[str, torch.Tensor]:
    """Summaries of `x` [L, N, D], whose N rows are prompts of `lengths` tokens one after another.

    Per token, each [L, N]: `l2_norm`, `max_abs`, `max_dim`, `median_abs`; `topk_dims` and `topk_values`
    [L, N, k]. Per prompt, each [L, B]: `prompt_median_abs`, `prompt_max_abs`, `prompt_n_nonfinite`,
    `prompt_first_nonfinite` (the first position holding one, -1 if none).
    """
    if x.element_size() > 4:
        x = x.float()
    a = x.abs()
    token_max, max_dim = a.max(dim=-1)  # [L, N]; the first of tied dimensions, NaN where the token holds one
    top_dims = a.topk(min(top_k, x.shape[-1]), dim=-1).indices
    finite = (a < torch.inf).sum(-1)  # [L, N] finite values (NaN compares false); twice as fast as isfinite
    medians, maxima, nonfinite, first = [], [], [], []
    start = 0
    for n in lengths:
        rows = slice(start, start + n)
        start += n
        medians.append(lower_median(a[:, rows].flatten(1)))
        maxima.append(token_max[:, rows].amax(-1))
        bad = finite[:, rows] < x.shape[-1]  # [L, n]
        nonfinite.append((x.shape[-1] - finite[:, rows]).sum(-1))
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
