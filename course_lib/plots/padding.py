"""Figures for lesson 01: a padded batch as a grid, and measured costs as bars."""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

from course_lib.plots import COLORS, style


def batch_heatmap(tokens: Sequence[Sequence[str]], pad: str = "<pad>", title: str | None = None) -> go.Figure:
    """A padded batch as a grid: one row per sequence, one cell per token slot,
    grey where the slot holds padding, blue where it holds a real token."""
    B = len(tokens)
    T = max((len(r) for r in tokens), default=0)
    z = [[0 if tok == pad else 1 for tok in row] for row in tokens]
    fig = go.Figure(go.Heatmap(
        z=z, text=[list(r) for r in tokens], texttemplate="%{text}" if T <= 24 else None,
        colorscale=[[0, COLORS["pad"]], [1, COLORS["real"]]], zmin=0, zmax=1, showscale=False,
        xgap=1, ygap=1, hovertemplate="sequence %{y}, slot %{x}: %{text}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", title="sequence", tickvals=list(range(B)))
    fig.update_xaxes(title="token slot (time)")
    return style(fig, title, height=max(180, 40 * B + 100))


def cost_bars(labels: Sequence[str], values: Sequence[float], unit: str, title: str | None = None) -> go.Figure:
    """Measured values side by side (one bar each, value printed on the bar)."""
    fig = go.Figure(go.Bar(x=list(labels), y=list(values), text=[f"{v:.3g} {unit}" for v in values],
                           textposition="outside", marker_color=COLORS["measured"]))
    fig.update_yaxes(title=unit)
    return style(fig, title)
