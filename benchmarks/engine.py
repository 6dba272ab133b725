"""Serving throughput and latency: static vs continuous batching, contiguous vs paged KV, prefix caching, HF.

    python -m benchmarks engine [--quick]

The same TinyLM weights serve the same requests (course_lib.workloads traces,
lengths scaled down for a CPU; every request arrives at time 0 and stops at
its own output length) under one FIXED KV BUDGET: room for STATIC_BATCH
requests of the trace's full context length, in token slots. What each
contender does with that budget:

    static (padded)            request-level batches of STATIC_BATCH requests, each
                               reserving the full context (FasterTransformer-style);
                               a batch runs until its longest member is done
    continuous, contiguous Max iteration-level (Orca-style, prefill first), each request
                               still reserves the full context: the same STATIC_BATCH
                               run at once, but a finished one is replaced at once
    continuous, contiguous Oracle  the same, reserving exactly prompt + output (as if known)
    continuous, paged          iteration-level on the paged cache (16-token blocks taken
                               as tokens arrive): memory decides how many run (up to
                               MAX_RUNNING), the fast paged attention kernel reads the blocks
    continuous, paged + prefix caching  (shared-prefix trace) full blocks of a prompt
                               are found again by hash and not recomputed
    HF generate (padded static)  transformers' LlamaForCausalLM.generate() on the very same
                               weights (benchmarks.engine_throughput.hf_twin), greedy, in
                               padded static batches of STATIC_BATCH

Figures per contender: generated tokens per second (tokens / time from the
first arrival to the last finish), TTFT and TPOT percentiles (nearest rank,
from every request's token times; course_lib.engine.metrics), and each one's
ratio to static batching measured in the same run. Every contender serves the
trace once per round, rounds interleaved (ROUNDS of them); figures are the
median [min–max] of the rounds, ratios are taken round by round, and a target
is met only when the worse end of its spread meets it.
"""

from __future__ import annotations

import math
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from benchmarks.common import ROUNDS, BenchResult, NullProgress, Spread, Table, Target, environment  # noqa: E402
from course_lib.device import get_device, seed_everything, synchronize  # noqa: E402
from course_lib.engine import Engine, requests_from_trace  # noqa: E402
from course_lib.engine.metrics import percentile, ttft_tpot  # noqa: E402
from course_lib.kv.contiguous import ContiguousKVStore  # noqa: E402
from course_lib.kv.paged import PagedKVStore  # noqa: E402
from course_lib.model import TinyLMConfig, build_model  # noqa: E402
from course_lib.padding import pad_batch  # noqa: E402
from course_lib.workloads import alpaca_like, sharegpt_like  # noqa: E402

NAME = "engine"
TITLE = "Engine throughput and latency: static vs continuous, contiguous vs paged, prefix caching, HF generate()"

# TinyLM's matrices are tiny (128 wide): on a CPU one thread runs them fastest and steadiest (two
# threads on two shared cores spend their time waiting for each other). Every engine and HF use
# the same setting; `python -m benchmarks --engine-threads N` changes it (None: torch's own choice).
ENGINE_THREADS: int | None = 1
STATIC_BATCH = 8                 # the static batch, and how many full-context reservations the budget holds
MAX_RUNNING = 64                 # the iteration-level engines' batch-slot cap (vLLM's max_num_seqs is 256)
TOKENS_PER_STEP = 256            # iteration-level token budget of one step
BLOCK_SIZE = 16
SHARED_PREFIX = 64               # tokens of system prompt in front of every prompt (shared-prefix trace)
# trace key -> (label, maker, scale, extra kwargs); requests per trace in FULL / QUICK
TRACES = {
    "sharegpt": ("ShareGPT-like", sharegpt_like, 1 / 8, {}),
    "alpaca": ("Alpaca-like", alpaca_like, 1 / 4, {}),
    "prefix": (f"ShareGPT-like, shared {SHARED_PREFIX}-token prefix", sharegpt_like, 1 / 8,
               {"shared_prefix": SHARED_PREFIX, "num_prefixes": 2}),
}
FULL = dict(requests={"sharegpt": 96, "alpaca": 128, "prefix": 64}, repeat=ROUNDS)
QUICK = dict(requests={"sharegpt": 24, "alpaca": 12, "prefix": 8}, repeat=ROUNDS)
CONTENDERS = {
    "sharegpt": ("static (padded)", "continuous, contiguous Max", "continuous, contiguous Oracle", "continuous, paged",
                 "HF generate (padded static)"),
    "alpaca": ("static (padded)", "continuous, contiguous Max", "continuous, contiguous Oracle", "continuous, paged",
               "HF generate (padded static)"),
    "prefix": ("static (padded)", "continuous, paged", "continuous, paged + prefix caching"),
}
QUICK_SKIP = {("alpaca", "continuous, contiguous Oracle"), ("sharegpt", "continuous, contiguous Oracle"),
              ("alpaca", "continuous, contiguous Max")}


def make_trace(key: str, n: int, seed: int = 0):
    label, maker, scale, extra = TRACES[key]
    return maker(n=n, rate=math.inf, seed=seed, scale=scale, **extra)


def engine_for(name: str, model, budget: int, max_len: int) -> Engine:
    """A fresh engine (and KV store) for contender `name` over `budget` token slots."""
    def contiguous(reservation):
        return ContiguousKVStore.for_model(model, capacity=budget, reservation=reservation, max_model_len=max_len)

    def paged(prefix):
        return PagedKVStore.for_model(model, capacity=budget // BLOCK_SIZE * BLOCK_SIZE, block_size=BLOCK_SIZE,
                                      max_model_len=max_len, prefix_caching=prefix)
    if name == "static (padded)":
        return Engine(model, store=contiguous("max"), policy="static", step_mode="padded", max_running=STATIC_BATCH,
                      max_tokens_per_step=1 << 16, clock="measured")
    common = dict(policy="prefill-first", step_mode="packed", max_running=MAX_RUNNING,
                  max_tokens_per_step=TOKENS_PER_STEP, clock="measured")
    if name == "continuous, contiguous Max":
        return Engine(model, store=contiguous("max"), **common)
    if name == "continuous, contiguous Oracle":
        return Engine(model, store=contiguous("oracle"), **common)
    if name == "continuous, paged":
        return Engine(model, store=paged(False), **common)
    if name == "continuous, paged + prefix caching":
        return Engine(model, store=paged(True), **common)
    raise ValueError(f"name: unknown engine contender {name!r}")


def latency_stats(ttft: list[float], tpot: list[float]) -> dict:
    out = {}
    for key, xs in (("ttft", ttft), ("tpot", tpot)):
        for q in (50, 90, 99):
            out[f"{key}_p{q}"] = percentile(xs, q)
    return out


def run_engine(name: str, model, trace, budget: int) -> dict:
    eng = engine_for(name, model, budget, trace.max_len)
    res = eng.run(requests_from_trace(trace))
    if len(res.finished) != len(trace):
        raise RuntimeError(f"{name}: {len(res.finished)} of {len(trace)} requests finished")
    lat = res.latencies()
    steps = res.steps
    stats = getattr(eng.store, "stats", None)
    return {"tokens": res.generated_tokens, "seconds": res.makespan, "tok_s": res.throughput, "steps": len(steps),
            "running": sum(len(s.items) for s in steps) / max(1, len(steps)),
            "preemptions": sum(r.num_preemptions for r in res.requests),
            "hit_rate": stats.hit_rate if stats is not None and eng.store.prefix_cache is not None else None,
            "outputs": res.outputs(), **latency_stats(lat["ttft"], lat["tpot"])}


class _StepTimes:
    """A transformers streamer that only notes when each generation step delivers its tokens."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


@torch.no_grad()
def run_hf(hf, trace, batch_size: int, device) -> dict:
    """Padded static batches in arrival order through HF generate(); a batch runs until its
    longest request is done. Token times come from a streamer, so TTFT and TPOT are real."""
    from transformers.generation.streamers import BaseStreamer

    class Streamer(_StepTimes, BaseStreamer):
        pass

    reqs = sorted(trace, key=lambda r: (r.arrival, r.id))
    clock, outputs, ttft, tpot, steps = 0.0, {}, [], [], 0
    for i in range(0, len(reqs), batch_size):
        batch = reqs[i:i + batch_size]
        longest = max(r.output_len for r in batch)
        steps += longest                                                   # one forward call per new token
        padded = pad_batch([list(r.prompt) for r in batch], side="left", device=device)
        streamer = Streamer()
        synchronize(device)
        t0 = time.perf_counter()
        out = hf.generate(input_ids=padded.input_ids, attention_mask=padded.attention_mask, do_sample=False,
                          max_new_tokens=longest, min_new_tokens=longest, pad_token_id=256, eos_token_id=None,
                          streamer=streamer)
        synchronize(device)
        step_times = [clock + t - t0 for t in streamer.times[1:]]        # times[0]: the prompt was handed in
        clock += time.perf_counter() - t0
        new = out[:, padded.input_ids.shape[1]:]                           # (B, longest)
        for b, r in enumerate(batch):
            outputs[r.id] = new[b, :r.output_len].tolist()
            a, p = ttft_tpot(r.arrival, step_times[:r.output_len])
            ttft.append(a)
            if p is not None:
                tpot.append(p)
    tokens = sum(r.output_len for r in reqs)
    return {"tokens": tokens, "seconds": clock, "tok_s": tokens / clock, "steps": steps,
            "running": tokens / steps,
            "preemptions": 0, "hit_rate": None, "outputs": outputs, **latency_stats(ttft, tpot)}


def hf_model(model):
    """transformers' LlamaForCausalLM on TinyLM's weights, or (None, why) if transformers is missing."""
    try:
        from benchmarks.engine_throughput import hf_twin
        return hf_twin(model), None
    except ImportError as exc:
        return None, f"transformers is not installed ({exc}); `pip install -e '.[dev]'` adds it"


def warm_up(model, hf, device) -> None:
    """First calls pay for allocations and kernel loading: pay them before any clock runs."""
    tiny = make_trace("sharegpt", 3, seed=99)
    for name in ("static (padded)", "continuous, contiguous Max", "continuous, paged"):
        engine_for(name, model, STATIC_BATCH * tiny.max_len, tiny.max_len).run(requests_from_trace(tiny))
    if hf is not None:
        hf.generate(input_ids=torch.tensor([[257, 65, 66]], device=device), max_new_tokens=3, pad_token_id=256)


class engine_threads:
    """`with engine_threads(device):` runs its body with ENGINE_THREADS torch threads (CPU only)."""

    def __init__(self, device):
        self.device, self.prev = device, torch.get_num_threads()

    def __enter__(self):
        if self.device.type == "cpu" and ENGINE_THREADS:
            torch.set_num_threads(ENGINE_THREADS)
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self.prev)


def run(quick: bool = False, progress=None, device=None) -> BenchResult:
    device = device or get_device()
    with engine_threads(device):
        return _run(quick, progress, device)


def _run(quick: bool, progress, device) -> BenchResult:
    t_start = time.perf_counter()
    progress = progress or NullProgress()
    cfg = QUICK if quick else FULL
    seed_everything(0)
    model = build_model(TinyLMConfig(), seed=0, device=device)
    hf, hf_missing = hf_model(model)
    warm_up(model, hf, device)
    tables, ratios, targets, notes, data = [], {}, [], [], {}
    best_by_trace, spreads_by_trace = {}, {}
    for key in TRACES:
        trace = make_trace(key, cfg["requests"][key])
        budget = STATIC_BATCH * trace.max_len
        names = [n for n in CONTENDERS[key] if not (quick and (key, n) in QUICK_SKIP)]
        allr: dict[str, list[dict]] = {}
        for rep in range(cfg["repeat"]):                     # interleaved rounds; median [min-max] of them
            for name in names:
                progress.set_postfix_str(f"engine {key}: {name}")
                if name.startswith("HF"):
                    if hf is None:
                        progress.update(1)
                        continue
                    rec = run_hf(hf, trace, STATIC_BATCH, device)
                else:
                    rec = run_engine(name, model, trace, budget)
                allr.setdefault(name, []).append(rec)
                progress.update(1)
        # the round with the median tokens/s stands for each contender's counts (steps do not depend on time)
        best = {n: sorted(rs, key=lambda r: r["tok_s"])[len(rs) // 2] for n, rs in allr.items()}
        spreads = {n: Spread.ratio([r["tok_s"] for r in rs], [r["tok_s"] for r in allr["static (padded)"]])
                   for n, rs in allr.items()}
        base = best["static (padded)"]
        label = TRACES[key][0]
        rows = []
        for name, rec in best.items():
            same = sum(rec["outputs"][rid] == base["outputs"][rid] for rid in base["outputs"])
            row = {"engine": name, "tok/s [min–max]": Spread.of([r["tok_s"] for r in allr[name]]).text(),
                   "× static [min–max]": spreads[name].text(),
                   "steps": rec["steps"], "tokens per step": rec["tokens"] / rec["steps"] if rec["steps"] else None,
                   "TTFT p50 s [min–max]": Spread.of([r["ttft_p50"] for r in allr[name]]).text(),
                   "TTFT p90 s": rec["ttft_p90"],
                   "TTFT p50 × static": rec["ttft_p50"] / base["ttft_p50"],
                   "TPOT p50 ms [min–max]": Spread.of([r["tpot_p50"] for r in allr[name]]).scaled(1e3).text(),
                   "TPOT p90 ms": 1e3 * rec["tpot_p90"],
                   "TPOT p50 × static": rec["tpot_p50"] / base["tpot_p50"],
                   "running (mean)": rec["running"], "preemptions": rec["preemptions"],
                   "prefix hit %": None if rec["hit_rate"] is None else 100 * rec["hit_rate"],
                   "same tokens as static": f"{same}/{len(base['outputs'])}"}
            rows.append(row)
            if name != "static (padded)":
                ratios[f"{name} / static tok/s, {label}"] = spreads[name].median
                ratios[f"{name} / static tok/s, {label} (worst round)"] = spreads[name].min
                ratios[f"{name} / static TTFT p50, {label}"] = row["TTFT p50 × static"]
                ratios[f"{name} / static TPOT p50, {label}"] = row["TPOT p50 × static"]
                if rec["steps"]:
                    ratios[f"static steps / {name} steps, {label}"] = base["steps"] / rec["steps"]
        if "HF generate (padded static)" in best:
            hf_rounds = [r["tok_s"] for r in allr["HF generate (padded static)"]]
            for name in best:
                if not name.startswith("HF"):
                    sp = Spread.ratio([r["tok_s"] for r in allr[name]], hf_rounds)
                    spreads[f"{name} / HF"] = sp
                    ratios[f"{name} / HF generate tok/s, {label}"] = sp.median
        if key == "prefix" and "continuous, paged + prefix caching" in best:
            ratios[f"paged + prefix caching / paged tok/s, {label}"] = Spread.ratio(
                [r["tok_s"] for r in allr["continuous, paged + prefix caching"]],
                [r["tok_s"] for r in allr["continuous, paged"]]).median
        cols = ["engine", "tok/s [min–max]", "× static [min–max]", "steps", "tokens per step", "TTFT p50 s [min–max]", "TTFT p90 s", "TTFT p50 × static",
                "TPOT p50 ms [min–max]",
                "TPOT p90 ms", "TPOT p50 × static", "running (mean)", "preemptions", "prefix hit %",
                "same tokens as static"]
        tables.append(Table(f"{label}: {len(trace)} requests (mean prompt {trace.mean_input:.1f}, mean output "
                            f"{trace.mean_output:.1f} tokens, context {trace.max_len}), KV budget {budget:,} token "
                            f"slots = {STATIC_BATCH} full contexts; {cfg['repeat']} interleaved rounds (latencies and "
                            f"counts: the round with the median tokens/s)", cols, rows))
        best_by_trace[key] = best
        spreads_by_trace[key] = spreads
        data[key] = {"trace": trace.summary(), "budget_slots": budget,
                     "results": {n: {k: v for k, v in r.items() if k != "outputs"} for n, r in best.items()},
                     "rounds": {n: [{k: v for k, v in r.items() if k != "outputs"} for r in rs]
                                for n, rs in allr.items()},
                     "ratio_spreads": {n: sp.asdict() for n, sp in spreads.items()}}

    sg = best_by_trace["sharegpt"]
    paged, static = sg.get("continuous, paged"), sg.get("static (padded)")
    hf_rec = sg.get("HF generate (padded static)")
    cont_max = sg.get("continuous, contiguous Max")
    sgs = spreads_by_trace["sharegpt"]
    targets += [
        Target.from_spread("continuous batching on the paged cache / static batching, tokens/s, ShareGPT-like",
                           sgs["continuous, paged"], 3.0,
                           limit=_static_limit(paged, static, cont_max), source="issue 8"),
        Target.from_spread("continuous batching on the paged cache / HF generate() (padded static), tokens/s, "
                           "ShareGPT-like", sgs["continuous, paged / HF"], 2.0,
                           limit=_hf_limit(paged, hf_rec), source="issue 8") if hf_rec else
        Target("continuous batching on the paged cache / HF generate() (padded static), tokens/s, ShareGPT-like",
               None, 2.0, source="issue 8"),
    ]
    if hf_missing:
        notes.append(f"HF generate(): not run ({hf_missing}).")
    notes += [f"Every iteration-level engine may run up to {MAX_RUNNING} requests at once and {TOKENS_PER_STEP} "
              f"tokens per step; static batching and HF run batches of {STATIC_BATCH}. KV blocks of {BLOCK_SIZE} "
              "tokens. Figures: median [min–max] of the interleaved rounds; ratios round by round.",
              "TTFT: first token time - arrival (everyone arrives at 0, so it includes queueing); TPOT: "
              "(last token - first token) / (tokens - 1). '× static' < 1 is better for latencies.",
              "'same tokens as static': requests whose greedy tokens equal the static engine's (fp32; a tie in "
              "argmax can flip between kernels that sum in a different order)."]
    sizes = {"model": f"TinyLM {model.num_parameters() / 1e6:.2f} M parameters, {model.config.num_hidden_layers} "
                      f"layers, fp32",
             "requests": dict(cfg["requests"]), "static batch": STATIC_BATCH, "max running": MAX_RUNNING,
             "tokens per step": TOKENS_PER_STEP, "block size": BLOCK_SIZE, "repeat": cfg["repeat"],
             "torch threads (engine)": torch.get_num_threads(),
             "scales": {TRACES[k][0]: TRACES[k][2] for k in TRACES}, "arrivals": "all at time 0"}
    res = BenchResult(NAME, TITLE, environment(device), sizes, tables, targets, ratios, notes, data=data)
    res.figures = figures(best_by_trace)
    res.seconds = time.perf_counter() - t_start
    return res


def _static_limit(paged: dict, static: dict, cont_max: dict | None) -> str:
    """Why continuous-on-paged is not (yet) 3x static here, from this run's own figures:
    tokens/s ratio = (static steps / paged steps) / (paged seconds per step / static seconds per step)."""
    fewer = static["steps"] / paged["steps"]
    dearer = (paged["seconds"] / paged["steps"]) / (static["seconds"] / static["steps"])
    sched = (f"iteration-level scheduling alone (same batch of {STATIC_BATCH}) gives "
             f"{cont_max['tok_s'] / static['tok_s']:.2f}x; " if cont_max else "")
    return (f"{sched}paging lets {paged['running']:.1f} requests share a step on average (static: "
            f"{static['running']:.1f} computing of {STATIC_BATCH} slots), so the paged engine needs {fewer:.2f}x fewer "
            f"steps, but each of its steps takes {dearer:.2f}x as long: on a CPU a step's time grows with the requests "
            f"in it (every matmul row, every attention call), while on a GPU a decode step is bound by reading the "
            f"weights and costs nearly the same for 8 or 64 requests. Closing it: a GPU (or a model large enough "
            f"that weight reads dominate), and longer traces (a short one ends with its longest requests decoding "
            f"alone, which no batching can speed up).")


def _hf_limit(paged: dict, hf: dict) -> str:
    fewer = hf["steps"] / paged["steps"]
    dearer = (paged["seconds"] / paged["steps"]) / (hf["seconds"] / hf["steps"])
    return (f"HF generate() runs padded static batches of {STATIC_BATCH}: {fewer:.2f}x the paged engine's steps, "
            f"each {1 / dearer:.2f}x as long as one paged step. Closing it: the same levers as against static "
            f"batching (a GPU, longer traces), since HF's loss is request-level batching itself.")


def figures(best_by_trace) -> list:
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    from course_lib.plots import style

    keys = list(best_by_trace)
    fig = make_subplots(rows=1, cols=3, subplot_titles=("tokens/s ÷ static", "TTFT p50 (s)", "TPOT p50 (ms)"))
    names = list(dict.fromkeys(n for k in keys for n in best_by_trace[k]))
    for i, name in enumerate(names):
        x = [TRACES[k][0] for k in keys if name in best_by_trace[k]]
        recs = [best_by_trace[k][name] for k in keys if name in best_by_trace[k]]
        bases = [best_by_trace[k]["static (padded)"] for k in keys if name in best_by_trace[k]]
        color = qualitative.Plotly[i % len(qualitative.Plotly)]
        for col, ys in enumerate(([r["tok_s"] / b["tok_s"] for r, b in zip(recs, bases)],
                                  [r["ttft_p50"] for r in recs], [1e3 * r["tpot_p50"] for r in recs]), start=1):
            fig.add_trace(go.Bar(name=name, x=x, y=ys, marker_color=color, legendgroup=name, showlegend=col == 1),
                          row=1, col=col)
    fig.add_hline(y=3.0, line_dash="dash", annotation_text="target 3x (paged, ShareGPT)", row=1, col=1)
    style(fig, "Serving the same trace under one KV budget", height=460)
    fig.update_layout(barmode="group")
    return [fig]


def units(quick: bool) -> int:
    cfg = QUICK if quick else FULL
    return cfg["repeat"] * sum(len([n for n in CONTENDERS[k] if not (quick and (k, n) in QUICK_SKIP)]) for k in TRACES)
