"""Grade student notebooks with the solutions' own checks, one fresh kernel each.

    python -m course_lib.grade SUBMISSION.ipynb [MORE.ipynb ...] [--json results.json]
                               [--hidden HIDDEN.py] [--timeout 60] [--solutions DIR]

How a submission is graded
--------------------------
1. Its solution is found by file name in solutions/ (`01_padding.ipynb`; a renamed
   copy such as `01_padding-alice.ipynb` matches too). Each code cell of the solution
   tagged "check" is one task, named after the `check_<task>(...)` it calls, worth
   `metadata["points"]` (default 1).
2. In a fresh kernel (its working directory a new temporary folder), the
   submission's own code cells run in order, except its check cells: where the
   submission has a check cell, the *solution's* check cell runs instead (matched by
   the task it names, else by order). A task whose check cell is missing from the
   submission is checked after the last cell.
3. A task earns its points when the check's `run_cases` returned True. The verdict is
   read from that return value, not from printed text, and before every check the
   grader re-imports `course_lib.checks` fresh. So editing a check cell, printing
   "✅ ..." by hand (in any cell, or from inside the checked function) or replacing
   a check function earns nothing. Replacing a course_lib function or `print` with
   one defined in the notebook is reported and the tasks checked after it earn nothing.
4. Every cell and every check has a time limit (`--timeout`): an infinite loop is
   interrupted and costs only its task. A kernel that dies is reported against the
   task that was running, a new kernel replays the cells that ran before, and the
   remaining tasks are graded. A file that is not a notebook gets a one-line error.
   The submission file is only read, never written.

Hidden cases
------------
`--hidden FILE` names a Python file an instructor keeps out of the course repository:

    LESSON = "01_padding"                      # optional: only for this solution
    POINTS = {"pad_sequences": 2}              # optional: default 1 point each
    from course_lib.checks.core import Case, run_cases
    def check_pad_sequences(fn):               # check_<task>: extra cases for that task
        run_cases("pad_sequences", fn, [Case("tabs", ([["\\t"], []], "_", "left"), [["\\t"], ["_"]])])

Each `check_<task>` runs after the public check of that task, on the same function,
and is reported as its own test "<task> (hidden)", visible on Gradescope only once
grades are published.

Output
------
A table per submission (task, points, verdict, feedback) and a total. `--json`
writes Gradescope's autograder results.json (score, execution_time, output,
tests: name, score, max_score, status, output, visibility); with several
submissions it writes a list of those objects, each naming its submission in
`extra_data`. Exit status: 0 when every submission was graded, 2 when one could not be.

Limits: the checks run in the student's own process, so a determined student who
reads the expected answer out of the checker's stack frame, or who disguises a
replacement function, is not stopped by this grader; such code is unusual in an
exercise notebook and easy to spot when reading it.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import queue
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

DEFAULT_TIMEOUT = 60.0          # seconds, for each cell and each check
INTERRUPT_GRACE = 10.0          # seconds a kernel gets to stop after an interrupt
CHECK_CALL = re.compile(r"\bcheck_(\w+)\s*\(")
PASS, FAIL = "✅", "❌"


class GradeError(Exception):
    """A submission that cannot be graded at all; str() is one line."""


# --------------------------------------------------------------------------- the plan

@dataclass
class Task:
    """One graded task: the solution's check cell for it."""

    name: str
    code: str           # the solution's check cell, run verbatim
    points: float = 1.0
    arg: str | None = None   # the expression the check is called on, e.g. "pad_sequences"


@dataclass
class Step:
    """One thing to run in the kernel: a submission cell, or a task's check."""

    kind: str                 # "cell" or "check"
    code: str = ""
    cell: int | None = None   # index of the submission cell (for messages)
    task: Task | None = None
    moved: bool = False       # a check whose cell the submission does not have


@dataclass
class Result:
    """The outcome of one test (a task, or its hidden cases)."""

    name: str
    score: float
    max_score: float
    feedback: str
    notes: list[str] = field(default_factory=list)
    hidden: bool = False

    @property
    def passed(self) -> bool:
        return self.score >= self.max_score > 0

    def output(self) -> str:
        return "\n".join([self.feedback] + self.notes)


@dataclass
class Report:
    """Everything the grader found out about one submission."""

    submission: str
    solution: str = ""
    results: list[Result] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return sum(r.score for r in self.results)

    @property
    def max_score(self) -> float:
        return sum(r.max_score for r in self.results)


def is_check_cell(cell) -> bool:
    return cell.get("cell_type") == "code" and "check" in (cell.get("metadata", {}).get("tags") or [])


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
        cell.setdefault("metadata", {})
    return nbformat.from_dict(raw)


def find_solution(submission: Path, solutions: Path) -> Path:
    """The solution notebook for a submission: same file name, or the longest solution
    name that starts the submission's name (01_padding-alice.ipynb -> 01_padding.ipynb)."""
    candidates = sorted(solutions.glob("*.ipynb"))
    stem = submission.stem
    for sol in candidates:
        if sol.name == submission.name:
            return sol
    prefixed = [s for s in candidates if stem.startswith(s.stem)]
    if prefixed:
        return max(prefixed, key=lambda s: len(s.stem))
    names = ", ".join(s.name for s in candidates) or "none"
    raise GradeError(f"{submission}: no solution notebook matches this file name in {solutions} (have: {names})")


def task_of(code: str) -> str | None:
    m = CHECK_CALL.search(code)
    return m.group(1) if m else None


def _call_arg(code: str, name: str) -> str | None:
    """Source of the first argument of the `check_<name>(...)` call in a check cell."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            f = node.func
            fname = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if fname == f"check_{name}":
                return ast.get_source_segment(code, node.args[0])
    return None


def solution_tasks(solution: nbformat.NotebookNode) -> list[Task]:
    """The graded tasks of a solution notebook, in order."""
    tasks = []
    for i, cell in enumerate(c for c in solution.cells if is_check_cell(c)):
        name = task_of(cell.source) or f"task {i + 1}"
        points = cell.metadata.get("points", 1)
        if not isinstance(points, (int, float)) or isinstance(points, bool) or points < 0:
            raise GradeError(f"solution check cell {name!r}: metadata points must be a number >= 0; got {points!r}")
        tasks.append(Task(name, cell.source, float(points), _call_arg(cell.source, name)))
    return tasks


def plan(submission: nbformat.NotebookNode, tasks: list[Task]) -> list[Step]:
    """Interleave the submission's cells with the solution's checks.

    A submission cell tagged "check" is never run: the solution's check for the task
    it names (or, if it names none we have not placed yet, the next unplaced task)
    runs in its place. Unplaced tasks are checked after the last cell.
    """
    by_name = {t.name: t for t in tasks}
    unplaced = list(tasks)
    steps: list[Step] = []
    for i, cell in enumerate(submission.cells):
        if cell.cell_type != "code":
            continue
        if is_check_cell(cell):
            task = by_name.get(task_of(cell.source) or "")
            if task not in unplaced:
                task = unplaced[0] if unplaced else None
            if task is not None:
                unplaced.remove(task)
                steps.append(Step("check", task.code, i, task))
        elif cell.source.strip():
            steps.append(Step("cell", cell.source, i))
    if unplaced:
        steps.extend(Step("check", t.code, None, t, moved=True) for t in unplaced)
    else:  # cells after the last check cannot change a grade: do not run them
        while steps and steps[-1].kind == "cell":
            steps.pop()
    return steps


# --------------------------------------------------------------------------- hidden cases

@dataclass
class Hidden:
    """An instructor's file of extra cases: check_<task>(fn) functions."""

    path: Path
    source: str
    tasks: set[str]
    lesson: str | None = None
    points: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> "Hidden":
        try:
            source = Path(path).read_text(encoding="utf-8")
            tree = ast.parse(source, filename=str(path))
        except (OSError, UnicodeDecodeError, SyntaxError) as exc:
            raise GradeError(f"--hidden {path}: cannot read it as Python ({type(exc).__name__}: {exc})") from None
        tasks, lesson, points = set(), None, {}
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("check_"):
                tasks.add(node.name[len("check_"):])
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                target = node.targets[0].id
                try:
                    value = ast.literal_eval(node.value)
                except ValueError:
                    continue
                if target == "LESSON":
                    lesson = str(value)
                elif target == "POINTS" and isinstance(value, dict):
                    points = {str(k): float(v) for k, v in value.items()}
        if not tasks:
            raise GradeError(f"--hidden {path}: defines no check_<task>(fn) function")
        return cls(Path(path), source, tasks, lesson, points)

    def applies_to(self, solution: Path) -> bool:
        return self.lesson is None or self.lesson in (solution.stem, solution.name)


# --------------------------------------------------------------------------- the kernel

@dataclass
class Outcome:
    """What one execution did: status is ok, error, timeout or died."""

    status: str
    stdout: str = ""
    error: str = ""
    expressions: dict = field(default_factory=dict)


class Kernel:
    """A fresh IPython kernel of this Python, driven one execution at a time."""

    def __init__(self, cwd: Path, startup_timeout: float = 120.0):
        from jupyter_client.manager import KernelManager

        env = dict(os.environ)
        env.setdefault("PYTHONHASHSEED", "0")
        env.setdefault("OMP_NUM_THREADS", "2")
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        env["IPYTHONDIR"] = str(cwd / ".ipython")     # no history written to the grader's home
        # ipc sockets in the private work folder: no TCP port, nothing to eavesdrop on
        kwargs = {"transport": "ipc", "ip": str(cwd / "kernel")} if os.name == "posix" else {}
        self.km = KernelManager(kernel_name="python3", **kwargs)
        self.km.start_kernel(cwd=str(cwd), env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=startup_timeout)
        except RuntimeError as exc:
            self.shutdown()
            raise GradeError(f"the kernel did not start: {exc}") from None

    def run(self, code: str, timeout: float, expressions: dict | None = None, history: bool = False) -> Outcome:
        msg_id = self.kc.execute(code, silent=False, store_history=history,
                                 user_expressions=expressions or {}, allow_stdin=False)
        deadline = time.monotonic() + timeout
        out = Outcome("ok")
        chunks: list[str] = []
        idle = False
        while not idle:
            if time.monotonic() > deadline:
                return self._stop(msg_id, chunks)
            try:
                msg = self.kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                if not self.km.is_alive():
                    return Outcome("died", "".join(chunks))
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content.get("name") == "stdout":
                chunks.append(content.get("text", ""))
                if len(chunks) > 2000:                       # a cell that prints without end: keep the tail
                    del chunks[:1000]
            elif kind == "error":
                out.status = "error"
                out.error = f"{content.get('ename', 'Error')}: {content.get('evalue', '')}".strip()
            elif kind == "status" and content.get("execution_state") == "idle":
                idle = True
        out.stdout = "".join(chunks)
        reply = self._reply(msg_id, max(1.0, deadline - time.monotonic()))
        if reply is None:
            return Outcome("died", out.stdout) if not self.km.is_alive() else out
        if reply.get("status") == "error" and out.status == "ok":
            out.status, out.error = "error", f"{reply.get('ename', 'Error')}: {reply.get('evalue', '')}"
        for key, value in (reply.get("user_expressions") or {}).items():
            if value.get("status") == "ok":
                out.expressions[key] = value.get("data", {}).get("text/plain")
        return out

    def _reply(self, msg_id: str, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.kc.get_shell_msg(timeout=0.2)
            except queue.Empty:
                if not self.km.is_alive():
                    return None
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg["content"]
        return None

    def _stop(self, msg_id: str, chunks: list[str]) -> Outcome:
        """Time is up: interrupt; if the kernel does not stop, kill it (status 'died')."""
        try:
            self.km.interrupt_kernel()
        except Exception:
            pass
        deadline = time.monotonic() + INTERRUPT_GRACE
        while time.monotonic() < deadline:
            try:
                msg = self.kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                if not self.km.is_alive():
                    return Outcome("died", "".join(chunks))
                continue
            if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                    and msg["content"].get("execution_state") == "idle"):
                self._reply(msg_id, 2.0)
                return Outcome("timeout", "".join(chunks))
        self.shutdown()
        return Outcome("died", "".join(chunks), error="did not stop when interrupted")

    def alive(self) -> bool:
        return self.km.is_alive()

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=True)


# Run in the kernel right before every check: a fresh copy of course_lib.checks whose
# run_cases records each verdict, and a scan for course_lib functions or `print`
# replaced by objects the notebook defined.
PRELUDE = r'''
def _grader_prepare():
    import builtins, sys, types
    for name in [m for m in list(sys.modules) if m == "course_lib.checks" or m.startswith("course_lib.checks.")]:
        del sys.modules[name]
    import course_lib.checks.core as core
    log = []
    real = core.run_cases
    def run_cases(task, fn, cases):
        ok = real(task, fn, cases)
        log.append([str(task), ok is True])
        return ok
    core.run_cases = run_cases
    for mname, mod in list(sys.modules.items()):
        if mname.startswith("course_lib.checks") and getattr(mod, "run_cases", None) is real:
            mod.run_cases = run_cases
    tampered = []
    if not isinstance(builtins.print, types.BuiltinFunctionType):
        tampered.append("builtins.print")
    for mname, mod in list(sys.modules.items()):
        if not (mname == "course_lib" or mname.startswith("course_lib.")) or mname.startswith("course_lib.checks"):
            continue
        for attr, value in list(vars(mod).items()):
            if getattr(value, "__module__", None) == "__main__" and callable(value):
                tampered.append(f"{mname}.{attr}")
    return log, tampered
_grader_log, _grader_tampered = _grader_prepare()
'''
RESULT_EXPR = "__import__('json').dumps([_grader_log, _grader_tampered])"


# --------------------------------------------------------------------------- grading

def _verdict_line(stdout: str) -> str:
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip().startswith((PASS, FAIL))]
    return lines[-1] if lines else ""


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Session:
    """One submission's kernel, with the cells run so far (to replay after a death)."""

    def __init__(self, workdir: Path, timeout: float):
        self.workdir, self.timeout = workdir, timeout
        self.kernel = Kernel(workdir)
        self.ran: list[str] = []      # student cells that completed (ok or error)
        self.notes: list[str] = []    # notes for the next task

    def restart(self, why: str) -> None:
        self.kernel.shutdown()
        self.kernel = Kernel(self.workdir)
        for code in self.ran:
            out = self.kernel.run(code, self.timeout, history=True)
            if out.status == "died":
                self.notes.append("the kernel died again while replaying your cells")
                self.kernel.shutdown()
                self.kernel = Kernel(self.workdir)
                break
        self.notes.append(f"{why}; a new kernel re-ran your earlier cells and grading went on")

    def cell(self, step: Step) -> None:
        out = self.kernel.run(step.code, self.timeout, history=True)
        where = f"cell {step.cell}"
        if out.status in ("ok", "error"):
            self.ran.append(step.code)
            if out.status == "error":
                self.notes.append(f"{where} raised {_short(out.error, 160)}")
        elif out.status == "timeout":
            self.notes.append(f"{where} ran over the {self.timeout:g} s limit and was interrupted")
        else:
            self.restart(f"the kernel died while running {where}")

    def check(self, task: Task, code: str, name: str, points: float, hidden: bool = False) -> Result:
        notes, self.notes = self.notes, []
        prep = self.kernel.run(PRELUDE, self.timeout)
        if prep.status != "ok":
            if prep.status in ("died", "timeout"):
                self.restart("the kernel died before the check")
            return Result(name, 0.0, points, f"{FAIL} {task.name}: could not prepare the check ({prep.status} "
                          f"{_short(prep.error, 120)})".rstrip(), notes, hidden)
        out = self.kernel.run(code, self.timeout, expressions={"r": RESULT_EXPR})
        shown = _verdict_line(out.stdout)
        if out.status == "timeout":
            return Result(name, 0.0, points, f"{FAIL} {task.name}: the check ran over the {self.timeout:g} s limit "
                          "(an infinite loop?) and was interrupted", notes, hidden)
        if out.status == "died":
            self.restart(f"the kernel died while checking {task.name}")
            extra = f" ({out.error})" if out.error else ""
            return Result(name, 0.0, points, f"{FAIL} {task.name}: the kernel died during the check{extra} "
                          "(os._exit, a crash or out of memory?)", notes, hidden)
        if out.status == "error":
            return Result(name, 0.0, points, f"{FAIL} {task.name}: the check raised {_short(out.error, 200)}",
                          notes, hidden)
        try:
            log, tampered = json.loads(ast.literal_eval(out.expressions["r"]))
        except (KeyError, ValueError, SyntaxError, TypeError):
            return Result(name, 0.0, points, f"{FAIL} {task.name}: the check's result could not be read "
                          "(did the notebook tamper with the grader?)", notes, hidden)
        if tampered:
            return Result(name, 0.0, points, f"{FAIL} {task.name}: the notebook replaced "
                          f"{', '.join(sorted(tampered)[:4])}; checks are not trusted after that", notes, hidden)
        ok = bool(log) and all(passed for _, passed in log)
        if not log:  # a check that does not use run_cases: fall back on its verdict line
            ok = shown.startswith(f"{PASS} ")
        if ok and shown.startswith(FAIL):
            ok = False
        feedback = shown if shown and shown.startswith(PASS if ok else FAIL) else \
            f"{PASS if ok else FAIL} {task.name}: {'passes' if ok else 'fails'}"
        return Result(name, points if ok else 0.0, points, _short(feedback, 600), notes, hidden)


def grade(path: Path, solutions: Path | None = None, timeout: float = DEFAULT_TIMEOUT,
          hidden: list[Hidden] | None = None) -> Report:
    """Grade one submission. Never raises for a bad submission: see Report.error."""
    path = Path(path)
    report = Report(str(path))
    start = time.perf_counter()
    try:
        report.results = _grade(path, Path(solutions) if solutions else default_solutions(), timeout,
                                hidden or [], report)
    except GradeError as exc:
        report.error = str(exc)
    report.seconds = time.perf_counter() - start
    return report


def _grade(path: Path, solutions: Path, timeout: float, hidden: list[Hidden], report: Report) -> list[Result]:
    before = _fingerprint(path)
    submission = load_notebook(path)
    solution_path = find_solution(path, solutions)
    report.solution = str(solution_path)
    tasks = solution_tasks(load_notebook(solution_path))
    if not tasks:
        raise GradeError(f"{solution_path}: has no check cells (tag 'check') to grade with")
    extra = [h for h in hidden if h.applies_to(solution_path)]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="grade-") as workdir:
        session = _Session(Path(workdir), timeout)
        try:
            for step in plan(submission, tasks):
                if step.kind == "cell":
                    session.cell(step)
                    continue
                task = step.task
                if step.moved:
                    session.notes.append("your notebook has no check cell for this task; it was checked at the end")
                results.append(session.check(task, task.code, task.name, task.points))
                for h in extra:
                    if task.name in h.tasks:
                        arg = task.arg or task.name
                        code = (f"_grader_hidden = {{'__name__': '_grader_hidden'}}\n"
                                f"exec(compile({h.source!r}, {str(h.path.name)!r}, 'exec'), _grader_hidden)\n"
                                f"_grader_hidden['check_{task.name}']({arg})")
                        results.append(session.check(task, code, f"{task.name} (hidden)",
                                                     h.points.get(task.name, 1.0), hidden=True))
        finally:
            session.kernel.shutdown()
    order = {t.name: i for i, t in enumerate(tasks)}
    results.sort(key=lambda r: (order[r.name.removesuffix(" (hidden)")], r.hidden))
    if _fingerprint(path) != before:
        results[-1].notes.append("warning: the submission file changed while it was graded")
    return results


def _fingerprint(path: Path) -> tuple:
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), path.stat().st_mtime_ns


def default_solutions() -> Path:
    """solutions/ of the repository this package lives in, else ./solutions."""
    here = Path(__file__).resolve().parents[1] / "solutions"
    return here if here.is_dir() else Path("solutions")


# --------------------------------------------------------------------------- reporting

def table(report: Report) -> str:
    """The per-task table a teacher reads, with the total."""
    if report.error:
        return f"{report.submission}: ERROR {report.error}"
    lines = [f"{report.submission}  (checked with {report.solution}, {report.seconds:.1f} s)"]
    width = max([len(r.name) for r in report.results] + [5])
    lines.append(f"  {'task':<{width}}  {'points':^11}  verdict  feedback")
    for r in report.results:
        text = r.feedback + (f"  [{'; '.join(r.notes)}]" if r.notes else "")
        lines.append(f"  {r.name:<{width}}  {_num(r.score):>4} / {_num(r.max_score):<4}  "
                     f"{'pass' if r.passed else 'FAIL':<7}  {_short(text, 160)}")
    lines.append(f"  {'total':<{width}}  {_num(report.score):>4} / {_num(report.max_score):<4}")
    return "\n".join(lines)


def _num(x: float) -> str:
    return f"{x:g}"


def gradescope(report: Report) -> dict:
    """Gradescope's autograder results.json for one submission."""
    extra = {"submission": report.submission, "solution": report.solution, "seconds": round(report.seconds, 2)}
    if report.error:
        return {"score": 0.0, "execution_time": round(report.seconds, 2),
                "output": f"This notebook could not be graded: {report.error}", "tests": [], "extra_data": extra}
    return {
        "score": report.score,
        "execution_time": round(report.seconds, 2),
        "output": f"{Path(report.solution).stem}: {_num(report.score)} / {_num(report.max_score)} points",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": [{
            "name": r.name,
            "score": r.score,
            "max_score": r.max_score,
            "status": "passed" if r.passed else "failed",
            "output": r.output(),
            "visibility": "after_published" if r.hidden else "visible",
        } for r in report.results],
        "extra_data": extra,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.grade",
                                     description="Grade exercise notebooks with the solutions' checks.")
    parser.add_argument("submissions", nargs="+", type=Path, help="student notebooks (.ipynb)")
    parser.add_argument("--json", type=Path, help="write Gradescope results.json here")
    parser.add_argument("--hidden", type=Path, action="append", default=[],
                        help="a Python file of hidden check_<task>(fn) cases (repeatable)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds allowed for each cell and each check (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--solutions", type=Path, default=None, help="folder of solution notebooks")
    args = parser.parse_args(argv)
    if not args.timeout > 0:
        parser.error(f"--timeout: must be a number of seconds > 0; got {args.timeout:g}")
    try:
        hidden = [Hidden.load(p) for p in args.hidden]
    except GradeError as exc:
        print(f"grade: {exc}", file=sys.stderr)
        return 2
    reports = []
    for sub in args.submissions:
        report = grade(sub, args.solutions, args.timeout, hidden)
        reports.append(report)
        if report.error:
            print(f"grade: {report.error}", file=sys.stderr)
        else:
            print(table(report), flush=True)
    if args.json:
        payload = gradescope(reports[0]) if len(reports) == 1 else [gradescope(r) for r in reports]
        args.json.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 2 if any(r.error for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
