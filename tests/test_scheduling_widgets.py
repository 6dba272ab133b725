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
    table, cdf, gantt = panel.figures
    assert "time to first token" in table.value and "p99" in table.value       # an HTML table, every label drawn
    assert len(cdf.data) and len(gantt.data)
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


# ---- ScheduleOnly: the panels' fast runs show what runs of the model show ------------------------------------
def shown(panel):
    """What a learner reads off a panel: its message (without the kernel's timing), note and figures."""
    import re

    import ipywidgets as W

    figs = []
    for f in panel.figures[: len(panel.figure_box.children)]:
        if isinstance(f, W.HTML):
            figs.append(f.value)
        else:
            js = f.to_plotly_json()
            figs.append([[{k: v for k, v in t.items() if k != "uid"} for t in js["data"]], js["layout"]])
    return re.sub(r' data-kernel-ms="\d+"', "", panel.message.value), panel.note.value, figs


SCHEDULING_SETTINGS = [
    {}, {"batching": "chunked prefill"}, {"batching": "decode-first"}, {"batching": "prefill-only steps"},
    {"batching": "disaggregated (prefill engine + decode engine)"}, {"budget": 16},
    {"trace": "two classes: a high-priority stream (step clock)", "queue": "priority", "preempt": True},
    {"trace": "two classes: a high-priority stream (step clock)", "queue": "ageing", "ageing_rate": 0.2},
    {"trace": "interactive deadlines + batch (step clock)", "queue": "sjf"},
    {"trace": "interactive deadlines + batch (step clock)", "queue": "edf"},
    {"trace": "documents while 16 streams decode (cost-model clock)", "max_running": 16, "budget": 128},
    {"trace": "interactive deadlines + batch (step clock)", "queue": "fair-share"},
]


def _set(panel, values: dict):
    from course_lib.widgets.scheduling import QUEUES

    label = {name: text for text, name in QUEUES.items()}
    for name, value in values.items():
        panel.controls[name].value = label[value] if name == "queue" else value


@pytest.fixture
def forward_steps(monkeypatch):
    """How many steps ScheduleOnly and TinyLM itself answered, so a test knows that the fast panel
    and the panel with compute_tokens=True each really ran the path it compares."""
    from course_lib.widgets.scheduling import ScheduleOnly

    calls = {"stand-in": 0, "model": 0}
    for cls, key in ((ScheduleOnly, "stand-in"), (type(MODEL), "model")):
        def counted(self, *args, _inner=cls.forward_ctx, _key=key, **kwargs):
            calls[_key] += 1
            return _inner(self, *args, **kwargs)
        monkeypatch.setattr(cls, "forward_ctx", counted)
    return calls


def test_scheduling_panel_without_the_forward_pass_shows_what_a_model_run_shows(forward_steps):
    fast = scheduling_panel(MODEL, trace="documents", max_running=4, budget=64)
    slow = scheduling_panel(MODEL, trace="documents", max_running=4, budget=64, compute_tokens=True)
    for panel in (fast, slow):
        panel.refresh()
    base = {"trace": "chat + long documents (cost-model clock)", "batching": "prefill-first", "queue": "fcfs",
            "preempt": False, "ageing_rate": 0.1, "max_running": 4, "budget": 64}
    for values in SCHEDULING_SETTINGS:
        for panel in (fast, slow):
            _set(panel, {k: v for k, v in base.items() if k not in values})
            _set(panel, values)
        assert fast.state == slow.state == "ok", (values, fast.message.value)
        assert shown(fast) == shown(slow), values
    assert forward_steps["stand-in"] > 100 and forward_steps["model"] > 100, forward_steps


@pytest.mark.parametrize("key, changes", [
    ("a", [{}, {"kv_store": "paged"}, {"placement": "best-fit"}]),
    ("b", [{}, {"prefix_caching": True}, {"preemption": "swap"}, {"policy": "prefill-first"}]),
    ("c", [{}, {"policy": "chunked", "max_tokens_per_step": 64}, {"max_running": 4}]),
])
def test_incident_panel_without_the_forward_pass_shows_what_a_model_run_shows(key, changes, forward_steps):
    fast, slow = incident_panel(MODEL, key), incident_panel(MODEL, key, compute_tokens=True)
    for panel in (fast, slow):
        panel.refresh()
    for values in changes:
        for panel in (fast, slow):
            for name, value in values.items():
                panel.controls[name].value = value
        assert fast.state == slow.state == "ok", (values, fast.message.value)
        assert shown(fast) == shown(slow), values
    assert forward_steps["stand-in"] > 100 and forward_steps["model"] > 100, forward_steps


@pytest.mark.slow
def test_lesson_panels_on_tinylm_itself():
    """The same with the course's trained TinyLM, on the settings lessons 06 and 07 open with."""
    from course_lib.model import build_model

    model = build_model()
    pairs = [(scheduling_panel(model, trace="documents", batching="chunked", budget=64),
              scheduling_panel(model, trace="documents", batching="chunked", budget=64, compute_tokens=True))]
    pairs += [(incident_panel(model, key), incident_panel(model, key, compute_tokens=True)) for key in "bc"]
    for fast, slow in pairs:
        fast.refresh()
        slow.refresh()
        assert fast.state == "ok" and shown(fast) == shown(slow)


def test_schedule_only_is_used_only_where_no_token_value_matters():
    from course_lib.engine import Request
    from course_lib.engine.slo import gpu_like_clock
    from course_lib.widgets.scheduling import ScheduleOnly, uses_no_token_values

    fixed, stops = Request([65, 66], 3, eos_id=None), Request([65, 66], 3)
    assert uses_no_token_values([fixed], "steps") and uses_no_token_values([fixed], gpu_like_clock())
    assert not uses_no_token_values([fixed], "measured")                 # a measured clock times the model
    assert not uses_no_token_values([fixed, stops], "steps")             # a request that may stop on <EOS>
    stand_in = ScheduleOnly(MODEL)
    assert stand_in.config is MODEL.config and stand_in.device == MODEL.device
    import torch
    logits = stand_in.forward_ctx(torch.tensor([[65, 66, 67]]), None, None)
    assert logits.shape == (1, 3, MODEL.config.vocab_size) and not logits.any()


def test_panels_answer_a_setting_seen_before_from_their_cache():
    panel = incident_panel(MODEL, "c")
    panel.refresh()
    calls = []
    inner = panel.update
    panel.update = lambda **v: calls.append(v) or inner(**v)
    panel.controls["policy"].value = "chunked"
    panel.controls["policy"].value = "prefill-first"                      # the first setting again: cached
    panel.controls["policy"].value = "chunked"
    assert len(calls) == 1 and panel.state == "ok"
