"""Figures for lessons 06 and 07: latency trade-offs, priorities, disaggregation, incident telemetry.

Every figure reads results of real engine runs (EngineResult, DisaggResult,
IncidentRun); none computes a latency from a formula. The clock a run used is
in its config ('unit'); figures that show milliseconds multiply by 1e3.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from course_lib.plots import COLORS, check_result, check_results, check_rows, check_title, style
from course_lib.validate import check_choice, check_float, check_has, check_int, check_sequence, check_type

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]
CLASS_COLORS = {1: "#d62728", 0: "#1f77b4"}       # priority 1 (interactive) red, 0 (batch) blue


def _check_slo(slo) -> None:
    if slo is not None:
        check_has("slo", slo, ("ttft", "tbt"), "an SLO(ttft=..., tbt=...) or None")


def _unit(result) -> str:
    return getattr(result, "config", {}).get("unit", "s") if result is not None else "s"


def _scale(unit: str) -> tuple[float, str]:
    return (1e3, "ms") if unit == "s" else (1.0, unit + "s" if not unit.endswith("s") else unit)


def _r(xs, nd: int = 3) -> list:
    """Round for the figure's JSON (a notebook stores every point)."""
    return [None if x is None else round(x, nd) for x in xs]


def _gaps(req) -> list[float]:
    t = req.token_times
    return [b - a for a, b in zip(t, t[1:])]


# ---- the TTFT / TBT trade-off -------------------------------------------------------------------------------
def tradeoff(points: Sequence[dict], slo=None, title: str | None = None, unit: str = "ms") -> go.Figure:
    """Tail TTFT against tail time-between-tokens, one marker per run.

    points: dicts with label, ttft, tbt (already in `unit`), optional goodput and group
            (runs of one group are joined by a line, e.g. one policy at several budgets)
    slo:    an SLO (seconds) to shade the region that meets both targets
    """
    points = check_rows("points", points, ("label", "ttft", "tbt"))
    for i, p in enumerate(points):
        check_float(f"points[{i}]['ttft']", p["ttft"], finite=False)
        check_float(f"points[{i}]['tbt']", p["tbt"], finite=False)
    _check_slo(slo)
    check_title(title)
    check_type("unit", unit, str)
    fig = go.Figure()
    if slo is not None:
        k = 1e3 if unit == "ms" else 1.0
        fig.add_shape(type="rect", x0=0, y0=0, x1=slo.tbt * k, y1=slo.ttft * k, fillcolor="#2ca02c", opacity=0.08,
                      line=dict(color="#2ca02c", dash="dot"), layer="below")
        fig.add_annotation(x=slo.tbt * k, y=slo.ttft * k, text="SLO met below and left", showarrow=False,
                           xanchor="right", yanchor="bottom", font=dict(color="#2ca02c", size=11))
    groups: dict[str, list[dict]] = {}
    where: dict[tuple, list[str]] = {}              # runs that land on the same point share one label
    for p in points:
        groups.setdefault(p.get("group", p["label"]), []).append(p)
        where.setdefault((round(p["tbt"], 3), round(p["ttft"], 3)), []).append(p.get("short", p["label"]))

    def label_of(p):
        names = where[(round(p["tbt"], 3), round(p["ttft"], 3))]
        mine = p.get("short", p["label"])
        return " = ".join(names) if names[0] == mine else ""
    for i, (g, pts) in enumerate(groups.items()):
        color = PALETTE[i % len(PALETTE)]
        text = [p["label"] + (f"<br>goodput {p['goodput']:.2f}/s" if "goodput" in p else "") for p in pts]
        fig.add_trace(go.Scatter(x=[p["tbt"] for p in pts], y=[p["ttft"] for p in pts], name=g,
                                 mode="lines+markers+text" if len(pts) > 1 else "markers+text",
                                 text=[label_of(p) for p in pts], textposition="top center",
                                 customdata=text, marker=dict(size=11, color=color), line=dict(color=color),
                                 hovertemplate="%{customdata}<br>TBT %{x:.1f}, TTFT %{y:.1f} " + unit + "<extra></extra>"))
    fig.update_xaxes(title=f"time between tokens, p99 ({unit})", rangemode="tozero")
    fig.update_yaxes(title=f"time to first token, p99 ({unit})", rangemode="tozero")
    fig.update_layout(legend=dict(orientation="h", y=-0.2))
    return style(fig, title, height=420)


def latency_cdf(results: Mapping[str, object], slo=None, title: str | None = None) -> go.Figure:
    """Empirical CDFs of TTFT (per request) and of every gap between tokens, one line per run
    (at most about 300 points per line: the figure stays small)."""
    check_results("results", results, ("requests",), min_len=0)
    _check_slo(slo)
    check_title(title)
    fig = make_subplots(rows=1, cols=2, subplot_titles=["time to first token", "time between tokens (every gap)"])
    unit = _unit(next(iter(results.values()))) if results else "s"
    k, u = _scale(unit)
    for i, (label, res) in enumerate(results.items()):
        color = PALETTE[i % len(PALETTE)]
        ttft = sorted(k * (r.token_times[0] - r.arrival) for r in res.requests if r.token_times)
        tbt = sorted(k * g for r in res.requests for g in _gaps(r))
        for col, xs in ((1, ttft), (2, tbt)):
            n = len(xs)
            keep = sorted({min(n - 1, round(j * (n - 1) / 300)) for j in range(301)}) if n > 300 else range(n)
            fig.add_trace(go.Scatter(x=_r([xs[j] for j in keep]), y=_r([(j + 1) / n for j in keep], 4), mode="lines",
                                     name=label,
                                     line=dict(shape="hv", color=color), legendgroup=label, showlegend=col == 1,
                                     hovertemplate=f"{label}: %{{x:.1f}} {u}, %{{y:.0%}} at or below<extra></extra>"),
                          row=1, col=col)
    if slo is not None:
        for col, v in ((1, slo.ttft), (2, slo.tbt)):
            fig.add_vline(x=v * k, line=dict(color="#2ca02c", dash="dot"), row=1, col=col)
    for col in (1, 2):
        fig.update_xaxes(title=u, row=1, col=col, rangemode="tozero")
    fig.update_yaxes(title="share of requests / gaps", tickformat=".0%", row=1, col=1)
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    return style(fig, title, height=380)


def token_gaps(results: Mapping[str, object], slo=None, title: str | None = None) -> go.Figure:
    """Every gap between two tokens of a stream, at the time the later token came out:
    a stall is a point far above the rest. One panel per run, same axes."""
    check_results("results", results, ("requests",), min_len=1)
    _check_slo(slo)
    check_title(title)
    labels = list(results)
    fig = make_subplots(rows=len(labels), cols=1, shared_xaxes=True, shared_yaxes=True, subplot_titles=labels,
                        vertical_spacing=0.08)
    unit = _unit(results[labels[0]]) if labels else "s"
    k, u = _scale(unit)
    for i, label in enumerate(labels, 1):
        res = results[label]
        xs, ys, text = [], [], []
        for r in res.requests:
            for a, b in zip(r.token_times, r.token_times[1:]):
                xs.append(b * k)
                ys.append((b - a) * k)
                text.append(f"request {r.rid}" + (f" ({r.tenant})" if hasattr(r, "tenant") else ""))
        fig.add_trace(go.Scattergl(x=_r(xs), y=_r(ys), mode="markers", marker=dict(size=4, color=PALETTE[(i - 1) % 10]),
                                   name=label, showlegend=False, customdata=text,
                                   hovertemplate="%{customdata}: gap %{y:.1f} " + u + " at %{x:.0f}<extra></extra>"),
                      row=i, col=1)
        if slo is not None:
            fig.add_hline(y=slo.tbt * k, line=dict(color="#d62728", dash="dot"), row=i, col=1)
        fig.update_yaxes(title=f"gap ({u})", row=i, col=1, rangemode="tozero")
    fig.update_xaxes(title=f"time ({u})", row=len(labels), col=1)
    return style(fig, title, height=170 * len(labels) + 110)


# ---- priorities and starvation -----------------------------------------------------------------------------
def waits_by_arrival(results: Mapping[str, object], title: str | None = None, metric: str = "ttft") -> go.Figure:
    """Each request's wait (TTFT, or queueing delay with metric='queue') against its arrival,
    coloured by priority; one panel per run. Starvation is a low-priority point far up."""
    check_results("results", results, ("requests",), min_len=1)
    check_choice("metric", metric, ("ttft", "queue"))
    check_title(title)
    labels = list(results)
    fig = make_subplots(rows=1, cols=len(labels), shared_yaxes=True, subplot_titles=labels)
    unit = _unit(results[labels[0]]) if labels else "s"
    k, u = _scale(unit)
    shown = set()
    for c, label in enumerate(labels, 1):
        for prio in sorted({r.priority for r in results[label].requests}, reverse=True):
            reqs = [r for r in results[label].requests if r.priority == prio]
            ys = []
            for r in reqs:
                if metric == "ttft":
                    ys.append(k * (r.first_token_time - r.arrival) if r.first_token_time is not None else None)
                else:
                    ys.append(k * (r.admitted_time - r.arrival) if r.admitted_time is not None else None)
            name = f"priority {prio}" + (f" ({reqs[0].tenant})" if hasattr(reqs[0], "tenant") else "")
            fig.add_trace(go.Scatter(x=[k * r.arrival for r in reqs], y=ys, mode="markers", name=name,
                                     legendgroup=name, showlegend=name not in shown,
                                     marker=dict(size=9 if prio == 0 else 7, color=CLASS_COLORS.get(prio, PALETTE[prio % 10]),
                                                 symbol="diamond" if prio == 0 else "circle"),
                                     customdata=[f"request {r.rid}, preempted {r.num_preemptions}x" for r in reqs],
                                     hovertemplate="%{customdata}<br>arrived %{x:.0f}, waited %{y:.1f} " + u
                                                   + "<extra></extra>"), row=1, col=c)
            shown.add(name)
        fig.update_xaxes(title=f"arrival ({u})", row=1, col=c)
    fig.update_yaxes(title=("time to first token" if metric == "ttft" else "queueing delay") + f" ({u})",
                     row=1, col=1, rangemode="tozero")
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    return style(fig, title, height=380)


def _bars(fig, bars: dict, colors: dict, opacity: dict | None = None) -> None:
    """One horizontal-bar trace per legend entry: bars[name] = [(row, start, end, hover), ...]."""
    for name, items in bars.items():
        if not items:
            continue
        fig.add_trace(go.Bar(x=_r([max(b - a, 1e-9) for _, a, b, _ in items]), base=_r([a for _, a, _, _ in items]),
                             y=[row for row, _, _, _ in items], orientation="h", name=name,
                             marker=dict(color=colors[name]), opacity=(opacity or {}).get(name, 1.0),
                             customdata=[h for *_, h in items], hovertemplate="%{customdata}<extra></extra>"))


def request_gantt(result, title: str | None = None, max_requests: int = 40, color_by: str = "priority") -> go.Figure:
    """One row per request: waiting (light) from arrival to its first token, then streaming
    (dark) to its last token; an x marks each preemption. Colour by priority or tenant."""
    check_result("result", result, ("requests", "steps"))
    check_choice("color_by", color_by, ("priority", "tenant"))
    check_int("max_requests", max_requests, 1)
    check_title(title)
    reqs = sorted(result.requests, key=lambda r: (r.arrival, r.rid))[:max_requests]
    unit = _unit(result)
    k, u = _scale(unit)
    steps = sorted(result.steps, key=lambda s: s.start)
    groups = sorted({getattr(r, color_by, 0) for r in reqs}, key=str)
    color = {g: (CLASS_COLORS.get(g) if color_by == "priority" else None) or PALETTE[i % 10] for i, g in enumerate(groups)}
    bars, colors, alpha = {}, {}, {}
    for g in groups:
        for kind, a in (("waiting", 0.35), ("streaming", 1.0)):
            name = f"{color_by} {g}: {kind}"
            bars[name], colors[name], alpha[name] = [], color[g], a
    for row, r in enumerate(reqs):
        g = getattr(r, color_by, 0)
        end_wait = r.first_token_time if r.first_token_time is not None else (steps[-1].end if steps else r.arrival)
        bars[f"{color_by} {g}: waiting"].append((row, k * r.arrival, k * end_wait,
                                                 f"request {r.rid}: waiting {k * r.arrival:.0f}–{k * end_wait:.0f} {u}"))
        if r.token_times:
            a, b = k * r.token_times[0], k * r.token_times[-1]
            bars[f"{color_by} {g}: streaming"].append((row, a, b, f"request {r.rid}: streaming {a:.0f}–{b:.0f} {u}"))
    fig = go.Figure()
    _bars(fig, bars, colors, alpha)
    rows = {r.rid: i for i, r in enumerate(reqs)}
    pre = [(k * st.start, rows[rid]) for st in steps for rid in st.preempted if rid in rows]
    if pre:
        fig.add_trace(go.Scatter(x=[p[0] for p in pre], y=[p[1] for p in pre], mode="markers", name="preempted",
                                 marker=dict(symbol="x", size=10, color="black")))
    fig.update_yaxes(title="request (by arrival)", tickvals=list(range(len(reqs))),
                     ticktext=[str(r.rid) for r in reqs], autorange="reversed")
    fig.update_xaxes(title=f"time ({u})")
    fig.update_layout(barmode="overlay", bargap=0.25, legend=dict(orientation="h", y=-0.15))
    return style(fig, title, height=max(300, 14 * len(reqs) + 160))


# ---- disaggregation ----------------------------------------------------------------------------------------
def pipeline_gantt(dres, title: str | None = None, max_requests: int = 30) -> go.Figure:
    """A disaggregated run, request by request: waiting for the prefill engine, the prefill
    step, the KV hand-over on the link, waiting for the decode engine, then decoding."""
    check_result("dres", dres, ("handovers", "requests", "prefill", "config"), "a DisaggResult")
    check_int("max_requests", max_requests, 1)
    check_title(title)
    hand = {h.rid: h for h in dres.handovers}
    unit = dres.config.get("unit", "s")
    k, u = _scale(unit)
    colors = {"queued (prefill engine)": "#d9d9d9", "prefill": COLORS["prefill"], "KV hand-over": "#9467bd",
              "queued (decode engine)": "#ffbb78", "decoding": COLORS["decode"]}
    bars = {name: [] for name in colors}
    reqs = sorted(dres.requests, key=lambda r: (r.arrival, r.rid))[:max_requests]
    pre = {r.rid: r for r in dres.prefill.requests}
    for row, r in enumerate(reqs):
        p = pre[r.rid]
        first = r.first_token_time if r.first_token_time is not None else r.arrival
        start = p.admitted_time if p.admitted_time is not None else first
        phases = [("queued (prefill engine)", r.arrival, start), ("prefill", start, first)]
        h = hand.get(r.rid)
        if h is not None:
            admitted = h.admitted if h.admitted is not None else h.arrives
            phases += [("KV hand-over", h.sent, h.arrives), ("queued (decode engine)", h.arrives, admitted),
                       ("decoding", admitted, r.token_times[-1] if r.token_times else admitted)]
        for name, a, b in phases:
            if a is not None and b is not None and b >= a:
                bars[name].append((row, k * a, k * b, f"request {r.rid}: {name} {k * a:.1f}–{k * b:.1f} {u}"))
    fig = go.Figure()
    _bars(fig, bars, colors)
    fig.update_yaxes(title="request", tickvals=list(range(len(reqs))), ticktext=[str(r.rid) for r in reqs],
                     autorange="reversed")
    fig.update_xaxes(title=f"time ({u})")
    fig.update_layout(barmode="overlay", bargap=0.25, legend=dict(orientation="h", y=-0.15))
    return style(fig, title, height=max(300, 14 * len(reqs) + 160))


def handover_whatif(rows: Sequence[dict], title: str | None = None) -> go.Figure:
    """Per link: the modelled hand-over delay (bars) and the run's TBT p99 (markers).

    rows: dicts with link, delay_ms (mean modelled link delay), tbt_p99_ms, ttft_p99_ms."""
    check_rows("rows", rows, ("link", "delay_ms", "tbt_p99_ms", "ttft_p99_ms"), min_len=1)
    check_title(title)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    links = [r["link"] for r in rows]
    fig.add_trace(go.Bar(x=links, y=[r["delay_ms"] for r in rows], name="hand-over delay, mean (model)",
                         marker_color="#9467bd"), secondary_y=False)
    fig.add_trace(go.Scatter(x=links, y=[r["tbt_p99_ms"] for r in rows], name="TBT p99 (run)", mode="markers+lines",
                             marker=dict(size=10, color=COLORS["decode"])), secondary_y=True)
    fig.add_trace(go.Scatter(x=links, y=[r["ttft_p99_ms"] for r in rows], name="TTFT p99 (run)", mode="markers+lines",
                             marker=dict(size=10, color=COLORS["prefill"])), secondary_y=True)
    fig.update_yaxes(title="hand-over delay (ms)", type="log", secondary_y=False)
    fig.update_yaxes(title="latency (ms)", rangemode="tozero", secondary_y=True)
    fig.update_layout(legend=dict(orientation="h", y=-0.3))
    return style(fig, title, height=400)


# ---- incident telemetry -----------------------------------------------------------------------------------
def telemetry(run, title: str | None = None) -> go.Figure:
    """An incident's dashboard over time (ms): KV memory split, largest free span, refusals
    (red x: enough memory was free in total); queues and preemptions; at each step, the
    longest gap any stream waited for the token it got then, with the TBT target; each
    step's duration coloured by the prefill tokens it held."""
    check_result("run", run, ("samples", "capacity", "refusals", "result", "slo"), "an IncidentRun")
    check_title(title)
    k = 1e3
    s = run.samples
    t = _r([k * x.time for x in s])
    cap = run.capacity
    fig = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.05,
                        subplot_titles=["KV memory, share of capacity (in use = vllm:kv_cache_usage_perc)",
                                        "vllm:num_requests_waiting / vllm:num_requests_running",
                                        "longest gap between two tokens, per step (ms; vllm:inter_token_latency_seconds)",
                                        "step duration (ms)"])
    layers = [("token states", [x.token_states / cap for x in s], COLORS["real"]),
              ("reserved", [x.reserved / cap for x in s], COLORS["reserved"]),
              ("internal", [x.internal / cap for x in s], COLORS["internal"]),
              ("external", [x.external / cap for x in s], COLORS["external"])]
    for name, ys, color in layers:
        if any(ys):
            fig.add_trace(go.Scatter(x=t, y=_r(ys, 4), name=name, stackgroup="mem", mode="none", fillcolor=color,
                                     hovertemplate=name + " %{y:.0%}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=t, y=_r([x.largest_free / cap for x in s], 4), name="largest free span", mode="lines",
                             line=dict(color="black", dash="dot")), row=1, col=1)
    bad = [r for r in run.refusals if r.paradox]
    ok = [r for r in run.refusals if not r.paradox]
    if bad:
        fig.add_trace(go.Scatter(x=[k * r.time for r in bad], y=[r.total_free / cap for r in bad], mode="markers",
                                 name="refused with enough free in total", marker=dict(symbol="x", color="#d62728", size=8),
                                 hovertemplate="asked %{customdata} slots; total free %{y:.0%}<extra></extra>",
                                 customdata=[r.requested for r in bad]), row=1, col=1)
    if ok:
        fig.add_trace(go.Scatter(x=[k * r.time for r in ok], y=[r.total_free / cap for r in ok], mode="markers",
                                 name="refused (memory full)", marker=dict(symbol="x", color="#7f7f7f", size=6)),
                      row=1, col=1)
    fig.add_trace(go.Scatter(x=t, y=[x.waiting for x in s], name="waiting (vllm:num_requests_waiting)", mode="lines",
                             line=dict(color="#ff7f0e")), row=2, col=1)
    fig.add_trace(go.Scatter(x=t, y=[x.running for x in s], name="running (vllm:num_requests_running)", mode="lines",
                             line=dict(color="#1f77b4")), row=2, col=1)
    pre = [(k * x.time, x.running) for x in s if x.preempted]
    if pre:
        fig.add_trace(go.Scatter(x=[p[0] for p in pre], y=[p[1] for p in pre], mode="markers",
                                 name="preemption (vllm:num_preemptions)",
                                 marker=dict(symbol="triangle-down", size=9, color="black")), row=2, col=1)
    worst: dict[float, float] = {}                 # step end -> the longest gap of a token that came out then
    for r in run.result.requests:
        for a, b in zip(r.token_times, r.token_times[1:]):
            worst[b] = max(worst.get(b, 0.0), b - a)
    ends = sorted(worst)
    fig.add_trace(go.Scatter(x=_r([k * e for e in ends], 2), y=_r([k * worst[e] for e in ends], 2), mode="markers",
                             name="longest token gap ending at that step", marker=dict(size=4, color="#1f77b4"),
                             hovertemplate="%{y:.1f} ms<extra></extra>"), row=3, col=1)
    fig.add_hline(y=k * run.slo.tbt, line=dict(color="#d62728", dash="dot"), row=3, col=1)
    steps = run.result.steps
    fig.add_trace(go.Bar(x=_r([k * (st.start + st.duration / 2) for st in steps]), y=_r([k * st.duration for st in steps]),
                         width=_r([k * st.duration for st in steps]), name="step",
                         marker=dict(color=[sum(n for _, n, kd in st.items if kd == "prefill") for st in steps],
                                     colorscale="Greens", cmin=0, showscale=False),
                         customdata=[[sum(n for _, n, kd in st.items if kd == "prefill"),
                                      sum(1 for _, _, kd in st.items if kd == "decode")] for st in steps],
                         hovertemplate="step: %{y:.1f} ms, %{customdata[0]} prefill tokens, "
                                       "%{customdata[1]} decodes<extra></extra>"), row=4, col=1)
    fig.update_yaxes(tickformat=".0%", range=[0, 1.05], row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=2, col=1)
    fig.update_yaxes(rangemode="tozero", row=3, col=1)
    fig.update_yaxes(rangemode="tozero", row=4, col=1)
    fig.update_xaxes(title="time (ms, cost-model clock)", row=4, col=1)
    fig.update_layout(legend=dict(orientation="h", y=-0.08), bargap=0)
    return style(fig, title, height=820)


def before_after(rows: Sequence[dict], metrics: Sequence[tuple[str, str]], title: str | None = None) -> go.Figure:
    """Bars of a few metrics before and after a fix. rows: {'run': label, metric: value, ...};
    metrics: (key, axis label) pairs, one panel each."""
    metrics = check_sequence("metrics", metrics, 1, what="a list of (key, axis label) pairs")
    for i, m in enumerate(metrics):
        check_sequence(f"metrics[{i}]", m, 2, 2, what="a (key, axis label) pair")
    check_rows("rows", rows, ["run"] + [m[0] for m in metrics])
    check_title(title)
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=[m[1] for m in metrics])
    for c, (key, _label) in enumerate(metrics, 1):
        fig.add_trace(go.Bar(x=[r["run"] for r in rows], y=[r[key] for r in rows],
                             marker_color=[PALETTE[i % 10] for i in range(len(rows))], showlegend=False,
                             hovertemplate="%{x}: %{y:.3g}<extra></extra>"), row=1, col=c)
        fig.update_yaxes(rangemode="tozero", row=1, col=c)
    return style(fig, title, height=320)


def table_figure(header: Sequence[str], rows: Sequence[Sequence], title: str | None = None,
                 fill: Sequence[str] | None = None) -> go.Figure:
    """A small table as a figure (a panel returns figures, not HTML)."""
    header = check_sequence("header", header, 1, what="a list of column names")
    rows = check_sequence("rows", rows, what="a list of rows")
    for i, row in enumerate(rows):
        check_sequence(f"rows[{i}]", row, len(header), len(header), what=f"a row of {len(header)} cells")
    if fill is not None:
        check_sequence("fill", fill, len(rows), len(rows), what="one colour per row")
    check_title(title)
    cols = list(zip(*rows)) if rows else [[] for _ in header]
    cells = dict(values=[list(c) for c in cols], align="left", height=24)
    if fill is not None:
        cells["fill"] = dict(color=[list(fill)] * len(header))
    fig = go.Figure(go.Table(header=dict(values=list(header), align="left", fill=dict(color="#e8eef7")), cells=cells))
    fig = style(fig, title, height=60 + 26 * (len(rows) + 1) + (30 if title else 0))
    fig.update_layout(margin=dict(l=10, r=10, t=40 if title else 10, b=5))
    return fig


__all__ = ["table_figure", "tradeoff", "latency_cdf", "token_gaps", "waits_by_arrival", "request_gantt", "pipeline_gantt",
           "handover_whatif", "telemetry", "before_after"]
