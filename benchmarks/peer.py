"""The strongest peer: transformers' own continuous batching against the course engine, same weights, same traces.

    python -m benchmarks peer [--quick]

A user who does not take the course's engine would most likely take
transformers' continuous batching (`model.generate_batch`, the
`ContinuousBatchingManager` behind it: a paged KV cache, a FIFO scheduler,
iteration-level batches). Both serve:

    the trained TinyLM     course_lib/weights/tinylm-stories, loaded by
                           `LlamaForCausalLM.from_pretrained(dir)` for transformers and by
                           `course_lib.model.build_model()` for the engine (the same file)
    the same requests      a ShareGPT-like trace (benchmarks.engine's, lengths scaled for a
                           CPU) and course_lib.workloads.story_trace (story openings the model
                           continues until it writes its own <EOS>)
    the same rule to stop  EOS on for both: a request ends on <EOS> or at its own
                           max_new_tokens (the trace's output length; for stories, all the
                           room the context leaves, so the model decides), greedy decoding

and the same settings (`SETTINGS`): 16-token KV blocks (transformers' `page_size`), the same
number of KV token slots (transformers' `num_blocks` x page_size = the engine's paged capacity),
256 tokens per step (`max_batch_tokens`), at most 64 requests per step
(`max_requests_per_batch`), no newcomer while less than 15 % of the KV blocks are free
(transformers' `safety_margin`, its FIFO scheduler's default, and the engine's `kv_margin`),
no prefix sharing (`allow_block_sharing=False`), one torch thread,
fp32, SDPA attention on the CPU (transformers would switch to flash attention where it is
installed; it is not here). Each request is added to transformers' manager with its own
`max_new_tokens` and `eos_token_id` (`manager.add_request`), since `generate_batch` takes one
max_new_tokens for all.

Per round the engine serves the whole trace, then transformers, then the engine again
(A-B-A): the engine's figure for the round is the mean of its two runs, which flank
transformers' run in time, so a drift of this machine's speed during the round weighs
alike on both (with A-B alone, the machine speeding up or slowing down between the two
runs lands on the ratio whole). Every figure is the median [min–max] of the rounds, and
the ratio is taken round by round. What transformers' API exposes: the generated tokens, per-token timestamps
(`record_timestamps=True`), the request's creation time and lifespan. So tokens/s, TTFT and
TPOT are measured for both; the number of model steps, tokens per step, requests per step and
preemptions are not exposed by transformers and are shown for the engine only.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from benchmarks import engine as eng_bench  # noqa: E402
from benchmarks.common import ROUNDS, BenchResult, NullProgress, Spread, Table, Target, environment, fmt  # noqa: E402
from course_lib.device import get_device, seed_everything, synchronize  # noqa: E402
from course_lib.engine import Engine, requests_from_trace  # noqa: E402
from course_lib.engine.metrics import percentile, ttft_tpot  # noqa: E402
from course_lib.kv.paged import PagedKVStore  # noqa: E402
from course_lib.model import Linear, TinyLMConfig, build_model  # noqa: E402
from course_lib.tokenizer import EOS  # noqa: E402
from course_lib.workloads import story_trace  # noqa: E402

NAME = "peer"
TITLE = "Peer: transformers continuous batching (generate_batch) vs the course engine, same weights and traces"
WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "course_lib", "weights",
                       "tinylm-stories")
SETTINGS = dict(block_size=eng_bench.BLOCK_SIZE, tokens_per_step=eng_bench.TOKENS_PER_STEP,
                max_running=eng_bench.MAX_RUNNING, full_contexts=eng_bench.STATIC_BATCH,
                kv_margin=0.15)      # transformers' FIFO scheduler's default safety_margin, given to both
FULL = dict(requests={"sharegpt": 96, "stories": 48}, rounds=ROUNDS)
QUICK = dict(requests={"sharegpt": 24, "stories": 8}, rounds=ROUNDS)
ENGINE = "course engine (continuous, paged)"
PEER = "transformers CB (generate_batch)"
GOAL = 3.0
PHASES = ("schedule", "build", "model", "sample")      # an engine step's phases (engine/metrics.py's StepRecord)


def make_trace(key: str, n: int):
    """(trace, max_new_tokens per request id): ShareGPT-like stops at its output length (or EOS);
    stories get all the room the context leaves, so the model's own <EOS> ends them."""
    if key == "sharegpt":
        trace = eng_bench.make_trace("sharegpt", n)
        return trace, {r.id: int(r.output_len) for r in trace}
    if key == "stories":
        trace = story_trace(n=n, rate=float("inf"), seed=0, max_len=256)
        room = trace.meta["room"]
        return trace, {r.id: room for r in trace}
    raise ValueError(f"key: must be 'sharegpt' or 'stories'; got {key!r}")


def budget_slots(trace) -> int:
    return SETTINGS["full_contexts"] * trace.max_len // SETTINGS["block_size"] * SETTINGS["block_size"]


def load_peer(device=None):
    """transformers' LlamaForCausalLM from the course's weight directory (no download)."""
    import transformers
    model = transformers.LlamaForCausalLM.from_pretrained(WEIGHTS, attn_implementation="sdpa", dtype=torch.float32)
    return model.to(device or get_device()).eval()


def peer_configs(trace, max_new: dict[int, int]):
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig
    gen = GenerationConfig(do_sample=False, eos_token_id=EOS, pad_token_id=256, max_new_tokens=max(max_new.values()))
    cb = ContinuousBatchingConfig(page_size=SETTINGS["block_size"],
                                  num_blocks=budget_slots(trace) // SETTINGS["block_size"],
                                  max_batch_tokens=SETTINGS["tokens_per_step"],
                                  max_requests_per_batch=SETTINGS["max_running"], allow_block_sharing=False,
                                  safety_margin=SETTINGS["kv_margin"])
    return gen, cb


def latency(ttft: list[float], tpot: list[float]) -> dict:
    return {"ttft_p50": percentile(ttft, 50), "ttft_p90": percentile(ttft, 90),
            "tpot_p50": percentile(tpot, 50) if tpot else float("nan"),
            "tpot_p90": percentile(tpot, 90) if tpot else float("nan")}


@torch.no_grad()
def run_peer(hf, trace, max_new: dict[int, int], timeout: float = 600.0) -> dict:
    """Serve `trace` (everyone arrives at 0) through transformers' continuous batching manager.
    Time runs from just before the first request is added to the last token's timestamp."""
    gen, cb = peer_configs(trace, max_new)
    outputs, ttft, tpot = {}, [], []
    with hf.continuous_batching_context_manager(generation_config=gen, continuous_batching_config=cb, block=True,
                                                timeout=5, warmup=False) as manager:
        t0 = time.perf_counter()
        for r in trace:
            manager.add_request(list(r.prompt), request_id=f"r{r.id}", max_new_tokens=max_new[r.id],
                                record_timestamps=True, eos_token_id=EOS)
        done: dict[str, object] = {}
        deadline = t0 + timeout
        while len(done) < len(trace):
            out = manager.get_result(timeout=1)
            if out is not None and out.is_finished():
                done[out.request_id] = out
            elif out is None and (not manager.is_running() or time.perf_counter() > deadline):
                raise RuntimeError(f"transformers CB: {len(done)} of {len(trace)} requests finished")
    last = t0
    for r in trace:
        out = done[f"r{r.id}"]
        if out.error:
            raise RuntimeError(f"transformers CB: request {r.id} failed: {out.error}")
        outputs[r.id] = list(out.generated_tokens)
        stamps = [t - t0 for t in (out.timestamps or [])]
        if stamps:
            last = max(last, t0 + stamps[-1])
            a, p = ttft_tpot(0.0, stamps)
            ttft.append(a)
            if p is not None:
                tpot.append(p)
    seconds = last - t0
    tokens = sum(len(o) for o in outputs.values())
    return {"tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds if seconds else float("nan"),
            "steps": None, "running": None, "preemptions": None, "outputs": outputs, **latency(ttft, tpot)}


def run_course(model, trace, max_new: dict[int, int]) -> dict:
    """The course engine with the very settings transformers got (benchmarks.engine's paged contender).
    Its time is the wall clock of the whole `Engine.run` (its own bookkeeping included), as
    transformers' is, from the first request added to the last token out."""
    store = PagedKVStore.for_model(model, capacity=budget_slots(trace), block_size=SETTINGS["block_size"],
                                   max_model_len=trace.max_len, prefix_caching=False)
    eng = Engine(model, store=store, policy="prefill-first", step_mode="packed", max_running=SETTINGS["max_running"],
                 max_tokens_per_step=SETTINGS["tokens_per_step"], clock="measured", kv_margin=SETTINGS["kv_margin"])
    reqs = requests_from_trace(trace, eos_id=EOS)
    for q in reqs:
        q.max_new_tokens = max_new[q.rid]
    t0 = time.perf_counter()
    res = eng.run(reqs)
    seconds = time.perf_counter() - t0
    if len(res.finished) != len(trace):
        raise RuntimeError(f"course engine: {len(res.finished)} of {len(trace)} requests finished")
    lat = res.latencies()
    steps = res.steps
    sampled = Counter(step for r in res.requests for step in r.token_steps)          # step index -> tokens out
    phases = {name: sum(getattr(s, f"{name}_s") for s in steps) for name in PHASES}     # seconds in each phase
    return {"tokens": res.generated_tokens, "seconds": seconds, "tok_s": res.generated_tokens / seconds,
            "phases_s": phases,
            "steps": len(steps), "running": sum(len(s.items) for s in steps) / max(1, len(steps)),
            "step_shapes": [(s.num_tokens, sampled[s.index]) for s in steps],
            "preemptions": sum(r.num_preemptions for r in res.requests), "outputs": res.outputs(),
            **latency(lat["ttft"], lat["tpot"])}


@torch.no_grad()
def gemm_floor(model, step_shapes: list[tuple[int, int]], repeat: int = 3) -> float:
    """Seconds that the matrix multiplies ALONE of the engine's steps take on this machine.

    step_shapes: (tokens N, rows sampled S) of every step. A step multiplies its N tokens by
    every layer's weights (q, k, v, o, gate, up, down) and its S sampled rows by lm_head; any
    engine serving the same steps does at least these multiplies (transformers does the same
    ones, with q, k, v and gate, up as separate matrices). Here they run back to back on
    random inputs of those shapes, with the model's own stacked matrices (the fewest calls),
    each distinct shape timed `repeat` times (the fastest kept) and counted once per step of that
    shape. So transformers' time over this floor bounds the ratio any engine could reach:
    the attention, the cache and the scheduling are left out, as if they cost nothing."""
    dev, dtype = model.device, model.dtype
    layers = [m for layer in model.model.layers for m in layer.modules() if isinstance(m, Linear)]

    def once(n: int, rows: int) -> float:
        xs = {m.in_features: torch.randn(max(n, 1), m.in_features, device=dev, dtype=dtype) for m in layers}
        h = torch.randn(max(rows, 1), model.lm_head.in_features, device=dev, dtype=dtype)
        best = math.inf
        for _ in range(repeat):
            synchronize(dev)
            t0 = time.perf_counter()
            for m in layers:
                m(xs[m.in_features])                                                    # (N, out)
            if rows:
                model.lm_head(h)                                                        # (S, V)
            synchronize(dev)
            best = min(best, time.perf_counter() - t0)
        return best
    counts = Counter(step_shapes)
    return sum(once(n, rows) * k for (n, rows), k in counts.items())


def agreement(a: dict[int, list[int]], b: dict[int, list[int]]) -> int:
    """How many requests got exactly the same tokens from both."""
    return sum(a.get(rid) == b.get(rid) for rid in a)


def flanking(before: dict, after: dict) -> dict:
    """One round's engine record from its two runs, before and after transformers' run: the
    mean of their times (tok/s = tokens / mean seconds) and of their latency percentiles.
    Both runs must have generated the same tokens (the engine is deterministic)."""
    if before["outputs"] != after["outputs"]:
        raise RuntimeError("course engine: two runs of the same trace generated different tokens")
    seconds = (before["seconds"] + after["seconds"]) / 2
    mean = {k: (before[k] + after[k]) / 2 for k in ("ttft_p50", "ttft_p90", "tpot_p50", "tpot_p90")}
    phases = {k: (before["phases_s"][k] + after["phases_s"][k]) / 2 for k in before.get("phases_s", {})}
    return {**before, **mean, "seconds": seconds, "tok_s": before["tokens"] / seconds, "phases_s": phases,
            "runs_s": [before["seconds"], after["seconds"]]}


def serve_rounds(model, hf, trace, max_new, rounds: int, progress=None) -> dict[str, list[dict]]:
    """`rounds` interleaved rounds: in each, the engine, transformers and the engine again serve
    the whole trace (A-B-A: the engine's record is `flanking` of its two runs), then the engine's
    steps' matrix multiplies alone are timed (`gemm_floor`)."""
    progress = progress or NullProgress()
    recs: dict[str, list[dict]] = {ENGINE: [], PEER: []}
    for _ in range(rounds):
        before = run_course(model, trace, max_new)
        progress.update(1)
        recs[PEER].append(run_peer(hf, trace, max_new))
        progress.update(1)
        recs[ENGINE].append(flanking(before, run_course(model, trace, max_new)))
        progress.update(1)
        recs[ENGINE][-1]["gemm_s"] = gemm_floor(model, recs[ENGINE][-1]["step_shapes"])
    return recs


def warm_up(model, hf) -> None:
    trace, max_new = make_trace("sharegpt", 3)
    run_course(model, trace, max_new)
    run_peer(hf, trace, max_new)


def run(quick: bool = False, progress=None, device=None) -> BenchResult:
    device = device or get_device()
    with eng_bench.engine_threads(device):
        return _run(quick, progress, device)


def _run(quick: bool, progress, device) -> BenchResult:
    import transformers

    t_start = time.perf_counter()
    cfg = QUICK if quick else FULL
    seed_everything(0)
    model = build_model(TinyLMConfig(), seed=0, device=device)
    hf = load_peer(device)
    warm_up(model, hf)
    tables, ratios, targets, data = [], {}, [], {}
    labels = {"sharegpt": "ShareGPT-like", "stories": "stories (each stops on its own <EOS>)"}
    for key, n in cfg["requests"].items():
        trace, max_new = make_trace(key, n)
        recs = serve_rounds(model, hf, trace, max_new, cfg["rounds"], progress)
        ref = recs[ENGINE][0]["outputs"]
        same_peer = min(agreement(ref, r["outputs"]) for r in recs[PEER])
        same_eng = min(agreement(ref, r["outputs"]) for r in recs[ENGINE])
        eos_stops = sum(1 for o in ref.values() if o and o[-1] == EOS)
        ratio = Spread.ratio([r["tok_s"] for r in recs[ENGINE]], [r["tok_s"] for r in recs[PEER]])
        rows = []
        for name, rs in recs.items():
            tok = Spread.of([r["tok_s"] for r in rs])
            rows.append({
                "contender": name, "tok/s median [min–max]": tok.text(),
                "× transformers (per round)": ratio.text() if name == ENGINE else "1",
                "TTFT p50 s": Spread.of([r["ttft_p50"] for r in rs]).text(),
                "TTFT p90 s": Spread.of([r["ttft_p90"] for r in rs]).text(),
                "TPOT p50 ms": Spread.of([r["tpot_p50"] for r in rs]).scaled(1e3).text(),
                "TPOT p90 ms": Spread.of([r["tpot_p90"] for r in rs]).scaled(1e3).text(),
                "tokens": rs[0]["tokens"],
                "steps": rs[0]["steps"] if rs[0]["steps"] is not None else "not exposed",
                "requests per step": rs[0]["running"] if rs[0]["running"] is not None else "not exposed",
                "preemptions": rs[0]["preemptions"] if rs[0]["preemptions"] is not None else "not exposed",
                "same tokens as the engine": f"{same_peer if name == PEER else same_eng}/{len(ref)}"})
        tables.append(Table(
            f"{labels[key]}: {len(trace)} requests (mean prompt {trace.mean_input:.1f} tokens, context "
            f"{trace.max_len}), {budget_slots(trace):,} KV token slots for both, {cfg['rounds']} interleaved rounds; "
            f"{eos_stops}/{len(ref)} requests ended on <EOS>",
            list(rows[0]), rows))
        ratios[f"course engine / transformers CB tok/s, {labels[key]} (median of rounds)"] = ratio.median
        ratios[f"course engine / transformers CB tok/s, {labels[key]} (worst round)"] = ratio.min
        data[key] = {"trace": trace.summary(), "budget_slots": budget_slots(trace), "ratio": ratio.asdict(),
                     "same_tokens": same_peer, "requests": len(ref), "eos_stops": eos_stops,
                     "rounds": {name: [{k: v for k, v in r.items() if k not in ("outputs", "step_shapes")} for r in rs]
                                for name, rs in recs.items()}}
        floor = Spread.of([r["gemm_s"] for r in recs[ENGINE]])
        bound = Spread.ratio([r["seconds"] for r in recs[PEER]], [r["gemm_s"] for r in recs[ENGINE]])
        share = Spread.ratio([r["gemm_s"] for r in recs[ENGINE]], [r["seconds"] for r in recs[ENGINE]])
        eng_s = Spread.of([r["seconds"] for r in recs[ENGINE]])
        peer_s = Spread.of([r["seconds"] for r in recs[PEER]])
        tables.append(Table(
            f"{labels[key]}: what bounds the ratio (seconds per round, median [min–max])",
            ["course engine s", "transformers s", "the engine's matrix multiplies alone s",
             "share of the engine's time", "transformers s / multiplies alone (the most any engine could reach)"],
            [{"course engine s": eng_s.text(), "transformers s": peer_s.text(),
              "the engine's matrix multiplies alone s": floor.text(),
              "share of the engine's time": share.scaled(100).text(" %"),
              "transformers s / multiplies alone (the most any engine could reach)": bound.text()}]))
        ratios[f"transformers time / the engine's matrix multiplies alone, {labels[key]} (median of rounds)"] = \
            bound.median
        steps = recs[ENGINE][0]["steps"]
        per_step = {name: Spread.of([r["phases_s"][name] / steps for r in recs[ENGINE]]).scaled(1e3)
                    for name in PHASES}
        per_step["the matrix multiplies alone"] = Spread.of([r["gemm_s"] / steps for r in recs[ENGINE]]).scaled(1e3)
        tables.append(Table(
            f"{labels[key]}: where the engine's step goes (ms per step over its {steps} steps, median [min–max] of "
            f"rounds; the multiplies are part of 'model')",
            list(per_step), [{name: sp.text() for name, sp in per_step.items()}],
            note="schedule: the policy's plan and the KV reservation; build: the step's input ids, positions and "
                 "block tables; model: the forward pass (every layer's matrix multiplies, attention and small "
                 "operations); sample: argmax, appending tokens, finishing requests (engine/metrics.py's StepRecord)."))
        data[key]["gemm_floor"] = {"seconds": floor.asdict(), "bound": bound.asdict(), "share": share.asdict()}
        if key == "sharegpt":
            targets.append(Target.from_spread(
                "course engine (continuous, paged) / transformers continuous batching, tokens/s, ShareGPT-like",
                ratio, GOAL, source="issue 18",
                limit=(f"both run the same iteration-level batches over a paged cache of the same size, so the gap is "
                       f"the cost of a step, not the schedule: transformers took {fmt(peer_s.median)} s a round, "
                       f"the engine {fmt(eng_s.median)} s, of which {fmt(share.median * 100)} % is the matrix "
                       f"multiplies that any engine must do for these steps ({fmt(floor.median)} s, timed alone). "
                       f"Even an engine whose every other cost (attention, cache, scheduling, Python) were zero "
                       f"would reach transformers' time / {fmt(floor.median)} s = {bound.text()}x here. What is "
                       f"left to cut is the engine's per-step cost outside those multiplies (the table 'where the "
                       f"engine's step goes': most of it is the forward pass's other operations and the Python "
                       f"that calls them, a few microseconds each); on a GPU both would be bound by the same "
                       f"weight reads.")))
    notes = [f"transformers {transformers.__version__}; settings for both: {SETTINGS['block_size']}-token KV blocks "
             f"(transformers page_size), {SETTINGS['full_contexts']} full contexts of KV token slots (num_blocks x "
             f"page_size = the engine's paged capacity), {SETTINGS['tokens_per_step']} tokens per step "
             f"(max_batch_tokens), at most {SETTINGS['max_running']} requests per step (max_requests_per_batch), no "
             f"newcomer while less than {SETTINGS['kv_margin']:.0%} of the KV blocks are free (safety_margin / "
             f"kv_margin), no prefix sharing, greedy, EOS = {EOS} on, each request's own max_new_tokens, "
             f"{torch.get_num_threads()} torch thread(s), SDPA attention, fp32.",
             "TTFT and TPOT for transformers come from its per-token timestamps (record_timestamps=True); the clock "
             "starts just before the first request is added. Not exposed by its API, so not shown: model steps, "
             "requests per step, preemptions.",
             "'× transformers' is the ratio taken round by round, then median [min–max]; the target counts the worse "
             "end. A round runs the engine, transformers and the engine again (A-B-A); the engine's time for the "
             "round is the mean of its two runs, so drift of the machine's speed during the round cancels to first "
             "order. Both engine runs of every round generated the same tokens."]
    sizes = {"requests": dict(cfg["requests"]), "rounds": cfg["rounds"], **SETTINGS,
             "transformers": transformers.__version__, "torch threads": torch.get_num_threads()}
    res = BenchResult(NAME, TITLE, environment(device), sizes, tables, targets, ratios, notes, data=data)
    res.seconds = time.perf_counter() - t_start
    res.figures = figures(data)
    return res


def figures(data) -> list:
    import plotly.graph_objects as go

    from course_lib.plots import style

    fig = go.Figure()
    for name in (ENGINE, PEER):
        xs, ys, lo, hi = [], [], [], []
        for key, d in data.items():
            tok = Spread.of([r["tok_s"] for r in d["rounds"][name]])
            xs.append(key)
            ys.append(tok.median)
            lo.append(tok.median - tok.min)
            hi.append(tok.max - tok.median)
        fig.add_trace(go.Bar(name=name, x=xs, y=ys, error_y=dict(type="data", array=hi, arrayminus=lo)))
    style(fig, "Tokens/s, median with min–max over rounds", height=420)
    fig.update_layout(barmode="group", yaxis_title="generated tokens / s")
    return [fig]


def units(quick: bool) -> int:
    cfg = QUICK if quick else FULL
    return 3 * cfg["rounds"] * len(cfg["requests"])
