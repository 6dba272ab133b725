"""Figures for lesson 01: a padded batch as a grid, and measured costs as bars."""

from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

from course_lib.plots import COLORS, check_title, style
from course_lib.validate import check_float, check_sequence, check_type


def batch_heatmap(tokens: Sequence[Sequence[str]], pad: str = "<pad>", title: str | None = None) -> go.Figure:
    """A padded batch as a grid: one row per sequence, one cell per token slot,
    grey where the slot holds padding, blue where it holds a real token."""
    tokens = check_sequence("tokens", tokens, 1, what="a list of token rows (lists of str)")
    for i, row in enumerate(tokens):
        check_sequence(f"tokens[{i}]", row, what="a list of display tokens (str)")
    check_type("pad", pad, str)
    check_title(title)
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


def cost_bars(labels: Sequence[str], values: Sequence[float], unit: str, title: str | None = None,
              spread: Sequence[tuple[float, float]] | None = None) -> go.Figure:
    """Measured values side by side (one bar each, value printed on the bar).
    spread: optional (low, high) per bar, drawn as an error bar (e.g. min-max over rounds)."""
    labels = check_sequence("labels", labels, 1, what="a list of labels")
    values = check_sequence("values", values, len(labels), len(labels), what="a list of numbers, one per label")
    for i, v in enumerate(values):
        check_float(f"values[{i}]", v)
    check_type("unit", unit, str)
    check_title(title)
    error_y = None
    if spread is not None:
        spread = check_sequence("spread", spread, len(labels), len(labels), what="a list of (low, high), one per label")
        for i, pair in enumerate(spread):
            check_sequence(f"spread[{i}]", pair, 2, 2, what="a (low, high) pair")
            check_float(f"spread[{i}][0]", pair[0], hi=values[i])
            check_float(f"spread[{i}][1]", pair[1], lo=values[i])
        error_y = dict(type="data", symmetric=False, array=[hi - v for (_, hi), v in zip(spread, values)],
                       arrayminus=[v - lo for (lo, _), v in zip(spread, values)], color="#444")
    fig = go.Figure(go.Bar(x=list(labels), y=list(values), text=[f"{v:.3g} {unit}" for v in values],
                           textposition="outside", marker_color=COLORS["measured"], error_y=error_y))
    fig.update_yaxes(title=unit)
    return style(fig, title)
