"""Comparison helpers shared by the kernel tests: fp32 tolerance and the low-precision rule."""

from __future__ import annotations

import torch

LOW_PRECISION = (torch.float16, torch.bfloat16)


def rms(x: torch.Tensor) -> float:
    return x.double().pow(2).mean().sqrt().item() if x.numel() else 0.0


def assert_close_fp32(out: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-4) -> None:
    """fp32 kernels: every element within rtol of the reference, relative to its largest magnitude."""
    assert out.dtype == ref.dtype == torch.float32
    assert not out.isnan().any(), "NaN in output (unwritten element?)"
    scale = ref.abs().max().item() if ref.numel() else 0.0
    torch.testing.assert_close(out, ref, rtol=rtol, atol=rtol * max(scale, 1e-6))


def assert_close_lowp(out: torch.Tensor, ref: torch.Tensor, torch_lowp: torch.Tensor, factor: float = 2.0) -> None:
    """fp16/bf16 kernels: RMS distance to the fp32 reference at most `factor` times plain PyTorch's.

    `torch_lowp` is the naive reference run on the same low-precision inputs, in that precision.
    A small floor (1e-4 of the reference's RMS) keeps a baseline that happens to be exact from
    demanding an exact kernel.
    """
    assert not out.isnan().any(), "NaN in output (unwritten element?)"
    ref = ref.double()
    err = rms(out.double() - ref)
    base = rms(torch_lowp.double() - ref)
    floor = 1e-4 * rms(ref)
    assert err <= factor * base + floor, f"error {err:.3e} > {factor} x PyTorch {base:.3e} (+ floor {floor:.1e})"
