"""Turning scores into the index lists `sparse_decode` takes (plain PyTorch, the same on CPU and GPU).

DELTA's engine (hoenza/DELTA, page_selector_v2.py) selects pages as follows, and `select_topk`
follows it: pages past the sequence get -inf, the last L pages get +inf so they always survive,
a small bias -1e-7 * page_index breaks ties towards earlier pages, one `topk` picks the budget, and
the chosen positions are sorted ascending. Departures that make the result well defined, so that the
fused Triton `topk.page_topk` can match it exactly: exact ties (which `topk` resolves arbitrarily)
go to the lower index, and page sums are accumulated in fp64 and rounded once, so they do not depend
on the order in which a device adds a page's tokens. Sink (initial) pages are not forced in DELTA; `sink` is
there for other top-k methods and defaults to 0. When the budget exceeds the number of positions
(K > N), every position is kept and the rest of the row is -1 padding, so the shape stays fixed
(which CUDA graphs need).
"""

from __future__ import annotations

import torch


def page_scores(scores: torch.Tensor, page_size: int) -> torch.Tensor:
    """Sum token scores [..., N] over pages of page_size tokens -> [..., ceil(N / page_size)].

    Accumulated in fp64 and rounded once to the scores' dtype: the same sums on every device.
    """
    if page_size < 1:
        raise ValueError(f"page_size: expected a positive integer, got {page_size}")
    n = scores.shape[-1]
    pages = -(-n // page_size)
    padded = torch.nn.functional.pad(scores, (0, pages * page_size - n))
    return padded.view(*scores.shape[:-1], pages, page_size).sum(dim=-1, dtype=torch.float64).to(scores.dtype)


def select_topk(
    scores: torch.Tensor, k: int, *, recent: int = 0, sink: int = 0, position_bias: float = 0.0
) -> torch.Tensor:
    """Indices of the k best positions per row, ascending, as int32 [..., k] padded with -1.

    scores [..., N] (tokens or pages). The last `recent` and first `sink` positions are always kept
    (they count against k). position_bias subtracts bias * index before ranking (DELTA uses 1e-7
    per page; note page scores are themselves small, ~1e-4 at N=32k, so the bias is not negligible).
    NaN scores rank last; of equal scores the lower index wins. On CUDA, `topk.page_topk` does
    page_scores and this in two launches.
    """
    if k < 0 or recent < 0 or sink < 0:
        raise ValueError(f"expected k, recent, sink >= 0, got k={k}, recent={recent}, sink={sink}")
    n = scores.shape[-1]
    ranked = torch.nan_to_num(scores.float(), nan=float("-inf"))
    pos = torch.arange(n, device=scores.device)
    if position_bias:
        ranked = ranked - position_bias * pos
    forced = (pos >= n - recent) | (pos < sink)
    ranked = torch.where(forced, float("inf"), ranked)
    ranked = torch.where(ranked == 0, 0.0, ranked)  # -0.0 ties with +0.0 (a radix sort would split them)
    take = min(k, n)
    order = ranked.sort(dim=-1, descending=True, stable=True).indices  # stable: ties keep index order
    chosen = order[..., :take].sort(dim=-1).values.to(torch.int32)
    pad = torch.full((*scores.shape[:-1], k - take), -1, dtype=torch.int32, device=scores.device)
    return torch.cat([chosen, pad], dim=-1)


def pages_to_tokens(pages: torch.Tensor, page_size: int, n: int) -> torch.Tensor:
    """Expand page indices [..., P] (-1 = padding) to token indices [..., P * page_size] int32.

    Tokens past the sequence end (the last page is partial) and tokens of padding pages become -1.
    """
    offsets = torch.arange(page_size, device=pages.device, dtype=torch.int32)
    tokens = pages[..., None] * page_size + offsets  # [..., P, page_size]
    tokens = torch.where((pages[..., None] >= 0) & (tokens < n), tokens, -1)
    return tokens.flatten(-2).to(torch.int32)
