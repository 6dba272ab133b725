"""Grade exercise notebooks: nbval checks them, the reference answers judge them, outside the kernel.

    python -m course_lib.grade SUBMISSION.ipynb [MORE.ipynb ...] [--json results.json]
        [--hidden EXTRA.py] [--cpu-limit 60] [--wall-limit 300] [--case-seed 2026]
        [--credit per-case|all] [--hidden-share 0.5] [--solutions DIR] [--keep DIR]

How a submission is graded
--------------------------
1. Its exercise is found by file name (`01_padding.ipynb`, or a renamed copy such as
   `01_padding-alice.ipynb`), and with it the solution, solutions/01_padding.ipynb.
2. Every case of every task (the public ones, the grader's hidden and random ones,
   a teacher's --hidden ones) is run on the solution's reference answer HERE, in this
   process, giving the line a right answer prints (course_lib.grading.cases).
3. A notebook is assembled (course_lib.grading.assemble): the submission's answer
   cells, with no stored outputs, and in place of each check cell one cell per case,
   each storing the reference's line as its output. Nothing from the submission's
   own outputs, check cells or printed verdicts is used.
4. `pytest --nbval` checks that notebook in a fresh kernel (course_lib.grading.run).
   The kernel only calls the student's functions on the cases' inputs and prints
   plain data; it never sees an expected value (the notebook file is deleted
   before the kernel starts) and imports course_lib from the student bundle, with
   no solutions beside it. The comparison happens in the pytest process, where the
   task's judge first accepts equally good answers (course_lib.grading.plugin).
5. Each case that nbval passes earns its share of the task (course_lib.grading.report).

Limits and faults: each cell may use --cpu-limit seconds of CPU time (a busy machine
slows grading, it does not fail a right answer); a cell over the limit is interrupted,
killed if it does not stop, and reported as timed out; --wall-limit (wall clock) catches
a cell that sleeps. A kernel that dies is replaced by one that re-runs the earlier
answer cells. A file that is not a notebook gets a one-line error; submissions are only
read. An answer that calls course_lib's own implementation of its task is flagged.

Extra hidden cases (--hidden FILE): a Python file kept out of the repository,

    LESSON = "01_padding"                      # optional: only for this exercise
    POINTS = {"pad_sequences": 2}              # optional: points of that task's hidden test
    from course_lib.checks.core import Case
    CASES = {"pad_sequences": [Case("tabs", ([["\\t"], []], "_", "left"))]}   # or def cases(rng): ...

Inputs only: the expected answers come from the reference answers.

Trust: the student's code runs with the grader's permissions. Grade in a container or
a throwaway account that cannot read solutions/ or this package's files from the
kernel (the grader itself only needs to read them before the kernel starts).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import nbformat

from course_lib.grading.assemble import assemble, solution_tasks
from course_lib.grading.cases import DEFAULT_CASE_SEED, Extra, GradeError, plan_lesson
from course_lib.grading.flags import flags, notebook_flags
from course_lib.grading.lessons import LESSONS, lesson, lesson_for
from course_lib.grading.reference import ReferenceError_
from course_lib.grading.report import (CREDIT, CaseResult, Report, dump, score_test, sha256_file, sha256_tree,
                                       table, case_feedback)
from course_lib.grading.run import run_notebooks

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CPU_LIMIT = 60.0
DEFAULT_WALL_LIMIT = 300.0
DEFAULT_HIDDEN_SHARE = 0.5


def load_notebook(path: Path) -> nbformat.NotebookNode:
    """Read a notebook for grading, or raise GradeError with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise GradeError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise GradeError(f"{path}: not a notebook (not UTF-8 text)") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GradeError(f"{path}: not a notebook (invalid JSON: {exc.msg} at line {exc.lineno})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list) or not isinstance(raw.get("nbformat"), int):
        raise GradeError(f"{path}: not a notebook (no 'cells' list or 'nbformat' version)")
    if raw["nbformat"] != 4:
        raise GradeError(f"{path}: nbformat {raw['nbformat']} is not supported; save it from JupyterLab (nbformat 4)")
    for i, cell in enumerate(raw["cells"]):
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            raise GradeError(f"{path}: not a notebook (cell {i} has no valid cell_type)")
        source = cell.get("source", "")
        if isinstance(source, list) and all(isinstance(s, str) for s in source):
            cell["source"] = "".join(source)
        elif not isinstance(source, str):
            raise GradeError(f"{path}: not a notebook (cell {i} has no text source)")
        if not isinstance(cell.get("metadata", {}), dict):
            cell["metadata"] = {}
        cell.setdefault("metadata", {})
    return nbformat.from_dict(raw)


def default_solutions() -> Path:
    here = ROOT / "solutions"
    return here if here.is_dir() else Path("solutions")


@dataclass
class _Prepared:
    report: Report
    path: Path
    submission: nbformat.NotebookNode | None = None
    lesson: str = ""
    tasks: dict = field(default_factory=dict)
    plans: dict = field(default_factory=dict)
    nb: nbformat.NotebookNode | None = None
    moved: list = field(default_factory=list)
    sha: str | None = None
    started: float = 0.0


def grade(path: Path, solutions: Path | None = None, cpu_limit: float = DEFAULT_CPU_LIMIT,
          wall_limit: float = DEFAULT_WALL_LIMIT, case_seed: int = DEFAULT_CASE_SEED, extras=(),
          credit: str = "per-case", hidden_share: float = DEFAULT_HIDDEN_SHARE, keep: Path | None = None) -> Report:
    """Grade one submission. Never raises for a bad submission: see Report.error."""
    return grade_all([path], solutions, cpu_limit, wall_limit, case_seed, extras, credit, hidden_share, keep)[0]


def grade_all(paths, solutions: Path | None = None, cpu_limit: float = DEFAULT_CPU_LIMIT,
              wall_limit: float = DEFAULT_WALL_LIMIT, case_seed: int = DEFAULT_CASE_SEED, extras=(),
              credit: str = "per-case", hidden_share: float = DEFAULT_HIDDEN_SHARE,
              keep: Path | None = None) -> list[Report]:
    """Grade several submissions: one pytest run, one fresh kernel each. Never raises for a bad submission."""
    solutions = Path(solutions) if solutions else default_solutions()
    preps = [_prepare(Path(p), solutions, case_seed, list(extras)) for p in paths]
    ready = [p for p in preps if p.report.error is None]
    t0 = time.perf_counter()
    try:
        runs = run_notebooks([p.nb for p in ready], cpu_limit, wall_limit,
                             keep=[None if keep is None else Path(keep) / p.path.name for p in ready])
    except RuntimeError as exc:
        for p in ready:
            p.report.error = f"{p.path}: {exc}"
        runs = [None] * len(ready)
    kernel_seconds = (time.perf_counter() - t0) / max(1, len(ready))
    for p, ran in zip(ready, runs):
        if ran is not None:
            _finish(p, ran, cpu_limit, wall_limit, case_seed, list(extras), credit, hidden_share)
            p.report.extra["seconds_kernel"] = round(kernel_seconds, 2)
    for p in preps:
        p.report.seconds = p.report.extra.get("seconds_expected", 0.0) + (
            kernel_seconds if p.report.error is None else 0.0)
        p.report.extra["seconds_total"] = round(p.report.seconds, 2)
    return [p.report for p in preps]


def _prepare(path: Path, solutions: Path, case_seed: int, extras: list) -> _Prepared:
    prep = _Prepared(Report(str(path)), path)
    t0 = time.perf_counter()
    try:
        prep.sha = sha256_file(path) if path.is_file() else None
        prep.submission = load_notebook(path)
        name = lesson_for(path.stem)
        if name is None:
            raise GradeError(f"{path}: no exercise matches this file name (have: {', '.join(LESSONS)})")
        solution_path = solutions / f"{name}.ipynb"
        if not solution_path.is_file():
            raise GradeError(f"{path}: no solution notebook {solution_path}")
        prep.report.solution, prep.lesson = str(solution_path), name
        prep.tasks = solution_tasks(load_notebook(solution_path), list(lesson(name).tasks))
        try:
            prep.plans = plan_lesson(name, solution_path, case_seed, extras)
        except ReferenceError_ as exc:
            raise GradeError(str(exc)) from None
        prep.nb, prep.moved = assemble(prep.submission, prep.tasks, prep.plans)
    except GradeError as exc:
        prep.report.error = str(exc)
    prep.report.extra["seconds_expected"] = round(time.perf_counter() - t0, 2)
    return prep


def _finish(prep: _Prepared, ran: dict, cpu_limit, wall_limit, case_seed, extras, credit, hidden_share) -> None:
    report, items, tasks, plans = prep.report, ran["items"], prep.tasks, prep.plans
    answers = [c.source for c in prep.submission.cells if c.cell_type == "code"]
    points_extra = {t: p for e in extras if e.applies_to(prep.lesson) for t, p in e.points.items()}
    for task, info in tasks.items():
        recs = [r for r in items if r.get("task") == task and r.get("kind") == "case"]
        by_case = {r["case"]: r for r in recs}
        cases = []
        for gc in plans[task].cases:
            rec = by_case.get(gc.name, {})
            cases.append(CaseResult(gc.name, gc.group, rec.get("outcome") == "passed",
                                    case_feedback(rec, cpu_limit), rec.get("cpu", 0.0), rec.get("wall", 0.0),
                                    rec.get("timeout")))
        share = info.hidden_share if info.hidden_share is not None else hidden_share
        public = [c for c in cases if c.group == "public"]
        secret = [c for c in cases if c.group != "public"]
        if not secret:
            share = 0.0
        vis = score_test(task, public, info.points * (1 - share), credit, hidden=False)
        hid = score_test(f"{task} (hidden)", secret, points_extra.get(task, info.points * share), credit, hidden=True)
        notes = []
        if task in prep.moved:
            notes.append("your notebook has no check cell for this task; it was checked after your last cell")
        for r in items:
            if r.get("kind") == "answer" and task in (r.get("defines") or []) and r.get("outcome") == "failed":
                notes.append(_cell_note(r, cpu_limit))
        if any(r.get("died") or r.get("timeout") == "killed" for r in recs if not r.get("skipped")):
            notes.append("the kernel died (or was killed) during this task; grading went on in a new kernel "
                         "that re-ran your earlier cells")
        described = next((r.get("stdout") for r in items if r.get("kind") == "describe" and r.get("task") == task), None)
        notes += flags(task, answers, described)
        vis.notes = notes
        report.results += [vis, hid] if hid.max_score > 0 else [vis]
    for r in items:
        if r.get("kind") == "answer" and not r.get("defines") and r.get("outcome") == "failed":
            report.notes.append(_cell_note(r, cpu_limit))
    report.notes += notebook_flags(answers)
    if ran.get("restarts"):
        report.notes.append(f"the kernel died {ran['restarts']} time(s) and was restarted")
    if prep.sha is not None and sha256_file(prep.path) != prep.sha:
        report.notes.append("warning: the submission file changed while it was graded")
    report.extra.update(_provenance(prep.path, Path(report.solution), prep.nb, case_seed, cpu_limit, wall_limit,
                                    credit))
    report.extra["cases"] = [{"task": r.get("task"), "case": r.get("case"), "passed": r.get("outcome") == "passed",
                              "cpu_s": r.get("cpu"), "wall_s": r.get("wall")}
                             for r in items if r.get("kind") == "case"]


def _cell_note(rec: dict, cpu_limit: float) -> str:
    where = f"your cell {rec.get('cell')}"
    if rec.get("timeout") in ("cpu", "killed"):
        return f"{where} used more than {cpu_limit:g} s of CPU time and was stopped"
    if rec.get("timeout") == "wall":
        return f"{where} ran past the wall-clock limit and was stopped"
    return f"{where} raised {rec.get('error') or 'an error'}"


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "numpy", "nbval", "pytest", "nbformat", "jupyter_client", "ipykernel", "llm-serving-course"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    try:
        out["git_commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                           text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None
    return out


def _provenance(path, solution, nb, case_seed, cpu_limit, wall_limit, credit) -> dict:
    pkg = ROOT / "course_lib"
    return {
        "sha256": {
            "submission": sha256_file(path),
            "solution": sha256_file(solution),
            "checks": sha256_tree(sorted((pkg / "checks").glob("*.py"))),
            "grader": sha256_tree(sorted((pkg / "grading").rglob("*.py")) + [pkg / "grade.py"]),
            "graded_notebook": __import__("hashlib").sha256(nbformat.writes(nb).encode()).hexdigest(),
        },
        "versions": _versions(),
        "options": {"case_seed": case_seed, "cpu_limit_s": cpu_limit, "wall_limit_s": wall_limit, "credit": credit},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.grade",
                                     description="Grade exercise notebooks: nbval checks them against the reference "
                                                 "answers, outside the student's kernel.")
    parser.add_argument("submissions", nargs="+", type=Path, help="student notebooks (.ipynb)")
    parser.add_argument("--json", type=Path, help="write Gradescope results.json here")
    parser.add_argument("--hidden", type=Path, action="append", default=[],
                        help="a Python file of extra hidden cases: CASES = {task: [Case, ...]} (repeatable)")
    parser.add_argument("--cpu-limit", "--timeout", type=float, default=DEFAULT_CPU_LIMIT, dest="cpu_limit",
                        help=f"CPU seconds each cell may use (default {DEFAULT_CPU_LIMIT:g})")
    parser.add_argument("--wall-limit", type=float, default=DEFAULT_WALL_LIMIT,
                        help=f"wall-clock seconds each cell may take, a backstop (default {DEFAULT_WALL_LIMIT:g})")
    parser.add_argument("--case-seed", type=int, default=DEFAULT_CASE_SEED,
                        help="seed of the random hidden cases (change it each term; default %(default)s)")
    parser.add_argument("--credit", choices=CREDIT, default="per-case",
                        help="per-case: each case earns its share (default); all: a test scores only when all pass")
    parser.add_argument("--hidden-share", type=float, default=DEFAULT_HIDDEN_SHARE,
                        help="share of a task's points for its hidden cases (default %(default)s)")
    parser.add_argument("--solutions", type=Path, default=None, help="folder of solution notebooks")
    parser.add_argument("--keep", type=Path, default=None, help="also write each assembled notebook here")
    args = parser.parse_args(argv)
    for name in ("cpu_limit", "wall_limit"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')}: must be a number of seconds > 0")
    if not 0 <= args.hidden_share <= 1:
        parser.error("--hidden-share: must be between 0 and 1")
    try:
        extras = [Extra.load(p) for p in args.hidden]
    except GradeError as exc:
        print(f"grade: {exc}", file=sys.stderr)
        return 2
    reports = grade_all(args.submissions, args.solutions, args.cpu_limit, args.wall_limit, args.case_seed, extras,
                        args.credit, args.hidden_share, args.keep)
    for report in reports:
        if report.error:
            print(f"grade: {report.error}", file=sys.stderr)
        else:
            print(table(report), flush=True)
    if args.json:
        dump(reports, args.json)
    return 2 if any(r.error for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
