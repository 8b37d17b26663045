"""AnchorAttention's prefill: causal attention over an anchor region plus selected key columns."""

from __future__ import annotations

from workbench_kernels.dispatch import use_triton


def find_stripes(q, k, *, theta=12.0, block_size=128, step=16, init_blocks=1, local_blocks=1, scale=None):
    """AnchorAttention's stripe identification; see `stripes.find_stripes`.

    q [B, Hq, T, D], k [B, Hkv, T, D] -> (stripes int32 [B, Hq, NR, W] padded with -1, counts [B, Hq, NR]).
    """
    from workbench_kernels.stripe_prefill import checks, naive

    if use_triton("find_stripes", q):
        from workbench_kernels.stripe_prefill import stripes

        return stripes.find_stripes(q, k, theta=theta, block_size=block_size, step=step, init_blocks=init_blocks,
                                    local_blocks=local_blocks, scale=scale)
    checks.validate(q, k)
    checks.check_regions(block_size, step, init_blocks, local_blocks)
    return naive.find_stripes(q, k, theta, block_size, step, init_blocks, local_blocks, scale)


def stripe_prefill(q, k, v, stripes, counts, *, block_size=128, step=16, init_blocks=1, local_blocks=1,
                   scale=None):
    """Causal prefill over anchor region + stripes; see `prefill.stripe_prefill`.

    q [B, Hq, T, D], k/v [B, Hkv, T, D], stripes/counts from find_stripes -> [B, Hq, T, D]. The CPU
    reference builds dense [T, T] masks: fine for short prompts only.
    """
    from workbench_kernels.stripe_prefill import checks, naive

    kw = {"block_size": block_size, "step": step, "init_blocks": init_blocks, "local_blocks": local_blocks,
          "scale": scale}
    if use_triton("stripe_prefill", q):
        from workbench_kernels.stripe_prefill import prefill

        return prefill.stripe_prefill(q, k, v, stripes, counts, **kw)
    checks.validate(q, k, v)
    checks.check_regions(block_size, step, init_blocks, local_blocks)
    return naive.stripe_prefill(q.float(), k.float(), v.float(), stripes, counts, **kw).to(q.dtype)
