"""Sparse attention under inspection: DELTA, AnchorAttention and DeltaLLM emulated inside real models.

`sparse_attention(model, config)` swaps a method into a model's attention (per layer, removable); each
method's config lives beside its maths (`delta.py`, `anchor.py`, `deltallm.py`, `dense.py`).
"""

from workbench.sparse.dense import DenseConfig
from workbench.sparse.registry import SparseSession, sparse_attention

__all__ = ["DenseConfig", "SparseSession", "sparse_attention"]
