"""Figures as pure functions from data to plotly figures, shared by the app and the scripts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.deltanet.decay import ROLES


def token_layer_heatmap(stats: pd.DataFrame, tokens: pd.DataFrame, value: str = "l2_norm") -> go.Figure:
    """Heatmap of one per-token statistic (rows: layers, columns: tokens) for one prompt.

    `stats` has columns position, layer and `value`; `tokens` has position and token.
    """
    grid = stats.pivot_table(index="layer", columns="position", values=value)
    labels = tokens.set_index("position").token.reindex(grid.columns).fillna("")
    figure = go.Figure(go.Heatmap(
        z=grid.to_numpy(), x=[f"{p}:{t!r}" for p, t in zip(grid.columns, labels)], y=grid.index.tolist(),
        colorscale="Viridis", colorbar={"title": value},
    ))
    figure.update_layout(xaxis_title="token", yaxis_title="layer", margin={"t": 30}, height=140 + 22 * len(grid))
    return figure


def _token_labels(tokens) -> list[str]:
    """Unique axis labels 'position:token' (plotly merges equal category labels)."""
    return [f"{p}:{t!r}" for p, t in enumerate(tokens)]


def _weight_scale(weights) -> dict:
    """Blues over [0, 1] for softmax attention; a diverging scale centred at 0 when weights are negative (the
    effective attention of a delta-rule layer)."""
    low = float(np.nanmin(weights)) if np.size(weights) else 0.0  # NaN marks the masked (future) keys
    if low >= 0:
        return {"colorscale": "Blues", "cmin": 0, "cmax": 1}
    bound = float(np.nanmax(np.abs(weights)))
    return {"colorscale": "RdBu", "cmin": -bound, "cmax": bound}


def attention_map(weights, tokens, title: str = "") -> go.Figure:
    """One head's attention [T, T] (query rows, key columns) with the tokens on both axes."""
    labels = _token_labels(tokens)
    scale = _weight_scale(weights)
    figure = go.Figure(go.Heatmap(z=weights, x=labels, y=labels, colorscale=scale["colorscale"], zmin=scale["cmin"],
                                  zmax=scale["cmax"], colorbar={"title": "weight"},
                                  hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.3f}<extra></extra>"))
    side = min(900, 260 + 18 * len(labels))
    figure.update_layout(title=title, xaxis_title="key", yaxis_title="query", height=side,
                         yaxis={"autorange": "reversed"}, margin={"t": 40})
    return figure


def window_map(weights, rows: list[str], columns: list[str], title: str = "") -> go.Figure:
    """A window of one head's attention (query rows, key columns) with the given unique axis labels."""
    figure = go.Figure(go.Heatmap(z=weights, x=columns, y=rows, colorscale="Blues", zmin=0,
                                  zmax=float(np.max(weights)) if np.size(weights) else 1, colorbar={"title": "weight"},
                                  hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.4f}<extra></extra>"))
    figure.update_layout(title=title, xaxis_title="key", yaxis_title="query", height=min(900, 260 + 14 * len(rows)),
                         yaxis={"autorange": "reversed"}, margin={"t": 40})
    return figure


def tile_map(tiles: pd.DataFrame, n_tokens: int, title: str = "") -> go.Figure:
    """A long prompt's attention overview: the mass of every query block x key block tile (rows of
    `attention_tiles`: block, query_block, key_block, mass), each axis labelled with its token ranges."""
    block = int(tiles.block.iloc[0])
    grid = tiles.pivot(index="query_block", columns="key_block", values="mass").sort_index()
    labels = [f"{i * block}-{min(n_tokens, (i + 1) * block) - 1}" for i in range(max(grid.shape))]
    figure = go.Figure(go.Heatmap(z=grid.to_numpy(), x=labels[:grid.shape[1]], y=labels[:grid.shape[0]],
                                  colorscale="Blues", zmin=0, colorbar={"title": "mass"},
                                  hovertemplate="queries %{y}<br>keys %{x}<br>mass %{z:.3f}<extra></extra>"))
    figure.update_layout(title=title, xaxis_title=f"keys ({block} a tile)", yaxis_title=f"queries ({block} a tile)",
                         height=min(900, 300 + 6 * len(grid)), yaxis={"autorange": "reversed"}, margin={"t": 40})
    return figure


def attention_grid(weights, tokens, columns: int = 4) -> go.Figure:
    """Small attention maps [H, T, T] of every head of one layer, sharing one colour scale."""
    n_heads = len(weights)
    rows = -(-n_heads // columns)
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=[f"head {h}" for h in range(n_heads)],
                           horizontal_spacing=0.03, vertical_spacing=0.08)
    labels = _token_labels(tokens)
    for head in range(n_heads):
        figure.add_trace(go.Heatmap(z=weights[head], x=labels, y=labels, coloraxis="coloraxis",
                                    hovertemplate=f"head {head}<br>query %{{y}}<br>key %{{x}}<br>"
                                                  "weight %{z:.3f}<extra></extra>"),
                         row=head // columns + 1, col=head % columns + 1)
    figure.update_xaxes(showticklabels=False)
    figure.update_yaxes(showticklabels=False, autorange="reversed")
    figure.update_layout(coloraxis=_weight_scale(weights), height=230 * rows,
                         margin={"t": 40})
    return figure


def sink_mass_heatmap(table: pd.DataFrame) -> go.Figure:
    """Per-head attention-sink mass: layers x heads, from `attention.sink_mass` (layer, head, sink_mass)."""
    grid = table.pivot_table(index="layer", columns="head", values="sink_mass")
    figure = go.Figure(go.Heatmap(z=grid.to_numpy(), x=[f"head {h}" for h in grid.columns], y=grid.index.tolist(),
                                  colorscale="Blues", zmin=0, zmax=1, texttemplate="%{z:.2f}",
                                  colorbar={"title": "mass on<br>position 0"}))
    figure.update_layout(xaxis_title="head", yaxis_title="layer", height=160 + 30 * len(grid), margin={"t": 30},
                         yaxis={"dtick": 1})
    return figure


def massive_by_layer(layers: pd.DataFrame) -> go.Figure:
    """Mean top-1/2/3 and median |activation| per layer (from `massive.layer_table`), on a log axis."""
    figure = go.Figure()
    for column in [c for c in ("top1", "top2", "top3", "median") if c in layers]:
        figure.add_trace(go.Scatter(x=layers.layer, y=layers[column], mode="lines+markers", name=column))
    figure.update_layout(xaxis_title="layer", yaxis_title="|activation|", yaxis_type="log", margin={"t": 30},
                         height=360, xaxis={"dtick": 1})
    return figure


def layer_dim_heatmap(table: pd.DataFrame) -> go.Figure:
    """Largest |activation| per layer and dimension (layer, dim, max_abs), dimensions as columns."""
    grid = table.pivot_table(index="layer", columns="dim", values="max_abs")
    figure = go.Figure(go.Heatmap(z=grid.to_numpy(), x=[str(d) for d in grid.columns], y=grid.index.tolist(),
                                  colorscale="Inferno", colorbar={"title": "max |x|"},
                                  hovertemplate="layer %{y}<br>dim %{x}<br>max |x| %{z:.2f}<extra></extra>"))
    figure.update_layout(xaxis_title="dimension", yaxis_title="layer", xaxis_type="category",
                         height=160 + 26 * len(grid), margin={"t": 30}, yaxis={"dtick": 1})
    return figure


def dynamics_figure(metrics: pd.DataFrame, curves: pd.DataFrame, metric: str, log_steps: bool = True,
                    label: str | None = None) -> go.Figure:
    """One metric per layer across training steps (points) with each layer's fitted curve (lines); `label` names
    the metric and its pooling on the y axis."""
    chosen = metrics[metrics.metric == metric]
    if log_steps:
        chosen, curves = chosen[chosen.step > 0], curves[curves.step > 0]
    figure = go.Figure()
    palette = px.colors.qualitative.Plotly
    for i, (layer, series) in enumerate(chosen.groupby("layer")):
        color = palette[i % len(palette)]
        figure.add_trace(go.Scatter(x=series.step, y=series.value, mode="markers", name=f"layer {layer}",
                                    marker={"color": color}, legendgroup=str(layer)))
        fitted = curves[curves.layer == layer]
        if not fitted.empty:
            figure.add_trace(go.Scatter(x=fitted.step, y=fitted.value, mode="lines", name=f"layer {layer} fit",
                                        line={"color": color}, legendgroup=str(layer), showlegend=False))
    figure.update_layout(xaxis_title="training step", yaxis_title=label or metric,
                         xaxis_type="log" if log_steps else "linear",
                         height=420, margin={"t": 30})
    return figure


def ablation_figure(trials: pd.DataFrame) -> go.Figure:
    """Perplexity before and after each ablation mode (`massive_ablation.ablate`'s rows), on a log axis."""
    names = ["none"] + trials["mode"].tolist()
    values = [trials.ppl_base.iloc[0]] + trials.ppl_ablated.tolist()
    figure = go.Figure(go.Bar(x=names, y=values, text=[f"{v:.3g}" for v in values], textposition="outside"))
    figure.update_layout(xaxis_title="ablation", yaxis_title="perplexity", yaxis_type="log", height=340,
                         margin={"t": 30})
    return figure


def separation_figure(directions: pd.DataFrame) -> go.Figure:
    """Held-out AUROC and accuracy of each layer's direction, and its norm relative to the residual."""
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    for column in ("auroc", "accuracy"):
        figure.add_trace(go.Scatter(x=directions.layer, y=directions[column], mode="lines+markers", name=column))
    figure.add_trace(go.Bar(x=directions.layer, y=directions.relative_norm, name="relative norm", opacity=0.3),
                     secondary_y=True)
    figure.update_yaxes(title_text="held-out score", range=[0, 1.05], secondary_y=False)
    figure.update_yaxes(title_text="|direction| / |residual|", secondary_y=True)
    figure.update_layout(xaxis_title="layer", height=380, margin={"t": 30}, xaxis={"dtick": 1})
    return figure


def cosine_figure(matrix: pd.DataFrame) -> go.Figure:
    """Cosine similarity between the directions of every pair of layers (`directions.cosine_matrix`)."""
    figure = go.Figure(go.Heatmap(z=matrix.to_numpy(), x=matrix.columns.tolist(), y=matrix.index.tolist(),
                                  colorscale="RdBu", zmin=-1, zmax=1, texttemplate="%{z:.2f}",
                                  colorbar={"title": "cosine"}))
    figure.update_layout(xaxis_title="layer", yaxis_title="layer", yaxis={"autorange": "reversed", "dtick": 1},
                         xaxis={"dtick": 1}, height=160 + 34 * len(matrix), margin={"t": 30})
    return figure


def projection_histogram(projections: pd.DataFrame) -> go.Figure:
    """Projections onto one layer's direction, one histogram per label, training and held-out side by side."""
    splits = [s for s in ("train", "test") if s in set(projections.split)]
    figure = make_subplots(rows=1, cols=len(splits), subplot_titles=[{"train": "training", "test": "held-out"}[s]
                                                                     for s in splits], shared_yaxes=True)
    palette = px.colors.qualitative.Set1
    for col, split in enumerate(splits, start=1):
        for i, (label, rows) in enumerate(projections[projections.split == split].groupby("label")):
            figure.add_trace(go.Histogram(x=rows.projection, name=label, opacity=0.6, legendgroup=label,
                                          marker={"color": palette[i % len(palette)]}, showlegend=col == 1),
                             row=1, col=col)
    figure.update_layout(barmode="overlay", xaxis_title="projection", height=340, margin={"t": 40})
    return figure


def sweep_heatmap(sweep: pd.DataFrame, metric: str) -> go.Figure:
    """One steering-sweep metric over layers x alphas (`steering_eval.sweep`'s table)."""
    grid = sweep.pivot_table(index="layer", columns="alpha", values=metric)
    diverging = metric == "concept_shift"
    figure = go.Figure(go.Heatmap(
        z=grid.to_numpy(), x=[f"{a:g}" for a in grid.columns], y=grid.index.tolist(), texttemplate="%{z:.2f}",
        colorscale="RdBu" if diverging else "Viridis", zmid=0 if diverging else None, colorbar={"title": metric}))
    figure.update_layout(xaxis_title="alpha", yaxis_title="layer", xaxis_type="category",
                         height=160 + 40 * len(grid), margin={"t": 30}, yaxis={"dtick": 1})
    return figure


def selection_figure(matrix: pd.DataFrame, rows_label: str) -> go.Figure:
    """A sparse method's selections of one layer: rows (decode step or query region), key positions as
    columns, the logged score where a key was kept and 0 where it was not
    (`sparse.selections.method_picture`)."""
    hover = f"{rows_label} %{{y}}<br>key %{{x}}<br>score %{{z:.3g}}<extra></extra>"
    figure = go.Figure(go.Heatmap(z=matrix.to_numpy(), x=list(matrix.columns), y=list(matrix.index),
                                  colorscale="Viridis", colorbar={"title": "score"}, hovertemplate=hover))
    figure.update_layout(xaxis_title="key position", yaxis_title=rows_label, margin={"t": 30},
                         height=min(700, 200 + 14 * len(matrix)), yaxis={"autorange": "reversed"})
    return figure


def recall_figure(table: pd.DataFrame) -> go.Figure:
    """Per layer and phase: the attended fraction and the recall (dense attention mass kept)."""
    figure = go.Figure()
    for column in ("attended_fraction", "recall"):
        for phase, rows in table.groupby("phase"):
            name = f"{column.replace('_', ' ')} ({phase})"
            figure.add_trace(go.Bar(x=rows.layer, y=rows[column], name=name))
    figure.update_layout(barmode="group", xaxis_title="layer", yaxis_title="share", yaxis_range=[0, 1.05],
                         xaxis={"dtick": 1}, height=340, margin={"t": 30})
    return figure


def accuracy_sparsity_figure(curve: pd.DataFrame) -> go.Figure:
    """Retrieval accuracy against budget per method (`sparse.sweep.accuracy_curve`); dense is the top line."""
    figure = go.Figure()
    for method in curve.columns:
        points = curve[method].dropna()
        figure.add_trace(go.Scatter(x=points.index, y=points, name=method, mode="lines+markers",
                                    line={"dash": "dash"} if method == "dense" else {}))
    figure.update_layout(xaxis_title="budget (share kept)", yaxis_title="retrieval accuracy",
                         yaxis_range=[0, 1.05], xaxis={"autorange": "reversed", "tickformat": ".0%"}, height=360,
                         margin={"t": 30})
    return figure


def memory_writes_figure(rows: pd.DataFrame, tokens) -> go.Figure:
    """One delta-rule head over a prompt (its rows of a delta-memory analysis): per token the size of its write |beta v|,
    what its erase removed |beta S^T k|, the net change |dS|, and beta on a second axis."""
    labels = _token_labels(tokens)
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    for column, name in (("written", "written |βv|"), ("erased", "erased |βSᵀk|"), ("delta", "change |ΔS|")):
        figure.add_trace(go.Bar(x=labels, y=rows[column], name=name), secondary_y=False)
    figure.add_trace(go.Scatter(x=labels, y=rows["beta"], name="β (write strength)", mode="lines+markers",
                                line={"color": "black"}), secondary_y=True)
    figure.update_yaxes(title_text="norm", secondary_y=False)
    figure.update_yaxes(title_text="β", range=[0, max(1.0, float(rows["beta"].max()))], secondary_y=True)
    figure.update_layout(barmode="group", xaxis_title="token", height=360, margin={"t": 30})
    return figure


def memory_state_figure(rows: pd.DataFrame, tokens) -> go.Figure:
    """A delta-rule layer's state over a prompt: |S_t| and its numerical rank per head (a delta-memory analysis's rows)."""
    labels = _token_labels(tokens)
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, subplot_titles=["state norm |S|", "numerical rank"],
                           vertical_spacing=0.12)
    for head, per_head in rows.groupby("head"):
        per_head = per_head.sort_values("position")
        x = [labels[p] for p in per_head.position]
        for row, column in ((1, "state_norm"), (2, "state_rank")):
            figure.add_trace(go.Scatter(x=x, y=per_head[column], name=f"head {head}", legendgroup=str(head),
                                        showlegend=row == 1, mode="lines"), row=row, col=1)
    figure.update_layout(height=440, margin={"t": 40})
    return figure


def memory_span_figure(decay: pd.DataFrame) -> go.Figure:
    """How long each head of a delta-rule layer remembers (its rows of `delta_decay`): the decay's half-life and the
    effective attention's median span, in tokens on a log axis, coloured by the head's role; a head that does not
    decay has no half-life bar, and the title says so."""
    figure = go.Figure()
    for role, color in zip(ROLES, ("#d95f02", "#7570b3", "#1b9e77")):
        heads = decay[decay.role == role]
        if heads.empty:
            continue
        x = [f"head {h}" for h in heads["head"]]
        finite = heads.half_life.where(np.isfinite(heads.half_life))
        figure.add_trace(go.Bar(x=x, y=finite, name=f"half-life ({role})",
                                marker={"color": color, "opacity": 0.45},
                                customdata=heads.half_life, hovertemplate="%{x}: half-life %{customdata:.3g} tokens"))
        figure.add_trace(go.Bar(x=x, y=heads.span_median.clip(lower=0.5), name=f"median span ({role})",
                                marker={"color": color}, customdata=heads.span_median,
                                hovertemplate="%{x}: median span %{customdata:.0f} tokens"))
    title = "no decay: the gate never halves a write" if np.isinf(decay.half_life).all() else ""
    figure.update_layout(barmode="group", yaxis={"type": "log", "title": "tokens", "dtick": 1}, height=360,
                         margin={"t": 40}, title=title)
    return figure


LENS_VALUES = {"target_prob": "probability of the target", "kl_to_final": "KL to the final layer",
               "entropy": "entropy (nats)"}
LENS_TEXT_POSITIONS = 64  # cells carry their top token up to this many positions; beyond, the hover alone


def lens_map(rows: pd.DataFrame, value: str, title: str = "") -> go.Figure:
    """Layer x position of a lens (its rows of `logit_lens`): `value` as colour, the lens's top token written in
    each cell (for prompts up to `LENS_TEXT_POSITIONS` tokens), the top tokens with their probabilities on hover."""
    rows = rows.sort_values(["layer", "position"])
    layers, positions = sorted(rows.layer.unique()), sorted(rows.position.unique())
    labels = _token_labels(rows[rows.layer == layers[0]].token.tolist())
    shape = (len(layers), len(positions))
    z = rows[value].to_numpy(dtype=float).reshape(shape)
    hover = [" ".join(f"{t!r} {p:.2f}" for t, p in zip(tokens, probs, strict=True))
             for tokens, probs in zip(rows.top_tokens, rows.top_probs, strict=True)]
    top1 = [tokens[0] for tokens in rows.top_tokens]
    figure = go.Figure(go.Heatmap(
        z=z, x=labels, y=[f"layer {layer}" for layer in layers], colorscale="Viridis", colorbar={"title": value},
        zmin=0, zmax=1 if value == "target_prob" else None,
        text=np.array(top1, dtype=object).reshape(shape) if len(positions) <= LENS_TEXT_POSITIONS else None,
        texttemplate="%{text}" if len(positions) <= LENS_TEXT_POSITIONS else None,
        customdata=np.array(hover, dtype=object).reshape(shape),
        hovertemplate="%{y}, %{x}<br>%{z:.3f}<br>top: %{customdata}<extra></extra>"))
    figure.update_layout(title=title, height=200 + 34 * len(layers), margin={"t": 40}, xaxis_title="position")
    return figure


def patching_map(rows: pd.DataFrame, value: str = "restored", title: str = "") -> go.Figure:
    """One site of an activation-patching grid: layer x position (the corrupted prompt's tokens on the axis) or,
    for heads, layer x head; `value` is `restored` (exact) or `estimated` (attribution patching), centred at 0."""
    heads = (rows.site == "head").all()
    column = "head" if heads else "position"
    grid = rows.pivot(index="layer", columns=column, values=value).sort_index()
    if heads:
        x = [f"head {h}" for h in grid.columns]
    else:
        tokens = rows.drop_duplicates("position").sort_values("position").token.tolist()
        x = _token_labels(tokens)
    bound = float(np.nanmax(np.abs(grid.to_numpy()))) if grid.size else 1.0
    figure = go.Figure(go.Heatmap(z=grid.to_numpy(), x=x, y=[f"layer {layer}" for layer in grid.index],
                                  colorscale="RdBu", zmid=0, zmin=-bound, zmax=bound, colorbar={"title": value},
                                  hovertemplate="%{y}, %{x}: %{z:.3f}<extra></extra>"))
    figure.update_layout(title=title, height=200 + 30 * len(grid), margin={"t": 40})
    return figure


def lens_kl_figure(rows: pd.DataFrame) -> go.Figure:
    """Mean KL to the final layer by layer, one line per lens (logit, tuned): the tuned lens's figure."""
    figure = go.Figure()
    for lens, per_lens in rows.groupby("lens"):
        kl = per_lens.groupby("layer").kl_to_final.mean()
        figure.add_trace(go.Scatter(x=kl.index, y=kl.to_numpy(), name=f"{lens} lens", mode="lines+markers"))
    figure.update_layout(xaxis_title="layer", yaxis_title="KL to the final layer (nats)", height=320,
                         margin={"t": 30})
    return figure


def divergence_map(heads: pd.DataFrame) -> go.Figure:
    """Layer x head: how far apart two prompts leave a delta-rule memory (the final states' relative distance,
    the rows of a delta-memory comparison's `heads`)."""
    grid = heads.pivot(index="layer", columns="head", values="state_distance").sort_index()
    figure = go.Figure(go.Heatmap(z=grid.to_numpy(), x=[f"head {h}" for h in grid.columns],
                                  y=[f"layer {layer}" for layer in grid.index], zmin=0, colorscale="Magma",
                                  colorbar={"title": "distance"},
                                  hovertemplate="%{y}, %{x}: final states %{z:.3f} apart<extra></extra>"))
    figure.update_layout(height=160 + 30 * len(grid), margin={"t": 30})
    return figure


def readout_divergence_figure(tokens: pd.DataFrame) -> go.Figure:
    """One layer's heads along the two prompts' aligned tokens: how differently each memory answers the same
    query (the read-outs' relative distance), labelled with both prompts' tokens."""
    figure = go.Figure()
    for head, rows in tokens.groupby("head"):
        rows = rows.sort_values("step")
        labels = [a if a == b else f"{a} | {b}" for a, b in zip(rows.token_a, rows.token_b)]
        figure.add_trace(go.Scatter(x=rows.step, y=rows.readout_distance, name=f"head {head}", mode="lines+markers",
                                    text=labels, hovertemplate="%{text}: %{y:.3f}<extra></extra>"))
    figure.update_layout(xaxis_title="aligned token", yaxis_title="read-out distance", height=340, margin={"t": 30})
    return figure


def retention_map(rows: pd.DataFrame, tokens) -> go.Figure:
    """Per head and token of a delta-rule layer, the share of the state each token's decay keeps, exp(log_decay)
    (1: nothing forgotten; a per-channel decay averaged in log space over the key channels)."""
    labels = _token_labels(tokens)
    grid = rows.pivot(index="head", columns="position", values="log_decay").sort_index()
    figure = go.Figure(go.Heatmap(z=np.exp(grid.to_numpy()), x=labels, y=[f"head {h}" for h in grid.index],
                                  zmin=0, zmax=1, colorscale="Viridis", colorbar={"title": "kept"},
                                  hovertemplate="%{y}, token %{x}: keeps %{z:.3f}<extra></extra>"))
    figure.update_layout(height=160 + 22 * len(grid), margin={"t": 30}, xaxis_title="token")
    return figure


def signed_map(weights, tokens, title: str = "", value: str = "weight") -> go.Figure:
    """A [T, T] map (query or step rows, key or writer columns): centred at 0 on a diverging scale where values
    are negative (a delta-rule layer's effective attention subtracts as well as adds), white at 0 on a
    sequential scale over 0..1 where none is (a share, such as what survives of each write)."""
    labels = _token_labels(tokens)
    low, bound = float(np.nanmin(weights)), float(np.nanmax(np.abs(weights))) or 1.0
    scale = ({"colorscale": "RdBu", "zmid": 0, "zmin": -bound, "zmax": bound} if low < 0 else
             {"colorscale": "Blues", "zmin": 0, "zmax": max(1.0, bound)})
    figure = go.Figure(go.Heatmap(z=weights, x=labels, y=labels, **scale, colorbar={"title": value},
                                  hovertemplate=f"row %{{y}}<br>column %{{x}}<br>{value} %{{z:.3f}}<extra></extra>"))
    side = min(900, 260 + 18 * len(labels))
    figure.update_layout(title=title, height=side, yaxis={"autorange": "reversed"}, margin={"t": 40})
    return figure
