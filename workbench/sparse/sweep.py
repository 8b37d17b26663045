"""The accuracy–sparsity sweep: every method at every budget and context length on the retrieval tasks.

One budget knob for all methods, mapped to each method's own setting (`method_config`):
- dense: the control, run once per item (its budget is 1);
- delta: the share of pages kept in sparse layers during decode;
- anchor: the share of each region's candidate columns kept as stripes; at budget 1 theta is infinite
  (every candidate kept, so 100% is dense), below it the paper's theta of 12 applies before the cap;
  regions scale with the length (`AnchorConfig.for_length`);
- deltallm: the share of out-of-window scores recomputed per query (window 64).
The attended fraction each method actually reached is measured and stored beside its budget.
"""

from __future__ import annotations

import math
import random

import pandas as pd

from workbench.corpus import retrieval, stories
from workbench.corpus.retrieval import item_tokens
from workbench.errors import WorkbenchError
from workbench.progress import ProgressArg, tracked
from workbench.sparse.accuracy import decode_prefix, evaluate_item, teacher_forced
from workbench.sparse.anchor import AnchorConfig
from workbench.sparse.delta import DeltaConfig
from workbench.sparse.deltallm import DeltaLLMConfig
from workbench.sparse.dense import DenseConfig

METHODS = ("dense", "delta", "anchor", "deltallm")
SWEEP_COLUMNS = ["method", "budget", "length", "task", "n_items", "accuracy", "ppl", "kl", "top1_agreement",
                 "attended_fraction", "recall"]


def method_config(method: str, budget: float, length: int):
    """The config of `method` at a budget in (0, 1] for contexts of about `length` tokens."""
    if method not in METHODS:
        raise WorkbenchError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if not 0 < budget <= 1:
        raise WorkbenchError(f"budget must be a share in (0, 1], got {budget}")
    if method == "dense":
        return DenseConfig()
    if method == "delta":
        return DeltaConfig(budget=float(budget))
    if method == "anchor":
        return AnchorConfig.for_length(length, budget=float(budget), theta=math.inf if budget >= 1 else 12.0)
    return DeltaLLMConfig(budget=float(budget))


def make_items(task: str, length: int, n: int, seed: int = 0) -> list[retrieval.RetrievalItem]:
    """n fresh evaluation items (held-out sentences as filler), the same for the same seed."""
    rng = random.Random(f"sparse-sweep/{seed}/{task}/{length}")
    filler = lambda r: stories.sentence(r, stories.random_attributes(r), "test")
    return [retrieval.make_item(task, length, rng, filler) for _ in range(n)]


def run_sweep(model, tokenizer, *, methods=METHODS, budgets=(1.0, 0.5, 0.25, 0.1), lengths=(1024,),
              tasks=retrieval.TASKS, n_items: int = 10, decode_tokens: int = 32, recall: bool = False,
              seed: int = 0, progress: ProgressArg = True, on_group=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(sweep rows per method, budget, length and task; per-step rows) over fresh retrieval items.
    `on_group(sweep rows, step rows)` receives each length and task's rows as they are finished."""
    runs = [(m, 1.0) for m in methods if m == "dense"] + [(m, b) for m in methods if m != "dense" for b in budgets]
    context = getattr(model.config, "max_position_embeddings", None)
    if context is not None and max(lengths) > context:
        raise WorkbenchError(f"items of {max(lengths)} tokens are longer than the model's context of {context}")
    sweeps, steps = [], []
    groups = [(length, task) for length in lengths for task in tasks]
    with tracked(progress, len(groups) * n_items * len(runs), "sparsity sweep", "run") as step:
        for length, task in groups:
            summaries, group_steps = [], []
            for index, item in enumerate(make_items(task, length, n_items, seed)):
                ids, n_prompt = item_tokens(tokenizer, item)
                dense = teacher_forced(model, ids, decode_prefix(len(ids), n_prompt, decode_tokens), DenseConfig())
                for method, budget in runs:
                    summary, rows, _, _ = evaluate_item(model, tokenizer, item, method_config(method, budget, length),
                                                        decode_tokens=decode_tokens, recall=recall, dense=dense)
                    tags = {"method": method, "budget": budget, "length": length, "task": task, "item": index}
                    summaries.append({**tags, **summary})
                    group_steps.append(rows.assign(**tags))
                    step(note=f"{task} at {length}: {method} {budget:g}")
            sweeps.append(summarize(pd.DataFrame(summaries)))
            steps.append(pd.concat(group_steps, ignore_index=True))
            if on_group is not None:
                on_group(sweeps[-1], steps[-1])
    return pd.concat(sweeps, ignore_index=True), pd.concat(steps, ignore_index=True)


def summarize(items: pd.DataFrame) -> pd.DataFrame:
    """Per method, budget, length and task: accuracy, perplexity (exp of mean NLL), KL, agreement, fraction."""
    grouped = items.groupby(["method", "budget", "length", "task"], sort=False)
    table = grouped.agg(n_items=("item", "size"), accuracy=("correct", "mean"), nll=("nll", "mean"),
                        kl=("kl", "mean"), top1_agreement=("top1_agreement", "mean"),
                        attended_fraction=("attended_fraction", "mean"), recall=("recall", "mean")).reset_index()
    table["ppl"] = table.pop("nll").map(math.exp)
    return table[SWEEP_COLUMNS]


def accuracy_curve(sweep: pd.DataFrame) -> pd.DataFrame:
    """The accuracy–sparsity curve for a picture: accuracy by budget (rows) and method (columns), over tasks;
    dense is a flat line at its one measurement."""
    curve = sweep.groupby(["budget", "method"]).accuracy.mean().unstack("method")
    if "dense" in curve:
        curve["dense"] = curve["dense"].dropna().iloc[0]
    return curve.sort_index(ascending=False)


STEP_COLUMNS = ["method", "budget", "length", "task", "item", "step", "position", "kl", "top1_agree", "nll",
                "dense_nll"]


def record_sweep(store, model_spec: str, model, tokenizer, config: dict, **sweep) -> tuple[int, pd.DataFrame]:
    """`run_sweep(model, tokenizer, **sweep)` stored as one `sparse-sweep` analysis, each length and task's rows
    as they finish (a stopped sweep keeps them, its summary partial); returns (analysis id, sweep rows)."""
    groups = len(sweep.get("lengths", (1024,))) * len(sweep.get("tasks", retrieval.TASKS))
    analysis_id = store.start_analysis("sparse-sweep", config, groups, model=model_spec)
    done = 0

    def keep(sweep_rows, step_rows):
        nonlocal done
        done += 1
        store.append_analysis(analysis_id, {"sweep": sweep_rows, "steps": step_rows[STEP_COLUMNS]}, done)

    table, _ = run_sweep(model, tokenizer, on_group=keep, **sweep)
    store.finish_analysis(analysis_id, {"curve": accuracy_curve(table).reset_index().to_dict("records")})
    return analysis_id, table
