"""Triton `page_topk`: page sums, forced pages and top-k of DELTA's selection in two launches.

The PyTorch path (`select.page_scores` then `select.select_topk`) is several small launches (pad,
page sum, nan_to_num, bias, forcing, sort, cat) whose fixed cost dominates a decode step. Here:

1. page sums, by many programs (a chunk of a row each), accumulated in fp64 and rounded once to
   fp32 (as `page_scores` does, so the sums do not depend on the order of the additions), written
   to a scratch row; one program a row would read the whole row alone (at B=1, N=128k: 46 against
   34 us for the whole selection, in CUDA graphs on the H200). With page_size=1 the scores are
   page scores already (`selection_scores(..., page_size=16)` sums them in its own pass) and this
   launch is skipped;
2. one program a row from here on: the row's page scores loaded into registers; NaN -> -inf, the
   position bias, forced pages -> +inf, each turned into an int32 key ordered like the float (-0.0
   counts as +0.0);
3. the k-th largest key by a radix search over the 2**32 keys: RADIX bits a step, each step one
   reduction counting the keys above its 2**RADIX candidates (32 / RADIX passes over registers), or
   with RADIX 8 one histogram of the next byte of the keys still in the running (four passes);
4. compaction: keys above the threshold, then keys equal to it in page order until k are taken,
   each written at its rank among the chosen pages (a prefix sum), so the output is ascending; the
   rest of the row is -1.

Same result as `select_topk(page_scores(scores, page_size), k, ...)`, ties included (both take the
lower page index). The page sums can differ from PyTorch's only where an fp64 sum of a page lies
within 2**-53 of the midpoint between two fp32 values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from workbench_kernels._common import next_pow2

MAX_PAGES = 1 << 16  # a row's page keys are held in one program's registers


@dataclass(frozen=True)
class TopkConfig:
    """Launch tunables. radix: bits of the threshold found per pass: 1, 2 or 4 by counting the keys above
    2**radix candidates (fewer passes, but 2**radix comparisons per key each), 8 by one histogram of the keys'
    next byte (four passes); None: 8 up to HISTOGRAM_PAGES pages a row, else 2. num_warps None: from the
    radix and the page count (`warps`). chunk: tokens summed by one program of the page-sum kernel (rounded
    to a power-of-two number of pages: 2048 is 128 pages of 16 tokens)."""

    num_warps: int | None = None
    chunk: int = 2048  # 128 pages a program: faster than one program a row on long rows (`bench --sweep`)
    radix: int | None = None

    def __post_init__(self):
        if self.radix not in (None, 1, 2, 4, 8) or self.chunk < 1 or (self.num_warps or 1) < 1:
            raise ValueError(f"TopkConfig: expected radix in (1, 2, 4, 8) or None, chunk >= 1, num_warps >= 1, "
                             f"got {self}")

    def bits(self, block_p: int) -> int:
        """The radix for rows of block_p pages."""
        return self.radix or (8 if block_p <= HISTOGRAM_PAGES else 2)

    def warps(self, block_p: int) -> int:
        """num_warps, else 256 pages a warp with histograms, 1024 with counts, 4..16 warps: the fastest of
        `python -m workbench_kernels.selection_scores.bench --sweep` at 512, 2048 and 8192 pages (histograms
        win up to 2048 pages a row, counts beyond)."""
        per_warp = 256 if self.bits(block_p) == 8 else 1024
        return self.num_warps or min(16, max(4, block_p // per_warp))


HISTOGRAM_PAGES = 2048  # up to this many pages a row the byte histograms are faster than counting


@triton.jit
def _page_sums_kernel(scores_ptr, pages_ptr, N, P, CHUNKS,
                      PAGE: tl.constexpr, BLOCK_PAGE: tl.constexpr, CHUNK_P: tl.constexpr):
    """1. CHUNK_P page sums of one row -> the scratch row [P] fp32 (pad's zeros past the last token). A 1-D grid
    of rows x CHUNKS: either can pass the 65535 programs a CUDA grid allows on its other axes."""
    pid = tl.program_id(0).to(tl.int64)
    row = pid // CHUNKS
    page = (pid % CHUNKS) * CHUNK_P + tl.arange(0, CHUNK_P)
    offs_j = tl.arange(0, BLOCK_PAGE)
    tok = page[:, None] * PAGE + offs_j[None, :]  # [CHUNK_P, BLOCK_PAGE]
    x = tl.load(scores_ptr + row * N + tok, mask=(offs_j < PAGE)[None, :] & (tok < N), other=0.0)
    tl.store(pages_ptr + row * P + page, tl.sum(x.to(tl.float64), 1).to(tl.float32), mask=page < P)


@triton.jit
def _threshold_by_histograms(key, valid, TAKE):
    """The TAKE-th largest of the valid int32 keys, 8 bits a pass: a histogram of the next digit of the keys
    that share the digits found so far, then the largest digit with at least `need` of them at or above it."""
    biased = key.to(tl.int64) + 2147483648  # unsigned order, so digits compare as the keys do
    bins = tl.arange(0, 256)
    prefix = tl.zeros([], tl.int64)
    need = TAKE
    for i in tl.static_range(4):  # the digit of bits 24 - 8i .. 31 - 8i
        inside = valid & ((biased >> (32 - 8 * i)) == prefix)
        hist = tl.histogram(((biased >> (24 - 8 * i)) & 255).to(tl.int32), 256, mask=inside)
        at_least = tl.sum(hist, 0) - tl.cumsum(hist, 0) + hist  # keys inside with this digit or a larger one
        digit = tl.sum((at_least >= need).to(tl.int32), 0) - 1  # at_least falls with the digit
        need -= tl.sum(tl.where(bins > digit, hist, 0), 0)
        prefix = prefix * 256 + digit
    return (prefix - 2147483648).to(tl.int32)


@triton.jit
def _page_topk_kernel(
    pages_ptr, out_ptr,
    P, K, TAKE, RECENT, SINK, bias,
    BLOCK_P: tl.constexpr, BLOCK_PAD: tl.constexpr, HAS_BIAS: tl.constexpr, RADIX: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    p_row = pages_ptr + row * P

    # 2. ranking keys [BLOCK_P] int32, ordered as the ranked floats; lanes past P are never counted
    pos = tl.arange(0, BLOCK_P)
    valid = pos < P
    s = tl.load(p_row + pos, mask=valid, other=0.0)
    s = tl.where(s != s, float("-inf"), s)  # noqa: PLR0124 - the NaN test; NaN ranks last
    if HAS_BIAS:
        s = s - bias * pos.to(tl.float32)  # enable_fp_fusion=False: rounded twice, as in PyTorch
    s = tl.where((pos >= P - RECENT) | (pos < SINK), float("inf"), s)
    s = tl.where(s == 0.0, 0.0, s)  # -0.0 ties with +0.0
    bits = s.to(tl.int32, bitcast=True)
    key = tl.where(valid, bits ^ ((bits >> 31) & 0x7FFFFFFF), -2147483648)

    # 3. threshold: the largest t with #(key >= t) >= TAKE, RADIX bits a step: the 2**RADIX candidates
    # lo + j * step split [lo, lo + 2**32 >> (RADIX * i)) evenly and are counted in one reduction
    if RADIX == 8:
        t = _threshold_by_histograms(key, valid, TAKE)
    else:
        lo = tl.full([], -2147483648, tl.int64)  # #(key >= lo) = P >= TAKE: j = 0 always qualifies
        digits = tl.arange(0, 1 << RADIX).to(tl.int64)
        for i in range(32 // RADIX):
            step = tl.full([], 1, tl.int64) << (32 - RADIX * (i + 1))
            cand = (lo + digits * step).to(tl.int32)  # [2**RADIX], all within int32
            counts = tl.sum((valid[None, :] & (key[None, :] >= cand[:, None])).to(tl.int32), 1)
            lo += (tl.sum((counts >= TAKE).to(tl.int64), 0) - 1) * step  # counts fall with j: take the last j
        t = lo.to(tl.int32)

    # 4. compaction in page order; ties at t go to the lowest pages
    above = valid & (key > t)
    tied = valid & (key == t)
    room = TAKE - tl.sum(above.to(tl.int32), 0)
    chosen = above | (tied & (tl.cumsum(tied.to(tl.int32), 0) <= room))
    rank = tl.cumsum(chosen.to(tl.int32), 0) - 1
    o_row = out_ptr + row * K
    tl.store(o_row + rank, pos, mask=chosen)
    for start in range(TAKE, K, BLOCK_PAD):
        offs = start + tl.arange(0, BLOCK_PAD)
        tl.store(o_row + offs, tl.full([BLOCK_PAD], -1, tl.int32), mask=offs < K)


def validate(scores, k: int, page_size: int, recent: int, sink: int) -> None:
    """Raise ValueError (expected vs got) for arguments `page_topk` cannot take."""
    if not isinstance(scores, torch.Tensor) or scores.ndim < 1:
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"scores: expected a tensor [..., N] of token scores, got {got}")
    if scores.dtype != torch.float32:
        raise ValueError(f"scores: expected dtype torch.float32 (selection_scores' output), got {scores.dtype}")
    if page_size < 1:
        raise ValueError(f"page_size: expected a positive integer, got {page_size}")
    if k < 0 or recent < 0 or sink < 0:
        raise ValueError(f"expected k, recent, sink >= 0, got k={k}, recent={recent}, sink={sink}")
    pages = -(-scores.shape[-1] // page_size)
    if pages > MAX_PAGES:
        raise ValueError(f"scores: expected at most {MAX_PAGES} pages per row, got {pages}; "
                         "use select.select_topk(select.page_scores(...)) for longer rows")


def page_topk(
    scores: torch.Tensor, k: int, *, page_size: int = 16, recent: int = 0, sink: int = 0,
    position_bias: float = 0.0, config: TopkConfig | None = None,
) -> torch.Tensor:
    """The k best pages per row of token scores, ascending, as int32 [..., k] padded with -1.

    scores [..., N] fp32 token scores (e.g. `selection_scores`); pages are page_size tokens, the last
    one partial. Equal to `select_topk(page_scores(scores, page_size), k, recent=recent, sink=sink,
    position_bias=position_bias)`: the last `recent` and first `sink` pages always kept (counting
    against k), bias * page index subtracted before ranking, NaN ranked last, ties to the lower page,
    k > pages keeps every page and pads with -1.
    """
    validate(scores, k, page_size, recent, sink)
    config = config or TopkConfig()
    n = scores.shape[-1]
    lead = scores.shape[:-1]
    rows = scores.reshape(-1, n).contiguous()  # [R, N]
    p = -(-n // page_size)
    out = torch.empty((*lead, k), device=scores.device, dtype=torch.int32)
    if out.numel() == 0:
        return out
    block_p = next_pow2(p, 16)
    if page_size == 1:  # already page scores (e.g. selection_scores(..., page_size=16)): ranked as they are
        pages = rows
    else:
        pages = torch.empty((rows.shape[0], p), device=scores.device, dtype=torch.float32)  # scratch
        block_page = next_pow2(page_size)
        chunk_p = min(next_pow2(max(1, config.chunk // block_page)), block_p)
        chunks = triton.cdiv(p, chunk_p)
        _page_sums_kernel[(chunks * rows.shape[0],)](
            rows, pages, n, p, chunks, PAGE=page_size, BLOCK_PAGE=block_page, CHUNK_P=chunk_p, num_warps=4)
    _page_topk_kernel[(rows.shape[0],)](
        pages, out, p, k, min(k, p), recent, sink, float(position_bias),
        BLOCK_P=block_p, BLOCK_PAD=min(next_pow2(k), 1024), HAS_BIAS=bool(position_bias),
        RADIX=config.bits(block_p), num_warps=config.warps(block_p), enable_fp_fusion=False,
    )
    return out
