"""The capstone incidents: configurations, telemetry, and that each incident is real and fixable."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from course_lib.engine.slo import SLO
from course_lib.incidents import (INCIDENTS, IncidentRun, ServerConfig, build_store, get_incident, report, run_config,
                                  shared_prefix_len, stalls, telemetry_summary)
from course_lib.grading.reference import fix_functions
from course_lib.kv.base import KVAllocationError
from course_lib.model import build_model
from helpers import one_thread  # noqa: F401 (an autouse fixture)

MODEL = build_model()
REFERENCE_FIXES = fix_functions(Path(__file__).resolve().parents[1] / "solutions" / "07_capstone_incident.ipynb")
_RUNS: dict = {}


def runs(key: str) -> tuple[IncidentRun, IncidentRun]:
    """(misconfigured, fixed) runs of incident `key` on seed 0, computed once."""
    if key not in _RUNS:
        inc = get_incident(key)
        _RUNS[key] = (inc.run(MODEL), inc.run(MODEL, REFERENCE_FIXES[key](inc.config)))
    return _RUNS[key]


def test_config_validation():
    assert ServerConfig().kv_store == "paged"
    for bad, word in ((dict(kv_store="buddy"), "kv_store"), (dict(kv_slots=0), "kv_slots"),
                      (dict(block_size=7, kv_slots=1024), "block_size"), (dict(policy="lifo"), "policy"),
                      (dict(prefix_caching=1), "prefix_caching"), (dict(max_running=0), "max_running"),
                      (dict(reservation="exact"), "reservation"), (dict(preemption="drop"), "preemption")):
        with pytest.raises(ValueError, match=word):
            ServerConfig(**bad)
    c = ServerConfig(kv_store="contiguous", block_size=7)          # block size is not used by a contiguous arena
    assert c.changes(replace(c, policy="chunked", max_running=3)) == {"max_running": (8, 3)}
    with pytest.raises(ValueError, match="incident"):
        get_incident("z")


def test_monitored_store_logs_refusals_with_their_free_memory():
    store = build_store(MODEL, ServerConfig(kv_store="contiguous", kv_slots=64, reservation="oracle"))
    for i, n in enumerate((16, 16, 16, 16)):
        store.add(i, [1] * n, n)
    store.free(0)
    store.free(2)
    with pytest.raises(KVAllocationError):
        store.add(9, [1] * 20, 24)
    (r,) = store.refusals
    assert (r.requested, r.largest_free, r.total_free) == (24, 16, 32) and r.paradox
    paged = build_store(MODEL, ServerConfig(kv_slots=32, block_size=16))
    assert paged.max_model_len == 32                                 # no longer than the whole pool
    paged.add(0, [1] * 20, 32)
    with pytest.raises(KVAllocationError):
        paged.add(1, [1] * 20, 32)
    assert not paged.refusals[0].paradox                             # paged: no external fragmentation


@pytest.mark.parametrize("key", sorted(INCIDENTS))
def test_each_incident_is_real_and_its_reference_fix_meets_every_target(key):
    inc = get_incident(key)
    bad, good = runs(key)
    assert not all(ok for _, ok in inc.evaluate(bad)), f"incident {key} is not broken"
    assert all(ok for _, ok in inc.evaluate(good)), report(inc, good)
    assert inc.problems(good.config, good) == []
    assert bad.result.outputs() == good.result.outputs()             # a fix never changes a token
    assert "{" not in inc.render_ticket(bad) and "✅" in report(inc, good)
    for run in (bad, good):                                           # telemetry adds up
        for s in run.samples:
            assert 0 <= s.token_states + s.reserved + s.internal + s.external <= run.capacity
            assert s.largest_free <= run.capacity and s.waiting >= 0
        assert len(run.samples) == len(run.result.steps)


def test_the_symptoms_are_the_ones_the_tickets_describe():
    a_bad, a_good = runs("a")
    assert a_bad.metrics()["paradox_refusals"] > 0 and a_bad.metrics()["free_at_refusal"] > 0.2
    assert a_good.metrics()["paradox_refusals"] == 0 and "first paradox" in a_bad.maps
    b_bad, b_good = runs("b")
    mb, mg = b_bad.metrics(), b_good.metrics()
    assert mb["preemptions"] > mg["preemptions"] and mb["recomputed_tokens"] > 0 and mb["kv_peak_use"] == 1.0
    assert mb["shared_prefix"] >= 64 and mg["prefix_hit_rate"] > 0.5
    c_bad, c_good = runs("c")
    worst = stalls(c_bad, get_incident("c").slo.tbt)
    assert worst and all(s["prefill_tokens"] >= 100 and s["preempted"] == 0 for s in worst)
    assert stalls(c_good, get_incident("c").slo.tbt) == []
    t = telemetry_summary(c_bad)
    assert t["paradox_refusals"] == 0 and t["preemptions"] == 0 and t["long_prefill_steps"] > 0


def test_plausible_wrong_fix_fails():
    inc = get_incident("c")
    run = inc.run(MODEL, replace(inc.config, policy="decode-first"))
    assert not all(ok for _, ok in inc.evaluate(run))
    assert inc.problems(replace(inc.config, kv_slots=8192)) and "kv_slots" in inc.problems(replace(inc.config, kv_slots=8192))[0]


def test_shared_prefix_len():
    assert shared_prefix_len([[1, 2, 3, 4], [1, 2, 3, 9], [1, 2, 7]]) == 3
    assert shared_prefix_len([[1, 2], [3, 4], [5]]) == 0
    assert shared_prefix_len([[1]]) == 0


def test_run_config_rejects_a_dict():
    with pytest.raises(ValueError, match="ServerConfig"):
        run_config(MODEL, {"kv_store": "paged"}, [], SLO(1, 1))


def test_tickets_targets_and_dashboards_agree():
    """Every latency target a fix is graded on is the incident's SLO (the dashboard's target line),
    and a ticket types no latency of its own: its numbers come from the run or the SLO."""
    import re
    for key, inc in INCIDENTS.items():
        for t in inc.targets:
            if t.metric.startswith("ttft_"):
                assert t.bound == pytest.approx(1e3 * inc.slo.ttft), (key, t)
            if t.metric.startswith("tbt_"):
                assert t.bound == pytest.approx(1e3 * inc.slo.tbt), (key, t)
        assert re.search(r"\d\s*ms", inc.ticket) is None, (key, inc.ticket)


def test_vllm_flags_and_metric_names():
    from course_lib.incidents import VLLM_METRICS, vllm_metrics
    cfg = ServerConfig(kv_slots=512, block_size=16, max_running=4, max_tokens_per_step=64, prefix_caching=True)
    flags = cfg.vllm_flags()
    for want in ("--num-gpu-blocks-override 32", "--block-size 16", "--enable-prefix-caching", "--enable-chunked-prefill",
                 "--max-num-seqs 4", "--max-num-batched-tokens 64"):
        assert any(f.startswith(want) for f in flags), (want, flags)
    assert cfg.vllm_command().startswith("vllm serve ") and "\\\n    --block-size 16" in cfg.vllm_command()
    contiguous = ServerConfig(kv_store="contiguous", policy="prefill-first", preemption="recompute").vllm_flags()
    assert any("no vLLM equivalent" in f for f in contiguous) and any("prefill-first" in f for f in contiguous)
    assert all(k.startswith("vllm:") for k in VLLM_METRICS)
    prompt = [5] * 40
    reqs = [__import__("course_lib.engine.priority", fromlist=["PriorityRequest"]).PriorityRequest(
        prompt + [i], 3, arrival=0.0, rid=i, eos_id=None) for i in range(3)]
    run = run_config(MODEL, cfg, reqs, SLO(1, 1))
    got = vllm_metrics(run)
    assert list(got) == list(VLLM_METRICS)
    assert 0 < got["vllm:prefix_cache_hits"] <= got["vllm:prefix_cache_queries"]
    assert 0 < got["vllm:kv_cache_usage_perc (max)"] <= 1 and got["vllm:num_requests_running (max)"] <= 4
