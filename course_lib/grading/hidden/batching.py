"""Exercise 03's hidden cases, and course_lib's ChunkedPrefill as a schedule_step (a reference the tests use)."""

from __future__ import annotations

import random
from types import SimpleNamespace

from course_lib.checks.core import Case


def reference_schedule_step(running, waiting, max_running, budget):
    """What course_lib's ChunkedPrefill policy plans for this state, as [(rid, n_tokens)]."""
    from course_lib.engine.request import Request
    from course_lib.engine.scheduler import ChunkedPrefill, Limits

    def running_request(rid, left):
        if left == 0:
            r = Request([0], 1000, rid=rid)
            r.output, r.num_computed = [1], 1
        else:
            r = Request([0] * (left + 1), 1000, rid=rid)
            r.num_computed = 1
        return r
    view = SimpleNamespace(running=[running_request(rid, left) for rid, left in running],
                           waiting=[Request([0] * n, 1000, rid=rid) for rid, n in waiting],
                           free_slots=max_running - len(running),
                           limits=Limits(max_running=max(1, max_running), max_tokens_per_step=budget))
    return [(r.rid, n) for r, n in ChunkedPrefill().plan(view).work]


def _state(rng: random.Random):
    n_run = rng.randint(0, 4)
    running = [(rid, rng.choice([0, 0, rng.randint(1, 12)])) for rid in range(n_run)]
    waiting = [(n_run + i, rng.randint(1, 15)) for i in range(rng.randint(0, 4))]
    return running, waiting, n_run + rng.randint(0, 3), rng.randint(1, 20)


def cases(rng: random.Random, refs: dict | None = None) -> dict[str, list[Case]]:
    steps = [Case(f"random state {i}", _state(rng)) for i in range(6)]
    streams = []
    for i in range(4):
        arrival = round(rng.uniform(0, 50), 2)
        t, times = arrival + round(rng.uniform(0, 5), 2), []
        for _ in range(rng.randint(0, 6)):
            times.append(round(t, 3))
            t += round(rng.uniform(0.01, 3), 3)
        streams.append(Case(f"random stream {i}", (arrival, times)))
    admits = []
    for i in range(5):
        wait = [(rid, rng.randint(1, 12), rng.randint(0, 12)) for rid in range(rng.randint(0, 5))]
        admits.append(Case(f"random queue {i}", (wait, rng.randint(0, 4), rng.randint(0, 60), rng.randint(1, 30))))
    return {
        "schedule_step": [
            Case("decodes first, even after a prefill in admission order", ([(0, 5), (1, 0), (2, 0)], [], 3, 4)),
            Case("every running prefill gets a chunk, not only the first", ([(0, 3), (1, 4), (2, 0)], [(3, 2)], 5, 10)),
            Case("a prefill that fits exactly", ([(0, 3)], [(1, 2)], 2, 3)),
            Case("the budget runs out in the middle of the decodes", ([(0, 0), (1, 0), (2, 0), (3, 7)], [], 4, 2)),
            Case("a newcomer longer than what is left gets a chunk", ([(0, 0)], [(1, 9)], 2, 4)),
            Case("stop at the first newcomer without a slot", ([(0, 0)], [(1, 1), (2, 1), (3, 1)], 3, 16)),
        ] + steps,
        "ttft_tpot": [
            Case("two tokens", (0.0, [0.5, 0.75])),
            Case("all tokens at once", (1.0, [2.0, 2.0, 2.0])),
            Case("a tuple of times", (2.0, (2.5, 3.5, 4.0))),
        ] + streams,
        "admit": [
            Case("the budget fits exactly", ([(0, 5, 1), (1, 5, 1)], 4, 100, 10)),
            Case("slots run out before memory", ([(0, 1, 1), (1, 1, 1), (2, 1, 1)], 2, 100, 64)),
            Case("the second request's whole life does not fit", ([(0, 3, 3), (1, 3, 30)], 4, 40, 64)),
            Case("no output tokens to reserve", ([(0, 8, 0)], 1, 8, 8)),
        ] + admits,
    }
