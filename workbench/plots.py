"""Figures as pure functions from data to plotly figures, shared by the app and the scripts."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go


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
