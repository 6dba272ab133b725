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
"""

from __future__ import annotations

import math
import time
from typing import Callable, Iterable, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from course_lib.attention import causal_mask, padded_causal_mask, sdpa_attention
from course_lib.device import synchronize
from course_lib.engine.metrics import EngineResult, StepRecord
from course_lib.engine.request import Request, State
from course_lib.engine.scheduler import Limits, Policy, Scheduler
from course_lib.kv.base import KVStore, StepContext
from course_lib.kv.reference import ReferenceKVStore
from course_lib.tokenizer import PAD

STEP_MODES = ("packed", "padded")
ATTENTION = ("auto", "store", "batched")


# ---- clocks -----------------------------------------------------------------
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
        for name, value in (("fixed", fixed), ("per_token", per_token), ("per_seq", per_seq)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name}: must be a number >= 0; got {value!r}")
        self.fixed, self.per_token, self.per_seq = fixed, per_token, per_seq

    def cost(self, wall_s: float, num_tokens: int, num_seqs: int) -> float:
        return self.fixed + self.per_token * num_tokens + self.per_seq * num_seqs

    @classmethod
    def fit(cls, steps) -> "CostModelClock":
        """The cost model that best explains measured steps (StepRecords): a least-squares
        fit of wall_s to fixed + per_token * tokens + per_seq * sequences, every coefficient
        >= 0, refitted once without the steps a busy machine slowed down (residual above
        3x the median). A clock with this model charges each step what a step of its size
        costs on this machine, without the hiccups of one particular run."""
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
        if clock not in CLOCKS:
            raise ValueError(f"clock: must be one of {', '.join(CLOCKS)} or a clock object; got {clock!r}")
        return CLOCKS[clock]()
    if not hasattr(clock, "cost"):
        raise ValueError(f"clock: must be one of {', '.join(CLOCKS)} or have a cost(...) method; got {clock!r}")
    return clock


# ---- sampling ---------------------------------------------------------------
class Sampler:
    """Turns each finished row of logits into a token.

    Greedy (argmax) for temperature 0, the default. A request with
    temperature > 0 samples from softmax(logits / temperature) with its OWN
    generator seeded by `request.seed`: its tokens do not depend on which
    other requests share its steps, so every policy gives the same text.
    Replace it with any callable (requests, logits (S, V)) -> list[int].
    """

    def __init__(self):
        self._generators: dict[int, torch.Generator] = {}

    def __call__(self, requests: Sequence[Request], logits: torch.Tensor) -> list[int]:
        greedy = logits.argmax(-1).tolist()                                  # (S,)
        out = []
        for i, r in enumerate(requests):
            if r.temperature == 0:
                out.append(greedy[i])
                continue
            gen = self._generators.get(r.rid)
            if gen is None:
                gen = self._generators[r.rid] = torch.Generator().manual_seed(int(r.seed))
            probs = torch.softmax(logits[i].double().cpu() / r.temperature, dim=-1)   # (V,)
            out.append(int(torch.multinomial(probs, 1, generator=gen)))
        return out

    def hand_over(self, rid: int, to: "Sampler") -> None:
        """Move request `rid`'s random stream to another sampler (a request that moves to
        another engine goes on drawing the same random numbers). No stream yet: nothing moves."""
        gen = self._generators.pop(rid, None)
        if gen is not None:
            to._generators[rid] = gen


# ---- the padded step --------------------------------------------------------
class PaddedStepContext:
    """Attention for a padded (B, T) step over any KV store.

    rows: (seq_id or None, n_new) per row; row b's new tokens sit in its LAST
    n_new columns. Each layer writes the new k, v into the store, gathers
    every row's keys into one (B, nkv, Lk, hd) tensor (left-padded), and runs
    ONE attention call with a padding-aware causal mask.
    """

    def __init__(self, store: KVStore, rows: list[tuple[int | None, int]], T: int):
        self.store, self.rows, self.T = store, rows, T
        self.starts = [store.num_cached(s) if s is not None and n > 0 else 0 for s, n in rows]
        self.lengths = [st + n for st, (_, n) in zip(self.starts, rows)]     # keys each row attends to
        self.Lk = max(max(self.lengths, default=1), T)

    def inputs(self, new_tokens: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) input ids (<pad> on the left) and (B, T) positions (0 on padding)."""
        B, T = len(self.rows), self.T
        ids = torch.full((B, T), PAD, dtype=torch.long)
        pos = torch.zeros((B, T), dtype=torch.long)
        for b, (toks, start) in enumerate(zip(new_tokens, self.starts)):
            n = len(toks)
            if n:
                ids[b, T - n:] = torch.tensor(toks)
                pos[b, T - n:] = torch.arange(start, start + n)
        return ids.to(device), pos.to(device)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (B, T, nh, hd); k, v (B, T, nkv, hd) -> (B, T, nh, hd)."""
        B, T, nkv, hd = k.shape
        K = k.new_zeros(B, nkv, self.Lk, hd)                                 # (B, nkv, Lk, hd)
        V = v.new_zeros(B, nkv, self.Lk, hd)
        key_mask = torch.zeros(B, self.Lk, dtype=torch.bool, device=q.device)  # (B, Lk) real keys
        for b, ((seq_id, n), start, L) in enumerate(zip(self.rows, self.starts, self.lengths)):
            if seq_id is None or n == 0:
                continue                                                     # an all-padding row
            self.store.write(layer, seq_id, start, k[b, T - n:], v[b, T - n:])
            Kb, Vb = self.store.read(layer, seq_id, L)                       # (L, nkv, hd)
            K[b, :, self.Lk - L:] = Kb.transpose(0, 1)
            V[b, :, self.Lk - L:] = Vb.transpose(0, 1)
            key_mask[b, self.Lk - L:] = True
        mask = padded_causal_mask(key_mask, T)                               # (B, 1, T, Lk)
        out = sdpa_attention(q.transpose(1, 2), K, V, mask)                  # (B, nh, T, hd)
        return out.transpose(1, 2)                                           # (B, T, nh, hd)

    def commit(self) -> None:
        for (seq_id, n), start in zip(self.rows, self.starts):
            if seq_id is not None and n > 0:
                self.store.cached[seq_id] = start + n


# ---- the packed step, decodes batched ------------------------------------------
class BatchedDecodeContext(StepContext):
    """The packed step of `StepContext`, faster: every decoding sequence (one new
    token) attends in ONE attention call instead of one call each.

    The per-sequence loop of the base context is the readable path; on a CPU
    its many tiny calls dominate a decode step. Here each sequence's new k, v
    are still written through the store (any store), then the decoders' keys
    are gathered into one padded (S, nkv, Lmax, hd) tensor with a key mask,
    which is what a GPU decode kernel does without the padding. Prefill chunks
    (several new tokens) keep the per-sequence path. Same contract, same result
    (tests check 1e-5 in fp32).
    """

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (1, N, nh, hd); k, v (1, N, nkv, hd) -> (1, N, nh, hd)."""
        out = torch.empty_like(q)
        dec_idx, dec_rows, offset = [], [], 0
        for (seq_id, n), start in zip(self.batch, self.starts):
            sl = slice(offset, offset + n)
            self.store.write(layer, seq_id, start, k[0, sl], v[0, sl])
            if n == 1:
                dec_idx.append(offset)
                dec_rows.append((seq_id, start + 1))
            else:                                                                 # a prefill chunk
                K, V = self.store.read(layer, seq_id, start + n)                  # (L, nkv, hd)
                mask = causal_mask(n, start + n, q.device)                        # (n, L)
                o = sdpa_attention(q[0, sl].transpose(0, 1)[None], K.transpose(0, 1)[None],
                                   V.transpose(0, 1)[None], mask)                 # (1, nh, n, hd)
                out[0, sl] = o[0].transpose(0, 1)
            offset += n
        if dec_rows:
            keys, values = zip(*(self.store.read(layer, seq_id, L) for seq_id, L in dec_rows))   # each (L, nkv, hd)
            K = pad_sequence(keys, batch_first=True).transpose(1, 2)             # (S, nkv, Lmax, hd), right-padded
            V = pad_sequence(values, batch_first=True).transpose(1, 2)
            lengths = torch.tensor([L for _, L in dec_rows], device=q.device)
            key_mask = torch.arange(K.shape[2], device=q.device) < lengths[:, None]   # (S, Lmax) real keys
            key_mask = key_mask[:, None, None, :]                                 # (S, 1, 1, Lmax)
            idx = torch.tensor(dec_idx, device=q.device)
            qd = q[0, idx][:, :, None]                                            # (S, nh, 1, hd)
            o = sdpa_attention(qd, K, V, key_mask)                                # (S, nh, 1, hd)
            out[0, idx] = o[:, :, 0]                                              # (S, nh, hd)
        return out


# ---- the engine -------------------------------------------------------------
class Engine:
    """An iteration-level serving engine.

    model:    a TinyLM (anything with forward_ctx and .config)
    store:    any KVStore (default: an unlimited ReferenceKVStore, or one of
              `kv_capacity` token slots)
    policy:   'static', 'prefill-first', 'decode-first', 'chunked', or a Policy
    max_running, max_tokens_per_step: the batch limits (see scheduler.Limits)
    preemption: 'recompute' (free KV, redo it later) or 'swap' (store.swap_out/in)
    step_mode: 'packed' or 'padded'
    clock:    'measured', 'steps' or a clock object with cost(wall_s, tokens, seqs)
    sampler:  callable (requests, logits (S, V)) -> tokens; default greedy/seeded
    order:    key function ordering the waiting queue and choosing victims
    scheduler: the scheduler's class, or any factory called as
              scheduler(store, policy, limits, preemption, order): a subclass
              changes how requests are ordered or admitted (engine/priority.py,
              engine/disagg.py) without the engine building one to throw away
    attention: packed steps only: 'store' (the store's own step context: one
              attention call per request, the readable path), 'batched' (decodes
              in one call: BatchedDecodeContext), 'auto' (batched unless the
              store brings its own context, e.g. a paged kernel)
    """

    def __init__(self, model, store: KVStore | None = None, policy: str | Policy = "prefill-first",
                 max_running: int = 8, max_tokens_per_step: int = 256, preemption: str = "recompute",
                 step_mode: str = "packed", clock="measured", sampler: Callable | None = None,
                 order: Callable | None = None, kv_capacity: int | None = None, attention: str = "auto",
                 scheduler: Callable[..., Scheduler] = Scheduler):
        if step_mode not in STEP_MODES:
            raise ValueError(f"step_mode: must be one of {', '.join(STEP_MODES)}; got {step_mode!r}")
        if attention not in ATTENTION:
            raise ValueError(f"attention: must be one of {', '.join(ATTENTION)}; got {attention!r}")
        if store is not None and kv_capacity is not None:
            raise ValueError("kv_capacity: give either a store or a capacity for the default store, not both")
        self.model = model
        self.store = store if store is not None else ReferenceKVStore.for_model(model, capacity=kv_capacity)
        self.limits = Limits(max_running, max_tokens_per_step)
        self.scheduler = scheduler(self.store, policy, self.limits, preemption, order)
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

    @property
    def config(self) -> dict:
        return {"policy": self.scheduler.policy.name, "max_running": self.limits.max_running,
                "max_tokens_per_step": self.limits.max_tokens_per_step, "preemption": self.scheduler.preemption,
                "step_mode": self.step_mode, "attention": self.attention, "clock": self.clock.name, "unit": self.clock.unit,
                "store": type(self.store).__name__}

    # ---- requests in --------------------------------------------------------
    def submit(self, req: Request) -> Request:
        """Queue a request; it joins the scheduler when the clock reaches its arrival."""
        if not isinstance(req, Request):
            raise ValueError(f"req: must be a Request; got {type(req).__name__}")
        if req.state is not State.WAITING or req.output or req.num_computed:
            raise ValueError(f"req: request {req.rid} has already run; submit a fresh copy (clone_requests)")
        if req.rid is None:
            req.rid = self._next_rid
        if any(r.rid == req.rid for r in self.requests):
            raise ValueError(f"rid: {req.rid} is already used by another request")
        self._next_rid = max(self._next_rid, req.rid + 1)
        self.requests.append(req)
        limit = self.model.config.max_position_embeddings
        store_limit = getattr(self.store, "max_model_len", None)     # a store may cap one sequence's length
        reason = None
        if req.max_len > limit:
            reason = f"the model's context of {limit} tokens"
        elif isinstance(store_limit, int) and req.max_len > store_limit:
            reason = f"the KV store's longest sequence ({type(self.store).__name__}.max_model_len={store_limit})"
        if reason:
            req.state = State.REJECTED
            req.finish_reason = f"prompt ({len(req.prompt)}) + max_new_tokens ({req.max_new_tokens}) exceeds {reason}"
            return req
        self._pending.append(req)
        self._pending.sort(key=lambda r: (r.arrival, r.rid))
        return req

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
    @torch.no_grad()
    def step(self) -> StepRecord | None:
        """Run one model step (jumping over idle time first). None when all is done."""
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
        computing = {r.rid: ("decode" if r.output and n == 1 and r.num_computed == len(r.all_tokens) - 1 else "prefill")
                     for r, n in work}
        rec.items = [(r.rid, n, computing[r.rid]) for r, n in work]
        rec.slots = [(slot, r.rid, "held" if held else computing.get(r.rid, "stalled"))
                     for slot, r, held in self.scheduler.slot_table()]
        for r, n in work:
            r.num_computed += n
        tokens = self.sampler(sample_reqs, logits_rows) if sample_reqs else []
        # a token is out once sampled; freeing finished requests still belongs to this step
        token_time = rec.start + self.clock.cost(time.perf_counter() - t0, rec.num_tokens, len(work))
        for r, tok in zip(sample_reqs, tokens):
            r.output.append(int(tok))
            r.token_times.append(token_time)
            r.token_steps.append(rec.index)
            if r.first_token_time is None:
                r.first_token_time, r.first_token_step = token_time, rec.index
            reason = r.should_stop()
            if reason:
                self.scheduler.finish(r, reason)
                r.finish_time, r.finish_step = token_time, rec.index
        t4 = time.perf_counter()
        rec.wall_s = t4 - t0
        rec.sample_s = t4 - t3
        rec.duration = self.clock.cost(rec.wall_s, rec.num_tokens, len(work))
        self.now = rec.start + rec.duration
        usage = self.store.usage()                      # instrumentation, outside the timed step
        rec.kv_token_states, rec.kv_capacity = usage.token_states, usage.capacity
        self.steps.append(rec)
        return rec

    def _check_sync(self, work) -> None:
        for r, _ in work:
            if self.store.num_cached(r.rid) != r.num_computed:
                raise RuntimeError(f"request {r.rid}: the store has {self.store.num_cached(r.rid)} tokens cached "
                                   f"but the engine computed {r.num_computed}")

    def _run_packed(self, work):
        self._check_sync(work)
        batch = [(r.rid, n) for r, n in work]
        tokens = [t for r, n in work for t in r.all_tokens[r.num_computed:r.num_computed + n]]
        ids = torch.tensor([tokens], dtype=torch.long, device=self.device)   # (1, N)
        ctx = BatchedDecodeContext(self.store, batch) if self.attention == "batched" else self.store.step_context(batch)
        positions = ctx.positions(self.device)                                # (1, N)
        synchronize(self.device)
        t2 = time.perf_counter()
        logits = self.model.forward_ctx(ids, positions, ctx)                  # (1, N, V)
        ctx.commit()
        rows, reqs, offset = [], [], 0
        for r, n in work:
            offset += n
            if r.num_computed + n == len(r.all_tokens):                       # reached its end: sample
                rows.append(offset - 1)
                reqs.append(r)
        out = logits[0, rows]                                                 # (S, V)
        synchronize(self.device)
        return out, reqs, len(tokens), t2, time.perf_counter()

    def _run_padded(self, work):
        self._check_sync(work)
        n_of = {r.rid: n for r, n in work}
        table = self.scheduler.slot_table()
        row_reqs = [(r, held) for _, r, held in table]
        rows = [(None if held else r.rid, 0 if held else n_of.get(r.rid, 0)) for r, held in row_reqs]
        T = max(n for _, n in rows)
        ctx = PaddedStepContext(self.store, rows, T)
        new_tokens = [r.all_tokens[r.num_computed:r.num_computed + n] if n else [] for (r, _), (_, n) in zip(row_reqs, rows)]
        ids, positions = ctx.inputs(new_tokens, self.device)                  # (B, T), (B, T)
        synchronize(self.device)
        t2 = time.perf_counter()
        logits = self.model.forward_ctx(ids, positions, ctx)                  # (B, T, V)
        ctx.commit()
        sample_rows, reqs = [], []
        for b, ((r, held), (_, n)) in enumerate(zip(row_reqs, rows)):
            if n and r.num_computed + n == len(r.all_tokens):
                sample_rows.append(b)
                reqs.append(r)
        order = {id(r): i for i, (r, _) in enumerate(work)}                   # sample in work order
        pairs = sorted(zip(sample_rows, reqs), key=lambda p: order[id(p[1])])
        out = logits[[b for b, _ in pairs], -1] if pairs else logits[:0, -1]   # (S, V)
        synchronize(self.device)
        return out, [r for _, r in pairs], len(rows) * T, t2, time.perf_counter()

    def run(self, requests: Iterable[Request] = (), progress: bool = False, max_steps: int | None = None) -> EngineResult:
        """Submit `requests`, step until every request has finished or been rejected."""
        for r in requests:
            self.submit(r)
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=sum(r.max_new_tokens for r in self.requests), desc=self.scheduler.policy.name,
                       unit="tok", leave=False)
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
        reqs = sorted(self.requests, key=lambda r: r.rid)
        return EngineResult(reqs, list(self.steps), self.config)


def clone_requests(requests: Iterable[Request]) -> list[Request]:
    """Fresh copies (inputs only) so the same trace can run under several engines."""
    return [Request(list(r.prompt), r.max_new_tokens, arrival=r.arrival, priority=r.priority, rid=r.rid,
                    eos_id=r.eos_id, temperature=r.temperature, seed=r.seed) for r in requests]


def serve(model, requests: Iterable[Request], **engine_kwargs) -> EngineResult:
    """Run fresh copies of `requests` through a new Engine; returns its EngineResult."""
    return Engine(model, **engine_kwargs).run(clone_requests(requests))
