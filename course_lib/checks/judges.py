"""When two results are the same answer.

A judge takes what a function returned, as data (course_lib.checks.core.encode),
the reference answer's text, and the case's arguments, and returns the text to
show for the result: the reference's text when the result is an equally good
answer, its own text otherwise. The grader runs judges in its own process,
never in the learner's kernel; nbval then compares the texts.

    exact       the same data (an int is not a float, a list is not a tensor)
    close       numbers within 1e-9 (relative or absolute); ints stay ints
    close_1e-5  the same, within 1e-5: float tensors computed another way
    partition   bucket_batches: any split of the indices with the reference's batch
                sizes and no more padding
Lessons 06 and 07 add judges that run the engine (course_lib.checks.scheduling,
course_lib.checks.incidents).
"""

from __future__ import annotations

import json
import math
from functools import partial
from typing import Any

from course_lib.checks.core import dumps, strip_messages


def exact(got: Any, want: str, args=None) -> str:
    return want if dumps(strip_messages(got)) == want else dumps(got)


def similar(got: Any, ref: Any, rtol: float, atol: float) -> bool:
    """Same structure and types; floats within tolerance (an int result may stand for a float)."""
    if isinstance(ref, dict) and "__tensor__" in ref:
        if not (isinstance(got, dict) and "__tensor__" in got):
            return False
        (gd, gs, gv), (rd, rs, rv) = got["__tensor__"], ref["__tensor__"]
        return gd == rd and gs == rs and similar(gv, rv, rtol, atol)
    if type(ref) is float:
        return (type(got) in (int, float) and (math.isnan(got) == math.isnan(ref))
                and (math.isnan(ref) or got == ref or abs(got - ref) <= atol + rtol * abs(ref)))
    if isinstance(ref, list):
        return isinstance(got, list) and len(got) == len(ref) and all(similar(g, r, rtol, atol) for g, r in zip(got, ref))
    if isinstance(ref, dict):
        return (isinstance(got, dict) and set(got) == set(ref)
                and all(similar(got[k], ref[k], rtol, atol) for k in ref))
    return type(got) is type(ref) and got == ref


def close(got: Any, want: str, args=None, rtol: float = 1e-9, atol: float = 1e-9) -> str:
    if want is None:
        return dumps(got)
    return want if similar(strip_messages(got), json.loads(want), rtol, atol) else dumps(got)


def partition(got: Any, want: str, args) -> str:
    """bucket_batches: a split of 0..n-1 into batches of the reference's sizes, with no more padding."""
    if want is None:
        return dumps(got)
    lengths, ref = args[0], json.loads(want)
    if not (isinstance(got, list) and all(isinstance(b, list) and all(type(i) is int for i in b) for b in got)):
        return dumps(got)
    if sorted(i for b in got for i in b) != list(range(len(lengths))):
        return dumps(got)
    if sorted(map(len, got)) != sorted(map(len, ref)):
        return dumps(got)
    return want if padding_slots(lengths, got) <= padding_slots(lengths, ref) else dumps(got)


def padding_slots(lengths, batches) -> int:
    return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches if b)


JUDGES = {
    "exact": exact,
    "close": close,
    "close_1e-5": partial(close, rtol=1e-5, atol=1e-5),
    "partition": partition,
}
