"""Judge a function on every case of its task in this process: no kernel, no nbval.

For trying a task's cases on answers you write (the tests' wrong answers and correct
rewrites use it); grading a student's notebook is course_lib.grade's job.

    from course_lib.grading.evaluate import evaluate, failures
    failures("01_padding", "bucket_batches", my_bucket_batches)   # [] when every case passes
"""

from __future__ import annotations

import json
from pathlib import Path

from course_lib.checks.core import decode, judge_of, probe
from course_lib.grading.cases import DEFAULT_CASE_SEED, plan_lesson

ROOT = Path(__file__).resolve().parents[2]


def evaluate(lesson: str, task: str, fn, solutions: Path | None = None, case_seed: int = DEFAULT_CASE_SEED,
             first_failure: bool = False) -> list[tuple[str, bool, str, str]]:
    """[(case, passed, what fn gave, what the reference gave)] for every case of `task`."""
    solution = Path(solutions or ROOT / "solutions") / f"{lesson}.ipynb"
    out = []
    for case in plan_lesson(lesson, solution, case_seed)[task].cases:
        spec = json.loads(case.args_json)
        got = probe(case.probe)(fn, spec["args"], spec["kwargs"])
        shown = judge_of(case.judge)(got, case.expected, decode(spec["args"]))
        out.append((case.name, shown == case.expected, shown, case.expected))
        if first_failure and shown != case.expected:
            break
    return out


def failures(lesson: str, task: str, fn, **kw) -> list[str]:
    """The names of the cases `fn` fails (stops at the first failure: enough to reject an answer)."""
    return [name for name, ok, _, _ in evaluate(lesson, task, fn, first_failure=True, **kw) if not ok]
