"""Queue policies: who goes first.

Every scheduler orders its requests by ONE key: the waiting queue (who is
admitted next), the packing order of running requests, and the victims of
preemption (the largest key is preempted first).

A queue policy is a key: smaller keys run first. Any of these plugs in:

    def my_policy(req):              # a plain function of the request
        return -req.priority
    def my_policy(req, now):         # ... or of the request and the clock
        return req.deadline - now
    class MyPolicy(QueuePolicy):     # ... or a small class that may keep state
        def key(self, req, now): ...

The scheduler appends (arrival, rid) to every key, so ties are broken first
come, first served and the order is always total and deterministic.

Built in:

    fcfs                      arrival order (lesson 03's default)
    highest_priority_first    larger `priority` first (strict priority classes)
    earliest_deadline_first   the smallest deadline (EDF); no deadline = last
    shortest_job_first        the fewest expected tokens of work (SJF)
    Ageing(rate)              priority + rate * time waited since arrival
    FairShare(weights)        the tenant that has received the least service, per weight

**Starvation.** Strict priority (or SJF) can make a request wait forever: as
long as more important (or shorter) requests keep arriving, a low-priority (or
long) one is never first. **Ageing** fixes it: a request's effective priority
grows with the time it has waited, so any request eventually outranks the
newcomers. Ageing by time since *arrival* has a useful property: every
request ages at the same rate, so the ORDER of two requests never changes over
time (only their absolute values do). It is the same as giving each request a
virtual arrival time `arrival - priority / rate`, and it cannot make two
requests preempt each other back and forth.

Name one by its registry name (`queue="edf"`, the widgets list QUEUES), or pass
the function or the QueuePolicy itself:

    Engine(model, queue="priority")        PriorityEngine(model, queue=Ageing(0.5), preempt=True)
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from course_lib.engine.request import Request
from course_lib.validate import check_callable, check_choice, check_float, check_mapping

if TYPE_CHECKING:                      # the scheduler imports this module
    from course_lib.engine.scheduler import Scheduler


class QueuePolicy:
    """Base class for a queue policy with state. Override `key(req, now)`: smaller runs first.

    `bind(scheduler)` is called once by the scheduler that uses the policy, so
    `self.scheduler` can read the queues (e.g. `self.scheduler.requests()`).
    `preemptive`: may the scheduler preempt running requests by this key?
    (False for keys whose order can flip while requests run.)
    """

    name = "queue policy"
    preemptive = True
    scheduler: "Scheduler | None" = None

    def bind(self, scheduler: "Scheduler") -> None:
        self.scheduler = scheduler

    def key(self, req: Request, now: float) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, req: Request, now: float = 0.0) -> Any:
        return self.key(req, now)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def fcfs(req: Request) -> float:
    """First come, first served."""
    return req.arrival


def highest_priority_first(req: Request) -> float:
    """Strict priority classes: the largest `priority` first (ties: first come, first served)."""
    return -req.priority


def earliest_deadline_first(req: Request) -> float:
    """EDF: the request whose first-token deadline comes soonest; no deadline goes last."""
    deadline = getattr(req, "deadline", None)
    return math.inf if deadline is None else deadline


def expected_work(req: Request) -> int:
    """Tokens of work the server expects a request still needs: the prompt tokens it has
    not computed plus the output tokens it is expected to produce and has not produced."""
    guess = getattr(req, "expected_output", None) or req.max_new_tokens
    return max(0, len(req.prompt) - req.num_computed) + max(0, guess - len(req.output))


def shortest_job_first(req: Request) -> int:
    """SJF: the least expected work first (a guess of the output length, not the truth)."""
    return expected_work(req)


class Ageing(QueuePolicy):
    """Priority that grows with waiting: effective = priority + rate * (now - arrival).

    rate: priority points gained per clock unit (per step with a step clock).
    A low-priority request that arrived `dp / rate` time units before a
    high-priority one (dp = the priority difference) goes first: nobody waits
    forever. rate=0 is strict priority.
    """

    name = "ageing"

    def __init__(self, rate: float = 0.1):
        self.rate = check_float("rate", rate, 0, note="priority per clock unit")

    def effective_priority(self, req: Request, now: float) -> float:
        return req.priority + self.rate * (now - req.arrival)

    def key(self, req: Request, now: float) -> float:
        return -self.effective_priority(req, now)

    def __repr__(self) -> str:
        return f"Ageing(rate={self.rate:g})"


class FairShare(QueuePolicy):
    """Per-tenant fair share: the tenant that has received the least service (output
    tokens generated so far, divided by its weight) goes first.

    weights: {tenant: weight}; a tenant with weight 2 is entitled to twice the tokens
    (missing tenants weigh 1). Its order changes as requests run, so it never preempts.
    """

    name = "fair share"
    preemptive = False

    def __init__(self, weights: dict[str, float] | None = None):
        weights = dict(check_mapping("weights", weights, "a dict {tenant: weight} or None") if weights else {})
        for tenant, w in weights.items():
            weights[tenant] = check_float(f"weights[{tenant!r}]", w, 0, lo_open=True)
        self.weights = weights

    def service(self) -> dict[str, int]:
        """Output tokens each tenant has received so far (from the scheduler's requests)."""
        out: dict[str, int] = {}
        if self.scheduler is not None:
            for r in self.scheduler.requests():
                t = getattr(r, "tenant", "default")
                out[t] = out.get(t, 0) + len(r.output)
        return out

    def key(self, req: Request, now: float) -> float:
        tenant = getattr(req, "tenant", "default")
        return self.service().get(tenant, 0) / self.weights.get(tenant, 1.0)

    def __repr__(self) -> str:
        return f"FairShare(weights={self.weights})"


@dataclass(frozen=True)
class QueueKind:
    """One entry of the registry: what a widget shows, and how to make the policy."""

    label: str                       # e.g. "earliest deadline first"
    make: Callable[..., Any]         # options -> a key function or a QueuePolicy


# The one registry of queue policies by name: `queue="edf"` anywhere, and the widgets' lists.
QUEUES: dict[str, QueueKind] = {
    "fcfs": QueueKind("first come, first served", lambda: fcfs),
    "priority": QueueKind("highest priority first", lambda: highest_priority_first),
    "edf": QueueKind("earliest deadline first", lambda: earliest_deadline_first),
    "sjf": QueueKind("shortest expected job first", lambda: shortest_job_first),
    "ageing": QueueKind("priority with ageing", lambda rate=0.1: Ageing(rate)),
    "fair-share": QueueKind("per-tenant fair share", lambda weights=None: FairShare(weights)),
}


def make_queue(name: str, **options) -> Any:
    """The queue policy registered as `name`, e.g. make_queue("ageing", rate=0.5)."""
    return QUEUES[check_choice("queue", name, QUEUES, what="a QueuePolicy or a callable")].make(**options)


def queue_name(queue) -> str:
    if isinstance(queue, str):
        return queue
    return getattr(queue, "name", None) if isinstance(queue, QueuePolicy) else getattr(queue, "__name__", repr(queue))


def as_key(queue) -> Callable[[Request, float], Any]:
    """Normalise a queue policy to a function (req, now) -> key.

    Accepts a name from QUEUES, a QueuePolicy, or a callable of one argument
    (req) or two (req, now)."""
    if isinstance(queue, str):
        queue = make_queue(queue)
    if isinstance(queue, QueuePolicy):
        return queue.key
    check_callable("queue", queue, f"one of {', '.join(QUEUES)}, a callable key(req) or key(req, now), "
                                   f"or a QueuePolicy")
    try:
        sig = inspect.signature(queue).parameters.values()
        positional = [p for p in sig if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        required = [p for p in positional if p.default is p.empty]
        varargs = any(p.kind is p.VAR_POSITIONAL for p in sig)
    except (TypeError, ValueError):          # a builtin without a signature: assume key(req)
        positional, required, varargs = [None], [None], False
    if len(required) <= 2 and (len(positional) >= 2 or varargs):
        return queue
    if len(positional) == 1 and len(required) == 1:
        return lambda req, now: queue(req)
    raise ValueError(f"queue: a key function takes (req) or (req, now); {queue!r} needs {len(required)} argument(s)")


__all__ = ["QueuePolicy", "fcfs", "highest_priority_first", "earliest_deadline_first", "expected_work",
           "shortest_job_first", "Ageing", "FairShare", "QueueKind", "QUEUES", "make_queue", "queue_name", "as_key"]
