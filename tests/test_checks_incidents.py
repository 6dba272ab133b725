"""Exercise 07's tasks on every case (public, hidden): right fixes written differently pass, plausible
wrong ones fail, and so does a diagnose() hard-coded on the telemetry the notebook prints; the hidden
diagnosis cases' labels by construction agree with the reference's rules."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace

import pytest

from checks_helpers import accepted, rejected
from course_lib.checks import incidents as chk
from course_lib.grading.hidden import incidents as hidden
from course_lib.grading.reference import references
from helpers import one_thread, verdict  # noqa: F401 (an autouse fixture)

LESSON = chk.LESSON
SOLUTION = "solutions/07_capstone_incident.ipynb"


def fix_a_smaller_blocks(config):
    return replace(config, kv_store="paged", block_size=8)


def fix_b_share_and_fewer_slots(config):
    return dataclasses.replace(config, prefix_caching=True, max_running=12)


def fix_c_rebuilt(config):
    fields = dataclasses.asdict(config)
    fields.update(policy="chunked", max_tokens_per_step=64)
    return type(config)(**fields)


def diagnose_table(t):
    rules = [("fragmentation", lambda: t["paradox_refusals"] > 0),
             ("prefix-duplication", lambda: t["preemptions"] and t["shared_prefix"] and t["prefix_hit_rate"] < 0.5),
             ("prefill-stall", lambda: t["tbt_p99_ms"] > t["tbt_target_ms"] and t["long_prefill_steps"])]
    return next((name for name, holds in rules if holds()), "healthy")


PRINTED = {}                                     # the public telemetry the notebook prints, as a lookup


def _fingerprint(t):
    return t["finished"], t["refusals"], t["preemptions"], round(t["kv_peak_use"], 6)


def diagnose_hard_coded(t):
    if not PRINTED:
        for name, tel in json.loads(chk.INPUTS.read_text())["diagnose"]:
            PRINTED[_fingerprint(tel)] = "healthy" if "fixed" in name else hidden.LABEL[name[9]]
    return PRINTED.get(_fingerprint(t), "healthy")


RIGHT = [("fix_incident_a", fix_a_smaller_blocks), ("fix_incident_b", fix_b_share_and_fewer_slots),
         ("fix_incident_c", fix_c_rebuilt), ("diagnose", diagnose_table)]
WRONG = [
    ("fix_incident_a", lambda c: replace(c, placement="best-fit")),
    ("fix_incident_a", lambda c: replace(c, kv_slots=4096)),                      # buys memory
    ("fix_incident_a", lambda c: replace(c, reservation="oracle")),
    ("fix_incident_b", lambda c: replace(c, preemption="swap")),
    ("fix_incident_b", lambda c: replace(c, max_running=8)),
    ("fix_incident_b", lambda c: {"prefix_caching": True}),                      # not a ServerConfig
    ("fix_incident_c", lambda c: replace(c, policy="decode-first")),
    ("fix_incident_c", lambda c: replace(c, max_tokens_per_step=64)),            # prefill-first, smaller budget
    ("fix_incident_c", lambda c: replace(c, policy="chunked", max_tokens_per_step=32)),   # TTFT on another trace
    ("diagnose", lambda t: "fragmentation" if t["refusals"] > 0 else "healthy"),  # any refusal is fragmentation
    ("diagnose", lambda t: "prefill-stall" if t["long_prefill_steps"] > 0 else diagnose_table(t)),  # stall first
    ("diagnose", lambda t: "prefix-duplication" if t["preemptions"] > 0 else diagnose_table(t)),
    ("diagnose", diagnose_hard_coded),
]


@pytest.mark.parametrize("task, fn", RIGHT, ids=lambda x: getattr(x, "__name__", x))
def test_right_answers_pass_every_case(task, fn):
    accepted(LESSON, task, fn)


@pytest.mark.parametrize("task, fn", WRONG, ids=lambda x: getattr(x, "__name__", x))
def test_plausible_wrong_answers_fail(task, fn):
    rejected(LESSON, task, fn)


def test_a_diagnosis_hard_coded_on_the_printed_telemetry_fails_only_hidden_cases(capsys):
    assert verdict(capsys, chk.check_diagnose, diagnose_hard_coded).startswith("✅")
    assert all(n.startswith("hidden:") for n in rejected(LESSON, "diagnose", diagnose_hard_coded))


def test_a_fix_tuned_to_the_public_traces_fails_a_hidden_one():
    bad = rejected(LESSON, "fix_incident_c", lambda c: replace(c, policy="chunked", max_tokens_per_step=32))
    assert bad == ["hidden: incident c, trace seed 4"]


def test_every_diagnosis_case_has_every_key_and_the_reference_agrees_with_its_label():
    keys = None
    diagnose = references(SOLUTION)["diagnose"]
    for name, t, label in hidden.labelled():
        keys = keys or set(t)
        assert set(t) == keys and "prefix_hit_rate" in t, name
        assert diagnose(dict(t)) == label, name
    for name, t in json.loads(chk.INPUTS.read_text())["diagnose"]:
        assert set(t) == keys, name


def test_the_fix_judge_rebuilds_the_config_and_rejects_forgeries():
    assert chk.judge_fix({"ServerConfig": {"kv_store": "nvme"}}, chk.TARGETS_MET, ["a", 0]).startswith("not a valid")
    assert chk.judge_fix({"kv_store": "paged"}, chk.TARGETS_MET, ["a", 0]).startswith("expected a ServerConfig")
    assert "kv_slots must stay" in chk.judge_fix(
        chk.probe_fix(lambda c: replace(c, kv_slots=2048), ["a"], {}), chk.TARGETS_MET, ["a", 0])


def test_the_shipped_telemetry_is_what_the_incidents_give_now():
    """`make exercises` computes the diagnosis cases' telemetry once; a change to the incidents must regenerate it."""
    public = dict((n, t) for n, t in json.loads(chk.INPUTS.read_text())["diagnose"])
    assert public["incident a, misconfigured"] == chk.diagnosis_telemetry("a", None, 0)
    shipped = {n: t for n, t, _ in hidden.labelled()}
    assert shipped["incident c, misconfigured, trace seed 2"] == chk.diagnosis_telemetry("c", None, 2)
