"""Exercise 03's tasks: right answers written differently pass every case (public, hidden, random);
plausible wrong ones fail some; each check cell prints one verdict line."""

from __future__ import annotations

import pytest

from checks_helpers import accepted, rejected, stub
from course_lib.checks import batching as chk
from course_lib.engine.metrics import ttft_tpot
from course_lib.grading.hidden.batching import reference_schedule_step
from helpers import verdict

LESSON = chk.LESSON


# ---- task 1: one scheduling step --------------------------------------------------------------------
def schedule_right(running, waiting, max_running, budget):
    decodes = [(rid, 1) for rid, p in running if p == 0][:budget]
    left = budget - len(decodes)
    work = list(decodes)
    for rid, p in running:
        if p and left:
            work.append((rid, min(p, left)))
            left -= work[-1][1]
    for rid, n in waiting[:max(0, max_running - len(running))]:
        if not left:
            break
        work.append((rid, min(n, left)))
        left -= work[-1][1]
    return work


def schedule_one_pass(running, waiting, max_running, budget):
    """Running requests in admission order, decode or prefill alike: decodes do not come first."""
    work, left = [], budget
    for rid, p in running:
        if left:
            work.append((rid, min(max(p, 1), left)))
            left -= work[-1][1]
    for rid, n in waiting[:max_running - len(running)]:
        if not left:
            break
        work.append((rid, min(n, left)))
        left -= work[-1][1]
    return work


def schedule_first_prefill_only(running, waiting, max_running, budget):
    """Chunks only the first running prefill."""
    work = [(rid, 1) for rid, p in running if p == 0][:budget]
    left = budget - len(work)
    prefills = [(rid, p) for rid, p in running if p]
    if prefills and left:
        rid, p = prefills[0]
        work.append((rid, min(p, left)))
        left -= work[-1][1]
    for rid, n in waiting[:max_running - len(running)]:
        if not left:
            break
        work.append((rid, min(n, left)))
        left -= work[-1][1]
    return work


def schedule_prefill_first(running, waiting, max_running, budget):
    """Newcomers before decodes."""
    work, left, free = [], budget, max_running - len(running)
    for rid, n in waiting:
        if free == 0 or left == 0:
            break
        work.append((rid, min(n, left)))
        left -= min(n, left)
        free -= 1
    for rid, p in running:
        take = 1 if p == 0 else p
        if left > 0:
            work.append((rid, min(take, left)))
            left -= min(take, left)
    return work


def schedule_no_chunks(running, waiting, max_running, budget):
    """Whole prompts only."""
    work, left, free = [], budget, max_running - len(running)
    for rid, p in sorted(running, key=lambda x: x[1] > 0):
        need = 1 if p == 0 else p
        if need <= left:
            work.append((rid, need))
            left -= need
    for rid, n in waiting:
        if free == 0 or n > left:
            break
        work.append((rid, n))
        left -= n
        free -= 1
    return work


def schedule_ignores_slots(running, waiting, max_running, budget):
    return reference_schedule_step(running, waiting, 10**6, budget)


# ---- task 2: TTFT and TPOT ---------------------------------------------------------------------------
def ttft_right(arrival, times):
    times = list(times)
    gaps = [b - a for a, b in zip(times, times[1:])]
    return (times[0] - arrival if times else None), (sum(gaps) / len(gaps) if gaps else None)


def ttft_divides_by_n(arrival, times):
    if not times:
        return None, None
    return times[0] - arrival, (times[-1] - times[0]) / len(times)


def ttft_tpot_includes_ttft(arrival, times):
    if not times:
        return None, None
    return times[0] - arrival, (times[-1] - arrival) / len(times)


def ttft_zero_not_none(arrival, times):
    a, b = ttft_tpot(arrival, times)
    return (a if a is not None else 0.0), (b if b is not None else 0.0)


def ttft_single_token_zero(arrival, times):
    a, b = ttft_tpot(arrival, times)
    return a, (0.0 if len(times) == 1 else b)


# ---- task 3: admission ---------------------------------------------------------------------------------
def admit_right(waiting, free_slots, free_kv, budget):
    out = []
    for rid, p, m in waiting:
        free_slots, budget, free_kv = free_slots - 1, budget - p, free_kv - p - m
        if min(free_slots, budget, free_kv) < 0:
            break
        out.append(rid)
    return out


def admit_skips(waiting, free_slots, free_kv, budget):
    """Lets a small request overtake one that does not fit."""
    out = []
    for rid, p, m in waiting:
        if free_slots == 0 or p > budget or p + m > free_kv:
            continue
        out.append(rid)
        free_slots, budget, free_kv = free_slots - 1, budget - p, free_kv - p - m
    return out


def admit_prompt_only(waiting, free_slots, free_kv, budget):
    """Checks only the prompt against free KV (will need preemption later)."""
    out = []
    for rid, p, m in waiting:
        if free_slots == 0 or p > budget or p > free_kv:
            break
        out.append(rid)
        free_slots, budget, free_kv = free_slots - 1, budget - p, free_kv - p
    return out


def admit_strict(waiting, free_slots, free_kv, budget):
    """Off by one: refuses an exact fit."""
    out = []
    for rid, p, m in waiting:
        if free_slots == 0 or p >= budget or p + m >= free_kv:
            break
        out.append(rid)
        free_slots, budget, free_kv = free_slots - 1, budget - p, free_kv - p - m
    return out


def admit_no_budget(waiting, free_slots, free_kv, budget):
    return admit_right(waiting, free_slots, free_kv, 10**6)


RIGHT = [("schedule_step", schedule_right), ("schedule_step", reference_schedule_step), ("ttft_tpot", ttft_right),
         ("ttft_tpot", ttft_tpot), ("admit", admit_right)]
WRONG = [
    ("schedule_step", schedule_one_pass), ("schedule_step", schedule_first_prefill_only),
    ("schedule_step", schedule_prefill_first), ("schedule_step", schedule_no_chunks),
    ("schedule_step", schedule_ignores_slots),
    ("ttft_tpot", ttft_divides_by_n), ("ttft_tpot", ttft_tpot_includes_ttft), ("ttft_tpot", ttft_zero_not_none),
    ("ttft_tpot", ttft_single_token_zero),
    ("admit", admit_skips), ("admit", admit_prompt_only), ("admit", admit_strict), ("admit", admit_no_budget),
]


@pytest.mark.parametrize("task, fn", RIGHT, ids=lambda x: getattr(x, "__name__", x))
def test_right_answers_pass_every_case(task, fn):
    accepted(LESSON, task, fn)


@pytest.mark.parametrize("task, fn", WRONG, ids=lambda x: getattr(x, "__name__", x))
def test_plausible_wrong_answers_fail(task, fn):
    rejected(LESSON, task, fn)


@pytest.mark.parametrize("fn", [schedule_one_pass, schedule_first_prefill_only], ids=lambda f: f.__name__)
def test_hidden_cases_catch_what_the_public_ones_miss(capsys, fn):
    assert verdict(capsys, chk.check_schedule_step, fn).startswith("✅")
    assert all(name.startswith("hidden:") for name in rejected(LESSON, "schedule_step", fn))


def test_check_cells_print_one_verdict_line(capsys):
    assert verdict(capsys, chk.check_admit, admit_right) == "✅ admit: all 8 cases pass"
    for check in (chk.check_schedule_step, chk.check_ttft_tpot, chk.check_admit):
        assert "not implemented yet" in verdict(capsys, check, stub)
        assert "ZeroDivisionError" in verdict(capsys, check, lambda *a: 1 / 0)


def test_the_reference_schedule_is_the_seed_answer():
    assert reference_schedule_step([(0, 0), (1, 0), (2, 0)], [(3, 5)], 4, 16) == [(0, 1), (1, 1), (2, 1), (3, 5)]
    assert reference_schedule_step([(0, 0), (1, 0), (2, 0)], [(3, 5)], 4, 6) == [(0, 1), (1, 1), (2, 1), (3, 3)]
