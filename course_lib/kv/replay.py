"""Replay a request trace through any KV store, one iteration at a time.

No model is needed to see where memory goes: what matters is when each
request arrives, how long its prompt is, and how many tokens it will
generate. Each iteration (an Orca-style step):

1. requests whose arrival time has come join the waiting queue;
2. every running request grows by one token (its newest token's K/V); a store
   that allocates lazily may run out here: the newest running request is then
   preempted (freed, put back at the head of the queue, recomputed later);
3. waiting requests are admitted first come, first served: `store.add` with the
   request's final length; the first refusal (KVAllocationError) stops
   admission for this step (head-of-line blocking, as in Orca);
4. the step runs: with `model=None` the store just records the new tokens as
   cached; with a model, TinyLM really runs the packed step through
   `store.step_context`, writing K/V into the store, and greedy-picks tokens;
5. usage and (every `snapshot_every` steps) the memory map are recorded;
6. requests holding all their prompt + output tokens finish and are freed.

A request of prompt P and output O ends holding the K/V of all P + O tokens
(the last generated token is fed once more), so under the Oracle policy its
reservation is used exactly.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from course_lib.kv.base import KVAllocationError, KVStore, KVUsage, free_memory_paradox
from course_lib.kv.step import PackedStep
from course_lib.progress import progress_bar
from course_lib.workloads import Request, Trace
from course_lib.validate import check_callable, check_float, check_has, check_int, check_sequence, check_type

SHARE_KEYS = ("token_states", "reserved", "internal", "external", "free")
FIGURE2_KEYS = ("token_states", "reservation", "internal", "external_and_others")

# Kwon et al., "Efficient Memory Management for Large Language Model Serving with
# PagedAttention", SOSP 2023, Figure 2: average share of KV-cache memory (%), OPT-13B,
# ShareGPT-like traffic, Orca baselines with a buddy allocator (section 6.1).
PAPER_FIGURE2 = {
    "max": {"token_states": 20.4, "reservation": 13.3, "internal": 57.3, "external_and_others": 8.9},
    "pow2": {"token_states": 26.8, "reservation": 17.9, "internal": 13.6, "external_and_others": 41.6},
    "oracle": {"token_states": 38.2, "reservation": 25.2, "internal": 0.0, "external_and_others": 36.6},
}
PAPER_VLLM_TOKEN_SHARE = 96.3
PAPER_SOURCE = "Kwon et al. (vLLM), SOSP 2023, Figure 2"
# Same paper, Figure 13: mean batched requests, OPT-13B, ShareGPT at 2 req/s.
PAPER_FIGURE13_SHAREGPT = {"max": 7.00, "pow2": 9.81, "oracle": 13.62, "vllm": 30.42}
# ... and Alpaca at 30 req/s.
PAPER_FIGURE13_ALPACA = {"max": 7.00, "pow2": 43.24, "oracle": 72.75, "vllm": 132.44}


@dataclass
class Refusal:
    """An admission the store refused (`paradox`: with enough memory free in total)."""

    step: int
    seq_id: int
    requested: int
    largest_free: int
    total_free: int

    @property
    def paradox(self) -> bool:
        return free_memory_paradox(self.requested, self.largest_free, self.total_free)


@dataclass
class ReplayResult:
    trace_name: str
    store_name: str
    capacity: int
    step_time: float
    steps: list[int] = field(default_factory=list)              # step index of every record
    usage: list[KVUsage] = field(default_factory=list)          # usage at that step
    running: list[int] = field(default_factory=list)            # requests in the batch
    waiting: list[int] = field(default_factory=list)            # arrived, not admitted
    refusals: list[Refusal | None] = field(default_factory=list)  # the refusal at that step, if any
    snapshots: dict[int, list] = field(default_factory=dict)    # step -> store.memory_map()
    admitted: dict[int, int] = field(default_factory=dict)      # seq_id -> first admission step
    finished: dict[int, int] = field(default_factory=dict)      # seq_id -> finishing step
    preemptions: int = 0
    outputs: dict[int, list[int]] = field(default_factory=dict)  # seq_id -> generated tokens (model mode)
    final_lens: dict[int, int] = field(default_factory=dict)
    complete: bool = True                                        # every request finished

    def busy(self) -> list[bool]:
        """Steps at which a request was refused memory (the arena was the bottleneck)."""
        return [r is not None for r in self.refusals]

    @property
    def busy_fraction(self) -> float:
        return sum(self.busy()) / len(self.steps) if self.steps else 0.0

    def shares(self, busy_only: bool = True) -> dict[str, float]:
        """Mean share of capacity per category over the (busy) steps, as fractions."""
        picked = [u for u, b in zip(self.usage, self.busy()) if b or not busy_only]
        if not picked:
            return {k: 0.0 for k in SHARE_KEYS}
        return {k: sum(u.shares()[k] for u in picked) / len(picked) for k in SHARE_KEYS}

    def figure2(self, busy_only: bool = True) -> dict[str, float]:
        """Mean shares in the vLLM paper's Figure 2 categories: token_states, reservation,
        internal, external_and_others (see ArenaUsage.figure2; other stores: external + free)."""
        picked = [u for u, b in zip(self.usage, self.busy()) if b or not busy_only]
        keys = FIGURE2_KEYS
        if not picked:
            return {k: 0.0 for k in keys}
        total = dict.fromkeys(keys, 0.0)
        for u in picked:
            if hasattr(u, "figure2"):
                parts = u.figure2()
            else:
                sh = u.shares()
                parts = {"token_states": sh["token_states"], "reservation": sh["reserved"],
                         "internal": sh["internal"], "external_and_others": sh["external"] + sh["free"]}
            for k in keys:
                total[k] += parts[k]
        return {k: v / len(picked) for k, v in total.items()}

    def paradox_refusals(self) -> list[Refusal]:
        return [r for r in self.refusals if r is not None and r.paradox]

    def mean_batch(self, busy_only: bool = False) -> float:
        picked = [n for n, b in zip(self.running, self.busy()) if b or not busy_only]
        return sum(picked) / len(picked) if picked else 0.0

    def summary(self) -> dict[str, Any]:
        s = self.shares()
        refused = [r for r in self.refusals if r is not None]
        return {"store": self.store_name, "steps": len(self.steps), "finished": len(self.finished),
                "busy steps": f"{self.busy_fraction:.0%}", "mean batch": round(self.mean_batch(), 2),
                **{f"{k} %": round(100 * v, 1) for k, v in s.items()},
                "refusals": len(refused), "with total free >= request": len(self.paradox_refusals()),
                "preemptions": self.preemptions}


class _Live:
    """A request inside the replay."""

    def __init__(self, req: Request, model_mode: bool):
        self.req, self.id = req, req.id
        self.tokens = list(req.prompt)       # prompt + tokens generated so far
        self.cached = 0                      # tokens whose K/V are in the store
        self.model_mode = model_mode

    @property
    def produced(self) -> int:
        return len(self.tokens) - self.req.prompt_len

    def placeholder(self) -> int:
        """A stand-in token when no model picks one (deterministic, printable)."""
        return 32 + (self.id * 31 + self.produced * 7) % 95


def _store_name(store: KVStore) -> str:
    parts = [type(store).__name__]
    for attr in ("reservation", "placement"):
        if hasattr(store, attr):
            parts.append(str(getattr(store, attr)))
    return " / ".join(parts)


@torch.no_grad()
def replay(trace: Trace, store: KVStore, *, step_time: float = 0.05, model=None, max_steps: int = 200_000,
           snapshot_every: int | None = 10, max_batch: int | None = None, progress: bool = False) -> ReplayResult:
    """Run `trace` through `store`; returns what happened at every step.

    step_time:      seconds one iteration stands for (maps arrival times to steps)
    model:          a TinyLM to really run (small traces only); None = allocation only
    max_steps:      stop after this many recorded steps (result.complete tells)
    snapshot_every: record store.memory_map() every this many steps (None: never)
    max_batch:      at most this many requests run at once (None: memory decides)
    """
    check_type("trace", trace, Trace, "a workloads.Trace")
    check_type("store", store, KVStore)
    check_float("step_time", step_time, 0, lo_open=True, note="seconds per iteration")
    check_int("max_steps", max_steps, 1, 10_000_000)
    check_int("snapshot_every", snapshot_every, 1, none_ok=True)
    check_int("max_batch", max_batch, 1, none_ok=True)
    if model is not None:
        check_has("model", model, ("forward_ctx", "config", "device"), "a TinyLM or None")
    capacity = getattr(store, "capacity", None) or 0
    limit = getattr(store, "max_model_len", None) or (model.config.max_position_embeddings if model is not None else None)
    for r in trace:
        if limit is not None and r.final_len > limit:
            raise ValueError(f"trace: request {r.id} needs {r.final_len} tokens; the store/model allows {limit}")
        if capacity and r.final_len > capacity:
            raise ValueError(f"trace: request {r.id} needs {r.final_len} tokens; the store holds {capacity} in all")
    result = ReplayResult(trace.name, _store_name(store), capacity, float(step_time))
    result.final_lens = {r.id: r.final_len for r in trace}
    pending = deque(sorted(trace, key=lambda r: (r.arrival, r.id)))
    waiting: deque[_Live] = deque()
    running: list[_Live] = []
    bar = None
    if progress:
        bar = progress_bar(total=len(pending), desc="requests finished")

    step = 0
    while (pending or waiting or running) and len(result.steps) < max_steps:
        if not waiting and not running:                         # idle: jump to the next arrival
            step = max(step, math.ceil(pending[0].arrival / step_time - 1e-9))
        now = step * step_time
        while pending and pending[0].arrival <= now + 1e-12:
            waiting.append(_Live(pending.popleft(), model is not None))

        # 1. running requests make room for their next token; preempt the newest on failure
        batch: list[tuple[_Live, int]] = []
        i = 0
        while i < len(running):
            r = running[i]
            try:
                store.grow(r.id, r.cached + 1)
                i += 1
            except KVAllocationError:
                victim = running.pop()
                store.free(victim.id)
                victim.cached = 0
                waiting.appendleft(victim)
                result.preemptions += 1
        batch = [(r, 1) for r in running]

        # 2. admit waiting requests, first come first served, until the first refusal
        refusal = None
        while waiting and (max_batch is None or len(running) < max_batch):
            r = waiting[0]
            try:
                hit = store.add(r.id, r.tokens, r.req.final_len)
                store.grow(r.id, len(r.tokens))
            except KVAllocationError as e:
                if r.id in store.cached:                    # added, but could not grow: undo
                    store.free(r.id)
                refusal = Refusal(step, r.id, e.requested, e.largest_free, e.total_free)
                break
            waiting.popleft()
            r.cached = hit
            running.append(r)
            batch.append((r, len(r.tokens) - hit))
            result.admitted.setdefault(r.id, step)

        # 3. the step itself
        if batch:
            if model is not None:
                packed = PackedStep(model, store, [(r.id, r.tokens[r.cached:r.cached + n]) for r, n in batch])
                picks = packed.run().argmax(-1).tolist()                             # greedy, each one's last token
            else:
                for r, n in batch:
                    store.cached[r.id] = r.cached + n
                picks = [None] * len(batch)
            for (r, n), pick in zip(batch, picks):
                r.cached += n
                if r.produced < r.req.output_len and r.cached == len(r.tokens):
                    r.tokens.append(pick if pick is not None else r.placeholder())

        # 4. record
        result.steps.append(step)
        result.usage.append(store.usage())
        result.running.append(len(running))
        result.waiting.append(len(waiting))
        result.refusals.append(refusal)
        if snapshot_every and hasattr(store, "memory_map") and (len(result.steps) - 1) % snapshot_every == 0:
            result.snapshots[step] = store.memory_map()

        # 5. finish
        still = []
        for r in running:
            if r.cached >= r.req.final_len:
                store.free(r.id)
                result.finished[r.id] = step
                if model is not None:
                    result.outputs[r.id] = r.tokens[r.req.prompt_len:r.req.prompt_len + r.req.output_len]
                if bar is not None:
                    bar.update(1)
            else:
                still.append(r)
        running = still
        step += 1

    if bar is not None:
        bar.close()
    result.complete = not (pending or waiting or running)
    for r in running:                                   # leave the store as we found it
        store.free(r.id)
    return result


def compare_policies(trace: Trace, make_store, policies=("max", "pow2", "oracle"), **kwargs) -> dict[str, ReplayResult]:
    """Replay the same trace once per reservation policy: make_store(policy) -> a fresh store."""
    check_callable("make_store", make_store, "a function policy -> KVStore")
    check_sequence("policies", policies, 1, what="a list of reservation policies")
    return {p: replay(trace, make_store(p), **kwargs) for p in policies}
