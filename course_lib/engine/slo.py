"""Service-level objectives: tail latencies and goodput.

A mean hides what users complain about. A chat service promises targets on
the TAIL, per request:

    TTFT   time to first token (arrival -> first token): the wait before text appears
    TBT    time between tokens: every gap between two consecutive tokens of a
           stream (a stall shows up here, even if the average pace is fine)

and reports percentiles: p50 (the typical request), p90, p99 (the unlucky one
in a hundred). Sarathi-Serve (OSDI 2024) sizes a server by its P99 TBT;
DistServe (OSDI 2024) by its **goodput**: the requests that meet BOTH their
TTFT and their per-token targets, not the tokens produced. A server that
streams fast but leaves one user in ten waiting 5 s for the first token has
high throughput and poor goodput.

    slo = SLO(ttft=0.5, tbt=0.05)            # seconds (or steps with a step clock)
    report = slo_report(result, slo)          # percentiles, attainment, goodput
    print(report.table())

How a request's stream is judged against the TBT target (`per_request`):
'max' every gap must meet it (the streaming user's view, the default), 'p90'
nine gaps in ten, 'mean' the average gap (DistServe's TPOT).
Rejected requests and requests that never produced a token miss the SLO.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from course_lib.engine.metrics import percentile, table
from course_lib.engine.request import Request, State
from course_lib.validate import check_choice, check_float, check_has, check_mapping, check_sequence, check_type

PER_REQUEST = ("max", "p99", "p90", "mean")
QUANTILES = (50, 90, 99)


@dataclass(frozen=True)
class SLO:
    """Latency targets, in the run's clock unit (seconds, or steps with a step clock).

    ttft:        first token within this long after arrival
    tbt:         time between tokens within this long (judged per `per_request`)
    per_request: 'max' (every gap), 'p99', 'p90' (that share of gaps), 'mean' (TPOT)
    """

    ttft: float
    tbt: float
    per_request: str = "max"

    def __post_init__(self):
        for name in ("ttft", "tbt"):
            check_float(name, getattr(self, name), 0, lo_open=True, finite=False, note="clock units; inf = no target")
        check_choice("per_request", self.per_request, PER_REQUEST)


def gaps(token_times: Sequence[float]) -> list[float]:
    """The times between consecutive tokens of one stream."""
    return [b - a for a, b in zip(token_times, token_times[1:])]


def ttft_of(req: Request) -> float | None:
    return None if not req.token_times else req.token_times[0] - req.arrival


def tbt_of(req: Request, per_request: str = "max") -> float | None:
    """One number for a request's stream (None with fewer than two tokens)."""
    check_choice("per_request", per_request, PER_REQUEST)
    g = gaps(req.token_times)
    if not g:
        return None
    if per_request == "max":
        return max(g)
    if per_request == "mean":
        return sum(g) / len(g)
    return percentile(g, 99 if per_request == "p99" else 90)


def meets(req: Request, slo: SLO) -> bool:
    """Did this request meet both targets? (Rejected or token-less requests did not.)"""
    if req.state is State.REJECTED or not req.token_times:
        return False
    if ttft_of(req) > slo.ttft + 1e-12:
        return False
    tbt = tbt_of(req, slo.per_request)
    return tbt is None or tbt <= slo.tbt + 1e-12


def percentiles(xs: Iterable[float], qs: Sequence[float] = QUANTILES) -> dict[str, float]:
    """{'p50': ..., 'p90': ..., 'p99': ...} by nearest rank (nan for no data)."""
    xs = check_sequence("xs", xs, what="a list of numbers")
    for i, q in enumerate(check_sequence("qs", qs, 1, what="a list of percentiles")):
        check_float(f"qs[{i}]", q, 0, 100)
    return {f"p{q:g}": percentile(xs, q) for q in qs}


@dataclass
class SLOReport:
    """Tail latencies and goodput of one run against one SLO."""

    slo: SLO
    requests: int
    met: int
    makespan: float
    ttft: dict[str, float]
    tbt: dict[str, float]              # over ALL gaps of all streams (pooled)
    ttft_values: list[float] = field(default_factory=list)
    tbt_values: list[float] = field(default_factory=list)
    met_rids: list[int] = field(default_factory=list)

    @property
    def attainment(self) -> float:
        """Share of requests that met both targets."""
        return self.met / self.requests if self.requests else float("nan")

    @property
    def goodput(self) -> float:
        """Requests meeting both targets per clock unit (per second with a time clock)."""
        return self.met / self.makespan if self.makespan > 0 else 0.0

    def row(self, label: str = "") -> dict:
        out = {"run": label} if label else {}
        out.update({f"ttft_{k}": v for k, v in self.ttft.items()})
        out.update({f"tbt_{k}": v for k, v in self.tbt.items()})
        out.update({"slo_met": f"{self.met}/{self.requests}", "attainment": self.attainment, "goodput": self.goodput})
        return out

    def table(self, label: str = "") -> str:
        return table([self.row(label)])


def slo_report(result, slo: SLO) -> SLOReport:
    """Percentiles of TTFT (per request) and TBT (every gap, pooled), and goodput,
    for any result with `.requests` (EngineResult, DisaggResult)."""
    check_type("slo", slo, SLO, "an SLO(ttft=..., tbt=...)")
    check_has("result", result, ("requests",), "an EngineResult or DisaggResult")
    reqs = list(result.requests)
    ttfts = [t for t in map(ttft_of, reqs) if t is not None]
    all_gaps = [g for r in reqs for g in gaps(r.token_times)]
    met = [r.rid for r in reqs if meets(r, slo)]
    ends = [r.finish_time for r in reqs if r.finish_time is not None]
    start = min((r.arrival for r in reqs), default=0.0)
    makespan = (max(ends) - start) if ends else 0.0
    return SLOReport(slo, len(reqs), len(met), makespan, percentiles(ttfts), percentiles(all_gaps),
                     ttfts, all_gaps, met)


def compare(results: dict, slo: SLO, scale: float = 1.0, unit: str = "") -> str:
    """A text table: one row per run (label -> result), latencies multiplied by `scale`."""
    check_mapping("results", results, "a dict {label: result}")
    check_float("scale", scale, 0, lo_open=True)
    rows = []
    for label, res in results.items():
        rep = slo_report(res, slo)
        row = {"run": label}
        for k, v in rep.ttft.items():
            row[f"TTFT {k}"] = v * scale
        for k, v in rep.tbt.items():
            row[f"TBT {k}"] = v * scale
        row["SLO met"] = f"{rep.met}/{rep.requests}"
        row["goodput"] = rep.goodput
        rows.append(row)
    units = {c: unit for c in rows[0] if c.startswith(("TTFT", "TBT"))} if rows and unit else None
    return table(rows, units=units)


# ---- a deterministic clock with the shape of a GPU's costs ---------------------------------------------
# A step of N tokens over S sequences costs fixed + per_token * N + per_seq * S seconds. The numbers are the
# course's own choice (not a measurement): on a GPU a decode step is dominated by reading the weights once
# (the fixed part), and a step that also holds a long prompt takes several times longer (the per-token part).
GPU_LIKE = {"fixed": 0.010, "per_token": 0.00025, "per_seq": 0.0001}


def gpu_like_clock():
    """CostModelClock(fixed=10 ms, per_token=0.25 ms, per_seq=0.1 ms): deterministic latencies."""
    from course_lib.engine.clock import CostModelClock
    return CostModelClock(**GPU_LIKE)


__all__ = ["SLO", "PER_REQUEST", "gaps", "ttft_of", "tbt_of", "meets", "percentiles", "SLOReport", "slo_report",
           "compare", "GPU_LIKE", "gpu_like_clock"]
