"""Exercise 07's hidden cases: more traces for every fix, more telemetry for diagnose.

Fix seeds: traces drawn the same way as the public ones (seeds 0, 1), on which the
lesson's fix of each incident meets every target (a fix tuned to seeds 0 and 1 by luck
does not). Diagnosis: telemetry of the misconfigured servers on other traces, of the
reference fixes, of other misconfigurations with the same root cause, and a few
made-up dashboards on the rules' edges (the rules are tried in the task's order).
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

from course_lib.checks.core import Case

# the hidden diagnosis runs' telemetry, computed by `make exercises` (each run takes seconds)
RUNS_FILE = Path(__file__).with_name("incidents_telemetry.json")

FIX_SEEDS = {"a": (2, 5), "b": (3, 4), "c": (2, 4)}
LABEL = {"a": "fragmentation", "b": "prefix-duplication", "c": "prefill-stall"}


def _synthetic() -> list[tuple[str, dict, str]]:
    base = {"finished": 30, "rejected": 0, "refusals": 0, "paradox_refusals": 0, "free_at_refusal": 0.0,
            "preemptions": 0, "recomputed_tokens": 0, "kv_peak_use": 0.5, "ttft_p90_ms": 100.0, "ttft_p99_ms": 150.0,
            "tbt_p50_ms": 12.0, "tbt_p99_ms": 30.0, "max_waiting": 2, "shared_prefix": 0, "prefix_hit_rate": 0.0,
            "long_prefill_steps": 0, "ttft_target_ms": 500.0, "tbt_target_ms": 40.0}
    return [
        ("made up: one refusal with enough memory free", {**base, "refusals": 3, "paradox_refusals": 1,
                                                         "free_at_refusal": 0.3}, "fragmentation"),
        ("made up: a shared prefix that the cache does find", {**base, "preemptions": 4, "shared_prefix": 64,
                                                              "prefix_hit_rate": 0.9}, "healthy"),
        ("made up: both prefix duplication and stalls (the earlier rule wins)",
         {**base, "preemptions": 6, "shared_prefix": 80, "tbt_p99_ms": 70.0, "long_prefill_steps": 4},
         "prefix-duplication"),
        ("made up: slow steps with prompt tokens but the tail within target",
         {**base, "tbt_p99_ms": 39.0, "long_prefill_steps": 3}, "healthy"),
        ("made up: the tail misses, no step with prompt tokens was slow", {**base, "tbt_p99_ms": 55.0}, "healthy"),
        ("made up: stalls", {**base, "tbt_p99_ms": 41.0, "long_prefill_steps": 1}, "prefill-stall"),
    ]


def diagnosis_runs(refs: dict) -> list[tuple[str, str, object, int, str]]:
    """(name, incident, config or None, trace seed, the label by construction) of the hidden real runs."""
    from course_lib.incidents import get_incident
    runs = [(f"incident {k}, misconfigured, trace seed {s}", k, None, s, LABEL[k]) for s in (1, 2) for k in "abc"]
    runs += [(f"incident {k}, the reference fix, trace seed 1", k, refs[f"fix_incident_{k}"](get_incident(k).config),
              1, "healthy") for k in "abc"]
    runs += [
        ("incident a with best-fit placement (still contiguous)", "a",
         replace(get_incident("a").config, placement="best-fit"), 0, "fragmentation"),
        ("incident b with fewer batch slots (still no prefix cache)", "b",
         replace(get_incident("b").config, max_running=12), 0, "prefix-duplication"),
        ("incident c with an even larger token budget", "c",
         replace(get_incident("c").config, max_tokens_per_step=1024), 0, "prefill-stall"),
    ]
    return runs


def telemetry(refs: dict) -> dict:
    """{"runs": [[name, telemetry, label by construction], ...]}: what RUNS_FILE holds."""
    from course_lib.checks.incidents import diagnosis_telemetry
    return {"runs": [[name, diagnosis_telemetry(key, config, s), label]
                     for name, key, config, s, label in diagnosis_runs(refs)]}


def labelled(refs: dict | None = None) -> list[tuple[str, dict, str]]:
    """(name, telemetry, label by construction) of every hidden diagnosis case."""
    runs = json.loads(RUNS_FILE.read_text(encoding="utf-8")) if RUNS_FILE.is_file() else telemetry(refs)
    return [tuple(r) for r in runs["runs"]] + _synthetic()


def cases(rng: random.Random, refs: dict | None = None) -> dict[str, list[Case]]:
    diag = [Case(name, (t,)) for name, t, _ in labelled(refs)]
    out = {f"fix_incident_{k}": [Case(f"incident {k}, trace seed {s}", (k, s)) for s in FIX_SEEDS[k]] for k in "abc"}
    out["diagnose"] = diag
    return out


def public_inputs(refs: dict) -> dict:
    """The public diagnosis cases' telemetry (checks/expected/07_capstone_incident.inputs.json): the three
    misconfigured servers and the three reference fixes, on trace seed 0."""
    from course_lib.checks.incidents import diagnosis_telemetry
    from course_lib.incidents import get_incident
    rows = [(f"incident {k}, misconfigured", diagnosis_telemetry(k, None, 0)) for k in "abc"]
    rows += [(f"incident {k}, fixed", diagnosis_telemetry(k, refs[f"fix_incident_{k}"](get_incident(k).config), 0))
             for k in "abc"]
    return {"diagnose": [[name, t] for name, t in rows]}
