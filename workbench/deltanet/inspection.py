"""Inspect the memory of a model's delta-rule layers on a prompt, and store what was seen.

One forward pass reads each delta-rule layer's call of its rule exactly as the layer made it: a hook on our
DeltaNet layers' `DeltaRule` module, or, for transformers' Gated DeltaNet and Kimi Delta Attention layers
(`workbench.deltanet.gated`), the rule function of the layer's modeling module wrapped to record while that layer
runs. `memory` then replays the recurrence in fp32 to report what every token wrote and erased, the state's
norm and rank over time, whole states at chosen steps, the exact effective attention and which earlier writes
survive. Results are stored as one analysis: per token and head (`memory`) and whole states at chosen steps
(`states`).
"""

from __future__ import annotations

import inspect
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import cached_property, partial

import numpy as np
import pandas as pd
import torch

from workbench.config import MemoryConfig
from workbench.deltanet import decay, memory
from workbench.deltanet.gated import gated_rule, replace_while_running
from workbench.deltanet.modeling import DeltaNetAttention
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.tokens import token_texts


def delta_layers(model: LoadedModel) -> list[int]:
    """Indices of the blocks whose mixer is a delta-rule layer (empty for a plain transformer)."""
    return [i for i in range(model.n_layers)
            if isinstance(mixer := model.module("attn", i), DeltaNetAttention) or gated_rule(mixer)]


def check_layers(model: LoadedModel, layers) -> list[int]:
    """`layers` (None: all delta-rule layers) checked against the model; WorkbenchError naming the valid ones."""
    valid = delta_layers(model)
    if not valid:
        raise WorkbenchError(f"{model.spec} has no delta-rule layers (model type {model.model_type}); memory views "
                             "need a DeltaNet model such as 'demo-hybrid', or one of transformers' Gated DeltaNet "
                             "or Kimi Delta Attention hybrids (qwen3_next, qwen3_5, olmo_hybrid, kimi_linear)")
    if layers is None:
        return valid
    for layer in layers:
        model.check_layer(layer)
    if bad := [layer for layer in layers if layer not in valid]:
        raise WorkbenchError(f"layer(s) {bad} of {model.spec} are softmax attention; its DeltaNet layers are {valid}")
    return sorted(set(layers))


def _chunk_rule(query, key, value, g, beta, chunk_size=64, initial_state=None, output_final_state=False,
                use_qk_l2norm_in_kernel=False, **kwargs):
    """The signature shared by transformers' chunked gated delta rules, to read a call's arguments by name."""


@contextmanager
def _deltanet_calls(mixer, record):
    """Record our DeltaNet layer's rule inputs and output through a forward hook on its `DeltaRule`."""
    def hook(_module, inputs, output):
        q, k, v, beta = (x.float() for x in inputs)
        record({"q": q, "k": k, "v": v, "beta": beta, "g": None, "scale": k.shape[-1] ** -0.5,
                "output": output.float(), "final_state": None})

    handle = mixer.rule.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def _gated_calls(mixer, record):
    """Record a transformers gated delta layer's rule call: its modeling module's chunked rule function is wrapped
    to record inputs and outputs while this layer runs."""
    rule = gated_rule(mixer)
    handles = replace_while_running(mixer, rule.chunk, lambda original: partial(_recorded, original, rule, mixer,
                                                                               record))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _recorded(original, rule, mixer, record, *args, **kwargs):
    """Call the rule `original` and record the call as `rule_calls` describes it."""
    result = original(*args, **kwargs)
    call = inspect.signature(_chunk_rule).bind(*args, **kwargs)
    call.apply_defaults()
    a = call.arguments
    if a["initial_state"] is not None:
        raise WorkbenchError(f"layer {mixer.layer_idx} continued from a cached state: inspect a fresh prompt")
    q, k, v, g, beta = (a[n].float() for n in ("query", "key", "value", "g", "beta"))
    if a["use_qk_l2norm_in_kernel"]:
        q, k = rule.l2norm(q), rule.l2norm(k)
    groups = v.shape[2] // k.shape[2]  # each q/k head serves `groups` consecutive value heads
    q, k = q.repeat_interleave(groups, 2), k.repeat_interleave(groups, 2)
    output, final_state = result
    record({"q": q, "k": k, "v": v, "beta": beta, "g": g, "scale": k.shape[-1] ** -0.5,
            "output": output.float(), "final_state": None if final_state is None else final_state.float()})
    return result


@contextmanager
def rule_calls(model: LoadedModel, layers: list[int]):
    """Within the block, every forward of the delta-rule layers `layers` appends to {layer: [call, ...]} the rule's
    call as a dict: q, k [B, T, H, K] as the rule uses them (fp32, L2-normalised and repeated to the value heads),
    v [B, T, H, V], beta [B, T, H], g (None, [B, T, H] or [B, T, H, K]), scale, output [B, T, H, V] as the rule
    returned it, and final_state [B, H, K, V] (None unless the rule was asked for it: a model run with a cache)."""
    calls = {layer: [] for layer in layers}
    with ExitStack() as stack:
        for layer in layers:
            mixer = model.module("attn", layer)
            capture = _deltanet_calls if isinstance(mixer, DeltaNetAttention) else _gated_calls
            stack.enter_context(capture(mixer, calls[layer].append))
        yield calls


@dataclass
class LayerMemory:
    """One delta-rule layer on one prompt: the rule's inputs (batch of one) and the replayed recurrence."""

    layer: int
    q: torch.Tensor  # [1, T, H, K]
    k: torch.Tensor
    v: torch.Tensor  # [1, T, H, V]
    beta: torch.Tensor  # [1, T, H]
    g: torch.Tensor | None  # log decay: None (DeltaNet), [1, T, H] (Gated DeltaNet) or [1, T, H, K] (KDA)
    scale: float
    output: torch.Tensor  # [1, T, H, V], the rule's output as the layer computed it
    final_state: torch.Tensor | None  # [1, H, K, V] as the rule returned it, None unless it was asked for
    steps: list[int]
    trajectory: dict

    @cached_property
    def effective_attention(self) -> torch.Tensor:
        """[H, T, T]: o_t = sum_j a_tj v_j exactly."""
        return memory.effective_attention(self.q, self.k, self.beta, self.g, self.scale)[0]

    @cached_property
    def survival(self) -> torch.Tensor:
        """[H, T, T]: how much of token j's write (column) is left at step t (row)."""
        return memory.write_survival(self.k, self.beta, self.g)[0]


def default_steps(n_tokens: int, n_steps: int) -> list[int]:
    """`n_steps` evenly spaced positions ending at the last token."""
    return sorted({round(x) for x in np.linspace(0, n_tokens - 1, min(n_steps, n_tokens) + 1)[1:]})


@torch.no_grad()
def inspect_prompt(model: LoadedModel, prompt: str, config: MemoryConfig | None = None) -> tuple[list[str], dict]:
    """Tokens of `prompt` and, per inspected layer, its `LayerMemory` (default config: `MemoryConfig()`)."""
    config = config or MemoryConfig()
    if not isinstance(prompt, str) or not prompt.strip():
        raise WorkbenchError("prompt is empty: give some text to inspect")
    layers = check_layers(model, config.layers)
    ids = model.tokenizer(prompt, return_tensors="pt").input_ids.to(model.device)  # [1, T]
    n = ids.shape[1]
    steps = list(config.steps) if config.steps is not None else default_steps(n, config.n_steps)
    if bad := [s for s in steps if not 0 <= s < n]:
        raise WorkbenchError(f"steps {bad} are outside the prompt's {n} tokens (0..{n - 1})")
    with rule_calls(model, layers) as calls:
        model.hf(ids)
    views = {}
    for layer in layers:
        if len(calls[layer]) != 1:
            raise WorkbenchError(f"layer {layer} called its delta rule {len(calls[layer])} times in one forward pass; "
                                 "the memory views read exactly one call")
        call = calls[layer][0]
        views[layer] = LayerMemory(layer, **call, steps=steps, trajectory=memory.trajectory(
            call["q"], call["k"], call["v"], call["beta"], call["g"], keep_steps=steps))
    tokens = token_texts(model.tokenizer, ids[0].tolist())
    return tokens, views


def memory_tables(prompt_id: int, tokens: list[str], views: dict, config: MemoryConfig) -> dict[str, pd.DataFrame]:
    """The results of one prompt: `memory` (per layer, head and token), `states` (whole states at chosen
    steps, None where larger than `config.max_state_floats`) and `decay` (per layer and head: half-life, memory
    span and role, `workbench.deltanet.decay`)."""
    per_token, states, spans = [], [], []
    for layer, view in views.items():
        tr = view.trajectory
        h, t = tr["beta"].shape[1:]
        sv = tr["singular_values"][0]  # [H, T, R]
        rank = memory.numerical_rank(sv, config.rank_rtol)
        readout = tr["readout"][0].transpose(0, 1).reshape(h * t, -1)  # [H * T, V]: S_t^T q_t, head-major rows
        frame = {name: tr[name][0].reshape(-1).cpu().numpy()
                 for name in ("beta", "written", "erased", "delta", "overwrite", "state_norm")}
        per_token.append(pd.DataFrame({
            "prompt_id": prompt_id, "layer": layer, "head": np.repeat(np.arange(h), t),
            "position": np.tile(np.arange(t), h), "token": np.tile(tokens, h), **frame,
            "log_decay": decay.log_decay_per_token(view.g, h, t).reshape(-1).numpy(),
            "state_rank": rank.reshape(-1).cpu().numpy(), "readout": list(readout.cpu().numpy()),
            "singular_values": list(sv.reshape(h * t, -1).cpu().numpy())}))
        kept = tr["states"][:, 0]  # [S, H, K, V]
        dk, dv = kept.shape[-2:]
        for i, step in enumerate(view.steps):
            for head in range(h):
                whole = kept[i, head].reshape(-1).cpu().numpy() if dk * dv <= config.max_state_floats else None
                states.append({"prompt_id": prompt_id, "layer": layer, "head": head, "step": step,
                               "key_dim": dk, "value_dim": dv, "state": whole})
        spans.append(decay.decay_rows(layer, view.g, view.effective_attention, config.span_mass, config.local_span))
    return {"memory": pd.concat(per_token, ignore_index=True), "states": pd.DataFrame(states),
            "decay": pd.concat(spans, ignore_index=True).assign(prompt_id=prompt_id)}


def record_memory(model: LoadedModel, prompts: list[str], store, config: MemoryConfig | None = None) -> int:
    """Inspect every prompt and store the results as one `delta-memory` analysis; returns its id.

    Everything is computed before the single write, so a bad prompt or layer stores nothing.
    """
    config = config or MemoryConfig()
    if not prompts:
        raise WorkbenchError("no prompts given")
    tables: dict[str, list] = {"memory": [], "states": [], "decay": []}
    for prompt_id, prompt in enumerate(prompts):
        tokens, views = inspect_prompt(model, prompt, config)
        for name, frame in memory_tables(prompt_id, tokens, views, config).items():
            tables[name].append(frame)
    results = {name: pd.concat(frames, ignore_index=True) for name, frames in tables.items()}
    summary = {"layers": check_layers(model, config.layers), "prompts": len(prompts),
               "roles": results["decay"].role.value_counts().to_dict()}  # heads per role, over every prompt
    return store.save_analysis("delta-memory", {**config.to_dict(), "prompts": prompts}, results, model=model.spec,
                               summary=summary)


def stored_state(store, analysis_id: int, prompt_id: int, layer: int, head: int, step: int) -> np.ndarray:
    """A state kept by `record_memory`, as a [K, V] array (fla's layout: S^T of the paper)."""
    state = store.delta_state(analysis_id, prompt_id, layer, head, step)
    if state is None:
        raise WorkbenchError("that state was larger than max_state_floats: only its singular values were kept")
    return state


def layer_views(model: LoadedModel, prompt: str, layer: int) -> dict:
    """Everything the memory page draws for one layer on one prompt, as plain data.

    {"tokens": [...], "rows": the per-token rows of `memory_tables` (all heads), "decay": its per-head rows,
    "effective_attention" [H, T, T] and "survival" [H, T, T] as numpy arrays}.
    """
    config = MemoryConfig(layers=(layer,), n_steps=1)
    tokens, views = inspect_prompt(model, prompt, config)
    view = views[layer]
    tables = memory_tables(0, tokens, views, config)
    return {"tokens": tokens, "rows": tables["memory"], "decay": tables["decay"],
            "effective_attention": view.effective_attention.cpu().numpy(), "survival": view.survival.cpu().numpy()}
