"""The switchable attention replacement: a function in transformers' attention registry, set per layer.

Every architecture whose attention picks its function at each call from `config._attn_implementation`
through `ALL_ATTENTION_FUNCTIONS` (almost every current family; `uses_attention_interface` checks), so no
module needs patching: `sparse_attention` registers one function (with the eager mask builder, so it
receives an additive float mask that already holds causality, padding and sliding windows), points the
model at it with `set_attn_implementation`, and on exit puts back the model's own implementation, errors
included. The function
finds the layer and method of the module that called it; layers given no method run the model's original
implementation unchanged.

    with sparse_attention(model, DeltaConfig(budget=0.25), recall=True) as session:
        model.hf(input_ids)
    session.log.frame()  # the selections
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from workbench.errors import WorkbenchError
from workbench.sparse.dense import prepare
from workbench.sparse.selections import SelectionLog
from workbench.structure import discover, get_module, uses_attention_interface

IMPLEMENTATION = "workbench_sparse"
# Keyword arguments of an attention call that change nothing in its maths here: positions, cache and output flags, and
# the sliding window, which the eager mask the call receives already holds. `softcap` (Gemma 2's logit
# soft-capping) is applied; any other argument is refused, never dropped.
_NO_MATHS = frozenset({"position_ids", "cache_position", "use_cache", "output_attentions", "sliding_window",
                       "output_router_logits"})
_SESSIONS: dict[int, tuple[SparseSession, int]] = {}  # id(attention module) -> (session, layer)


class SparseSession:
    """The methods of one model's layers for the length of a `with sparse_attention(...)` block.

    `methods[layer]` is a method config (DenseConfig, DeltaConfig, AnchorConfig, DeltaLLMConfig) or None
    for the model's own attention; `set_layer` changes one at run time. `state` holds what a method carries
    between calls (DELTA's current selection, DeltaLLM's reference scores); `log` what was selected.
    """

    def __init__(self, hf, methods: list, recall: bool, original: str, fast: bool = False):
        self.hf = hf
        self.windows = sliding_windows(hf, len(methods))
        self.fast = fast
        self.kv_length: int | None = None
        self.methods = methods
        self.log = SelectionLog(recall=recall)
        self.state: dict = {}
        self.calls = [0] * len(methods)
        self.original = original

    @property
    def n_layers(self) -> int:
        return len(self.methods)

    def set_layer(self, layer: int, method) -> None:
        """Give one layer another method (None: the model's own attention) from the next call on."""
        if not 0 <= layer < self.n_layers:
            raise WorkbenchError(f"layer {layer} is out of range: the model has layers 0..{self.n_layers - 1}")
        _validate(method, self.n_layers)
        self.methods[layer] = method

    def reset(self) -> None:
        """Forget carried state and step counters (start of a new sequence); the log is kept."""
        self.state.clear()
        self.calls = [0] * self.n_layers


def _validate(method, n_layers: int) -> None:
    if method is not None and not hasattr(method, "apply"):
        raise WorkbenchError(f"unknown sparse-attention method {method!r}: expected a DenseConfig, DeltaConfig, "
                             "AnchorConfig or DeltaLLMConfig (or None for the model's own attention)")
    if hasattr(method, "validate"):
        method.validate(n_layers)


def _original_function(module, name: str):
    """The model's own attention function: registry entry, or the family's eager function."""
    eager = sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS.get_interface(name, eager) if name != "eager" else eager


def sparse_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The registered attention function: query [B, Hq, T, D], key/value [B, Hkv, N, D] -> ([B, T, Hq, Dv], None)."""
    found = _SESSIONS.get(id(module))
    if found is None:
        raise RuntimeError("workbench_sparse attention called outside a sparse_attention session; "
                           "the model's config was left pointing at it")
    session, layer = found
    method = session.methods[layer]
    step = session.calls[layer]
    session.calls[layer] += 1
    if method is None:
        return _original_function(module, session.original)(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    window = session.windows[layer]
    if window is not None and key.shape[2] >= window and getattr(method, "carries", None):
        raise WorkbenchError(
            f"layer {layer} keeps only the last {window} keys (a sliding window) and this sequence has filled it: "
            f"{method.name} carries its selection across {method.carries}, which would then point at other "
            f"tokens; use dense or anchor on this model, or sequences shorter than {window} tokens")
    softcap = kwargs.get("softcap")
    unknown = sorted(k for k, v in kwargs.items() if v is not None and k not in _NO_MATHS | {"softcap"})
    if unknown:
        raise WorkbenchError(f"{type(module).__name__} passes its attention {unknown}, which the sparse methods "
                             "do not apply: sparse attention does not support this model family")
    if session.fast and query.shape[2] == 1 and hasattr(method, "fast_decode"):
        if softcap is not None:
            raise WorkbenchError("the kernels' decode path has no logit soft-capping (Gemma 2): run without fast")
        n = session.kv_length or key.shape[2]
        scale = query.shape[-1] ** -0.5 if scaling is None else float(scaling)
        out = method.fast_decode(query, key[:, :, :n], value[:, :, :n], scale, layer, session)  # [B, Hq, 1, Dv]
        return out.transpose(1, 2).contiguous(), None
    call = prepare(layer, step, query, key, value, attention_mask, scaling, softcap)
    out = method.apply(call, session)  # [B, Hq, T, Dv] float32
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


AttentionInterface.register(IMPLEMENTATION, sparse_attention_forward)
AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)


def sliding_windows(hf, n_layers: int) -> list[int | None]:
    """Per layer, the window of a sliding-window KV cache (which keeps only the last keys), else None (also for
    no model: a session driven by hand)."""
    if hf is None:
        return [None] * n_layers
    layers = DynamicCache(config=hf.config).layers
    if len(layers) != n_layers:
        return [None] * n_layers
    return [layer.sliding_window if getattr(layer, "is_sliding", False) else None for layer in layers]


def attention_modules(hf, use: str = "the sparse-attention methods replace") -> list[torch.nn.Module | None]:
    """The softmax attention module of each block of a generative Hugging Face model, in layer order (None at a
    hybrid's delta-rule or state-space layers); `use` says in errors what needs them."""
    structure = discover(hf)
    name = hf.config.model_type
    if not structure.generative:
        raise WorkbenchError(f"{use} the attention of generating models; {name!r} is an encoder")
    if not any(structure.softmax):
        raise WorkbenchError(f"{use} softmax attention, which {name!r} models do not have")
    blocks = get_module(hf, structure.blocks)
    modules = [get_module(block, path) if soft else None
               for block, path, soft in zip(blocks, structure.attn, structure.softmax)]
    foreign = [i for i, m in enumerate(modules) if m is not None and not uses_attention_interface(m)]
    if foreign:
        raise WorkbenchError(f"the attention of {name!r} (layers {foreign}) does not go through transformers' "
                             f"attention interface, which {use}")
    return modules


@contextmanager
def sparse_attention(model, method, *, layers=None, recall: bool = False, fast: bool = False):
    """Run `model` with `method` in `layers` (default every softmax-attention layer) and the model's own attention
    elsewhere.

    model: a LoadedModel or a Hugging Face causal LM. recall: measure each selection against dense
    attention of the same queries. fast: single-token decode calls take the kernels path (no padding
    allowed, nothing logged). Yields the `SparseSession`; on exit, even after an error, the model's
    attention implementation is restored exactly.
    """
    hf = getattr(model, "hf", model)
    modules = attention_modules(hf)
    if any(id(m) in _SESSIONS for m in modules if m is not None):
        raise WorkbenchError("this model is already inside a sparse_attention session; leave it first")
    softmax = [layer for layer, m in enumerate(modules) if m is not None]
    chosen = softmax if layers is None else list(layers)
    methods = [None] * len(modules)
    for layer in chosen:
        if not 0 <= layer < len(modules):
            raise WorkbenchError(f"layer {layer} is out of range: the model has layers 0..{len(modules) - 1}")
        if modules[layer] is None:
            raise WorkbenchError(f"layer {layer} has no softmax attention to replace; those with it: {softmax}")
        methods[layer] = method
    _validate(method, len(modules))
    original = hf.config._attn_implementation or "eager"
    session = SparseSession(hf, methods, recall, original=original, fast=fast)
    try:
        hf.set_attn_implementation(IMPLEMENTATION)
        if hf.config._attn_implementation != IMPLEMENTATION:
            raise WorkbenchError(f"{type(hf).__name__} does not let transformers switch its attention "
                                 "implementation, so sparse attention cannot run in it")
        for layer, module in enumerate(modules):
            if module is not None:
                _SESSIONS[id(module)] = (session, layer)
        yield session
        skipped = [layer for layer, m in enumerate(methods) if m is not None and not session.calls[layer]]
        if any(session.calls) and skipped:
            raise WorkbenchError(f"layers {skipped} never called transformers' attention interface, so the method "
                                 "did not run there; their results are the model's own attention")
    finally:
        for module in modules:
            if module is not None:
                _SESSIONS.pop(id(module), None)
        hf.set_attn_implementation(original)

