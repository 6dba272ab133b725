"""Priority-based scheduling: who waits, who runs, and who gets pushed out.

Lesson 03's engine serves the waiting queue first come, first served. A real
service has classes of traffic: an interactive chat user wants the first token
within a second, a nightly batch job does not care; a paying tenant must not be
crowded out by a free one. This module lets the waiting queue be ordered by a
**queue policy** and lets an important newcomer **preempt** a less important
running request, without touching the engine.

What a queue policy is, and the built-in ones (fcfs, highest_priority_first,
earliest_deadline_first, shortest_job_first, Ageing, FairShare): engine/queues.py.
Every engine takes one as `queue=`; this module adds what priorities need on top:

    PriorityRequest   a request with a tenant, a first-token deadline and an expected length
    Preemptive        a policy wrapper: a more important newcomer takes a running one's place
    PriorityEngine    the engine with `queue=` and `preempt=`
    traces            two_class_trace (starvation), mixed_trace, deadline_trace
    reports           class_report, starvation, wait_time

**Preemption** (`preempt=True`): before each step, if the most important
waiting request cannot get a batch slot (or KV memory), the least important
running request whose key is larger is preempted (recompute or swap, as the
engine's `preemption` says) and goes back to the waiting queue. Use it with
keys whose order does not flip over time (priority, ageing, EDF, SJF); a key
that changes as requests run (FairShare) would preempt back and forth, so
FairShare says `preemptive = False` and the scheduler refuses the combination.

    from course_lib.engine.priority import PriorityEngine
    from course_lib.engine.queues import Ageing
    res = PriorityEngine(model, policy="chunked", queue=Ageing(rate=0.5), preempt=True,
                         clock="steps").run(requests)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from course_lib.engine.engine import Engine
from course_lib.engine.metrics import EngineResult, percentile
from course_lib.engine.queues import QueuePolicy, as_key, fcfs, queue_name
from course_lib.engine.request import Request, State
from course_lib.engine.scheduler import Plan, Policy, Scheduler, make_policy
from course_lib.validate import check_bool, check_choice, check_float, check_has, check_int, check_sequence, check_type

MAX_TRACE = 100_000      # the most requests of one class a hand-made trace holds


# ---- requests with the fields scheduling policies read ------------------------------------------
@dataclass(eq=False)
class PriorityRequest(Request):
    """A Request plus what a scheduling policy may want to know about it.

    tenant:          who sent it (for per-tenant fair share)
    deadline:        clock time by which its FIRST token is due (None: no deadline)
    expected_output: the server's GUESS of its output length (for shortest-job-first);
                     None means max_new_tokens. A real server does not know the true length.
    """

    tenant: str = "default"
    deadline: float | None = None
    expected_output: int | None = None

    def validate(self, vocab_size: int | None = None) -> None:
        super().validate(vocab_size)
        check_type("tenant", self.tenant, str, "a tenant name (str)")
        check_float("deadline", self.deadline, finite=False, none_ok=True, note="a clock time")
        check_int("expected_output", self.expected_output, 1, none_ok=True)


def tag(req: Request, **fields) -> PriorityRequest:
    """A fresh PriorityRequest with `req`'s inputs (prompt, lengths, arrival, ...) and the
    given fields (priority, tenant, deadline, expected_output) changed; a plain Request's
    scheduling fields take their defaults."""
    allowed = PriorityRequest.input_names()
    unknown = set(fields) - set(allowed)
    if unknown:
        raise ValueError(f"fields: unknown request field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    inputs = {name: value for name, value in req.inputs().items() if name in allowed}
    return PriorityRequest(**{**inputs, **fields})


def clone_tagged(requests: Iterable[Request]) -> list[PriorityRequest]:
    """Fresh copies (inputs only, scheduling fields kept) so one trace runs under many engines."""
    return [tag(r) for r in requests]


# ---- the preemption rule ------------------------------------------------------------------------
class Preemptive(Policy):
    """Wraps a continuous policy: before it plans, make room for more important waiting requests.

    For the waiting requests in key order: one that finds no free batch slot
    (or, the first one, no KV memory) takes the place of the least important
    running request, if that one's key is larger. Then the wrapped policy plans
    as usual (and admits the newcomer into the freed slot).
    """

    def __init__(self, base: str | Policy = "chunked", memory: bool = True):
        self.base = make_policy(base)
        if self.base.holds_slots:
            raise ValueError(f"policy: preemption needs a continuous policy; {self.base.name!r} holds slots "
                             f"until its whole batch ends")
        self.memory = bool(memory)
        self.name = f"{self.base.name}+preempt"
        self.preemptions: list[tuple[float, int, int]] = []     # (time, victim rid, for rid), every one it made

    def _outranks(self, s: Scheduler, waiting: Request, running: Request) -> bool:
        return s.key(waiting) < s.key(running)

    def plan(self, s: Scheduler) -> Plan:
        waiting = s.waiting                               # most important first (empty if admission closed)
        victims = sorted(s.running, key=s.key, reverse=True)   # least important first
        free = s.free_slots
        for i, w in enumerate(waiting):
            if free > 0:
                free -= 1
                if i == 0 and self.memory:
                    self._make_memory(s, w, victims)
                continue
            if not victims or not self._outranks(s, w, victims[0]):
                break
            self._preempt(s, victims.pop(0), w)
            if i == 0 and self.memory:
                self._make_memory(s, w, victims)
        return self.base.plan(s)

    def _make_memory(self, s: Scheduler, w: Request, victims: list[Request]) -> None:
        """Preempt outranked running requests while the head of the queue cannot get its KV."""
        while victims and self._outranks(s, w, victims[0]) and not self._fits(s, w):
            self._preempt(s, victims.pop(0), w)

    @staticmethod
    def _fits(s: Scheduler, w: Request) -> bool:
        try:
            return bool(s.store.can_add(w.all_tokens, w.max_len))
        except ValueError:
            return True            # the store cannot judge this request; let admission decide

    def _preempt(self, s: Scheduler, victim: Request, for_req: Request) -> None:
        s.preempt(victim)
        self.preemptions.append((s.now, victim.rid, for_req.rid))

    def __repr__(self) -> str:
        return f"Preemptive({self.base!r})"


class PriorityEngine(Engine):
    """The lesson-03 engine with a queue policy and, optionally, priority preemption.

    queue:   a name ('fcfs', 'priority', 'edf', 'sjf', 'ageing', 'fair-share'), a
             QueuePolicy, or a key function (req) or (req, now); smaller runs first
    preempt: let a more important waiting request take the slot (and KV) of a
             less important running one
    Every other argument is the Engine's (policy, max_running, clock, ...).
    """

    def __init__(self, model, store=None, policy: str | Policy = "chunked", queue=fcfs, preempt: bool = False,
                 **engine_kwargs):
        preempt = check_bool("preempt", preempt)
        if preempt and isinstance(queue, QueuePolicy) and not queue.preemptive:
            raise ValueError(f"preempt: {queue!r} changes its order while requests run, so preempting by it would "
                             f"thrash; use preempt=False")
        as_key(queue)                                     # fail early on a bad queue policy
        base = make_policy(policy)
        super().__init__(model, store, policy=Preemptive(base) if preempt else base, queue=queue, **engine_kwargs)
        self.preemptive = preempt

    @property
    def config(self) -> dict:
        cfg = dict(super().config)
        cfg.update(queue=queue_name(self.scheduler.queue), preempt=self.preemptive)
        return cfg

    def result(self) -> EngineResult:
        res = super().result()
        res.config["priority_preemptions"] = list(getattr(self.scheduler.policy, "preemptions", []))
        return res


def serve_priority(model, requests: Iterable[Request], **engine_kwargs) -> EngineResult:
    """Run fresh copies of `requests` through a new PriorityEngine."""
    return PriorityEngine(model, **engine_kwargs).run(clone_tagged(requests))


# ---- traces and starvation -------------------------------------------------------------------------
def _prompt(rid: int, n: int, seed: int) -> list[int]:
    return [32 + (seed * 7919 + rid * 131 + j * 17) % 95 for j in range(n)]


def two_class_trace(n_high: int = 16, n_low: int = 4, high_every: float = 2.0, low_at: float = 0.0,
                    high_prompt: int = 6, high_output: int = 8, low_prompt: int = 6, low_output: int = 8,
                    high_priority: int = 1, first_high: float = 0.0, seed: int = 0) -> list[PriorityRequest]:
    """The starvation trace: `n_low` low-priority requests arrive at `low_at`, then a
    steady stream of `n_high` high-priority ones, one every `high_every` clock units.
    Times are in the clock's unit (steps with a step clock)."""
    for name, value, lo in (("n_high", n_high, 0), ("n_low", n_low, 0), ("high_prompt", high_prompt, 1),
                            ("high_output", high_output, 1), ("low_prompt", low_prompt, 1), ("low_output", low_output, 1)):
        check_int(name, value, lo, MAX_TRACE)
    check_int("high_priority", high_priority)
    check_int("seed", seed, 0)
    for name, value in (("high_every", high_every), ("low_at", low_at), ("first_high", first_high)):
        check_float(name, value, 0, note="clock units")
    reqs = []
    for i in range(n_low):
        reqs.append(PriorityRequest(_prompt(i, low_prompt, seed), low_output, arrival=float(low_at), rid=i,
                                    priority=0, eos_id=None, tenant="batch"))
    for j in range(n_high):
        rid = n_low + j
        reqs.append(PriorityRequest(_prompt(rid, high_prompt, seed), high_output, arrival=first_high + j * high_every,
                                    rid=rid, priority=high_priority, eos_id=None, tenant="interactive"))
    return reqs


def mixed_trace(n: int = 24, rate: float = 0.5, interactive_share: float = 0.5, deadline: float = 12.0,
                seed: int = 0, scale: float = 1 / 16, tenants: Sequence[str] = ("interactive", "batch"),
                time_scale: float = 1.0) -> list[PriorityRequest]:
    """A ShareGPT-like trace (course_lib.workloads) split into two classes at random (seeded):

    interactive  priority 1, a first-token deadline `deadline` after arrival, tenant tenants[0]
    batch        priority 0, no deadline, tenant tenants[1]

    rate: arrivals per clock unit (per step with a step clock); time_scale multiplies arrivals.
    """
    import numpy as np

    from course_lib.engine.request import requests_from_trace
    from course_lib.workloads import sharegpt_like

    check_float("interactive_share", interactive_share, 0, 1)
    check_float("deadline", deadline, 0, lo_open=True)
    tenants = check_sequence("tenants", tenants, 2, 2, what="two names (interactive, batch)")
    for i, t in enumerate(tenants):
        check_type(f"tenants[{i}]", t, str, "a tenant name (str)")
    base = requests_from_trace(sharegpt_like(n=n, rate=rate, seed=seed, scale=scale), time_scale=time_scale)
    rng = np.random.default_rng(seed + 1)
    hot = rng.random(len(base)) < interactive_share
    out = []
    for r, h in zip(base, hot):
        out.append(tag(r, priority=1 if h else 0, tenant=tenants[0] if h else tenants[1],
                       deadline=r.arrival + deadline if h else None))
    return out


def deadline_trace(seed: int = 0, n_interactive: int = 24, every: int = 4, deadline: float = 12.0,
                   n_batch: int = 3, batch_at: float = 6.0, batch_output: int = 10,
                   interactive_output: int = 6) -> list[PriorityRequest]:
    """Interactive requests (priority 1, a first-token deadline `deadline` steps after
    arrival, about `interactive_output` tokens) arrive about every `every` steps (jittered),
    while `n_batch` batch requests (priority 0, no deadline, `batch_output` tokens) arrive
    around `batch_at`. Times in steps (a step clock). Seeded: the same seed, the same trace."""
    import numpy as np

    for name, value, lo in (("seed", seed, 0), ("n_interactive", n_interactive, 0), ("every", every, 1),
                            ("n_batch", n_batch, 0), ("batch_output", batch_output, 1),
                            ("interactive_output", interactive_output, 2)):
        check_int(name, value, lo, None if name == "seed" else MAX_TRACE)
    check_float("deadline", deadline, 0, lo_open=True)
    check_float("batch_at", batch_at, 0)
    rng = np.random.default_rng(seed)
    items = [(float(batch_at + 4 * i + int(rng.integers(0, 3))), 0) for i in range(n_batch)]
    t = 0.0
    for _ in range(n_interactive):
        items.append((t, 1))
        t += float(rng.integers(max(1, every - 1), every + 2))
    items.sort(key=lambda x: (x[0], -x[1]))
    reqs = []
    for rid, (t, cls) in enumerate(items):
        prompt = _prompt(rid, int(rng.integers(4, 9)), seed)
        if cls == 0:
            reqs.append(PriorityRequest(prompt, batch_output, arrival=t, rid=rid, priority=0, eos_id=None,
                                        tenant="batch"))
        else:
            out = int(rng.integers(interactive_output - 1, interactive_output + 2))
            reqs.append(PriorityRequest(prompt, out, arrival=t, rid=rid, priority=1, eos_id=None,
                                        tenant="interactive", deadline=t + deadline))
    return reqs


def wait_time(req: Request) -> float | None:
    """Queueing delay: arrival to first admission (None if never admitted)."""
    return None if req.admitted_time is None else req.admitted_time - req.arrival


def class_report(result, by: str = "priority") -> list[dict]:
    """Per class of requests (grouped by `by`: 'priority' or 'tenant'): how many,
    how many finished, mean/p90/max of queueing delay and TTFT, preemptions, deadline misses."""
    check_has("result", result, ("requests", "steps"), "an EngineResult")
    check_choice("by", by, ("priority", "tenant"))
    groups: dict[Any, list[Request]] = {}
    for r in result.requests:
        groups.setdefault(getattr(r, by, None), []).append(r)
    rows = []
    for cls in sorted(groups, key=lambda c: (-c) if by == "priority" else str(c)):
        reqs = groups[cls]
        waits = [w for w in map(wait_time, reqs) if w is not None]
        ttfts = [r.first_token_time - r.arrival for r in reqs if r.first_token_time is not None]
        deadlines = [r for r in reqs if getattr(r, "deadline", None) is not None]
        missed = sum(1 for r in deadlines if r.first_token_time is None or r.first_token_time > r.deadline)
        rows.append({by: cls, "requests": len(reqs), "finished": sum(r.state is State.FINISHED for r in reqs),
                     "wait_mean": sum(waits) / len(waits) if waits else float("nan"),
                     "wait_max": max(waits, default=float("nan")),
                     "ttft_mean": sum(ttfts) / len(ttfts) if ttfts else float("nan"),
                     "ttft_p90": percentile(ttfts, 90), "ttft_max": max(ttfts, default=float("nan")),
                     "preempted": sum(r.num_preemptions for r in reqs),
                     "deadline_missed": f"{missed}/{len(deadlines)}" if deadlines else "-"})
    return rows


def starvation(result, priority: int | None = None) -> float:
    """The longest queueing delay (arrival to first admission) among requests of `priority`
    (None: all); never-admitted requests count up to the end of the run."""
    check_has("result", result, ("requests", "steps"), "an EngineResult")
    check_int("priority", priority, none_ok=True)
    end = result.steps[-1].end if result.steps else 0.0
    waits = []
    for r in result.requests:
        if priority is not None and r.priority != priority:
            continue
        waits.append(wait_time(r) if r.admitted_time is not None else end - r.arrival)
    return max(waits, default=0.0)


__all__ = [
    "PriorityRequest", "tag", "clone_tagged", "Preemptive", "PriorityEngine", "serve_priority", "two_class_trace",
    "mixed_trace", "deadline_trace", "wait_time", "class_report", "starvation",
]
