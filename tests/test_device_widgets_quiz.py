import pytest
import torch

from course_lib.device import Timer, banner, get_device, seed_everything, time_fn
from course_lib.quiz import Choice, Quiz
from course_lib.widgets import Panel, check_int, parse_int_list


def test_device_choice_and_override(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    d = get_device()
    assert d.type == ("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu")
    assert get_device("cpu").type == "cpu"
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert get_device().type == "cpu"
    monkeypatch.setenv("COURSE_DEVICE", "tpu")
    with pytest.raises(ValueError, match="device"):
        get_device()


def test_banner_is_one_line_naming_device_and_dtype():
    text = banner(torch.device("cpu"))
    assert "\n" not in text and text.startswith("course_lib on cpu") and "float32" in text


def test_timer_and_time_fn_measure_something():
    with Timer() as t:
        sum(range(10000))
    assert t.seconds > 0
    assert time_fn(lambda: sum(range(1000)), repeat=3) > 0
    with pytest.raises(ValueError, match="repeat"):
        time_fn(lambda: None, repeat=0)


def test_seeding_reproduces():
    seed_everything(7)
    a = torch.rand(3)
    seed_everything(7)
    assert torch.equal(a, torch.rand(3))


@pytest.mark.parametrize("value", [0, 513, "x", 2.5, True, None])
def test_check_int_rejects_with_name_and_range(value):
    with pytest.raises(ValueError, match=r"length: must be an integer in \[1, 512\]"):
        check_int(value, "length", 1, 512)


def test_parse_int_list():
    assert parse_int_list("5, 12 3", "lengths", 1, 512) == [5, 12, 3]
    for bad in ["", "5, 0", "5, abc", "1.5"]:
        with pytest.raises(ValueError, match="lengths"):
            parse_int_list(bad, "lengths", 1, 512)
    with pytest.raises(ValueError, match="at most 2"):
        parse_int_list("1 2 3", "lengths", 1, 9, max_items=2)


def test_panel_shows_errors_in_red_and_keeps_going():
    import ipywidgets as W

    seen = []

    def update(n):
        seen.append(check_int(n, "n", 1, 5))
        return f"n = {n}"

    slider = W.IntText(value=3)
    panel = Panel({"n": slider}, update)
    panel.refresh()
    assert "n = 3" in panel.message.value
    slider.value = 9                      # observe -> refresh
    assert "#c62828" in panel.message.value and "n: must be an integer in [1, 5]; got 9" in panel.message.value
    slider.value = 4
    assert "n = 4" in panel.message.value and seen == [3, 4]


def test_quiz_needs_one_right_answer_and_explains_each():
    q = Quiz("2 + 2?", [Choice("4", True, "arithmetic"), Choice("5", False, "off by one")])
    assert q.answer(0).startswith("Correct") and "off by one" in q.answer(1)
    q.choose(q.order.index(1))
    q.button.click()
    assert "Not quite" in q.feedback.value
    with pytest.raises(ValueError, match="exactly one"):
        Quiz("?", [Choice("a", True, ""), Choice("b", True, "")])


def test_panel_draws_returned_figures_into_figure_widgets_in_place():
    import ipywidgets as W
    import plotly.graph_objects as go

    def update(n):
        n = check_int(n, "n", 1, 9)
        return f"{n} bars", [go.Figure(go.Bar(y=list(range(n)))), go.Figure(go.Scatter(y=[n]))]

    box = W.IntText(value=2)
    panel = Panel({"n": box}, update)
    panel.refresh()
    first = panel.figures[0]
    assert len(panel.figure_box.children) == 2 and list(first.data[0].y) == [0, 1]
    box.value = 4
    assert panel.figures[0] is first and list(first.data[0].y) == [0, 1, 2, 3]   # updated in place
    box.value = 0                         # the old figure stays, greyed out: it no longer matches the controls
    assert "n: must be" in panel.message.value and list(first.data[0].y) == [0, 1, 2, 3]
    assert "course-stale" in panel.figure_box._dom_classes
    box.value = 3
    assert "course-stale" not in panel.figure_box._dom_classes and list(first.data[0].y) == [0, 1, 2]


def test_quiz_text_fits_the_column():
    """Widths auto, not 100%: a 100% HTML widget plus its margin ran 2 px past the notebook column."""
    q = Quiz("2 + 2?", [Choice("4 " * 80, True, "arithmetic"), Choice("5", False, "off by one")])
    question = q.box.children[0]
    assert question.layout.width == "auto" and question.layout.min_width == "0"
    for row in q.box.children[1].children:
        letter, text = row.children
        assert letter.layout.flex == "0 0 auto" and text.layout.flex == "1 1 0%" and text.layout.min_width == "0"
        assert "white-space:normal" in text.value
