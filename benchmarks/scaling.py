"""How each figure grows as the batch, the context and the trace length double.

    python -m benchmarks scaling [--quick]

One point says little: a cost curve says what happens next. Each series
below measures one figure at sizes that double, then reports the factor per
doubling (the geometric mean of successive ratios) and the log-log slope
(log2 of that factor): 0 = flat, 1 = linear, 2 = quadratic.

    decode attention   µs per step (contiguous SDPA, fast paged) as the batch doubles,
                       and as the context doubles
    prefill attention  ms per call (padded, packed) as the batch of mixed-length
                       prompts doubles, and as every prompt doubles in length
    engine             seconds to serve a ShareGPT-like trace (static vs continuous on
                       the paged cache, one KV budget) as the trace doubles in requests
    KV memory          steps to drain a ShareGPT-like trace through a fixed budget
                       (contiguous Max vs paged) as the trace doubles
    requests in flight the paged engine serving n requests at once (n doubling up to 1,024 in
                       the full set; KV room for all of them, up to n per step): tokens/s,
                       KV bytes held per running request, and seconds per model step, each
                       the median [min–max] of interleaved rounds, with the exponent k of
                       figure ~ n^k fitted by least squares on log-log axes

The exponents: time per step ~ n^1 says a step's cost grows with the requests in it
(a CPU computing every row); ~ n^0 would be a step bound by reading the weights (a
GPU at small batch). tokens/s ~ n^0 then means batching stopped paying; memory per
request ~ n^0 says the KV cost of one request does not depend on how many share the cache.

Every measurement reuses the other benchmarks' functions with other sizes.
"""

from __future__ import annotations

import math
import time

from benchmarks import decode_attention, engine, memory, prefill_attention
from benchmarks.common import ROUNDS, BenchResult, NullProgress, Spread, Table, environment, median, time_interleaved
from course_lib.engine import Engine, requests_from_trace
from course_lib.kv.paged import PagedKVStore
from course_lib.device import get_device
from course_lib.kv.replay import replay
from course_lib.model import TinyLMConfig, build_model
from course_lib.workloads import sharegpt_like

NAME = "scaling"
TITLE = "Scaling: how each figure grows as batch, context and trace length double"

FULL = dict(decode_batches=(4, 8, 16, 32, 64), decode_context=1024, decode_contexts=(256, 512, 1024, 2048, 4096),
            decode_batch=32, prefill_batches=(4, 8, 16, 32, 64), prefill_factors=(1, 2, 4, 8), prefill_batch=8,
            engine_requests=(16, 32, 64, 128), memory_requests=(50, 100, 200, 400), repeat=7,
            inflight_requests=(8, 16, 32, 64, 128, 256, 512, 1024), inflight_rounds=ROUNDS)
QUICK = dict(decode_batches=(4, 8, 16), decode_context=512, decode_contexts=(256, 512, 1024), decode_batch=8,
             prefill_batches=(4, 8, 16), prefill_factors=(1, 2, 4), prefill_batch=8,
             engine_requests=(8, 16, 32), memory_requests=(50, 100, 200), repeat=5,
            inflight_requests=(8, 16, 32, 64), inflight_rounds=ROUNDS)
PREFILL_TRACE = ("ShareGPT-like", 1 / 8)


def growth(sizes, values) -> tuple[float, float]:
    """(factor per doubling, log-log slope) from the first to the last point."""
    pts = [(s, v) for s, v in zip(sizes, values) if v and v > 0]
    if len(pts) < 2:
        return float("nan"), float("nan")
    doublings = math.log2(pts[-1][0] / pts[0][0])
    factor = (pts[-1][1] / pts[0][1]) ** (1 / doublings)
    return factor, math.log2(factor)


def fit_exponent(sizes, values) -> float:
    """k in value ~ c * size^k: the least-squares slope of log(value) on log(size) over every point."""
    pts = [(math.log(s), math.log(v)) for s, v in zip(sizes, values) if s and s > 0 and v and v > 0]
    if len(pts) < 2:
        return float("nan")
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else float("nan")


def serve_inflight(model, n: int) -> dict:
    """The paged engine serving the first n requests of the ShareGPT-like trace, all at time 0, with KV room
    for every one of them and up to n per step: tokens/s, KV bytes per running request, seconds per step."""
    trace = engine.make_trace("sharegpt", n)
    store = PagedKVStore.for_model(model, capacity=n * trace.max_len, block_size=engine.BLOCK_SIZE,
                                   max_model_len=trace.max_len)
    eng = Engine(model, store=store, policy="prefill-first", step_mode="packed", max_running=n,
                 max_tokens_per_step=engine.TOKENS_PER_STEP, clock="measured")
    res = eng.run(requests_from_trace(trace))
    if len(res.finished) != n:
        raise RuntimeError(f"scaling: {len(res.finished)} of {n} requests finished")
    steps = res.steps
    running = sum(len(s.items) for s in steps)
    held = sum(s.kv_token_states for s in steps)
    return {"tok_s": res.throughput, "step_s": res.makespan / len(steps),
            "kv_bytes_per_request": store.bytes_per_token * held / max(1, running),
            "peak_running": max(len(s.items) for s in steps), "steps": len(steps)}


def inflight_series(cfg: dict, device, progress) -> tuple[dict[str, list[Spread]], list[dict]]:
    """Interleaved rounds over the sizes (every size once per round); per figure a Spread per size."""
    model = build_model(TinyLMConfig(), seed=0, device=device)
    sizes = cfg["inflight_requests"]
    recs: dict[int, list[dict]] = {n: [] for n in sizes}
    with engine.engine_threads(device):
        engine.warm_up(model, None, device)
        for _ in range(cfg["inflight_rounds"]):
            for n in sizes:
                recs[n].append(serve_inflight(model, n))
                progress.update(1)
    figs = {"tokens/s": ("tok_s", 1.0), "KV KiB per running request": ("kv_bytes_per_request", 1 / 1024),
            "ms per model step": ("step_s", 1e3)}
    out = {f: [Spread.of([r[k] for r in recs[n]]).scaled(scale) for n in sizes] for f, (k, scale) in figs.items()}
    return out, [{"requests": n, "peak running": recs[n][0]["peak_running"], "steps": recs[n][0]["steps"]}
                 for n in sizes]


def decode_series(sizes_key: str, cfg: dict, device, progress) -> dict[str, list[float]]:
    """µs per decode step for contiguous SDPA and the fast paged kernel."""
    out: dict[str, list[float]] = {}
    for size in cfg[sizes_key]:
        B, L = (size, cfg["decode_context"]) if sizes_key == "decode_batches" else (cfg["decode_batch"], size)
        p = decode_attention.build_problem(B, L, device=device)
        fns, _ = decode_attention.contenders(p)
        fns = {k: fns[k] for k in ("contiguous SDPA", "paged (fast)") if k in fns}
        for name, ts in time_interleaved(fns, repeat=cfg["repeat"], warmup=1, device=device).items():
            out.setdefault(name, []).append(1e6 * median(ts))
        progress.update(1)
    return out


def prefill_series(kind: str, cfg: dict, device, progress) -> dict[str, list[float]]:
    """ms per prefill-attention call, padded vs packed (varlen)."""
    trace_name, scale = PREFILL_TRACE
    base = prefill_attention.prompt_lengths(trace_name, cfg["prefill_batch"], scale)
    sizes = cfg["prefill_batches"] if kind == "batch" else cfg["prefill_factors"]
    out: dict[str, list[float]] = {}
    for size in sizes:
        lengths = (prefill_attention.prompt_lengths(trace_name, size, scale) if kind == "batch"
                   else [n * size for n in base])
        d = prefill_attention.build(lengths, device)
        fns = prefill_attention.contenders(d)
        fns = {k: fns[k] for k in ("padded", "packed (varlen)")}
        for name, ts in time_interleaved(fns, repeat=cfg["repeat"], warmup=1, device=device).items():
            out.setdefault(name, []).append(1e3 * median(ts))
        progress.update(1)
    return out


def engine_series(cfg: dict, device, progress) -> dict[str, list[float]]:
    """Seconds to serve the first n requests of a ShareGPT-like trace (all at time 0)."""
    model = build_model(TinyLMConfig(), seed=0, device=device)
    out: dict[str, list[float]] = {}
    with engine.engine_threads(device):             # the engine benchmark's thread setting
        engine.warm_up(model, None, device)
        for n in cfg["engine_requests"]:
            trace = engine.make_trace("sharegpt", n)
            budget = engine.STATIC_BATCH * trace.max_len
            for name in ("static (padded)", "continuous, paged"):
                rec = engine.run_engine(name, model, trace, budget)
                out.setdefault(name, []).append(rec["seconds"])
            progress.update(1)
    return out


def memory_series(cfg: dict, progress) -> dict[str, list[float]]:
    """Steps to drain a ShareGPT-like trace (5 req/s) through the fixed KV budget."""
    slots = memory.budget_slots()
    out: dict[str, list[float]] = {}
    for n in cfg["memory_requests"]:
        trace = sharegpt_like(n=n, rate=5.0, seed=0)
        for alloc in ("contiguous Max", "paged, block 16"):
            res = replay(trace, memory.make_store(alloc, slots), step_time=memory.STEP_TIME, snapshot_every=None)
            out.setdefault(alloc, []).append(float(len(res.steps)))
        progress.update(1)
    return out


def run(quick: bool = False, progress=None, device=None) -> BenchResult:
    t_start = time.perf_counter()
    device = device or get_device()
    progress = progress or NullProgress()
    cfg = QUICK if quick else FULL
    series = []       # (figure, what doubles, sizes, {contender: values}, unit)
    progress.set_postfix_str("scaling: decode vs batch")
    series.append((f"decode attention step (context {cfg['decode_context']})", "batch", cfg["decode_batches"],
                   decode_series("decode_batches", cfg, device, progress), "µs"))
    progress.set_postfix_str("scaling: decode vs context")
    series.append((f"decode attention step (batch {cfg['decode_batch']})", "context", cfg["decode_contexts"],
                   decode_series("decode_contexts", cfg, device, progress), "µs"))
    progress.set_postfix_str("scaling: prefill vs batch")
    series.append(("prefill attention, mixed lengths", "batch", cfg["prefill_batches"],
                   prefill_series("batch", cfg, device, progress), "ms"))
    progress.set_postfix_str("scaling: prefill vs length")
    series.append((f"prefill attention, batch {cfg['prefill_batch']}", "prompt length (×)", cfg["prefill_factors"],
                   prefill_series("length", cfg, device, progress), "ms"))
    progress.set_postfix_str("scaling: engine vs trace length")
    series.append(("serve a ShareGPT-like trace (makespan)", "requests", cfg["engine_requests"],
                   engine_series(cfg, device, progress), "s"))
    progress.set_postfix_str("scaling: memory vs trace length")
    series.append(("drain a ShareGPT-like trace, fixed KV budget", "requests", cfg["memory_requests"],
                   memory_series(cfg, progress), "steps"))

    rows, ratios, flat = [], {}, []
    for figure, axis, sizes, by_name, unit in series:
        for name, values in by_name.items():
            factor, slope = growth(sizes, values)
            rows.append({"figure": figure, "contender": name, "doubling": axis,
                         "sizes": " → ".join(str(s) for s in sizes),
                         "values": " → ".join(f"{v:.3g}" for v in values) + f" {unit}",
                         "× per doubling": factor, "log-log slope": slope})
            ratios[f"{figure}, {name}: × per doubling of {axis}"] = factor
            flat.append({"figure": figure, "contender": name, "axis": axis, "sizes": list(sizes),
                         "values": values, "unit": unit, "factor": factor, "slope": slope})
    table = Table("Growth per doubling (attention: median of interleaved rounds; engine makespan and memory: "
                  "one run each)",
                  ["figure", "contender", "doubling", "sizes", "values", "× per doubling", "log-log slope"], rows,
                  note="log-log slope: 0 = flat, 1 = linear (twice the size, twice the cost), 2 = quadratic.")
    progress.set_postfix_str("scaling: requests in flight")
    inflight, counts = inflight_series(cfg, device, progress)
    sizes_n = cfg["inflight_requests"]
    irows = []
    for figure, spreads in inflight.items():
        k = fit_exponent(sizes_n, [sp.median for sp in spreads])
        k_lo = fit_exponent(sizes_n, [sp.min for sp in spreads])
        k_hi = fit_exponent(sizes_n, [sp.max for sp in spreads])
        irows.append({"figure": figure, **{f"n={n}": sp.text() for n, sp in zip(sizes_n, spreads)},
                      "fitted exponent k (medians)": k,
                      "k from the mins / maxes": f"{k_lo:.2f} / {k_hi:.2f}"})
        ratios[f"requests in flight: {figure} ~ n^k, k"] = k
        flat.append({"figure": f"requests in flight: {figure}", "contender": "course engine (paged)",
                     "axis": "requests", "sizes": list(sizes_n), "values": [sp.median for sp in spreads],
                     "spread": [sp.asdict() for sp in spreads], "unit": figure, "factor": 2 ** k, "slope": k})
    irows.append({"figure": "peak requests in one step", **{f"n={c['requests']}": c["peak running"] for c in counts},
                  "fitted exponent k (medians)": fit_exponent(sizes_n, [c["peak running"] for c in counts]),
                  "k from the mins / maxes": "(a count: no spread)"})
    itable = Table(f"Requests in flight: the paged engine serving n ShareGPT-like requests at once (KV room for all, "
                   f"up to n per step, {engine.TOKENS_PER_STEP} tokens per step), median [min–max] of "
                   f"{cfg['inflight_rounds']} interleaved rounds; figure ~ n^k fitted by least squares (log-log)",
                   list(irows[0]), irows,
                   note="k = 1: doubling the requests doubles the figure; k = 0: flat. The KV bytes held per request "
                        "count the token slots in use at each step, averaged over steps and requests.")
    sizes = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}
    sizes["torch threads (engine series)"] = engine.ENGINE_THREADS or "torch default"
    res = BenchResult(NAME, TITLE, environment(device), sizes, [table, itable], [], ratios, [],
                      data={"series": flat})
    res.figures = figures(flat)
    res.seconds = time.perf_counter() - t_start
    return res


def figures(flat) -> list:
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    from course_lib.plots import style

    fig = go.Figure()
    most = max(len(s["sizes"]) for s in flat)
    xs = list(range(most))
    for slope, dash in ((0, "dot"), (1, "dash"), (2, "dashdot")):
        fig.add_trace(go.Scatter(x=xs, y=[2 ** (slope * x) for x in xs], mode="lines", name=f"slope {slope}",
                                 line=dict(color="lightgray", dash=dash)))
    for i, s in enumerate(flat):
        x = [math.log2(size / s["sizes"][0]) for size in s["sizes"]]
        y = [v / s["values"][0] if s["values"][0] else None for v in s["values"]]
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=f"{s['figure']}: {s['contender']} (vs {s['axis']})",
                                 line=dict(color=qualitative.Dark24[i % len(qualitative.Dark24)])))
    style(fig, "Cost curves: each figure relative to its smallest size, as the size doubles (log-log)", height=520)
    fig.update_layout(xaxis_title="doublings of the size (log2)", yaxis_title="figure ÷ figure at the smallest size",
                      yaxis_type="log", legend=dict(font=dict(size=10)), xaxis=dict(dtick=1))
    return [fig]


def units(quick: bool) -> int:
    cfg = QUICK if quick else FULL
    return (len(cfg["decode_batches"]) + len(cfg["decode_contexts"]) + len(cfg["prefill_batches"])
            + len(cfg["prefill_factors"]) + len(cfg["engine_requests"]) + len(cfg["memory_requests"])
            + cfg["inflight_rounds"] * len(cfg["inflight_requests"]))
