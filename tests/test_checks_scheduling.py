"""Exercise 06's tasks on every case (public, hidden, random): right answers written differently pass,
plausible wrong ones fail, including a deadline policy that meets only the public seeds; a policy is
judged on the grader's own replay of the engine, not on what the learner's engine says."""

from __future__ import annotations

import math

import pytest

from checks_helpers import accepted, rejected, stub
from course_lib.checks import scheduling as chk
from course_lib.grading.hidden.scheduling import measured_handover_bytes
from helpers import one_thread, verdict  # noqa: F401 (an autouse fixture)

LESSON = chk.LESSON


def slo_right(requests, ttft_target, tbt_target):
    def ok(arrival, times):
        gaps = [b - a for a, b in zip(times, times[1:])]
        return bool(times) and times[0] - arrival <= ttft_target and max(gaps, default=0) <= tbt_target
    return sum(ok(a, list(t)) for a, t in requests)


def slo_mean_gap(requests, ttft_target, tbt_target):
    return sum(1 for a, t in requests if t and t[0] - a <= ttft_target
               and (len(t) < 2 or (t[-1] - t[0]) / (len(t) - 1) <= tbt_target))


def slo_strict(requests, ttft_target, tbt_target):
    return sum(1 for a, t in requests if t and t[0] - a < ttft_target
               and all(y - x < tbt_target for x, y in zip(t, t[1:])))


def slo_no_token_met(requests, ttft_target, tbt_target):
    return sum(1 for a, t in requests if not t or (t[0] - a <= ttft_target
                                                  and all(y - x <= tbt_target for x, y in zip(t, t[1:]))))


def aged_right(priority, arrival, now, rate):
    waited = now - arrival
    return priority + waited * rate


def deadline_right(req, now):                         # the solution's rule as a tuple key
    due = req.deadline if req.deadline is not None else req.arrival + chk.BATCH_WAIT
    return (req.first_token_time is not None, due)


def deadline_public_seeds_only(req, now):            # EDF with batch deadlines: misses seeds 12 and 25
    return req.deadline if req.deadline is not None else req.arrival + 25


def handover_right(config, prompt_len, block_size):
    return measured_handover_bytes(config, prompt_len, block_size)


def handover_counts_first_output(config, prompt_len, block_size):
    return measured_handover_bytes(config, prompt_len + 1, block_size)


def handover_floor_blocks(config, prompt_len, block_size):
    bs = block_size or 1
    return measured_handover_bytes(config, prompt_len // bs * bs, None)


def handover_ignores_gqa(config, prompt_len, block_size):
    return measured_handover_bytes({k: v for k, v in config.items() if k != "num_key_value_heads"},
                                   prompt_len, block_size)


RIGHT = [("slo_met", slo_right), ("aged_priority", aged_right), ("deadline_policy", deadline_right),
         ("handover_bytes", handover_right)]
WRONG = [
    ("slo_met", slo_mean_gap), ("slo_met", slo_strict), ("slo_met", slo_no_token_met),
    ("aged_priority", lambda p, a, now, rate: p + rate * now),          # ages everybody alike
    ("aged_priority", lambda p, a, now, rate: p - rate * (now - a)),    # punishes waiting
    ("aged_priority", lambda p, a, now, rate: p * rate * (now - a)),    # multiplies instead of adds
    ("aged_priority", lambda p, a, now, rate: int(p + rate * (now - a))),
    ("deadline_policy", lambda req: req.arrival),                                                  # FCFS
    ("deadline_policy", lambda req: -req.priority),                                                # strict priority
    ("deadline_policy", lambda req, now: req.deadline if req.deadline is not None else math.inf),  # EDF, batch last
    ("deadline_policy", deadline_public_seeds_only),
    ("handover_bytes", handover_counts_first_output), ("handover_bytes", handover_floor_blocks),
    ("handover_bytes", handover_ignores_gqa),
]


@pytest.mark.parametrize("task, fn", RIGHT, ids=lambda x: getattr(x, "__name__", x))
def test_right_answers_pass_every_case(task, fn):
    accepted(LESSON, task, fn)


@pytest.mark.parametrize("task, fn", WRONG, ids=lambda x: getattr(x, "__name__", x))
def test_plausible_wrong_answers_fail(task, fn):
    rejected(LESSON, task, fn)


def test_a_policy_tuned_to_the_public_seeds_fails_the_hidden_ones(capsys):
    assert verdict(capsys, chk.check_deadline_policy, deadline_public_seeds_only).startswith("✅")
    assert rejected(LESSON, "deadline_policy", deadline_public_seeds_only) == ["hidden: deadline trace, seed 12"]


def test_the_judge_replays_the_engine_itself():
    """A log of keys that does not answer the engine's questions (a patched engine in the kernel) fails."""
    probe = chk.probe_deadline(deadline_right, [0], {})
    assert chk.judge_deadline(probe, chk.GOALS_MET, [0]) == chk.GOALS_MET
    forged = {"keys": probe["keys"][:5]}                         # a log cut short
    assert "do not answer the engine's questions" in chk.judge_deadline(forged, chk.GOALS_MET, [0])
    reordered = {"keys": [[rid + 1, now, key] for rid, now, key in probe["keys"]]}
    assert "was the engine changed" in chk.judge_deadline(reordered, chk.GOALS_MET, [0])
    assert chk.judge_deadline({"all": "goals met"}, chk.GOALS_MET, [0]) != chk.GOALS_MET


def test_check_cells_print_one_verdict_line(capsys):
    assert verdict(capsys, chk.check_aged_priority, aged_right) == "✅ aged_priority: all 7 cases pass"
    assert "raised" in verdict(capsys, chk.check_deadline_policy, lambda req: req.deadline + 0)
    for check in (chk.check_slo_met, chk.check_aged_priority, chk.check_deadline_policy, chk.check_handover_bytes):
        assert "not implemented" in verdict(capsys, check, stub)
