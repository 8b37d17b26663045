"""Where two prompts' delta-rule memories diverge, layer by layer and head by head.

Typical use: the same retrieval question with and without the key it asks about. Per layer and head the two
memories are compared at the prompts' last tokens (the state each leaves behind: its relative distance and cosine),
and along the tokens the two prompts share when aligned at their ends (or starts): how differently each memory
answers the same query, the read-outs S_t^T q_t compared by relative distance. Aligned at the end, a shared question
shows where the missing key still changes what the memory returns.
"""

from __future__ import annotations

import pandas as pd
import torch

from workbench.config import ALIGNMENTS, MemoryConfig
from workbench.deltanet.inspection import inspect_prompt
from workbench.errors import WorkbenchError


def relative_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| / max(|a|, |b|) over the last dimension (0 for two zero vectors): 0 same, up to 2 opposite."""
    scale = torch.maximum(a.norm(dim=-1), b.norm(dim=-1))
    return (a - b).norm(dim=-1) / scale.clamp(min=torch.finfo(scale.dtype).tiny)


def compare_memories(model, prompt_a: str, prompt_b: str, config: MemoryConfig | None = None,
                     align: str = "end") -> dict[str, pd.DataFrame]:
    """The two prompts' memories compared: `heads` (per layer and head: the final states' relative distance and
    cosine, the read-outs' mean and last relative distance over the aligned tokens) and `tokens` (per layer, head
    and aligned token: both positions and tokens, and the read-outs' relative distance)."""
    if align not in ALIGNMENTS:
        raise WorkbenchError(f"align must be one of {ALIGNMENTS}, got {align!r}")
    config = config or MemoryConfig()
    last_states = MemoryConfig(layers=config.layers, n_steps=1)  # the trajectory keeps the last token's state
    (tokens_a, views_a), (tokens_b, views_b) = (inspect_prompt(model, p, last_states) for p in (prompt_a, prompt_b))
    n = min(len(tokens_a), len(tokens_b))
    pos_a = list(range(len(tokens_a) - n, len(tokens_a))) if align == "end" else list(range(n))
    pos_b = list(range(len(tokens_b) - n, len(tokens_b))) if align == "end" else list(range(n))
    heads, per_token = [], []
    for layer, a in views_a.items():
        b = views_b[layer]
        state_a, state_b = a.trajectory["states"][-1, 0], b.trajectory["states"][-1, 0]  # [H, K, V] at the last token
        flat_a, flat_b = state_a.flatten(1), state_b.flatten(1)
        cosine = torch.nn.functional.cosine_similarity(flat_a, flat_b, dim=-1)
        readout = relative_distance(a.trajectory["readout"][0, pos_a], b.trajectory["readout"][0, pos_b])  # [n, H]
        for head in range(flat_a.shape[0]):
            heads.append({"layer": layer, "head": head,
                          "state_distance": float(relative_distance(flat_a[head], flat_b[head])),
                          "state_cosine": float(cosine[head]), "readout_distance_mean": float(readout[:, head].mean()),
                          "readout_distance_last": float(readout[-1, head])})
        per_token.append(pd.DataFrame({
            "layer": layer, "head": [h for h in range(readout.shape[1]) for _ in range(n)],
            "step": list(range(n)) * readout.shape[1], "position_a": pos_a * readout.shape[1],
            "position_b": pos_b * readout.shape[1],
            "token_a": [tokens_a[p] for p in pos_a] * readout.shape[1],
            "token_b": [tokens_b[p] for p in pos_b] * readout.shape[1],
            "readout_distance": readout.transpose(0, 1).reshape(-1).cpu().numpy()}))
    return {"heads": pd.DataFrame(heads), "tokens": pd.concat(per_token, ignore_index=True)}


def record_comparison(model, prompt_a: str, prompt_b: str, store, config: MemoryConfig | None = None,
                      align: str = "end") -> int:
    """`compare_memories` stored as one `delta-memory-compare` analysis; returns its id."""
    config = config or MemoryConfig()
    results = compare_memories(model, prompt_a, prompt_b, config, align)
    most = results["heads"].sort_values("state_distance").iloc[-1]
    summary = {"most_divergent": {"layer": int(most.layer), "head": int(most["head"]),
                                  "state_distance": float(most.state_distance)}}
    return store.save_analysis("delta-memory-compare", {**config.to_dict(), "prompts": [prompt_a, prompt_b],
                                                        "align": align}, results, model=model.spec, summary=summary)
