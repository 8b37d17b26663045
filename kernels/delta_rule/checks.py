"""The delta rule's argument checks, without Triton: the CPU path runs them too."""

from __future__ import annotations

import torch

from workbench_kernels._common import check_device, check_float, check_rank, check_shape


def validate(q, k, v, beta, g, initial_state) -> None:
    """Raise ValueError (expected vs got) for arguments the delta-rule functions cannot take."""
    check_rank("q", q, 4, "[B, T, H, K]")
    check_rank("k", k, 4, "[B, T, H, K]")
    check_rank("v", v, 4, "[B, T, H, V]")
    check_rank("beta", beta, 3, "[B, T, H]")
    for name, t in (("q", q), ("k", k), ("v", v), ("beta", beta)):
        check_float(name, t, None if name == "q" else q.dtype)
    b, t, h, dk = q.shape
    check_shape("k", k, q.shape, "[B, T, H, K] (same as q)")
    check_shape("v", v, (b, t, h, v.shape[-1]), "[B, T, H, V] matching q")
    check_shape("beta", beta, (b, t, h), "[B, T, H]")
    if g is not None:
        check_rank("g", g, 3, "[B, T, H]")
        check_float("g", g, None if g.dtype == torch.float32 else q.dtype)  # fp32 log decays, as fla takes them
        check_shape("g", g, (b, t, h), "[B, T, H]")
    if initial_state is not None:
        check_rank("initial_state", initial_state, 4, "[B, H, K, V]")
        check_float("initial_state", initial_state)
        check_shape("initial_state", initial_state, (b, h, dk, v.shape[-1]), "[B, H, K, V]")
    check_device(q, k=k, v=v, beta=beta, g=g, initial_state=initial_state)
    if dk > 256 or v.shape[-1] > 256:
        raise ValueError(f"expected head dims K, V <= 256, got K={dk}, V={v.shape[-1]}")
