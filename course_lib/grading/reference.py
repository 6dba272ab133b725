"""The reference answers: the functions of a solution notebook, defined here in the grader's process.

Every code cell of the solution runs in one namespace, in order, except its check
cells and its demo cells (marked `# NBVAL_IGNORE_OUTPUT`), with their printing kept
quiet. What the namespace then holds under a task's name is that task's reference.
"""

from __future__ import annotations

import contextlib
import io
from functools import lru_cache
from pathlib import Path

import nbformat

from course_lib.checks.core import Case


class ReferenceError_(Exception):
    """A solution notebook whose answers cannot be defined (a bug in the course, not in a submission)."""


def is_check_cell(cell) -> bool:
    return cell.get("cell_type") == "code" and "check" in (cell.get("metadata", {}).get("tags") or [])


def answer_cells(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code" and not is_check_cell(c)
            and "NBVAL_IGNORE_OUTPUT" not in c.source]


@lru_cache(maxsize=None)
def namespace(solution: str, mtime_ns: int = 0) -> dict:
    """The solution's answers, defined once per process (keyed by path and modification time)."""
    nb = nbformat.read(solution, as_version=4)
    ns: dict = {"__name__": "__reference__"}
    for i, source in enumerate(answer_cells(nb)):
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                exec(compile(source, f"{Path(solution).name}[{i}]", "exec"), ns)
        except Exception as exc:
            raise ReferenceError_(f"{solution}: a cell failed while defining the reference answers: "
                                  f"{type(exc).__name__}: {exc}") from exc
    return ns


def references(solution: Path) -> dict:
    path = Path(solution)
    return namespace(str(path.resolve()), path.stat().st_mtime_ns)


def fix_functions(solution: Path) -> dict:
    """Lesson 07's reference fixes: incident key -> fix(config) (for the diagnosis cases' healthy runs)."""
    ns = references(solution)
    return {k: ns[f"fix_incident_{k}"] for k in "abc"}


__all__ = ["Case", "references", "fix_functions", "answer_cells", "is_check_cell", "ReferenceError_"]
