"""The serving loop: one iteration at a time, on a real model and a real KV store.

Every step does the same five things:

    1. schedule   the scheduler's policy picks (request, n_tokens) for this step;
                  KV memory is reserved (preempting if it runs out)
    2. build      the chosen tokens become ONE model input
    3. run        model.forward_ctx(...) through the store's attention context
    4. sample     each request whose tokens reached its end gets its next token
    5. finish     requests that hit <EOS> or max_new_tokens free their KV and slot

Two ways to build the input of a step (`step_mode`):

    'packed'  B = 1, every request's new tokens side by side, no padding
              (selective batching, Orca: the matmuls see one (1, N) batch;
              attention runs per request through `store.step_context`, or with
              attention='batched' all decoding requests in one call)
    'padded'  one row per occupied slot, new tokens right-aligned and padded to
              the longest row (B, T), keys gathered and padded too: what a
              fixed-shape batch does. A row whose request computes nothing this
              step (a finished member of a static batch, a paused decode) is
              all padding: the cost of not reorganising the batch.

Time comes from a clock: 'measured' (each step takes the wall time it really
took; idle gaps jump to the next arrival), 'steps' (each step is 1 unit:
arrivals are given in steps, fully deterministic), or a CostModelClock.
Every step records its wall time and phase times either way.

The parts it calls live beside it: engine/scheduler.py (who runs, and KV
reservation), kv/step.py (one packed model step, the path every caller runs),
engine/clock.py (the clocks), engine/sample.py (the sampler), engine/fork.py
(parallel sampling and beam search: n samples or W beams forked after the
prefill, on shared blocks), engine/heap.py (the heap frozen while it runs: no
long garbage-collector pauses inside steps), kv/contexts.py (the padded and batched-decode
attention contexts, for any store).
"""

from __future__ import annotations

import math
import time
from typing import Callable, Iterable, Literal, get_args

import torch

from course_lib.device import synchronize
from course_lib.engine.clock import make_clock
from course_lib.engine.fork import beam_rows, fork_samples
from course_lib.engine.heap import frozen_heap
from course_lib.engine.metrics import EngineResult, StepRecord
from course_lib.engine.request import Rejection, Request, State
from course_lib.engine.sample import Sampler
from course_lib.engine.scheduler import Limits, Policy, Preemption, Scheduler
from course_lib.kv.base import KVStore
from course_lib.kv.contexts import BatchedDecodeContext, PaddedStepContext
from course_lib.kv.reference import ReferenceKVStore
from course_lib.kv.step import PackedStep
from course_lib.progress import progress_bar
from course_lib.validate import (check_bool, check_callable, check_choice, check_has, check_int, check_iterable,
                                 check_type, is_int, is_number)

StepMode = Literal["packed", "padded"]
AttentionMode = Literal["auto", "store", "batched"]
STEP_MODES: tuple[str, ...] = get_args(StepMode)
ATTENTION: tuple[str, ...] = get_args(AttentionMode)


# ---- the engine -------------------------------------------------------------
class Engine:
    """An iteration-level serving engine.

    model:    a TinyLM (anything with forward_ctx and .config)
    store:    any KVStore (default: an unlimited ReferenceKVStore, or one of
              `kv_capacity` token slots)
    policy:   'static', 'prefill-first', 'decode-first', 'chunked', or a Policy
    max_running, max_tokens_per_step: the batch limits (see scheduler.Limits)
    kv_margin: the share of the KV store kept free before admitting a newcomer while
              others run (scheduler.Limits; 0, the default: admit whenever it fits)
    preemption: 'recompute' (free KV, redo it later) or 'swap' (store.swap_out/in)
    step_mode: 'packed' or 'padded'
    clock:    'measured', 'steps' or a clock object with cost(wall_s, tokens, seqs)
    sampler:  callable (requests, logits (S, V)) -> tokens; default greedy/seeded
    queue:    the queue policy (engine/queues.py): 'fcfs' (default), 'priority', 'edf',
              ..., a key function (req) or (req, now), or a QueuePolicy; it orders
              the waiting queue and chooses preemption victims
    scheduler: the scheduler's class, or any factory called as
              scheduler(store, policy, limits, preemption, queue): a subclass
              changes how requests are admitted (engine/disagg.py)
    attention: packed steps only: 'store' (the store's own step context: one
              attention call per request, the readable path), 'batched' (decodes
              in one call: BatchedDecodeContext), 'auto' (batched unless the
              store brings its own context, e.g. a paged kernel)
    """

    def __init__(self, model, store: KVStore | None = None, policy: str | Policy = "prefill-first",
                 max_running: int = 8, max_tokens_per_step: int = 256, preemption: Preemption = "recompute",
                 step_mode: StepMode = "packed", clock="measured", sampler: Callable | None = None,
                 queue="fcfs", kv_capacity: int | None = None, attention: AttentionMode = "auto",
                 scheduler: Callable[..., Scheduler] = Scheduler, kv_margin: float = 0.0):
        check_has("model", model, ("forward_ctx", "config", "device"), "a TinyLM (anything with forward_ctx and .config)")
        check_type("store", store, KVStore, "a KVStore (e.g. PagedKVStore.for_model(model, ...))", none_ok=True)
        check_choice("step_mode", step_mode, STEP_MODES)
        check_choice("attention", attention, ATTENTION)
        check_callable("sampler", sampler, "a callable (requests, logits) -> tokens", none_ok=True)
        check_callable("scheduler", scheduler, "a Scheduler class or factory")
        check_int("kv_capacity", kv_capacity, 1, none_ok=True, note="token slots of the default store")
        if store is not None and kv_capacity is not None:
            raise ValueError("kv_capacity: give either a store or a capacity for the default store, not both")
        self.model = model
        self.store = store if store is not None else ReferenceKVStore.for_model(model, capacity=kv_capacity)
        self.limits = Limits(max_running, max_tokens_per_step, kv_margin)
        self.scheduler = scheduler(self.store, policy, self.limits, preemption, queue)
        self.step_mode, self.clock = step_mode, make_clock(clock)
        own_context = type(self.store).step_context is not KVStore.step_context
        self.attention = ("store" if own_context else "batched") if attention == "auto" else attention
        self.sampler = sampler or Sampler()
        self.device = model.device
        self.now = 0.0
        self.steps: list[StepRecord] = []
        self.requests: list[Request] = []
        self._pending: list[Request] = []      # submitted, not arrived yet (sorted by arrival)
        self._next_rid = 0
        self._rids: set[int] = set()           # ids of every request submitted so far (and of every fork)
        self._fork_rid = 0                     # forks (samples, beams) count down from -1

    @property
    def config(self) -> dict:
        return {"policy": self.scheduler.policy.name, "max_running": self.limits.max_running,
                "max_tokens_per_step": self.limits.max_tokens_per_step, "kv_margin": self.limits.kv_margin,
                "preemption": self.scheduler.preemption,
                "step_mode": self.step_mode, "attention": self.attention, "clock": self.clock.name, "unit": self.clock.unit,
                "store": type(self.store).__name__}

    # ---- requests in --------------------------------------------------------
    def submit(self, req: Request) -> Request:
        """Queue a request; it joins the scheduler when the clock reaches its arrival.

        Admission control: a request that can never be served is REJECTED here, before
        any work, with its kind (`req.rejection`) and reason (`req.finish_reason`) kept
        in the result; every other request is still served. See `admission_problem`."""
        check_type("req", req, Request)
        if req.state is not State.WAITING or req.output or req.num_computed:
            raise ValueError(f"req: request {req.rid} has already run; submit a fresh copy (clone_requests)")
        if req.rid is None:
            req.rid = self._next_rid
        problem = self.admission_problem(req)
        self.requests.append(req)
        if is_int(req.rid):
            self._next_rid = max(self._next_rid, int(req.rid) + 1)
            self._rids.add(int(req.rid))
        if problem is not None:
            req.state, (req.rejection, req.finish_reason) = State.REJECTED, problem
            return req
        self._pending.append(req)
        self._pending.sort(key=lambda r: (r.arrival, r.rid))
        return req

    def longest_request(self) -> tuple[int, str]:
        """(tokens, what sets it): the longest prompt + max_new_tokens this engine can ever
        serve, the smaller of the model's context and what its KV store can ever hold."""
        limit = self.model.config.max_position_embeddings
        what = f"the model's context of {limit} tokens"
        store_limit = self.store.longest_sequence()
        if store_limit is not None and store_limit < limit:
            name = type(self.store).__name__
            field = "max_model_len" if store_limit == getattr(self.store, "max_model_len", None) else "capacity"
            limit, what = store_limit, f"what the KV store can ever hold for one sequence ({name}.{field}={store_limit})"
        return limit, what

    def admission_problem(self, req: Request) -> tuple[Rejection, str] | None:
        """Why `req` can never be served by this engine (kind, reason), or None.

        INVALID    a field is out of range: a token id outside the vocabulary (or not an
                   integer), a NaN or negative arrival, a NaN temperature, a rid that is not
                   an integer, ...
        DUPLICATE  its rid is already used by another request of this engine
        TOO_LONG   prompt + max_new_tokens exceed longest_request()
        """
        try:
            req.validate(self.model.config.vocab_size)
        except ValueError as exc:                      # BadType is a ValueError too
            return Rejection.INVALID, str(exc)
        if req.rid in self._rids:
            forks = " (the engine's samples and beams use negative ids)" if is_int(req.rid) and req.rid < 0 else ""
            return Rejection.DUPLICATE, f"rid: {req.rid} is already used by another request{forks}"
        limit, what = self.longest_request()
        if req.max_len > limit:
            return Rejection.TOO_LONG, (f"prompt ({len(req.prompt)}) + max_new_tokens ({req.max_new_tokens}) "
                                        f"exceeds {what}")
        return self.width_problem(req)

    def width_problem(self, req: Request) -> tuple[Rejection, str] | None:
        """Why this engine can never run req's n samples or W beams at once, or None: each takes a
        batch slot; beams step together, so W tokens must fit in one step's budget; beams fork."""
        what = f"n: {req.n} samples" if req.n > 1 else f"beam_width: {req.beam_width} beams"
        if req.width > self.limits.max_running:
            return Rejection.INVALID, (f"{what} need {req.width} batch slots at once; max_running is "
                                       f"{self.limits.max_running}")
        if req.beam_width > 1 and req.beam_width > self.limits.max_tokens_per_step:
            return Rejection.INVALID, (f"{what} step together: {req.beam_width} tokens a step; "
                                       f"max_tokens_per_step is {self.limits.max_tokens_per_step}")
        if req.beam_width > 1 and not self.store.can_fork:
            return Rejection.INVALID, (f"{what} share their history by forking; {type(self.store).__name__} "
                                       f"cannot fork (use a PagedKVStore)")
        return None

    def new_rid(self) -> int:
        """A fresh id for a fork (a sample or a beam): negative, never used before here."""
        self._fork_rid -= 1
        while self._fork_rid in self._rids:
            self._fork_rid -= 1
        self._rids.add(self._fork_rid)
        return self._fork_rid

    def _arrive(self) -> None:
        while self._pending and self._pending[0].arrival <= self.now:
            self.scheduler.add_request(self._pending.pop(0))

    def next_event(self) -> float:
        """The clock time of the next step (now if there is work; else the next arrival;
        inf when nothing is left): what runs two engines side by side in simulated time."""
        if self.scheduler.has_work():
            return self.now
        if self._pending:
            return max(self.now, self._pending[0].arrival)
        return math.inf

    # ---- the loop -------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> StepRecord | None:
        """Run one model step (jumping over idle time first). None when all is done.
        Under torch.inference_mode (no_grad that also skips autograd's view and version
        tracking: a little less fixed cost per operation); what it makes stays inside the step."""
        empty_plans = 0
        while True:
            self._arrive()
            if not self.scheduler.has_work():
                if not self._pending:
                    return None
                self.now = max(self.now, self._pending[0].arrival)     # idle until the next arrival
                continue
            t0 = time.perf_counter()
            work = self.scheduler.schedule(self.now)
            events = self.scheduler.events
            if work:
                break
            empty_plans += 1                     # rejections can empty a plan; anything else is a bug
            if empty_plans > 50 or (empty_plans > 2 and not events):
                raise RuntimeError(f"scheduler: {type(self.scheduler.policy).__name__} planned no work "
                                   f"{empty_plans} times (events {events}; waiting "
                                   f"{[r.rid for r in self.scheduler.waiting]}, running "
                                   f"{[r.rid for r in self.scheduler.running]})")
        t1 = time.perf_counter()
        if self.step_mode == "packed":
            logits_rows, sample_reqs, query_slots, t2, t3 = self._run_packed(work)
        else:
            logits_rows, sample_reqs, query_slots, t2, t3 = self._run_padded(work)
        rec = StepRecord(index=len(self.steps), start=self.now, duration=0.0, wall_s=0.0,
                         schedule_s=t1 - t0, build_s=t2 - t1, model_s=t3 - t2, sample_s=0.0,
                         num_tokens=sum(n for _, n in work), query_slots=query_slots,
                         preempted=[rid for e, rid in events if e in ("preempt", "swap")],
                         rejected=[rid for e, rid in events if e == "reject"])
        computing = {r.rid: ("decode" if r.output and n == 1 and r.remaining == 1 else "prefill")
                     for r, n in work}
        rec.items = [(r.rid, n, computing[r.rid]) for r, n in work]
        rec.slots = [(slot, r.rid, "held" if held else computing.get(r.rid, "stalled"))
                     for slot, r, held in self.scheduler.slot_table()]
        for r, n in work:
            r.num_computed += n
        # a token is out once sampled; freeing finished requests still belongs to this step
        token_time = rec.start + self.clock.cost(time.perf_counter() - t0, rec.num_tokens, len(work))
        searches = beam_rows(sample_reqs, logits_rows)                         # beam searches step on their own
        plain = [i for i, r in enumerate(sample_reqs) if r.search is None]
        tokens = self.sampler([sample_reqs[i] for i in plain], logits_rows[plain]) if plain else []
        for i, tok in zip(plain, tokens):
            r = sample_reqs[i]
            out = [(r, tok)]
            if r.n > 1 and not r.output:                                       # prefilled: fork its other samples
                out += fork_samples(self, r, logits_rows[i])
                self.requests += r.samples
            for s, t in out:
                self._emit(s, int(t), token_time, rec.index)
        for search, rows in searches.items():
            search.step(self, rows, token_time, rec.index)
        t4 = time.perf_counter()
        rec.wall_s = t4 - t0
        rec.sample_s = t4 - t3
        rec.duration = self.clock.cost(rec.wall_s, rec.num_tokens, len(work))
        if not (is_number(rec.duration) and 0 <= rec.duration < math.inf):     # a NaN would stop time: never end
            raise ValueError(f"clock: {self.clock!r}.cost(...) must return a finite number >= 0; "
                             f"got {rec.duration!r}")
        self.now = rec.start + rec.duration
        usage = self.store.usage()                      # instrumentation, outside the timed step
        rec.kv_token_states, rec.kv_capacity = usage.token_states, usage.capacity
        if hasattr(self.store, "sharing"):
            sharing = self.store.sharing()
            rec.kv_blocks_named, rec.kv_blocks_held = sharing["logical_blocks"], sharing["physical_blocks"]
        self.steps.append(rec)
        return rec

    def _emit(self, r: Request, token: int, token_time: float, step: int) -> None:
        """A sampled token is out: append it, time it, and finish the request if it stops there."""
        r.output.append(token)
        r.token_out(token_time, step)
        reason = r.should_stop()
        if reason:
            self.scheduler.finish(r, reason)
            r.finish_time, r.finish_step = token_time, step

    def _check_sync(self, work) -> None:
        for r, _ in work:
            if self.store.num_cached(r.rid) != r.num_computed:
                raise RuntimeError(f"request {r.rid}: the store has {self.store.num_cached(r.rid)} tokens cached "
                                   f"but the engine computed {r.num_computed}")

    def _run_packed(self, work):
        self._check_sync(work)
        step = PackedStep(self.model, self.store, [(r.rid, r.next_tokens(n))
                                                   for r, n in work],
                          context=BatchedDecodeContext if self.attention == "batched" else None)
        synchronize(self.device)
        t2 = time.perf_counter()
        last = step.run()                                                     # (len(work), V)
        ends = [i for i, (r, n) in enumerate(work) if n == r.remaining]     # reached its end: sample
        out = last[ends]                                                      # (S, V)
        synchronize(self.device)
        return out, [work[i][0] for i in ends], step.num_tokens, t2, time.perf_counter()

    def _run_padded(self, work):
        self._check_sync(work)
        n_of = {r.rid: n for r, n in work}
        table = self.scheduler.slot_table()
        row_reqs = [(r, held) for _, r, held in table]
        rows = [(None if held else r.rid, 0 if held else n_of.get(r.rid, 0)) for r, held in row_reqs]
        T = max(n for _, n in rows)
        ctx = PaddedStepContext(self.store, rows, T)
        new_tokens = [r.next_tokens(n) if n else [] for (r, _), (_, n) in zip(row_reqs, rows)]
        ids, positions = ctx.inputs(new_tokens, self.device)                  # (B, T), (B, T)
        synchronize(self.device)
        t2 = time.perf_counter()
        logits = self.model.forward_ctx(ids, positions, ctx)                  # (B, T, V)
        ctx.commit()
        sample_rows, reqs = [], []
        for b, ((r, held), (_, n)) in enumerate(zip(row_reqs, rows)):
            if n and n == r.remaining:
                sample_rows.append(b)
                reqs.append(r)
        order = {id(r): i for i, (r, _) in enumerate(work)}                   # sample in work order
        pairs = sorted(zip(sample_rows, reqs), key=lambda p: order[id(p[1])])
        out = logits[[b for b, _ in pairs], -1] if pairs else logits[:0, -1]   # (S, V)
        synchronize(self.device)
        return out, [r for _, r in pairs], len(rows) * T, t2, time.perf_counter()

    def run(self, requests: Iterable[Request] = (), progress: bool = False, max_steps: int | None = None) -> EngineResult:
        """Submit `requests`, step until every request has finished or been rejected.
        The steps run with the heap frozen (engine/heap.py: no long garbage-collector pause
        walks the objects that were alive before the run)."""
        check_bool("progress", progress)
        check_int("max_steps", max_steps, 1, none_ok=True)
        for r in check_iterable("requests", requests, what="a list of Requests"):
            self.submit(r)
        bar = None
        if progress:
            bar = progress_bar(total=sum(r.max_new_tokens for r in self.requests), desc=self.scheduler.policy.name,
                               unit="tok")
        with frozen_heap():
            while max_steps is None or len(self.steps) < max_steps:
                before = sum(len(r.output) for r in self.requests) if bar else 0
                if self.step() is None:
                    break
                if bar:
                    bar.update(sum(len(r.output) for r in self.requests) - before)
        if bar:
            bar.close()
        return self.result()

    def result(self) -> EngineResult:
        def order(r):                     # by id; a request's samples right after it
            if r.parent_rid is not None:
                return (0, r.parent_rid, r.sample_index, "")
            return (0, r.rid, 0, "") if is_int(r.rid) else (1, 0, 0, repr(r.rid))
        reqs = sorted(self.requests, key=order)
        return EngineResult(reqs, list(self.steps), self.config)


def clone_requests(requests: Iterable[Request]) -> list[Request]:
    """Fresh copies (inputs only, `Request.clone`) so the same trace can run under several engines."""
    return [r.clone() for r in requests]


def serve(model, requests: Iterable[Request], **engine_kwargs) -> EngineResult:
    """Run fresh copies of `requests` through a new Engine; returns its EngineResult."""
    return Engine(model, **engine_kwargs).run(clone_requests(requests))
