"""Figures for lessons 04 and 05: block tables, the pool over time, paging's waste, block size.

block_table_map      logical blocks of each sequence -> physical blocks of the pool, with lines
pool_over_time       blocks held by one table / shared / cached for reuse / free, step by step
waste_with_paging    lesson 02's Figure-2 bars with the paged column added (paper's 96.3 % marked)
block_size_tradeoff  internal fragmentation and kernel time against block size
decode_timings       time per decode step of the attention paths, with the paper's overhead band

The figures only read results: a PoolSnapshot (course_lib.kv.pool_views),
ReplayResult shares, timing dictionaries.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from course_lib.plots import COLORS, check_title, style
from course_lib.validate import check_choice, check_float, check_has, check_int, check_ints, check_mapping, check_sequence, \
    check_type
from course_lib.plots.memory import waste_breakdown

SEQ_COLORS = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
SHARED_COLOR = "#d62728"
CACHED_COLOR = "#ffbb78"


def _seq_color(i: int) -> str:
    return SEQ_COLORS[i % len(SEQ_COLORS)]


def block_table_map(snap, title: str | None = None, columns: int | None = None, max_blocks: int = 256) -> go.Figure:
    """Left: each sequence's logical blocks in order. Right: the pool's physical blocks in a grid.
    A line joins logical block i of a sequence to the physical block its table names; the
    logical square shows that physical block's number, in the colour of its first owner.

    snap: a PoolSnapshot (tables, fill, ref_count, cached, num_blocks, block_size)
    Physical blocks: coloured by their (first) owner, red outline when shared by several
    tables, light orange when cached for reuse with no owner, grey when free; the text is
    how many of the block's slots hold a token state.
    """
    check_has("snap", snap, ("num_blocks", "block_size", "tables", "fill", "ref_count", "cached"),
              "a PoolSnapshot (PagedKVStore.snapshot())")
    check_title(title)
    check_int("columns", columns, 1, 256, none_ok=True)
    check_int("max_blocks", max_blocks, 1)
    nb, bs = snap.num_blocks, snap.block_size
    if nb > max_blocks:
        raise ValueError(f"max_blocks: must be >= the pool's {nb} blocks (the map draws every block); got {max_blocks}")
    cols = columns or min(16, max(4, int(nb ** 0.5 + 0.999)))
    seq_ids = list(snap.tables)
    longest = max((len(t) for t in snap.tables.values()), default=0)
    x0 = longest + 2                                               # the pool starts right of the tables
    owner: dict[int, int] = {}
    for k, s in enumerate(seq_ids):
        for b in snap.tables[s]:
            owner.setdefault(b, k)
    fig = go.Figure()
    # lines first (under the squares)
    lx, ly = [], []
    for k, s in enumerate(seq_ids):
        for i, b in enumerate(snap.tables[s]):
            lx += [i, x0 + b % cols, None]
            ly += [-k, -(b // cols) * 1.0 - 0.0, None]
    if lx:
        fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", line=dict(color="rgba(120,120,120,0.35)", width=1),
                                 hoverinfo="skip", showlegend=False))
    # logical blocks, one row per sequence
    for k, s in enumerate(seq_ids):
        t = snap.tables[s]
        fills = [snap.fill.get(b, 0) for b in t]
        fig.add_trace(go.Scatter(
            x=list(range(len(t))), y=[-k] * len(t), mode="markers+text", name=f"seq {s}", showlegend=False,
            marker=dict(symbol="square", size=22, color=[_seq_color(owner[b]) for b in t],
                        line=dict(color=[SHARED_COLOR if snap.ref_count[b] > 1 else "white" for b in t], width=2)),
            text=[str(b) for b in t], textfont=dict(color="white", size=10),
            hovertext=[f"seq {s}, logical block {i} -> physical block {b}; {f}/{bs} slots hold tokens"
                       + (f"; shared by {snap.ref_count[b]} tables" if snap.ref_count[b] > 1 else "")
                       for i, (b, f) in enumerate(zip(t, fills))],
            hoverinfo="text"))
    # the pool
    colors, lines, texts, hovers = [], [], [], []
    for b in range(nb):
        if b in owner:
            colors.append(_seq_color(owner[b]))
            texts.append(str(snap.fill.get(b, 0)))
            hovers.append(f"physical block {b}: {snap.fill.get(b, 0)}/{bs} slots hold tokens, "
                          f"held by {snap.ref_count[b]} table(s)")
        elif b in snap.cached:
            colors.append(CACHED_COLOR)
            texts.append("c")
            hovers.append(f"physical block {b}: cached for reuse (no owner; evictable)")
        else:
            colors.append("#e8e8e8")
            texts.append("")
            hovers.append(f"physical block {b}: free")
        lines.append(SHARED_COLOR if snap.ref_count[b] > 1 else "white")
    fig.add_trace(go.Scatter(
        x=[x0 + b % cols for b in range(nb)], y=[-(b // cols) for b in range(nb)], mode="markers+text",
        name="pool", marker=dict(symbol="square", size=22, color=colors, line=dict(color=lines, width=2)),
        text=texts, textfont=dict(color="white", size=9), hovertext=hovers, hoverinfo="text", showlegend=False))
    rows = max(len(seq_ids), -(-nb // cols))
    fig.add_annotation(x=(longest - 1) / 2 if longest else 0, y=0.9, text="block tables (logical)", showarrow=False)
    fig.add_annotation(x=x0 + (cols - 1) / 2, y=0.9, text=f"the pool: {nb} blocks of {bs} slots", showarrow=False)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(range=[-rows + 0.4, 1.4], showgrid=False, zeroline=False,
                     tickvals=[-k for k in range(len(seq_ids))], ticktext=[f"seq {s}" for s in seq_ids])
    return style(fig, title, height=max(240, 34 * rows + 90))


def pool_over_time(counts: Sequence, steps: Sequence[int] | None = None, title: str | None = None,
                   height: int = 300) -> go.Figure:
    """Stacked blocks per step: held by one table, shared by several, cached for reuse
    (evictable), free. counts: PoolCounts (course_lib.kv.pool_views) or PoolSnapshots."""
    counts = check_sequence("counts", counts, what="a list of PoolCounts or PoolSnapshots")
    counts = [c.counts() if hasattr(c, "counts") else c for c in counts]
    for i, c in enumerate(counts):
        check_has(f"counts[{i}]", c, ("num_blocks", "held", "shared", "cached", "free"), "a PoolCounts")
    if steps is not None:
        check_ints("steps", steps, min_len=len(counts), max_len=len(counts))
    check_title(title)
    check_int("height", height, 100, 10_000)
    x = list(steps) if steps is not None else list(range(len(counts)))
    series = {
        "held by one request": ([c.held - c.shared for c in counts], COLORS["real"]),
        "shared by several": ([c.shared for c in counts], SHARED_COLOR),
        "cached for reuse (evictable)": ([c.cached for c in counts], CACHED_COLOR),
        "free": ([c.free for c in counts], "#e8e8e8"),
    }
    fig = go.Figure()
    for name, (y, color) in series.items():
        fig.add_trace(go.Scatter(x=x, y=y, stackgroup="one", name=name, mode="none", fillcolor=color))
    fig.update_yaxes(title="blocks", range=[0, counts[0].num_blocks if counts else 1])
    fig.update_xaxes(title="step")
    fig.update_layout(legend=dict(orientation="h", y=-0.3))
    return style(fig, title, height=height)


def waste_with_paging(measured: Mapping[str, Mapping[str, float]], published: Mapping[str, Mapping[str, float]],
                      paged_key: str = "paged", paper_token_share: float | None = None,
                      title: str | None = None) -> go.Figure:
    """Lesson 02's Figure-2 bars, with the paged store's measured column; the paper's vLLM
    token-state share (it publishes only that number for vLLM) is marked on that column."""
    check_type("paged_key", paged_key, str)
    check_float("paper_token_share", paper_token_share, 0, 100, none_ok=True)
    fig = waste_breakdown(measured, published, title=title)
    if paper_token_share is not None and paged_key in measured:
        fig.add_trace(go.Scatter(x=[[paged_key], ["measured"]], y=[paper_token_share], mode="markers",
                                 marker=dict(symbol="line-ew-open", size=40, color="black", line=dict(width=3)),
                                 name=f"paper: vLLM's token states ({paper_token_share} %)",
                                 hovertemplate=f"paper (vLLM): {paper_token_share} %<extra></extra>"))
    return fig


def block_size_tradeoff(block_sizes: Sequence[int], token_share: Sequence[float], kernel_ms: Sequence[float],
                        contiguous_ms: float | None = None, title: str | None = None) -> go.Figure:
    """Left axis: % of memory holding token states (internal fragmentation eats the rest).
    Right axis: decode-attention time of the paged kernel per block size."""
    block_sizes = check_ints("block_sizes", block_sizes, 1, min_len=1)
    n = len(block_sizes)
    for name, values in (("token_share", token_share), ("kernel_ms", kernel_ms)):
        for i, v in enumerate(check_sequence(name, values, n, n, what=f"a list of {n} numbers (one per block size)")):
            check_float(f"{name}[{i}]", v, 0)
    check_float("contiguous_ms", contiguous_ms, 0, none_ok=True)
    check_title(title)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    labels = [str(b) for b in block_sizes]
    fig.add_trace(go.Bar(x=labels, y=[100 * s for s in token_share], name="token states (% of memory, busy steps)",
                         marker_color=COLORS["real"], text=[f"{100 * s:.1f}" for s in token_share],
                         textposition="inside"), secondary_y=False)
    fig.add_trace(go.Scatter(x=labels, y=list(kernel_ms), name="paged kernel: ms per decode step",
                             mode="lines+markers", line=dict(color=COLORS["prefill"])), secondary_y=True)
    if contiguous_ms is not None:
        fig.add_trace(go.Scatter(x=labels, y=[contiguous_ms] * len(labels), name="contiguous SDPA (ms)",
                                 mode="lines", line=dict(color=COLORS["published"], dash="dash")), secondary_y=True)
    fig.update_xaxes(title="block size (token slots per block)", type="category")
    fig.update_yaxes(title="% token states", range=[0, 100], secondary_y=False)
    fig.update_yaxes(title="ms per decode step", rangemode="tozero", secondary_y=True)
    fig.update_layout(legend=dict(orientation="h", y=-0.3))
    return style(fig, title, height=380)


def decode_timings(times: Mapping[str, Sequence[float]], baseline: str = "contiguous SDPA",
                   paper_band: tuple[float, float] | None = (1.20, 1.26), title: str | None = None) -> go.Figure:
    """Fastest time per decode step of each path (bars, ms) with its ratio to the baseline; the
    paper's paged-kernel overhead band (x baseline) drawn as a shaded range."""
    check_mapping("times", times, "a dict {path: list of seconds}", min_len=1)
    for name, ts in times.items():
        for i, t in enumerate(check_sequence(f"times[{name!r}]", ts, 1, what="a list of seconds")):
            check_float(f"times[{name!r}][{i}]", t, 0)
    check_choice("baseline", baseline, list(times))
    if paper_band is not None:
        lo, hi = check_sequence("paper_band", paper_band, 2, 2, what="(low, high) or None")
        check_float("paper_band[0]", lo, 0)
        check_float("paper_band[1]", hi, lo)
    check_title(title)
    names = list(times)
    best = {n: min(times[n]) for n in names}
    fig = go.Figure(go.Bar(x=names, y=[1e3 * best[n] for n in names],
                           text=[f"{best[n] / best[baseline]:.2f}x" for n in names], textposition="outside",
                           marker_color=[COLORS["published"] if n == baseline else COLORS["measured"] for n in names]))
    if paper_band is not None:
        lo, hi = (1e3 * best[baseline] * f for f in paper_band)
        fig.add_hrect(y0=lo, y1=hi, fillcolor=COLORS["internal"], opacity=0.25, line_width=0,
                      annotation_text=f"vLLM paper: paged kernel {paper_band[0]:.2f}-{paper_band[1]:.2f}x contiguous",
                      annotation_position="top right")
    fig.update_yaxes(title="ms per decode step (fastest round)", rangemode="tozero")
    return style(fig, title, height=360)
