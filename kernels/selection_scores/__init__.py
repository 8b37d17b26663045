"""DELTA's selection-layer scores: attention probabilities aggregated over heads, and top-k on them."""

from __future__ import annotations

import torch

from workbench_kernels.dispatch import use_triton
from workbench_kernels.selection_scores.select import page_scores, pages_to_tokens, select_topk

__all__ = ["page_scores", "page_topk", "pages_to_tokens", "select_topk", "selection_scores"]


def selection_scores(q, k, *, scale=None, per_kv_head=False, page_size=None, split_size=None, one_pass=None):
    """DELTA's selection scores; see `scores.selection_scores`.

    q [B, Hq, D] or [B, Hq, Q, D], k [B, Hkv, N, D] -> fp32 [B, N] (max over heads of the softmax
    probabilities, summed over query steps) or [B, Hkv, N] with per_kv_head; with page_size, summed
    over pages -> [B, ceil(N / page_size)] (or [B, Hkv, ...]; on CUDA in the kernel's own pass when
    page_size is a power of two up to 64). Pick pages with `page_topk(pages, k, page_size=1)`.
    On CUDA, one_pass=False reads K twice instead of once and needs no grid barrier (for a GPU whose
    multiprocessors other work holds, e.g. under an MPS thread limit); None reads once where that fits.
    """
    from workbench_kernels.selection_scores import checks, naive

    if use_triton("selection_scores", q):
        from workbench_kernels.selection_scores import scores

        fused = page_size is not None and scores.fits_page(page_size)
        out = scores.selection_scores(q, k, scale=scale, per_kv_head=per_kv_head, split_size=split_size,
                                      page_size=page_size if fused else None, one_pass=one_pass)
        return out if page_size is None or fused else page_scores(out, page_size)
    checks.validate(q, k)
    out = naive.selection_scores(q.float(), k.float(), scale, per_kv_head)
    return out if page_size is None else page_scores(out, page_size)


def page_topk(scores, k, *, page_size=16, recent=0, sink=0, position_bias=0.0):
    """DELTA's page choice from token scores [..., N] -> int32 [..., k] ascending pages, -1 padded; for fp32 CUDA
    scores of up to MAX_PAGES pages one Triton launch (`topk.page_topk`), otherwise
    `select_topk(page_scores(...))`, which it equals exactly (no warning: the two are the same selection)."""
    if scores.is_cuda and scores.dtype == torch.float32 and isinstance(page_size, int) and page_size > 0:
        from workbench_kernels.selection_scores import topk

        if 0 < -(-scores.shape[-1] // page_size) <= topk.MAX_PAGES:  # else the row is too long for one program
            with torch.cuda.device(scores.device):
                return topk.page_topk(scores, k, page_size=page_size, recent=recent, sink=sink,
                                      position_bias=position_bias)
    return select_topk(page_scores(scores, page_size), k, recent=recent, sink=sink, position_bias=position_bias)
