"""Exercise 03 (continuous batching): the tasks, their public cases, the check cells' functions."""

from __future__ import annotations

from course_lib.checks.core import Case, Task, practice

LESSON = "03_continuous_batching"

TASKS = {t.name: t for t in [
    # schedule_step(running [(rid, prefill_left)], waiting [(rid, prompt_len)], max_running, budget)
    Task("schedule_step", [Case(name, (run, wait, slots, budget)) for name, run, wait, slots, budget in [
        ("the seed's question: three decoding, a short one arrives", [(0, 0), (1, 0), (2, 0)], [(3, 5)], 4, 16),
        ("the budget cuts the newcomer's prompt into a chunk", [(0, 0), (1, 0), (2, 0)], [(3, 5)], 4, 6),
        ("no free slot", [(0, 0), (1, 0), (2, 0)], [(3, 5)], 3, 16),
        ("decodes use up the whole budget", [(0, 0), (1, 0), (2, 0)], [(3, 5)], 4, 2),
        ("a prefill under way goes before newcomers", [(0, 0), (1, 7)], [(2, 4)], 4, 6),
        ("newcomers share what is left, in order", [], [(0, 3), (1, 3), (2, 3)], 2, 8),
        ("the first newcomer takes the rest of the budget", [(0, 0)], [(1, 10), (2, 2)], 3, 5),
        ("nothing to do", [], [], 4, 8),
        ("one slot, a long prompt", [], [(7, 40)], 1, 16),
    ]]),
    # ttft_tpot(arrival, token_times) -> (ttft, tpot)
    Task("ttft_tpot", [Case(name, (arrival, times)) for name, arrival, times in [
        ("steady stream", 1.0, [3.0, 4.0, 5.0, 6.0]),
        ("a stall in the middle", 0.0, [2.0, 2.5, 9.0, 9.5]),
        ("a single token", 0.5, [2.0]),
        ("no token yet", 0.0, []),
        ("first token at arrival", 3.0, [3.0, 3.25]),
        ("late arrival", 100.0, [103.0, 104.0, 108.0]),
    ]], judge="close"),
    # admit(waiting [(rid, prompt_len, max_new)], free_slots, free_kv, budget) -> [rid, ...]
    Task("admit", [Case(name, (wait, slots, kv, budget)) for name, wait, slots, kv, budget in [
        ("everything fits", [(0, 4, 4), (1, 3, 3)], 4, 100, 64),
        ("KV for the whole life, not just the prompt", [(0, 4, 10), (1, 4, 10)], 4, 20, 64),
        ("exactly fits", [(0, 4, 6)], 4, 10, 4),
        ("first come, first served: no overtaking", [(0, 30, 30), (1, 2, 2)], 4, 40, 64),
        ("the token budget", [(0, 10, 1), (1, 10, 1)], 4, 100, 15),
        ("no free slot", [(0, 1, 1)], 0, 100, 64),
        ("one free slot", [(0, 1, 1), (1, 1, 1)], 1, 100, 64),
        ("nobody waiting", [], 4, 100, 64),
    ]]),
]}


def check_schedule_step(fn) -> None:
    """fn(running, waiting, max_running, budget) -> [(rid, n_tokens)] for the next step."""
    practice(LESSON, TASKS["schedule_step"], fn)


def check_ttft_tpot(fn) -> None:
    """fn(arrival, token_times) -> (ttft, tpot); None where undefined."""
    practice(LESSON, TASKS["ttft_tpot"], fn)


def check_admit(fn) -> None:
    """fn(waiting, free_slots, free_kv, budget) -> [rid, ...] to admit this step."""
    practice(LESSON, TASKS["admit"], fn)
