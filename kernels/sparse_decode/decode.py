"""Triton `sparse_decode`: one decode step over a gathered subset of the KV cache.

Flash-decoding with gathered rows: a program owns one (batch, KV head, split of the index list),
loads the KV rows named by the indices once for all query heads of the group (GQA), and keeps an
online softmax. With several splits each writes a normalised partial output and its log-sum-exp,
and a second kernel merges them exactly: lse = logsumexp_s(lse_s), out = sum_s exp(lse_s - lse) out_s.
The launch tunables live in `DecodeConfig`; `python -m workbench_kernels.sparse_decode.bench --sweep` times a
set of them on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from workbench_kernels._common import LOG2E, default_scale, interpreting, next_pow2
from workbench_kernels._triton import mma_operand, tl_dtype
from workbench_kernels.sparse_decode.checks import validate


@triton.jit
def _decode_split_kernel(
    q_ptr, k_ptr, v_ptr, idx_ptr, out_ptr, lse_ptr,
    stride_qb, stride_qh,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ib, stride_ih,
    stride_ob, stride_oh, stride_os,
    stride_lb, stride_lh,
    HKV, N, K, D, split, qk_scale,
    G: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr,
    DTYPE: tl.constexpr, INTERPRET: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // HKV).to(tl.int64)
    h = pid_bh % HKV
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    mask_g = offs_g < G
    mask_d = offs_d < D
    heads = h * G + offs_g  # query heads of this KV group

    q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
                mask=mask_g[:, None] & mask_d[None, :], other=0.0).to(tl.float32)
    q = mma_operand(q * qk_scale, DTYPE, INTERPRET)  # [BLOCK_G, BLOCK_D], scores come out in log2 units
    k_base = k_ptr + b * stride_kb + h * stride_kh
    v_base = v_ptr + b * stride_vb + h * stride_vh
    i_base = idx_ptr + b * stride_ib + h * stride_ih

    m = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    start = pid_s * split
    stop = tl.minimum(start + split, K)
    for off in range(start, stop, BLOCK_K):
        offs_k = off + tl.arange(0, BLOCK_K)
        idx = tl.load(i_base + offs_k, mask=offs_k < stop, other=-1)
        valid = (idx >= 0) & (idx < N)
        rows = idx.to(tl.int64)
        kv_mask = valid[:, None] & mask_d[None, :]
        k = tl.load(k_base + rows[:, None] * stride_kn + offs_d[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(mma_operand(k, DTYPE, INTERPRET)), input_precision="ieee")  # [BLOCK_G, BLOCK_K]
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # no valid key yet: keep exp2 finite
        alpha = tl.exp2(m - m_ref)
        p = tl.exp2(s - m_ref[:, None])
        l = l * alpha + tl.sum(p, 1)
        v = tl.load(v_base + rows[:, None] * stride_vn + offs_d[None, :], mask=kv_mask, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(mma_operand(p, DTYPE, INTERPRET), mma_operand(v, DTYPE, INTERPRET),
                                            input_precision="ieee")
        m = m_new

    empty = l == 0.0
    out = acc / tl.where(empty, 1.0, l)[:, None]
    lse = tl.where(empty, float("-inf"), (m + tl.log2(tl.where(empty, 1.0, l))) / 1.4426950408889634)
    o_ptrs = out_ptr + b * stride_ob + heads[:, None] * stride_oh + pid_s * stride_os + offs_d[None, :]
    tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask_g[:, None] & mask_d[None, :])
    tl.store(lse_ptr + b * stride_lb + heads * stride_lh + pid_s, lse, mask=mask_g)


@triton.jit
def _merge_kernel(
    part_ptr, part_lse_ptr, out_ptr, lse_ptr,
    HQ, S, D,
    stride_pb, stride_ph, stride_ps,
    stride_plb, stride_plh,
    stride_ob, stride_oh,
    stride_lb, stride_lh,
    BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    b = (pid // HQ).to(tl.int64)
    h = pid % HQ
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    mask_s = offs_s < S
    lse_s = tl.load(part_lse_ptr + b * stride_plb + h * stride_plh + offs_s, mask=mask_s, other=float("-inf"))
    top = tl.max(lse_s, 0)
    top = tl.where(top == float("-inf"), 0.0, top)
    w = tl.exp(lse_s - top)  # [BLOCK_S]; 0 for empty splits
    total = tl.sum(w, 0)
    parts = tl.load(part_ptr + b * stride_pb + h * stride_ph + offs_s[:, None] * stride_ps + offs_d[None, :],
                    mask=mask_s[:, None] & (offs_d < D)[None, :], other=0.0)
    out = tl.sum(parts * w[:, None], 0) / tl.where(total == 0.0, 1.0, total)
    lse = tl.where(total == 0.0, float("-inf"), top + tl.log(tl.where(total == 0.0, 1.0, total)))
    tl.store(out_ptr + b * stride_ob + h * stride_oh + offs_d, out.to(out_ptr.dtype.element_ty), mask=offs_d < D)
    tl.store(lse_ptr + b * stride_lb + h * stride_lh, lse)


MAX_SPLITS = 128  # the merge kernel holds every split of a head in registers


@dataclass(frozen=True)
class DecodeConfig:
    """Launch tunables of the split kernel.

    waves: programs per SM that the default split size aims for (more programs keep more gathers in
    flight and even out the tail, but add partial outputs to merge); min_split: fewest indices a
    program takes by default; block_k: indices gathered per loop step; num_warps and num_stages:
    Triton's (the stages pipeline the index loads and the K/V row gathers that depend on them; for
    these gathers Triton 3.6 keeps one block of rows in flight per program whatever the stages, so
    block_k and the programs per SM set how many bytes are in flight).
    """

    waves: float = 4.0  # the defaults: the fastest of `python -m workbench_kernels.sparse_decode.bench --sweep`
    min_split: int = 256
    block_k: int = 64
    num_warps: int = 4
    num_stages: int = 4

    def __post_init__(self):
        ok = self.waves > 0 and self.min_split >= 1 and self.num_stages >= 1
        if not (ok and self.block_k in (16, 32, 64, 128) and self.num_warps in (1, 2, 4, 8, 16)):
            raise ValueError(f"DecodeConfig: expected waves > 0, min_split >= 1, block_k in (16, 32, 64, 128), "
                             f"num_warps a power of two <= 16, num_stages >= 1, got {self}")

    def split(self, b: int, hkv: int, k: int, device: torch.device) -> int:
        """Default indices per program: about `waves` programs per SM, at least min_split each."""
        if device.type != "cuda":
            return max(k, 1)
        programs = self.waves * torch.cuda.get_device_properties(device).multi_processor_count
        splits = max(1, int(programs) // max(b * hkv, 1))
        return max(self.min_split, triton.cdiv(k, splits))


def launch_split(split: int, kk: int, config: DecodeConfig) -> tuple[int, int, int]:
    """(indices per program, number of splits, block_k) actually launched for a requested split size:
    at most MAX_SPLITS splits, each a whole number of blocks (16 indices when a split is smaller)."""
    split = max(split, triton.cdiv(kk, MAX_SPLITS))
    block_k = config.block_k if split >= config.block_k else 16
    split = triton.cdiv(split, block_k) * block_k
    return split, max(1, triton.cdiv(kk, split)), block_k


def _launch(q, k, v, indices, scale: float, split: int, config: DecodeConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the split kernel (and the merge kernel when there is more than one split)."""
    b, hq, d = q.shape
    hkv, n = k.shape[1], k.shape[2]
    kk = indices.shape[2]
    g = hq // hkv
    split, splits, block_k = launch_split(split, kk, config)
    block_g, block_d = next_pow2(g, 16), next_pow2(d, 16)
    out = torch.empty((b, hq, d), device=q.device, dtype=q.dtype)
    lse = torch.empty((b, hq), device=q.device, dtype=torch.float32)
    if b * hq == 0:
        return out, lse
    if splits == 1:
        part, part_lse = out.view(b, hq, 1, d), lse.view(b, hq, 1)
    else:
        part = torch.empty((b, hq, splits, d), device=q.device, dtype=torch.float32)
        part_lse = torch.empty((b, hq, splits), device=q.device, dtype=torch.float32)
    _decode_split_kernel[(splits, b * hkv)](
        q, k, v, indices, part, part_lse,
        q.stride(0), q.stride(1),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        indices.stride(0), indices.stride(1),
        part.stride(0), part.stride(1), part.stride(2),
        part_lse.stride(0), part_lse.stride(1),
        hkv, n, kk, d, split, scale * LOG2E,
        G=g, BLOCK_G=block_g, BLOCK_D=block_d, BLOCK_K=block_k,
        DTYPE=tl_dtype(q.dtype), INTERPRET=interpreting(), num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    if splits > 1:
        _merge_kernel[(b * hq,)](
            part, part_lse, out, lse, hq, splits, d,
            part.stride(0), part.stride(1), part.stride(2),
            part_lse.stride(0), part_lse.stride(1),
            out.stride(0), out.stride(1), lse.stride(0), lse.stride(1),
            BLOCK_S=next_pow2(splits), BLOCK_D=block_d, num_warps=4,
        )
    return out, lse


def sparse_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    indices: torch.Tensor,
    *,
    scale: float | None = None,
    return_lse: bool = False,
    split_size: int | None = None,
    config: DecodeConfig | None = None,
):
    """Attention of one decode step over the KV positions listed per (batch, KV head).

    q [B, Hq, D]; k, v [B, Hkv, N, D] (the cache, any strides with unit last-dim stride); indices
    [B, Hkv, K] int32 — entries outside [0, N) (pad with -1) are skipped, repeats count once per
    entry. Hq must be a multiple of Hkv; the query heads of a group share their KV head's indices and
    each gathered row is read once per group. scale defaults to D**-0.5. split_size is the number of
    indices per program (default: enough programs to fill the GPU; at most 128 splits, rounded up to
    whole blocks of indices); splits are merged exactly. config: the launch tunables (default
    `DecodeConfig()`), which also set the default split size.

    Returns out [B, Hq, D] in q's dtype, and with return_lse also lse [B, Hq] fp32 (natural log of
    the softmax denominator). A head with no valid index gets out = 0 and lse = -inf.
    """
    validate(q, k, v, indices, split_size)
    b, _, d = q.shape
    hkv = k.shape[1]
    q, k, v, indices = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v, indices))
    config = config or DecodeConfig()
    split = split_size or config.split(b, hkv, indices.shape[2], q.device)
    out, lse = _launch(q, k, v, indices, default_scale(scale, d), split, config)
    return (out, lse) if return_lse else out
