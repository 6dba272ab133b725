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

The lesson's traces and reports (two_class_trace, mixed_trace, deadline_trace,
class_report, starvation, wait_time) are in course_lib/labs/scheduling.py.

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
from typing import Iterable

from course_lib.engine.engine import Engine
from course_lib.engine.metrics import EngineResult
from course_lib.engine.queues import QueuePolicy, as_key, fcfs, queue_name
from course_lib.engine.request import Request, State
from course_lib.engine.scheduler import Plan, Policy, Scheduler, make_policy
from course_lib.validate import check_bool, check_float, check_int, check_type


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
            while free < w.width and victims and self._outranks(s, w, victims[0]):
                free += self._preempt(s, victims.pop(0), w)     # n samples or W beams need that many slots
            if free < w.width:
                break
            free -= w.width
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

    def _preempt(self, s: Scheduler, victim: Request, for_req: Request) -> int:
        """Preempt `victim` for `for_req`; returns the batch slots that freed (0 if the victim
        already went, as a beam does when another beam of its search is preempted)."""
        if victim.state is not State.RUNNING:
            return 0
        before = s.free_slots
        s.preempt(victim)
        self.preemptions.append((s.now, victim.rid, for_req.rid))
        return s.free_slots - before

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


__all__ = ["PriorityRequest", "tag", "clone_tagged", "Preemptive", "PriorityEngine", "serve_priority"]
