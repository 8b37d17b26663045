"""Massive activations (Sun et al. 2024): find them in a recorded run, tie them to attention sinks, ablate them.

Detection reads only what a recording stores: each token's top-k dimensions by |x|
and the exact median |x| of each prompt's whole hidden state at each layer, the
denominator of the paper's ratio (`Store.top_activations`). The top-n
activations of a hidden state are exact as long as n <= the run's top-k, because the
n largest entries of a state are among the n largest of their own tokens.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from workbench.config import MassiveConfig, RecordConfig
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.recording import capture, record, tokenize
from workbench.store import Store

DELIMITERS = {".", ",", ";", ":", "!", "?", "-", "\n", ""}

def token_kind(position: int, token: str) -> str:
    """'first' for the starting token, 'delimiter' for punctuation and whitespace tokens, else 'other'."""
    if position == 0:
        return "first"
    return "delimiter" if token.strip() in DELIMITERS else "other"


def findings(store: Store, run_id: int, config: MassiveConfig) -> pd.DataFrame:
    """Per prompt and layer, the `top_n` largest |activations| with position, token, kind, dim, ratio and flag."""
    run = store.completed_run(run_id)
    recorded_k = run["config"].get("top_k", 0)
    if config.top_n > recorded_k:
        raise WorkbenchError(f"run {run_id} kept the top {recorded_k} dims per token; top_n {config.top_n} "
                             f"would not be exact: lower top_n or record with --top-k {config.top_n}")
    rows = store.top_activations(run_id, config.site, config.top_n)
    if rows.empty:
        raise WorkbenchError(f"run {run_id} has no {config.site!r} statistics to search")
    rows["token_kind"] = [token_kind(p, t) for p, t in zip(rows.position, rows.token)]
    rows["ratio"] = rows.value.abs() / rows.median_abs
    rows["is_massive"] = config.is_massive(rows.value.abs(), rows.median_abs)
    return rows


def layer_table(found: pd.DataFrame) -> pd.DataFrame:
    """Per layer: mean top-1/2/3 |activation| and median over prompts, their ratio, share of prompts flagged."""
    magnitude = found.assign(abs_value=found.value.abs())
    tops = magnitude.pivot_table(index="layer", columns="rank", values="abs_value", aggfunc="mean")
    tops.columns = [f"top{r}" for r in tops.columns]
    firsts = magnitude[magnitude["rank"] == 1]
    table = tops.join(firsts.groupby("layer").agg(
        median=("median_abs", "mean"),
        top1_dim=("dim", lambda d: int(d.mode().iloc[0])),
        top1_kind=("token_kind", lambda k: k.mode().iloc[0]),
        massive_share=("is_massive", "mean"),
    ))
    table["ratio"] = table.top1 / table["median"]  # ratio of means, as Gallego-Feliciano et al. average
    return table.reset_index()


def summarize_findings(found: pd.DataFrame, nonfinite: dict | None) -> dict:
    """Where massive activations live: layers, recurring dimensions, token kinds, and a plain statement."""
    massive = found[found.is_massive]
    n_prompts = found.prompt_id.nunique()
    summary = {"massive_found": not massive.empty, "n_prompts": int(n_prompts),
               "max_abs": float(found.value.abs().max()), "max_ratio": float(found.ratio.max()),
               "nonfinite": nonfinite}
    if massive.empty:
        best = found.loc[found.ratio.idxmax()]
        summary["statement"] = (
            f"No massive activations by this criterion: the strongest against its state's median is "
            f"|a| = {abs(best.value):.1f} at layer {best.layer}, dim {best.dim}, on a {best.token_kind} token, "
            f"{best.ratio:.0f}x that median (the largest |a| anywhere is {summary['max_abs']:.1f}).")
    else:
        dims = massive.groupby("dim").agg(findings=("prompt_id", "size"), prompts=("prompt_id", "nunique"),
                                          first_layer=("layer", "min"), last_layer=("layer", "max"))
        kinds = massive.token_kind.value_counts().to_dict()
        summary |= {
            "first_layer": int(massive.layer.min()), "last_layer": int(massive.layer.max()),
            "dims": dims.sort_values("findings", ascending=False).reset_index().to_dict("records"),
            "token_kinds": {k: int(v) for k, v in kinds.items()},
        }
        top_dims = ", ".join(str(d["dim"]) for d in summary["dims"][:3])
        summary["statement"] = (
            f"Massive activations found in {massive.prompt_id.nunique()} of {n_prompts} prompts, from layer "
            f"{summary['first_layer']} to {summary['last_layer']}, in dims {top_dims}, on "
            + ", ".join(f"{n} {k}" for k, n in kinds.items()) + " token findings; up to "
            f"{summary['max_abs']:.1f} and {summary['max_ratio']:.0f}x the median.")
    if nonfinite:
        summary["statement"] += (f" Non-finite values first appear at layer {nonfinite['layer']}, prompt "
                                 f"{nonfinite['prompt_id']}, position {nonfinite['position']}: numbers past it are "
                                 "not reported as activations (fp16 overflow?).")
    return summary


def detect(store: Store, run_id: int, config: MassiveConfig | None = None) -> int:
    """Find massive activations in a recorded run; store the findings and summary; return the analysis id."""
    config = config or MassiveConfig()
    found = findings(store, run_id, config)
    nonfinite = store.first_nonfinite(run_id, config.site)
    if nonfinite:  # garbage past the first overflow: keep only the layers before it
        found = found[found.layer < nonfinite["layer"]]
    summary = summarize_findings(found, nonfinite) if not found.empty else {
        "massive_found": False, "nonfinite": nonfinite,
        "statement": f"Non-finite values from layer {nonfinite['layer']} on; nothing to report."}
    columns = ["prompt_id", "layer", "rank", "position", "token", "token_kind", "dim", "value", "median_abs",
               "ratio", "is_massive"]
    return store.save_analysis("massive", config.to_dict(), {"findings": found[columns]}, run_id=run_id,
                               model=store.run(run_id)["model"], summary=summary)


def detect_prompts(model: LoadedModel, prompts: list[str], store: Store, config: MassiveConfig | None = None,
                   progress=True) -> int:
    """Record `prompts` (summaries only) and find massive activations in them; return the analysis id."""
    config = config or MassiveConfig()
    run_id = record(model, prompts, store, RecordConfig(top_k=max(8, config.top_n)), progress=progress)
    return detect(store, run_id, config)


def sink_positions(store: Store, analysis_id: int) -> dict[int, list[int]]:
    """Per prompt, the positions of tokens carrying massive activations (else each prompt's top-1 token)."""
    found = store.massive_findings(analysis_id)
    chosen = found[found.is_massive]
    if chosen.empty:  # no massive activation: fall back to the strongest token at the most extreme layer
        layer = found.groupby("layer").ratio.mean().idxmax()
        chosen = found[(found.layer == layer) & (found["rank"] == 1)]
    return {int(p): sorted(set(g.position.astype(int))) for p, g in chosen.groupby("prompt_id")}


def sink_attention(model: LoadedModel, store: Store, analysis_id: int) -> int:
    """Per layer and head, the share of attention that goes to the massive-activation tokens.

    Averaged over every query of every prompt of the analysed run (a query sees only sink
    tokens at or before it); `uniform_share` is what uniform causal attention would give.
    """
    if not model.eager_attention:
        raise WorkbenchError("attention shares need eager attention: load the model with attention=True")
    analysis = store.analysis(analysis_id)
    prompts = store.prompts(analysis["run_id"])
    sinks = sink_positions(store, analysis_id)
    layers = list(range(model.n_layers))
    shares, uniform = np.zeros((model.n_layers, model.n_heads)), 0.0
    n_queries = 0
    for prompt_id, text in zip(prompts.prompt_id, prompts.text):
        ids = torch.tensor([tokenize(model, [text])[0]], device=model.device)
        pattern = torch.stack(capture(model, ids, torch.ones_like(ids), layers, RecordConfig(attention=True))["pattern"])
        keys = torch.tensor(sinks.get(int(prompt_id), []), dtype=torch.long, device=model.device)
        n = ids.shape[1]
        shares += pattern[:, 0][..., keys].sum(-1).sum(-1).float().cpu().numpy()  # [L, H]
        uniform += sum(int((keys <= q).sum()) / (q + 1) for q in range(n))
        n_queries += n
    firsts = store.massive_findings(analysis_id).query("rank == 1")
    top = firsts.value.abs().groupby(firsts.layer).mean()
    table = pd.DataFrame([
        {"layer": layer, "head": head, "sink_share": shares[layer, head] / n_queries,
         "uniform_share": uniform / n_queries, "top_abs": float(top.get(layer, np.nan))}
        for layer in layers for head in range(model.n_heads)])
    return store.save_analysis("massive-sinks", {"detection": analysis_id}, {"shares": table},
                               run_id=analysis["run_id"], model=model.spec,
                               summary={"mean_sink_share": float(table.sink_share.mean()),
                                        "uniform_share": float(uniform / n_queries)})
