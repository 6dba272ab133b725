"""Lesson 03's checks accept correct answers and reject plausible wrong ones."""

from __future__ import annotations

import pytest

from course_lib.checks import batching as chk
from helpers import verdict


# ---- task 1 -------------------------------------------------------------------------------
def schedule_right(running, waiting, max_running, budget):
    work, left = [], budget
    for rid, p in running:                        # decodes first
        if p == 0 and left > 0:
            work.append((rid, 1))
            left -= 1
    for rid, p in running:                        # prefills under way, chunked
        if p > 0 and left > 0:
            work.append((rid, min(p, left)))
            left -= min(p, left)
    free = max_running - len(running)
    for rid, n in waiting:                        # newcomers while a slot and budget remain
        if free == 0 or left == 0:
            break
        work.append((rid, min(n, left)))
        left -= min(n, left)
        free -= 1
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
    return schedule_right(running, waiting, 10**6, budget)


def schedule_ignores_budget(running, waiting, max_running, budget):
    return schedule_right(running, waiting, max_running, 10**6)


def test_schedule_step_accepts_the_answer(capsys):
    assert verdict(capsys, chk.check_schedule_step, schedule_right).startswith("✅ schedule_step: all")


@pytest.mark.parametrize("wrong", [schedule_prefill_first, schedule_no_chunks, schedule_ignores_slots,
                                   schedule_ignores_budget])
def test_schedule_step_rejects_wrong_answers(capsys, wrong):
    assert verdict(capsys, chk.check_schedule_step, wrong).startswith("❌ schedule_step: case")


# ---- task 2 -------------------------------------------------------------------------------
def ttft_right(arrival, times):
    if not times:
        return None, None
    return times[0] - arrival, (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None


def ttft_divides_by_n(arrival, times):
    if not times:
        return None, None
    return times[0] - arrival, (times[-1] - times[0]) / len(times)


def ttft_from_zero(arrival, times):
    right = ttft_right(arrival, times)
    return (times[0] if times else None), right[1]


def ttft_tpot_includes_ttft(arrival, times):
    if not times:
        return None, None
    return times[0] - arrival, (times[-1] - arrival) / len(times)


def ttft_zero_not_none(arrival, times):
    a, b = ttft_right(arrival, times)
    return (a if a is not None else 0.0), (b if b is not None else 0.0)


def test_ttft_tpot_accepts_the_answer(capsys):
    assert verdict(capsys, chk.check_ttft_tpot, ttft_right) == "✅ ttft_tpot: all 6 cases pass"


@pytest.mark.parametrize("wrong", [ttft_divides_by_n, ttft_from_zero, ttft_tpot_includes_ttft, ttft_zero_not_none])
def test_ttft_tpot_rejects_wrong_answers(capsys, wrong):
    assert verdict(capsys, chk.check_ttft_tpot, wrong).startswith("❌ ttft_tpot: case")


# ---- task 3 -------------------------------------------------------------------------------
def admit_right(waiting, free_slots, free_kv, budget):
    out = []
    for rid, p, m in waiting:
        if free_slots == 0 or p > budget or p + m > free_kv:
            break
        out.append(rid)
        free_slots, budget, free_kv = free_slots - 1, budget - p, free_kv - p - m
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


def test_admit_accepts_the_answer(capsys):
    assert verdict(capsys, chk.check_admit, admit_right) == "✅ admit: all 8 cases pass"


@pytest.mark.parametrize("wrong", [admit_skips, admit_prompt_only, admit_strict, admit_no_budget])
def test_admit_rejects_wrong_answers(capsys, wrong):
    assert verdict(capsys, chk.check_admit, wrong).startswith("❌ admit: case")


def test_stubs_and_crashes_are_verdicts(capsys):
    def stub(*args):
        raise NotImplementedError()

    def crash(*args):
        return 1 / 0

    for check in (chk.check_schedule_step, chk.check_ttft_tpot, chk.check_admit):
        assert "not implemented yet" in verdict(capsys, check, stub)
        assert "ZeroDivisionError" in verdict(capsys, check, crash)


def test_reference_schedule_matches_the_seed_answer():
    assert chk.reference_schedule_step([(0, 0), (1, 0), (2, 0)], [(3, 5)], 4, 16) == [(0, 1), (1, 1), (2, 1), (3, 5)]
    assert chk.reference_schedule_step([(0, 0), (1, 0), (2, 0)], [(3, 5)], 4, 6) == [(0, 1), (1, 1), (2, 1), (3, 3)]
