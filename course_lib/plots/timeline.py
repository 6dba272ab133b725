"""Figures for lesson 03: who occupies which batch slot at every step, and what it costs.

Plots only read an EngineResult (course_lib.engine); they never run anything.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from course_lib.plots import COLORS, check_result, check_results, check_title, style
from course_lib.validate import check_bool, check_choice, check_float, check_int, check_sequence, check_type

# slot states, in the order of the discrete colour scale
SLOT_STATES = ("idle", "prefill", "decode", "stalled", "held")
SLOT_COLORS = {
    "idle": "#ffffff",             # nobody in the slot
    "prefill": COLORS["prefill"],  # computing (part of) a prompt
    "decode": COLORS["decode"],    # computing its next token
    "stalled": COLORS["reserved"], # admitted, holds KV, computes nothing this step
    "held": COLORS["pad"],         # finished, but a static batch keeps the slot until it ends
}
SLOT_MEANING = {
    "idle": "empty slot",
    "prefill": "prefill (prompt tokens)",
    "decode": "decode (one new token)",
    "stalled": "waiting in its slot (paused)",
    "held": "finished, slot held by the static batch",
}


def _discrete_scale() -> list:
    n = len(SLOT_STATES)
    scale = []
    for i, s in enumerate(SLOT_STATES):
        scale += [[i / n, SLOT_COLORS[s]], [(i + 1) / n, SLOT_COLORS[s]]]
    return scale


def timeline(result, x: str = "step", title: str | None = None, max_steps: int | None = 400,
             show_ids: bool | None = None) -> go.Figure:
    """A Gantt chart of batch slots: one row per slot, one column per model step.

    Each cell is coloured by what the slot did in that step (prefill, decode,
    paused, held by a finished member of a static batch, empty) and labelled
    with the request id. x='time' places the columns at the steps' clock times,
    so long prefill steps look long; x='step' gives every step the same width.
    """
    check_result("result", result)
    check_choice("x", x, ("step", "time"))
    check_title(title)
    max_steps = check_int("max_steps", max_steps, 1, none_ok=True, note="None = every step")
    if show_ids is not None:
        check_bool("show_ids", show_ids)
    steps = result.steps[:max_steps] if max_steps is not None else result.steps
    slots = result.config.get("max_running", 1)
    code = {s: i for i, s in enumerate(SLOT_STATES)}
    z = [[0] * len(steps) for _ in range(slots)]
    text = [[""] * len(steps) for _ in range(slots)]
    hover = [["empty"] * len(steps) for _ in range(slots)]
    for j, st in enumerate(steps):
        n_of = {rid: n for rid, n, _ in st.items}
        for slot, rid, kind in st.slots:
            z[slot][j] = code[kind]
            text[slot][j] = str(rid)
            tokens = f", {n_of[rid]} token(s)" if rid in n_of else ""
            hover[slot][j] = f"request {rid}: {SLOT_MEANING[kind]}{tokens}"
    xs = list(range(len(steps))) if x == "step" else [st.start + st.duration / 2 for st in steps]
    if show_ids is None:
        show_ids = len(steps) <= 60
    unit = result.config.get("unit", "s")
    fig = go.Figure(go.Heatmap(
        z=z, x=xs, y=list(range(slots)), text=text, customdata=hover, zmin=-0.5, zmax=len(SLOT_STATES) - 0.5,
        texttemplate="%{text}" if show_ids else None, colorscale=_discrete_scale(), showscale=False,
        xgap=1 if len(steps) <= 120 else 0, ygap=2,
        hovertemplate=("step %{x}" if x == "step" else "t=%{x:.4g} " + unit) + ", slot %{y}: %{customdata}<extra></extra>",
    ))
    for s in SLOT_STATES:                       # legend entries (a heatmap has none of its own)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=SLOT_MEANING[s],
                                 marker=dict(symbol="square", size=12, color=SLOT_COLORS[s],
                                             line=dict(color="#999", width=1))))
    fig.update_yaxes(title="batch slot", tickvals=list(range(slots)), autorange="reversed")
    fig.update_xaxes(title="model step" if x == "step" else f"time ({unit})")
    fig = style(fig, title, height=max(240, 26 * slots + 190))
    # the legend at the very bottom of the figure, under the x axis's title (a legend placed a
    # fraction of the plot's height below the axis lands on that title when there are few slots)
    fig.update_layout(legend=dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0, xanchor="left"),
                      plot_bgcolor="#ffffff", margin=dict(b=135))
    return fig


def latency_boxes(results: Mapping[str, object], metrics: Sequence[str] = ("ttft", "tpot"),
                  title: str | None = None, scale: float = 1.0, unit: str | None = None) -> go.Figure:
    """Distributions of per-request latencies, one box per run, one panel per metric.

    results: {label: EngineResult}; scale multiplies the values (1e3: seconds -> ms).
    """
    names = {"ttft": "time to first token", "tpot": "time per output token", "e2e": "end-to-end latency",
             "max_gap": "longest gap between tokens"}
    check_results("results", results, ("latencies", "config"), min_len=0)
    metrics = check_sequence("metrics", metrics, 1, what=f"a list of metric names ({', '.join(names)})")
    for i, m in enumerate(metrics):
        check_choice(f"metrics[{i}]", m, names)
    check_title(title)
    check_float("scale", scale, 0, lo_open=True)
    check_type("unit", unit, str, none_ok=True)
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[names[m] for m in metrics])
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for i, (label, res) in enumerate(results.items()):
        lat = res.latencies()
        for c, m in enumerate(metrics, 1):
            fig.add_trace(go.Box(y=[v * scale for v in lat[m]], name=label, marker_color=palette[i % len(palette)],
                                 boxpoints="all", jitter=0.4, pointpos=0, showlegend=False), row=1, col=c)
    u = unit or (next(iter(results.values())).config.get("unit", "s") if results else "")
    for c in range(1, len(metrics) + 1):
        fig.update_yaxes(title=u, row=1, col=c, rangemode="tozero")
    fig = style(fig, title, height=400)
    if title:
        fig.update_layout(margin=dict(t=90))
    return fig


def step_breakdown(results: Mapping[str, object], title: str | None = None) -> go.Figure:
    """Mean time per step, split into scheduling, building the batch, the model, and sampling
    (microseconds), one stacked bar per run: the cost of reorganising the batch every step."""
    check_results("results", results, ("steps",), min_len=0)
    check_title(title)
    parts = [("schedule_s", "schedule (policy + KV bookkeeping)", "#ff7f0e"),
             ("build_s", "build the batch (ids, positions, context)", "#ffbb78"),
             ("model_s", "model forward", COLORS["measured"]),
             ("sample_s", "sample + finish", "#9467bd")]
    labels = list(results)
    fig = go.Figure()
    for attr, name, color in parts:
        vals = []
        for res in results.values():
            steps = res.steps
            vals.append(1e6 * sum(getattr(s, attr) for s in steps) / max(1, len(steps)))
        fig.add_trace(go.Bar(x=labels, y=vals, name=name, marker_color=color,
                             hovertemplate="%{x}: %{y:.0f} µs<extra>" + name + "</extra>"))
    fig.update_layout(barmode="stack", legend=dict(orientation="h", y=-0.2))
    fig.update_yaxes(title="µs per step (mean)")
    return style(fig, title, height=380)


def tokens_per_step(results: Mapping[str, object], title: str | None = None) -> go.Figure:
    """Real tokens computed in each step, per run: how full each step is over time."""
    check_results("results", results, ("steps",), min_len=0)
    check_title(title)
    fig = go.Figure()
    for label, res in results.items():
        fig.add_trace(go.Scatter(x=[s.index for s in res.steps], y=[len(s.items) for s in res.steps],
                                 mode="lines", name=label, line=dict(shape="hv")))
    fig.update_xaxes(title="model step")
    fig.update_yaxes(title="requests computing", rangemode="tozero")
    return style(fig, title, height=320)


def step_durations(results: Mapping[str, object], title: str | None = None, scale: float = 1e3,
                   unit: str = "ms") -> go.Figure:
    """How long every step took, per run (clock time x scale): a long prefill shows as a spike,
    and every request decoding in that step waits that long for its next token."""
    check_results("results", results, ("steps",), min_len=0)
    check_title(title)
    check_float("scale", scale, 0, lo_open=True)
    check_type("unit", unit, str)
    fig = go.Figure()
    for label, res in results.items():
        fig.add_trace(go.Scatter(x=[s.start * scale for s in res.steps], y=[s.duration * scale for s in res.steps],
                                 mode="lines+markers", marker=dict(size=4), name=label,
                                 customdata=[[s.index, s.num_tokens] for s in res.steps],
                                 hovertemplate="step %{customdata[0]}: %{y:.3g} " + unit +
                                               ", %{customdata[1]} tokens<extra>" + label + "</extra>"))
    fig.update_xaxes(title=f"time ({unit})")
    fig.update_yaxes(title=f"step duration ({unit})", rangemode="tozero")
    return style(fig, title, height=340)
