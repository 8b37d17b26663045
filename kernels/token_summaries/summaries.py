"""Triton token summaries: every per-token summary in one read of the hidden state, exact medians without a sort.

On a GPU the summaries are the whole cost of recording over the plain forward pass, and PyTorch spends it in
torch.median (one thread block per row: milliseconds for a hidden state) and torch.topk, plus a copy to gather
the real (unpadded) rows. Here one program reads a block of rows of one prompt straight from the [L, M, D]
activations, through the row list, and writes the L2 norm, max |x| and its dimension, the lower median of |x|,
the top-k by |x| and the count of finite values. The top-k takes one maximum per rank over keys that pack |x|
and the dimension (int32 for bf16 and fp16 rows up to 2^16 / 2^13 wide, int64 otherwise).

Exact order statistics come from the bit patterns: for non-negative floats the int32 bits sort as the values
do (every NaN is made the one pattern 0x7FC00000, above inf, as torch ranks NaN above everything), so the k-th
smallest is found bit by bit, counting the values below each candidate: 15 counting rounds for bf16 inputs,
18 for fp16, 31 for fp32, all in registers. A prompt's median over its whole hidden state (millions of values)
is the same search in digits of 7 to 11 bits: a histogram pass per digit (`_histogram_kernel`, per-block
histograms added atomically into one per layer and prompt), then a cumulative sum picks the digit.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from kernels import to_device
from kernels._common import check_float, check_rank, next_pow2

BLOCK_ROWS = 64  # rows of one prompt per program
NAN_BITS = 0x7FC00000
INF_BITS = 0x7F800000
LOW_BIT = {torch.bfloat16: 16, torch.float16: 13, torch.float32: 0}  # bits below are zero in the fp32 pattern
MAX_DIGIT_BITS = 11


@triton.jit
def _abs_bits(x):
    """|x| as int32 bits, which sort as the values do; every NaN as the one pattern NAN_BITS."""
    bits = x.to(tl.int32, bitcast=True) & 0x7FFFFFFF
    return tl.where(bits > 0x7F800000, 0x7FC00000, bits)


@triton.jit
def _token_kernel(
    x_ptr, rows_ptr, blocks_ptr, l2_ptr, max_ptr, dim_ptr, median_ptr, top_dim_ptr, top_val_ptr, finite_ptr,
    N, D, layer_stride, TOP_K,
    ROWS: tl.constexpr, BLOCK_D: tl.constexpr, LOW: tl.constexpr, IDX_BITS: tl.constexpr, KEY64: tl.constexpr,
):
    i_b, layer = tl.program_id(0), tl.program_id(1)
    start, count = tl.load(blocks_ptr + 3 * i_b), tl.load(blocks_ptr + 3 * i_b + 1)
    offs_d = tl.arange(0, BLOCK_D)
    in_d = offs_d < D
    rank = (D - 1) // 2  # the lower median
    base = x_ptr + layer.to(tl.int64) * layer_stride
    for r0 in range(0, count, ROWS):
        in_r = r0 + tl.arange(0, ROWS) < count
        at = start + r0 + tl.arange(0, ROWS)
        mask = in_r[:, None] & in_d[None, :]
        row = tl.load(rows_ptr + at, mask=in_r, other=0).to(tl.int64)
        x = tl.load(base + row[:, None] * D + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        bits = _abs_bits(x)
        out = layer.to(tl.int64) * N + at  # [ROWS] into [L, N]
        tl.store(l2_ptr + out, tl.sqrt(tl.sum(x * x, 1)), mask=in_r)
        tl.store(finite_ptr + out, tl.sum((mask & (bits < 0x7F800000)).to(tl.int32), 1), mask=in_r)
        # One key per element, unique: |x| bits above LOW, then the dimension reversed, so a plain maximum finds
        # the largest |x| and, among ties, the lowest dimension; padding columns rank below everything.
        if KEY64:
            key = (bits.to(tl.int64) << IDX_BITS) | (BLOCK_D - 1 - offs_d)[None, :]
        else:
            key = ((bits >> LOW) << IDX_BITS) | (BLOCK_D - 1 - offs_d)[None, :]
        key = tl.where(mask, key, -1)
        best = tl.max(key, 1)
        top = ((best >> IDX_BITS) << (0 if KEY64 else LOW)).to(tl.int32)  # the largest |x|, as bits
        tl.store(max_ptr + out, top.to(tl.float32, bitcast=True), mask=in_r)
        for j in range(TOP_K):
            pick = (BLOCK_D - 1 - (best & (BLOCK_D - 1))).to(tl.int32)
            if j == 0:
                tl.store(dim_ptr + out, pick, mask=in_r)
            tl.store(top_dim_ptr + out * TOP_K + j, pick, mask=in_r)
            value = tl.load(base + row * D + pick, mask=in_r, other=0.0).to(tl.float32)  # signed, from the cache
            tl.store(top_val_ptr + out * TOP_K + j, value, mask=in_r)
            key = tl.where(key == best[:, None], -1, key)
            best = tl.max(key, 1)
        sortable = tl.where(mask, bits, 0x7FFFFFFF)  # padding columns above everything
        prefix = tl.zeros([ROWS], tl.int32)
        for i in range(31 - LOW):  # set each bit of the answer if fewer than rank + 1 values lie below it
            candidate = prefix | (1 << (30 - i))
            below = tl.sum((sortable < candidate[:, None]).to(tl.int32), 1)
            prefix = tl.where(below <= rank, candidate, prefix)
        median = tl.where(top == 0x7FC00000, float("nan"), prefix.to(tl.float32, bitcast=True))
        tl.store(median_ptr + out, median, mask=in_r)


@triton.jit
def _histogram_kernel(
    x_ptr, rows_ptr, blocks_ptr, prefix_ptr, hist_ptr, B, D, layer_stride,
    SHIFT: tl.constexpr, NBINS: tl.constexpr, HIGH: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Add to hist [L * B, NBINS] the digit bits[SHIFT : SHIFT + log2 NBINS] of the block's values whose bits
    from HIGH up equal the prefix found so far for their (layer, prompt)."""
    i_b, layer = tl.program_id(0), tl.program_id(1)
    start, count = tl.load(blocks_ptr + 3 * i_b), tl.load(blocks_ptr + 3 * i_b + 1)
    series = layer * B + tl.load(blocks_ptr + 3 * i_b + 2)
    prefix = tl.load(prefix_ptr + series)
    offs_d = tl.arange(0, BLOCK_D)
    base = x_ptr + layer.to(tl.int64) * layer_stride
    hist = tl.zeros([NBINS], tl.int32)
    for r0 in range(0, count, ROWS):
        in_r = r0 + tl.arange(0, ROWS) < count
        mask = in_r[:, None] & (offs_d < D)[None, :]
        row = tl.load(rows_ptr + start + r0 + tl.arange(0, ROWS), mask=in_r, other=0).to(tl.int64)
        bits = _abs_bits(tl.load(base + row[:, None] * D + offs_d[None, :], mask=mask, other=0.0).to(tl.float32))
        keep = mask & ((bits >> HIGH) == prefix)
        digit = (bits >> SHIFT) & (NBINS - 1)
        hist += tl.histogram(tl.reshape(digit, [ROWS * BLOCK_D]), NBINS, mask=tl.reshape(keep, [ROWS * BLOCK_D]))
    bins = tl.arange(0, NBINS)
    tl.atomic_add(hist_ptr + series * NBINS + bins, hist.to(tl.int64), mask=hist > 0)  # a prompt can pass 2^31


def digits(dtype: torch.dtype) -> list[tuple[int, int]]:
    """(shift, width) of each digit of the search, high to low: the 31 - LOW_BIT meaningful bits, split evenly."""
    low = LOW_BIT[dtype]
    n = -(-(31 - low) // MAX_DIGIT_BITS)
    widths = [(31 - low) // n + (i < (31 - low) % n) for i in range(n)]
    out, top = [], 31
    for w in widths:
        top -= w
        out.append((top, w))
    return out


def blocks_of(lengths: list[int]) -> np.ndarray:
    """[NB, 3] int32 (first row, rows, prompt): each prompt's rows cut into blocks of at most BLOCK_ROWS."""
    table, start = [], 0
    for prompt, n in enumerate(lengths):
        table += [(start + s, min(BLOCK_ROWS, n - s), prompt) for s in range(0, n, BLOCK_ROWS)]
        start += n
    return np.asarray(table, dtype=np.int32).reshape(-1, 3)


TOKEN_TILE = 2048  # values per tile: the fastest of 2k to 16k on the H200 at D=2048
HISTOGRAM_TILE = {8: 32768, MAX_DIGIT_BITS: 4096}  # by digit width: wider digits hold more bins in registers
# (the 2k-bin digits of fp32 rows spill past 4k-value tiles under triton 3.6)


def _launch_shape(d: int, values: int, min_warps: int) -> tuple[int, int, int]:
    """(BLOCK_D, rows per tile, warps) for tiles of about `values` values, a warp per 2k (min_warps to 16)."""
    block_d = next_pow2(d, 16)
    rows = min(BLOCK_ROWS, max(1, values // block_d))
    return block_d, rows, min(16, max(min_warps, block_d * rows // 2048))


def token_summaries(x: torch.Tensor, rows: torch.Tensor, lengths: list[int], top_k: int) -> dict[str, torch.Tensor]:
    """The summaries of kernels.token_summaries.naive.token_summaries, same keys and shapes.

    x [L, M, D] (fp32/fp16/bf16, contiguous rows), rows [N] int indices into M, `lengths` tokens per prompt
    (summing to N), top_k >= 1 (clipped to D). Dimensions come back int32, counts int64, values fp32.
    """
    check_rank("x", x, 3, "[L, M, D]")
    check_float("x", x)
    if rows.ndim != 1 or rows.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"rows: expected a 1-D int32/int64 tensor, got {rows.dtype} of shape {tuple(rows.shape)}")
    if sum(lengths) != rows.numel() or min(lengths, default=1) < 1:
        raise ValueError(f"lengths: expected positive counts summing to {rows.numel()}, got {lengths}")
    if top_k < 1:
        raise ValueError(f"top_k: expected >= 1, got {top_k}")
    x = x if x.stride(-1) == 1 and x.stride(1) == x.shape[-1] else x.contiguous()
    n_layers, _, d = x.shape
    n, k = rows.numel(), min(top_k, d)
    dev = x.device
    blocks = to_device(torch.from_numpy(blocks_of(lengths)), dev)
    rows = rows.to(dev)
    block_d, tile_rows, warps = _launch_shape(d, TOKEN_TILE, 2)
    grid = (blocks.shape[0], n_layers)
    out = {name: torch.empty((n_layers, n), device=dev, dtype=dtype) for name, dtype in (
        ("l2_norm", torch.float32), ("max_abs", torch.float32), ("max_dim", torch.int32),
        ("median_abs", torch.float32), ("finite", torch.int32))}
    out["topk_dims"] = torch.empty((n_layers, n, k), device=dev, dtype=torch.int32)
    out["topk_values"] = torch.empty((n_layers, n, k), device=dev, dtype=torch.float32)
    _token_kernel[grid](
        x, rows, blocks, out["l2_norm"], out["max_abs"], out["max_dim"], out["median_abs"], out["topk_dims"],
        out["topk_values"], out["finite"], n, d, x.stride(0), k,
        ROWS=tile_rows, BLOCK_D=block_d, LOW=LOW_BIT[x.dtype], IDX_BITS=block_d.bit_length() - 1,
        KEY64=block_d.bit_length() - 1 > LOW_BIT[x.dtype], num_warps=warps)
    out.update(_prompt_summaries(x, rows, blocks, lengths, out, grid))
    del out["finite"]
    return out


def _prompt_summaries(x, rows, blocks, lengths, out, grid) -> dict[str, torch.Tensor]:
    """Per (layer, prompt): exact lower median by the digit search, maximum, non-finite count and first position."""
    n_layers, _, d = x.shape
    b, dev = len(lengths), x.device
    counts = to_device(torch.tensor(lengths, dtype=torch.int64), dev)
    rank = ((counts * d - 1) // 2).repeat(n_layers)  # [L * B] the lower median's rank
    prefix = torch.zeros(n_layers * b, device=dev, dtype=torch.int32)
    for shift, width in digits(x.dtype):
        block_d, tile_rows, warps = _launch_shape(d, HISTOGRAM_TILE[8 if width <= 8 else MAX_DIGIT_BITS], 4)
        hist = torch.zeros((n_layers * b, 1 << width), device=dev, dtype=torch.int64)
        _histogram_kernel[grid](x, rows, blocks, prefix, hist, b, d, x.stride(0), SHIFT=shift, NBINS=1 << width,
                                HIGH=shift + width, ROWS=tile_rows, BLOCK_D=block_d, num_warps=warps)
        below = hist.cumsum(1)  # [L * B, NBINS] values with this digit or a smaller one
        digit = (below <= rank[:, None]).sum(1)
        rank = rank - torch.where(digit > 0, below.gather(1, (digit - 1).clamp(min=0)[:, None])[:, 0], 0)
        prefix = (prefix << width) | digit.int()
    prompt = torch.repeat_interleave(torch.arange(b, device=dev), counts, output_size=rows.numel())
    max_bits = out["max_abs"].view(torch.int32)  # [L, N]; NaN is one pattern above inf, so int maxima rank it
    prompt_max = torch.full((n_layers, b), -1, device=dev, dtype=torch.int32).scatter_reduce_(
        1, prompt.expand(n_layers, -1), max_bits, "amax")
    nonfinite = d - out["finite"].long()  # [L, N]
    start = torch.cumsum(counts, 0) - counts
    position = torch.arange(rows.numel(), device=dev) - start[prompt]
    first = torch.full((n_layers, b), rows.numel(), device=dev, dtype=torch.int64).scatter_reduce_(
        1, prompt.expand(n_layers, -1), torch.where(nonfinite > 0, position, rows.numel()), "amin")
    median = (prefix << digits(x.dtype)[-1][0]).view(torch.float32).view(n_layers, b)
    prompt_max = prompt_max.view(torch.float32)
    return {
        "prompt_median_abs": torch.where(prompt_max.isnan(), torch.nan, median),
        "prompt_max_abs": prompt_max,
        "prompt_n_nonfinite": torch.zeros((n_layers, b), device=dev, dtype=torch.int64).index_add_(1, prompt, nonfinite),
        "prompt_first_nonfinite": torch.where(first < rows.numel(), first, -1),
    }
