"""Checks for lesson 03's exercise (continuous batching).

The expected answers come from course_lib itself: the scheduling step from
course_lib.engine.scheduler.ChunkedPrefill, the latencies from
course_lib.engine.metrics.ttft_tpot, the admission rule from a reference
written here beside its check.
"""

from __future__ import annotations

from types import SimpleNamespace

from course_lib.checks.core import Case, run_cases
from course_lib.engine.metrics import ttft_tpot
from course_lib.engine.request import Request
from course_lib.engine.scheduler import ChunkedPrefill, Limits


# ---- task 1: one scheduling step of iteration-level batching --------------------------------
def _running_request(rid: int, prefill_left: int) -> Request:
    """A running request that still has `prefill_left` prompt tokens to compute (0: decoding)."""
    if prefill_left == 0:
        r = Request([0], 1000, rid=rid)
        r.output, r.num_computed = [1], 1                       # one token out, one to feed: decoding
    else:
        r = Request([0] * (prefill_left + 1), 1000, rid=rid)
        r.num_computed = 1                                      # part of its prompt is done
    return r


def reference_schedule_step(running, waiting, max_running, budget):
    """What course_lib's ChunkedPrefill policy plans for this state, as [(rid, n_tokens)]."""
    view = SimpleNamespace(
        running=[_running_request(rid, left) for rid, left in running],
        waiting=[Request([0] * n, 1000, rid=rid) for rid, n in waiting],
        free_slots=max_running - len(running),
        limits=Limits(max_running=max(1, max_running), max_tokens_per_step=budget),
    )
    plan = ChunkedPrefill().plan(view)
    return [(r.rid, n) for r, n in plan.work]


SCHEDULE_SPECS = [
    ("the seed's question: three decoding, a short one arrives", [(0, 0), (1, 0), (2, 0)], [(3, 5)], 4, 16),
    ("the budget cuts the newcomer's prompt into a chunk", [(0, 0), (1, 0), (2, 0)], [(3, 5)], 4, 6),
    ("no free slot", [(0, 0), (1, 0), (2, 0)], [(3, 5)], 3, 16),
    ("decodes use up the whole budget", [(0, 0), (1, 0), (2, 0)], [(3, 5)], 4, 2),
    ("a prefill under way goes before newcomers", [(0, 0), (1, 7)], [(2, 4)], 4, 6),
    ("newcomers share what is left, in order", [], [(0, 3), (1, 3), (2, 3)], 2, 8),
    ("the first newcomer takes the rest of the budget", [(0, 0)], [(1, 10), (2, 2)], 3, 5),
    ("nothing to do", [], [], 4, 8),
    ("one slot, a long prompt", [], [(7, 40)], 1, 16),
]


def check_schedule_step(fn) -> None:
    """fn(running, waiting, max_running, budget) -> [(rid, n_tokens)] for the next step.

    running: [(rid, prefill_left)] in admission order (prefill_left 0 = decoding)
    waiting: [(rid, prompt_len)] in arrival order
    """
    cases = [Case(name, ([tuple(x) for x in run], [tuple(x) for x in wait], slots, budget),
                  reference_schedule_step(run, wait, slots, budget), compare=_same_pairs)
             for name, run, wait, slots, budget in SCHEDULE_SPECS]
    run_cases("schedule_step", fn, cases)


def _same_pairs(got, expected) -> bool:
    try:
        return [tuple(int(v) for v in pair) for pair in got] == [tuple(p) for p in expected]
    except (TypeError, ValueError):
        return False


# ---- task 2: TTFT and TPOT from timestamps ---------------------------------------------------
TTFT_SPECS = [
    ("steady stream", 1.0, [3.0, 4.0, 5.0, 6.0]),
    ("a stall in the middle", 0.0, [2.0, 2.5, 9.0, 9.5]),
    ("a single token", 0.5, [2.0]),
    ("no token yet", 0.0, []),
    ("first token at arrival", 3.0, [3.0, 3.25]),
    ("late arrival", 100.0, [103.0, 104.0, 108.0]),
]


def check_ttft_tpot(fn) -> None:
    """fn(arrival, token_times) -> (ttft, tpot); None where undefined."""
    cases = [Case(name, (arrival, list(times)), ttft_tpot(arrival, times), compare=_same_latency)
             for name, arrival, times in TTFT_SPECS]
    run_cases("ttft_tpot", fn, cases)


def _same_latency(got, expected) -> bool:
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return False
    for g, e in zip(got, expected):
        if e is None:
            if g is not None:
                return False
        elif isinstance(g, bool) or not isinstance(g, (int, float)) or abs(g - e) > 1e-9:
            return False
    return True


# ---- task 3: a custom admission rule --------------------------------------------------------
def reference_admit(waiting, free_slots, free_kv, budget):
    """Admit in order while a slot is free, the whole prompt fits in the step's budget, and
    the request's WHOLE final length (prompt + max_new) fits in the free KV memory; stop at
    the first request that does not fit (first come, first served)."""
    admitted = []
    for rid, prompt_len, max_new in waiting:
        if free_slots < 1 or prompt_len > budget or prompt_len + max_new > free_kv:
            break
        admitted.append(rid)
        free_slots, budget, free_kv = free_slots - 1, budget - prompt_len, free_kv - prompt_len - max_new
    return admitted


ADMIT_SPECS = [
    ("everything fits", [(0, 4, 4), (1, 3, 3)], 4, 100, 64),
    ("KV for the whole life, not just the prompt", [(0, 4, 10), (1, 4, 10)], 4, 20, 64),
    ("exactly fits", [(0, 4, 6)], 4, 10, 4),
    ("first come, first served: no overtaking", [(0, 30, 30), (1, 2, 2)], 4, 40, 64),
    ("the token budget", [(0, 10, 1), (1, 10, 1)], 4, 100, 15),
    ("no free slot", [(0, 1, 1)], 0, 100, 64),
    ("one free slot", [(0, 1, 1), (1, 1, 1)], 1, 100, 64),
    ("nobody waiting", [], 4, 100, 64),
]


def check_admit(fn) -> None:
    """fn(waiting, free_slots, free_kv, budget) -> [rid, ...] to admit this step.

    waiting: [(rid, prompt_len, max_new_tokens)] in arrival order
    """
    cases = [Case(name, ([tuple(w) for w in wait], slots, kv, budget), reference_admit(wait, slots, kv, budget),
                  compare=_same_ids)
             for name, wait, slots, kv, budget in ADMIT_SPECS]
    run_cases("admit", fn, cases)


def _same_ids(got, expected) -> bool:
    try:
        return [int(i) for i in got] == list(expected)
    except (TypeError, ValueError):
        return False
