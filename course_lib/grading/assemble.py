"""The notebook nbval checks: the submission's answer cells, then each task's case cells.

For a submission, in order:

* every code cell of the submission that is not a check cell, as it is, with no
  stored output (nbval runs it and compares nothing: the submission's outputs never count);
* where the submission has the check cell of a task (tagged "check", or calling
  `check_<task>(`), that task's cells instead: one that prints what the function
  refers to (not compared: course_lib's own answers get flagged), then one cell per
  case, which calls course_lib.checks.core.run_case on the case's input and stores
  the REFERENCE answer's line as its output. nbval compares the two lines.
* tasks whose check cell the submission lacks come after its last cell.

Every cell's metadata["grader"] says what it is, for the plugin and the report.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

import nbformat

from course_lib.checks.core import prefix
from course_lib.grading.cases import GradeError, TaskPlan
from course_lib.grading.reference import is_check_cell

CHECK_CALL = re.compile(r"\bcheck_(\w+)\s*\(")
CORE = '__import__("course_lib.checks.core", fromlist=["run_case"])'


@dataclass
class TaskInfo:
    name: str
    fn: str                 # the expression the check cell passes, e.g. "pad_sequences"
    points: float = 1.0
    hidden_share: float | None = None


def solution_tasks(solution: nbformat.NotebookNode, names) -> dict[str, TaskInfo]:
    """The graded tasks named by the solution's check cells, with their points."""
    out = {}
    for cell in solution.cells:
        if not is_check_cell(cell):
            continue
        name = next((m for m in CHECK_CALL.findall(cell.source) if m in names), None)
        if name is None:
            raise GradeError(f"a solution check cell names no known task: {cell.source[:80]!r}")
        points = cell.metadata.get("points", 1)
        share = cell.metadata.get("hidden_share")
        for label, v in (("points", points), ("hidden_share", share)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
                raise GradeError(f"solution check cell {name!r}: metadata {label} must be a number >= 0; got {v!r}")
        out[name] = TaskInfo(name, _call_arg(cell.source, name) or name, float(points),
                             None if share is None else float(share))
    missing = [n for n in names if n not in out]
    if missing:
        raise GradeError(f"the solution has no check cell for {', '.join(missing)}")
    return out


def _call_arg(code: str, name: str) -> str | None:
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


def defined_names(source: str) -> set[str]:
    """Names a cell binds at its top level (def, class, assignment, import)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    out = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return out


def _code_cell(source: str, meta: dict, outputs=(), count=None):
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata = {"grader": meta}
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=t) for t in outputs]
    cell.execution_count = count
    return cell


def task_cells(info: TaskInfo, plan: TaskPlan) -> list:
    cells = [_code_cell(f"# NBVAL_IGNORE_OUTPUT\n{CORE}.describe({info.fn})", {"kind": "describe", "task": info.name})]
    for i, case in enumerate(plan.cases):
        src = (f"# {info.name}: case {i + 1} of {len(plan.cases)} ({case.group})\n"
               f"{CORE}.run_case({case.probe!r}, {info.name!r}, {info.fn}, {case.name!r}, {case.args_json!r})")
        meta = {"kind": "case", "task": info.name, "case": case.name, "group": case.group, "judge": case.judge,
                "args": case.args_json}
        cells.append(_code_cell(src, meta, [prefix(info.name, case.name) + case.expected + "\n"], count=i + 1))
    return cells


def assemble(submission: nbformat.NotebookNode, tasks: dict[str, TaskInfo],
             plans: dict[str, TaskPlan]) -> tuple[nbformat.NotebookNode, list[str]]:
    """(the notebook to check, the tasks checked after the submission's last cell)."""
    names = list(tasks)
    placed: list[str] = []
    body: list = []
    for i, cell in enumerate(submission.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        named = [m for m in CHECK_CALL.findall(cell.source) if m in names]
        if is_check_cell(cell) or named:
            task = next((n for n in named if n not in placed), None)
            if task is None and is_check_cell(cell):
                task = next((n for n in names if n not in placed), None)
            if task is not None:
                placed.append(task)
                body.extend(task_cells(tasks[task], plans[task]))
            continue
        defines = sorted(n for n in names if tasks[n].fn in defined_names(cell.source))
        body.append(_code_cell(cell.source, {"kind": "answer", "cell": i, "defines": defines}))
    moved = [n for n in names if n not in placed]
    for n in moved:
        body.extend(task_cells(tasks[n], plans[n]))
    while body and body[-1].metadata["grader"]["kind"] == "answer":
        body.pop()                                  # cells after the last check cannot change a grade
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nb.cells = body
    return nb, moved
