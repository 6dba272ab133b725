"""The knowledge checks: data (answer key hidden, shuffled, explained), recording, summary, numeric checks."""

import html
import json
import re
from pathlib import Path

import ipywidgets as W
import nbformat
import pytest

from course_lib import quiz as Q
from course_lib.quizzes import LESSONS, all_questions, get_question, lesson_questions

LEARNERS = [f"learner{i}" for i in range(40)]
MC = {qid: q for qid, q in all_questions().items() if not q.numeric}
FACTS = {"06.2": dict(wait_rate_005=41.0, wait_rate_02=12.5), "07.1": dict(paradox_refusals=177, refusals=198),
         "07.2": dict(recomputing_steps=13, stall_steps=18)}   # values a lesson passes to its questions
SEED_QUESTIONS = [  # the seeds' questions, by a phrase each must keep
    "three long-running requests", "core principle of continuous batching", "single contiguous block",
    "['The','cat','sat']", "frees each one's memory", "non-contiguous places",
]


def test_bank_has_every_lesson_and_four_explained_options_one_right():
    assert set(LESSONS) == {"01", "02", "03", "04", "05", "06", "07"}
    for qid, q in MC.items():
        assert len(q.choices) == 4, qid
        assert sum(c.correct for c in q.choices) == 1, qid
        assert all(len(c.why.strip()) > 10 for c in q.choices), qid
        assert len({c.text for c in q.choices}) == 4, qid


def test_each_lesson_has_numeric_or_seed_checks_for_its_concepts():
    texts = " ".join(q.text for q in MC.values())
    for phrase in SEED_QUESTIONS + ["bucketing", "bug", "largest_free", "re-forms the batch before every",
                                    "interleave", "prefill-prioritised", "whether the cause is fragmentation"]:
        assert phrase.lower() in texts.lower(), phrase
    for qid in ("01.pad_share", "02.kv_bytes", "04.empty_slots"):
        assert get_question(qid).numeric


def test_shuffle_moves_the_right_answer_for_every_question():
    for qid, q in MC.items():
        right = [c.correct for c in q.choices].index(True)
        positions = {Q.option_order(qid, 4, who).index(right) for who in LEARNERS}
        assert len(positions) >= 3, (qid, positions)   # not always first (nor always anywhere)
        assert sorted(Q.option_order(qid, 4, "x")) == [0, 1, 2, 3]
    assert Q.option_order("03.1", 4, "ann") == Q.option_order("03.1", 4, "ann")   # stable for a learner


def test_right_answer_is_not_always_the_longest_in_any_lesson():
    for lesson in LESSONS:
        qs = [q for q in lesson_questions(lesson).values() if not q.numeric]
        longest = sum(max(len(c.text) for c in q.choices) == len(next(c for c in q.choices if c.correct).text)
                      for q in qs)
        assert longest <= len(qs) / 2, (lesson, longest, len(qs))


def _visible(widget) -> str:
    """Every string a learner can see in a widget tree (values, descriptions, tooltips, styles)."""
    out = []
    for name in ("value", "description", "tooltip", "placeholder", "button_style"):
        v = getattr(widget, name, None)
        if isinstance(v, str):
            out.append(v)
    out += [str(c) for c in getattr(widget, "_dom_classes", ())]
    for child in getattr(widget, "children", ()):
        out.append(_visible(child))
    return "\n".join(out)


@pytest.mark.parametrize("qid", sorted(MC))
def test_widget_does_not_reveal_the_answer_before_answering(qid, tmp_path):
    q = Q.make_quiz(qid, learner="ann", path=tmp_path / "a.json", **FACTS.get(qid, {}))
    text = _visible(q.box)
    rest = html.unescape(re.sub(r"<[^>]+>", "", text))
    for t in [get_question(qid).text] + [c.text for c in q.choices]:
        assert t in rest
        rest = rest.replace(t, "")
    assert not re.search(r"(?i)\b(true|false|correct|right|yes)\b", rest), (qid, rest)   # only letters and Check
    for c in q.choices:
        assert c.why not in text
    rows = q.box.children[1].children
    assert len(rows) == 4
    assert len({(r.children[0].button_style, r.children[0].layout.width, r.layout.width) for r in rows}) == 1
    assert repr(q.box).count("True") == 0 and not q.feedback.value


def test_options_wrap_in_full_width_rows_with_their_own_buttons(tmp_path):
    q = Q.make_quiz("07.3", learner="ann", path=tmp_path / "a.json")
    assert q.box.layout.width == "100%"
    for row in q.box.children[1].children:
        button, label = row.children
        assert isinstance(button, W.Button) and button.layout.flex == "0 0 auto"
        assert "white-space:normal" in label.value and label.layout.min_width == "0"


def test_answering_records_and_summary_counts_first_tries(tmp_path):
    path = tmp_path / "answers.json"
    bank = lesson_questions("03")
    for qid, first_right in (("03.1", True), ("03.2", False), ("03.3", True)):
        q = Q.make_quiz(qid, learner="bo", path=path)
        right_pos = q.order.index([c.correct for c in q.choices].index(True))
        q.check()
        assert "Choose an option" in q.feedback.value              # nothing chosen: nothing recorded
        q.choose(right_pos if first_right else (right_pos + 1) % 4)
        q.check()
        assert ("Correct" in q.feedback.value) == first_right and "attempt 1" in q.feedback.value
        if not first_right:
            q.choose(right_pos)
            q.check()
            assert "Correct" in q.feedback.value and "attempt 2" in q.feedback.value
    data = json.loads(path.read_text())["learners"]["bo"]
    assert [t["correct"] for t in data["03.2"]] == [False, True] and len(data["03.1"]) == 1
    score = Q.lesson_score("03", "bo", path)
    assert (score.first_try, score.later, score.total) == (2, 1, len(bank))
    text = Q.summary_text("03", "bo", path)
    assert text.startswith(f"Lesson 03: 2 of {len(bank)} right on the first try; 1 right on a later try")
    assert "not answered yet (03.4, 03.5)" in text
    assert Q.summary_text("03", "someone else", path).startswith(f"Lesson 03: 0 of {len(bank)}")
    s = Q.Summary("03", "bo", path)
    assert "2 of" in s.html.value


def test_summary_refreshes_live_and_env_file(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_QUIZ_FILE", str(tmp_path / "x.json"))
    monkeypatch.setenv("COURSE_LEARNER", "cy")
    n = len(lesson_questions("05"))
    s = Q.Summary("05")
    assert f"0 of {n}" in s.html.value
    q = Q.make_quiz("05.2")
    q.choose(q.order.index(0))
    q.check()
    assert f"1 of {n} right on the first try" in s.html.value
    assert "cy" in json.loads((tmp_path / "x.json").read_text())["learners"]


def test_numeric_within_tolerance_is_right_outside_wrong(tmp_path):
    path = tmp_path / "n.json"
    n = Q.make_number_quiz("02.kv_bytes", 2048, learner="di", path=path, layers=4, kv_heads=2, head_dim=32)
    assert "4 layers" in n.text and "2048" not in _visible(n.box)
    n.check("2,000")
    assert "Not quite" in n.feedback.value and "2,048" not in n.feedback.value     # first miss: no answer given
    n.check("2048")
    assert "Correct" in n.feedback.value
    p = Q.make_number_quiz("01.pad_share", 53.333333333, learner="di", path=path, lengths="5, 9, 12, 30")
    p.check("53.3 %")
    assert "Correct: 53.33 %" in p.feedback.value                              # rounded for reading
    p.check("54")
    assert "Not quite" in p.feedback.value
    n.check("two thousand")
    assert "answer: must be a number" in n.feedback.value
    tries = json.loads(path.read_text())["learners"]["di"]
    assert [t["correct"] for t in tries["02.kv_bytes"]] == [False, True]
    assert Q.lesson_score("02", "di", path).later == 1
    wide = Q.make_number_quiz("04.empty_slots", 14, tolerance=2, learner="di", path=path, tokens=50, block_size=16)
    assert wide.is_right(12) and not wide.is_right(11.5)


def test_numeric_needs_its_facts_and_a_number():
    with pytest.raises(ValueError, match=r"question 02.kv_bytes needs head_dim=\.\.\., kv_heads=\.\.\., layers"):
        Q.make_number_quiz("02.kv_bytes", 2048)
    with pytest.raises(ValueError, match="expected"):
        Q.make_number_quiz("04.empty_slots", "x", tokens=1, block_size=2)


@pytest.mark.parametrize("qid", ["03.99", "99.1", "x", "", "0301"])
def test_bad_question_id_is_one_line_naming_it(qid):
    with pytest.raises(ValueError) as err:
        Q.quiz(qid)
    msg = str(err.value)
    assert "\n" not in msg and repr(qid) in msg and msg.startswith("question id:")
    with pytest.raises(ValueError, match="lesson: must be one of"):
        Q.quiz_summary("9")
    with pytest.raises(ValueError, match="is numeric; call quiz_number"):
        Q.quiz("02.kv_bytes")
    with pytest.raises(ValueError, match="multiple choice; call quiz"):
        Q.quiz_number("02.1", expected=1)


def test_question_quoting_lesson_values_needs_them():
    with pytest.raises(ValueError, match=r"quiz: question 06.2 needs wait_rate_005=\.\.\., wait_rate_02=\.\.\."):
        Q.make_quiz("06.2")
    q = Q.make_quiz("06.2", learner="x", path="/dev/null/none.json", **FACTS["06.2"])
    assert any("41 and 12.5 steps" in c.why for c in q.choices)


def test_old_call_form_still_shows():
    Q.quiz("2 + 2?", [Q.Choice("4", True, "arithmetic"), Q.Choice("5", False, "off by one")])


# ---------------------------------------------------------------- the conversion script

ROOT = Path(__file__).resolve().parents[1]


def test_conversion_rewrites_copies_and_is_idempotent(tmp_path):
    import sys
    sys.path.insert(0, str(ROOT / "tools"))
    import convert_quizzes as C

    for src in sorted((ROOT / "notebooks").glob("0[1-7]_*.ipynb")):
        nb = nbformat.read(src, as_version=4)
        lesson = src.name[:2]
        old = [c for c in nb.cells if c.cell_type == "code" and C.old_quiz_calls(c.source)]
        if not old:                                 # already converted in the working tree
            assert any("quiz_summary(" in c.source for c in nb.cells)
            continue
        n_cells = len(nb.cells)
        n_old = sum(len(C.old_quiz_calls(c.source)) for c in old)
        changes = C.rewrite_notebook(nb, lesson)
        assert changes and not any(C.old_quiz_calls(c.source) for c in nb.cells)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert not any("course_lib.quiz import Choice" in c.source or "Choice(" in c.source and "quiz(" in c.source
                       for c in nb.cells)
        bank = lesson_questions(lesson)
        for qid, q in bank.items():
            assert re.search(rf'quiz(_number)?\("{re.escape(qid)}"[,)]', code), qid
        assert code.count(f'quiz_summary("{lesson}")') == 1
        missing = sum(not q.numeric for q in bank.values()) > n_old
        assert len(nb.cells) - n_cells == bool(missing) + (lesson in C.NUMERIC_CELLS) + 1
        assert C.rewrite_notebook(nb, lesson) == []                  # a second run changes nothing
        nbformat.validate(nb)
