"""The token summaries' argument checks, without Triton: the CPU path runs them too."""

from __future__ import annotations

import torch

from workbench_kernels._common import check_float, check_rank


def validate(x, rows: torch.Tensor, lengths: list[int], top_k: int) -> list[torch.Tensor]:
    """The layers of `x` as tensors of contiguous rows, or ValueError (expected vs got) for arguments the summaries
    cannot take, on any device (the CPU reference is given the same checks)."""
    layers = _layers(x)
    if rows.ndim != 1 or rows.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"rows: expected a 1-D int32/int64 tensor, got {rows.dtype} of shape {tuple(rows.shape)}")
    if not lengths or sum(lengths) != rows.numel() or min(lengths) < 1:
        raise ValueError(f"lengths: expected at least one prompt, positive counts summing to {rows.numel()}, "
                         f"got {lengths}")
    if top_k < 1:
        raise ValueError(f"top_k: expected >= 1, got {top_k}")
    return layers


def _layers(x) -> list[torch.Tensor]:
    """The layers of `x` as tensors of contiguous rows, checked: one float dtype, one device, one row width."""
    if isinstance(x, torch.Tensor):
        check_rank("x", x, 3, "[L, M, D]")
    layers = list(x)
    if not layers or not all(isinstance(t, torch.Tensor) and t.ndim >= 2 for t in layers):
        raise ValueError("x: expected a [L, M, D] tensor with L >= 1 or a non-empty list of tensors of rows [..., D]")
    check_float("x", layers[0])
    m, d = layers[0].numel() // max(layers[0].shape[-1], 1), layers[0].shape[-1]
    for t in layers:
        if t.dtype != layers[0].dtype or t.device != layers[0].device or t.shape[-1] != d or t.numel() != m * d:
            raise ValueError(f"x: expected every layer of {m} rows of {d} in {layers[0].dtype} on "
                             f"{layers[0].device}, got {tuple(t.shape)} in {t.dtype} on {t.device}")
    return [t if t.is_contiguous() else t.contiguous() for t in layers]
