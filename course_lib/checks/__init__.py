"""Exercise checks. Each `check_*` runs a learner's function on several cases
(edge cases included) and prints ONE deterministic verdict line:

    ✅ pad_sequences: all 6 cases pass
    ❌ pad_sequences: case 'left padding': expected [...], got [...]

The stored output of a check cell in solutions/ is the passing line; nbval
grades a submission by whether its check cells reproduce it.
"""

from course_lib.checks.core import Case, run_cases

__all__ = ["Case", "run_cases"]
