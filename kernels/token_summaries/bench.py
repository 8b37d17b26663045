"""Benchmark the token summaries against the PyTorch reference on the same activations.

    python -m kernels.token_summaries.bench [--quick]

The hidden states of one recording batch of a 1B Llama: L=16 layers, 8 prompts of 512 tokens, D=2048, bf16
(and fp32), every row real. Reports each path's time, the kernel's bytes read (one pass for the per-token
summaries, one per digit of the prompt medians) as a fraction of copy bandwidth, and the time of one plain
read of the activations (x.abs().amax(), a floor for any summary).
"""

from __future__ import annotations

import torch

from kernels._bench import bench_main, section, table, time_ms
from kernels.token_summaries import naive
from kernels.token_summaries.summaries import DIGIT_BITS, MAX_DIGIT_BITS, digits, token_summaries

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
    for bits in (DIGIT_BITS, MAX_DIGIT_BITS):
        got = token_summaries(x, rows, lengths, TOP_K, digit_bits=bits)
        exact &= all(torch.equal(got[k].long() if k.endswith(("dim", "nonfinite")) else got[k],
                                 want[k].long() if k.endswith(("dim", "nonfinite")) else want[k])
                     for k in ("max_abs", "max_dim", "median_abs", "prompt_median_abs", "prompt_n_nonfinite"))
    reference = time_ms(lambda: naive.token_summaries(x, rows, lengths, TOP_K), rep)
    kernel = time_ms(lambda: token_summaries(x, rows, lengths, TOP_K), rep)
    wide = time_ms(lambda: token_summaries(x, rows, lengths, TOP_K, digit_bits=MAX_DIGIT_BITS), rep)
    read = time_ms(lambda: x.abs().amax(), rep)
    passes = 1 + len(digits(dtype))
    return [str(dtype).removeprefix("torch."), reference, kernel, reference / kernel, wide, read,
            "yes" if exact else "NO", passes * x.numel() * x.element_size() / (kernel * 1e-3) / bandwidth]


def run(quick: bool, bandwidth: float, device: str = "cuda") -> list[str]:
    rep = 50 if quick else 100
    rows = [measure(dtype, rep, bandwidth, torch.device(device)) for dtype in (QUICK_DTYPES if quick else DTYPES)]
    body = table(["dtype", "PyTorch reference ms", "kernel ms", "speedup", f"kernel ms, {MAX_DIGIT_BITS}-bit digits",
                  "one read of x ms",
                  "medians and maxima equal", "kernel BW / copy BW"], rows)
    return [section(f"token_summaries (L={LAYERS}, {PROMPTS} prompts x {LENGTH} tokens, D={D}, top-{TOP_K})", body,
                    ["the reference is torch.median / topk / max, the CPU recording path, run on the GPU",
                     (f"the prompt medians' digits: at most {DIGIT_BITS} bits (the default), or {MAX_DIGIT_BITS} "
                      "(the widest; for fp32 11 + 10 + 10 bits, the digits before 2026-12-02's third run; bf16 is "
                      "8 + 7 either way)"),
                     "medians and maxima equal: both digit widths, bit for bit"])]


if __name__ == "__main__":
    bench_main(run, __doc__)
