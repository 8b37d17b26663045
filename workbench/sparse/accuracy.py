"""Accuracy against full attention on the same inputs: per-step KL and top-1 agreement, task accuracy, perplexity.

Every measurement is teacher-forced decoding: the first tokens of a text are a prefill, the rest are fed
one token per step through the KV cache, so methods that act in prefill (AnchorAttention, DeltaLLM) and
in decode (DELTA, DeltaLLM) both take part, and the dense run sees exactly the same tokens. A retrieval
item ends with its answer: greedy decoding reproduces the answer exactly when the arg-max at each answer
position is the answer's token (`workbench.corpus.retrieval.answer_reproduced`, as the demo model's card counts it).
"""

from __future__ import annotations

import inspect

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from transformers import DynamicCache

from workbench.corpus.retrieval import answer_reproduced, item_tokens
from workbench.errors import WorkbenchError
from workbench.sparse.dense import DenseConfig
from workbench.sparse.registry import sparse_attention


@dataclass
class DecodeRun:
    """One teacher-forced pass: logits [S, V] predicting tokens[prefix:], and what the session measured."""

    logits: torch.Tensor
    targets: torch.Tensor
    attended_fraction: float
    recall: float
    selections: pd.DataFrame


def cache_argument(hf) -> str:
    """The forward's name for the KV cache: `cache` where transformers has renamed it (it deprecates
    `past_key_values`), else `past_key_values`."""
    return "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"


@torch.no_grad()
def teacher_forced(model, token_ids: list[int], prefix: int, method, *, recall: bool = False,
                   on_step=lambda: None) -> DecodeRun:
    """Prefill token_ids[:prefix], then feed the rest one by one under `method`; logits predict token_ids[prefix:].
    `on_step()` is called after each of the len(token_ids) - prefix forward passes."""
    if not 1 <= prefix < len(token_ids):
        raise WorkbenchError(f"prefix must leave at least one token to predict: prefix {prefix}, "
                             f"{len(token_ids)} tokens")
    hf = getattr(model, "hf", model)
    device = next(hf.parameters()).device
    ids = torch.tensor([token_ids], device=device)  # [1, N]
    cache = {cache_argument(hf): DynamicCache(config=hf.config)}
    with sparse_attention(hf, method, recall=recall) as session:
        steps = [hf(ids[:, :prefix], logits_to_keep=1, **cache).logits[0, -1]]
        on_step()
        for t in range(prefix, len(token_ids) - 1):
            steps.append(hf(ids[:, t:t + 1], **cache).logits[0, -1])
            on_step()
    return DecodeRun(torch.stack(steps).float().cpu(), ids[0, prefix:].cpu(), session.log.attended_fraction(),
                     session.log.mean_recall(), session.log.frame())


def compare(dense: DecodeRun, sparse: DecodeRun) -> pd.DataFrame:
    """Per step: KL(dense || sparse) of the next-token distributions, top-1 agreement, and both NLLs."""
    dense_logp, sparse_logp = F.log_softmax(dense.logits, -1), F.log_softmax(sparse.logits, -1)  # [S, V]
    kl = (dense_logp.exp() * (dense_logp - sparse_logp)).sum(-1)
    pick = sparse.targets[:, None]
    return pd.DataFrame({
        "step": np.arange(len(kl)), "kl": kl.numpy(),
        "top1_agree": (dense.logits.argmax(-1) == sparse.logits.argmax(-1)).numpy(),
        "nll": -sparse_logp.gather(1, pick)[:, 0].numpy(), "dense_nll": -dense_logp.gather(1, pick)[:, 0].numpy(),
    })


def decode_prefix(n_tokens: int, n_prompt: int, decode_tokens: int) -> int:
    """Where decoding starts in an item of `n_tokens` whose answer starts at `n_prompt`: the last `decode_tokens`
    tokens, and at least the whole answer."""
    return min(n_prompt, max(1, n_tokens - decode_tokens))


def evaluate_item(model, tokenizer, item, method, *, decode_tokens: int = 32, recall: bool = False,
                  dense: DecodeRun | None = None, on_step=lambda: None
                  ) -> tuple[dict, pd.DataFrame, DecodeRun, DecodeRun]:
    """One item under `method` and dense attention: (summary row, per-step rows, dense run, sparse run).

    The last `decode_tokens` tokens (at least the whole answer) are decoded; the summary holds whether
    the answer is reproduced, the perplexity of the decoded tokens, mean KL and top-1 agreement. `on_step()` is
    called after each forward pass.
    """
    try:
        ids, n_prompt = item_tokens(tokenizer, item)
    except ValueError as e:
        raise WorkbenchError(str(e)) from None
    prefix = decode_prefix(len(ids), n_prompt, decode_tokens)
    dense = dense or teacher_forced(model, ids, prefix, DenseConfig(), on_step=on_step)
    sparse = teacher_forced(model, ids, prefix, method, recall=recall, on_step=on_step)
    steps = compare(dense, sparse)
    steps["position"] = np.arange(prefix, len(ids))
    answer = slice(n_prompt - prefix, None)
    correct = answer_reproduced(sparse.logits.argmax(-1)[answer].tolist(), sparse.targets[answer].tolist())
    summary = {"correct": correct, "nll": float(steps.nll.mean()), "kl": float(steps.kl.mean()),
               "top1_agreement": float(steps.top1_agree.mean()), "attended_fraction": sparse.attended_fraction,
               "recall": sparse.recall}
    return summary, steps, dense, sparse

