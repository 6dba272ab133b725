"""Claims: sentences about a measurement, checked when the lesson runs.

A lesson never types "the paged kernel is faster" into its text. It measures,
then states the sentence through `claim`, rendered from the numbers it just got:

    claim(ratio < 1, f"here the paged kernel took {ratio:.2f}x contiguous attention's time",
          f"here the paged kernel took {ratio:.2f}x contiguous attention's time: NOT less, as the text expects")

If the condition holds, the learner reads the sentence with a check mark. If it
does not, the learner is told plainly that this run does not show what the
lesson says, and, under the course's tests (COURSE_STRICT_CLAIMS=1, which
`make test` sets), the cell fails: a lesson whose story no longer holds cannot
pass CI.
"""

from __future__ import annotations

import os

STRICT_ENV = "COURSE_STRICT_CLAIMS"


class ClaimFailed(AssertionError):
    """A lesson's sentence about its own measurement did not hold on this run."""


def strict() -> bool:
    """True when a failed claim must raise (the test suite), False for a learner."""
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


class Verdict:
    """What `claim` returns: true or false as the claim held, and shown as nothing when it
    ends a notebook cell (the printed sentence is the cell's output, not an extra `True`)."""

    def __init__(self, holds: bool):
        self.holds = holds

    def __bool__(self) -> bool:
        return self.holds

    def __repr__(self) -> str:
        return f"Verdict({self.holds})"

    def _ipython_display_(self) -> None:
        """IPython calls this instead of printing the repr: display nothing."""


def claim(holds: bool, said: str, otherwise: str | None = None) -> Verdict:
    """Print `said` if `holds`, else a plain warning (raising ClaimFailed in strict mode).

    holds:     the condition the sentence rests on, computed from this run's numbers
    said:      the sentence, rendered from those numbers
    otherwise: what to print when it does not hold (default: `said`, marked as not holding)
    Returns a Verdict, true if the claim held.
    """
    if not isinstance(said, str) or not said:
        raise TypeError(f"said: must be a non-empty str; got {said!r}")
    holds = bool(holds)
    if holds:
        print(f"✔ {said}")
        return Verdict(True)
    message = otherwise or f"expected: {said}"
    print(f"✘ On this run the lesson's claim does not hold: {message}")
    if strict():
        raise ClaimFailed(message)
    return Verdict(False)
