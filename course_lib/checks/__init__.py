"""Exercise checks: each task's public cases and the check cells' `check_<task>(fn)`.

A check cell prints ONE verdict line while you work:

    ✅ pad_sequences: all 7 cases pass
    ❌ pad_sequences: case 'left padding': expected [...], got [...]

It compares with the public cases' expected results in checks/expected/ (made by
`make exercises` from the solutions). Grading is stricter and happens elsewhere:
course_lib.grade runs more cases, in a fresh kernel, and compares outside it
(course_lib.checks.core explains the plain-data lines it compares).

    python -m course_lib.checks exercises/01_padding.ipynb     # run a notebook, print its verdicts
"""

from course_lib.checks.core import Case, Task

__all__ = ["Case", "Task"]
