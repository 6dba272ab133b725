"""Knowledge checks: multiple choice and numeric questions, with feedback, recorded per learner.

A lesson's notebook names its questions; their text, options, answer key and feedback live in
`course_lib/quizzes/lessonNN.py`, so the notebook shows nothing that gives the answer away:

    quiz("03.1")                                   # one multiple-choice question
    quiz_lesson("03")                              # all of lesson 03's multiple-choice questions
    quiz_number("02.kv_bytes", expected=value)     # a numeric one, checked against the value the lesson computed
    quiz_summary("03")                             # "4 of 5 right on the first try"

The options are shown in an order shuffled per learner and question (a hash of the learner id, from
COURSE_LEARNER or the user name, and the question id), so the right one is not always first. Every Check
is recorded in `.quiz_answers.json` in the working directory (or the file COURSE_QUIZ_FILE names); the
summary counts the first attempt of each question. Nothing is printed: a cell's stored output is only the
widget, which before an answer shows the question and its options, never which one is right.
"""

from __future__ import annotations

import getpass
import hashlib
import html
import json
import math
import os
import random
import re
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import ipywidgets as W
from IPython.display import display

from course_lib.validate import check_bool, check_float, check_int, check_sequence, check_type

ANSWERS_FILE = ".quiz_answers.json"
RIGHT, WRONG = "#2e7d32", "#c62828"


# ---------------------------------------------------------------- the data

@dataclass(frozen=True)
class Choice:
    text: str
    correct: bool
    why: str  # shown after the learner checks this option: why it is right or wrong

    def __post_init__(self):
        check_type("text", self.text, str)
        check_bool("correct", self.correct)
        check_type("why", self.why, str)


def _check_choices(choices) -> list[Choice]:
    choices = check_sequence("choices", choices, 2, what="a list of Choice(text, correct, why)")
    for i, c in enumerate(choices):
        check_type(f"choices[{i}]", c, Choice, "a Choice(text, correct, why)")
    if sum(c.correct for c in choices) != 1:
        raise ValueError(f"choices: exactly one must be correct; got {sum(c.correct for c in choices)}")
    return list(choices)


@dataclass(frozen=True)
class Question:
    """A multiple-choice question of the bank: exactly one right option, feedback on every option."""

    text: str
    choices: Sequence[Choice]
    numeric = False

    def __post_init__(self):
        check_type("text", self.text, str)
        object.__setattr__(self, "choices", tuple(_check_choices(self.choices)))
        for i, c in enumerate(self.choices):
            if not c.why.strip():
                raise ValueError(f"choices[{i}]: needs feedback (why) saying why it is right or wrong")


@dataclass(frozen=True)
class Numeric:
    """A numeric question. `text` and `explain` may name facts the lesson passes ({layers}, ...);
    `explain` (how to work it out) may also use {expected}. Right when within the tolerance:
    max(tolerance, rel_tolerance * |expected|)."""

    text: str
    unit: str
    explain: str
    tolerance: float = 0.0
    rel_tolerance: float = 0.0
    numeric = True

    def __post_init__(self):
        for name in ("text", "unit", "explain"):
            check_type(name, getattr(self, name), str)
        check_float("tolerance", self.tolerance, 0)
        check_float("rel_tolerance", self.rel_tolerance, 0, 1)

    def fields(self) -> set[str]:
        return {m for m in re.findall(r"{(\w+)", self.text + self.explain) if m != "expected"}


# ---------------------------------------------------------------- learner, order, records

def learner_id() -> str:
    """COURSE_LEARNER, else the user name, else 'learner'."""
    name = os.environ.get("COURSE_LEARNER", "").strip()
    if not name:
        try:
            name = getpass.getuser()
        except Exception:  # no user name in some containers
            name = ""
    return name or "learner"


def option_order(qid: str, n: int, learner: str | None = None) -> list[int]:
    """The display order of a question's n options for this learner: a permutation of range(n)."""
    check_int("n", n, 1)
    key = f"{learner if learner is not None else learner_id()}\0{qid}".encode()
    order = list(range(n))
    random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big")).shuffle(order)
    return order


def answers_path(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get("COURSE_QUIZ_FILE") or Path.cwd() / ANSWERS_FILE)


def load_answers(path=None) -> dict:
    """{learner: {question id: [attempt, ...]}} from the answers file ({} when there is none)."""
    p = answers_path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return {}
    learners = data.get("learners", {}) if isinstance(data, dict) else {}
    return learners if isinstance(learners, dict) else {}


def record_attempt(qid: str, attempt: dict, learner: str | None = None, path=None) -> int:
    """Append one attempt; returns its number (1 = first try). Written atomically."""
    p = answers_path(path)
    learners = load_answers(p)
    mine = learners.setdefault(learner if learner is not None else learner_id(), {})
    tries = mine.setdefault(qid, [])
    tries.append({**attempt, "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".quiz_", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"version": 1, "learners": learners}, f, indent=1)
        os.replace(tmp, p)
    except OSError:
        pass  # a read-only folder: the feedback still shows, only the record is lost
    for s in list(_SUMMARIES):
        s.refresh()
    return len(tries)


# ---------------------------------------------------------------- widgets

def _wrap(inner: str, extra: str = "") -> str:
    return f'<div style="white-space:normal;overflow-wrap:anywhere;line-height:1.45;{extra}">{inner}</div>'


def _html(inner: str = "", grow: bool = False) -> W.HTML:
    # width auto, not 100%: the widget's own margin would push a 100% box 2 px past the column
    layout = W.Layout(flex="1 1 0%", min_width="0") if grow else W.Layout(width="auto", min_width="0")
    return W.HTML(_wrap(inner) if inner else "", layout=layout)


def fmt_number(x: float) -> str:
    """A number for reading: integers as integers, others to 4 significant digits."""
    if float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    return f"{x:,.4g}" if abs(x) < 1e6 else f"{x:.4g}"


class Quiz:
    """One multiple-choice question. `qid` names it in the answers file (no qid: nothing is recorded).

    The options are rows of [letter button | wrapped text], shown in a per-learner shuffled order;
    `order[k]` is the index into `choices` of the option shown at position k."""

    def __init__(self, question: str, choices: Sequence[Choice], *, qid: str | None = None,
                 learner: str | None = None, path=None):
        check_type("question", question, str)
        self.question, self.choices = question, _check_choices(choices)
        self.qid, self.learner, self.path = qid, learner, path
        self.order = option_order(qid or question, len(self.choices), learner)
        self.selected: int | None = None           # index into choices
        self.attempts = 0
        self.letters, rows = [], []
        for k, i in enumerate(self.order):
            b = W.Button(description=chr(65 + k), tooltip=f"choose {chr(65 + k)}",
                         layout=W.Layout(width="2.8em", min_width="2.8em", flex="0 0 auto"))
            b.on_click(lambda _b, k=k: self.choose(k))
            self.letters.append(b)
            rows.append(W.HBox([b, _html(html.escape(self.choices[i].text), grow=True)],
                               layout=W.Layout(width="100%", align_items="flex-start", margin="2px 0")))
        self.button = W.Button(description="Check", button_style="primary")
        self.button.on_click(lambda _b: self.check())
        self.feedback = _html()
        self.box = W.VBox([_html(f"<b>{html.escape(question)}</b>"), W.VBox(rows, layout=W.Layout(width="100%")),
                           self.button, self.feedback],
                          layout=W.Layout(width="100%", max_width="100%", overflow="hidden"))

    def choose(self, position: int) -> None:
        """Select the option shown at `position` (0 = A)."""
        check_int("position", position, 0, len(self.choices) - 1)
        self.selected = self.order[position]
        for k, b in enumerate(self.letters):
            b.button_style = "info" if k == position else ""

    def answer(self, index: int) -> str:
        """Feedback for choice `index` (0-based, in the order given), as plain text."""
        check_int("index", index, 0, len(self.choices) - 1)
        c = self.choices[index]
        return f"{'Correct' if c.correct else 'Not quite'}: {c.why}"

    def check(self) -> None:
        if self.selected is None:
            self.feedback.value = _wrap("<i>Choose an option first (click its letter).</i>")
            return
        c = self.choices[self.selected]
        self.attempts += 1
        n = self.attempts
        if self.qid is not None:
            n = record_attempt(self.qid, {"choice": self.selected, "text": c.text, "correct": c.correct},
                               self.learner, self.path)
        letter = chr(65 + self.order.index(self.selected))
        head = f"{letter}: {html.escape(self.answer(self.selected))}"
        parts = [f'<span style="color:{RIGHT if c.correct else WRONG}">{head}</span>']
        if c.correct:
            others = [f"<li>{chr(65 + k)}: {html.escape(self.choices[i].why)}</li>"
                      for k, i in enumerate(self.order) if i != self.selected]
            parts.append(f"<div>Why not the others:</div><ul style='margin:2px 0'>{''.join(others)}</ul>")
        parts.append(f"<small>attempt {n}{' (first try)' if n == 1 else ''}</small>")
        self.feedback.value = _wrap("".join(parts))

    def show(self) -> None:
        display(self.box)


def parse_number(text: str) -> float:
    """'2048', '2,048', '53.3 %', '1.5e3' -> float; ValueError naming the answer otherwise."""
    t = str(text).strip().replace(",", "").replace("_", "").rstrip("%").strip()
    try:
        x = float(t)
    except ValueError:
        raise ValueError(f"answer: must be a number; got {str(text)[:40]!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"answer: must be a finite number; got {str(text)[:40]!r}")
    return x


class NumberQuiz:
    """A numeric question, checked against `expected` (computed by the lesson)."""

    def __init__(self, qid: str, q: Numeric, expected: float, tolerance: float | None = None, *,
                 facts: dict | None = None, learner: str | None = None, path=None):
        check_type("q", q, Numeric)
        self.qid, self.q, self.learner, self.path = qid, q, learner, path
        self.expected = check_float("expected", expected)
        tol = q.tolerance if tolerance is None else check_float("tolerance", tolerance, 0)
        self.tolerance = max(tol, q.rel_tolerance * abs(self.expected))
        facts = dict(facts or {})
        missing = sorted(q.fields() - set(facts))
        if missing:
            raise ValueError(f"quiz_number: question {qid} needs {', '.join(f'{m}=...' for m in missing)}")
        self.facts = {k: fmt_number(v) if isinstance(v, float) else v for k, v in facts.items()}
        self.text = q.text.format(**self.facts)
        self.attempts = 0
        self.entry = W.Text(placeholder="your answer", layout=W.Layout(width="12em"))
        self.button = W.Button(description="Check", button_style="primary")
        self.button.on_click(lambda _b: self.check())
        self.feedback = _html()
        unit = W.HTML(html.escape(q.unit), layout=W.Layout(width="auto"))
        self.box = W.VBox([_html(f"<b>{html.escape(self.text)}</b>"),
                           W.HBox([self.entry, unit, self.button], layout=W.Layout(width="100%", flex_flow="row wrap")),
                           self.feedback], layout=W.Layout(width="100%", max_width="100%", overflow="hidden"))

    def is_right(self, value: float) -> bool:
        return abs(value - self.expected) <= self.tolerance + 1e-9 * max(1.0, abs(self.expected))

    def check(self, text: str | None = None) -> None:
        if text is not None:
            self.entry.value = str(text)
        try:
            value = parse_number(self.entry.value)
        except ValueError as err:
            self.feedback.value = _wrap(f'<span style="color:{WRONG}">{html.escape(str(err))}</span>')
            return
        ok = self.is_right(value)
        self.attempts += 1
        n = record_attempt(self.qid, {"value": value, "correct": ok}, self.learner, self.path)
        explain = html.escape(self.q.explain.format(expected=fmt_number(self.expected), **self.facts))
        if ok:
            msg = (f'<span style="color:{RIGHT}">Correct: {fmt_number(self.expected)} '
                   f'{html.escape(self.q.unit)}. {explain}</span>')
        else:
            hint = explain if n >= 2 else "Work it out again from the facts in the question."
            msg = (f'<span style="color:{WRONG}">Not quite: {fmt_number(value)} is not within '
                   f'{fmt_number(self.tolerance)} of the value the lesson computed. {hint}</span>')
        self.feedback.value = _wrap(msg + f"<br><small>attempt {n}{' (first try)' if n == 1 else ''}</small>")

    def show(self) -> None:
        display(self.box)


# ---------------------------------------------------------------- the notebook calls

def _fields(*texts: str) -> set[str]:
    return set(re.findall(r"{(\w+)", "".join(texts)))


def make_quiz(qid: str, *, learner: str | None = None, path=None, **facts) -> Quiz:
    """The widget of multiple-choice question `qid`. A question whose text or feedback names facts
    ({wait_slow:g}) is filled with the values the lesson passes: make_quiz("06.2", wait_slow=12.0, ...)."""
    from course_lib.quizzes import get_question

    q = get_question(qid)
    if q.numeric:
        raise ValueError(f"question id: {qid} is numeric; call quiz_number({qid!r}, expected=...)")
    need = _fields(q.text, *(c.text + c.why for c in q.choices))
    if need - set(facts):
        raise ValueError(f"quiz: question {qid} needs {', '.join(f'{m}=...' for m in sorted(need - set(facts)))}")
    text, choices = q.text, list(q.choices)
    if need:
        text = text.format(**facts)
        choices = [Choice(c.text.format(**facts), c.correct, c.why.format(**facts)) for c in choices]
    return Quiz(text, choices, qid=qid, learner=learner, path=path)


def quiz(qid: str, choices: Sequence[Choice] | None = None, **facts) -> None:
    """Display the knowledge check `qid` (e.g. "03.1"). Returns nothing, so nothing extra is printed.
    `facts` fill a question that quotes the lesson's measured values (quiz("06.2", wait_slow=...)).

    The old form quiz("question text", [Choice(...), ...]) still works (shuffled, not recorded)."""
    if choices is not None:
        Quiz(qid, choices).show()
        return
    check_type("qid", qid, str)
    make_quiz(qid, **facts).show()


def quiz_lesson(lesson: str) -> None:
    """Display all multiple-choice questions of a lesson, one under another."""
    from course_lib.quizzes import lesson_questions

    boxes = [make_quiz(qid).box for qid, q in lesson_questions(lesson).items() if not q.numeric]
    display(W.VBox(boxes, layout=W.Layout(width="100%")))


def make_number_quiz(qid: str, expected: float, tolerance: float | None = None, *, learner=None, path=None,
                     **facts) -> NumberQuiz:
    from course_lib.quizzes import get_question

    q = get_question(qid)
    if not q.numeric:
        raise ValueError(f"question id: {qid} is multiple choice; call quiz({qid!r})")
    return NumberQuiz(qid, q, expected, tolerance, facts=facts, learner=learner, path=path)


def quiz_number(qid: str, expected: float, tolerance: float | None = None, **facts) -> None:
    """Display numeric question `qid`, right within `tolerance` (default: the question's) of `expected`.
    `facts` fill the question's text, e.g. quiz_number("02.kv_bytes", expected=b, layers=4, ...)."""
    make_number_quiz(qid, expected, tolerance, **facts).show()


@dataclass
class LessonScore:
    lesson: str
    total: int
    answered: int
    first_try: int
    later: int                  # answered right, but not on the first try
    not_answered: list[str] = field(default_factory=list)

    def text(self) -> str:
        s = f"Lesson {self.lesson}: {self.first_try} of {self.total} right on the first try"
        extra = []
        if self.later:
            extra.append(f"{self.later} right on a later try")
        if self.not_answered:
            extra.append(f"{len(self.not_answered)} not answered yet ({', '.join(self.not_answered)})")
        return s + (f"; {'; '.join(extra)}" if extra else "")


def lesson_score(lesson: str, learner: str | None = None, path=None) -> LessonScore:
    from course_lib.quizzes import lesson_questions

    qids = list(lesson_questions(lesson))
    mine = load_answers(path).get(learner if learner is not None else learner_id(), {})
    first = later = answered = 0
    missing = []
    for qid in qids:
        tries = mine.get(qid) or []
        if not tries:
            missing.append(qid)
            continue
        answered += 1
        if tries[0].get("correct") is True:
            first += 1
        elif any(t.get("correct") is True for t in tries):
            later += 1
    return LessonScore(lesson, len(qids), answered, first, later, missing)


def summary_text(lesson: str, learner: str | None = None, path=None) -> str:
    """'Lesson 03: 4 of 5 right on the first try; ...' for the learner's recorded answers."""
    return lesson_score(lesson, learner, path).text()


_SUMMARIES: weakref.WeakSet = weakref.WeakSet()


class Summary:
    """A line that counts the lesson's recorded answers, refreshed whenever a check is recorded."""

    def __init__(self, lesson: str, learner: str | None = None, path=None):
        from course_lib.quizzes import lesson_questions

        lesson_questions(lesson)                    # validates the lesson
        self.lesson, self.learner, self.path = lesson, learner, path
        self.html = _html()
        self.refresh()
        _SUMMARIES.add(self)

    def refresh(self) -> None:
        where = answers_path(self.path).name
        self.html.value = _wrap(f"<b>{html.escape(summary_text(self.lesson, self.learner, self.path))}</b>"
                                f"<br><small>(answers of {html.escape(self.learner or learner_id())}, "
                                f"saved in {html.escape(where)}; this line updates as you answer)</small>")


def quiz_summary(lesson: str) -> None:
    """Display the lesson's score: how many of its questions were right on the first try."""
    check_type("lesson", lesson, str)
    s = Summary(lesson)
    display(s.html)
    _keep.append(s)                                 # keep it alive (and refreshed) while the kernel runs


_keep: list = []
