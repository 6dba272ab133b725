"""Lesson 03's figures and panel: they read a real engine run and never crash on bad input."""

from __future__ import annotations

import pytest

from course_lib.engine import PrefillFirst, Request, serve
from course_lib.plots.timeline import (SLOT_STATES, latency_boxes, step_breakdown, step_durations, timeline,
                                       tokens_per_step)
from course_lib.widgets.batching import batching_panel, make_requests, request_table
from helpers import one_thread, tiny_model  # noqa: F401 (an autouse fixture)

MODEL = tiny_model(seed=2, layers=1, max_len=128)


@pytest.fixture(scope="module")
def runs():
    reqs = [Request([65] * 3, 6, rid=0, eos_id=None), Request([66] * 3, 2, rid=1, eos_id=None),
            Request([67] * 4, 3, arrival=2, rid=2, eos_id=None)]
    return {"static": serve(MODEL, reqs, policy="static", max_running=2, clock="steps"),
            "prefill-only": serve(MODEL, reqs, policy=PrefillFirst(mix_decodes=False), max_running=3, clock="steps")}


def test_timeline_cells_follow_the_slots(runs):
    res = runs["static"]
    fig = timeline(res)
    z = fig.data[0].z
    assert len(z) == 2 and len(z[0]) == len(res.steps)
    for j, step in enumerate(res.steps):
        for slot, rid, kind in step.slots:
            assert SLOT_STATES[z[slot][j]] == kind
            assert fig.data[0].text[slot][j] == str(rid)
    assert SLOT_STATES.index("held") in {v for row in z for v in row}
    pf = timeline(runs["prefill-only"], x="time")
    assert SLOT_STATES.index("stalled") in {v for row in pf.data[0].z for v in row}
    with pytest.raises(ValueError, match="x"):
        timeline(res, x="slot")


def test_other_figures_build(runs):
    boxes = latency_boxes(runs, metrics=("ttft", "tpot", "max_gap"))
    assert len(boxes.data) == 2 * 3
    with pytest.raises(ValueError, match="metrics"):
        latency_boxes(runs, metrics=("speed",))
    assert len(step_breakdown(runs).data) == 4
    assert len(tokens_per_step(runs).data) == 2
    assert len(step_durations(runs).data) == 2
    table = request_table(runs["static"])
    assert list(table.data[0].cells.values[0]) == [0, 1, 2]


def test_make_requests_broadcasts_and_validates():
    reqs = make_requests([3], [2, 5], [0])
    assert [len(r.prompt) for r in reqs] == [3, 3] and [r.max_new_tokens for r in reqs] == [2, 5]
    with pytest.raises(ValueError, match="arrival steps"):
        make_requests([3, 3, 3], [2], [0, 1])


def test_panel_runs_the_engine_and_shows_errors_in_red():
    panel = batching_panel(MODEL, prompt_lens="4, 4, 2", output_lens="6, 5, 2", arrivals="0, 0, 3", max_running=2)
    panel.refresh()
    assert "steps" in panel.message.value and "c62828" not in panel.message.value
    assert len(panel.figure_box.children) == 2
    for name, bad, msg in (("prompt_lens", "4, x", "prompt lengths"), ("max_running", 0, "batch slots"),
                           ("arrivals", "0, 1", "arrival steps"), ("budget", 10_000, "tokens per step")):
        old = panel.controls[name].value
        panel.controls[name].value = bad
        assert "c62828" in panel.message.value and msg in panel.message.value, panel.message.value
        panel.controls[name].value = old
    panel.controls["kv_capacity"].value = 7                 # 4 + 6 tokens can never fit in 7 slots
    assert "rejected" in panel.message.value
    panel.controls["policy"].value = "static (request-level)"
    assert "c62828" not in panel.message.value


def test_panel_table_reads_whole_and_the_legend_clears_the_axis_title():
    panel = batching_panel(MODEL, prompt_lens="4, 4", output_lens="3, 2", arrivals="0, 1", max_running=2, kv_capacity=9)
    panel.refresh()
    timeline_fig, table = panel.figures
    for head in ("request", "first token", "TTFT", "TPOT", "preempted", "state"):   # whole headers, HTML
        assert f">{head}<" in table.value, head
    assert ">0<" in table.value and ">1<" in table.value                             # every row label
    legend = timeline_fig.layout.legend
    assert legend.yref == "container" and legend.yanchor == "bottom" and legend.y == 0
    assert timeline_fig.layout.margin.b >= 130
