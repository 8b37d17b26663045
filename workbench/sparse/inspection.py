"""One inspection run (the `workbench sparse` command): a method on a prompt or on retrieval items, stored.

Each text is prefilled and its last tokens decoded teacher-forced, under the method (selections logged,
recall measured) and under dense attention; the selections and per-step agreement go to the database as
one `sparse` analysis, with a summary per text.
"""

from __future__ import annotations

import pandas as pd

from workbench.corpus.retrieval import TASKS, item_tokens
from workbench.errors import WorkbenchError
from workbench.recording import tokenize
from workbench.progress import ProgressArg, tracked
from workbench.sparse.accuracy import compare, decode_prefix, evaluate_item, teacher_forced
from workbench.sparse.dense import DenseConfig
from workbench.sparse.sweep import make_items, method_config


def inspect_texts(model, method: str, *, prompt: str | None = None, length: int | None = None,
                  budget: float = 0.25, decode_tokens: int = 16, seed: int = 0, store=None,
                  model_spec: str = "", progress: ProgressArg = False) -> tuple[int | None, pd.DataFrame]:
    """Run `method` on `prompt`, or on one retrieval item per task of `length` tokens; return (analysis id, summary)."""
    if (prompt is None) == (length is None):
        raise WorkbenchError("give either a prompt (--prompt TEXT) or retrieval items (--task retrieval --length N)")
    hf, tokenizer = model.hf, model.tokenizer
    if length is not None and length > model.max_positions:
        raise WorkbenchError(f"items of {length} tokens are longer than the model's context of {model.max_positions}")
    ids = tokenize(model, [prompt])[0] if prompt is not None else None
    config = method_config(method, budget, length if prompt is None else len(ids))
    summaries, steps, selections = [], [], []
    items = [] if prompt is not None else [(task, make_items(task, length, 1, seed)[0]) for task in TASKS]
    if prompt is not None:
        if len(ids) < 2:
            raise WorkbenchError("the prompt must be at least two tokens long")
        passes = [len(ids) - max(1, len(ids) - decode_tokens)]
    else:
        passes = [len(t) - decode_prefix(len(t), n, decode_tokens) for t, n in
                  (item_tokens(tokenizer, item) for _, item in items)]
    with tracked(progress, 2 * sum(passes), f"{method} against dense", "pass") as step:
        if prompt is not None:
            prefix = max(1, len(ids) - decode_tokens)
            dense = teacher_forced(hf, ids, prefix, DenseConfig(), on_step=step)
            sparse = teacher_forced(hf, ids, prefix, config, recall=True, on_step=step)
            rows = compare(dense, sparse).assign(position=range(prefix, len(ids)))
            runs = [("prompt", {"kl": rows.kl.mean(), "top1_agreement": rows.top1_agree.mean(),
                                "attended_fraction": sparse.attended_fraction, "recall": sparse.recall}, rows,
                     sparse)]
        else:
            runs = []
            for task, item in items:
                summary, rows, _, sparse = evaluate_item(hf, tokenizer, item, config, decode_tokens=decode_tokens,
                                                         recall=True, on_step=step)
                runs.append((task, summary, rows, sparse))
    for index, (task, summary, rows, sparse) in enumerate(runs):
        summaries.append({"item": index, "task": task, **summary})
        steps.append(rows.assign(item=index, task=task, method=method, budget=budget, length=length))
        selections.append(sparse.selections.assign(sequence=index))
    table = pd.DataFrame(summaries)
    if store is None:
        return None, table
    analysis_id = store.save_analysis(
        "sparse", {**config.to_dict(), "budget_share": budget, "decode_tokens": decode_tokens, "prompt": prompt,
                   "length": length, "seed": seed},
        {"selections": pd.concat(selections, ignore_index=True), "steps": pd.concat(steps, ignore_index=True)},
        model=model_spec, summary={"items": table.to_dict("records")})
    return analysis_id, table
