"""Every case of every task, and the line a reference answer prints for it, computed here.

    public   the cases the check cell shows (course_lib.checks.<lesson>.TASKS)
    hidden   the grader's own cases (course_lib.grading.hidden.<lesson>): the classes of
             mistakes the public cases miss, and cases drawn at random from --case-seed
    extra    a teacher's --hidden file (CASES = {task: [Case, ...]} or cases(rng) -> the same)
Expected lines come from the reference answers (course_lib.grading.reference), run in
this process through the same probe the learner's kernel runs, then the task's judge.
"""

from __future__ import annotations

import ast
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from course_lib.checks.core import Case, decode, dumps, encode_input, judge_of, probe, strip_messages
from course_lib.grading.lessons import lesson
from course_lib.grading.reference import references

DEFAULT_CASE_SEED = 2026


class GradeError(Exception):
    """A submission (or an option) that cannot be graded at all; str() is one line."""


@dataclass
class GradedCase:
    task: str
    name: str
    args_json: str           # {"args": [...], "kwargs": {...}} as course_lib.checks.core.decode reads it
    expected: str            # the reference's text (after the case's judge)
    probe: str
    judge: str
    group: str = "public"    # public | hidden | extra
    seconds: float = 0.0     # the reference's CPU time on this case, in this process


@dataclass
class TaskPlan:
    name: str
    cases: list[GradedCase] = field(default_factory=list)


def args_json(case: Case) -> str:
    return dumps({"args": encode_input(tuple(case.args))["__tuple__"], "kwargs": encode_input(dict(case.kwargs))})


def expected_line(task, ref_fn, case: Case) -> tuple[str, str, float]:
    """(args json, expected text, seconds) of one case, from the reference answer."""
    spec = args_json(case)
    if task.goal is not None and case.probe is None:      # every right answer meets the goal (the tests check
        return spec, task.goal, 0.0                         # that the reference does, on every graded case)
    data = json.loads(spec)
    t0 = time.process_time()
    got = probe(case.probe or task.probe)(ref_fn, data["args"], data["kwargs"])
    text = judge_of(case.judge or task.judge)(strip_messages(got), None, decode(data["args"]))
    return spec, text, time.process_time() - t0


@dataclass
class Extra:
    """A teacher's file of extra hidden cases."""

    path: Path
    lesson: str | None
    points: dict
    source: str

    @classmethod
    def load(cls, path: Path) -> "Extra":
        try:
            source = Path(path).read_text(encoding="utf-8")
            tree = ast.parse(source, filename=str(path))
        except (OSError, UnicodeDecodeError, SyntaxError) as exc:
            raise GradeError(f"--hidden {path}: cannot read it as Python ({type(exc).__name__}: {exc})") from None
        names = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        names |= {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        if not names & {"CASES", "cases"}:
            raise GradeError(f"--hidden {path}: defines neither CASES = {{task: [Case, ...]}} nor cases(rng)")
        ns = cls._run(path, source)
        lesson_name = ns.get("LESSON")
        return cls(Path(path), None if lesson_name is None else str(lesson_name),
                   {str(k): float(v) for k, v in dict(ns.get("POINTS", {})).items()}, source)

    @staticmethod
    def _run(path, source) -> dict:
        ns: dict = {"__name__": "_grader_extra"}
        try:
            exec(compile(source, str(path), "exec"), ns)
        except Exception as exc:
            raise GradeError(f"--hidden {path}: raised {type(exc).__name__}: {exc}") from None
        return ns

    def applies_to(self, lesson_name: str) -> bool:
        return self.lesson is None or self.lesson == lesson_name

    def cases(self, rng: random.Random) -> dict:
        ns = self._run(self.path, self.source)
        found = ns["cases"](rng) if callable(ns.get("cases")) else ns.get("CASES", {})
        for task, cs in found.items():
            if not all(isinstance(c, Case) for c in cs):
                raise GradeError(f"--hidden {self.path}: CASES[{task!r}] must be a list of course_lib.checks.core.Case")
        return found


_PLANS: dict = {}


def plan_lesson(lesson_name: str, solution: Path, case_seed: int = DEFAULT_CASE_SEED,
                extras: list[Extra] = ()) -> dict[str, TaskPlan]:
    """task -> its cases with expected lines (computed once per process for the same inputs)."""
    key = (lesson_name, str(Path(solution).resolve()), Path(solution).stat().st_mtime_ns, case_seed,
           tuple((str(e.path), e.source) for e in extras))
    if key not in _PLANS:
        _PLANS[key] = _plan(lesson_name, solution, case_seed, extras)
    return _PLANS[key]


def _plan(lesson_name, solution, case_seed, extras) -> dict[str, TaskPlan]:
    les = lesson(lesson_name)
    refs = references(solution)
    hidden = les.hidden.cases(random.Random(f"{case_seed}:{lesson_name}"), refs)
    extra = {}
    for e in extras:
        if e.applies_to(lesson_name):
            for task, cs in e.cases(random.Random(f"{case_seed}:{lesson_name}:extra")).items():
                if task not in les.tasks:
                    raise GradeError(f"--hidden {e.path}: {lesson_name} has no task {task!r} "
                                     f"(tasks: {', '.join(les.tasks)})")
                extra.setdefault(task, []).extend(cs)
    plans = {}
    for name, task in les.tasks.items():
        if name not in refs:
            raise GradeError(f"{solution}: defines no reference answer {name}()")
        plan = TaskPlan(name)
        groups = [("public", task.public), ("hidden", hidden.get(name, [])), ("extra", extra.get(name, []))]
        seen = set()
        for group, cs in groups:
            for case in cs:
                label = case.name if group == "public" else f"{group}: {case.name}"
                if label in seen or "\n" in label:
                    raise GradeError(f"{name}: case names must be unique, one line each; {label!r}")
                seen.add(label)
                spec, text, secs = expected_line(task, refs[name], case)
                plan.cases.append(GradedCase(name, label, spec, text, case.probe or task.probe,
                                             case.judge or task.judge, group, secs))
        plans[name] = plan
    return plans


def public_expected(lesson_name: str, solution: Path) -> dict:
    """{task: {case name: expected text}} for the public cases: what course_lib/checks/expected/ ships."""
    les = lesson(lesson_name)
    refs = references(solution)
    return {name: {c.name: expected_line(task, refs[name], c)[1] for c in task.public}
            for name, task in les.tasks.items()}
