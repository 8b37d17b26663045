"""The per-token and per-prompt summaries a recording always keeps, in one pass over each hidden state."""

from __future__ import annotations

import torch


def token_summaries(x, rows, lengths, top_k):
    """The summaries a recording keeps; see `naive.token_summaries`.

    x [L, M, D] or a list of the L layers' tensors of M rows of D (read in place on CUDA), rows [N] indices into
    M, `lengths` rows per prompt -> per-token [L, N] and per-prompt [L, B] summaries. Off CUDA the reference runs
    without a warning: it is how a CPU recording computes them.
    """
    from workbench_kernels.token_summaries import checks, naive

    x = x if isinstance(x, torch.Tensor) else list(x)  # a generator is read once
    layers = checks.validate(x, rows, lengths, top_k)  # one dtype, device and row width on either path
    if layers[0].is_cuda:
        from workbench_kernels.token_summaries import summaries

        with torch.cuda.device(layers[0].device):  # Triton launches on the current device
            return summaries.token_summaries(layers, rows, lengths, top_k)
    if not isinstance(x, torch.Tensor):
        x = torch.stack([t.reshape(-1, t.shape[-1]) for t in layers])
    return naive.token_summaries(x, rows, lengths, top_k)
