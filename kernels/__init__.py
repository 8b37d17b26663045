"""Triton kernels of the workbench, each beside its plain-PyTorch reference.

The functions here take the same arguments on every device: CUDA tensors run the Triton kernels;
tensors elsewhere run the reference in `<op>/naive.py` in fp32 (warning once per op) and return the
inputs' dtype, as the kernels (fp32 arithmetic inside) do, so CPU and GPU make the same selections
and give the same outputs within tolerance. Tests reach the Triton path on CPU
through the op modules themselves, under TRITON_INTERPRET=1.

This package deliberately has no `__version__`: `transformers` probes for an unrelated PyPI package
also called `kernels`, and a version-less, metadata-less package reads to it as "not installed"
(tests/kernels/test_package_name.py holds that in place).
"""

from __future__ import annotations

import importlib
import warnings

import torch

# Each op's folder has the op's name. Importing a subpackage sets it as an attribute of this package,
# which would replace the function of the same name; so the (empty) op packages are imported here,
# before the functions are defined, and `kernels.<op>` is then always the function. Reach an op's
# modules with `from kernels.<op> import naive`. The modules themselves are imported inside the
# functions: `import kernels` stays cheap (transformers may import it while probing for the other
# package) and does not pull in Triton.
for _op in ("delta_rule", "selection_scores", "sparse_decode", "stripe_prefill", "token_summaries"):
    importlib.import_module(f"kernels.{_op}")
from kernels.selection_scores.select import page_scores, pages_to_tokens, select_topk

__all__ = ["chunk_delta_rule", "find_stripes", "page_scores", "page_topk", "pages_to_tokens", "recurrent_delta_rule",
           "select_topk", "selection_scores", "sparse_decode", "stripe_prefill", "to_device", "token_summaries"]

_warned: set[str] = set()


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` on `device`; a host tensor goes to CUDA through pinned memory without waiting (a copy from pageable
    memory first waits for everything queued on the stream, so the host could no longer run ahead of the GPU)."""
    if device.type != "cuda" or t.is_cuda:
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _use_triton(op: str, t: torch.Tensor) -> bool:
    """True for CUDA tensors; otherwise warn (once per op) that the PyTorch reference runs."""
    if t.is_cuda:
        return True
    if op not in _warned:
        _warned.add(op)
        warnings.warn(f"kernels.{op}: tensors on {t.device.type}, running the PyTorch reference instead of the "
                      "Triton kernel (which needs CUDA)", RuntimeWarning, stacklevel=3)
    return False


def sparse_decode(q, k, v, indices, *, scale=None, return_lse=False, split_size=None):
    """One decode step of attention over chosen KV positions; see kernels.sparse_decode.decode.sparse_decode.

    q [B, Hq, D], k/v [B, Hkv, N, D], indices [B, Hkv, K] int32 padded with -1 -> out [B, Hq, D]
    (and lse [B, Hq] fp32 with return_lse).
    """
    from kernels.sparse_decode import decode, naive

    if _use_triton("sparse_decode", q):
        return decode.sparse_decode(q, k, v, indices, scale=scale, return_lse=return_lse, split_size=split_size)
    decode.validate(q, k, v, indices, split_size)
    out, lse = naive.sparse_decode(q.float(), k.float(), v.float(), indices, scale)
    return (out.to(q.dtype), lse) if return_lse else out.to(q.dtype)


def selection_scores(q, k, *, scale=None, per_kv_head=False, page_size=None, split_size=None, one_pass=None):
    """DELTA's selection scores; see kernels.selection_scores.scores.selection_scores.

    q [B, Hq, D] or [B, Hq, Q, D], k [B, Hkv, N, D] -> fp32 [B, N] (max over heads of the softmax
    probabilities, summed over query steps) or [B, Hkv, N] with per_kv_head; with page_size, summed
    over pages -> [B, ceil(N / page_size)] (or [B, Hkv, ...]; on CUDA in the kernel's own pass when
    page_size is a power of two up to 64). Pick pages with `page_topk(pages, k, page_size=1)`.
    On CUDA, one_pass=False reads K twice instead of once and needs no grid barrier (for a GPU whose
    multiprocessors other work holds, e.g. under an MPS thread limit); None reads once where that fits.
    """
    from kernels.selection_scores import naive, scores

    if _use_triton("selection_scores", q):
        fused = page_size is not None and scores.fits_page(page_size)
        out = scores.selection_scores(q, k, scale=scale, per_kv_head=per_kv_head, split_size=split_size,
                                      page_size=page_size if fused else None, one_pass=one_pass)
        return out if page_size is None or fused else page_scores(out, page_size)
    scores.validate(q, k)
    out = naive.selection_scores(q.float(), k.float(), scale, per_kv_head)
    return out if page_size is None else page_scores(out, page_size)


def page_topk(scores, k, *, page_size=16, recent=0, sink=0, position_bias=0.0):
    """DELTA's page choice from token scores [..., N] -> int32 [..., k] ascending pages, -1 padded; for fp32 CUDA
    scores of up to MAX_PAGES pages one Triton launch (kernels.selection_scores.topk.page_topk), otherwise
    `select_topk(page_scores(...))`, which it equals exactly (no warning: the two are the same selection)."""
    if scores.is_cuda and scores.dtype == torch.float32 and isinstance(page_size, int) and page_size > 0:
        from kernels.selection_scores.topk import MAX_PAGES
        from kernels.selection_scores.topk import page_topk as fused

        if 0 < -(-scores.shape[-1] // page_size) <= MAX_PAGES:  # else the row is too long for one program
            with torch.cuda.device(scores.device):
                return fused(scores, k, page_size=page_size, recent=recent, sink=sink, position_bias=position_bias)
    return select_topk(page_scores(scores, page_size), k, recent=recent, sink=sink, position_bias=position_bias)


def chunk_delta_rule(q, k, v, beta, *, g=None, scale=None, initial_state=None, output_final_state=False,
                     chunk_size=64):
    """Delta rule prefill (gated with g); see kernels.delta_rule.chunk.chunk_delta_rule.

    q, k [B, T, H, K], v [B, T, H, V], beta and g [B, T, H], initial_state [B, H, K, V]
    -> (o [B, T, H, V], final state [B, H, K, V] fp32 or None).
    """
    from kernels.delta_rule import chunk, naive

    if _use_triton("chunk_delta_rule", q):
        return chunk.chunk_delta_rule(q, k, v, beta, g=g, scale=scale, initial_state=initial_state,
                                      output_final_state=output_final_state, chunk_size=chunk_size)
    chunk.validate(q, k, v, beta, g, initial_state)
    o, state = naive.chunkwise(q, k, v, beta, g, scale, initial_state, chunk_size)
    return o, (state if output_final_state else None)


def recurrent_delta_rule(q, k, v, beta, *, g=None, scale=None, initial_state=None, output_final_state=True):
    """Delta rule decode, token by token; see kernels.delta_rule.recurrent.recurrent_delta_rule.

    Same layout as chunk_delta_rule -> (o [B, T, H, V], final state [B, H, K, V] fp32 or None).
    """
    from kernels.delta_rule import chunk, naive, recurrent

    if _use_triton("recurrent_delta_rule", q):
        return recurrent.recurrent_delta_rule(q, k, v, beta, g=g, scale=scale, initial_state=initial_state,
                                              output_final_state=output_final_state)
    chunk.validate(q, k, v, beta, g, initial_state)
    wide = [x.float() if x is not None else None for x in (q, k, v, beta, g)]
    o, state = naive.recurrence(*wide, scale=scale, initial_state=initial_state)
    return o.to(v.dtype), (state if output_final_state else None)


def find_stripes(q, k, *, theta=12.0, block_size=128, step=16, init_blocks=1, local_blocks=1, scale=None):
    """AnchorAttention's stripe identification; see kernels.stripe_prefill.stripes.find_stripes.

    q [B, Hq, T, D], k [B, Hkv, T, D] -> (stripes int32 [B, Hq, NR, W] padded with -1, counts [B, Hq, NR]).
    """
    from kernels.stripe_prefill import naive, prefill, stripes

    if _use_triton("find_stripes", q):
        return stripes.find_stripes(q, k, theta=theta, block_size=block_size, step=step, init_blocks=init_blocks,
                                    local_blocks=local_blocks, scale=scale)
    prefill.validate(q, k)
    prefill.check_regions(block_size, step, init_blocks, local_blocks)
    return naive.find_stripes(q, k, theta, block_size, step, init_blocks, local_blocks, scale)


def stripe_prefill(q, k, v, stripes, counts, *, block_size=128, step=16, init_blocks=1, local_blocks=1,
                   scale=None):
    """Causal prefill over anchor region + stripes; see kernels.stripe_prefill.prefill.stripe_prefill.

    q [B, Hq, T, D], k/v [B, Hkv, T, D], stripes/counts from find_stripes -> [B, Hq, T, D]. The CPU
    reference builds dense [T, T] masks: fine for short prompts only.
    """
    from kernels.stripe_prefill import naive, prefill

    kw = {"block_size": block_size, "step": step, "init_blocks": init_blocks, "local_blocks": local_blocks, "scale": scale}
    if _use_triton("stripe_prefill", q):
        return prefill.stripe_prefill(q, k, v, stripes, counts, **kw)
    prefill.validate(q, k, v)
    prefill.check_regions(block_size, step, init_blocks, local_blocks)
    return naive.stripe_prefill(q.float(), k.float(), v.float(), stripes, counts, **kw).to(q.dtype)


def token_summaries(x, rows, lengths, top_k):
    """The summaries a recording keeps; see kernels.token_summaries.naive.token_summaries.

    x [L, M, D] or a list of the L layers' tensors of M rows of D (read in place on CUDA), rows [N] indices into
    M, `lengths` rows per prompt -> per-token [L, N] and per-prompt [L, B] summaries. Off CUDA the reference runs
    without a warning: it is how a CPU recording computes them.
    """
    from kernels.token_summaries import naive, summaries

    x = x if isinstance(x, torch.Tensor) else list(x)  # a generator is read once
    layers = summaries.validate(x, rows, lengths, top_k)  # one dtype, device and row width on either path
    if layers[0].is_cuda:
        with torch.cuda.device(layers[0].device):  # Triton launches on the current device
            return summaries.token_summaries(layers, rows, lengths, top_k)
    if not isinstance(x, torch.Tensor):
        x = torch.stack([t.reshape(-1, t.shape[-1]) for t in layers])
    return naive.token_summaries(x, rows, lengths, top_k)
