"""Figures for lesson 02: where the KV arena's memory goes.

memory_bar        one moment: the arena as a bar, slab by slab, hole by hole
memory_map        over time: which request owns which slots, holes visible
usage_over_time   the capacity split (token states / reserved / internal / external / free) per step
waste_breakdown   stacked bars laid out like the vLLM paper's Figure 2, paper beside measured

The figures only read results (a store's memory_map(), a ReplayResult).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go

from course_lib.plots import COLORS, check_title, style
from course_lib.validate import check_float, check_has, check_int, check_mapping, check_sequence, check_type

SEGMENT = ("start", "size", "seq_id", "token_states", "reserved", "internal")
FIGURE2 = ("token_states", "reservation", "internal", "external_and_others")

CATEGORY_COLORS = {
    "token_states": COLORS["real"],
    "reserved": COLORS["reserved"],
    "reservation": COLORS["reserved"],
    "internal": COLORS["internal"],
    "rounding": "#c5b0d5",
    "external": COLORS["external"],
    "external_and_others": COLORS["external"],
    "free": "#e8e8e8",
}
LABELS = {
    "token_states": "token states",
    "reserved": "reserved (future tokens)",
    "reservation": "reservation",
    "internal": "internal fragmentation",
    "rounding": "allocator rounding (buddy)",
    "external": "external fragmentation",
    "external_and_others": "external frag. & others",
    "free": "free",
}
POLICY_NAMES = {"max": "Orca (Max)", "pow2": "Orca (Pow2)", "oracle": "Orca (Oracle)"}


def _segments_as_pieces(segments, too_small: int = 0):
    """Split each map segment into coloured pieces: (category, start, size, label)."""
    pieces = []
    for seg in segments:
        if seg.seq_id is None:
            kind = "external" if seg.size < too_small else "free"
            pieces.append((kind, seg.start, seg.size, f"hole of {seg.size}"))
            continue
        pos = seg.start
        rounding = getattr(seg, "rounding", 0)
        for kind, n in (("token_states", seg.token_states), ("reserved", seg.reserved),
                        ("internal", seg.internal - rounding), ("rounding", rounding)):
            if n:
                pieces.append((kind, pos, n, f"request {seg.seq_id}"))
                pos += n
    return pieces


def memory_bar(segments: Sequence, capacity: int | None = None, request: int = 0, title: str | None = None) -> go.Figure:
    """The arena at one moment as a horizontal bar (address grows to the right).

    segments: a store's memory_map() (MapSegment: start, size, seq_id, token_states, reserved, internal)
    request:  slots a waiting request needs; holes smaller than it are drawn as external fragmentation
    """
    segments = check_sequence("segments", segments, 1, what="a store's memory_map() (a list of MapSegments)")
    for i, seg in enumerate(segments):
        check_has(f"segments[{i}]", seg, SEGMENT, "a MapSegment (start, size, seq_id, token_states, ...)")
    check_int("capacity", capacity, 1, none_ok=True)
    check_int("request", request, 0)
    check_title(title)
    capacity = capacity or sum(s.size for s in segments)
    fig = go.Figure()
    shown = set()
    for kind, start, size, label in _segments_as_pieces(segments, request):
        fig.add_trace(go.Bar(
            x=[size], base=[start], y=["arena"], orientation="h", name=LABELS[kind], legendgroup=kind,
            showlegend=kind not in shown, marker=dict(color=CATEGORY_COLORS[kind], line=dict(color="white", width=1)),
            hovertemplate=f"{label}<br>{LABELS[kind]}: slots {start}–{start + size - 1} ({size})<extra></extra>"))
        shown.add(kind)
    for seg in segments:                                     # request ids on their slabs
        if seg.seq_id is not None and seg.size >= capacity / 40:
            fig.add_annotation(x=seg.start + seg.size / 2, y="arena", text=f"r{seg.seq_id}", showarrow=False,
                               font=dict(color="white", size=11))
    fig.update_layout(barmode="overlay", legend=dict(orientation="h", y=-0.35))
    fig.update_xaxes(title="token slot (address in the arena)", range=[0, capacity])
    fig.update_yaxes(showticklabels=False)
    return style(fig, title, height=220)


def _simplify(points):
    """Drop interior points that lie on the straight line through their neighbours."""
    if len(points) <= 2:
        return points
    out = [points[0]]
    for p, q in zip(points[1:-1], points[2:]):
        a = out[-1]
        if (p[0] - a[0]) * (q[1] - a[1]) != (p[1] - a[1]) * (q[0] - a[0]):
            out.append(p)
    out.append(points[-1])
    return out


def _polygons(result, t_range=None):
    """From the snapshots: per slab lifetime, the token-state / reserved / internal
    polygons in (step, address) space, plus the holes at refused steps."""
    steps = sorted(result.snapshots)
    if t_range is not None:
        steps = [s for s in steps if t_range[0] <= s <= t_range[1]]
    refused = {st: r for st, r in zip(result.steps, result.refusals)}
    lives: dict[tuple, list] = {}
    holes: dict[tuple, list] = {}
    for i, st in enumerate(steps):
        end = steps[i + 1] if i + 1 < len(steps) else st + 1
        r = refused.get(st)
        for seg in result.snapshots[st]:
            if seg.seq_id is None:
                if r is not None and seg.size < r.requested:
                    holes.setdefault((seg.start, seg.size), []).append((st, end))
            else:
                lives.setdefault((seg.seq_id, seg.start, seg.size), []).append((st, end, seg))
    return lives, holes


def memory_map(result, title: str | None = None, t_range: tuple[int, int] | None = None,
               height: int = 420) -> go.Figure:
    """Memory map over time: x = iteration, y = arena address.

    Each request's slab is a band at a fixed address from admission to finish:
    blue fills as its tokens are written, light orange is still reserved for
    tokens to come, dark orange will never be used (over-reservation), purple
    is what a buddy allocator added by rounding up. White is free memory; red
    marks holes at steps when a waiting request was refused because no single
    hole was large enough.
    """
    check_has("result", result, ("snapshots", "steps", "refusals", "capacity"), "a ReplayResult (course_lib.kv.replay)")
    if t_range is not None:
        a, b = check_sequence("t_range", t_range, 2, 2, what="(first step, last step) or None")
        check_int("t_range[0]", a, 0)
        check_int("t_range[1]", b, a)
    check_title(title)
    check_int("height", height, 100, 10_000)
    lives, holes = _polygons(result, t_range)
    xs = {k: [] for k in ("token_states", "reserved", "internal", "rounding", "external")}
    ys = {k: [] for k in xs}
    hx, hy, htext = [], [], []

    def poly(kind, pts):
        for x, y in pts + [pts[0]]:
            xs[kind].append(x)
            ys[kind].append(y)
        xs[kind].append(None)
        ys[kind].append(None)

    for (seq_id, start, size), spans in lives.items():
        t0, t1 = spans[0][0], spans[-1][1]
        low = [(t0, start), (t1, start)]
        tok = _simplify([(a, start + seg.token_states) for a, _, seg in spans] + [(t1, start + spans[-1][2].token_states)])
        use = _simplify([(a, start + seg.token_states + seg.reserved) for a, _, seg in spans]
                        + [(t1, start + spans[-1][2].token_states + spans[-1][2].reserved)])
        top = [(t0, start + size), (t1, start + size)]
        rnd = max(getattr(seg, "rounding", 0) for _, _, seg in spans)
        mid = [(t0, start + size - rnd), (t1, start + size - rnd)]
        poly("token_states", low + tok[::-1])
        poly("reserved", tok + use[::-1])
        if any(seg.internal - getattr(seg, "rounding", 0) for _, _, seg in spans):
            poly("internal", use + mid[::-1])
        if rnd:
            poly("rounding", mid + top[::-1])
        hx.append((t0 + t1) / 2)
        hy.append(start + size / 2)
        htext.append(f"request {seq_id}: slab of {size} slots at {start}, steps {t0}–{t1}")
    for (start, size), spans in holes.items():
        merged = []
        for a, b in spans:                                   # join consecutive refused steps
            if merged and merged[-1][1] >= a:
                merged[-1][1] = b
            else:
                merged.append([a, b])
        for a, b in merged:
            poly("external", [(a, start), (b, start), (b, start + size), (a, start + size)])

    fig = go.Figure()
    names = {"token_states": "token states", "reserved": "reserved (future tokens)",
             "internal": "internal fragmentation (over-reservation)", "rounding": "allocator rounding (buddy)",
             "external": "hole too small for the waiting request"}
    for kind in ("external", "rounding", "internal", "reserved", "token_states"):
        if xs[kind]:
            fig.add_trace(go.Scatter(x=xs[kind], y=ys[kind], mode="lines", fill="toself", name=names[kind],
                                     line=dict(width=0.5, color="white"), fillcolor=CATEGORY_COLORS[kind],
                                     hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=hx, y=hy, mode="markers", marker=dict(size=4, color="rgba(0,0,0,0.25)"),
                             text=htext, hovertemplate="%{text}<extra></extra>", name="slab (hover)"))
    fig.update_xaxes(title="iteration (step)")
    fig.update_yaxes(title="token slot (address in the arena)", range=[0, result.capacity or None])
    fig.update_layout(legend=dict(orientation="h", y=-0.2))
    return style(fig, title, height=height)


def usage_over_time(result, title: str | None = None, height: int = 300, max_points: int = 400) -> go.Figure:
    """Stacked shares of capacity per step (token states at the bottom); long replays are
    averaged over windows so at most `max_points` points are drawn. Internal fragmentation is
    over-reservation only; what an allocator added by rounding (buddy: `rounding` of an
    ArenaUsage) is its own band, as `ArenaUsage.figure2` counts it apart (under external &
    others), so the figure and the printed Figure-2 shares agree."""
    check_has("result", result, ("steps", "usage"), "a ReplayResult (course_lib.kv.replay)")
    check_title(title)
    check_int("height", height, 100, 10_000)
    check_int("max_points", max_points, 1)
    n = len(result.steps)
    width = max(1, -(-n // max_points))                     # average over windows of this many steps
    fig = go.Figure()
    def part(u, key):
        rounding = getattr(u, "rounding", 0)
        if key == "internal":
            return u.internal - rounding
        return rounding if key == "rounding" else getattr(u, key)

    has_rounding = any(getattr(u, "rounding", 0) for u in result.usage)
    keys = ("token_states", "reserved", "internal") + (("rounding",) if has_rounding else ()) + ("external", "free")
    for key in keys:
        y = [100 * part(u, key) / (u.capacity or 1) for u in result.usage]
        ym = [round(sum(y[i:i + width]) / len(y[i:i + width]), 2) for i in range(0, n, width)]
        fig.add_trace(go.Scatter(x=result.steps[::width], y=ym, stackgroup="one", name=LABELS[key], mode="none",
                                 fillcolor=CATEGORY_COLORS[key]))
    fig.update_yaxes(title="% of arena", range=[0, 100])
    fig.update_xaxes(title="iteration (step)")
    fig.update_layout(legend=dict(orientation="h", y=-0.3))
    return style(fig, title, height=height)


def waste_breakdown(measured: Mapping[str, Mapping[str, float]],
                    published: Mapping[str, Mapping[str, float]] | None = None,
                    title: str | None = None, source: str = "paper") -> go.Figure:
    """Stacked bars laid out like the vLLM paper's Figure 2.

    measured:  policy -> {token_states, reservation, internal, external_and_others} as FRACTIONS
               (ReplayResult.figure2())
    published: policy -> the same keys in PERCENT (replay.PAPER_FIGURE2); drawn beside each
               measured bar with a lighter colour
    """
    for name, table in (("measured", measured), ("published", published)):
        if table is None and name == "published":
            continue
        check_mapping(name, table, "a dict {policy: {token_states, reservation, internal, external_and_others}}",
                      min_len=1 if name == "measured" else 0)
        for p, shares in table.items():
            check_mapping(f"{name}[{p!r}]", shares)
            for key in FIGURE2:
                if key not in shares:
                    raise ValueError(f"{name}[{p!r}]: must hold {', '.join(FIGURE2)}; missing {key}")
                check_float(f"{name}[{p!r}][{key!r}]", shares[key])
    check_title(title)
    check_type("source", source, str)
    policies = list(measured)
    x_outer, x_inner = [], []
    for p in policies:
        if published and p in published:
            x_outer.append(POLICY_NAMES.get(p, p))
            x_inner.append(source)
        x_outer.append(POLICY_NAMES.get(p, p))
        x_inner.append("measured")
    fig = go.Figure()
    for key in ("token_states", "reservation", "internal", "external_and_others"):
        y, text = [], []
        for p in policies:
            if published and p in published:
                y.append(published[p][key])
                text.append(f"{published[p][key]:.1f}")
            y.append(100 * measured[p][key])
            text.append(f"{100 * measured[p][key]:.1f}")
        opac = [0.55 if inner == source else 1.0 for inner in x_inner]
        fig.add_trace(go.Bar(x=[x_outer, x_inner], y=y, name=LABELS[key], text=text, textposition="inside",
                             marker=dict(color=CATEGORY_COLORS[key], opacity=opac),
                             hovertemplate="%{x}: %{y:.1f} %<extra>" + LABELS[key] + "</extra>"))
    fig.update_layout(barmode="stack", legend=dict(orientation="h", y=-0.25))
    fig.update_yaxes(title="% of KV-cache memory", range=[0, 100])
    return style(fig, title, height=420)
