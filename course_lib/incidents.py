"""Three serving incidents to diagnose: a misconfigured server, a real trace, telemetry.

Each incident is what an on-call engineer meets: a short ticket (the symptom
users and dashboards report), a server configuration (`ServerConfig`), a
request trace, and the telemetry of running that trace through the real engine
(course_lib.engine) on TinyLM:

    memory     per step: KV slots holding tokens, reserved, fragmented, free;
               the largest free span; memory maps at the worst moments
    refusals   every allocation the KV store refused, with the free memory at
               that moment ("requested 180 slots, largest free 90, total free 400")
    queues     requests waiting and running per step; preemptions per step
    latency    TTFT and time between tokens (TBT): p50 / p90 / p99 (course_lib.engine.slo)

The three incidents (modelled on the seeds' scenarios):

    'a'  allocations fail while monitoring shows free memory
         (a contiguous KV arena fragments: the paradox of free memory)
    'b'  latency spikes and memory growth under shared system prompts and long generations
         (every request keeps its own copy of the same system prompt; KV runs out mid-generation;
         preempted requests are recomputed)
    'c'  a latency SLO missed because long prefills stall decodes
         (prefill-first batching with a large token budget puts whole documents into steps
         that every streaming request must wait for)

The learner reads the telemetry, changes the configuration (never the memory
budget: that is what the hardware has), and runs the SAME trace again:
`run_incident(model, 'a', fixed_config)` and `incident.evaluate(run)` say which
targets are met. Time comes from `course_lib.engine.slo.gpu_like_clock()`, a
deterministic cost model, so the same configuration always gives the same verdict.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Sequence

from course_lib.engine.engine import Engine
from course_lib.engine.metrics import EngineResult
from course_lib.engine.priority import PriorityRequest
from course_lib.engine.request import State
from course_lib.engine.scheduler import POLICIES, PREEMPTION_MODES
from course_lib.engine.slo import SLO, gpu_like_clock, slo_report
from course_lib.kv.allocators import PLACEMENTS
from course_lib.kv.base import KVAllocationError, free_memory_paradox
from course_lib.kv.contiguous import RESERVATIONS
from course_lib.validate import check_bool, check_choice, check_float, check_int, check_mapping, check_type

KV_STORES = ("contiguous", "paged")
TARGET_OPS = ("<=", ">=", "==")


# ---- the knobs ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerConfig:
    """Everything an operator can change about the server (defaults: a sensible paged server).

    kv_store:           'contiguous' (one slab per request) or 'paged' (blocks)
    kv_slots:           KV memory in token slots: the hardware's budget
    reservation:        contiguous only: 'max' | 'pow2' | 'oracle' (how big a slab is)
    placement:          contiguous only: 'first-fit' | 'best-fit' | 'buddy'
    block_size:         paged only: token slots per block (must divide kv_slots)
    prefix_caching:     paged only: share the KV of common prompt prefixes
    policy:             'static' | 'prefill-first' | 'decode-first' | 'chunked'
    max_running:        batch slots
    max_tokens_per_step: the token budget of one step
    preemption:         'recompute' | 'swap'
    """

    kv_store: str = "paged"
    kv_slots: int = 2048
    reservation: str = "oracle"
    placement: str = "first-fit"
    block_size: int = 16
    prefix_caching: bool = False
    policy: str = "chunked"
    max_running: int = 8
    max_tokens_per_step: int = 256
    preemption: str = "recompute"

    def __post_init__(self):
        def choice(name, allowed):
            check_choice(name, getattr(self, name), allowed)

        def integer(name, lo, hi):
            check_int(name, getattr(self, name), lo, hi)

        choice("kv_store", KV_STORES)
        choice("reservation", RESERVATIONS)
        choice("placement", PLACEMENTS)
        choice("policy", tuple(POLICIES))
        choice("preemption", PREEMPTION_MODES)
        integer("kv_slots", 16, 1 << 16)
        integer("block_size", 1, 256)
        integer("max_running", 1, 64)
        integer("max_tokens_per_step", 1, 4096)
        check_bool("prefix_caching", self.prefix_caching)
        if self.kv_store == "paged" and self.kv_slots % self.block_size:
            raise ValueError(f"block_size: must divide kv_slots ({self.kv_slots}); got {self.block_size}")

    def changes(self, other: "ServerConfig") -> dict[str, tuple[Any, Any]]:
        """{field: (self's value, other's value)} for every field that differs."""
        return {f.name: (getattr(self, f.name), getattr(other, f.name)) for f in fields(self)
                if getattr(self, f.name) != getattr(other, f.name)}

    def describe(self) -> str:
        keep = ["kv_store", "kv_slots"]
        keep += ["reservation", "placement"] if self.kv_store == "contiguous" else ["block_size", "prefix_caching"]
        keep += ["policy", "max_running", "max_tokens_per_step", "preemption"]
        return ", ".join(f"{k}={getattr(self, k)!r}" for k in keep)

    def vllm_flags(self) -> list[str]:
        """The nearest `vllm serve` flags (vLLM V1 engine), one per line; '#' lines say what vLLM has
        no flag for. The KV budget becomes a block count (`--num-gpu-blocks-override`)."""
        blocks = self.kv_slots // self.block_size
        out = [f"--num-gpu-blocks-override {blocks}    # kv_slots={self.kv_slots} as {self.block_size}-token blocks"]
        if self.kv_store == "contiguous":
            out.append(f"# kv_store='contiguous' (reservation={self.reservation!r}, placement={self.placement!r}): "
                       "no vLLM equivalent, vLLM always pages the KV cache")
        out.append(f"--block-size {self.block_size}")
        out.append("--enable-prefix-caching" if self.prefix_caching else "--no-enable-prefix-caching")
        out.append({"chunked": "--enable-chunked-prefill",
                    "decode-first": "--no-enable-chunked-prefill    # V1 schedules running requests first, then "
                                    "whole prompts that fit",
                    "prefill-first": "# policy='prefill-first': no V1 flag (V1 schedules running requests first; "
                                     "V0 without chunked prefill ran prompts first)",
                    "static": "# policy='static': no vLLM equivalent (vLLM batches continuously)"}[self.policy])
        out.append(f"--max-num-seqs {self.max_running}")
        out.append(f"--max-num-batched-tokens {self.max_tokens_per_step}")
        out.append("# preemption='recompute': the V1 engine's only mode, no flag" if self.preemption == "recompute"
                   else "# preemption='swap': not in the V1 engine (V0 had --preemption-mode swap)")
        return out

    def vllm_command(self, model: str = "course_lib/weights/tinylm-stories") -> str:
        """`vllm serve MODEL` with the flags of `vllm_flags()` (a shell command to read, not to run here)."""
        check_type("model", model, str, "a model path or name")
        flags = [f.split("    # ") for f in self.vllm_flags() if not f.startswith("#")]
        notes = [f"# {f[0].split()[0]}: {f[1]}" for f in flags if len(f) > 1]
        notes += [f for f in self.vllm_flags() if f.startswith("#")]
        lines = [f"vllm serve {model} \\"] + [f"    {f[0]} \\" for f in flags]
        lines[-1] = lines[-1][:-2]
        return "\n".join(lines + notes)


# ---- a store and an engine that keep telemetry -------------------------------------------------------------
@dataclass
class Refusal:
    """One allocation the KV store refused."""

    step: int
    time: float
    seq_id: int
    requested: int
    largest_free: int
    total_free: int

    @property
    def paradox(self) -> bool:
        """Refused although enough memory was free in total (external fragmentation)."""
        return free_memory_paradox(self.requested, self.largest_free, self.total_free)


class _Monitor:
    """Mixin for any KVStore: records every refused add/grow (then re-raises)."""

    def start_monitor(self):
        """Start recording: no refusal yet, the clock at step 0, time 0."""
        self.refusals: list[Refusal] = []
        self.clock_now = (0, 0.0)

    def add(self, seq_id, tokens, max_len):
        try:
            return super().add(seq_id, tokens, max_len)
        except KVAllocationError as exc:
            self._log(seq_id, exc)
            raise

    def grow(self, seq_id, length):
        try:
            return super().grow(seq_id, length)
        except KVAllocationError as exc:
            self._log(seq_id, exc)
            raise

    def _log(self, seq_id, exc):
        step, now = self.clock_now
        self.refusals.append(Refusal(step, now, seq_id, exc.requested, exc.largest_free, exc.total_free))


def _monitored(cls):
    return type(f"Monitored{cls.__name__}", (_Monitor, cls), {})


def build_store(model, config: ServerConfig):
    """The KV store the configuration describes, with refusal monitoring."""
    if config.kv_store == "contiguous":
        from course_lib.kv.contiguous import ContiguousKVStore
        store = _monitored(ContiguousKVStore).for_model(model, capacity=config.kv_slots, reservation=config.reservation,
                                                       placement=config.placement)
    else:
        from course_lib.kv.paged import PagedKVStore
        store = _monitored(PagedKVStore).for_model(model, capacity=config.kv_slots, block_size=config.block_size,
                                                  prefix_caching=config.prefix_caching)
    store.start_monitor()
    return store


@dataclass
class Sample:
    """Telemetry after one step."""

    step: int
    time: float
    token_states: int
    reserved: int
    internal: int
    external: int
    free: int
    largest_free: int
    waiting: int
    running: int
    preempted: int


class MonitoredEngine(Engine):
    """The engine, sampling memory and queues after every step and keeping memory maps
    at the first refusal with enough memory free, and at the fullest moment."""

    def __init__(self, model, store, **kwargs):
        super().__init__(model, store, **kwargs)
        self.samples: list[Sample] = []
        self.maps: dict[str, tuple[int, list]] = {}
        self._peak = -1
        self.recomputed = 0        # tokens whose K/V a recompute preemption threw away (to be computed again)

    def step(self):
        self.store.clock_now = (len(self.steps), self.now)
        before = len(self.store.refusals)
        computed = {r.rid: (r, r.num_computed) for r in self.scheduler.running}
        rec = super().step()
        if rec is None:
            return None
        for rid in rec.preempted:
            r, n = computed.get(rid, (None, 0))
            if r is not None and not r.swapped:
                self.recomputed += n
        u = self.store.usage()
        largest = self.store.largest_free() if hasattr(self.store, "largest_free") else \
            self.store.num_free_blocks() * self.store.block_size
        states = [r.state for r in self.scheduler.requests()]
        self.samples.append(Sample(rec.index, rec.end, u.token_states, u.reserved, u.internal, u.external, u.free,
                                   largest, sum(s is State.WAITING for s in states),
                                   sum(s is State.RUNNING for s in states), len(rec.preempted)))
        used = u.capacity - u.free - u.external
        if "first paradox" not in self.maps and any(r.paradox for r in self.store.refusals[before:]):
            self.maps["first paradox"] = (rec.index, self.store.memory_map())
        if used > self._peak:
            self._peak = used
            self.maps["fullest"] = (rec.index, self.store.memory_map())
        return rec


# ---- one run and what it shows ------------------------------------------------------------------------------
@dataclass
class IncidentRun:
    """A configuration run on an incident's trace, with its telemetry."""

    config: ServerConfig
    result: EngineResult
    samples: list[Sample]
    refusals: list[Refusal]
    maps: dict[str, tuple[int, list]]
    capacity: int
    slo: SLO
    store_stats: dict = field(default_factory=dict)
    recomputed: int = 0            # tokens thrown away by recompute preemptions

    @property
    def paradox_refusals(self) -> list[Refusal]:
        return [r for r in self.refusals if r.paradox]

    def metrics(self) -> dict[str, float]:
        """The numbers the targets are checked against (latencies in ms)."""
        rep = slo_report(self.result, self.slo)
        res = self.result
        used = [(s.token_states + s.reserved + s.internal) / self.capacity for s in self.samples]
        busy = [s for s in self.samples if s.waiting > 0] or self.samples     # moments memory was the bottleneck
        token_share = sum(s.token_states for s in busy) / (self.capacity * len(busy)) if busy else 0.0
        out = {
            "requests": len(res.requests),
            "finished": len(res.finished),
            "rejected": len(res.rejected),
            "refusals": len(self.refusals),
            "paradox_refusals": len(self.paradox_refusals),
            "free_at_refusal": max((r.total_free / self.capacity for r in self.paradox_refusals), default=0.0),
            "preemptions": sum(r.num_preemptions for r in res.requests),
            "recomputed_tokens": self.recomputed,
            "ttft_p50_ms": 1e3 * rep.ttft["p50"], "ttft_p90_ms": 1e3 * rep.ttft["p90"],
            "ttft_p99_ms": 1e3 * rep.ttft["p99"],
            "tbt_p50_ms": 1e3 * rep.tbt["p50"], "tbt_p90_ms": 1e3 * rep.tbt["p90"], "tbt_p99_ms": 1e3 * rep.tbt["p99"],
            "slo_attainment": rep.attainment,
            "makespan_s": res.makespan,
            "kv_peak_use": max(used, default=0.0),
            "kv_mean_use": sum(used) / len(used) if used else 0.0,
            "kv_token_share": token_share,
            "max_waiting": max((s.waiting for s in self.samples), default=0),
            "tbt_max_ms": 1e3 * max(rep.tbt_values, default=0.0),
            "shared_prefix": shared_prefix_len([r.prompt for r in res.requests]),
            "long_prefill_steps": sum(1 for st in res.steps if st.duration > self.slo.tbt
                                      and any(k == "prefill" for _, _, k in st.items)),
        }
        out.update(self.store_stats)
        return out



def run_config(model, config: ServerConfig, requests: Sequence, slo: SLO, clock=None) -> IncidentRun:
    """Serve fresh copies of `requests` on the server `config` describes, with telemetry."""
    check_type("config", config, ServerConfig)
    check_type("slo", slo, SLO, "an SLO(ttft=..., tbt=...)")
    from course_lib.engine.priority import clone_tagged
    store = build_store(model, config)
    eng = MonitoredEngine(model, store, policy=config.policy, max_running=config.max_running,
                          max_tokens_per_step=config.max_tokens_per_step, preemption=config.preemption,
                          clock=clock or gpu_like_clock())
    res = eng.run(clone_tagged(requests), max_steps=20_000)
    stats = {}
    if hasattr(store, "stats"):
        stats = {"prefix_hit_rate": store.stats.hit_rate if config.prefix_caching else 0.0,
                 "blocks_swapped": store.stats.swapped_out,
                 "prefix_queries": store.stats.lookup_tokens if config.prefix_caching else 0,
                 "prefix_hits": store.stats.hit_tokens if config.prefix_caching else 0}
    return IncidentRun(config, res, eng.samples, list(store.refusals), eng.maps, store.capacity, slo, stats,
                       eng.recomputed)


def shared_prefix_len(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix that at least half of the prompts share (0 if none)."""
    prompts = [list(p) for p in prompts]
    if len(prompts) < 2:
        return 0
    best = 0
    for p in prompts[:8]:                       # a common prefix is found from any of its holders
        for q_len in range(len(p), best, -1):
            head = p[:q_len]
            if sum(1 for q in prompts if q[:q_len] == head) * 2 >= len(prompts):
                best = q_len
                break
    return best


# ---- targets and incidents ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """A number the fixed server must reach: metrics()[metric] <op> bound."""

    metric: str
    op: str
    bound: float
    label: str

    def __post_init__(self):
        check_type("metric", self.metric, str, "a metric name (a key of IncidentRun.metrics())")
        check_choice("op", self.op, TARGET_OPS)
        check_float("bound", self.bound)
        check_type("label", self.label, str)

    def met(self, metrics: dict) -> bool:
        check_mapping("metrics", metrics, "a dict of metrics (IncidentRun.metrics())")
        if self.metric not in metrics:
            raise ValueError(f"metrics: must hold {self.metric!r}; got the keys {', '.join(map(str, metrics))}")
        v = metrics[self.metric]
        return {"<=": v <= self.bound + 1e-9, ">=": v >= self.bound - 1e-9, "==": abs(v - self.bound) <= 1e-9}[self.op]

    def describe(self, metrics: dict | None = None) -> str:
        text = f"{self.label} {self.op} {self.bound:g}"
        if metrics is not None:
            text += f" (got {metrics[self.metric]:.3g})"
        return text


@dataclass
class Incident:
    """A ticket, a misconfigured server, a trace and the targets a fix must meet."""

    key: str
    title: str
    ticket: str
    config: ServerConfig
    make_trace: Callable[[int], list]
    slo: SLO
    targets: list[Target]
    fixed: tuple[str, ...] = ("kv_slots",)
    hint: str = ""

    def render_ticket(self, run: "IncidentRun") -> str:
        """The ticket, its numbers filled in from a run of the misconfigured server and its targets
        from the incident's SLO (ttft_target_ms, tbt_target_ms), so the ticket, the dashboard's target
        lines and the graded targets cannot disagree."""
        return self.ticket.format(**run.metrics(), ttft_target_ms=1e3 * self.slo.ttft,
                                  tbt_target_ms=1e3 * self.slo.tbt)

    def trace(self, seed: int = 0) -> list:
        return self.make_trace(seed)

    def run(self, model, config: ServerConfig | None = None, seed: int = 0) -> IncidentRun:
        return run_config(model, config or self.config, self.trace(seed), self.slo)

    def evaluate(self, run: IncidentRun) -> list[tuple[Target, bool]]:
        m = run.metrics()
        return [(t, t.met(m)) for t in self.targets]

    def problems(self, config: ServerConfig, run: IncidentRun | None = None) -> list[str]:
        """Why this configuration does not fix the incident ([] when it does)."""
        out = [f"{name} must stay {getattr(self.config, name)!r} (the hardware's budget); got {getattr(config, name)!r}"
               for name in self.fixed if getattr(config, name) != getattr(self.config, name)]
        if run is not None and not out:
            m = run.metrics()
            out += [f"missed: {t.describe(m)}" for t in self.targets if not t.met(m)]
        return out


# ---- the traces ----------------------------------------------------------------------------------------------
def _requests(trace, tenant: str = "default", start: int = 0) -> list[PriorityRequest]:
    return [PriorityRequest(list(r.prompt), int(r.output_len), arrival=float(r.arrival), rid=start + i, eos_id=None,
                            tenant=tenant) for i, r in enumerate(trace)]


def chat_trace(seed: int = 0, n: int = 40, rate: float = 40.0) -> list[PriorityRequest]:
    """Incident a: ShareGPT-like chat (scaled 1/8: about 20 tokens in, 42 out), a busy stream."""
    from course_lib.workloads import sharegpt_like
    return _requests(sharegpt_like(n=n, rate=rate, seed=seed, scale=1 / 8), "chat")


def system_prompt_trace(seed: int = 0, n: int = 24, rate: float = 30.0, prefix: int = 96) -> list[PriorityRequest]:
    """Incident b: every request starts with the same `prefix`-token system prompt, then a short
    user message, and generates a long answer (Alpaca-like inputs, long ShareGPT-like outputs)."""
    from course_lib.workloads import LengthDist, make_trace
    dist = LengthDist("assistant", 64.0, 480.0, 0.5, 0.4, "course_lib.incidents (our assumption)")
    return _requests(make_trace(dist, n=n, rate=rate, seed=seed, scale=1 / 8, max_len=4096,
                                shared_prefix=prefix, num_prefixes=1), "assistant")


def documents_trace(seed: int = 0, n_chat: int = 20, n_docs: int = 5, rate_chat: float = 8.0,
                    rate_docs: float = 2.0) -> list[PriorityRequest]:
    """Incident c: streaming chat plus a few long documents to summarise (about 200-token prompts,
    a few tokens out), merged in arrival order. Tenant says which is which."""
    from course_lib.workloads import LengthDist, make_trace
    check_int("seed", seed, 0)
    docs_dist = LengthDist("documents", 1600.0, 48.0, 0.25, 0.5, "course_lib.incidents (our assumption)")
    chat = make_trace("sharegpt", n=n_chat, rate=rate_chat, seed=seed, scale=1 / 8)
    docs = make_trace(docs_dist, n=n_docs, rate=rate_docs, seed=seed + 1, scale=1 / 8, max_len=4096)
    merged = sorted([(r.arrival, "chat", r) for r in chat] + [(r.arrival, "document", r) for r in docs],
                    key=lambda x: (x[0], x[1]))
    return [PriorityRequest(list(r.prompt), int(r.output_len), arrival=float(a), rid=i, eos_id=None, tenant=kind)
            for i, (a, kind, r) in enumerate(merged)]


INCIDENTS: dict[str, Incident] = {}


def _register(inc: Incident) -> Incident:
    INCIDENTS[inc.key] = inc
    return inc


_register(Incident(
    key="a",
    title="Allocations fail while monitoring shows free memory",
    ticket=("PAGER 02:14 chat-api: time to first token p90 is {ttft_p90_ms:.0f} ms (target {ttft_target_ms:.0f} ms); "
            "the KV "
            "allocator logged {refusals} 'KV allocation failed' messages, yet the memory dashboard showed up to "
            "{free_at_refusal:.0%} of the KV cache free at those moments. No deploy since Friday; traffic is normal."),
    config=ServerConfig(kv_store="contiguous", kv_slots=1024, reservation="pow2", placement="first-fit",
                        policy="chunked", max_running=16, max_tokens_per_step=256),
    make_trace=chat_trace,
    slo=SLO(ttft=0.4, tbt=0.05),
    targets=[Target("paradox_refusals", "==", 0, "refusals with enough memory free"),
             Target("finished", ">=", 40, "requests finished"),
             Target("ttft_p90_ms", "<=", 400, "TTFT p90 (ms)")],
    hint="Look at the largest free span next to the total free memory at each refusal.",
))

_register(Incident(
    key="b",
    title="Latency spikes and memory growth with shared system prompts and long generations",
    ticket=("TICKET #4471 assistant-api: since the new system prompt shipped (the same {shared_prefix} tokens in "
            "front of every request), replies stutter: streams freeze for up to {tbt_max_ms:.0f} ms, then catch up. "
            "KV memory peaks at {kv_peak_use:.0%} and the preemption counter reads {preemptions} as answers get "
            "long. More memory is not in the budget."),
    config=ServerConfig(kv_store="paged", kv_slots=1024, block_size=16, prefix_caching=False, policy="chunked",
                        max_running=16, max_tokens_per_step=256, preemption="recompute"),
    make_trace=system_prompt_trace,
    slo=SLO(ttft=1.0, tbt=0.04),
    targets=[Target("preemptions", "<=", 2, "preemptions"),
             Target("tbt_p99_ms", "<=", 40, "TBT p99 (ms)"),
             Target("ttft_p90_ms", "<=", 1000, "TTFT p90 (ms)"),
             Target("finished", ">=", 24, "requests finished")],
    hint="Count how many copies of the system prompt the pool holds; compare the blocks in use with the tokens.",
))

_register(Incident(
    key="c",
    title="A latency SLO missed because long prefills stall decodes",
    ticket=("SLO ALERT summarise+chat: p99 time between tokens {tbt_p99_ms:.0f} ms against a {tbt_target_ms:.0f} ms "
            "objective since the 'summarise this document' feature launched; TTFT p99 is {ttft_p99_ms:.0f} ms, within "
            "its {ttft_target_ms:.0f} ms target. Users say streams pause mid-sentence."),
    config=ServerConfig(kv_store="paged", kv_slots=4096, block_size=16, policy="prefill-first", max_running=8,
                        max_tokens_per_step=512),
    make_trace=documents_trace,
    slo=SLO(ttft=0.3, tbt=0.04),
    targets=[Target("tbt_p99_ms", "<=", 40, "TBT p99 (ms)"),
             Target("ttft_p99_ms", "<=", 300, "TTFT p99 (ms)"),
             Target("finished", ">=", 25, "requests finished")],
    hint="Find the steps in which the streams' gaps happen, and what else ran in them.",
))


def get_incident(key: str) -> Incident:
    return INCIDENTS[check_choice("incident", key, INCIDENTS)]


def run_incident(model, key: str, config: ServerConfig | None = None, seed: int = 0) -> IncidentRun:
    """Run incident `key`'s trace (seed) on `config` (default: the misconfigured server)."""
    return get_incident(key).run(model, config, seed)


def report(incident: Incident, run: IncidentRun) -> str:
    """The verdict of one run, target by target, as text."""
    m = run.metrics()
    lines = [f"incident {incident.key}: {incident.title}", f"  config: {run.config.describe()}"]
    for t, ok in incident.evaluate(run):
        lines.append(f"  {'✅' if ok else '❌'} {t.describe(m)}")
    return "\n".join(lines)


def telemetry_summary(run: IncidentRun) -> dict:
    """The on-call view: a few numbers from the telemetry (the dashboard's headline)."""
    m = run.metrics()
    keys = ["finished", "rejected", "refusals", "paradox_refusals", "free_at_refusal", "preemptions",
            "recomputed_tokens", "kv_peak_use", "ttft_p90_ms", "ttft_p99_ms", "tbt_p50_ms", "tbt_p99_ms",
            "max_waiting", "shared_prefix", "prefix_hit_rate", "long_prefill_steps"]
    return {k: m[k] for k in keys if k in m}


# What an operator of vLLM sees for the same moments: (vLLM's metric name, how this course computes it).
# Names from vLLM's production-metrics documentation (V1 engine); counters are exported with a _total suffix.
VLLM_METRICS = {
    "vllm:kv_cache_usage_perc (max)": "share of KV slots in use, at the fullest step (0-1)",
    "vllm:num_requests_running (max)": "requests holding a batch slot, at the busiest step",
    "vllm:num_requests_waiting (max)": "requests waiting for admission, at the longest queue",
    "vllm:num_preemptions": "preemptions during the run (counter)",
    "vllm:prefix_cache_queries": "prompt tokens looked up in the prefix cache (counter)",
    "vllm:prefix_cache_hits": "of those, tokens found cached (counter)",
    "vllm:time_to_first_token_seconds p90": "TTFT, 90th percentile over requests (histogram)",
    "vllm:time_to_first_token_seconds p99": "TTFT, 99th percentile over requests (histogram)",
    "vllm:inter_token_latency_seconds p99": "every gap between two tokens, 99th percentile (histogram)",
}


def vllm_metrics(run: IncidentRun) -> dict[str, float]:
    """The run's telemetry under the names vLLM's /metrics endpoint uses (see VLLM_METRICS).
    Latencies in seconds, as vLLM reports them. A contiguous store has no prefix cache: its
    queries and hits are 0. KV allocation refusals have no vLLM metric (its pool is paged)."""
    check_type("run", run, IncidentRun)
    m = run.metrics()
    lookups = hits = 0
    if run.config.kv_store == "paged" and run.config.prefix_caching:
        lookups, hits = run.store_stats.get("prefix_queries", 0), run.store_stats.get("prefix_hits", 0)
    return {
        "vllm:kv_cache_usage_perc (max)": m["kv_peak_use"],
        "vllm:num_requests_running (max)": max((s.running for s in run.samples), default=0),
        "vllm:num_requests_waiting (max)": m["max_waiting"],
        "vllm:num_preemptions": m["preemptions"],
        "vllm:prefix_cache_queries": lookups,
        "vllm:prefix_cache_hits": hits,
        "vllm:time_to_first_token_seconds p90": m["ttft_p90_ms"] / 1e3,
        "vllm:time_to_first_token_seconds p99": m["ttft_p99_ms"] / 1e3,
        "vllm:inter_token_latency_seconds p99": m["tbt_p99_ms"] / 1e3,
    }


def stalls(run: IncidentRun, threshold: float) -> list[dict]:
    """The steps after which some stream waited longer than `threshold` (clock units) for its
    next token: the step, its duration, and what it held (prefill tokens, decodes)."""
    check_type("run", run, IncidentRun)
    check_float("threshold", threshold, 0, note="clock units")
    steps = run.result.steps
    ends = [s.end for s in steps]
    out = {}
    for r in run.result.requests:
        for a, b in zip(r.token_times, r.token_times[1:]):
            if b - a > threshold:
                i = bisect.bisect_left(ends, b - 1e-12)
                if i < len(steps) and i not in out:
                    s = steps[i]
                    out[i] = {"step": s.index, "duration_ms": round(1e3 * s.duration, 2),
                              "prefill_tokens": sum(n for _, n, k in s.items if k == "prefill"),
                              "decodes": sum(1 for _, _, k in s.items if k == "decode"),
                              "preempted": len(s.preempted)}
    return [out[i] for i in sorted(out)]


__all__ = ["ServerConfig", "KV_STORES", "Refusal", "build_store", "MonitoredEngine", "Sample", "IncidentRun",
           "run_config", "Target", "Incident", "INCIDENTS", "get_incident", "run_incident", "report",
           "telemetry_summary", "stalls", "chat_trace", "system_prompt_trace", "documents_trace", "VLLM_METRICS",
           "vllm_metrics"]
