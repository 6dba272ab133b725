"""Plotly figures for the lessons. Plots only read results; they never compute them.

Figures are shown with the `plotly_mimetype` renderer: the notebook stores the
figure's JSON (small, stable), JupyterLab draws it with the plotly extension
that ships with the plotly package, and nothing is fetched from a CDN.
Set PLOTLY_RENDERER to override (e.g. for static HTML export).
"""

from __future__ import annotations

import os

import plotly.io as pio

from course_lib.validate import check_has, check_int, check_mapping, check_sequence, check_type

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


# ---- what every figure checks first: bad input gets one line naming it, never a plotly traceback ----
def check_title(title) -> None:
    check_type("title", title, str, "a str or None", none_ok=True)


RESULT = ("requests", "steps", "config")


def check_result(name: str, result, attrs=RESULT, what: str = "an EngineResult (or DisaggResult)"):
    """`result` if it has the attributes a figure reads."""
    return check_has(name, result, attrs, what)


def check_results(name: str, results, attrs=RESULT, min_len: int = 1) -> dict:
    """A {label: result} dict of at least min_len runs, each with `attrs`."""
    check_mapping(name, results, "a dict {label: EngineResult}", min_len)
    for label, res in results.items():
        check_has(f"{name}[{label!r}]", res, attrs, "an EngineResult (or DisaggResult)")
    return results


def check_rows(name: str, rows, keys, min_len: int = 0) -> list:
    """A list of dicts, each holding every key in `keys`."""
    rows = check_sequence(name, rows, min_len, what="a list of dicts")
    for i, row in enumerate(rows):
        check_mapping(f"{name}[{i}]", row)
        missing = [k for k in keys if k not in row]
        if missing:
            raise ValueError(f"{name}[{i}]: must hold the keys {', '.join(keys)}; missing {', '.join(missing)}")
    return rows


def style(fig, title: str | None = None, height: int = 360):
    """Apply the course's template, title and a compact layout; returns the figure."""
    check_title(title)
    check_int("height", height, 1)
    fig.update_layout(template=TEMPLATE, height=height, margin=dict(l=60, r=20, t=50 if title else 20, b=40))
    if title:
        fig.update_layout(title=title)
    return fig
