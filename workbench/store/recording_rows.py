"""The rows a recording writes, built from the arrays its capture produced.

Every column is a numpy array viewed by Arrow, the top-k columns fixed-size lists, repeated strings
dictionaries: nothing is built row by row in Python. Each function returns Arrow tables keyed by the table
they go to, and dense tensors (vectors, attention maps) keyed by their kind, as `Store.append_batch` and
the background writer take them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch


def batch_rows(run_id, prompt_ids, lengths, host, layers, config, is_causal):
    """Tables for one batch from `capture_batch`'s arrays: statistics by table name, and tensor rows.

    Every column is a numpy array viewed by Arrow (the [L, N] arrays flattened layer-major, so rows go
    site, layer, token), the top-k columns fixed-size lists over the [L, N, k] arrays, the site a dictionary:
    nothing is built row by row in Python.
    """
    prompt_col = np.repeat(np.asarray(prompt_ids, dtype=np.int32), lengths)  # [N]
    n = len(prompt_col)
    position_col = np.arange(n, dtype=np.int32) - np.repeat(np.cumsum(lengths, dtype=np.int32) - lengths, lengths)
    n_layers, n_prompts = len(layers), len(prompt_ids)
    rows = n_layers * n
    per_token = {"run_id": np.full(rows, run_id, dtype=np.int64), "prompt_id": np.tile(prompt_col, n_layers),
                 "position": np.tile(position_col, n_layers),
                 "layer": np.repeat(np.asarray(layers, dtype=np.int16), n)}  # [L * N] each
    per_prompt = {"run_id": np.full(n_layers * n_prompts, run_id, dtype=np.int64),
                  "prompt_id": np.tile(np.asarray(prompt_ids, dtype=np.int32), n_layers),
                  "layer": np.repeat(np.asarray(layers, dtype=np.int16), n_prompts)}  # [L * B] each
    stats, prompt_stats, tensors = [], [], {}
    for site in config.sites:
        def flat(name, dtype=None, site=site):
            values = host[f"{site}.{name}"]
            return values.reshape(-1) if dtype is None else values.reshape(-1).astype(dtype, copy=False)

        k = host[f"{site}.topk_dims"].shape[-1]
        stats.append(pa.table(per_token | {
            "site": _repeated(site, rows), "l2_norm": flat("l2_norm"), "max_abs": flat("max_abs"),
            "max_dim": flat("max_dim", np.int32), "median_abs": flat("median_abs"),
            "topk_dims": _lists(flat("topk_dims", np.int32), k), "topk_values": _lists(flat("topk_values"), k),
        }))
        prompt_stats.append(pa.table(per_prompt | {
            "site": _repeated(site, n_layers * n_prompts), "median_abs": flat("prompt_median_abs"),
            "max_abs": flat("prompt_max_abs"), "n_nonfinite": flat("prompt_n_nonfinite", np.int64),
            "first_nonfinite_position": flat("prompt_first_nonfinite", np.int32),
        }))
        if config.vectors:
            vectors = host[f"{site}.vector"]  # [L, N, D]; from a GPU, a pinned tensor in the model's dtype
            if isinstance(vectors, torch.Tensor):
                vectors = vectors.float().numpy()
            tensors[site] = pa.table({
                "prompt_id": per_token["prompt_id"], "position": per_token["position"], "layer": per_token["layer"],
                "vector": pa.FixedSizeListArray.from_arrays(vectors.reshape(-1), vectors.shape[-1]),
            })
    if config.attention:
        tensors["attention"] = attention_rows(prompt_ids, lengths, host["pattern"], layers, is_causal)
    return {"layer_stats": pa.concat_tables(stats), "prompt_layer_stats": pa.concat_tables(prompt_stats)}, tensors


def _lists(values: np.ndarray, k: int) -> pa.ListArray:
    """Consecutive runs of `k` values as lists: sites of different widths (a router's few experts) keep fewer
    top dimensions than `top_k`, so the column is a list, not a fixed-size one."""
    return pa.ListArray.from_arrays(np.arange(0, len(values) + 1, k, dtype=np.int32), values)


def _repeated(text: str, n: int) -> pa.DictionaryArray:
    """`text` n times, as one dictionary entry and n int8 indices (DuckDB stores it as VARCHAR)."""
    return pa.DictionaryArray.from_arrays(np.zeros(n, dtype=np.int8), pa.array([text]))


class TokenTexts:
    """Each token id's text as `batch_decode` gives it for the id alone, decoded once per id and run."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.texts: dict[int, str] = {}

    def __call__(self, token_ids: np.ndarray) -> pa.DictionaryArray:
        unique, index = np.unique(token_ids, return_inverse=True)
        missing = [int(t) for t in unique if int(t) not in self.texts]
        if missing:
            self.texts.update(zip(missing, self.tokenizer.batch_decode([[t] for t in missing])))
        return pa.DictionaryArray.from_arrays(index.reshape(-1).astype(np.int32),
                                              pa.array([self.texts[int(t)] for t in unique], pa.string()))


def text_rows(run_id, batch, prompts, ids, texts: TokenTexts) -> dict[str, pa.Table]:
    """The `prompts` and `tokens` rows of one batch."""
    lengths = np.asarray([len(ids[i]) for i in batch], dtype=np.int32)
    prompt_ids = np.asarray(batch, dtype=np.int32)
    token_ids = np.concatenate([np.asarray(ids[i], dtype=np.int64) for i in batch])  # [N]
    n = len(token_ids)
    return {
        "prompts": pa.table({"run_id": np.full(len(batch), run_id, dtype=np.int64), "prompt_id": prompt_ids,
                             "text": pa.array([prompts[i] for i in batch], pa.string()), "n_tokens": lengths}),
        "tokens": pa.table({
            "run_id": np.full(n, run_id, dtype=np.int64), "prompt_id": np.repeat(prompt_ids, lengths),
            "position": np.arange(n, dtype=np.int32) - np.repeat(np.cumsum(lengths, dtype=np.int32) - lengths, lengths),
            "token_id": token_ids.astype(np.int32), "token": texts(token_ids),
        }),
    }


def all_rows(text_tables, run_id, prompt_ids, lengths, wait, *args):
    """The writer thread's half of one batch: wait for its arrays (`start_batch`), then build every table."""
    tables, tensors = batch_rows(run_id, prompt_ids, lengths, wait(), *args)
    return text_tables | tables, tensors


def attention_rows(prompt_ids, lengths, patterns, layers, is_causal) -> pa.Table:
    """Long-format attention weights (prompt, layer, head, query, key); causal maps keep key <= query."""
    weights = torch.from_numpy(patterns)  # [L, B, H, T, T]
    n_layers, _, n_heads = weights.shape[:3]
    parts = []
    for row, (prompt_id, n) in enumerate(zip(prompt_ids, lengths)):
        q, k = torch.tril_indices(n, n) if is_causal else torch.cartesian_prod(torch.arange(n), torch.arange(n)).T
        w = weights[:, row][:, :, q, k]  # [L, H, P]
        pairs = q.numel()
        parts.append(pa.table({
            "prompt_id": np.full(n_layers * n_heads * pairs, prompt_id, dtype=np.int32),
            "layer": np.repeat(np.asarray(layers, dtype=np.int16), n_heads * pairs),
            "head": np.tile(np.repeat(np.arange(n_heads, dtype=np.int16), pairs), n_layers),
            "query": np.tile(q.numpy().astype(np.int32), n_layers * n_heads),
            "key": np.tile(k.numpy().astype(np.int32), n_layers * n_heads),
            "weight": w.reshape(-1).numpy(),
        }))
    return pa.concat_tables(parts)
