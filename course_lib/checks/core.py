"""The machinery shared by every lesson's checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

PASS, FAIL = "✅", "❌"


def same(got: Any, expected: Any) -> bool:
    """Equality that understands tensors (same shape, same values, within 1e-5) and nests."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            return False
        if expected.dtype.is_floating_point:
            return torch.allclose(got.to(expected.dtype).cpu(), expected.cpu(), atol=1e-5, rtol=1e-5)
        # integer answers must match exactly: no silent truncation of 1.5 to 1
        return torch.equal(got.cpu().double(), expected.cpu().double())
    if isinstance(expected, float):
        return isinstance(got, (int, float)) and abs(got - expected) <= 1e-6
    if isinstance(expected, (list, tuple)):
        return (isinstance(got, (list, tuple)) and len(got) == len(expected)
                and all(same(g, e) for g, e in zip(got, expected)))
    return type(got) is type(expected) and got == expected if isinstance(expected, bool) else got == expected


def show(x: Any, limit: int = 120) -> str:
    """A short, deterministic rendering of a value for a verdict line."""
    if isinstance(x, torch.Tensor):
        text = f"tensor{tuple(x.shape)} {x.tolist()}"
    elif isinstance(x, float):
        text = f"{x:.6g}"
    else:
        text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Case:
    """One input and the answer a correct function gives for it."""

    name: str
    args: tuple
    expected: Any
    kwargs: dict = field(default_factory=dict)
    compare: Callable[[Any, Any], bool] = same


def run_cases(task: str, fn: Callable, cases: Sequence[Case]) -> bool:
    """Run `fn` on every case; print one verdict line; return True when all pass."""
    if not callable(fn):
        return _verdict(False, f"{task}: expected a function, got {type(fn).__name__}")
    for case in cases:
        try:
            got = fn(*case.args, **case.kwargs)
        except NotImplementedError:
            return _verdict(False, f"{task}: not implemented yet (replace `raise NotImplementedError()` with your code)")
        except Exception as exc:  # a learner's bug is a verdict, not a traceback
            return _verdict(False, f"{task}: case '{case.name}' raised {type(exc).__name__}: {exc}")
        if not case.compare(got, case.expected):
            return _verdict(False, f"{task}: case '{case.name}': expected {show(case.expected)}, got {show(got)}")
    return _verdict(True, f"{task}: all {len(cases)} cases pass")


def _verdict(ok: bool, text: str) -> bool:
    print(f"{PASS if ok else FAIL} {text}")
    return ok
