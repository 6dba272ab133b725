"""Lesson 06's checks accept correct answers and reject plausible wrong ones."""

from __future__ import annotations

import math

import pytest

from course_lib.checks import scheduling as chk
from helpers import one_thread, verdict  # noqa: F401 (an autouse fixture)


# ---- task 1: ageing -----------------------------------------------------------------------------------
def test_aged_priority_accepts_the_answer(capsys):
    assert verdict(capsys, chk.check_aged_priority, lambda p, a, now, rate: p + rate * (now - a)).startswith("✅")


@pytest.mark.parametrize("wrong", [
    lambda p, a, now, rate: p + rate * now,                 # ages everybody alike: strict priority again
    lambda p, a, now, rate: p - rate * (now - a),           # punishes waiting
    lambda p, a, now, rate: p * rate * (now - a),           # multiplies instead of adds
    lambda p, a, now, rate: rate * (now - a),               # forgets the priority
    lambda p, a, now, rate: p + (now - a) / rate if rate else p,   # the rate upside down
], ids=["no-arrival", "sign", "product", "no-priority", "inverse-rate"])
def test_aged_priority_rejects_wrong_answers(capsys, wrong):
    assert verdict(capsys, chk.check_aged_priority, wrong).startswith("❌")


def test_a_stub_says_not_implemented(capsys):
    def stub(*args):
        raise NotImplementedError()
    assert "not implemented" in verdict(capsys, chk.check_aged_priority, stub)


# ---- task 2: a policy that meets a goal ---------------------------------------------------------------
def edf_with_batch_deadline(req):
    return req.deadline if req.deadline is not None else req.arrival + chk.BATCH_WAIT


def test_deadline_policy_accepts_answers_on_public_and_other_traces(capsys):
    assert verdict(capsys, chk.check_deadline_policy, edf_with_batch_deadline, seeds=(0, 3, 9)).startswith("✅")
    from course_lib.engine.queues import Ageing
    assert verdict(capsys, chk.check_deadline_policy, Ageing(0.08), seeds=(0, 5)).startswith("✅")


@pytest.mark.parametrize("wrong,why", [
    (lambda req: req.arrival, "deadline"),                                               # FCFS
    (lambda req: -req.priority, "batch"),                                                # strict priority
    (lambda req, now: req.deadline if req.deadline is not None else math.inf, "batch"),   # EDF, batch last
    (lambda req: req.max_new_tokens, "batch"),                                           # shortest job first
], ids=["fcfs", "priority", "edf-only", "sjf"])
def test_deadline_policy_rejects_wrong_answers(capsys, wrong, why):
    line = verdict(capsys, chk.check_deadline_policy, wrong)
    assert line.startswith("❌") and why in line


def test_deadline_policy_reports_a_crashing_key(capsys):
    assert "raised" in verdict(capsys, chk.check_deadline_policy, lambda req: req.deadline + 0)


# ---- task 3: the hand-over size -----------------------------------------------------------------------
def handover(cfg, n, block_size):
    heads = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads", heads)
    hd = cfg.get("head_dim", cfg["hidden_size"] // heads)
    size = {"float32": 4, "float16": 2, "bfloat16": 2}[cfg["torch_dtype"]]
    tokens = n if block_size is None else -(-n // block_size) * block_size
    return 2 * cfg["num_hidden_layers"] * kv * hd * size * tokens


def test_handover_bytes_accepts_the_answer(capsys):
    assert verdict(capsys, chk.check_handover_bytes, handover).startswith("✅")


def test_handover_bytes_is_measured_from_real_packets():
    cfg = chk.TINY
    assert chk.measured_handover_bytes(cfg, 10, 4) == handover(cfg, 10, 4) == 2 * 4 * 2 * 32 * 4 * 12


@pytest.mark.parametrize("wrong", [
    lambda c, n, bs: handover(c, n, None),                                   # no whole blocks
    lambda c, n, bs: handover(c, n, bs) // 2,                                # keys only
    lambda c, n, bs: handover(c, n + 1, bs),                                 # counts the first generated token
    lambda c, n, bs: handover({**c, "num_key_value_heads": c["num_attention_heads"]}, n, bs),   # ignores GQA
    lambda c, n, bs: handover({**c, "torch_dtype": "float32"}, n, bs),       # 4 bytes always
    lambda c, n, bs: handover(c, n, bs or 16),                               # blocks even without blocks
    lambda c, n, bs: handover({k: v for k, v in c.items() if k != "head_dim"}, n, bs),   # ignores head_dim
], ids=["no-blocks", "keys-only", "plus-one", "no-gqa", "fp32", "always-blocks", "no-head-dim"])
def test_handover_bytes_rejects_wrong_answers(capsys, wrong):
    assert verdict(capsys, chk.check_handover_bytes, wrong).startswith("❌")


# ---- task 4: SLO -------------------------------------------------------------------------------------
def slo_met(requests, ttft, tbt):
    n = 0
    for arrival, times in requests:
        if times and times[0] - arrival <= ttft and all(b - a <= tbt for a, b in zip(times, times[1:])):
            n += 1
    return n


def test_slo_met_accepts_the_answer(capsys):
    assert verdict(capsys, chk.check_slo_met, slo_met).startswith("✅")


@pytest.mark.parametrize("wrong", [
    lambda reqs, ttft, tbt: sum(1 for a, t in reqs if t and t[0] - a <= ttft),                  # TTFT only
    lambda reqs, ttft, tbt: sum(1 for a, t in reqs if t and t[0] - a <= ttft and
                                (len(t) < 2 or (t[-1] - t[0]) / (len(t) - 1) <= tbt)),          # mean gap (TPOT)
    lambda reqs, ttft, tbt: sum(1 for a, t in reqs if t and t[0] - a < ttft and
                                all(y - x < tbt for x, y in zip(t, t[1:]))),                     # strict <
    lambda reqs, ttft, tbt: sum(1 for a, t in reqs if not t or (t[0] - a <= ttft and
                                all(y - x <= tbt for x, y in zip(t, t[1:])))),                   # no token counts
    lambda reqs, ttft, tbt: sum(1 for a, t in reqs if t and t[0] <= ttft and
                                all(y - x <= tbt for x, y in zip(t, t[1:])))],                   # ignores arrival
    ids=["ttft-only", "mean-gap", "strict", "empty-meets", "no-arrival"])
def test_slo_met_rejects_wrong_answers(capsys, wrong):
    assert verdict(capsys, chk.check_slo_met, wrong).startswith("❌")
