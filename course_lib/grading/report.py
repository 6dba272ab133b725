"""Scores, the teacher's table and Gradescope's results.json.

Each task gives two tests: "<task>" (its public cases, visible at once) and
"<task> (hidden)" (the grader's hidden and random cases and a teacher's extra ones,
visible on Gradescope once grades are published). A task's points (the solution
check cell's metadata "points", default 1) are split between them by "hidden_share"
(metadata, default --hidden-share, 0.5). Within a test, --credit per-case (the
default) gives each case an equal share; --credit all gives the test's points only
when every case passes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from course_lib.checks.core import FAIL, PASS, explain, short

CREDIT = ("per-case", "all")


@dataclass
class CaseResult:
    name: str
    group: str
    passed: bool
    feedback: str = ""           # why it failed, one line
    cpu: float = 0.0
    wall: float = 0.0
    timeout: str | None = None


@dataclass
class Result:
    name: str
    score: float
    max_score: float
    feedback: str
    notes: list[str] = field(default_factory=list)
    hidden: bool = False
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.score >= self.max_score

    def output(self) -> str:
        return "\n".join([self.feedback] + self.notes)


@dataclass
class Report:
    submission: str
    solution: str = ""
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)        # about the submission as a whole
    error: str | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def score(self) -> float:
        return sum(r.score for r in self.results)

    @property
    def max_score(self) -> float:
        return sum(r.max_score for r in self.results)


def case_feedback(rec: dict, cpu_limit: float) -> str:
    """One line saying why a case failed (or '' when it passed)."""
    if rec.get("outcome") == "passed":
        return ""
    if rec.get("skipped"):
        return rec.get("error", "not run")
    t = rec.get("timeout")
    if t in ("cpu", "killed"):
        return f"timed out: used more than {cpu_limit:g} s of CPU time" + (" and would not stop" if t == "killed" else "")
    if t == "wall":
        return "timed out: ran past the wall-clock limit (waiting on something?)"
    shown = rec.get("shown")
    if shown is not None and rec.get("same") is False and "error" not in rec:
        if rec.get("extra_output"):
            return f"printed more than the case's one line: {short(shown, 160)}"
        return explain(shown, rec.get("expected"), 200)
    if rec.get("died"):
        return "the kernel died during this case (os._exit, a crash or out of memory?)"
    if rec.get("after_restart") and rec.get("error") is None:
        return "the kernel had died; this case ran in a new kernel and failed"
    if "error" in rec:
        return f"raised {short(rec['error'], 200)}"
    if rec.get("outcome") is None:
        return "did not run (the kernel died?)"
    return "failed"


def score_test(name: str, cases: list[CaseResult], points: float, credit: str, hidden: bool) -> Result:
    n, ok = len(cases), sum(c.passed for c in cases)
    if n == 0 or points == 0:
        return Result(name, 0.0, 0.0, f"{PASS} {name}: no cases", hidden=hidden, cases=cases)
    score = points * ok / n if credit == "per-case" else (points if ok == n else 0.0)
    task = name.removesuffix(" (hidden)")
    if ok == n:
        text = f"{PASS} {task}: all {n} {'hidden ' if hidden else ''}cases pass"
    else:
        first = next(c for c in cases if not c.passed)
        text = f"{FAIL} {task}: {ok} of {n} {'hidden ' if hidden else ''}cases pass; case {first.name!r}: {first.feedback}"
    return Result(name, round(score, 6), points, short(text, 600), hidden=hidden, cases=cases)


def sha256_file(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def sha256_tree(paths) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.name).encode())
        h.update(Path(p).read_bytes())
    return h.hexdigest()


def table(report: Report) -> str:
    if report.error:
        return f"{report.submission}: ERROR {report.error}"
    lines = [f"{report.submission}  (checked with {report.solution}, {report.seconds:.1f} s)"]
    width = max([len(r.name) for r in report.results] + [5])
    lines.append(f"  {'task':<{width}}  {'points':^13}  verdict  feedback")
    for r in report.results:
        text = r.feedback + (f"  [{'; '.join(r.notes)}]" if r.notes else "")
        lines.append(f"  {r.name:<{width}}  {_num(r.score):>5} / {_num(r.max_score):<5}  "
                     f"{'pass' if r.passed else 'FAIL':<7}  {short(text, 170)}")
    lines.append(f"  {'total':<{width}}  {_num(report.score):>5} / {_num(report.max_score):<5}")
    lines.extend(f"  note: {n}" for n in report.notes)
    return "\n".join(lines)


def _num(x: float) -> str:
    return f"{x:.4g}"


def gradescope(report: Report) -> dict:
    """Gradescope's results.json. Hidden tests are "after_published"; when there are any, so is the
    top level (the total score and the output), which mentions the visible tests only."""
    extra = {"submission": report.submission, "solution": report.solution, "seconds": round(report.seconds, 2),
             **report.extra}
    if report.error:
        return {"score": 0.0, "execution_time": round(report.seconds, 2),
                "output": f"This notebook could not be graded: {report.error}", "tests": [], "extra_data": extra}
    visible = [r for r in report.results if not r.hidden]
    any_hidden = any(r.hidden for r in report.results)
    output = (f"{Path(report.solution).stem}: visible tests {_num(sum(r.score for r in visible))} / "
              f"{_num(sum(r.max_score for r in visible))} points")
    if any_hidden:
        output += "; hidden tests are shown once grades are published"
    if report.notes:
        output += "\n" + "\n".join(report.notes)
    return {
        "score": round(report.score, 6),
        "execution_time": round(report.seconds, 2),
        "output": output,
        "visibility": "after_published" if any_hidden else "visible",
        "stdout_visibility": "hidden",
        "tests": [{"name": r.name, "score": r.score, "max_score": r.max_score,
                   "status": "passed" if r.passed else "failed", "output": r.output(),
                   "visibility": "after_published" if r.hidden else "visible"} for r in report.results],
        "extra_data": extra,
    }


def dump(reports: list[Report], path: Path) -> None:
    payload = gradescope(reports[0]) if len(reports) == 1 else [gradescope(r) for r in reports]
    Path(path).write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
