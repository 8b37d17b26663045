"""How every op picks its path: the Triton kernel for CUDA tensors, the fp32 PyTorch reference elsewhere.

Each op's package (`workbench_kernels.<op>`) exposes functions that take the same arguments on every
device: CUDA tensors run the Triton kernels; tensors elsewhere run the reference in `<op>/naive.py` in
fp32 (logged once per op at INFO: on a CPU that is the expected path, not something to act on) and return the inputs' dtype, as the kernels (fp32 arithmetic inside) do, so
CPU and GPU make the same selections and give the same outputs within tolerance. Tests reach the Triton
path on CPU through the op modules themselves, under TRITON_INTERPRET=1. The op packages import their
Triton modules inside the functions, on the CUDA path only, and check arguments with Triton-free `<op>/checks.py`:
importing them and running them off CUDA need no Triton (CUDA builds of torch bring it), and TRITON_INTERPRET
can still be set before Triton's first import.
"""

from __future__ import annotations

import logging

import torch

warned: set[str] = set()  # ops that have logged running the reference in this process
log = logging.getLogger("workbench_kernels")


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` on `device`; a host tensor goes to CUDA through pinned memory without waiting (a copy from pageable
    memory first waits for everything queued on the stream, so the host could no longer run ahead of the GPU)."""
    if device.type != "cuda" or t.is_cuda:
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def use_triton(op: str, t: torch.Tensor) -> bool:
    """True for CUDA tensors; otherwise log (once per op) that the PyTorch reference runs."""
    if t.is_cuda:
        return True
    if op not in warned:
        warned.add(op)
        log.info("workbench_kernels.%s: tensors on %s, running the PyTorch reference instead of the Triton kernel "
                 "(which needs CUDA)", op, t.device.type)
    return False
