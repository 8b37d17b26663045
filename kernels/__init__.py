"""Triton kernels of the workbench, each beside its plain-PyTorch reference.

The functions here take the same arguments on every device: CUDA tensors run the Triton kernels;
tensors elsewhere run the reference in `<op>/naive.py` (warning once per op), so CPU and GPU make
the same selections and give the same outputs within tolerance. Tests reach the Triton path on CPU
through the op modules themselves, under TRITON_INTERPRET=1.

This package deliberately has no `__version__`: `transformers` probes for an unrelated PyPI package
also called `kernels`, and a version-less, metadata-less package reads to it as "not installed"
(tests/kernels/test_package_name.py holds that in place).
"""

from __future__ import annotations

import warnings

import torch

# Each op's folder has the op's name. Importing a subpackage sets it as an attribute of this package,
# which would replace the function of the same name; so the (empty) op packages are imported here,
# before the functions are defined, and `kernels.<op>` is then always the function. Reach an op's
# modules with `from kernels.<op> import naive`. The modules themselves are imported inside the
# functions: `import kernels` stays cheap (transformers may import it while probing for the other
# package) and does not pull in Triton.
import kernels.sparse_decode  # noqa: E402, F401  (see above)

_warned: set[str] = set()


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
    out, lse = naive.sparse_decode(q, k, v, indices, scale)
    return (out, lse) if return_lse else out
