"""Triton token summaries: every per-token summary in one read of the hidden state, exact medians without a sort.

On a GPU the summaries are the whole cost of recording over the plain forward pass, and PyTorch spends it in
torch.median (one thread block per row: milliseconds for a hidden state) and torch.topk, plus a copy to gather
the real (unpadded) rows. Here one program reads a block of rows of one prompt straight from the layers'
activations (each where it lies: a table of offsets from the first layer's pointer, so nothing is stacked),
through the row list, and writes the L2 norm, max |x| and its dimension, the lower median of |x| and the top-k
by |x|. The top-k takes one maximum per rank over keys that pack |x|
and the dimension (int32 for bf16 and fp16 rows up to 2^16 / 2^13 wide, int64 otherwise).

Exact order statistics come from the bit patterns: for non-negative floats the int32 bits sort as the values
do (every NaN is made the one pattern 0x7FC00000, above inf, as torch ranks NaN above everything), so the k-th
smallest is found bit by bit, counting the values below each candidate: 15 counting rounds for bf16 inputs (two
values a word: their 15-bit keys in the halves of an int32), 18 for fp16, 31 for fp32, all in registers. A
prompt's median over its whole hidden state (millions of values) is bracketed first, as Floyd and Rivest's select
does: `_sample_kernel` draws SAMPLE of its values and takes the two of them SIGMAS standard deviations of rank on
either side of the middle. For bf16 and fp16, whose values near the median are few keys apart, `_window_kernel`, one
read of the values, counts those below the bracket and makes a histogram of the 2^WINDOW_BITS keys (32 for bf16,
256 for fp16) from its low end, and `_window_pick_kernel` reads the median off it when the counts show it lies in
the window. For fp32, `_inside_kernel`, one read, counts those below the bracket and copies those inside it to a
buffer; `_bracket_kernel` finds the median among them (a few percent of the prompt) by the same bit-by-bit search, when
the counts show it lies inside. Where the median is not found (outside the bracket about once in 3.5 million a
side, past the window, or the copies overflowed their room), it comes from a search in digits of up to
DIGIT_BITS (8) bits instead: a histogram pass per digit (`_histogram_kernel`, per-block histograms added
atomically into one per layer and prompt), then `_pick_kernel`'s cumulative sum picks the digit. These kernels
are always launched and do nothing for the prompts already found, so nothing waits for the GPU. They share a
state sent to the GPU in one copy, where the token kernel also leaves each prompt's maximum, non-finite count and
first non-finite position (by atomics, one per block).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import triton
import triton.language as tl

from workbench_kernels._common import next_pow2
from workbench_kernels.dispatch import to_device
from workbench_kernels.token_summaries.checks import validate

BLOCK_ROWS = 64  # rows of one prompt per program
LOW_BIT = {torch.bfloat16: 16, torch.float16: 13, torch.float32: 0}  # bits below are zero in the fp32 pattern
# widest digit of the prompt-median search by default: the fewest passes whose histograms stay cheap; narrower
# digits need more passes and wider ones (2048-bin histograms) cost more than they save, for bf16 and fp32 alike
DIGIT_BITS = 8
MAX_DIGIT_BITS = 11  # the widest digit whose bins a program can hold
SAMPLE = 16384  # values drawn from each (layer, prompt) to bracket its median
SIGMAS = 5.0  # the bracket's half-width in standard deviations of the sample median's rank: 64 values of 16k at 5.0,
# so a prompt's median falls outside about once in 3.5 million, and the bracket holds about 4% of its values
WHOLE = 2**14  # fp32 prompts of at most this many values skip the sample: all of them go to the buffer
ROOM = 8  # a larger prompt's room in the buffer: 1 / ROOM of its values, twice and more what the bracket holds
BRACKET_CHUNK = 4096  # buffered values a step of `_bracket_kernel`
INSIDE_TILE = 2048  # values a step of `_inside_kernel` (4 warps): the fastest of 2k and 4k for bf16 and fp32
# bf16 and fp16: the window is 2^bits keys from the bracket's low end, where a 5-sigma bracket spans about 10 (bf16)
# or 70 (fp16) keys of a Gaussian's |x| (the median near its middle); fp32's span millions, so fp32 copies the
# bracket's values to a buffer. 5 bits is the fastest window for bf16 on Gaussian and heavy-tailed |x| alike; fp16
# keeps 8 because 7 missed on a small test prompt (2 tokens: values, so keys, far apart) and a miss falls back
# to the slower digit search
WINDOW_BITS = {torch.bfloat16: 5, torch.float16: 8}
WINDOW_TILE = 2048  # values a step of `_window_kernel`: faster than 4k and 32k for the whole call


@triton.jit
def _abs_bits(x):
    """|x| as int32 bits, which sort as the values do; every NaN as the one pattern 0x7FC00000."""
    bits = x.to(tl.int32, bitcast=True) & 0x7FFFFFFF
    return tl.where(bits > 0x7F800000, 0x7FC00000, bits)


@triton.jit
def _token_kernel(
    x_ptr, layer_ptr, rows_ptr, blocks_ptr, l2_ptr, max_ptr, dim_ptr, median_ptr, top_dim_ptr, top_val_ptr, state_ptr,
    N, D, TOP_K, B, S,
    ROWS: tl.constexpr, BLOCK_D: tl.constexpr, LOW: tl.constexpr, IDX_BITS: tl.constexpr, KEY64: tl.constexpr,
    ALIGNED: tl.constexpr, PAIRED: tl.constexpr,
):
    """Per token of the block: norm, maximum, median, top-k. Per block, into the prompt's `state` (`_State`): the
    maximum |x| bits, the non-finite count and the first position holding one."""
    i_b, layer = tl.program_id(0), tl.program_id(1)
    start, count = tl.load(blocks_ptr + 4 * i_b), tl.load(blocks_ptr + 4 * i_b + 1)
    offs_d = tl.arange(0, BLOCK_D)
    in_d = offs_d < D
    rank = (D - 1) // 2  # the lower median
    base = x_ptr + _layer_offset(layer_ptr, layer, ALIGNED)
    block_top = tl.full([ROWS], -1, tl.int32)
    block_bad = tl.zeros([ROWS], tl.int32)
    block_first = tl.full([ROWS], 2**31 - 1, tl.int32)
    for r0 in range(0, count, ROWS):
        in_r = r0 + tl.arange(0, ROWS) < count
        at = start + r0 + tl.arange(0, ROWS)
        mask = in_r[:, None] & in_d[None, :]
        row = tl.load(rows_ptr + at, mask=in_r, other=0).to(tl.int64)
        x = tl.load(base + row[:, None] * D + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        bits = _abs_bits(x)
        out = layer.to(tl.int64) * N + at  # [ROWS] into [L, N]
        tl.store(l2_ptr + out, tl.sqrt(tl.sum(x * x, 1)), mask=in_r)
        bad = tl.sum((mask & (bits >= 0x7F800000)).to(tl.int32), 1)  # inf or NaN
        block_bad += bad
        block_first = tl.minimum(block_first, tl.where(bad > 0, r0 + tl.arange(0, ROWS), 2**31 - 1))
        # One key per element, unique: |x| bits above LOW, then the dimension reversed, so a plain maximum finds
        # the largest |x| and, among ties, the lowest dimension; padding columns rank below everything.
        if KEY64:
            key = (bits.to(tl.int64) << IDX_BITS) | (BLOCK_D - 1 - offs_d)[None, :]
        else:
            key = ((bits >> LOW) << IDX_BITS) | (BLOCK_D - 1 - offs_d)[None, :]
        key = tl.where(mask, key, -1)
        best = tl.max(key, 1)
        top = ((best >> IDX_BITS) << (0 if KEY64 else LOW)).to(tl.int32)  # the largest |x|, as bits
        block_top = tl.maximum(block_top, tl.where(in_r, top, -1))
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
        if PAIRED:
            prefix = _order_statistic_paired(sortable, rank, ROWS, BLOCK_D)
        else:
            prefix = _order_statistic(sortable, rank, ROWS, LOW)
        median = tl.where(top == 0x7FC00000, float("nan"), prefix.to(tl.float32, bitcast=True))
        tl.store(median_ptr + out, median, mask=in_r)
    series = layer * B + tl.load(blocks_ptr + 4 * i_b + 2)
    tl.atomic_max(state_ptr + 2 * S + series, tl.max(block_top, 0).to(tl.int64))
    tl.atomic_add(state_ptr + 3 * S + series, tl.sum(block_bad, 0).to(tl.int64))
    first = tl.min(block_first, 0)  # block positions are offsets in the prompt: blocks[i, 3]
    tl.atomic_min(state_ptr + 4 * S + series, tl.load(blocks_ptr + 4 * i_b + 3).to(tl.int64) + first,
                  mask=first < 2**31 - 1)


@triton.jit
def _order_statistic(sortable, rank, ROWS: tl.constexpr, LOW: tl.constexpr):
    """Per row, the bits of the rank-th smallest (0-based) of `sortable` (int32 bits of |x|, zero below LOW): each
    bit of the answer, high to low, is set if at most `rank` values lie below the candidate with it set."""
    prefix = tl.zeros([ROWS], tl.int32)
    for i in range(31 - LOW):
        candidate = prefix | (1 << (30 - i))
        below = tl.sum((sortable < candidate[:, None]).to(tl.int32), 1)
        prefix = tl.where(below <= rank, candidate, prefix)
    return prefix


@triton.jit
def _order_statistic_paired(sortable, rank, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    """`_order_statistic` for bf16 rows (LOW = 16), two values a word: the 15-bit keys sit in the two 16-bit halves
    of an int32, and one subtraction compares both with the candidate. With bit 15 of each half set in the
    candidate's word, (0x8000 + c - 1) - a keeps that bit exactly when a < c and never borrows from the other half
    (keys are at most 0x7FFF, padding and NaN included, and c >= 1 as every candidate has a bit set), so the bits at
    15 and 31, summed, count both halves: each half counts at most BLOCK_D / 2 <= 2^14 keys, so the low count never
    carries into bit 16 and the sum stays below 2^31."""
    lo, hi = tl.split(tl.reshape(sortable >> 16, [ROWS, BLOCK_D // 2, 2]))
    words = lo | (hi << 16)
    prefix = tl.zeros([ROWS], tl.int32)
    for i in range(15):
        candidate = prefix | (1 << (14 - i))
        guard = (candidate - 1) | 0x8000
        counts = tl.sum((((guard | (guard << 16))[:, None] - words) >> 15) & 0x10001, 1)
        below = (counts & 0xFFFF) + (counts >> 16)
        prefix = tl.where(below <= rank, candidate, prefix)
    return prefix << 16


@triton.jit
def _layer_offset(layer_ptr, layer, ALIGNED: tl.constexpr):
    """Where the layer's first element lies, in elements from the first layer's; ALIGNED: a multiple of 16, which
    lets the loads be vectorised as they would be from a pointer argument."""
    offset = tl.load(layer_ptr + layer)
    if ALIGNED:
        offset = tl.multiple_of(offset, 16)
    return offset


@triton.jit
def _mix32(h):
    """murmur3's finaliser: 32 well-mixed bits (int64, below 2^32) from a counter."""
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF  # the low 32 bits of the product, which wrapping int64 keeps
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


@triton.jit
def _sample_kernel(x_ptr, layer_ptr, rows_ptr, state_ptr, B, D, S, RANK_LOW, RANK_HIGH,
                   SAMPLE: tl.constexpr, LOW: tl.constexpr, ALIGNED: tl.constexpr, WINDOW: tl.constexpr):
    """One (layer, prompt) a program: the bracket [low, high] of its median, the sample's RANK_LOW-th and
    RANK_HIGH-th smallest |x| bits among SAMPLE values at hashed positions (a token and a dimension each, drawn
    uniformly), into `state` (`_State`); prompts whose values all fit their room keep the whole range (they go to
    the buffer whole). WINDOW (bf16, fp16): every prompt is sampled, for the low end only."""
    series = tl.program_id(0)
    layer = series // B
    start, n = tl.load(state_ptr + 11 * S + series), tl.load(state_ptr + 12 * S + series)
    sampled = tl.load(state_ptr + 10 * S + series) < n * D
    if WINDOW:
        sampled = n > 0
    if sampled:
        draw = tl.arange(0, SAMPLE).to(tl.int64) + series.to(tl.int64) * (2 * SAMPLE)
        token = (_mix32(2 * draw) * n) >> 32
        dim = (_mix32(2 * draw + 1) * D) >> 32
        row = tl.load(rows_ptr + start + token).to(tl.int64)
        base = x_ptr + _layer_offset(layer_ptr, layer, ALIGNED)
        bits = tl.reshape(_abs_bits(tl.load(base + row * D + dim).to(tl.float32)), [1, SAMPLE])
        tl.store(state_ptr + 5 * S + series, tl.max(_order_statistic(bits, RANK_LOW, 1, LOW), 0).to(tl.int64))
        if not WINDOW:
            tl.store(state_ptr + 6 * S + series, tl.max(_order_statistic(bits, RANK_HIGH, 1, LOW), 0).to(tl.int64))


@triton.jit
def _tile_bits(base, rows_ptr, start, r0, count, offs_d, D, ROWS: tl.constexpr):
    """The |x| bits (`_abs_bits`) of a block's rows r0 to r0 + ROWS, and the mask of its real elements."""
    in_r = r0 + tl.arange(0, ROWS) < count
    mask = in_r[:, None] & (offs_d < D)[None, :]
    row = tl.load(rows_ptr + start + r0 + tl.arange(0, ROWS), mask=in_r, other=0).to(tl.int64)
    return _abs_bits(tl.load(base + row[:, None] * D + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)), mask


@triton.jit
def _inside_kernel(x_ptr, layer_ptr, rows_ptr, blocks_ptr, state_ptr, buffer_ptr, B, D, S,
                   ROWS: tl.constexpr, BLOCK_D: tl.constexpr, ALIGNED: tl.constexpr):
    """The block's values against its prompt's median bracket [low, high] (`state`, `_State`): adds up those below
    it, and copies those inside it to the prompt's part of `buffer` while there is room (counting them all)."""
    i_b, layer = tl.program_id(0), tl.program_id(1)
    start, count = tl.load(blocks_ptr + 4 * i_b), tl.load(blocks_ptr + 4 * i_b + 1)
    series = layer * B + tl.load(blocks_ptr + 4 * i_b + 2)
    low = tl.load(state_ptr + 5 * S + series).to(tl.int32)
    high = tl.load(state_ptr + 6 * S + series).to(tl.int32)
    room, part = tl.load(state_ptr + 10 * S + series), buffer_ptr + tl.load(state_ptr + 9 * S + series)
    offs_d = tl.arange(0, BLOCK_D)
    base = x_ptr + _layer_offset(layer_ptr, layer, ALIGNED)
    below = tl.zeros([ROWS], tl.int32)
    for r0 in range(0, count, ROWS):
        bits, mask = _tile_bits(base, rows_ptr, start, r0, count, offs_d, D, ROWS)
        below += tl.sum((mask & (bits < low)).to(tl.int32), 1)
        inside = tl.reshape((mask & (bits >= low) & (bits <= high)).to(tl.int32), [ROWS * BLOCK_D])
        taken = tl.atomic_add(state_ptr + 8 * S + series, tl.sum(inside, 0).to(tl.int64), sem="relaxed")
        at = tl.cumsum(inside, 0) - 1  # from `taken` on
        free = tl.minimum(tl.maximum(room - taken, 0), 2**31 - 1).to(tl.int32)
        tl.store(part + taken + at, tl.reshape(bits, [ROWS * BLOCK_D]), mask=(inside > 0) & (at < free))
    tl.atomic_add(state_ptr + 7 * S + series, tl.sum(below, 0).to(tl.int64))


@triton.jit
def _bracket_kernel(buffer_ptr, state_ptr, S, LOW: tl.constexpr, SHIFT: tl.constexpr, CHUNK: tl.constexpr):
    """One (layer, prompt) a program: where its counts put the median inside its bracket [low, high] and the
    buffer holds every value there, the median, by the bit-by-bit search over the buffered values (only the bits
    where low and high differ are searched), as the digit search's result (prefix = bits >> SHIFT, rank = -1: done).
    A bracket of one value is the median however many values it held."""
    series = tl.program_id(0)
    rank = tl.load(state_ptr + series)
    low, high = tl.load(state_ptr + 5 * S + series).to(tl.int32), tl.load(state_ptr + 6 * S + series).to(tl.int32)
    below, inside = tl.load(state_ptr + 7 * S + series), tl.load(state_ptr + 8 * S + series)
    room, part = tl.load(state_ptr + 10 * S + series), buffer_ptr + tl.load(state_ptr + 9 * S + series)
    found = (below <= rank) & (rank < below + inside) & ((inside <= room) | (low == high))
    rank -= below
    n = tl.where(found, tl.minimum(inside, room), 0)
    prefix = low & 0  # an int32 zero
    for i in range(31 - LOW):
        bit = 1 << (30 - i)
        if ((low ^ high) >> (30 - i)) == 0:  # low and high agree down to this bit, and so does every value between
            prefix |= low & bit
        else:
            candidate = prefix | bit
            count = tl.zeros([CHUNK], tl.int32)  # a lane's count: at most n / CHUNK
            for c0 in range(0, n, CHUNK):
                at = c0 + tl.arange(0, CHUNK)
                value = tl.load(part + at, mask=at < n, other=0x7FFFFFFF)
                count += (value < candidate).to(tl.int32)
            prefix = tl.where(tl.sum(count.to(tl.int64), 0) <= rank, candidate, prefix)
    tl.store(state_ptr + S + series, (prefix >> SHIFT).to(tl.int64), mask=found)
    tl.store(state_ptr + series, -1, mask=found)


@triton.jit
def _window_kernel(x_ptr, layer_ptr, rows_ptr, blocks_ptr, state_ptr, hist_ptr, B, D, S,
                   LOW: tl.constexpr, NBINS: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
                   ALIGNED: tl.constexpr):
    """The block's values against the window of NBINS keys (2^LOW apart in the bits) from its prompt's bracket
    low (`state`, `_State`): adds up those below it, and the histogram of those inside it into hist [L * B, NBINS]."""
    i_b, layer = tl.program_id(0), tl.program_id(1)
    start, count = tl.load(blocks_ptr + 4 * i_b), tl.load(blocks_ptr + 4 * i_b + 1)
    series = layer * B + tl.load(blocks_ptr + 4 * i_b + 2)
    low = tl.load(state_ptr + 5 * S + series).to(tl.int32)
    offs_d = tl.arange(0, BLOCK_D)
    base = x_ptr + _layer_offset(layer_ptr, layer, ALIGNED)
    below = tl.zeros([ROWS], tl.int32)
    hist = tl.zeros([NBINS], tl.int32)
    for r0 in range(0, count, ROWS):
        bits, mask = _tile_bits(base, rows_ptr, start, r0, count, offs_d, D, ROWS)
        below += tl.sum((mask & (bits < low)).to(tl.int32), 1)
        key = (bits - low) >> LOW  # bits and low are both in [0, 0x7FC00000]: no overflow
        inside = mask & (bits >= low) & (key < NBINS)
        hist += tl.histogram(tl.reshape(tl.where(inside, key, 0), [ROWS * BLOCK_D]), NBINS,
                             mask=tl.reshape(inside, [ROWS * BLOCK_D]))
    bins = tl.arange(0, NBINS)
    tl.atomic_add(hist_ptr + series * NBINS + bins, hist.to(tl.int64), mask=hist > 0)
    tl.atomic_add(state_ptr + 7 * S + series, tl.sum(below, 0).to(tl.int64))


@triton.jit
def _window_pick_kernel(hist_ptr, state_ptr, S, LOW: tl.constexpr, SHIFT: tl.constexpr, NBINS: tl.constexpr):
    """One (layer, prompt) a program: where its counts put the median inside its window, the median (low plus its
    bin's offset) as the digit search's result (prefix = bits >> SHIFT, rank = -1: done)."""
    series = tl.program_id(0)
    searched = tl.load(state_ptr + series)
    rank = searched - tl.load(state_ptr + 7 * S + series)  # among the window's values
    upto = tl.cumsum(tl.load(hist_ptr + series * NBINS + tl.arange(0, NBINS)), 0)  # values in this bin or below
    found = (searched >= 0) & (rank >= 0) & (rank < tl.max(upto, 0))
    bits = tl.load(state_ptr + 5 * S + series) + (tl.sum((upto <= rank).to(tl.int64), 0) << LOW)
    tl.store(state_ptr + S + series, bits >> SHIFT, mask=found)
    tl.store(state_ptr + series, -1, mask=found)


@triton.jit
def _histogram_kernel(
    x_ptr, layer_ptr, rows_ptr, blocks_ptr, state_ptr, hist_ptr, B, D, S,
    SHIFT: tl.constexpr, NBINS: tl.constexpr, HIGH: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
    ALIGNED: tl.constexpr,
):
    """Add to hist [L * B, NBINS] the digit bits[SHIFT : SHIFT + log2 NBINS] of the block's values whose bits
    from HIGH up equal the prefix found so far for their (layer, prompt), in `state` (`_State`); nothing for a
    prompt whose median is already found (rank -1)."""
    i_b, layer = tl.program_id(0), tl.program_id(1)
    start, count = tl.load(blocks_ptr + 4 * i_b), tl.load(blocks_ptr + 4 * i_b + 1)
    series = layer * B + tl.load(blocks_ptr + 4 * i_b + 2)
    count = tl.where(tl.load(state_ptr + series) < 0, 0, count)
    prefix = tl.load(state_ptr + S + series).to(tl.int32)
    offs_d = tl.arange(0, BLOCK_D)
    base = x_ptr + _layer_offset(layer_ptr, layer, ALIGNED)
    hist = tl.zeros([NBINS], tl.int32)
    for r0 in range(0, count, ROWS):
        bits, mask = _tile_bits(base, rows_ptr, start, r0, count, offs_d, D, ROWS)
        keep = mask & ((bits >> HIGH) == prefix)
        digit = (bits >> SHIFT) & (NBINS - 1)
        hist += tl.histogram(tl.reshape(digit, [ROWS * BLOCK_D]), NBINS, mask=tl.reshape(keep, [ROWS * BLOCK_D]))
    bins = tl.arange(0, NBINS)
    tl.atomic_add(hist_ptr + series * NBINS + bins, hist.to(tl.int64), mask=hist > 0)  # a prompt can pass 2^31


@triton.jit
def _pick_kernel(hist_ptr, state_ptr, S, WIDTH: tl.constexpr):
    """One (layer, prompt) per program: the digit of its median from the histogram, as the digit search's next
    step (prefix <- prefix * 2^WIDTH + digit, rank <- rank among the values with that prefix); nothing where the
    median is already found (rank -1)."""
    series = tl.program_id(0)
    bins = tl.arange(0, 1 << WIDTH)
    below = tl.cumsum(tl.load(hist_ptr + series * (1 << WIDTH) + bins), 0)  # values with this digit or a smaller one
    rank = tl.load(state_ptr + series)
    digit = tl.sum((below <= rank).to(tl.int64), 0)
    searching = rank >= 0
    tl.store(state_ptr + series, rank - tl.sum(tl.where(bins == digit - 1, below, 0), 0), mask=searching)
    tl.store(state_ptr + S + series, (tl.load(state_ptr + S + series) << WIDTH) | digit, mask=searching)


def digits(dtype: torch.dtype, max_bits: int = DIGIT_BITS) -> list[tuple[int, int]]:
    """(shift, width) of each digit of the search, high to low: the 31 - LOW_BIT meaningful bits, split evenly into
    digits of at most max_bits."""
    low = LOW_BIT[dtype]
    n = -(-(31 - low) // max_bits)
    widths = [(31 - low) // n + (i < (31 - low) % n) for i in range(n)]
    out, top = [], 31
    for w in widths:
        top -= w
        out.append((top, w))
    return out


def blocks_of(lengths: list[int]) -> np.ndarray:
    """[NB, 4] int32 (first row, rows, prompt, first row's position in the prompt): each prompt's rows cut into
    blocks of at most BLOCK_ROWS."""
    table, start = [], 0
    for prompt, n in enumerate(lengths):
        table += [(start + s, min(BLOCK_ROWS, n - s), prompt, s) for s in range(0, n, BLOCK_ROWS)]
        start += n
    return np.asarray(table, dtype=np.int32).reshape(-1, 4)


TOKEN_TILE = 2048  # values per tile: the fastest of 2k to 16k on the H200 at D=2048


def _histogram_tile(width: int) -> int:
    """Values per histogram tile: 32k for digits of up to 8 bits (bf16's; 5% faster than 4k on the H200), 4k for
    wider ones, whose bins a program holds in registers (fp32's 2k-bin digits spilled at 32k under triton 3.6)."""
    return 32768 if width <= 8 else 4096


def _launch_shape(d: int, values: int, min_warps: int) -> tuple[int, int, int]:
    """(BLOCK_D, rows per tile, warps) for tiles of about `values` values, a warp per 2k (min_warps to 16)."""
    block_d = next_pow2(d, 16)
    rows = min(BLOCK_ROWS, max(1, values // block_d))
    return block_d, rows, min(16, max(min_warps, block_d * rows // 2048))


def token_summaries(x: torch.Tensor | list[torch.Tensor], rows: torch.Tensor, lengths: list[int],
                    top_k: int, digit_bits: int = DIGIT_BITS,
                    bracket_sigmas: float | None = SIGMAS) -> dict[str, torch.Tensor]:
    """The summaries of `naive.token_summaries`, same keys and shapes.

    x [L, M, D] (fp32/fp16/bf16), or a list of the L layers' tensors, each M rows of D (e.g. [B, T, D]) on one
    device: a model's layer outputs are read where they lie, without stacking them (a copy of every layer).
    rows [N] int indices into M, `lengths` tokens per prompt (summing to N), top_k >= 1 (clipped to D). digit_bits:
    the widest digit of the prompt-median search (1 to MAX_DIGIT_BITS; a benchmark's tunable). bracket_sigmas: the
    sampled bracket's half-width (>= 0; None: no bracket, every median by the digit search; a benchmark's and the
    tests' tunable; the median is exact whatever it is). Dimensions come back int32, counts int64, values fp32.
    """
    layers = validate(x, rows, lengths, top_k)
    first = layers[0]
    if not (isinstance(digit_bits, int) and not isinstance(digit_bits, bool) and 1 <= digit_bits <= MAX_DIGIT_BITS):
        raise ValueError(f"digit_bits: expected 1 to {MAX_DIGIT_BITS}, got {digit_bits}")
    if bracket_sigmas is not None and not (isinstance(bracket_sigmas, (int, float)) and not isinstance(
            bracket_sigmas, bool) and math.isfinite(bracket_sigmas) and bracket_sigmas >= 0):
        raise ValueError(f"bracket_sigmas: expected None or a finite number >= 0, got {bracket_sigmas}")
    n_layers, d = len(layers), first.shape[-1]
    n, k = rows.numel(), min(top_k, d)
    dev = first.device
    offsets = torch.tensor([(t.data_ptr() - first.data_ptr()) // t.element_size() for t in layers])
    aligned = bool(first.data_ptr() % 16 == 0 and offsets.remainder(16).eq(0).all())
    blocks, offsets = (to_device(t, dev) for t in (torch.from_numpy(blocks_of(lengths)), offsets))
    rows = rows.to(dev)
    block_d, tile_rows, warps = _launch_shape(d, TOKEN_TILE, 2)
    grid = (blocks.shape[0], n_layers)
    out = {name: torch.empty((n_layers, n), device=dev, dtype=dtype) for name, dtype in (
        ("l2_norm", torch.float32), ("max_abs", torch.float32), ("max_dim", torch.int32),
        ("median_abs", torch.float32))}
    out["topk_dims"] = torch.empty((n_layers, n, k), device=dev, dtype=torch.int32)
    out["topk_values"] = torch.empty((n_layers, n, k), device=dev, dtype=torch.float32)
    state, room = _initial_state(lengths, n_layers, d, dev)
    _token_kernel[grid](
        first, offsets, rows, blocks, out["l2_norm"], out["max_abs"], out["max_dim"], out["median_abs"],
        out["topk_dims"], out["topk_values"], state, n, d, k, len(lengths), n_layers * len(lengths),
        ROWS=tile_rows, BLOCK_D=block_d, LOW=LOW_BIT[first.dtype], IDX_BITS=block_d.bit_length() - 1,
        KEY64=block_d.bit_length() - 1 > LOW_BIT[first.dtype], ALIGNED=aligned,
        # bf16 rows wider than 2^15 take the one-value-a-compare count, tested through fp16 and fp32 (other LOW)
        PAIRED=first.dtype == torch.bfloat16 and block_d <= 2**15, num_warps=warps)
    out.update(_prompt_summaries(first, offsets, rows, blocks, state, grid, aligned,
                                  digits(first.dtype, digit_bits), bracket_sigmas, room))
    return out


class _State:
    """Rows of the per-(layer, prompt) int64 state [13, L * B] the kernels update in place (they address row r at
    state_ptr + r * S, S = L * B): the median's rank among the values still searched (-1 once found) and the
    bits found so far; the maximum |x| bits, non-finite count and first position; the median's bracket, the values
    below it and inside it, where the prompt's part of the buffer starts and how many values it holds; where the
    prompt's rows start in the row list, and how many there are."""

    RANK, PREFIX, MAX_BITS, NONFINITE, FIRST, LOW, HIGH, BELOW, INSIDE, PART, ROOM, START, TOKENS = range(13)


def _initial_state(lengths, n_layers, d, dev) -> tuple[torch.Tensor, int]:
    """The int64 state (`_State`) before the kernels, made on the host and sent in one copy, and the buffer's
    length: each prompt's values in full if at most WHOLE, else 1 / ROOM of them (at least WHOLE)."""
    tokens = np.asarray(lengths, dtype=np.int64)
    values = np.tile(tokens * d, n_layers)
    room = np.where(values <= WHOLE, values, np.maximum(WHOLE, -(-values // ROOM)))
    state = np.zeros((13, values.size), dtype=np.int64)
    state[_State.START] = np.tile(np.cumsum(tokens) - tokens, n_layers)
    state[_State.TOKENS] = np.tile(tokens, n_layers)
    state[_State.RANK] = (values - 1) // 2  # the lower median's rank
    state[_State.MAX_BITS] = -1
    state[_State.FIRST] = np.iinfo(np.int64).max
    state[_State.HIGH] = 0x7FFFFFFF  # the whole range, until a sample narrows it
    state[_State.PART] = np.cumsum(room) - room
    state[_State.ROOM] = room
    return to_device(torch.from_numpy(state), dev), int(room.sum())


def sample_ranks(sigmas: float) -> tuple[int, int]:
    """The ranks in the sample of SAMPLE values that bracket the median: `sigmas` standard deviations of the sample
    median's rank (sqrt(SAMPLE) / 2) on either side of the middle, plus one for the lower median's offset."""
    middle, spread = SAMPLE // 2, int(np.ceil(sigmas * np.sqrt(SAMPLE) / 2))
    return max(0, middle - spread - 1), min(SAMPLE - 1, middle + spread)


def _prompt_summaries(first, offsets, rows, blocks, state, grid, aligned, steps, sigmas,
                      room) -> dict[str, torch.Tensor]:
    """Per (layer, prompt): the exact lower median, from a bracket `sigmas` wide (None: none) where it holds it (bf16
    and fp16: a histogram window at its low end; fp32: a buffer of `room` values), else by the digit search, two
    kernels a digit (histogram, then the pick); the maximum, non-finite count and first position, which the token
    kernel left in `state`."""
    n_layers, d, dev = grid[1], first.shape[-1], first.device
    b = state.shape[1] // n_layers
    low = LOW_BIT[first.dtype]
    if sigmas is not None:
        _sample_kernel[(n_layers * b,)](first, offsets, rows, state, b, d, n_layers * b, *sample_ranks(sigmas),
                                        SAMPLE=SAMPLE, LOW=low, ALIGNED=aligned, WINDOW=low > 0, num_warps=16)
        if low > 0:  # bf16, fp16: a histogram of the window from the bracket's low end
            nbins = 1 << WINDOW_BITS[first.dtype]
            hist = torch.zeros((n_layers * b, nbins), device=dev, dtype=torch.int64)
            block_d, tile_rows, warps = _launch_shape(d, WINDOW_TILE, 4)
            _window_kernel[grid](first, offsets, rows, blocks, state, hist, b, d, n_layers * b, LOW=low,
                                 NBINS=nbins, ROWS=tile_rows, BLOCK_D=block_d, ALIGNED=aligned,
                                 num_warps=warps)
            _window_pick_kernel[(n_layers * b,)](hist, state, n_layers * b, LOW=low, SHIFT=steps[-1][0],
                                                 NBINS=nbins)
        else:  # fp32: the bracket's values copied to a buffer and searched there
            buffer = torch.empty(room, device=dev, dtype=torch.int32)
            block_d, tile_rows, warps = _launch_shape(d, INSIDE_TILE, 4)
            _inside_kernel[grid](first, offsets, rows, blocks, state, buffer, b, d, n_layers * b, ROWS=tile_rows,
                                 BLOCK_D=block_d, ALIGNED=aligned, num_warps=warps)
            _bracket_kernel[(n_layers * b,)](buffer, state, n_layers * b, LOW=low, SHIFT=steps[-1][0],
                                             CHUNK=BRACKET_CHUNK, num_warps=4)
    for shift, width in steps:
        hist = torch.zeros((n_layers * b, 1 << width), device=dev, dtype=torch.int64)
        block_d, tile_rows, warps = _launch_shape(d, _histogram_tile(width), 4)
        _histogram_kernel[grid](first, offsets, rows, blocks, state, hist, b, d, n_layers * b, SHIFT=shift,
                                NBINS=1 << width, HIGH=shift + width, ROWS=tile_rows, BLOCK_D=block_d,
                                ALIGNED=aligned, num_warps=warps)
        _pick_kernel[(n_layers * b,)](hist, state, n_layers * b, WIDTH=width)
    state = state.view(13, n_layers, b)
    max_bits = state[_State.MAX_BITS].int().view(torch.float32)  # NaN is one pattern above inf
    median = (state[_State.PREFIX] << steps[-1][0]).int().view(torch.float32)
    return {
        "prompt_median_abs": torch.where(max_bits.isnan(), torch.nan, median),
        "prompt_max_abs": max_bits,
        "prompt_n_nonfinite": state[_State.NONFINITE],
        "prompt_first_nonfinite": torch.where(state[_State.FIRST] < np.iinfo(np.int64).max, state[_State.FIRST], -1),
    }
