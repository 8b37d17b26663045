"""DeltaNet's delta rule (and its gated variant): chunked WY/UT forward and the recurrent form, and the L2
normalisation of q and k that gated layers ask of the rule."""

from __future__ import annotations

from workbench_kernels.dispatch import use_triton


def chunk_delta_rule(q, k, v, beta, *, g=None, scale=None, initial_state=None, output_final_state=False,
                     chunk_size=64):
    """Delta rule prefill (gated with g); see `chunk.chunk_delta_rule`.

    q, k [B, T, H, K], v [B, T, H, V], beta and g [B, T, H], initial_state [B, H, K, V]
    -> (o [B, T, H, V], final state [B, H, K, V] fp32 or None).
    """
    from workbench_kernels.delta_rule import checks, naive

    if use_triton("chunk_delta_rule", q):
        from workbench_kernels.delta_rule import chunk

        return chunk.chunk_delta_rule(q, k, v, beta, g=g, scale=scale, initial_state=initial_state,
                                      output_final_state=output_final_state, chunk_size=chunk_size)
    checks.validate(q, k, v, beta, g, initial_state)
    o, state = naive.chunkwise(q, k, v, beta, g, scale, initial_state, chunk_size)
    return o, (state if output_final_state else None)


def recurrent_delta_rule(q, k, v, beta, *, g=None, scale=None, initial_state=None, output_final_state=True):
    """Delta rule decode, token by token; see `recurrent.recurrent_delta_rule`.

    Same layout as chunk_delta_rule -> (o [B, T, H, V], final state [B, H, K, V] fp32 or None).
    """
    from workbench_kernels.delta_rule import checks, naive

    if use_triton("recurrent_delta_rule", q):
        from workbench_kernels.delta_rule import recurrent

        return recurrent.recurrent_delta_rule(q, k, v, beta, g=g, scale=scale, initial_state=initial_state,
                                              output_final_state=output_final_state)
    checks.validate(q, k, v, beta, g, initial_state)
    wide = [x.float() if x is not None else None for x in (q, k, v, beta, g)]
    o, state = naive.recurrence(*wide, scale=scale, initial_state=initial_state)
    return o.to(v.dtype), (state if output_final_state else None)


def l2norm(x, eps=1e-6):
    """x [..., H, D] L2-normalised along D in fp32 (x * rsqrt(|x|^2 + eps), transformers' and fla's `l2norm`),
    returned contiguous in x's dtype; see `qk_norm.l2norm`."""
    from workbench_kernels.delta_rule import naive

    if use_triton("l2norm", x):
        from workbench_kernels.delta_rule import qk_norm

        return qk_norm.l2norm(x, eps)
    return naive.l2norm(x, eps)
