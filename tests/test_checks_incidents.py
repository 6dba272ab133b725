"""Lesson 07's checks: a real fix passes, plausible wrong fixes and diagnoses fail."""

from __future__ import annotations

from dataclasses import replace

import pytest

from course_lib.checks import incidents as chk
from helpers import one_thread, verdict  # noqa: F401 (an autouse fixture)


CHECKS = {"a": chk.check_fix_incident_a, "b": chk.check_fix_incident_b, "c": chk.check_fix_incident_c}


def test_the_reference_fix_of_a_passes_on_both_traces(capsys):
    assert verdict(capsys, CHECKS["a"], chk.REFERENCE_FIXES["a"]).startswith("✅ fix_incident_a: all 2 cases")


@pytest.mark.parametrize("key", ["b", "c"])
def test_the_reference_fixes_pass(capsys, key):
    assert verdict(capsys, CHECKS[key], chk.REFERENCE_FIXES[key], seeds=(1,)).startswith("✅")


@pytest.mark.parametrize("key,wrong,why", [
    ("a", lambda c: replace(c, placement="best-fit"), "refusals with enough memory free"),
    ("a", lambda c: replace(c, kv_slots=4096), "kv_slots"),                    # buys memory
    ("b", lambda c: replace(c, preemption="swap"), "preemptions"),
    ("c", lambda c: replace(c, policy="decode-first"), "TBT"),
    ("c", lambda c: replace(c, max_tokens_per_step=64), "TBT"),                # prefill-first, smaller budget
    ("c", lambda c: replace(c, policy="chunked", max_tokens_per_step=16), "TTFT"),   # over-corrects
    ("c", lambda c: {"policy": "chunked"}, "ServerConfig"),
], ids=["a-best-fit", "a-more-memory", "b-swap", "c-decode-first",
        "c-small-budget", "c-tiny-chunks", "c-dict"])
def test_plausible_wrong_fixes_fail(capsys, key, wrong, why):
    line = verdict(capsys, CHECKS[key], wrong, seeds=(0,))
    assert line.startswith("❌") and why in line


def test_the_input_config_is_frozen():
    with pytest.raises(Exception):
        chk.get_incident("a").config.kv_store = "paged"


def diagnose(t):
    if t["paradox_refusals"] > 0:
        return "fragmentation"
    if t["preemptions"] > 0 and t["shared_prefix"] > 0 and t["prefix_hit_rate"] < 0.5:
        return "prefix-duplication"
    if t["tbt_p99_ms"] > t["tbt_target_ms"] and t["long_prefill_steps"] > 0:
        return "prefill-stall"
    return "healthy"


def test_diagnose_accepts_a_sound_rule(capsys):
    assert verdict(capsys, chk.check_diagnose, diagnose).startswith("✅")


@pytest.mark.parametrize("wrong", [
    lambda t: "fragmentation" if t["refusals"] > 0 else "healthy",                  # any refusal is fragmentation
    lambda t: "prefill-stall" if t["long_prefill_steps"] > 0 else diagnose(t),      # stall rule first
    lambda t: "prefix-duplication" if t["preemptions"] > 0 else diagnose(t),        # any preemption
    lambda t: "healthy",
], ids=["refusals", "stall-first", "preemptions", "always-healthy"])
def test_diagnose_rejects_wrong_rules(capsys, wrong):
    assert verdict(capsys, chk.check_diagnose, wrong).startswith("❌")
