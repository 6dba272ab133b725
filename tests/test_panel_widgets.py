"""The panel every lesson's widget is built on, without a browser: a bad value greys out the figures
and replaces the numbers by one red line naming the parameter; the line goes with its cause; a note
sits above the figures and goes with the next run that has none; tables are HTML tables with every
label; numbers are rounded for reading; figures are created with their data and then redrawn in
place with one message; a cached setting does not run again; nothing is laid out wider than the
column. tests/test_browser.py checks the same in JupyterLab."""

from __future__ import annotations

import re

import ipywidgets as W
import plotly.graph_objects as go
import pytest

from course_lib.widgets import Panel, _split_result, check_int, fmt_value, is_table, table_html
from helpers import one_thread, tiny_model  # noqa: F401 (an autouse fixture)


def bars(n: int) -> go.Figure:
    return go.Figure(go.Bar(y=list(range(n))), layout=dict(title=f"{n} bars"))


def counting_panel(cache: int = 0, note_at: int | None = None):
    calls = []

    def update(n):
        n = check_int(n, "n", 1, 9)
        calls.append(n)
        note = f"n is {n}" if n == note_at else None
        return f"{n} bars, {n / 3} a third", [bars(n)], note

    box = W.IntText(value=2)
    panel = Panel({"n": box}, update, cache=cache)
    panel.refresh()
    return panel, box, calls


def stale(panel) -> bool:
    return "course-stale" in panel.figure_box._dom_classes and "course-stale" in panel.output._dom_classes


def test_a_bad_value_greys_the_figures_and_its_message_goes_with_its_cause():
    panel, box, _ = counting_panel()
    assert panel.state == "ok" and not stale(panel) and "course-info" in panel.message.value
    box.value = 0
    msg = panel.message.value
    assert panel.state == "error" and stale(panel)
    assert 'class="course-error"' in msg and "n: must be an integer in [1, 9]; got 0" in msg
    assert "bars" not in msg and "course-info" not in msg                # the old numbers are gone, not kept
    assert list(panel.figures[0].data[0].y) == [0, 1]                    # the old figure stays, greyed
    box.value = 3
    assert panel.state == "ok" and not stale(panel)
    assert "course-error" not in panel.message.value and "3 bars" in panel.message.value
    assert list(panel.figures[0].data[0].y) == [0, 1, 2] and panel.figures[0].layout.title.text == "3 bars"


def test_the_message_line_says_what_state_and_which_update_it_shows():
    panel, box, _ = counting_panel()
    first = re.search(r'data-seq="(\d+)"', panel.message.value).group(1)
    box.value = 0
    assert 'data-state="error"' in panel.message.value
    box.value = 4
    assert 'data-state="ok"' in panel.message.value
    assert int(re.search(r'data-seq="(\d+)"', panel.message.value).group(1)) == int(first) + 2
    assert panel.seconds is not None and panel.seconds >= 0


def test_any_other_error_is_one_red_line_with_its_type_never_a_traceback():
    def update(n):
        raise KeyError("boom")

    panel = Panel({"n": W.IntText(value=1)}, update)
    panel.refresh()
    assert panel.state == "error" and "KeyError" in panel.message.value and "course-error" in panel.message.value


def test_a_note_sits_above_the_figures_and_goes_with_its_cause():
    panel, box, _ = counting_panel(note_at=3)
    children = list(panel.box.children)
    assert children.index(panel.message) < children.index(panel.note) < children.index(panel.figure_box)
    assert panel.note.value == ""
    box.value = 3
    assert "n is 3" in panel.note.value and 'class="course-note"' in panel.note.value
    box.value = 4                                                         # the cause is gone: so is the note
    assert panel.note.value == ""
    box.value = 3
    box.value = 0                                                         # a bad value: no stale note either
    assert panel.note.value == "" and panel.state == "error"


def test_a_cached_setting_answers_without_running_again():
    panel, box, calls = counting_panel(cache=4)
    for v in (3, 2, 3, 0, 2):
        box.value = v
    assert calls == [2, 3]
    assert "2 bars" in panel.message.value and list(panel.figures[0].data[0].y) == [0, 1]
    plain, pbox, pcalls = counting_panel(cache=0)
    pbox.value = 3
    pbox.value = 2
    assert pcalls == [2, 3, 2]


def test_figures_are_created_with_their_data_then_redrawn_in_place_with_one_message():
    panel, box, _ = counting_panel()
    fig = panel.figures[0]
    # created with its traces: a view that renders late still draws them (before, the traces came in
    # separate messages after an empty figure, and lesson 06's first two figures rendered blank)
    assert fig._widget_data and fig._widget_data[0]["y"] == [0, 1]
    sent = []
    fig._send_update_msg = lambda *a, **k: sent.append(k)
    fig._send_deleteTraces_msg = lambda *a, **k: sent.append("delete")
    box.value = 5
    assert panel.figures[0] is fig and list(fig.data[0].y) == [0, 1, 2, 3, 4]
    assert len(sent) == 1 and sent[0]["restyle_data"]["y"] == [[0, 1, 2, 3, 4]]
    assert sent[0]["relayout_data"] == {"title": {"text": "5 bars"}}        # only what changed


def test_a_figure_of_other_traces_replaces_the_old_ones():
    kinds = {"bar": lambda: go.Figure(go.Bar(y=[1, 2])), "lines": lambda: go.Figure([go.Scatter(y=[1]), go.Scatter(y=[2])])}
    panel = Panel({"kind": W.Dropdown(options=list(kinds), value="bar")}, lambda kind: ("ok", kinds[kind]()))
    panel.refresh()
    panel.controls["kind"].value = "lines"
    assert [t.type for t in panel.figures[0].data] == ["scatter", "scatter"]


def test_a_table_figure_is_an_html_table_with_every_label_and_rounded_numbers():
    head = ["", "p50", "<b>preempted</b>", "target"]
    rows = [["time to first token", 74.39999999999999, 3, "300"], ["time between tokens", 0.1 + 0.2, 0, "40"]]
    fig = go.Figure(go.Table(header=dict(values=head), cells=dict(values=[list(c) for c in zip(*rows)],
                                                                   fill=dict(color=[["#e8f5e9", "#ffebee"]] * 4))),
                    layout=dict(title="Latency (ms)"))
    assert is_table(fig) and not is_table(bars(2))
    out = table_html(fig)
    for text in ("time to first token", "time between tokens", "p50", "preempted", "target", "Latency (ms)",
                 ">74.4<", ">0.3<", ">3<", "#ffebee"):
        assert text in out, text
    assert "74.39999" not in out and "<b>" not in out
    panel = Panel({"n": W.IntText(value=1)}, lambda n: ("ok", [fig, bars(n)]))
    panel.refresh()
    assert isinstance(panel.figures[0], W.HTML) and "time to first token" in panel.figures[0].value
    assert isinstance(panel.figures[1], go.FigureWidget)


def test_table_cells_are_escaped():
    fig = go.Figure(go.Table(header=dict(values=["a<script>"]), cells=dict(values=[["<img src=x>"]])))
    out = table_html(fig)
    assert "<script>" not in out and "<img" not in out and "&lt;img" in out


@pytest.mark.parametrize("value, text", [(74.39999999999999, "74.4"), (3, "3"), (3.0, "3"), (0.000123456, "0.0001235"),
                                         (1234567.8, "1.235e+06"), ("12 ms", "12 ms"), (True, "True"),
                                         (float("nan"), "nan")])
def test_fmt_value_rounds_for_reading(value, text):
    assert fmt_value(value) == text


def test_split_result_forms():
    f = bars(1)
    assert _split_result("s") == ("s", [], None)
    assert _split_result(f) == (None, [f], None)
    assert _split_result(("s", f)) == ("s", [f], None)
    assert _split_result(("s", [f], "n")) == ("s", [f], "n")
    with pytest.raises(TypeError, match="update"):
        _split_result(5)


def test_controls_wrap_to_the_column_instead_of_running_past_it():
    controls = {f"c{i}": W.IntText(value=i, description=f"c{i}") for i in range(7)}
    panel = Panel(controls, lambda **v: "ok", columns=4)
    grid = panel.box.children[1]
    template = grid.layout.grid_template_columns
    assert template.startswith("repeat(auto-fill") and "min(100%" in template and "/ 4" in template
    assert all(c.layout.width == "auto" for c in controls.values())
    assert panel.box.layout.max_width == "100%" and panel.figure_box.layout.max_width == "100%"
    assert "course-panel" in panel.box._dom_classes


# ---- each lesson's panel ----------------------------------------------------------------------------------
def test_padding_panel_greys_its_figure_on_a_bad_length():
    from course_lib.widgets.padding import padding_panel

    panel = padding_panel(max_len=64)
    assert panel.state == "ok" and "padding" in panel.message.value
    panel.controls["lengths_text"].value = "4, 0, 2"
    assert stale(panel) and "lengths" in panel.message.value and "course-error" in panel.message.value
    panel.controls["lengths_text"].value = "4, 7, 2"
    assert not stale(panel) and "course-error" not in panel.message.value


def test_paging_panel_counts_in_words():
    from course_lib.widgets.paging import paging_report

    status, _ = paging_report("5, 16", 16, 8)
    assert "5 tokens in 1 block (11 slots empty)" in status and "16 tokens in 1 block (0 slots empty)" in status
    status, _ = paging_report("17", 16, 8)
    assert "17 tokens in 2 blocks (15 slots empty)" in status


def test_paging_panels_grey_out_on_bad_values():
    from course_lib.widgets.paging import paging_panel, sharing_panel

    p = paging_panel()
    p.controls["num_blocks"].value = 0
    assert stale(p) and "pool blocks" in p.message.value
    p.controls["num_blocks"].value = 24
    assert not stale(p) and "Held" in p.message.value
    s = sharing_panel()
    s.controls["prefix_len"].value = 256
    s.controls["block_size"].value = 1                           # 4 x 266 blocks: more than the map draws
    assert stale(s) and "requests" in s.message.value
    s.controls["block_size"].value = 8
    assert not stale(s) and "Blocks held" in s.message.value


def test_storyteller_clears_its_story_on_a_bad_opening_and_tells_again():
    from course_lib.widgets.story import StoryPanel

    panel = StoryPanel(tiny_model(seed=0, max_len=64), opening="Once", max_new_tokens=3)
    assert panel.run() and panel.text.value and "3 tokens" in panel.message.value
    panel.opening.value = "   "
    assert panel.run() == "" and panel.text.value == ""
    assert "course-error" in panel.message.value and "opening" in panel.message.value
    panel.opening.value = "Once"
    assert panel.run() and "course-error" not in panel.message.value
    assert panel.opening.layout.width == "100%" and panel.box.layout.max_width == "100%"
