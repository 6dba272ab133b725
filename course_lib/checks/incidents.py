"""Checks for lesson 07's exercise (the capstone incidents).

A fix is graded by running it: the learner's function turns the misconfigured
ServerConfig into a new one, the incident's trace runs through the real engine
on that configuration (course_lib.incidents, a deterministic cost-model clock),
and every target must be met, on the lesson's trace AND on a second trace drawn
the same way (a fix tuned to one trace by luck does not pass). The memory
budget may not change: it is what the hardware has.

The diagnosis task is checked on telemetry from real runs of the three
misconfigured servers and of healthy ones.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import replace
from functools import lru_cache

from course_lib.checks.core import Case, run_cases
from course_lib.incidents import ServerConfig, get_incident, telemetry_summary

SEEDS = (0, 1)
DIAGNOSES = ("fragmentation", "prefix-duplication", "prefill-stall", "healthy")

# The fixes the solutions use (one each; other fixes may pass too).
REFERENCE_FIXES = {
    "a": lambda c: replace(c, kv_store="paged", block_size=16),
    "b": lambda c: replace(c, prefix_caching=True),
    "c": lambda c: replace(c, policy="chunked", max_tokens_per_step=64),
}


@lru_cache(maxsize=1)
def _model():
    from course_lib.model import build_model
    return build_model()


def fix_report(key: str, fn, seed: int) -> str:
    """'all targets met', or why the configuration `fn` returns does not fix incident `key`."""
    inc = get_incident(key)
    config = fn(inc.config)
    if not isinstance(config, ServerConfig):
        return f"expected a ServerConfig (e.g. dataclasses.replace(config, ...)); got {type(config).__name__}"
    problems = inc.problems(config)
    if problems:
        return problems[0]
    with contextlib.redirect_stderr(io.StringIO()):          # one-time notices of the stores stay out of the verdict
        run = inc.run(_model(), config, seed)
    problems = inc.problems(config, run)
    return "; ".join(problems) if problems else "all targets met"


def _check_fix(key: str, fn, seeds) -> bool:
    cases = [Case(f"incident {key}, trace seed {s}", (s,), "all targets met") for s in seeds]
    return run_cases(f"fix_incident_{key}", lambda seed: fix_report(key, fn, seed), cases)


def check_fix_incident_a(fn, seeds=SEEDS) -> bool:
    """fn(config) -> a ServerConfig that fixes incident a (same kv_slots)."""
    return _check_fix("a", fn, seeds)


def check_fix_incident_b(fn, seeds=SEEDS) -> bool:
    """fn(config) -> a ServerConfig that fixes incident b (same kv_slots)."""
    return _check_fix("b", fn, seeds)


def check_fix_incident_c(fn, seeds=SEEDS) -> bool:
    """fn(config) -> a ServerConfig that fixes incident c (same kv_slots)."""
    return _check_fix("c", fn, seeds)


# ---- post-incident analysis ----------------------------------------------------------------------------------
def diagnosis_telemetry(key: str, config: ServerConfig | None, seed: int) -> dict:
    """The on-call view of one run: telemetry_summary plus the incident's SLO targets (ms)."""
    inc = get_incident(key)
    with contextlib.redirect_stderr(io.StringIO()):
        run = inc.run(_model(), config, seed)
    t = telemetry_summary(run)
    t["ttft_target_ms"] = 1e3 * inc.slo.ttft
    t["tbt_target_ms"] = 1e3 * inc.slo.tbt
    return t


@lru_cache(maxsize=1)
def diagnosis_cases() -> tuple:
    """(name, telemetry, label): the three misconfigured servers, and the three fixed ones (healthy)."""
    label = {"a": "fragmentation", "b": "prefix-duplication", "c": "prefill-stall"}
    out = []
    for key in "abc":
        out.append((f"incident {key}, misconfigured", diagnosis_telemetry(key, None, 0), label[key]))
    for key in "abc":
        fixed = REFERENCE_FIXES[key](get_incident(key).config)
        out.append((f"incident {key}, fixed", diagnosis_telemetry(key, fixed, 0), "healthy"))
    return tuple(out)


def check_diagnose(fn) -> bool:
    """fn(telemetry) -> one of DIAGNOSES: the root cause the telemetry points to."""
    cases = [Case(name, (dict(t),), want) for name, t, want in diagnosis_cases()]
    return run_cases("diagnose", fn, cases)


__all__ = ["check_fix_incident_a", "check_fix_incident_b", "check_fix_incident_c", "check_diagnose", "fix_report",
           "diagnosis_telemetry", "diagnosis_cases", "DIAGNOSES", "REFERENCE_FIXES", "SEEDS"]
