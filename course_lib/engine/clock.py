"""Clocks: how long the engine says a step took.

The engine measures every step's wall time; a clock turns a step into the
time the simulation advances by (what TTFT, TPOT and arrivals are counted in):

    MeasuredClock   'measured': the wall time the step really took (seconds)
    StepClock       'steps': one unit per step (arrivals given in steps; fully deterministic)
    CostModelClock  fixed + per_token * tokens + per_seq * sequences (seconds): a
                    deterministic stand-in for a GPU; `CostModelClock.fit(steps)` learns
                    the three numbers from measured steps

Any object with `cost(wall_s, num_tokens, num_seqs) -> float`, a `name` and a
`unit` is a clock.
"""

from __future__ import annotations

import torch

from course_lib.validate import check_choice, check_float, check_has, check_sequence, fail


class MeasuredClock:
    """A step lasts as long as it really took (seconds)."""

    name, unit = "measured", "s"

    def cost(self, wall_s: float, num_tokens: int, num_seqs: int) -> float:
        return wall_s


class StepClock:
    """Every step lasts one unit: times and arrivals are counted in steps."""

    name, unit = "steps", "step"

    def cost(self, wall_s: float, num_tokens: int, num_seqs: int) -> float:
        return 1.0


class CostModelClock:
    """A deterministic stand-in for a GPU: fixed + per_token * tokens + per_seq * sequences (seconds)."""

    name, unit = "cost-model", "s"

    def __init__(self, fixed: float = 5e-3, per_token: float = 2e-5, per_seq: float = 1e-5):
        self.fixed = check_float("fixed", fixed, 0, note="seconds per step")
        self.per_token = check_float("per_token", per_token, 0, note="seconds per token")
        self.per_seq = check_float("per_seq", per_seq, 0, note="seconds per sequence")

    def cost(self, wall_s: float, num_tokens: int, num_seqs: int) -> float:
        return self.fixed + self.per_token * num_tokens + self.per_seq * num_seqs

    @classmethod
    def fit(cls, steps) -> "CostModelClock":
        """The cost model that best explains measured steps (StepRecords): a least-squares
        fit of wall_s to fixed + per_token * tokens + per_seq * sequences, every coefficient
        >= 0, refitted once without the steps a busy machine slowed down (residual above
        3x the median). A clock with this model charges each step what a step of its size
        costs on this machine, without the hiccups of one particular run."""
        steps = check_sequence("steps", steps, what="a list of StepRecords (EngineResult.steps)")
        for i, s in enumerate(steps):
            check_has(f"steps[{i}]", s, ("num_tokens", "items", "wall_s"), "a StepRecord")
            check_float(f"steps[{i}].wall_s", s.wall_s, 0)
        rows = [(1.0, float(s.num_tokens), float(len(s.items)), s.wall_s) for s in steps]
        if len(rows) < 3:
            raise ValueError(f"steps: need at least 3 measured steps to fit; got {len(rows)}")
        data = torch.tensor(rows, dtype=torch.float64)                       # (S, 4)
        keep = torch.ones(len(rows), dtype=torch.bool)
        for _ in range(2):
            X, y = data[keep, :3], data[keep, 3:]                            # (S, 3), (S, 1)
            best = None
            for cols in ([0, 1, 2], [0, 1], [0, 2], [1, 2], [0], [1], [2]):  # non-negative least squares, 3 unknowns
                coef = torch.linalg.lstsq(X[:, cols], y).solution[:, 0]
                if (coef < 0).any():
                    continue
                full = torch.zeros(3, dtype=torch.float64)
                full[cols] = coef
                err = float(((X @ full[:, None] - y) ** 2).sum())
                if best is None or err < best[0]:
                    best = (err, full)
            coef = best[1]
            resid = (data[:, :3] @ coef - data[:, 3]).abs()                  # (S,)
            keep = resid <= 3 * resid.median() + 1e-12
        return cls(*(float(c) for c in coef))

    def __repr__(self) -> str:
        return (f"CostModelClock(fixed={self.fixed * 1e3:.3g} ms, per_token={self.per_token * 1e6:.3g} µs, "
                f"per_seq={self.per_seq * 1e6:.3g} µs)")


CLOCKS = {"measured": MeasuredClock, "steps": StepClock}


def make_clock(clock) -> object:
    if isinstance(clock, str):
        check_choice("clock", clock, CLOCKS, what="a clock object")
        return CLOCKS[clock]()
    if not callable(getattr(clock, "cost", None)):
        fail("clock", f"one of {', '.join(CLOCKS)} or an object with a cost(wall_s, tokens, seqs) method", clock,
             wrong_type=True)
    return clock
