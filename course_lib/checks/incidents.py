"""Exercise 07 (the capstone incidents): the tasks, their public cases, the check cells' functions,
and the probe and judge of the fixes.

A fix is judged by running it: the learner's function turns the misconfigured
ServerConfig into a new one; the kernel prints that configuration as plain data;
the judge builds it again and runs the incident's trace through the real engine
(course_lib.incidents, a deterministic cost-model clock) in the grader's process.
Every target must be met, on the lesson's trace and on other traces drawn the
same way. The memory budget (kv_slots) may not change: it is what the hardware has.

`diagnose` is checked on telemetry of real runs: the public cases' telemetry ships
in checks/expected/07_capstone_incident.inputs.json (written by `make exercises`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from functools import lru_cache
from pathlib import Path

from course_lib.checks.core import Case, Task, dumps, encode, practice, raised

LESSON = "07_capstone_incident"
SEEDS = (0, 1)
DIAGNOSES = ("fragmentation", "prefix-duplication", "prefill-stall", "healthy")
TARGETS_MET = "all targets met"
INPUTS = Path(__file__).with_name("expected") / f"{LESSON}.inputs.json"


@lru_cache(maxsize=1)
def _model():
    from course_lib.model import build_model
    return build_model()


def _config_data(config) -> dict:
    from course_lib.incidents import ServerConfig
    if not isinstance(config, ServerConfig):
        return {"__object__": type(config).__name__}
    return {"ServerConfig": {f.name: encode(getattr(config, f.name)) for f in dataclasses.fields(config)}}


def probe_fix(fn, args_data, kwargs_data):
    """fn(the incident's misconfigured ServerConfig) -> its fix, as data."""
    from course_lib.incidents import get_incident
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return _config_data(fn(get_incident(args_data[0]).config))
    except Exception as exc:
        return raised(exc)


def fix_report(key: str, config, seed: int) -> str:
    """'all targets met', or why `config` does not fix incident `key` on trace `seed`."""
    from course_lib.incidents import ServerConfig, get_incident
    inc = get_incident(key)
    if not isinstance(config, ServerConfig):
        return f"expected a ServerConfig (e.g. dataclasses.replace(config, ...)); got {type(config).__name__}"
    problems = inc.problems(config)
    if problems:
        return problems[0]
    with contextlib.redirect_stderr(io.StringIO()):          # one-time notices of the stores stay out of the verdict
        run = inc.run(_model(), config, seed)
    problems = inc.problems(config, run)
    return "; ".join(problems) if problems else TARGETS_MET


def judge_fix(got, want, args) -> str:
    """Build the configuration again and run the incident here."""
    from course_lib.incidents import ServerConfig
    key, seed = args
    if not (isinstance(got, dict) and isinstance(got.get("ServerConfig"), dict)):
        return f"expected a ServerConfig (e.g. dataclasses.replace(config, ...)); got {dumps(got)[:120]}"
    try:
        config = ServerConfig(**got["ServerConfig"])
    except (TypeError, ValueError) as exc:
        return f"not a valid ServerConfig: {exc}"
    return fix_report(key, config, seed)


def diagnosis_telemetry(key: str, config=None, seed: int = 0) -> dict:
    """The on-call view of one run: telemetry_summary plus the incident's SLO targets (ms). Every key is
    there for every store (prefix_hit_rate is 0.0 where there is no prefix cache)."""
    from course_lib.incidents import get_incident, telemetry_summary
    inc = get_incident(key)
    with contextlib.redirect_stderr(io.StringIO()):
        run = inc.run(_model(), config, seed)
    t = telemetry_summary(run)
    t.setdefault("prefix_hit_rate", 0.0)
    t["ttft_target_ms"] = 1e3 * inc.slo.ttft
    t["tbt_target_ms"] = 1e3 * inc.slo.tbt
    return t


def _diagnosis_cases() -> list[Case]:
    if not INPUTS.is_file():
        return []
    return [Case(name, (t,)) for name, t in json.loads(INPUTS.read_text(encoding="utf-8"))["diagnose"]]


def _fix_task(key: str) -> Task:
    return Task(f"fix_incident_{key}", [Case(f"incident {key}, trace seed {s}", (key, s)) for s in SEEDS],
                probe="course_lib.checks.incidents:probe_fix", judge="course_lib.checks.incidents:judge_fix",
                goal=TARGETS_MET)


TASKS = {t.name: t for t in [_fix_task("a"), _fix_task("b"), _fix_task("c"), Task("diagnose", _diagnosis_cases())]}


def check_fix_incident_a(fn) -> None:
    """fn(config) -> a ServerConfig that fixes incident a (same kv_slots)."""
    practice(LESSON, TASKS["fix_incident_a"], fn)


def check_fix_incident_b(fn) -> None:
    """fn(config) -> a ServerConfig that fixes incident b (same kv_slots)."""
    practice(LESSON, TASKS["fix_incident_b"], fn)


def check_fix_incident_c(fn) -> None:
    """fn(config) -> a ServerConfig that fixes incident c (same kv_slots)."""
    practice(LESSON, TASKS["fix_incident_c"], fn)


def check_diagnose(fn) -> None:
    """fn(telemetry) -> one of DIAGNOSES: the root cause the telemetry points to."""
    practice(LESSON, TASKS["diagnose"], fn)
