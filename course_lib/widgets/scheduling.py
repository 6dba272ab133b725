"""Panels for lessons 06 and 07.

scheduling_panel  pick a trace, a batching policy (or disaggregation), a queue policy,
                  its parameters and the limits; the real engine runs the trace and the
                  latency percentiles, the SLO verdict and the timeline move
incident_panel    change the knobs of one incident's server (not its memory); the same trace runs
                  again and the dashboard and the targets say whether the incident is fixed

Both run the real engine, scheduler and KV store on a deterministic cost-model clock
(course_lib.engine.slo.gpu_like_clock) or a step clock, so the numbers do not jitter between
two runs of the same settings. Every request of these traces has a fixed output length (no
<EOS>), so nothing the panels show reads the value of a generated token: a step's cost, every
latency, the memory, preemptions and the verdicts follow from token counts alone. The panels
therefore schedule with `ScheduleOnly(model)`, TinyLM without its forward pass, which answers in
a tenth of the time (0.15-0.3 s instead of 1.2-2.5 s a run on a CPU core) with the same numbers;
`tests/test_scheduling_widgets.py` checks them against runs of TinyLM itself, and
`compute_tokens=True` runs the model at every change anyway. A setting seen before answers
from a cache. Bad values get one red line, never a traceback.
"""

from __future__ import annotations

from dataclasses import replace

import ipywidgets as W
import torch

from course_lib.engine.disagg import DisaggregatedServer
from course_lib.engine.priority import PriorityEngine, clone_tagged
from course_lib.engine.queues import QUEUES as QUEUE_REGISTRY, FairShare, make_queue as make_queue_policy
from course_lib.engine.scheduler import PrefillFirst
from course_lib.engine.slo import SLO, gpu_like_clock, slo_report
from course_lib.labs.scheduling import contention_trace, deadline_trace, two_class_trace
from course_lib.plots.scheduling import latency_cdf, pipeline_gantt, request_gantt, table_figure, telemetry
from course_lib.validate import check_bool, check_choice, check_float, check_has, check_int, check_type
from course_lib.widgets import Panel
from course_lib.widgets import check_int as check_field

TRACES = {
    "chat + long documents (cost-model clock)": "documents",
    "documents while 16 streams decode (cost-model clock)": "contention",
    "two classes: a high-priority stream (step clock)": "starvation",
    "interactive deadlines + batch (step clock)": "deadlines",
}
BATCHING = {
    "prefill-first": "prefill-first",
    "prefill-only steps": "prefill-only",
    "decode-first": "decode-first",
    "chunked prefill": "chunked",
    "disaggregated (prefill engine + decode engine)": "disaggregated",
}
QUEUES = {kind.label: name for name, kind in QUEUE_REGISTRY.items()}    # what engine/queues.py registers


class ScheduleOnly:
    """TinyLM for a run whose tokens' values matter to nothing shown: the same config, device,
    dtype and parameters (the KV store is sized and allocated as for TinyLM), but `forward_ctx`
    returns zero logits without computing (greedy decoding then emits token 0). Exact where
    every request stops at its fixed output length (eos_id None) and the clock does not measure
    wall time; `uses_no_token_values` says whether a run is such a run."""

    def __init__(self, model):
        check_has("model", model, ("forward_ctx", "config"), "a TinyLM")
        self._model = model
        self.config = model.config

    def __getattr__(self, name):                 # device, parameters(), ...: TinyLM's own
        return getattr(self._model, name)

    def forward_ctx(self, input_ids, positions, ctx, keep=None):
        rows = input_ids.shape[1] if keep is None else len(keep)
        return torch.zeros(input_ids.shape[0], rows, self.config.vocab_size, device=input_ids.device)


def uses_no_token_values(requests, clock) -> bool:
    """True when a run of `requests` on `clock` shows the same numbers whatever tokens the model
    emits: every request has a fixed output length and the clock counts steps or models cost."""
    name = clock if isinstance(clock, str) else getattr(clock, "name", "measured")
    return name != "measured" and all(getattr(r, "eos_id", 0) is None for r in requests)


def make_queue(name: str, ageing_rate: float = 0.1):
    """The queue policy of one of the panel's names (QUEUES' values)."""
    check_choice("queue", name, QUEUES.values())
    return make_queue_policy(name, rate=ageing_rate) if name == "ageing" else make_queue_policy(name)


def trace_for(kind: str, seed: int = 0):
    """(requests, clock, SLO) of one of the panel's traces."""
    check_choice("trace", kind, TRACES.values())
    check_int("seed", seed, 0)
    if kind == "documents":
        from course_lib.incidents import documents_trace
        return documents_trace(seed, n_chat=16, n_docs=4), gpu_like_clock(), SLO(ttft=0.3, tbt=0.04)
    if kind == "contention":
        return contention_trace(seed), gpu_like_clock(), SLO(ttft=0.3, tbt=0.04)
    if kind == "starvation":
        return two_class_trace(n_high=30, n_low=3, high_every=2.5, low_at=4, high_output=10, low_output=10,
                               seed=seed), "steps", SLO(ttft=20, tbt=3)
    if kind == "deadlines":
        return deadline_trace(seed), "steps", SLO(ttft=12, tbt=3)
    raise ValueError(f"trace: must be one of {', '.join(TRACES.values())}; got {kind!r}")


def run_scheduling(model, kind: str, batching: str, queue: str, ageing_rate: float, preempt: bool,
                   max_running: int, budget: int, seed: int = 0, compute_tokens: bool = True):
    """One run of the panel's settings. Returns (result, slo). `compute_tokens=False`: schedule
    with ScheduleOnly(model) (the same numbers on these traces, without TinyLM's forward pass)."""
    check_choice("batching", batching, BATCHING.values())
    check_choice("queue", queue, QUEUES.values())
    check_bool("preempt", preempt)
    check_bool("compute_tokens", compute_tokens)
    reqs, clock, slo = trace_for(kind, seed)
    if not compute_tokens and uses_no_token_values(reqs, clock):
        model = ScheduleOnly(model)
    if batching == "disaggregated":
        if queue != "fcfs" or preempt:
            raise ValueError("queue policy: the disaggregated server here serves first come, first served "
                             "without preemption; pick those, or a co-located policy")
        server = DisaggregatedServer(model, prefill_limits=(max_running, budget), decode_limits=(max_running, budget),
                                     clock=clock)
        return server.run(clone_tagged(reqs)), slo
    q = make_queue(queue, ageing_rate)
    if preempt and isinstance(q, FairShare):
        raise ValueError("preempt: fair share changes its order as requests run; preempting by it would thrash "
                         "(untick preemption)")
    policy = PrefillFirst(mix_decodes=False) if batching == "prefill-only" else batching
    eng = PriorityEngine(model, policy=policy, queue=q, preempt=preempt, max_running=max_running,
                         max_tokens_per_step=budget, clock=clock)
    return eng.run(clone_tagged(reqs)), slo


def percentile_table(res, slo):
    """p50 / p90 / p99 of TTFT and TBT against the SLO, as a table figure."""
    rep = slo_report(res, slo)
    unit = res.config.get("unit", "s")
    k, u = (1e3, "ms") if unit == "s" else (1.0, "steps")
    rows = [["time to first token"] + [f"{k * v:.1f}" for v in rep.ttft.values()] + [f"{k * slo.ttft:g}"],
            ["time between tokens (every gap)"] + [f"{k * v:.1f}" for v in rep.tbt.values()] + [f"{k * slo.tbt:g}"]]
    return table_figure(["", "p50", "p90", "p99", "target"], rows,
                        title=f"Latency ({u}): SLO met by {rep.met} of {rep.requests} requests")


def scheduling_panel(model, trace: str = "documents", batching: str = "prefill-first", queue: str = "fcfs",
                     ageing_rate: float = 0.1, preempt: bool = False, max_running: int = 8, budget: int = 512,
                     compute_tokens: bool = False) -> Panel:
    """The learner's panel for lesson 06. `compute_tokens`: run TinyLM's forward pass at every change
    (slower; the numbers are the same, see the module's docstring)."""
    check_has("model", model, ("forward_ctx", "config"), "a TinyLM")
    check_bool("compute_tokens", compute_tokens)
    check_choice("trace", trace, TRACES.values())
    check_choice("batching", batching, BATCHING.values())
    check_choice("queue", queue, QUEUES.values())
    check_float("ageing_rate", ageing_rate, 0, 10)
    check_bool("preempt", preempt)
    check_int("max_running", max_running, 1, 16)
    check_int("budget", budget, 1, 1024)
    st = {"description_width": "initial"}
    inv = lambda d, v: {b: a for a, b in d.items()}[v]
    controls = {
        "trace": W.Dropdown(options=list(TRACES), value=inv(TRACES, trace), description="trace", style=st),
        "batching": W.Dropdown(options=list(BATCHING), value=inv(BATCHING, batching), description="batching", style=st),
        "queue": W.Dropdown(options=list(QUEUES), value=inv(QUEUES, queue), description="queue order", style=st),
        "ageing_rate": W.FloatText(value=ageing_rate, description="ageing rate (priority / time unit)", style=st),
        "preempt": W.Checkbox(value=preempt, description="preempt for more important requests", style=st),
        "max_running": W.IntText(value=max_running, description="batch slots", style=st),
        "budget": W.IntText(value=budget, description="tokens per step", style=st),
    }

    def update(trace, batching, queue, ageing_rate, preempt, max_running, budget):
        slots = check_field(max_running, "batch slots", 1, 16)
        tokens = check_field(budget, "tokens per step", 1, 1024)
        try:
            rate = float(ageing_rate)
        except (TypeError, ValueError):
            raise ValueError(f"ageing rate: must be a number in [0, 10]; got {ageing_rate!r}") from None
        if not 0 <= rate <= 10:
            raise ValueError(f"ageing rate: must be a number in [0, 10]; got {ageing_rate!r}")
        res, slo = run_scheduling(model, TRACES[trace], BATCHING[batching], QUEUES[queue], rate, bool(preempt),
                                  slots, tokens, compute_tokens=compute_tokens)
        figs = [percentile_table(res, slo), latency_cdf({batching: res}, slo=slo, title="Latency distributions")]
        if BATCHING[batching] == "disaggregated":
            figs.append(pipeline_gantt(res, title="Each request through the pipeline"))
        else:
            color = "tenant" if QUEUES[queue] == "fair-share" else "priority"
            figs.append(request_gantt(res, title="Each request: waiting, then streaming (x = preempted)", color_by=color))
        pre = sum(r.num_preemptions for r in res.requests)
        status = f"{len(res.finished)}/{len(res.requests)} finished, {pre} preemptions ({res.config.get('clock', '')} clock)"
        return status, figs

    return Panel(controls, update, columns=2, cache=32)


# ---- lesson 07 -----------------------------------------------------------------------------------------------
def incident_panel(model, key: str = "b", config=None, compute_tokens: bool = False) -> Panel:
    """Change the server's knobs for incident `key` (the memory budget stays); the same trace runs again.
    `compute_tokens`: run TinyLM's forward pass at every change (slower; the same numbers)."""
    from course_lib.incidents import KV_STORES, PLACEMENTS, RESERVATIONS, ServerConfig, get_incident
    from course_lib.engine.scheduler import POLICIES

    check_has("model", model, ("forward_ctx", "config"), "a TinyLM")
    check_bool("compute_tokens", compute_tokens)
    inc = get_incident(key)
    runner = model if compute_tokens or not uses_no_token_values(inc.trace(), gpu_like_clock()) else ScheduleOnly(model)
    cfg = check_type("config", config, ServerConfig, none_ok=True) or inc.config
    st = {"description_width": "initial"}
    controls = {
        "kv_store": W.Dropdown(options=list(KV_STORES), value=cfg.kv_store, description="KV store", style=st),
        "reservation": W.Dropdown(options=list(RESERVATIONS), value=cfg.reservation, description="reservation", style=st),
        "placement": W.Dropdown(options=list(PLACEMENTS), value=cfg.placement, description="placement", style=st),
        "block_size": W.IntText(value=cfg.block_size, description="block size", style=st),
        "prefix_caching": W.Checkbox(value=cfg.prefix_caching, description="prefix caching", style=st),
        "policy": W.Dropdown(options=list(POLICIES), value=cfg.policy, description="policy", style=st),
        "max_running": W.IntText(value=cfg.max_running, description="batch slots", style=st),
        "max_tokens_per_step": W.IntText(value=cfg.max_tokens_per_step, description="tokens per step", style=st),
        "preemption": W.Dropdown(options=["recompute", "swap"], value=cfg.preemption, description="preemption", style=st),
    }

    def update(kv_store, reservation, placement, block_size, prefix_caching, policy, max_running,
               max_tokens_per_step, preemption):
        current = inc
        new = replace(current.config, kv_store=kv_store, reservation=reservation, placement=placement,
                      block_size=check_field(block_size, "block size", 1, 256), prefix_caching=bool(prefix_caching),
                      policy=policy, max_running=check_field(max_running, "batch slots", 1, 64),
                      max_tokens_per_step=check_field(max_tokens_per_step, "tokens per step", 1, 4096),
                      preemption=preemption)
        run = current.run(runner, new)
        m = run.metrics()
        verdicts = current.evaluate(run)
        changed = current.config.changes(new)
        what = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items()) or "nothing yet"
        rows = [["✅ met" if ok else "❌ missed", t.label, f"{t.op} {t.bound:g}", f"{m[t.metric]:.4g}"] for t, ok in verdicts]
        targets = table_figure(["", "target", "bound", "this run"], rows, title=f"Incident {key}: changed {what}",
                               fill=["#e8f5e9" if ok else "#ffebee" for _, ok in verdicts])
        fixed = all(ok for _, ok in verdicts)
        status = "all targets met on this trace" if fixed else "not fixed yet"
        return status, [targets, telemetry(run, title=f"incident {key}: telemetry")]

    return Panel(controls, update, columns=3, cache=32)


__all__ = ["scheduling_panel", "incident_panel", "run_scheduling", "trace_for", "ScheduleOnly", "uses_no_token_values",
           "TRACES", "BATCHING", "QUEUES"]
