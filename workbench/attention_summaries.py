"""Attention summaries of a model's softmax layers on long prompts, without any [T, T] map.

A registered attention function takes each layer's call as the model makes it: the output comes from PyTorch's
SDPA (flash attention on a GPU, memory linear in T), and the layer's rotated queries and keys go to
`workbench_kernels.attention_tiles`, which summarises them in chunks: the mass of every query block x key
block tile, and each query's sink weight, entropy and mean distance. The eager attention that `record
--attention` asks for builds every map whole (T^2 per head); this path is what long prompts take.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.recording import tokenize
from workbench.sparse.registry import attention_modules
from workbench_kernels.attention_tiles import tile_summaries

IMPLEMENTATION = "workbench_summaries"
USE = "the long-prompt summaries read"  # what needs the attention modules, as errors say it
# id(attention module) -> (results, or None for a layer not summarised, layer, block)
_COLLECTING: dict[int, tuple[dict | None, int, int]] = {}


def summarising_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The registered function: SDPA's output, and the call's summaries kept for its layer when it is summarised."""
    found = _COLLECTING.get(id(module))
    if found is None:
        raise RuntimeError("workbench_summaries attention called outside `summarising`; the model's config was "
                           "left pointing at it")
    results, layer, block = found
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    if results is None:
        return sdpa(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    if kwargs.get("softcap") is not None or kwargs.get("sliding_window") is not None:
        raise WorkbenchError(f"layer {layer} soft-caps its scores or keeps a sliding window, which the summaries "
                             "do not apply; summarise this model's layers with full maps (record --attention)")
    if query.shape[2] != key.shape[2]:
        raise WorkbenchError("the summaries take a whole prompt in one pass, not decode steps over a cache")
    results[layer] = tile_summaries(query, key, block_q=block, block_k=block, scale=scaling)
    return sdpa(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)


AttentionInterface.register(IMPLEMENTATION, summarising_attention)
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


@contextmanager
def summarising(model: LoadedModel, layers: list[int], block: int):
    """Run the model with each of `layers`' attention summarised (blocks of `block` tokens), every softmax layer's
    output from SDPA; yields the dict that fills with layer -> summaries; the model's own attention is back on
    exit, errors included."""
    hf = model.hf
    modules = attention_modules(hf, USE)
    for layer in layers:
        model.check_layer(layer)
        if modules[layer] is None:
            raise WorkbenchError(f"layer {layer} has no softmax attention to summarise; those with it: "
                                 f"{[i for i, m in enumerate(modules) if m is not None]}")
    original = hf.config._attn_implementation or "eager"
    results: dict[int, dict[str, torch.Tensor]] = {}
    try:
        hf.set_attn_implementation(IMPLEMENTATION)
        for layer, module in enumerate(modules):
            if module is not None:
                _COLLECTING[id(module)] = (results if layer in layers else None, layer, block)
        yield results
    finally:
        for module in modules:
            _COLLECTING.pop(id(module), None)
        hf.set_attn_implementation(original)


@torch.no_grad()
def attention_summaries(model: LoadedModel, prompt: str, layers: list[int] | None = None,
                        block: int = 128) -> dict[int, dict[str, torch.Tensor]]:
    """Per softmax layer of one prompt: {"tiles": [H, NQ, NK], "sink", "entropy", "distance": [H, T]}, on the CPU."""
    modules = attention_modules(model.hf, USE)
    layers = [layer for layer, m in enumerate(modules) if m is not None] if layers is None else layers
    ids = torch.tensor(tokenize(model, [prompt]), device=model.device)
    with summarising(model, layers, block) as results:
        model.hf(input_ids=ids)
    if missing := sorted(set(layers) - set(results)):
        raise WorkbenchError(f"layers {missing} never called transformers' attention interface: no summaries")
    return {layer: {name: value[0].cpu() for name, value in results[layer].items()} for layer in layers}
