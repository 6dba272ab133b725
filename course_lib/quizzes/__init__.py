"""The question bank: one module per lesson, `lessonNN.py`, with `QUIZZES = {"NN.k": Question(...), ...}`.

Question ids are "<lesson>.<name>": "03.1" for the multiple-choice questions in order, a word for
the numeric ones ("02.kv_bytes"). The notebooks name ids only (course_lib.quiz.quiz("03.1")).
"""

from __future__ import annotations

import importlib
import re
from functools import lru_cache

LESSONS = ("01", "02", "03", "04", "05", "06", "07")


@lru_cache(maxsize=None)
def lesson_questions(lesson: str) -> dict:
    """{question id: Question or Numeric} of one lesson, in the lesson's order."""
    if not isinstance(lesson, str) or lesson not in LESSONS:
        raise ValueError(f"lesson: must be one of {', '.join(LESSONS)} (a two-digit string); got {lesson!r}")
    bank = importlib.import_module(f"course_lib.quizzes.lesson{lesson}").QUIZZES
    for qid in bank:
        if not re.fullmatch(rf"{lesson}\.\w+", qid):
            raise ValueError(f"question id: {qid!r} in lesson{lesson}.py must start with '{lesson}.'")
    return dict(bank)


def all_questions() -> dict:
    return {qid: q for lesson in LESSONS for qid, q in lesson_questions(lesson).items()}


def get_question(qid: str):
    """The question named `qid`; a one-line ValueError naming it when there is none."""
    lesson = qid.split(".")[0] if isinstance(qid, str) else None
    if lesson not in LESSONS:
        raise ValueError(f"question id: no knowledge check named {qid!r}; ids look like '03.1' "
                         f"(lessons {LESSONS[0]}-{LESSONS[-1]})")
    bank = lesson_questions(lesson)
    if qid not in bank:
        raise ValueError(f"question id: no knowledge check named {qid!r}; lesson {lesson} has {', '.join(bank)}")
    return bank[qid]
