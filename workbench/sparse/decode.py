"""The decode fast path: one new token per sequence, no padding, no logging, the kernels where they apply.

`sparse_attention(..., fast=True)` sends single-token calls of methods that have a `fast_decode` here
instead of through the float32 emulation, so a GPU benchmark times what a serving engine would run.
`SparseSession.kv_length` (a host integer) lets a preallocated (static) cache pass only its filled part.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dense_decode(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
    """Dense attention of one query step: query [B, Hq, 1, D], key/value [B, Hkv, N, D] -> [B, Hq, 1, D].

    The query heads of a KV group become the query rows of one SDPA call (no causal mask is needed for
    the last position), so no KV copy per group is made and the flash kernel applies.
    """
    b, hq, _, d = query.shape
    hkv = key.shape[1]
    grouped = query.reshape(b, hkv, hq // hkv, d)  # [B, Hkv, G, D]: head h belongs to group h // G
    return F.scaled_dot_product_attention(grouped, key, value, scale=scale).reshape(b, hq, 1, -1)
