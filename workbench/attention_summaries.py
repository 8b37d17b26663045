"""Attention summaries of a model's softmax layers on long prompts, without any [T, T] map.

A registered attention function takes each layer's call as the model makes it: the output comes from PyTorch's
SDPA (flash attention on a GPU, memory linear in T), and the layer's rotated queries and keys go to
`workbench_kernels.attention_tiles`, which summarises them in chunks: the mass of every query block x key
block tile, and each query's sink weight, entropy and mean distance. The eager attention that `record
--attention` asks for builds every map whole (T^2 per head); this path is what long prompts take.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.progress import ProgressArg, tracked
from workbench.prompts import validate_prompts
from workbench.recording import tokenize
from workbench.sparse.registry import attention_modules
from workbench.tokens import token_texts
from workbench_kernels.attention_tiles import tile_summaries, top_keys

TILES = 128  # tiles a side of a prompt's map by default: it fits a screen at any length

IMPLEMENTATION = "workbench_summaries"
USE = "the long-prompt summaries read"  # what needs the attention modules, as errors say it
@dataclass(frozen=True)
class Request:
    """What to keep of a summarised layer's call: tiles of `block` tokens a side (None: keep the rotated queries
    and keys themselves), and the `top_k` keys of the query positions `queries`."""

    block: int | None
    queries: tuple[int, ...] = ()
    top_k: int = 8


# id(attention module) -> (results, or None for a layer not summarised, layer, request)
_COLLECTING: dict[int, tuple[dict | None, int, Request]] = {}


def summarising_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The registered function: SDPA's output, and the call's summaries kept for its layer when it is summarised."""
    found = _COLLECTING.get(id(module))
    if found is None:
        raise RuntimeError("workbench_summaries attention called outside `summarising`; the model's config was "
                           "left pointing at it")
    results, layer, request = found
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    if results is None:
        return sdpa(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    if kwargs.get("softcap") is not None or kwargs.get("sliding_window") is not None:
        raise WorkbenchError(f"layer {layer} soft-caps its scores or keeps a sliding window, which the summaries "
                             "do not apply; summarise this model's layers with full maps (record --attention)")
    if query.shape[2] != key.shape[2]:
        raise WorkbenchError("the summaries take a whole prompt in one pass, not decode steps over a cache")
    scale = query.shape[-1] ** -0.5 if scaling is None else float(scaling)
    if request.block is None:
        results[layer] = (query, key, scale)
    else:
        results[layer] = tile_summaries(query, key, block_q=request.block, block_k=request.block, scale=scale)
        if request.queries:
            results[layer]["top_keys"], results[layer]["top_weights"] = top_keys(
                query, key, list(request.queries), top_k=request.top_k, scale=scale)
    return sdpa(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)


AttentionInterface.register(IMPLEMENTATION, summarising_attention)
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


@contextmanager
def summarising(model: LoadedModel, layers: list[int], request: Request):
    """Run the model with each of `layers`' attention summarised as `request` asks, every softmax layer's output
    from SDPA; yields the dict that fills with layer -> summaries; the model's own attention is back on exit,
    errors included."""
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
                _COLLECTING[id(module)] = (results if layer in layers else None, layer, request)
        yield results
    finally:
        for module in modules:
            _COLLECTING.pop(id(module), None)
        hf.set_attn_implementation(original)


@torch.no_grad()
def attention_summaries(model: LoadedModel, prompt: str, layers: list[int] | None = None, block: int = 128,
                        queries: tuple[int, ...] = (), top_k: int = 8) -> dict[int, dict[str, torch.Tensor]]:
    """Per softmax layer of one prompt: {"tiles": [H, NQ, NK], "sink", "entropy", "distance": [H, T]}, and with
    `queries` "top_keys", "top_weights" [H, Q, top_k]; on the CPU."""
    modules = attention_modules(model.hf, USE)
    layers = [layer for layer, m in enumerate(modules) if m is not None] if layers is None else layers
    ids = torch.tensor(tokenize(model, [prompt]), device=model.device)
    with summarising(model, layers, Request(block, tuple(queries), top_k)) as results:
        model.hf(input_ids=ids)
    if missing := sorted(set(layers) - set(results)):
        raise WorkbenchError(f"layers {missing} never called transformers' attention interface: no summaries")
    return {layer: {name: value[0].cpu() for name, value in results[layer].items()} for layer in layers}


def block_for(n_tokens: int, tiles: int = TILES) -> int:
    """The tile side, in tokens, that gives a prompt of `n_tokens` at most `tiles` tiles a side; past 16 tokens a
    multiple of 16, the sizes the GPU kernel takes."""
    side = max(1, -(-n_tokens // tiles))
    return side if side <= 16 else -(-side // 16) * 16


def record_summaries(model: LoadedModel, prompts: list[str], store, layers: list[int] | None = None,
                     tiles: int = TILES, queries: list[int] | None = None, top_k: int = 8,
                     progress: ProgressArg = False, prompt_ids: list[int] | None = None,
                     run_id: int | None = None) -> int:
    """Summarise every softmax layer (or `layers`) of each prompt, at most `tiles` tiles a side, with the `top_k`
    keys of the query positions `queries` (negative counts from the end; default: the last token), and store them
    as one `attention-summary` analysis (tables attention_tiles, attention_queries, attention_top_keys); returns
    its id. A recording passes its `run_id` and the prompts' ids in the run (`prompt_ids`, default 0, 1, ...)."""
    prompts = validate_prompts(prompts)
    if not isinstance(tiles, int) or tiles < 1:
        raise WorkbenchError(f"tiles must be a positive integer, got {tiles!r}")
    ids = tokenize(model, prompts)
    prompt_ids = list(range(len(prompts))) if prompt_ids is None else list(prompt_ids)
    tile_rows, query_rows, key_rows = [], [], []
    with tracked(progress, len(prompts), "attention summaries", "prompt") as step:
        for prompt_id, prompt, row in zip(prompt_ids, prompts, ids, strict=True):
            block = block_for(len(row), tiles)
            chosen = sorted({p % len(row) for p in (queries or [-1]) if -len(row) <= p < len(row)})
            if not chosen:
                raise WorkbenchError(f"none of the query positions {queries} lies in prompt {prompt_id}'s "
                                     f"{len(row)} tokens")
            summaries = attention_summaries(model, prompt, layers, block, tuple(chosen), top_k)
            texts = token_texts(model.tokenizer, row)
            for layer, found in summaries.items():
                h, nq, nk = found["tiles"].shape
                grid = np.indices((h, nq, nk)).reshape(3, -1)
                tile_rows.append(pd.DataFrame({"prompt_id": prompt_id, "layer": layer, "head": grid[0],
                                               "block": block, "query_block": grid[1], "key_block": grid[2],
                                               "mass": found["tiles"].reshape(-1).numpy()}))
                heads, positions = np.indices((h, len(row))).reshape(2, -1)
                query_rows.append(pd.DataFrame({
                    "prompt_id": prompt_id, "layer": layer, "head": heads, "position": positions,
                    "token": [texts[p] for p in positions],
                    **{name: found[name].reshape(-1).numpy() for name in ("sink", "entropy", "distance")}}))
                h, nq, k = found["top_keys"].shape
                grid = np.indices((h, nq, k)).reshape(3, -1)
                keys = found["top_keys"].reshape(-1).numpy()
                key_rows.append(pd.DataFrame({
                    "prompt_id": prompt_id, "layer": layer, "head": grid[0], "query": np.asarray(chosen)[grid[1]],
                    "rank": grid[2], "key": keys, "token": [texts[p] if p >= 0 else None for p in keys],
                    "weight": found["top_weights"].reshape(-1).numpy()}).query("key >= 0"))
            step()
    layers = sorted(summaries)
    return store.save_analysis(
        "attention-summary", {"prompts": prompts, "prompt_ids": prompt_ids, "layers": layers, "tiles": tiles,
                              "queries": queries or [-1], "top_k": top_k},
        {"tiles": pd.concat(tile_rows, ignore_index=True), "queries": pd.concat(query_rows, ignore_index=True),
         "top_keys": pd.concat(key_rows, ignore_index=True)},
        run_id=run_id, model=model.spec, summary={"n_tokens": [len(row) for row in ids], "layers": layers})


@torch.no_grad()
def attention_window(model: LoadedModel, prompt: str, layer: int, head: int, queries: tuple[int, int],
                     keys: tuple[int, int]) -> np.ndarray:
    """The exact attention weights of one head in a window of a long prompt: rows queries[0]..queries[1] - 1,
    columns keys[0]..keys[1] - 1 (causal, normalised over every key each query sees), recomputed from the
    model; memory grows with the window's rows times the prompt, never with the prompt squared."""
    ids = torch.tensor(tokenize(model, [prompt]), device=model.device)
    n = ids.shape[1]
    (q0, q1), (k0, k1) = queries, keys
    if not (0 <= q0 < q1 <= n and 0 <= k0 < k1 <= n):
        raise WorkbenchError(f"the window must lie inside the prompt's {n} tokens: queries {queries}, keys {keys}")
    if not 0 <= head < model.attention_heads(layer):
        raise WorkbenchError(f"head {head} is out of range: layer {layer} has {model.attention_heads(layer)} heads")
    with summarising(model, [layer], Request(None)) as results:
        model.hf(input_ids=ids)
    query, key, scale = results[layer]
    group = query.shape[1] // key.shape[1]
    scores = (query[0, head, q0:q1].float() @ key[0, head // group].float().T) * scale  # [rows, N]
    positions = torch.arange(n, device=scores.device)
    scores = scores.masked_fill(positions[None, :] > torch.arange(q0, q1, device=scores.device)[:, None],
                                float("-inf"))
    return torch.softmax(scores, dim=-1)[:, k0:k1].cpu().numpy()
