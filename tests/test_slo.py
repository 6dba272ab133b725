"""SLO metrics: percentiles, per-request verdicts, attainment and goodput."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib.engine import Request, State
from course_lib.engine.slo import (SLO, gaps, gpu_like_clock, meets, percentiles, slo_report, tbt_of, ttft_of,
                                   compare)


def req(arrival, times, state=State.FINISHED, rid=0):
    r = Request([1], max(1, len(times)), arrival=arrival, rid=rid)
    r.token_times, r.state = list(times), state
    r.finish_time = times[-1] if times else None
    return r


def test_percentiles_nearest_rank():
    xs = list(range(1, 101))
    assert percentiles(xs) == {"p50": 50, "p90": 90, "p99": 99}
    assert percentiles([7.0]) == {"p50": 7.0, "p90": 7.0, "p99": 7.0}
    assert all(math.isnan(v) for v in percentiles([]).values())
    assert percentiles([3, 1, 2], qs=(0, 100)) == {"p0": 1, "p100": 3}


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.floats(0, 1e3, allow_nan=False), min_size=1, max_size=50))
def test_percentiles_are_order_statistics(xs):
    p = percentiles(xs, qs=(10, 50, 90, 99))
    assert list(p.values()) == sorted(p.values())
    for q, v in zip((10, 50, 90, 99), p.values()):
        assert v in xs
        assert sum(x <= v for x in xs) >= q / 100 * len(xs)          # at least q% at or below
        assert sum(x < v for x in xs) < q / 100 * len(xs) or q == 0   # and it is the smallest such value


def test_per_request_judgement():
    r = req(0.0, [0.1, 0.12, 0.14, 0.5, 0.52, 0.54])               # one stall
    assert ttft_of(r) == 0.1 and tbt_of(r, "max") == pytest.approx(0.36)
    assert tbt_of(r, "mean") == pytest.approx(0.088)
    assert not meets(r, SLO(0.5, 0.1)) and meets(r, SLO(0.5, 0.1, per_request="mean"))
    assert meets(req(1.0, [1.5, 1.625, 1.75]), SLO(0.5, 0.125))        # on the targets counts
    assert meets(req(0.0, [0.3]), SLO(0.5, 0.001))                     # one token: TTFT only
    assert not meets(req(0.0, []), SLO(0.5, 0.1))
    assert not meets(req(0.0, [0.1, 0.2], state=State.REJECTED), SLO(0.5, 0.1))
    assert gaps([1, 3, 6]) == [2, 3] and tbt_of(req(0, [1])) is None


def test_report_attainment_and_goodput():
    reqs = [req(0.0, [0.1, 0.2, 0.3], rid=0), req(0.0, [0.9, 1.0], rid=1), req(1.0, [1.1, 1.9, 2.0], rid=2),
            req(1.0, [1.2, 1.3, 1.4, 4.0], rid=3)]
    rep = slo_report(SimpleNamespace(requests=reqs), SLO(0.5, 0.2))
    assert rep.met == 1 and rep.met_rids == [0] and rep.attainment == 0.25
    assert rep.makespan == 4.0 and rep.goodput == 0.25
    assert rep.ttft["p50"] == pytest.approx(0.1) and rep.ttft["p99"] == pytest.approx(0.9)
    assert rep.tbt["p99"] == pytest.approx(2.6) and len(rep.tbt_values) == 2 + 1 + 2 + 3
    row = rep.row("x")
    assert row["slo_met"] == "1/4" and "ttft_p90" in row
    text = compare({"a": SimpleNamespace(requests=reqs)}, SLO(0.5, 0.2), scale=1e3, unit="ms")
    assert "TTFT p99 (ms)" in text and "1/4" in text


def test_bad_slo():
    for bad in (dict(ttft=0, tbt=1), dict(ttft=1, tbt=-1), dict(ttft=1, tbt=1, per_request="median"),
                dict(ttft=float("nan"), tbt=1)):
        with pytest.raises(ValueError):
            SLO(**bad)
    with pytest.raises(ValueError, match="slo"):
        slo_report(SimpleNamespace(requests=[]), (1, 2))


def test_gpu_like_clock_is_deterministic_and_charges_prefill():
    c = gpu_like_clock()
    decode = c.cost(0.123, 8, 8)
    prefill = c.cost(9.9, 8 + 200, 9)
    assert decode == c.cost(0.0, 8, 8) and prefill > 4 * decode
