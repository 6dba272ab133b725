"""Lessons 06/07's panels and figures: real runs in, figures out, bad values as one red line."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

from course_lib.engine.disagg import serve_disaggregated
from course_lib.engine.priority import serve_priority
from course_lib.engine.queues import Ageing
from course_lib.labs.scheduling import two_class_trace
from course_lib.engine.slo import SLO
from course_lib.incidents import get_incident
from course_lib.plots import scheduling as plots
from course_lib.widgets.scheduling import incident_panel, run_scheduling, scheduling_panel
from helpers import one_thread, tiny_model  # noqa: F401 (an autouse fixture)

MODEL = tiny_model(seed=0, max_len=512)


def test_scheduling_panel_runs_and_reports_bad_values_in_red():
    panel = scheduling_panel(MODEL, trace="starvation", batching="chunked", queue="ageing", preempt=True,
                             max_running=4, budget=32)
    panel.refresh()
    assert "finished" in panel.message.value and "c62828" not in panel.message.value
    assert len(panel.figures) == 3 and all(len(f.data) for f in panel.figures)
    panel.controls["budget"].value = 0
    assert "c62828" in panel.message.value and "tokens per step" in panel.message.value
    panel.controls["budget"].value = 32
    panel.controls["queue"].value = "per-tenant fair share"                 # preempt is still ticked
    assert "thrash" in panel.message.value
    panel.controls["preempt"].value = False
    assert "finished" in panel.message.value
    panel.controls["ageing_rate"].value = -1.0
    assert "ageing rate" in panel.message.value


def test_disaggregated_choice_in_the_panel():
    res, slo = run_scheduling(MODEL, "deadlines", "disaggregated", "fcfs", 0.1, False, 2, 32)
    assert len(res.handovers) > 0 and len(res.finished) == len(res.requests)
    with pytest.raises(ValueError, match="queue policy"):
        run_scheduling(MODEL, "deadlines", "disaggregated", "edf", 0.1, False, 2, 32)


def test_incident_panel_keeps_the_memory_budget_and_says_when_fixed():
    panel = incident_panel(MODEL, "c")
    panel.refresh()
    assert "not fixed" in panel.message.value
    panel.controls["policy"].value = "chunked"
    panel.controls["max_tokens_per_step"].value = 64
    assert "all targets met" in panel.message.value
    assert "kv_slots" not in panel.controls                                 # the hardware's budget is not a knob
    panel.controls["block_size"].value = 7
    assert "block_size" in panel.message.value and "c62828" in panel.message.value


def test_every_figure_draws_from_real_results():
    trace = two_class_trace(n_high=6, n_low=2, high_output=4, low_output=4)
    a = serve_priority(MODEL, trace, queue="priority", preempt=True, max_running=2, clock="steps")
    b = serve_priority(MODEL, trace, queue=Ageing(0.2), max_running=2, clock="steps")
    d = serve_disaggregated(MODEL, trace, clock="steps")
    slo = SLO(ttft=10, tbt=2)
    figs = [plots.tradeoff([{"label": "x", "ttft": 1.0, "tbt": 2.0, "goodput": 0.5}], slo=slo),
            plots.latency_cdf({"a": a, "b": b}, slo=slo), plots.token_gaps({"a": a}, slo=slo),
            plots.waits_by_arrival({"a": a, "b": b}), plots.waits_by_arrival({"a": a}, metric="queue"),
            plots.request_gantt(a), plots.request_gantt(a, color_by="tenant"), plots.pipeline_gantt(d),
            plots.handover_whatif([{"link": "x", "delay_ms": 1.0, "tbt_p99_ms": 2.0, "ttft_p99_ms": 3.0}]),
            plots.table_figure(["a", "b"], [[1, 2]]),
            plots.before_after([{"run": "x", "m": 1}], [("m", "metric")])]
    assert all(isinstance(f, go.Figure) and len(f.data) > 0 for f in figs)
    with pytest.raises(ValueError, match="metric"):
        plots.waits_by_arrival({"a": a}, metric="tpot")
    inc = get_incident("c")
    fig = plots.telemetry(inc.run(MODEL))
    assert len(fig.data) >= 5
