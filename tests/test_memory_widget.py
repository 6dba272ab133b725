"""Lesson 02's panel logic and figures: validation, measured numbers, what the figures draw."""

from __future__ import annotations

import pytest

from course_lib.kv.contiguous import ContiguousKVStore
from course_lib.kv.replay import PAPER_FIGURE2, replay
from course_lib.plots.memory import memory_bar, memory_map, usage_over_time, waste_breakdown
from course_lib.widgets.memory import fragmentation_report, parse_pairs
from course_lib.workloads import trace_from_lengths


def test_parse_pairs():
    assert parse_pairs("20:60, 100:40 8:1") == [(20, 60), (100, 40), (8, 1)]
    for bad, name in [("", "lengths"), ("20-60", "prompt:output"), ("0:5", "prompt"), ("250:10", "output"),
                      ("a:b", "prompt")]:
        with pytest.raises(ValueError, match=name):
            parse_pairs(bad)


@pytest.mark.parametrize("args, name", [
    (("ShareGPT-like", "", 0, 5.0, 2000, "pow2", "first-fit"), "requests"),
    (("ShareGPT-like", "", 10, 0, 2000, "pow2", "first-fit"), "rate"),
    (("ShareGPT-like", "", 10, "fast", 2000, "pow2", "first-fit"), "rate"),
    (("ShareGPT-like", "", 10, 5.0, 100, "pow2", "first-fit"), "arena slots"),
    (("ShareGPT-like", "", 10, 5.0, 2000, "most", "first-fit"), "reservation"),
    (("ShareGPT-like", "", 10, 5.0, 2000, "pow2", "worst-fit"), "placement"),
    (("Wiki", "", 10, 5.0, 2000, "pow2", "first-fit"), "source"),
])
def test_report_rejects_bad_values_with_the_parameter_name(args, name):
    with pytest.raises(ValueError, match=name):
        fragmentation_report(*args)


def test_report_on_my_lengths_finds_the_paradox():
    result, status, paradox = fragmentation_report("my lengths", "60:60, 20:20, 30:60, 24:20", 0, 1000.0,
                                                   256, "oracle", "first-fit")
    assert result.complete and "refused admissions" in status
    assert paradox is not None and paradox.total_free >= paradox.requested > paradox.largest_free


def test_report_on_a_trace_measures_every_category():
    result, status, _ = fragmentation_report("ShareGPT-like", "", 40, 5.0, 1966, "max", "buddy")
    shares = result.shares()
    assert shares["internal"] > shares["token_states"] > 0          # Max: mostly never-used slots
    assert f"token states {shares['token_states']:.0%}" in status


def test_figures_draw_what_the_store_holds():
    s = ContiguousKVStore(1, 1, 1, capacity=64, placement="buddy", max_model_len=32)
    s.add(0, [1] * 3, 5)
    s.cached[0] = 3
    fig = memory_bar(s.memory_map(), 64, request=40)
    drawn = {(t.name, t.base[0], t.x[0]) for t in fig.data}
    assert ("token states", 0, 3) in drawn and ("reserved (future tokens)", 3, 2) in drawn
    assert ("allocator rounding (buddy)", 5, 3) in drawn
    assert ("external fragmentation", 8, 8) in drawn and ("free", 32, 32) not in drawn   # 32 < 40 too
    res = replay(trace_from_lengths([(4, 4), (2, 2), (4, 4), (6, 6)]), ContiguousKVStore(1, 1, 1, capacity=28),
                 step_time=1.0, snapshot_every=1)
    names = {t.name for t in memory_map(res).data}
    assert {"token states", "reserved (future tokens)", "hole too small for the waiting request"} <= names
    assert len(usage_over_time(res, max_points=3).data[0].x) <= 3


def test_waste_breakdown_puts_paper_and_measured_side_by_side():
    measured = {"max": {"token_states": 0.2, "reservation": 0.1, "internal": 0.6, "external_and_others": 0.1}}
    fig = waste_breakdown(measured, PAPER_FIGURE2)
    bottom = fig.data[0]
    assert list(bottom.x[1]) == ["paper", "measured"] and list(bottom.y) == [20.4, 20.0]
    assert [t.name for t in fig.data] == ["token states", "reservation", "internal fragmentation",
                                          "external frag. & others"]


def test_panel_shows_the_paradox_above_the_map_and_drops_it_when_its_cause_is_gone():
    from course_lib.widgets.memory import fragmentation_panel

    panel = fragmentation_panel()                                   # ShareGPT-like, pow2, 1966 slots: refusals
    children = list(panel.box.children)
    assert children.index(panel.note) < children.index(panel.figure_box)
    assert "was refused, although" in panel.note.value and "course-note" in panel.note.value
    assert panel.output.outputs == ()                                # nothing left below the figures
    panel.controls["arena_slots"].value = 16_384                    # nobody waits: no refusal, no note
    assert panel.note.value == "" and "0 refused admissions" in panel.message.value
    panel.controls["rate"].value = 0.0                              # a bad value: message names it, figures greyed
    assert "rate:" in panel.message.value and "course-stale" in panel.figure_box._dom_classes
    assert panel.note.value == ""
    panel.controls["rate"].value = 5.0
    assert "course-error" not in panel.message.value and "course-stale" not in panel.figure_box._dom_classes
