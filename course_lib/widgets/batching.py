"""Lesson 03's panel: pick requests, a policy and batch limits; watch a real engine run.

Every change runs course_lib.engine on the real model (a step clock, so
arrivals and latencies are counted in model steps), then draws the slot
timeline and a table of per-request latencies. Bad values get one red line.
"""

from __future__ import annotations

import ipywidgets as W

from course_lib.engine import Engine, PrefillFirst, Request
from course_lib.engine.metrics import mean, ttft_tpot
from course_lib.plots.timeline import timeline
from course_lib.validate import check_choice, check_float, check_has, check_ints, check_sequence, check_type
from course_lib.validate import check_int as vcheck_int
from course_lib.widgets import Panel, check_int, parse_int_list

POLICY_CHOICES = {
    "static (request-level)": "static",
    "prefill-first (Orca-style)": "prefill-first",
    "prefill-only steps (decodes pause)": "prefill-only",
    "decode-first": "decode-first",
    "chunked prefill (Sarathi-style)": "chunked",
}
MAX_REQUESTS = 12


def make_requests(prompt_lens, output_lens, arrivals, seed: int = 0) -> list[Request]:
    """Requests with the given lengths and arrival steps; prompts are seeded printable bytes.
    A list of one value is repeated to the length of the longest list."""
    prompt_lens = check_ints("prompt_lens", prompt_lens, 1, 4096, min_len=1)
    output_lens = check_ints("output_lens", output_lens, 1, 4096, min_len=1)
    arrivals = [check_float(f"arrivals[{i}]", a, 0) for i, a in enumerate(check_sequence("arrivals", arrivals, 1))]
    vcheck_int("seed", seed, 0)
    n = max(len(prompt_lens), len(output_lens), len(arrivals))
    lists = {"prompt lengths": prompt_lens, "output lengths": output_lens, "arrival steps": arrivals}
    for name, values in lists.items():
        if len(values) not in (1, n):
            raise ValueError(f"{name}: give 1 or {n} values (one per request); got {len(values)}")
    grow = {k: (v * n if len(v) == 1 else v) for k, v in lists.items()}
    reqs = []
    for i in range(n):
        p = grow["prompt lengths"][i]
        prompt = [32 + (seed * 7919 + i * 131 + j * 17) % 95 for j in range(p)]
        reqs.append(Request(prompt, grow["output lengths"][i], arrival=float(grow["arrival steps"][i]), rid=i,
                            eos_id=None))
    return reqs


def run_policy(model, reqs, policy: str, max_running: int, budget: int, step_mode: str = "packed",
               kv_capacity: int | None = None):
    """One engine run with a step clock; `policy` may be 'prefill-only' (prefill-first without mixing)."""
    pol = PrefillFirst(mix_decodes=False) if policy == "prefill-only" else policy
    eng = Engine(model, policy=pol, max_running=max_running, max_tokens_per_step=budget, step_mode=step_mode,
                 clock="steps", kv_capacity=kv_capacity)
    return eng.run(reqs)


def request_table(result, title: str | None = None):
    """Per-request latencies in steps, as a plotly table (drawn by the panel like any figure)."""
    import plotly.graph_objects as go

    from course_lib.plots import style

    head = ["request", "prompt", "output", "arrives", "first token", "finished", "TTFT", "TPOT", "preempted", "state"]
    cols = [[] for _ in head]
    for r in result.requests:
        ttft, tpot = ttft_tpot(r.arrival, r.token_times)
        state = r.state.value if r.state.value == "finished" else f"{r.state.value}: {r.finish_reason}"
        row = [r.rid, len(r.prompt), len(r.output), f"{r.arrival:g}",
               "" if r.first_token_step is None else r.first_token_step,
               "" if r.finish_step is None else r.finish_step,
               "" if ttft is None else f"{ttft:g}", "" if tpot is None else f"{tpot:.2f}", r.num_preemptions, state]
        for c, v in zip(cols, row):
            c.append(v)
    fig = go.Figure(go.Table(header=dict(values=[f"<b>{h}</b>" for h in head], align="right"),
                             cells=dict(values=cols, align="right"), columnwidth=[1] * 9 + [3]))
    fig = style(fig, title or "Per request (times in model steps)", height=90 + 24 * len(result.requests))
    fig.update_layout(margin=dict(l=10, r=10, t=40, b=10))
    return fig


def batching_panel(model, prompt_lens: str = "12, 12, 12, 4", output_lens: str = "24, 20, 22, 4",
                   arrivals: str = "0, 0, 0, 5", policy: str = "prefill-first", max_running: int = 4,
                   budget: int = 32, step_mode: str = "packed", kv_capacity: int = 0) -> Panel:
    """The learner's panel: requests (lengths, arrival steps), policy, limits -> timeline + latencies.
    Returns the Panel, not yet shown: call `.show()`."""
    check_has("model", model, ("forward_ctx", "config"), "a TinyLM")
    for name, text in (("prompt_lens", prompt_lens), ("output_lens", output_lens), ("arrivals", arrivals)):
        check_type(name, text, str, "a comma-separated string of integers, e.g. '12, 4'")
    check_choice("policy", policy, POLICY_CHOICES.values())
    check_choice("step_mode", step_mode, ("packed", "padded"))
    vcheck_int("max_running", max_running, 1, 16)
    vcheck_int("budget", budget, 1, 512)
    vcheck_int("kv_capacity", kv_capacity, 0, 4096)
    label = {v: k for k, v in POLICY_CHOICES.items()}
    style = {"description_width": "initial"}
    controls = {
        "prompt_lens": W.Text(value=prompt_lens, description="prompt lengths", style=style),
        "output_lens": W.Text(value=output_lens, description="output lengths", style=style),
        "arrivals": W.Text(value=arrivals, description="arrival steps", style=style),
        "policy": W.Dropdown(options=list(POLICY_CHOICES), value=label[policy], description="policy", style=style),
        "max_running": W.IntText(value=max_running, description="batch slots", style=style),
        "budget": W.IntText(value=budget, description="tokens per step", style=style),
        "step_mode": W.Dropdown(options=["packed", "padded"], value=step_mode, description="step", style=style),
        "kv_capacity": W.IntText(value=kv_capacity, description="KV slots (0 = no limit)", style=style),
    }

    def update(prompt_lens, output_lens, arrivals, policy, max_running, budget, step_mode, kv_capacity):
        p = parse_int_list(prompt_lens, "prompt lengths", 1, 64, MAX_REQUESTS)
        o = parse_int_list(output_lens, "output lengths", 1, 64, MAX_REQUESTS)
        a = parse_int_list(arrivals, "arrival steps", 0, 200, MAX_REQUESTS)
        slots = check_int(max_running, "batch slots", 1, 16)
        tokens = check_int(budget, "tokens per step", 1, 512)
        cap = check_int(kv_capacity, "KV slots", 0, 4096)
        reqs = make_requests(p, o, a)
        res = run_policy(model, reqs, POLICY_CHOICES[policy], slots, tokens, step_mode, cap or None)
        lat = res.latencies()
        model_ms = 1e3 * sum(s.model_s for s in res.steps)
        status = (f"{len(res.steps)} steps, {res.generated_tokens} tokens generated; mean TTFT "
                  f"{mean(lat['ttft']):.1f} steps, mean TPOT {mean(lat['tpot']):.2f} steps; "
                  f"measured: {model_ms:.0f} ms in the model, {res.wall_throughput:.0f} tokens/s")
        preempted, rejected = sum(r.num_preemptions for r in res.requests), len(res.rejected)
        if preempted or rejected:
            status += f"; {preempted} preemption(s), {rejected} rejected (see the table)"
        return status, [timeline(res, title=f"{policy}: who computes what, step by step"), request_table(res)]

    return Panel(controls, update, columns=3)
