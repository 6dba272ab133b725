"""Plotly figures for the lessons. Plots only read results; they never compute them.

Figures are shown with the `plotly_mimetype` renderer: the notebook stores the
figure's JSON (small, stable), JupyterLab draws it with the plotly extension
that ships with the plotly package, and nothing is fetched from a CDN.
Set PLOTLY_RENDERER to override (e.g. for static HTML export).
"""

from __future__ import annotations

import os

import plotly.io as pio

if "PLOTLY_RENDERER" not in os.environ:
    pio.renderers.default = "plotly_mimetype"

# One look for the whole course.
TEMPLATE = "plotly_white"
COLORS = {
    "real": "#1f77b4",      # a real token / token state
    "pad": "#d9d9d9",       # padding
    "reserved": "#ffbb78",  # reserved but unused
    "internal": "#ff7f0e",  # internal fragmentation
    "external": "#d62728",  # external fragmentation
    "free": "#f7f7f7",
    "prefill": "#2ca02c",
    "decode": "#1f77b4",
    "measured": "#1f77b4",
    "published": "#7f7f7f",
}


def style(fig, title: str | None = None, height: int = 360):
    """Apply the course's template, title and a compact layout; returns the figure."""
    fig.update_layout(template=TEMPLATE, height=height, margin=dict(l=60, r=20, t=50 if title else 20, b=40))
    if title:
        fig.update_layout(title=title)
    return fig
