"""What the check tests share: judge an answer on every case of its task (public, hidden, random)
in this process, as the grader's judges would (course_lib.grading.evaluate)."""

from __future__ import annotations

from course_lib.grading.evaluate import evaluate, failures


def rejected(lesson: str, task: str, fn) -> list[str]:
    """The cases a wrong answer fails (at least one, or the test fails)."""
    bad = failures(lesson, task, fn)
    assert bad, f"{getattr(fn, '__name__', fn)} passed every case of {task}"
    return bad


def accepted(lesson: str, task: str, fn) -> None:
    """A right answer passes every case."""
    bad = [(name, shown[:200], want[:200]) for name, ok, shown, want in evaluate(lesson, task, fn) if not ok]
    assert not bad, bad


def stub(*args, **kwargs):
    raise NotImplementedError()
