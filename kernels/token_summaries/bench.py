"""Benchmark the token summaries against the PyTorch reference on the same activations.

    python -m workbench_kernels.token_summaries.bench [--quick]

The hidden states of one recording batch of a 1B Llama: L=16 layers, 8 prompts of 512 tokens, D=2048, bf16
(and fp32), every row real. Reports each path's time: the kernels' default (prompt medians from a sampled
bracket: for bf16 a histogram window at its low end), the digit search alone (what the kernels fall back to
when the bracket misses) and the PyTorch reference; the default's bytes read (one pass for the per-token summaries, one
for the bracket's counts) as a fraction of copy bandwidth, and the time of one plain read of the activations
(x.abs().amax(), a floor for any summary).
"""

from __future__ import annotations

import torch

from workbench_kernels._bench import bench_main, section, table, time_ms
from workbench_kernels.results import Report, Result
from workbench_kernels.token_summaries import naive
from workbench_kernels.token_summaries.summaries import SIGMAS, token_summaries

LAYERS, PROMPTS, LENGTH, D = 16, 8, 512, 2048
QUICK_DTYPES = (torch.bfloat16,)
DTYPES = (torch.bfloat16, torch.float32)
TOP_K = 8


def measure(dtype, rep: int, bandwidth: float, device) -> list:
    x = torch.randn(LAYERS, PROMPTS * LENGTH, D, device=device, dtype=torch.float32).to(dtype)
    rows = torch.arange(PROMPTS * LENGTH, device=device)
    lengths = [LENGTH] * PROMPTS
    want = naive.token_summaries(x, rows, lengths, TOP_K)
    exact = True
    for sigmas in (SIGMAS, None, 0.0):  # 0: a bracket of one value (a window from it, bf16), which misses some
        got = token_summaries(x, rows, lengths, TOP_K, bracket_sigmas=sigmas)
        exact &= all(torch.equal(got[k].long() if k.endswith(("dim", "nonfinite")) else got[k],
                                 want[k].long() if k.endswith(("dim", "nonfinite")) else want[k])
                     for k in ("max_abs", "max_dim", "median_abs", "prompt_median_abs", "prompt_n_nonfinite"))
    reference = time_ms(lambda: naive.token_summaries(x, rows, lengths, TOP_K), rep)
    kernel = time_ms(lambda: token_summaries(x, rows, lengths, TOP_K), rep)
    digit_search = time_ms(lambda: token_summaries(x, rows, lengths, TOP_K, bracket_sigmas=None), rep)
    read = time_ms(lambda: x.abs().amax(), rep)
    return [str(dtype).removeprefix("torch."), reference, kernel, reference / kernel, digit_search,
            digit_search / kernel, read, "yes" if exact else "NO",
            2 * x.numel() * x.element_size() / (kernel * 1e-3) / bandwidth]


def as_result(row: list) -> Result:
    """A table row of `measure` as a result against the PyTorch reference."""
    return Result("token_summaries", "a recording's per-token and per-prompt summaries",
                  f"L={LAYERS} {PROMPTS}x{LENGTH} tokens D={D} {row[0]}", row[2],
                  "PyTorch (torch.median, topk, max)", row[1], "copy bandwidth", row[-1])


def run(quick: bool, bandwidth: float, device: str = "cuda") -> Report:
    rep = 50 if quick else 100
    rows = [measure(dtype, rep, bandwidth, torch.device(device)) for dtype in (QUICK_DTYPES if quick else DTYPES)]
    body = table(["dtype", "PyTorch reference ms", "kernel ms", "speedup", "digit search alone ms",
                  "bracket's speedup", "one read of x ms", "medians and maxima equal", "kernel BW / copy BW"], rows)
    return Report([section(f"token_summaries (L={LAYERS}, {PROMPTS} prompts x {LENGTH} tokens, D={D}, top-{TOP_K})", body,
                    ["the reference is torch.median / topk / max, the CPU recording path, run on the GPU",
                     (f"kernel: prompt medians from a bracket of {SIGMAS} sigmas sampled from each prompt (bf16: a "
                      "histogram of the 32 keys from its low end; fp32: its values copied out and searched); digit "
                      "search alone: the histogram passes of 8-bit digits (bf16 8 + 7 bits, fp32 8 + 8 + 8 + 7)"),
                     "medians and maxima equal: the bracket, the digit search alone and a bracket that misses, "
                     "bit for bit"])], [as_result(row) for row in rows])


if __name__ == "__main__":
    bench_main(run, __doc__)
