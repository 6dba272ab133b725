"""Who runs in the next model step, and how many of their tokens.

The scheduler keeps two queues and a row of batch slots:

    waiting   requests that arrived (or were preempted) and hold no KV on the device
    running   admitted requests: each holds a slot and KV memory
    slots     max_running places in the batch (what the timeline draws)

Every step it asks its **policy** for a plan, a small pure decision:

    Plan.admit   waiting requests to admit now (in this order)
    Plan.work    (request, n_tokens) to compute in this step, in packing order

and then makes the plan real against the KV store: it grows each running
request's KV for the tokens it will compute (oldest first), admits the
newcomers (`store.add`, or `store.swap_in` for a swapped one), and when
memory runs out it **preempts** the least important running request (the
one with the largest key: by default the latest arrival), either
freeing its KV to recompute later (`preemption='recompute'`) or moving it to
CPU memory (`'swap'`). A request that cannot fit even with nothing else in
the store is **rejected** with the allocator's message: never lost.

Policies (each a few lines; they only decide, the scheduler enforces):

    StaticBatching   request-level: form a batch, prefill it, decode it until its
                     LAST member finishes; finished members keep their slot idle;
                     newcomers wait for the whole batch (the standard, decode-
                     prioritised way before Orca)
    PrefillFirst     iteration-level (Orca-style): newcomers join at the very next
                     step and their whole prompts go first into the step's token
                     budget; running decodes get what is left (mix_decodes=False:
                     prefill-only steps that pause every decode, as early vLLM did)
    DecodeFirst      iteration-level, decodes first: every running request gets its
                     next token; a newcomer's whole prompt joins only if it fits in
                     the budget that is left
    ChunkedPrefill   Sarathi-style: decodes first, then the rest of the budget is
                     filled with a CHUNK of the next prompt(s), so prefill and decode
                     interleave and no step is longer than the budget

Limits: `max_running` slots, `max_tokens_per_step` (the token budget of one
step), the KV store's capacity, and `kv_margin`: while less than that share of
the store is free and requests are running, no newcomer is admitted (vLLM's
watermark, transformers' safety_margin), so the running requests keep room to
grow instead of being preempted for a newcomer's blocks. A request with n samples or W beams
(engine/fork.py) needs that many slots at once: it is admitted only when they
are free, and its samples or beams take them when they fork after its prefill. A non-chunking policy never splits a
prompt, except one longer than the whole budget: it runs alone, in
budget-sized pieces, so it cannot block the queue forever.

Extending it (priority scheduling, lesson 06): pass `queue=` a queue policy
(engine/queues.py: a name such as 'priority' or 'edf', a key function such as
`lambda r: -r.priority`, or a QueuePolicy). `key(req)` = (its key, arrival,
rid) orders the waiting queue AND picks preemption victims (largest key first).
A policy may also call `scheduler.preempt(request)` from its `plan` to make
room for a more important newcomer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, get_args

from course_lib.engine.queues import QueuePolicy, as_key
from course_lib.engine.request import Rejection, Request, State
from course_lib.kv.base import KVAllocationError, KVStore
from course_lib.validate import check_callable, check_choice, check_float, check_int, check_type

Preemption = Literal["recompute", "swap"]
PREEMPTION_MODES: tuple[str, ...] = get_args(Preemption)


@dataclass(frozen=True)
class Limits:
    """The knobs every policy works within."""

    max_running: int = 8             # batch slots: requests admitted at once
    max_tokens_per_step: int = 256   # token budget of one step (prefill + decode tokens)
    kv_margin: float = 0.0           # no newcomer while less than this share of the KV store is free (0: none)

    def __post_init__(self):
        for name, hi in (("max_running", 4096), ("max_tokens_per_step", 1 << 20)):
            check_int(name, getattr(self, name), 1, hi)
        check_float("kv_margin", self.kv_margin, 0, 1, hi_open=True,
                    note="the share of the KV store kept free before admitting a newcomer")


@dataclass
class Plan:
    """A policy's decision for one step."""

    admit: list[Request] = field(default_factory=list)
    work: list[tuple[Request, int]] = field(default_factory=list)


def prefill_share(req: Request, left: int, budget: int, chunked: bool) -> int:
    """How many of `req`'s remaining prefill tokens run in a step that has `left`
    of its `budget` tokens unspent.

    chunked:     as many as fit (a chunk)
    not chunked: all of them or none; except a prefill longer than the whole
                 budget, which takes the whole budget when the step is still empty
    """
    need = req.remaining
    if left <= 0:
        return 0
    if chunked or need <= left:
        return min(need, left)
    return budget if (need > budget and left == budget) else 0


class Policy:
    """Decides the plan of one step from the scheduler's queues. Subclass and
    override `plan`; read `s.running`, `s.waiting`, `s.free_slots`, `s.limits`."""

    name = "policy"
    holds_slots = False   # True: a finished member's slot stays taken until the batch ends

    def plan(self, s: "Scheduler") -> Plan:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class StaticBatching(Policy):
    """Request-level batching: the batch is formed once, prefilled, then decoded
    step after step until its last member finishes. Nobody joins mid-batch."""

    name = "static"
    holds_slots = True

    def plan(self, s: "Scheduler") -> Plan:
        budget = s.limits.max_tokens_per_step
        admit = s.fitting(s.waiting) if s.batch_done else []
        members = s.running + admit
        work, left = [], budget
        if any(r.is_prefilling for r in members):          # prefill phase: the whole batch first
            for r in members:
                if r.is_prefilling:
                    n = prefill_share(r, left, budget, chunked=False)
                    if n:
                        work.append((r, n))
                        left -= n
        else:                                              # decode phase: every member, one token
            for r in members[:left]:
                work.append((r, 1))
        return Plan(admit, work)


class _Continuous(Policy):
    """Iteration-level batching: a slot freed at one step is refilled at the next."""

    prefill_first = False
    chunked = False
    mix_decodes = True

    def plan(self, s: "Scheduler") -> Plan:
        budget = s.limits.max_tokens_per_step
        plan, left = Plan(), [budget]

        def decodes():
            for r in s.running:
                if r.is_decoding and left[0] > 0:
                    plan.work.append((r, 1))
                    left[0] -= 1

        def prefills():
            for r in s.running:                            # prompts already under way
                if r.is_prefilling:
                    n = prefill_share(r, left[0], budget, self.chunked)
                    if n:
                        plan.work.append((r, n))
                        left[0] -= n
            free = s.free_slots
            for r in s.waiting:                            # newcomers, in order (head-of-line)
                if free < r.width:                         # (n samples or W beams need that many slots)
                    break
                n = prefill_share(r, left[0], budget, self.chunked) if r.is_prefilling else min(1, left[0])
                if n == 0:
                    break
                plan.admit.append(r)
                plan.work.append((r, n))
                left[0] -= n
                free -= r.width

        if self.prefill_first:
            prefills()
            if self.mix_decodes or not plan.work:
                decodes()
        else:
            decodes()
            prefills()
        return plan


class PrefillFirst(_Continuous):
    """Prefill-prioritised continuous batching (Orca-style): newcomers' whole
    prompts first, then decodes with what is left of the budget.
    mix_decodes=False: a step with prefills has no decodes at all (every
    running request pauses for it)."""

    name = "prefill-first"
    prefill_first = True

    def __init__(self, mix_decodes: bool = True):
        self.mix_decodes = bool(mix_decodes)

    def __repr__(self) -> str:
        return f"PrefillFirst(mix_decodes={self.mix_decodes})"


class DecodeFirst(_Continuous):
    """Decode-prioritised continuous batching: running requests never skip a
    step; a newcomer's whole prompt joins only if it fits in the budget left."""

    name = "decode-first"


class ChunkedPrefill(_Continuous):
    """Sarathi-style: decodes first, then prompt CHUNKS fill the rest of the budget."""

    name = "chunked"
    chunked = True


class FunctionPolicy(Policy):
    """A policy written as a plain function over small tuples (the exercise's shape):

        fn(running, waiting, max_running, budget) -> [(rid, n_tokens), ...]

    running: [(rid, prefill_left)] in admission order; prefill_left = 0 means decoding
    waiting: [(rid, tokens_to_compute)] in queue order
    A waiting request named in the result is admitted; the scheduler checks the
    limits and fails loudly on a plan that breaks them.
    """

    name = "function"

    def __init__(self, fn: Callable):
        self.fn = check_callable("fn", fn, "a function (scheduler) -> Plan")
        self.name = getattr(fn, "__name__", "function")

    def plan(self, s: "Scheduler") -> Plan:
        running, waiting = s.running, s.waiting
        by_id = {r.rid: r for r in running + waiting}
        got = self.fn([(r.rid, 0 if r.is_decoding else r.remaining) for r in running],
                      [(r.rid, r.remaining) for r in waiting], s.limits.max_running, s.limits.max_tokens_per_step)
        plan = Plan()
        waiting_ids = {r.rid for r in waiting}
        for rid, n in got:
            if rid not in by_id:
                raise RuntimeError(f"{self.name}: request {rid} is neither running nor waiting")
            if rid in waiting_ids:
                plan.admit.append(by_id[rid])
            plan.work.append((by_id[rid], int(n)))
        return plan


POLICIES: dict[str, Callable[[], Policy]] = {
    "static": StaticBatching,
    "prefill-first": PrefillFirst,
    "decode-first": DecodeFirst,
    "chunked": ChunkedPrefill,
}


def make_policy(policy: str | Policy) -> Policy:
    if isinstance(policy, Policy):
        return policy
    return POLICIES[check_choice("policy", policy, POLICIES, what="a Policy")]()


def store_supports(store: KVStore, verb: str) -> bool:
    """Does `store` implement the optional verb (swap_out, swap_in, fork)?"""
    fn = getattr(type(store), verb, None)
    return fn is not None and fn is not getattr(KVStore, verb, None)


class Scheduler:
    """Queues, slots, and the KV bookkeeping that makes a policy's plan real."""

    def __init__(self, store: KVStore, policy: str | Policy = "prefill-first", limits: Limits | None = None,
                 preemption: Preemption = "recompute", queue: Any = "fcfs"):
        check_type("store", store, KVStore)
        check_choice("preemption", preemption, PREEMPTION_MODES)
        check_type("limits", limits, Limits, none_ok=True)
        if preemption == "swap":
            missing = [v for v in ("swap_out", "swap_in") if not store_supports(store, v)]
            if missing:
                raise ValueError(f"preemption: 'swap' needs a store with swap_out and swap_in; "
                                 f"{type(store).__name__} lacks {', '.join(missing)} (use 'recompute')")
        self.queue, self._queue_key = queue, as_key(queue)
        self.store, self.policy = store, make_policy(policy)
        self.limits = limits or Limits()
        if self.limits.kv_margin and getattr(store, "capacity", None) is None:
            raise ValueError(f"kv_margin: {type(store).__name__} grows without a limit, so no share of it is ever "
                             f"kept free; give the store a capacity, or kv_margin=0")
        self.preemption = preemption
        self._waiting: list[Request] = []
        self._running: list[Request] = []
        self.slots: list[Request | None] = [None] * self.limits.max_running
        self.held: dict[int, Request] = {}      # slot -> member that left a static batch
        self.reserved: dict[int, int] = {}      # rid -> slots kept for the samples/beams it will fork
        self.finished: list[Request] = []
        self.rejected: list[Request] = []
        self._work: list[list] = []             # this step's [request, n] items while scheduling
        self.events: list[tuple[str, int]] = [] # ('preempt' | 'swap' | 'reject', rid) of the last step
        self.admission_closed = False           # set when a newcomer did not fit this step
        self.now = 0.0                          # clock time of the step being scheduled
        if isinstance(queue, QueuePolicy):
            queue.bind(self)                    # a policy with state may read the queues

    def key(self, req: Request) -> tuple:
        """The order of requests: (queue policy's key now, arrival, rid); smaller goes first,
        so ties are first come, first served and the largest key is preempted first."""
        return (self._queue_key(req, self.now), req.arrival, req.rid)

    # ---- what policies read --------------------------------------------------
    @property
    def waiting(self) -> list[Request]:
        """Waiting requests in order (empty once admission has closed for this step)."""
        return [] if self.admission_closed else sorted(self._waiting, key=self.key)

    @property
    def running(self) -> list[Request]:
        return sorted(self._running, key=self.key)

    @property
    def free_slots(self) -> int:
        return self.limits.max_running - len(self._running) - len(self.held) - sum(self.reserved.values())

    def fitting(self, waiting: list[Request]) -> list[Request]:
        """The first of `waiting`, in order, whose widths (slots each needs) fit in the free slots."""
        out, free = [], self.free_slots
        for r in waiting:
            if r.width > free:
                break
            out.append(r)
            free -= r.width
        return out

    @property
    def batch_done(self) -> bool:
        return not self._running and not self.held

    def has_work(self) -> bool:
        return bool(self._waiting or self._running)

    # ---- entering and leaving ------------------------------------------------
    def add_request(self, req: Request) -> None:
        req.state = State.WAITING
        self._waiting.append(req)

    def reject(self, req: Request, reason: str, kind: Rejection = Rejection.NO_MEMORY) -> None:
        """Give up on a request that can never run, saying why (kind: see request.Rejection).
        Rejecting a beam rejects its request: every beam of the search is freed."""
        if req.search is not None:
            req = self._stop_search(req.search)
        self._leave(req)
        req.state, req.finish_reason, req.rejection = State.REJECTED, reason, kind
        self.rejected.append(req)
        self.events.append(("reject", req.rid))

    def finish(self, req: Request, reason: str) -> None:
        """The engine calls this when a request's last token is out. (A beam search's request
        holds nothing by then; a sample that stopped at its first token may still be waiting.)"""
        self._leave(req)
        req.state, req.finish_reason = State.FINISHED, reason
        self.finished.append(req)

    def _leave(self, req: Request) -> None:
        """Off the queues for good: out of the batch (slot released, KV freed) or out of the
        waiting queue, with any slots it had reserved."""
        self.reserved.pop(req.rid, None)
        if req in self._running:
            self._running.remove(req)
            self._release_slot(req)
            self.store.free(req.rid)
        elif req in self._waiting:
            self._waiting.remove(req)

    def preempt(self, req: Request) -> None:
        """Take a running request off the device: swap its KV to CPU memory, or
        free it to recompute later. It goes back to the waiting queue. Preempting a
        beam restarts its whole search: its request waits to prefill again."""
        if req.search is not None:
            head = self._stop_search(req.search)
            head.output, head.token_times, head.token_steps, head.num_computed = [], [], [], 0
            head.beam_restarts += 1
            head.num_preemptions += 1
            head.state = State.WAITING
            self._waiting.append(head)
            self.events.append(("preempt", head.rid))
            return
        self.reserved.pop(req.rid, None)
        self._running.remove(req)
        self._release_slot(req)
        self._work = [item for item in self._work if item[0] is not req]
        swapped = False
        if self.preemption == "swap":
            try:
                self.store.swap_out(req.rid)
                swapped = True
            except (NotImplementedError, KVAllocationError):
                swapped = False          # no room in CPU memory: fall back to recompute
        if not swapped:
            self.store.free(req.rid)
            req.num_computed = 0
        req.swapped = swapped
        req.state = State.WAITING
        req.num_preemptions += 1
        self._waiting.append(req)
        self.events.append(("swap" if swapped else "preempt", req.rid))

    # ---- samples and beams (engine/fork.py) ---------------------------------------
    def fork(self, parent: Request, child: Request) -> None:
        """Start `child`, a new sample of `parent` (which has just prefilled its prompt), in
        one of the slots `parent` reserved: its block table is a copy of the parent's
        (store.fork, copy-on-write later). A store that cannot fork makes it wait, to
        compute the prompt again when it is admitted."""
        left = self.reserved.pop(parent.rid, 0) - 1
        if left > 0:
            self.reserved[parent.rid] = left
        if self.store.can_fork:
            self.store.fork(parent.rid, child.rid)
            self._start(child)
        else:
            child.num_computed, child.state = 0, State.WAITING
            self._waiting.append(child)

    def replace(self, old: list[Request], new: list[tuple[Request, Request]]) -> None:
        """One move of a beam search: every (child, source) pair's child starts as a fork of
        its source (the source's blocks, shared); then every `old` sequence leaves the batch
        and its KV is freed. The children take the slots (and reservation) the old ones leave."""
        for r in old:
            self._running.remove(r)
            self._free_slot(r)
            self.reserved.pop(r.rid, None)
            if r.search is not None and r is not r.search.head:
                r.state, r.finish_reason = State.FINISHED, "replaced"      # a beam's sequence, done with
        for child, source in new:
            self.store.fork(source.rid, child.rid)
            self._start(child)
        for r in old:
            self.store.free(r.rid)

    def _stop_search(self, search) -> Request:
        """Free every live beam of a search (off the batch, KV freed); returns its request."""
        for b in search.beams:
            if b in self._running:
                self._running.remove(b)
                self._free_slot(b)
                self.store.free(b.rid)
            b.state, b.finish_reason = State.FINISHED, "stopped"
        self._work = [item for item in self._work if item[0].search is not search]
        search.beams = []
        head = search.head
        head.search = None
        return head

    def _same_unit(self, a: Request, b: Request) -> bool:
        """Are a and b preempted together (the same request, or beams of one search)?"""
        return a is b or (a.search is not None and a.search is b.search)

    def _whole_searches(self, work: list[tuple[Request, int]]) -> list[tuple[Request, int]]:
        """Drop the beams of any search that does not have ALL its live beams in the step:
        a search picks its winners from every beam's next token at once."""
        present = {id(r) for r, _ in work}
        partial = {id(r.search) for r, _ in work
                   if r.search is not None and any(id(b) not in present for b in r.search.beams)}
        return [(r, n) for r, n in work if r.search is None or id(r.search) not in partial]

    # ---- one step ----------------------------------------------------------------
    def schedule(self, now: float = 0.0) -> list[tuple[Request, int]]:
        """Plan the next step and reserve its KV. Returns (request, n_tokens) in packing order.

        If a newcomer the policy chose cannot get KV memory, admission closes for
        this step and the policy plans again without newcomers, so the budget it
        had given them goes to the running requests instead of being lost (and a
        newcomer that cannot fit never starves the requests already running).
        """
        self.events = []
        self.admission_closed = self._short_of_kv()
        self.now = now
        if self.held and not self._running:
            for slot in self.held:
                self.slots[slot] = None
            self.held.clear()
        for attempt in range(2):
            closed_before = self.admission_closed
            plan = self.policy.plan(self)
            self._check_plan(plan)
            self._work = [[r, n] for r, n in plan.work]
            items = {id(it[0]): it for it in self._work}           # request -> its [request, n_tokens]
            # 1. running requests grow first, most important first (FCFS: oldest)
            for r in sorted((r for r, _ in plan.work if r.state is State.RUNNING), key=self.key):
                if r.state is State.RUNNING:                         # not preempted by a request before it
                    item = items[id(r)]
                    self._reserve(r, r.num_computed + item[1])
            # 2. newcomers, in the plan's order; the first that does not fit closes admission
            for r in plan.admit:
                if self.admission_closed or not self._admit(r, now):
                    self.admission_closed = True
                    self._work = [item for item in self._work if item[0] is not r]
                    continue
                item = items.get(id(r))
                if item is not None:
                    item[1] = min(item[1], r.remaining)        # a prefix-cache hit shortens the work
                    if not self._reserve(r, r.num_computed + item[1]):
                        self.admission_closed = True           # it did not fit after all
            if closed_before or not self.admission_closed:
                break
        work = [(r, n) for r, n in self._work if r.state is State.RUNNING and n > 0]
        self._work = []
        return self._whole_searches(work)

    def _short_of_kv(self) -> bool:
        """Below the KV margin (Limits.kv_margin) with requests running: admission stays closed
        this step. (With nothing running a newcomer is always admitted if it fits: the margin
        must never stall the queue.)"""
        if not self.limits.kv_margin or not self._running:
            return False
        usage = self.store.usage()
        return usage.free < self.limits.kv_margin * usage.capacity

    def _check_plan(self, plan: Plan) -> None:
        """A policy bug must fail loudly, never corrupt a request."""
        name = type(self.policy).__name__
        waiting = set(map(id, self._waiting))
        if any(id(r) not in waiting for r in plan.admit) or len(set(map(id, plan.admit))) != len(plan.admit):
            raise RuntimeError(f"{name}.plan: admit must list distinct waiting requests")
        if sum(r.width for r in plan.admit) > self.free_slots:
            raise RuntimeError(f"{name}.plan: admits requests needing {sum(r.width for r in plan.admit)} slots "
                               f"but only {self.free_slots} are free")
        allowed = set(map(id, self._running)) | set(map(id, plan.admit))
        seen = set()
        for r, n in plan.work:
            if id(r) not in allowed or id(r) in seen:
                raise RuntimeError(f"{name}.plan: work must name each running or admitted request at most once")
            if not isinstance(n, int) or not 1 <= n <= r.remaining:
                raise RuntimeError(f"{name}.plan: request {r.rid} may compute 1..{r.remaining} tokens; got {n!r}")
            seen.add(id(r))
        total = sum(n for _, n in plan.work)
        if total > self.limits.max_tokens_per_step:
            raise RuntimeError(f"{name}.plan: {total} tokens exceed max_tokens_per_step={self.limits.max_tokens_per_step}")

    def _reserve(self, req: Request, length: int) -> bool:
        """Grow req's KV to `length` tokens, preempting less important requests if
        needed. False if req itself was preempted or rejected."""
        while True:
            try:
                self.store.grow(req.rid, length)
                return True
            except KVAllocationError as exc:
                victim = max(self._running, key=self.key)
                if not self._same_unit(victim, req):
                    self.preempt(victim)
                    continue
                if all(self._same_unit(r, req) for r in self._running):
                    what = "its beams" if req.search is not None else "it"
                    self.reject(req, f"needs KV for {length} tokens; the store cannot hold {what} even "
                                     f"with nothing else running ({exc})")
                else:
                    self.preempt(req)
                return False

    def load_kv(self, req: Request) -> int | None:
        """Put a waiting request's keys and values on the device. Returns how many of its
        tokens they already cover (None: not now, try again at a later step); raises
        KVAllocationError when the store has no room for it.

        The default swaps a swapped request back in, or adds its tokens (a prefix-cache
        hit covers some of them). A scheduler that gets its KV from elsewhere overrides
        this one method (the decode engine of engine/disagg.py imports a handed-over packet).
        """
        if req.swapped:
            try:
                self.store.swap_in(req.rid)
                return self.store.num_cached(req.rid)
            except KVAllocationError:
                if self._running:
                    return None
                self.store.free(req.rid)   # nothing left to wait for: drop the CPU copy, recompute
                req.swapped, req.num_computed = False, 0
        hit = self.store.add(req.rid, req.all_tokens, req.max_len)
        if isinstance(hit, bool) or not isinstance(hit, int) or not 0 <= hit < len(req.all_tokens):
            raise RuntimeError(f"{type(self.store).__name__}.add returned {hit!r}; "
                               f"must be an int in [0, {len(req.all_tokens) - 1}]")
        if self.store.num_cached(req.rid) != hit:
            raise RuntimeError(f"{type(self.store).__name__}: add returned a hit of {hit} tokens "
                               f"but num_cached says {self.store.num_cached(req.rid)}")
        req.cached_prompt_tokens += hit
        return hit

    def _admit(self, req: Request, now: float) -> bool:
        """Put a waiting request on the device (`load_kv`) and give it a batch slot."""
        if self.free_slots < req.width:
            return False
        try:
            computed = self.load_kv(req)
        except KVAllocationError as exc:
            if not self._running:
                self.reject(req, f"needs KV for {len(req.all_tokens)} tokens to start; the store cannot "
                                 f"hold that even with nothing else running ({exc})")
            return False
        if computed is None:
            return False
        req.num_computed = computed
        self._waiting.remove(req)
        req.swapped = False
        if req.admitted_time is None:
            req.admitted_time = now
        self._start(req)
        if req.width > 1:
            self.reserved[req.rid] = req.width - 1          # the slots its samples/beams will take
        return True

    def _start(self, req: Request) -> None:
        """Into the batch: running, in the first free slot."""
        self._running.append(req)
        req.state = State.RUNNING
        req.slot = self.slots.index(None)
        self.slots[req.slot] = req

    def _free_slot(self, req: Request) -> None:
        """Give req's slot back at once (a beam replaced; never held for a static batch)."""
        if req.slot is not None:
            self.slots[req.slot] = None
            req.slot = None

    def _release_slot(self, req: Request) -> None:
        if req.slot is None:
            return
        if self.policy.holds_slots:
            self.held[req.slot] = req
        else:
            self.slots[req.slot] = None
        req.slot = None

    def slot_table(self) -> list[tuple[int, Request, bool]]:
        """(slot, request, is_held) for every occupied slot, in slot order."""
        out = [(i, r, False) for i, r in enumerate(self.slots) if r is not None and i not in self.held]
        out += [(i, r, True) for i, r in self.held.items()]
        return sorted(out, key=lambda t: t[0])

    def requests(self) -> Iterable[Request]:
        """Every request this scheduler knows: waiting, running, finished, rejected. A beam
        search running counts once, as its request (its output is known when it finishes),
        not as its beams."""
        yield from self._waiting
        searches = set()
        for r in self._running:
            if r.search is None:
                yield r
            elif id(r.search) not in searches:
                searches.add(id(r.search))
                yield r.search.head
        yield from self.finished
        yield from self.rejected
