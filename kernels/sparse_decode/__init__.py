"""One decode step of attention restricted to chosen KV positions."""

from __future__ import annotations

from workbench_kernels.dispatch import use_triton


def sparse_decode(q, k, v, indices, *, scale=None, return_lse=False, split_size=None):
    """One decode step of attention over chosen KV positions; see `decode.sparse_decode`.

    q [B, Hq, D], k/v [B, Hkv, N, D], indices [B, Hkv, K] int32 padded with -1 -> out [B, Hq, D]
    (and lse [B, Hq] fp32 with return_lse).
    """
    from workbench_kernels.sparse_decode import checks, naive

    if use_triton("sparse_decode", q):
        from workbench_kernels.sparse_decode import decode

        return decode.sparse_decode(q, k, v, indices, scale=scale, return_lse=return_lse, split_size=split_size)
    checks.validate(q, k, v, indices, split_size)
    out, lse = naive.sparse_decode(q.float(), k.float(), v.float(), indices, scale)
    return (out.to(q.dtype), lse) if return_lse else out.to(q.dtype)
