"""What a serving run is judged by, computed from what the engine recorded.

Per request (times on the engine's clock):

    TTFT  time to first token   = first token's time - arrival
          (queueing + prefill: what a chat user feels before text appears)
    TPOT  time per output token = (last token's time - first token's time) / (n_out - 1)
          (the streaming speed once text flows; undefined for a single token)
    E2E   end-to-end latency    = finish - arrival
    max gap  the longest wait between two consecutive tokens: a "generation
          stall", what a prefill-prioritised scheduler inflicts on running requests

Per step (the engine records one StepRecord per model call):

    occupancy  slots computing this step / max_running
    padding    query slots computed on <pad> (padded steps) / all query slots
    reorg      time spent rebuilding the batch: scheduling + building inputs
               (the overhead of dynamic batch reorganisation), next to model time

Per run:

    throughput  generated tokens / (last finish - first arrival)
    wall tok/s  generated tokens / seconds actually spent in steps
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from course_lib.engine.request import Rejection, Request, State
from course_lib.validate import is_int


def ttft_tpot(arrival: float, token_times: Sequence[float]) -> tuple[float | None, float | None]:
    """(TTFT, TPOT) of one request from its arrival and the times its tokens came out.

    TTFT is None with no token; TPOT is None with fewer than two tokens
    (there is no "per token" time between one token and itself).
    """
    if not token_times:
        return None, None
    ttft = token_times[0] - arrival
    if len(token_times) < 2:
        return ttft, None
    return ttft, (token_times[-1] - token_times[0]) / (len(token_times) - 1)


def max_gap(token_times: Sequence[float]) -> float | None:
    """Longest time between two consecutive tokens (None with fewer than two)."""
    if len(token_times) < 2:
        return None
    return max(b - a for a, b in zip(token_times, token_times[1:]))


@dataclass
class StepRecord:
    """One model step: what ran, where, and how long each phase took."""

    index: int
    start: float                     # clock time the step began
    duration: float                  # clock time it took (== wall_s with the measured clock)
    wall_s: float                    # measured seconds, whole step
    schedule_s: float                # policy + KV bookkeeping
    build_s: float                   # assembling input ids, positions, attention context
    model_s: float                   # the forward pass
    sample_s: float                  # sampling, appending, finishing requests
    items: list[tuple[int, int, str]] = field(default_factory=list)   # (rid, n_tokens, 'prefill'|'decode')
    slots: list[tuple[int, int, str]] = field(default_factory=list)   # (slot, rid, 'prefill'|'decode'|'stalled'|'held')
    num_tokens: int = 0              # real tokens computed
    query_slots: int = 0             # tokens computed incl. padding (B*T padded, N packed)
    kv_token_states: int = 0         # KV slots holding a token after the step
    kv_capacity: int = 0
    kv_blocks_named: int = 0         # paged stores: blocks the block tables name, summed over sequences
    kv_blocks_held: int = 0          # ... and physical blocks held (fewer when blocks are shared)
    preempted: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def reorg_s(self) -> float:
        return self.schedule_s + self.build_s

    @property
    def padded_tokens(self) -> int:
        return self.query_slots - self.num_tokens

    @property
    def kind(self) -> str:
        kinds = {k for _, _, k in self.items}
        return "mixed" if len(kinds) > 1 else (kinds.pop() if kinds else "idle")


@dataclass
class EngineResult:
    """Everything one engine run produced."""

    requests: list[Request]
    steps: list[StepRecord]
    config: dict

    @property
    def finished(self) -> list[Request]:
        return [r for r in self.requests if r.state is State.FINISHED]

    @property
    def rejected(self) -> list[Request]:
        return [r for r in self.requests if r.state is State.REJECTED]

    def outputs(self) -> dict[int, list[int]]:
        """{rid: tokens generated} for every request id. A request rejected for reusing an
        id does not replace the tokens of the request that held it first; one rejected for
        an id that is not an integer has no entry."""
        out: dict[int, list[int]] = {}
        for r in self.requests:
            if r.rejection is not Rejection.DUPLICATE and is_int(r.rid):
                out.setdefault(int(r.rid), list(r.output))
        return out

    def samples(self) -> dict[int, list[list[int]]]:
        """{rid: [tokens of sample 0, 1, ...]} for every submitted request (a request with
        n = 1 has one sample: its output; a beam search's is its best hypothesis)."""
        out: dict[int, list[list[int]]] = {}
        for r in self.requests:
            if r.parent_rid is None and r.rejection is not Rejection.DUPLICATE and is_int(r.rid):
                out.setdefault(int(r.rid), [list(r.output)] + [list(s.output) for s in r.samples])
        return out

    def block_sharing(self) -> dict[str, float]:
        """Blocks named by the tables vs held, summed over every step (paged stores), and the
        share that sharing saved: 1 - held / named (vLLM's Figure 15 measures this)."""
        named = sum(s.kv_blocks_named for s in self.steps)
        held = sum(s.kv_blocks_held for s in self.steps)
        return {"named": named, "held": held, "saved": 1 - held / named if named else 0.0}

    @property
    def generated_tokens(self) -> int:
        return sum(len(r.output) for r in self.requests)

    @property
    def makespan(self) -> float:
        """From the first arrival to the last finished request."""
        if not self.steps:
            return 0.0
        first = min(r.arrival for r in self.requests)
        return self.steps[-1].end - first

    @property
    def throughput(self) -> float:
        """Generated tokens per clock unit (tokens/s with the measured clock)."""
        return self.generated_tokens / self.makespan if self.makespan > 0 else 0.0

    @property
    def wall_s(self) -> float:
        return sum(s.wall_s for s in self.steps)

    @property
    def wall_throughput(self) -> float:
        """Generated tokens per measured second of steps (idle time excluded)."""
        return self.generated_tokens / self.wall_s if self.wall_s > 0 else 0.0

    def latencies(self) -> dict[str, list[float]]:
        """Per finished request: ttft, tpot (requests with >= 2 tokens), e2e, max_gap."""
        out = {"ttft": [], "tpot": [], "e2e": [], "max_gap": []}
        for r in self.finished:
            ttft, tpot = ttft_tpot(r.arrival, r.token_times)
            out["ttft"].append(ttft)
            out["e2e"].append(r.finish_time - r.arrival)
            if tpot is not None:
                out["tpot"].append(tpot)
                out["max_gap"].append(max_gap(r.token_times))
        return out

    def summary(self) -> dict:
        """One row of numbers for a comparison table."""
        lat = self.latencies()
        steps = self.steps
        max_running = self.config.get("max_running", 1)
        wall = self.wall_s or float("nan")
        row = {
            "policy": self.config.get("policy", "?"),
            "steps": len(steps),
            "finished": len(self.finished),
            "rejected": len(self.rejected),
            "generated": self.generated_tokens,
            "makespan": self.makespan,
            "throughput": self.throughput,
            "wall_tok_s": self.wall_throughput,
            "ttft_mean": mean(lat["ttft"]), "ttft_p90": percentile(lat["ttft"], 90),
            "tpot_mean": mean(lat["tpot"]), "tpot_p90": percentile(lat["tpot"], 90),
            "max_gap": max(lat["max_gap"], default=float("nan")),
            "e2e_mean": mean(lat["e2e"]),
            "occupancy": mean([len(s.items) / max_running for s in steps]),
            "padding": (sum(s.padded_tokens for s in steps) / max(1, sum(s.query_slots for s in steps))),
            "reorg_share": sum(s.reorg_s for s in steps) / wall,
            "reorg_us_per_step": 1e6 * mean([s.reorg_s for s in steps]),
            "model_us_per_step": 1e6 * mean([s.model_s for s in steps]),
            "preemptions": sum(r.num_preemptions for r in self.requests),
        }
        return row


def mean(xs: Sequence[float]) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def percentile(xs: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank); nan for no data."""
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = max(0, math.ceil(q / 100 * len(xs)) - 1)
    return xs[k]


def table(rows: Sequence[dict], columns: Sequence[str] | None = None, units: dict | None = None) -> str:
    """Rows of numbers as an aligned text table (floats to 3 significant digits)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    units = units or {}
    head = [f"{c}{' (' + units[c] + ')' if c in units else ''}" for c in columns]

    def fmt(v):
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.3g}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
