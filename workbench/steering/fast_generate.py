"""Greedy generation on a fixed-shape KV cache, the path a CUDA graph can capture.

The eager path (`steer.generate_ids`) steers through nnsight, whose per-step Python and a cache that grows
every step keep the GPU waiting on the host. Here the cache is transformers' static cache (one shape for the
whole generation), the steering additions are plain forward hooks on the blocks (a tensor add, captured like
any other op), and every decode step has the same shapes; on CUDA `compile=True` runs the forward through
`torch.compile(mode="reduce-overhead")`, which replays each step as a CUDA graph. The tokens equal the eager
path's (the tests hold it on the demo model and two other families).
"""

from __future__ import annotations

import torch

from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.steering.steer import checked_request, strip_after_eos


def _steering_hook(addition: torch.Tensor, positions: str, model: LoadedModel):
    """Add `addition` to a block's output: on every position of the prompt's pass ("prompt"), of each one-token
    decode step ("generated"), or of both ("all"), as the eager path does."""
    def hook(module, args, output):
        hidden = model.residual_of(output)
        prefill = hidden.shape[1] > 1
        if positions == "all" or (positions == "prompt") == prefill:
            hidden.add_(addition)
        return output
    return hook


@torch.no_grad()
def fast_generate_ids(model: LoadedModel, prompts: list[str] | str, steers=(), *, max_new_tokens: int = 24,
                      positions: str = "all", compile: bool = False) -> list[list[int]]:
    """The greedy continuation ids (prompt excluded, cut at the end of sequence) of each prompt with every
    `Steer` applied at `positions`, decoded on a static cache; `compile` (CUDA) captures each step in a graph."""
    _, ids, additions = checked_request(model, prompts, steers, max_new_tokens, positions)
    if getattr(model.hf, "_supports_static_cache", True) is False:
        raise WorkbenchError(f"{model.spec} cannot decode on a static cache; use the eager path (generate)")
    if compile and model.device.type != "cuda":
        raise WorkbenchError("compile=True captures CUDA graphs: it needs the model on a GPU")
    width = max(map(len, ids))
    pad = model.tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(row)) + row for row in ids], device=model.device)
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in ids], device=model.device)
    handles = [model.blocks()[layer].register_forward_hook(_steering_hook(addition, positions, model))
               for layer, addition in additions]
    forward = model.hf.forward
    try:
        if compile:
            model.hf.forward = torch.compile(forward, mode="reduce-overhead", fullgraph=True)
        out = model.hf.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                do_sample=False, pad_token_id=pad, cache_implementation="static")
    finally:
        model.hf.forward = forward
        for handle in handles:
            handle.remove()
    return [strip_after_eos(row[width:].tolist(), model.tokenizer.eos_token_id) for row in out]


def fast_generate(model: LoadedModel, prompts: list[str] | str, steers=(), *, max_new_tokens: int = 24,
                  positions: str = "all", compile: bool = False) -> list[str]:
    """The greedy continuations of `prompts` as text; see `fast_generate_ids`."""
    ids = fast_generate_ids(model, prompts, steers, max_new_tokens=max_new_tokens, positions=positions,
                            compile=compile)
    return [model.tokenizer.decode(row, skip_special_tokens=True) for row in ids]
