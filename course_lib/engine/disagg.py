"""Prefill and decode on two engines joined by a pipeline (disaggregated serving).

One engine that does both phases makes them interfere: a step that holds a
long prompt is long, and every request decoding in that step waits for it
(lesson 03's stalls). DistServe (OSDI 2024) and Splitwise (ISCA 2024) put the
phases on different GPUs:

    requests --> [prefill engine] --KV handover--> [decode engine] --> tokens
                  prompt -> first token   (link)    one token per step

* the **prefill engine** runs each prompt and samples the first token; then
  the request leaves it;
* its keys and values are **handed over**: copied out of the prefill engine's
  KV pool and into the decode engine's pool (here a real tensor copy between
  two stores; between GPUs it crosses NVLink, PCIe or the network);
* the **decode engine** admits the request with its KV already in place and
  produces the remaining tokens, one per step, in steps that never hold a
  prompt.

Both engines are lesson 03's `Engine` on their own KV stores; they run side by
side in simulated time (two machines): the one whose next event comes first
steps next. A handed-over request reaches the decode engine after the link's
delay, `latency + bytes / bandwidth` (a model: set the bandwidth of a real
interconnect, and optionally the bytes per token of a real model, for a
what-if), while the copy itself is done for real and timed.

The hand-over packet: when both stores are paged with the same block size,
whole blocks are copied (what a real system sends: the last block partly
empty); otherwise the tokens' keys and values, layer by layer.

    server = DisaggregatedServer(model, PagedKVStore.for_model(model, capacity=1024),
                                 PagedKVStore.for_model(model, capacity=1024), link=Link(25e9))
    result = server.run(requests)        # a DisaggResult: latencies(), summary(), handovers
"""

from __future__ import annotations

import copy
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch

from course_lib.device import synchronize
from course_lib.engine.engine import Engine, clone_requests
from course_lib.engine.heap import frozen_heap
from course_lib.engine.metrics import EngineResult
from course_lib.engine.request import Rejection, Request, State
from course_lib.engine.scheduler import Preemption, Scheduler
from course_lib.kv.base import KVAllocationError, KVStore
from course_lib.kv.paged import PagedKVStore
from course_lib.validate import check_callable, check_float, check_int, check_iterable, check_sequence, check_type, is_int

# Nominal peak bandwidths (bytes per second, one direction) of common links, from the vendors' data sheets.
# Real transfers reach less; use them for what-if analysis, not as measurements.
LINKS = {
    "NVLink 3 (A100, 600 GB/s total)": 300e9,
    "PCIe 4.0 x16 (32 GB/s)": 32e9,
    "InfiniBand HDR (200 Gb/s)": 25e9,
    "100 Gb Ethernet": 12.5e9,
    "10 Gb Ethernet": 1.25e9,
}


@dataclass(frozen=True)
class Link:
    """The interconnect between the prefill and the decode engine (a model, for what-if analysis).

    bandwidth:       bytes per clock unit (bytes/s with a time clock); inf = instant
    latency:         fixed delay of every hand-over, in clock units
    bytes_per_token: None: send the bytes really copied; a number: pretend each token
                     costs this many bytes (e.g. OPT-13B's 800 KB) to ask "what if this
                     were a real model?"
    """

    bandwidth: float = math.inf
    latency: float = 0.0
    bytes_per_token: int | None = None

    def __post_init__(self):
        check_float("bandwidth", self.bandwidth, 0, lo_open=True, finite=False,
                    note="bytes per clock unit; inf = instant")
        check_float("latency", self.latency, 0, note="clock units")
        check_int("bytes_per_token", self.bytes_per_token, 1, none_ok=True)

    def link_bytes(self, n_tokens: int, real_bytes: int) -> int:
        """Bytes that cross the link for a hand-over of `n_tokens` tokens."""
        return real_bytes if self.bytes_per_token is None else n_tokens * self.bytes_per_token

    def delay(self, n_tokens: int, real_bytes: int) -> float:
        """Clock units from the end of the prefill to the request's arrival at the decode engine."""
        b = self.link_bytes(n_tokens, real_bytes)
        return self.latency + (0.0 if math.isinf(self.bandwidth) else b / self.bandwidth)


# ---- the KV packet: out of one pool, into another ----------------------------------------------------
@dataclass
class KVPacket:
    """One request's keys and values in flight between two stores.

    form 'blocks': data (layers, 2, n_blocks, block_numel), whole blocks of a paged pool
    form 'tokens': data (layers, 2, n_tokens, nkv, hd), the tokens' keys and values
    """

    seq_id: int
    n_tokens: int
    form: str
    data: torch.Tensor
    block_size: int = 1
    copy_out_s: float = 0.0

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()


def blocks_compatible(src: KVStore, dst: KVStore | None) -> bool:
    """Can whole blocks be copied from src's pool into dst's (same paged layout)?"""
    return isinstance(src, PagedKVStore) and src.same_block_layout(dst)


def export_kv(store: KVStore, seq_id: int, n_tokens: int, like: KVStore | None = None) -> KVPacket:
    """Copy the first `n_tokens` tokens' keys and values of `seq_id` out of `store` (a real copy).

    Whole blocks when `like` (the destination) has the same paged layout; otherwise
    the tokens' K and V of every layer."""
    check_type("store", store, KVStore)
    check_int("n_tokens", n_tokens, 1)
    check_type("like", like, KVStore, none_ok=True)
    if store.num_cached(seq_id) < n_tokens:
        raise ValueError(f"n_tokens: sequence {seq_id} has {store.num_cached(seq_id)} tokens cached; asked for {n_tokens}")
    synchronize(store.device)
    t0 = time.perf_counter()
    if blocks_compatible(store, like):
        data = store.export_blocks(seq_id, n_tokens)                           # (layers, 2, n_blocks, block_numel)
        form, block_size = "blocks", store.block_size
    else:
        data = store.export_tokens(seq_id, n_tokens)                           # (layers, 2, n, nkv, hd)
        form, block_size = "tokens", 1
    synchronize(store.device)
    return KVPacket(seq_id, n_tokens, form, data, block_size, time.perf_counter() - t0)


def import_kv(store: KVStore, seq_id: int, tokens: Sequence[int], max_len: int, packet: KVPacket) -> float:
    """Admit `seq_id` into `store` with the packet's keys and values in place.

    tokens: the sequence so far (prompt + first token); the packet covers its first
    packet.n_tokens tokens. Raises KVAllocationError (store unchanged) when it does not fit.
    Returns the measured seconds of the copy into the pool."""
    check_type("store", store, KVStore)
    check_type("packet", packet, KVPacket, "a KVPacket (from export_kv)")
    n = packet.n_tokens
    if not 1 <= n < len(tokens) + 1:
        raise ValueError(f"packet: covers {n} tokens; the sequence has {len(tokens)}")
    hit = store.add(seq_id, list(tokens), max_len)          # may raise KVAllocationError: nothing held then
    try:
        store.grow(seq_id, n)
    except KVAllocationError:
        store.free(seq_id)
        raise
    hit = min(hit, n)
    synchronize(store.device)
    t0 = time.perf_counter()
    if packet.form == "blocks" and isinstance(store, PagedKVStore) and store.block_size == packet.block_size:
        store.import_blocks(seq_id, packet.data, first=hit // store.block_size)   # skip blocks a prefix-cache hit holds
    elif packet.form == "tokens":
        store.import_tokens(seq_id, hit, packet.data)
    else:
        store.free(seq_id)
        raise ValueError("packet: whole blocks can only go into a paged store with the same block size")
    store.cached[seq_id] = n
    synchronize(store.device)
    return time.perf_counter() - t0


def handover_bytes(n_tokens: int, bytes_per_token: int, block_size: int | None = None) -> int:
    """Bytes a hand-over of `n_tokens` tokens sends: whole blocks when block_size is given
    (the last block goes partly empty), else exactly the tokens."""
    check_int("n_tokens", n_tokens, 1)
    check_int("bytes_per_token", bytes_per_token, 1)
    if check_int("block_size", block_size, 1, none_ok=True) is None:
        return n_tokens * bytes_per_token
    return -(-n_tokens // block_size) * block_size * bytes_per_token


@dataclass
class Handover:
    """One request moving from the prefill engine to the decode engine."""

    rid: int
    n_tokens: int          # prompt tokens whose K/V moved
    form: str              # 'blocks' or 'tokens'
    nbytes: int            # bytes really copied
    link_bytes: int        # bytes the link model charged for
    sent: float            # clock time the prefill finished
    arrives: float         # sent + the link's delay
    copy_out_s: float      # measured: out of the prefill pool
    copy_in_s: float = 0.0 # measured: into the decode pool (at admission)
    admitted: float | None = None   # clock time the decode engine took it in

    @property
    def link_s(self) -> float:
        return self.arrives - self.sent


# ---- the two stages: an Engine each, with its own scheduler ---------------------------------------------
class _SendingScheduler(Scheduler):
    """The prefill engine's scheduler: a request that finishes its prefill is handed on
    (its KV exported) before its memory is freed."""

    def __init__(self, *args, on_prefilled: Callable[[Request, str], None], **kwargs):
        super().__init__(*args, **kwargs)
        self.on_prefilled = on_prefilled

    def finish(self, req: Request, reason: str) -> None:
        self.on_prefilled(req, reason)
        super().finish(req, reason)


class _ReceivingScheduler(Scheduler):
    """The decode engine's scheduler: a handed-over request's KV is imported from its
    packet at admission (`load_kv`), so it starts decoding at once."""

    def __init__(self, *args, on_admitted: Callable[[Request, float, float], None], **kwargs):
        super().__init__(*args, **kwargs)
        self.inbox: dict[int, KVPacket] = {}
        self.on_admitted = on_admitted

    def load_kv(self, req: Request) -> int | None:
        packet = self.inbox.get(req.rid)
        if packet is None:
            return super().load_kv(req)            # e.g. re-admitted after a preemption: recompute
        try:
            copy_s = import_kv(self.store, req.rid, req.all_tokens, req.max_len, packet)
        except KVAllocationError as exc:
            if not self.running:
                self.reject(req, f"the decode engine cannot hold its {len(req.all_tokens)} tokens even with "
                                 f"nothing else running ({exc})")
            return None
        del self.inbox[req.rid]
        self.on_admitted(req, self.now, copy_s)
        return packet.n_tokens


@dataclass
class DisaggResult:
    """What a disaggregated run produced.

    requests:  one merged record per request (arrival, first token from the prefill
               engine, the rest from the decode engine), like EngineResult's
    prefill, decode: each engine's own EngineResult
    handovers: one Handover per request that moved
    """

    requests: list[Request]
    prefill: EngineResult
    decode: EngineResult
    handovers: list[Handover]
    config: dict = field(default_factory=dict)

    def as_engine_result(self) -> EngineResult:
        steps = sorted(self.prefill.steps + self.decode.steps, key=lambda s: (s.end, s.start))
        return EngineResult(self.requests, steps, self.config)

    @property
    def steps(self):
        return self.as_engine_result().steps

    # The same views as an EngineResult, delegated rather than written twice.
    @property
    def finished(self) -> list[Request]:
        return self.as_engine_result().finished

    @property
    def rejected(self) -> list[Request]:
        return self.as_engine_result().rejected

    def outputs(self) -> dict[int, list[int]]:
        return self.as_engine_result().outputs()

    def latencies(self) -> dict[str, list[float]]:
        return self.as_engine_result().latencies()

    def summary(self) -> dict:
        row = self.as_engine_result().summary()
        row["policy"] = "disaggregated"
        row["handovers"] = len(self.handovers)
        row["handover_bytes"] = sum(h.nbytes for h in self.handovers)
        row["link_delay_mean"] = (sum(h.link_s for h in self.handovers) / len(self.handovers)
                                  if self.handovers else 0.0)
        row["copy_us_mean"] = (1e6 * sum(h.copy_out_s + h.copy_in_s for h in self.handovers) / len(self.handovers)
                               if self.handovers else 0.0)
        return row

    @property
    def makespan(self) -> float:
        return self.as_engine_result().makespan

    @property
    def throughput(self) -> float:
        return self.as_engine_result().throughput


class DisaggregatedServer:
    """A prefill engine and a decode engine joined by a KV hand-over (see the module docstring).

    prefill_store, decode_store: each engine's KV store (default: unlimited reference stores)
    link:            the interconnect model (default: instant)
    prefill_policy:  how the prefill engine batches prompts (default 'prefill-first')
    decode_policy:   how the decode engine batches (default 'decode-first')
    prefill_limits, decode_limits: (max_running, max_tokens_per_step) of each engine
    clock:           shared by both engines ('measured', 'steps' or a clock object)
    preemption:      either engine's preemption mode
    """

    def __init__(self, model, prefill_store: KVStore | None = None, decode_store: KVStore | None = None,
                 link: Link | None = None, prefill_policy="prefill-first", decode_policy="decode-first",
                 prefill_limits: tuple[int, int] = (8, 256), decode_limits: tuple[int, int] = (8, 256),
                 clock="measured", preemption: Preemption = "recompute"):
        check_type("link", link, Link, "a Link(bandwidth, latency)", none_ok=True)
        for name, lim in (("prefill_limits", prefill_limits), ("decode_limits", decode_limits)):
            running, budget = check_sequence(name, lim, 2, 2, what="(max_running, max_tokens_per_step)")
            check_int(f"{name}[0]", running, 1, 4096, note="max_running")
            check_int(f"{name}[1]", budget, 1, 1 << 20, note="max_tokens_per_step")
        check_type("prefill_store", prefill_store, KVStore, none_ok=True)
        check_type("decode_store", decode_store, KVStore, none_ok=True)
        if prefill_store is not None and prefill_store is decode_store:
            raise ValueError("decode_store: must be a different store from prefill_store (two machines, two pools)")
        self.model, self.link = model, link or Link()
        self.prefill = Engine(model, prefill_store, policy=prefill_policy, max_running=prefill_limits[0],
                              max_tokens_per_step=prefill_limits[1], clock=clock, preemption=preemption,
                              scheduler=functools.partial(_SendingScheduler, on_prefilled=self._prefilled))
        self.decode = Engine(model, decode_store, policy=decode_policy, max_running=decode_limits[0],
                             max_tokens_per_step=decode_limits[1], clock=clock, preemption=preemption,
                             scheduler=functools.partial(_ReceivingScheduler, on_admitted=self._admitted))
        self.handovers: dict[int, Handover] = {}
        self._originals: dict[int, Request] = {}
        self._decode_reqs: dict[int, Request] = {}
        self._rejected: list[Request] = []            # rejected at admission, before any work
        self._ran = False

    @property
    def config(self) -> dict:
        return {"policy": "disaggregated", "prefill": self.prefill.config, "decode": self.decode.config,
                "link": self.link, "clock": self.prefill.clock.name, "unit": self.prefill.clock.unit,
                "max_running": self.decode.limits.max_running}

    # ---- the hand-over ---------------------------------------------------------------------------------
    def _prefilled(self, req: Request, reason: str) -> None:
        """The prefill engine finished `req` (its first token is out)."""
        orig = self._originals[req.rid]
        if reason != "length" or orig.max_new_tokens == 1:
            return                                             # done already: <EOS> or one token wanted
        n = req.num_computed                                   # the prompt's K/V (the first token is not computed yet)
        packet = export_kv(self.prefill.store, req.rid, n, like=self.decode.store)
        sent = req.token_times[-1]                             # the prefill's end: its first token is out
        arrives = sent + self.link.delay(n, packet.nbytes)
        self.handovers[req.rid] = Handover(req.rid, n, packet.form, packet.nbytes,
                                           self.link.link_bytes(n, packet.nbytes), sent, arrives, packet.copy_out_s)
        nxt = orig.clone(arrival=arrives)
        self.decode.submit(nxt)
        nxt.output = list(req.output)                           # the first token travels with the request
        nxt.token_times, nxt.token_steps = list(req.token_times), list(req.token_steps)
        nxt.first_token_time, nxt.first_token_step = req.first_token_time, req.first_token_step
        self.decode.scheduler.inbox[req.rid] = packet
        self.prefill.sampler.hand_over(req.rid, self.decode.sampler)   # a sampled request keeps its random stream
        self._decode_reqs[req.rid] = nxt

    def _admitted(self, req: Request, now: float, copy_s: float) -> None:
        h = self.handovers[req.rid]
        h.copy_in_s, h.admitted = copy_s, now

    # ---- the run ---------------------------------------------------------------------------------------
    def run(self, requests: Iterable[Request], max_steps: int | None = None) -> DisaggResult:
        """Serve fresh copies of `requests`: prefill engine, hand-over, decode engine."""
        if self._ran:
            raise ValueError("run: a DisaggregatedServer runs once; build a new one for another trace")
        check_int("max_steps", max_steps, 1, none_ok=True)
        self._ran = True
        reqs = list(check_iterable("requests", requests, what="a list of Requests"))
        for i, r in enumerate(reqs):
            check_type(f"requests[{i}]", r, Request)
        auto = max((int(r.rid) + 1 for r in reqs if is_int(r.rid)), default=0)
        for r in reqs:
            # Admission, before any work: a request the DECODE engine could never hold (prompt +
            # max_new_tokens past its store or the model's context), a bad field, or a reused id
            # is rejected here, on its own; the others are served.
            problem = self.decode.admission_problem(r)
            if problem is None and r.width > 1:
                what = f"n: {r.n} samples" if r.n > 1 else f"beam_width: {r.beam_width} beams"
                problem = Rejection.INVALID, (f"{what}: the disaggregated server hands over one sequence per "
                                              f"request; serve it with an Engine")
            if problem is None and r.rid in self._originals:
                problem = Rejection.DUPLICATE, f"rid: {r.rid} is already used by another request"
            if problem is not None:
                self._rejected.append(_rejected_copy(r, *problem))
                continue
            if r.rid is None:
                r, auto = r.clone(rid=auto), auto + 1
            self._originals[r.rid] = r
            self.prefill.submit(r.clone(max_new_tokens=1))     # the prefill engine stops after the first token
        steps = 0
        with frozen_heap():                                    # as Engine.run: engine/heap.py
            while max_steps is None or steps < max_steps:
                tp, td = self.prefill.next_event(), self.decode.next_event()
                if math.isinf(tp) and math.isinf(td):
                    break
                stage = self.prefill if tp <= td else self.decode
                if stage.step() is not None:
                    steps += 1
        return self.result()

    def result(self) -> DisaggResult:
        pre, dec = self.prefill.result(), self.decode.result()
        by_rid_pre = {r.rid: r for r in pre.requests}
        merged = []
        for rid in sorted(self._originals):
            orig = self._originals[rid]
            rec = orig.clone()
            p = by_rid_pre[rid]
            d = self._decode_reqs.get(rid)
            if d is None:                                         # never left the prefill engine
                rec.copy_state(p)
            else:
                rec.copy_state(d)
                rec.admitted_time = p.admitted_time
                rec.num_preemptions = p.num_preemptions + d.num_preemptions
                rec.cached_prompt_tokens = p.cached_prompt_tokens + d.cached_prompt_tokens
            rec.arrival = orig.arrival
            merged.append(rec)
        merged += self._rejected
        hand = sorted(self.handovers.values(), key=lambda h: h.rid)
        return DisaggResult(merged, pre, dec, hand, self.config)


def _rejected_copy(req: Request, kind: Rejection, reason: str) -> Request:
    """A copy of `req` (the caller's object stays as it was) marked REJECTED with its reason."""
    rec = copy.copy(req)
    rec.output, rec.token_times, rec.token_steps = [], [], []
    rec.state, rec.rejection, rec.finish_reason = State.REJECTED, kind, reason
    return rec


def serve_disaggregated(model, requests: Iterable[Request], **kwargs) -> DisaggResult:
    """One run of a new DisaggregatedServer on copies of `requests`."""
    return DisaggregatedServer(model, **kwargs).run(list(requests))


def serve_colocated(model, requests: Iterable[Request], replicas: int = 1,
                    make_store: Callable | None = None, **engine_kwargs) -> EngineResult:
    """The same trace on `replicas` independent engines that each do prefill AND decode
    (requests dealt round-robin in arrival order): the fair, same-hardware baseline for
    a disaggregated server that uses two engines.

    make_store: model -> a fresh KVStore for each replica (default: the Engine's default)."""
    check_int("replicas", replicas, 1, 64)
    check_callable("make_store", make_store, "a function model -> KVStore", none_ok=True)
    reqs = sorted(requests, key=lambda r: (r.arrival, r.rid))
    parts = [reqs[i::replicas] for i in range(replicas)]
    results = []
    for part in parts:
        store = make_store(model) if make_store is not None else None
        results.append(Engine(model, store, **engine_kwargs).run(clone_requests(part)))
    merged = sorted((r for res in results for r in res.requests), key=lambda r: r.rid)
    steps = sorted((s for res in results for s in res.steps), key=lambda s: (s.end, s.start))
    config = dict(results[0].config)
    config["replicas"] = replicas
    if replicas > 1:
        config["policy"] = f"{config['policy']} x{replicas}"
    return EngineResult(merged, steps, config)


__all__ = ["LINKS", "Link", "KVPacket", "export_kv", "import_kv", "blocks_compatible", "handover_bytes", "Handover",
           "DisaggResult", "DisaggregatedServer", "serve_disaggregated", "serve_colocated"]
