"""Bad input at every public entry point of course_lib gets a ValueError or TypeError whose
message is ONE line naming the parameter (issue 12), and one bad request never stops the others.

The table below lists each entry point once, with arguments that work (`good`) and, per
parameter, values that must be refused: 0, negative, NaN, inf, huge, the wrong type, an
unknown name, a duplicate. Every case runs under a time limit, so a hang fails instead of
blocking the suite. `test_good_arguments_work` calls each entry point once with its good
arguments, so a refusal is never an accident of a broken default.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch

import course_lib.attention as attention
import course_lib.costs as costs
import course_lib.device as device
import course_lib.fused_ops as fused_ops
import course_lib.generate as gen
import course_lib.incidents as incidents
import course_lib.kv.allocators as alloc
import course_lib.kv.decoding as decoding
import course_lib.labs.paging as paged_lab
import course_lib.kv.prefix_cache as prefix_cache
import course_lib.kv.replay as replay
import course_lib.kv.sizing as sizing
import course_lib.op_count as op_count
import course_lib.padding as padding
import course_lib.paged_attention as pa_mod
import course_lib.plots.memory as pmem
import course_lib.plots.padding as ppad
import course_lib.plots.paging as ppag
import course_lib.plots.scheduling as psch
import course_lib.plots.timeline as ptime
import course_lib.quiz as quiz
import course_lib.tokenizer as tok
import course_lib.validate as validate
import course_lib.widgets as widgets
import course_lib.widgets.batching as wbatch
import course_lib.widgets.memory as wmem
import course_lib.widgets.padding as wpad
import course_lib.widgets.paging as wpag
import course_lib.widgets.scheduling as wsched
import course_lib.workloads as workloads
from course_lib.engine import Engine, Rejection, Request, State
from course_lib.engine.clock import CostModelClock, make_clock
from course_lib.engine.disagg import DisaggregatedServer, Link, export_kv, handover_bytes, serve_colocated
from course_lib.engine.priority import PriorityEngine, PriorityRequest, Preemptive
from course_lib.labs.scheduling import (class_report, contention_trace, deadline_trace, mixed_trace, starvation,
                                       two_class_trace)
from course_lib.engine.queues import Ageing, FairShare, as_key, make_queue
from course_lib.engine.request import requests_from_trace
from course_lib.engine.scheduler import FunctionPolicy, Limits, Scheduler, make_policy
from course_lib.engine.slo import SLO, compare, percentiles, slo_report, tbt_of
from course_lib.kv.contiguous import ContiguousKVStore, reservation_size
from course_lib.kv.paged import PagedKVStore
from course_lib.kv.reference import ReferenceKVStore
from course_lib.model import TinyLMConfig, build_model

NAN, INF, HUGE = float("nan"), float("inf"), 10**15
TIME_LIMIT_S = 10            # a case that runs longer has hung: it fails, the suite goes on

CFG = TinyLMConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=64)
MODEL = build_model(CFG, seed=3, dtype=torch.float64, weights="random")
VOCAB = CFG.vocab_size

# ---- bad values, by what the parameter is ------------------------------------------------------------
POS_INT = [0, -1, 2.5, NAN, INF, True, "3", None, [2]]       # an integer >= 1
NONNEG_INT = [-1, 2.5, NAN, True, "3", None]                 # an integer >= 0
OPT_POS_INT = [0, -1, 2.5, NAN, True, "3"]                   # an integer >= 1 or None
FIN_NONNEG = [-1.0, NAN, INF, -INF, "1", True, None, [1.0]]  # a finite number >= 0
FIN_POS = [0, -1.0, NAN, INF, "1", True, None]               # a finite number > 0
POS_OR_INF = [0, -1.0, NAN, -INF, "1", True, None]           # a number > 0, inf allowed
NAME = ["x", "", 3, None, ["a"], True]                       # one of a few names
BOOL = ["yes", 1, 0, None, 2.0]                               # True or False
TITLE = [3, ["a"], True]                                     # a str or None


def _tokens(*ids):
    return list(ids)


# ---- one small run of each kind, shared by the plots and the reports ----------------------------------
def _result():
    reqs = [Request([65, 66, 67], 3, rid=0), Request([70, 71], 2, arrival=1.0, rid=1)]
    return Engine(MODEL, clock="steps").run(reqs)


RESULT = _result()
DRESULT = DisaggregatedServer(MODEL, clock="steps").run([Request([65, 66], 3, rid=0)])
INCIDENT_RUN = incidents.run_config(MODEL, incidents.ServerConfig(kv_slots=256), [Request([65], 2, rid=0)], SLO(1.0, 1.0))
TRACE = workloads.trace_from_lengths([(4, 3), (6, 2)], interval=1.0)
REPLAY = replay.replay(TRACE, ContiguousKVStore(1, 1, 1, capacity=32, max_model_len=16), step_time=1.0,
                       snapshot_every=1)
SEGMENTS = ContiguousKVStore(1, 1, 1, capacity=32).memory_map()


def _paged_snapshot():
    s = PagedKVStore(1, 1, 1, num_blocks=4, block_size=4)
    s.add(0, [1, 2, 3], 8)
    return s.snapshot()


SNAP = _paged_snapshot()
SHARES = {"token_states": 0.5, "reservation": 0.2, "internal": 0.2, "external_and_others": 0.1}


# ---- stores with one sequence in them (a fresh one per call: a case may change it) ----------------------
def ref_store():
    s = ReferenceKVStore(2, 2, 4, capacity=64)
    s.add(0, [1, 2, 3], 8)
    return s


def arena_store():
    s = ContiguousKVStore(2, 2, 4, capacity=64, max_model_len=32)
    s.add(0, [1, 2, 3], 8)
    return s


def paged_store(**kw):
    s = PagedKVStore(2, 2, 4, num_blocks=8, block_size=4, **kw)
    s.add(0, [1, 2, 3], 8)
    return s


def _swapped_paged_store():
    s = paged_store()
    s.swap_out(0)
    return s


def _computed_ref_store():
    s = ref_store()
    s.cached[0] = 3                      # as if a step had written the prompt's keys and values
    return s


STORES = {"ReferenceKVStore": ref_store, "ContiguousKVStore": arena_store, "PagedKVStore": paged_store}


@dataclass
class Entry:
    """One public entry point: `call(**good)` works; `call(**{**good, param: bad})` must be refused
    with a message that starts with `names.get(param, param)`."""

    name: str
    call: Callable[..., Any]
    good: dict
    bad: dict[str, list]
    names: dict[str, str] = field(default_factory=dict)


def _store_ctor(cls, **extra):
    def make(**kw):
        return cls(**kw)
    return make


def _method(make_store, verb):
    def call(**kw):
        return getattr(make_store(), verb)(**kw)
    return call


def _twice_free(make_store):
    def call(seq_id):
        s = make_store()
        s.add(1, [1], 2)
        s.free(0)
        return s.free(seq_id)
    return call


def _enter(cm):
    def call(**kw):
        with cm(**kw):
            pass
    return call


def _listed(fn):
    def call(**kw):
        return list(fn(**kw))
    return call


def _quiz_answer(index):
    return quiz.Quiz("q?", [quiz.Choice("a", True, "yes"), quiz.Choice("b", False, "no")]).answer(index)


def _target_met(metrics):
    return incidents.Target("ttft_p99_ms", "<=", 100.0, "TTFT p99").met(metrics)


def _submit(req):
    return Engine(MODEL).submit(req)


def _fit(steps):
    return CostModelClock.fit(steps)


def _request_field(name):
    """A Request with one field set after construction, checked as the engine checks it at submit."""
    def call(value):
        r = Request([65, 66], 3, rid=0)
        setattr(r, name, value)
        r.validate(VOCAB)
    return call


CUDA = [] if torch.cuda.is_available() else ["cuda"]
MPS = [] if torch.backends.mps.is_available() else ["mps"]
DEVICES = ["gpu", 5, "cuda:99"] + CUDA + MPS
STORE_DIMS = {"num_layers": POS_INT + [HUGE], "num_kv_heads": POS_INT + [HUGE], "head_dim": POS_INT + [HUGE],
              "dtype": [torch.int64, torch.bool, "float32", None], "device": DEVICES}
REQ_GOOD = dict(prompt=[65, 66], max_new_tokens=3)
PANEL_GOOD = dict(model=MODEL)
Q = torch.zeros(1, 4, 3, 8)
K = torch.zeros(1, 2, 3, 8)

ENTRIES: list[Entry] = [
    # ---- the validation helper itself ----
    Entry("validate.check_int", validate.check_int, dict(name="n", value=3, lo=1, hi=5), {"value": POS_INT + [6]},
          {"value": "n"}),
    Entry("validate.check_float", validate.check_float, dict(name="x", value=0.5, lo=0, hi=1),
          {"value": FIN_NONNEG + [1.5]}, {"value": "x"}),
    Entry("validate.check_choice", validate.check_choice, dict(name="kind", value="a", choices=("a", "b")),
          {"value": NAME}, {"value": "kind"}),
    Entry("validate.check_bool", validate.check_bool, dict(name="flag", value=True), {"value": BOOL},
          {"value": "flag"}),
    Entry("validate.check_tokens", validate.check_tokens, dict(name="ids", tokens=[1, 2], vocab_size=10),
          {"tokens": [[1.5], [-1], [10], "ab", 5, [], [True]]}, {"tokens": "ids"}),
    Entry("validate.check_tensor", validate.check_tensor, dict(name="q", value=Q, ndim=4, floating=True),
          {"value": [Q[0], Q.long(), [1.0], None]}, {"value": "q"}),
    # ---- device ----
    Entry("device.get_device", device.get_device, dict(prefer="cpu"), {"prefer": ["gpu", 5, "tpu"] + CUDA + MPS},
          {"prefer": "device"}),
    Entry("device.check_device", device.check_device, dict(device="cpu"), {"device": DEVICES + [None]}),
    Entry("device.time_interleaved", device.time_interleaved, dict(contenders={"a": lambda: None}, rounds=1, warmup=0),
          {"contenders": [{}, 5, {"a": 5}, None, [lambda: None]], "rounds": POS_INT + [1001],
           "warmup": NONNEG_INT + [101], "threads": [0, 2.5, NAN, "2"], "number": POS_INT}),
    Entry("paged_attention.time_contenders", pa_mod.time_contenders, dict(contenders={"a": lambda: None}, repeat=1,
                                                                          warmup=0),
          {"contenders": [{}, 5, {"a": 5}, None], "repeat": POS_INT + [1001], "warmup": NONNEG_INT + [101],
           "threads": [0, 2.5, NAN, "2"], "device": ["gpu", 5]}),
    Entry("device.time_fn", device.time_fn, dict(fn=lambda: None, repeat=1, warmup=0),
          {"repeat": POS_INT, "warmup": NONNEG_INT}),
    # ---- KV stores: constructors ----
    Entry("ReferenceKVStore", _store_ctor(ReferenceKVStore), dict(num_layers=2, num_kv_heads=2, head_dim=4, capacity=8),
          dict(STORE_DIMS, capacity=OPT_POS_INT)),
    Entry("ContiguousKVStore", _store_ctor(ContiguousKVStore), dict(num_layers=2, num_kv_heads=2, head_dim=4, capacity=64),
          dict(STORE_DIMS, capacity=POS_INT + [HUGE], max_model_len=[0, -1, 2.5, NAN, True, 65],
               reservation=NAME, placement=NAME, min_block=[0, -2, 3, 2.5, True])),
    Entry("PagedKVStore", _store_ctor(PagedKVStore), dict(num_layers=2, num_kv_heads=2, head_dim=4, num_blocks=8),
          dict(STORE_DIMS, num_blocks=[0, -1, 2.5, NAN, True, "8", HUGE], block_size=[0, -1, 257, 2.5, True],
               max_model_len=[0, -1, 2.5, NAN, True], prefix_caching=BOOL, swap_blocks=[-1, 2.5, NAN, True, HUGE],
               attention=NAME, hash_fn=[None, 5, "hash"])),
    Entry("PagedKVStore(capacity)", _store_ctor(PagedKVStore), dict(num_layers=1, num_kv_heads=1, head_dim=1, capacity=16),
          {"capacity": [0, -1, 2.5, NAN, True, 15, HUGE]}),
    Entry("PagedKVStore.for_model", PagedKVStore.for_model, dict(model=MODEL, num_blocks=4),
          {"model": [None, 5, "tinylm"]}),
    Entry("ContiguousKVStore.for_model", ContiguousKVStore.for_model, dict(model=MODEL, capacity=64),
          {"model": [None, 5]}),
]

# ---- KV stores: the engine's verbs, on each store ----
for store_name, make in STORES.items():
    ENTRIES += [
        Entry(f"{store_name}.add", _method(make, "add"), dict(seq_id=1, tokens=[1, 2], max_len=4),
              {"seq_id": [0, "a", 1.5, None], "tokens": [[], "ab", 5, [1.5]], "max_len": [0, -1, NAN, 2.5, True]},
              {"seq_id": "seq_id", "tokens": "tokens"}),
        Entry(f"{store_name}.grow", _method(make, "grow"), dict(seq_id=0, length=5),
              {"seq_id": [7, "a"], "length": [0, -1, NAN, 2.5, True]}),
        Entry(f"{store_name}.free", _method(make, "free"), dict(seq_id=0), {"seq_id": [1, 99, "a", None]}),
        Entry(f"{store_name}.free twice", _twice_free(make), dict(seq_id=1), {"seq_id": [0]}),
        Entry(f"{store_name}.kv_view", _method(make, "kv_view"), dict(layer=1, seq_id=0, length=3),
              {"layer": [-1, 2, 2.5, NAN, True], "length": [-1, 2.5, 10**6], "seq_id": [9]}),
    ]
ENTRIES += [
    Entry("PagedKVStore.fork", _method(paged_store, "fork"), dict(parent_id=0, child_id=1),
          {"parent_id": [5], "child_id": [0, "c", 1.5]}),
    Entry("PagedKVStore.mark_computed", _method(paged_store, "mark_computed"), dict(seq_id=0, n=2),
          {"n": [-1, 2.5, NAN, 99]}),
    Entry("PagedKVStore.slot_mapping", _method(paged_store, "slot_mapping"), dict(seq_id=0, start=0, n=2),
          {"start": [-1, 2.5, 99], "n": [-1, 2.5, 99]}, {"start": "start", "n": "n"}),
    Entry("PagedKVStore.swap_in", _method(_swapped_paged_store, "swap_in"), dict(seq_id=0), {"seq_id": [1, 5, "a"]}),
    # ---- allocators ----
    Entry("allocators.first_fit", alloc.first_fit, dict(holes=[(0, 8)], size=4), {"size": POS_INT}),
    Entry("allocators.best_fit", alloc.best_fit, dict(holes=[(0, 8)], size=4), {"size": POS_INT}),
    Entry("allocators.insert_hole", alloc.insert_hole, dict(holes=[(0, 4)], start=8, size=4),
          {"start": [-1, 2.5, NAN, "8"], "size": POS_INT}),
    Entry("allocators.next_pow2", alloc.next_pow2, dict(n=5), {"n": POS_INT}),
    Entry("allocators.FreeList", alloc.FreeList, dict(capacity=16), {"capacity": POS_INT, "policy": NAME}),
    Entry("allocators.BuddyAllocator", alloc.BuddyAllocator, dict(capacity=16),
          {"capacity": POS_INT, "min_block": [0, -2, 3, 2.5, True]}),
    Entry("allocators.make_allocator", alloc.make_allocator, dict(capacity=16, placement="buddy"),
          {"placement": NAME, "capacity": POS_INT}),
    Entry("contiguous.reservation_size", reservation_size,
          dict(policy="pow2", prompt_len=3, final_len=8, max_model_len=16),
          {"policy": NAME, "prompt_len": [0, -1, 9, 2.5], "final_len": [0, 17, NAN, 2.5],
           "max_model_len": [0, -1, 2.5]}, {"final_len": "max_len", "policy": "reservation"}),
    # ---- prefix cache ----
    Entry("prefix_cache.PrefixCache", prefix_cache.PrefixCache, dict(block_size=4),
          {"block_size": POS_INT, "hash_fn": [None, 5]}),
    Entry("prefix_cache.prefix_block_hashes", prefix_cache.prefix_block_hashes, dict(tokens=[1, 2, 3, 4], block_size=2),
          {"block_size": POS_INT, "tokens": [[1.5, 2], "abcd", 7], "hash_fn": [None, 3]}),
    # ---- requests ----
    Entry("Request", Request, REQ_GOOD,
          {"prompt": [[], "ab", 5, [1.5], [-1], [True], None], "max_new_tokens": POS_INT, "arrival": FIN_NONNEG,
           "priority": [2.5, "hi", NAN, None], "rid": [-0.5, "a", 1.5, [1]], "eos_id": [-1, 2.5, "eos"],
           "temperature": FIN_NONNEG, "seed": [-1, 2.5, NAN, 2**64], "n": POS_INT + [65],
           "beam_width": POS_INT + [65]}),
    Entry("PriorityRequest", PriorityRequest, REQ_GOOD,
          {"tenant": [5, None], "deadline": [NAN, "soon", True], "expected_output": [0, -1, 2.5, True]}),
    Entry("Request.validate(vocab)", _request_field("prompt"), dict(value=[1, 2]),
          {"value": [[VOCAB], [10**6], [-1], [1.5], [NAN]]}, {"value": "prompt"}),
    Entry("requests_from_trace", requests_from_trace, dict(trace=TRACE, time_scale=2.0),
          {"time_scale": FIN_NONNEG}),
    # ---- engines ----
    Entry("Engine", Engine, dict(model=MODEL),
          {"model": [None, 5, "tinylm"], "store": ["paged", 5, [1]], "policy": NAME, "max_running": POS_INT + [5000],
           "max_tokens_per_step": POS_INT + [HUGE], "preemption": NAME, "step_mode": NAME, "clock": NAME,
           "sampler": [5, "greedy"], "kv_capacity": [0, -1, 2.5, NAN, True], "attention": NAME, "queue": NAME,
           "scheduler": [5, None], "kv_margin": [-0.1, 1.0, NAN, INF, True, "0.1", 0.5]}),
    Entry("Engine(swap on reference)", Engine, dict(model=MODEL), {"preemption": ["swap"]}),
    Entry("Engine.submit", _submit, dict(req=Request([1], 2)), {"req": [None, ([1], 2), "req", 5]}),
    Entry("Engine.run", lambda requests=None, **kw: Engine(MODEL, clock="steps").run(
        [Request([1], 2)] if requests is None else requests, **kw), dict(),
          {"requests": [5, "ab", [None], {"a": 1}], "max_steps": [0, -1, 2.5, NAN, "10"], "progress": BOOL},
          {"requests": "req"}),
    Entry("PriorityEngine", PriorityEngine, dict(model=MODEL),
          {"queue": NAME[:2] + [5], "preempt": BOOL, "policy": NAME, "model": [None]}),
    Entry("DisaggregatedServer", DisaggregatedServer, dict(model=MODEL),
          {"model": [None, 5], "link": [5, "fast"], "prefill_limits": [(8,), "8", 8, (0, 256)],
           "decode_limits": [(8, 256, 1), (8, NAN)], "prefill_store": ["x"], "clock": NAME}),
    Entry("DisaggregatedServer.run", lambda requests=None, **kw: DisaggregatedServer(MODEL, clock="steps").run(
        [Request([1], 2)] if requests is None else requests, **kw), dict(), {"requests": [5, "abc", [None], [5]], "max_steps": [0, 2.5, NAN]}),
    Entry("serve_colocated", serve_colocated, dict(model=MODEL, requests=[Request([1], 2, rid=0)]),
          {"replicas": [0, -1, 65, 2.5, True], "make_store": [5, "paged"]}),
    Entry("Link", Link, dict(bandwidth=1e9),
          {"bandwidth": POS_OR_INF, "latency": FIN_NONNEG, "bytes_per_token": [0, -1, 2.5, NAN, True]}),
    Entry("handover_bytes", handover_bytes, dict(n_tokens=10, bytes_per_token=8, block_size=4),
          {"n_tokens": POS_INT, "bytes_per_token": POS_INT, "block_size": [0, -1, 2.5, NAN, True]}),
    Entry("export_kv", lambda n_tokens, store=None: export_kv(store or _computed_ref_store(), 0, n_tokens),
          dict(n_tokens=2), {"n_tokens": POS_INT, "store": [5, "ref"]}),
    # ---- scheduling pieces ----
    Entry("Limits", Limits, dict(max_running=4, max_tokens_per_step=64),
          {"max_running": POS_INT + [5000], "max_tokens_per_step": POS_INT + [HUGE],
           "kv_margin": [-0.1, 1.0, NAN, INF, True, "0.1", None]}),
    Entry("make_policy", make_policy, dict(policy="chunked"), {"policy": NAME}),
    Entry("FunctionPolicy", FunctionPolicy, dict(fn=lambda s: None), {"fn": [None, 5, "plan"]}),
    Entry("Scheduler", Scheduler, dict(store=ReferenceKVStore(1, 1, 1)),
          {"store": [None, "paged", 5], "policy": NAME, "preemption": NAME, "limits": [5, (8, 256)],
           "queue": NAME[:2] + [5]}),
    Entry("Preemptive", Preemptive, dict(base="chunked"), {"base": NAME + ["static"]}, {"base": "policy"}),
    Entry("queues.Ageing", Ageing, dict(rate=0.5), {"rate": FIN_NONNEG}),
    Entry("queues.FairShare", FairShare, dict(weights={"a": 2.0}),
          {"weights": [{"a": 0}, {"a": NAN}, {"a": -1}, {"a": "x"}, 5, "a"]}),
    Entry("queues.make_queue", make_queue, dict(name="fcfs"), {"name": NAME}, {"name": "queue"}),
    Entry("queues.as_key", as_key, dict(queue="edf"), {"queue": NAME[:2] + [5, lambda a, b, c: 0]}),
    # ---- clocks ----
    Entry("CostModelClock", CostModelClock, dict(fixed=1e-3),
          {"fixed": FIN_NONNEG, "per_token": FIN_NONNEG, "per_seq": FIN_NONNEG}),
    Entry("CostModelClock.fit", _fit, dict(steps=RESULT.steps), {"steps": [5, [], [1, 2, 3], "abc"]}),
    Entry("make_clock", make_clock, dict(clock="steps"), {"clock": NAME[:2] + [5, object()]}),
    # ---- workloads and traces ----
    Entry("workloads.make_trace", workloads.make_trace, dict(n=4, scale=1 / 16),
          {"dist": NAME[:4], "n": NONNEG_INT + [HUGE], "rate": POS_OR_INF, "scale": FIN_POS + [1.5], "seed": NONNEG_INT,
           "max_len": [3, -1, 2.5, NAN, True, HUGE], "shared_prefix": [-1, 2.5, 10**6], "num_prefixes": POS_INT}),
    Entry("workloads.sharegpt_like", workloads.sharegpt_like, dict(n=3, scale=1 / 16),
          {"n": NONNEG_INT, "rate": POS_OR_INF, "scale": FIN_POS, "seed": NONNEG_INT}),
    Entry("workloads.alpaca_like", workloads.alpaca_like, dict(n=3), {"n": NONNEG_INT, "rate": POS_OR_INF}),
    Entry("workloads.trace_from_lengths", workloads.trace_from_lengths, dict(lengths=[(3, 2)], interval=0.5),
          {"lengths": [[(0, 1)], [(1,)], "ab", 5, [(1.5, 2)], [(2, NAN)], [(10**9, 1)]], "interval": FIN_NONNEG,
           "seed": NONNEG_INT, "max_len": [0, -1, 2.5, 4]}),
    Entry("workloads.LengthDist", workloads.LengthDist,
          dict(name="d", mean_input=10.0, mean_output=20.0, sigma_input=0.5, sigma_output=0.5, source="s"),
          {"mean_input": FIN_POS, "mean_output": FIN_POS, "sigma_input": FIN_POS, "sigma_output": FIN_POS}),
    Entry("workloads.story_trace", workloads.story_trace, dict(n=2),
          {"n": POS_INT + [HUGE], "rate": POS_OR_INF, "seed": NONNEG_INT}),
    Entry("priority.two_class_trace", two_class_trace, dict(n_high=2, n_low=1),
          {"n_high": NONNEG_INT + [HUGE], "n_low": NONNEG_INT, "high_every": FIN_NONNEG, "low_at": FIN_NONNEG,
           "first_high": FIN_NONNEG, "high_prompt": POS_INT, "low_output": POS_INT, "seed": NONNEG_INT,
           "high_priority": [2.5, NAN, "high"]}),
    Entry("priority.mixed_trace", mixed_trace, dict(n=3, scale=1 / 16),
          {"interactive_share": [-0.1, 1.5, NAN, "half"], "deadline": FIN_POS, "tenants": [("a",), 5, ("a", 3)],
           "n": NONNEG_INT, "rate": POS_OR_INF, "time_scale": FIN_NONNEG}),
    Entry("priority.deadline_trace", deadline_trace, dict(n_interactive=3, n_batch=1),
          {"every": POS_INT, "deadline": FIN_POS, "batch_at": FIN_NONNEG, "seed": NONNEG_INT,
           "interactive_output": [1, 0, 2.5], "n_batch": NONNEG_INT + [HUGE]}),
    Entry("labs.class_report", class_report, dict(result=RESULT), {"result": [None, 5], "by": NAME}),
    Entry("labs.starvation", starvation, dict(result=RESULT), {"result": [None, 5], "priority": [2.5, "high", NAN]}),
    # ---- SLOs and reports ----
    Entry("SLO", SLO, dict(ttft=1.0, tbt=0.1), {"ttft": POS_OR_INF, "tbt": POS_OR_INF, "per_request": NAME}),
    Entry("slo_report", slo_report, dict(result=RESULT, slo=SLO(1.0, 1.0)),
          {"slo": [None, 5, (1, 1)], "result": [None, 5]}),
    Entry("slo.tbt_of", tbt_of, dict(req=RESULT.requests[0]), {"per_request": NAME}),
    Entry("slo.percentiles", percentiles, dict(xs=[1.0, 2.0]), {"xs": [5, "ab"], "qs": [[101], [-1], [NAN], []]}),
    Entry("slo.compare", compare, dict(results={"a": RESULT}, slo=SLO(1.0, 1.0)),
          {"results": [5, [RESULT]], "scale": FIN_POS, "slo": ["x"]}),
    # ---- disaggregation, priority reports ----
    # ---- sizing ----
    Entry("sizing.KVShape", sizing.KVShape, dict(name="m", num_layers=2, num_kv_heads=2, head_dim=8),
          {"num_layers": POS_INT, "num_kv_heads": POS_INT, "head_dim": POS_INT, "bytes_per_element": POS_INT,
           "max_len": POS_INT, "name": [5, None]}),
    Entry("sizing.KVShape.bytes_for", sizing.tinylm_shape().bytes_for, dict(tokens=10), {"tokens": NONNEG_INT}),
    Entry("sizing.KVShape.tokens_in", sizing.tinylm_shape().tokens_in, dict(budget_bytes=1e6),
          {"budget_bytes": FIN_NONNEG}),
    Entry("sizing.kv_bytes_per_token", sizing.kv_bytes_per_token, dict(num_layers=2, num_kv_heads=2, head_dim=8),
          {"num_layers": POS_INT, "head_dim": POS_INT, "bytes_per_element": POS_INT}),
    Entry("sizing.shape_from_config", sizing.shape_from_config,
          dict(config={"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4}),
          {"config": [{}, {"num_hidden_layers": 0, "hidden_size": 64, "num_attention_heads": 4},
                      {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "torch_dtype": "x"}],
           "bytes_per_element": [0, 2.5, True]},
          {"config": "config"}),
    Entry("sizing.format_bytes", sizing.format_bytes, dict(n=2048), {"n": [NAN, "2", None]}),
    Entry("sizing.sizing_table", sizing.sizing_table, dict(tokens=16), {"tokens": NONNEG_INT, "shapes": [5, [5]]}),
    # ---- the model ----
    Entry("TinyLMConfig", TinyLMConfig, dict(),
          {"vocab_size": POS_INT + [HUGE], "hidden_size": POS_INT + [HUGE], "num_hidden_layers": POS_INT + [HUGE],
           "num_attention_heads": POS_INT + [3], "num_key_value_heads": POS_INT + [3],
           "max_position_embeddings": POS_INT + [HUGE], "intermediate_size": POS_INT + [HUGE],
           "rope_theta": FIN_POS, "rms_norm_eps": FIN_POS, "initializer_range": FIN_POS},
          {"hidden_size": "hidden_size"}),
    Entry("build_model", build_model, dict(cfg=CFG, weights="random"),
          {"device": DEVICES, "dtype": [torch.int64, "float32", None], "weights": NAME, "cfg": [5, "tiny"],
           "seed": NONNEG_INT}),
    # ---- tokenizer ----
    Entry("tokenizer.encode", tok.encode, dict(text="hi"), {"text": [123, None, [104]], "sos": BOOL, "eos": BOOL}),
    Entry("tokenizer.decode", tok.decode, dict(ids=[104, 105]),
          {"ids": [[300], [-1], [65.7], [NAN], "hi", 5, [True]], "skip_special": BOOL}),
    Entry("tokenizer.render", tok.render, dict(ids=[104, 105]), {"ids": [[300], [1.5], 7], "words": BOOL}),
    # ---- padding ----
    Entry("padding.pad_tokens", padding.pad_tokens, dict(seqs=[["a"], ["b", "c"]]),
          {"side": NAME, "length": [1, -1, 2.5, NAN, HUGE], "seqs": [5, "ab", [5]]}),
    Entry("padding.attention_mask_from_lengths", padding.attention_mask_from_lengths, dict(lengths=[5, 3]),
          {"lengths": [[-1], [2.5], "ab", 5, [HUGE]], "length": [3, -1, 2.5, NAN, HUGE], "side": NAME}),
    Entry("padding.position_ids_from_mask", padding.position_ids_from_mask, dict(mask=torch.ones(2, 3)),
          {"mask": [[1, 1], torch.ones(3), None]}),
    Entry("padding.pad_batch", padding.pad_batch, dict(seqs=[[1, 2], [3]]),
          {"seqs": [[], [[]], [[1.5]], [[-1]], "ab", 5], "side": NAME, "pad_id": [-1, 2.5, "pad"]}),
    Entry("padding.padding_stats", padding.padding_stats, dict(lengths=[3, 5]),
          {"lengths": [[-1], [2.5], [NAN], "35", 7]}),
    Entry("padding.batches_in_order", padding.batches_in_order, dict(lengths=[3, 5], batch_size=2),
          {"batch_size": POS_INT, "lengths": [[-1], [1.5]]}),
    Entry("padding.bucket_by_length", padding.bucket_by_length, dict(lengths=[3, 5, 1], batch_size=2),
          {"batch_size": POS_INT, "lengths": [[-1], [1.5], 5]}),
    Entry("padding.total_waste", padding.total_waste, dict(lengths=[3, 5], batches=[[0, 1]]),
          {"batches": [[[5]], [[-1]], 5, [[0.5]]], "lengths": [[-1], [1.5]]}),
    # ---- attention and costs ----
    Entry("attention.causal_mask", attention.causal_mask, dict(q_len=2, k_len=3),
          {"q_len": [-1, 2.5, NAN, 4, "2"], "k_len": [-1, 2.5, NAN]}),
    Entry("attention.sdpa_attention", attention.sdpa_attention, dict(q=Q, k=K, v=K),
          {"q": [Q[0], Q.long(), [1.0], torch.zeros(1, 3, 3, 8)], "k": [K[0], None], "v": [K.long()]},
          {"q": "q"}),
    Entry("attention.reference_attention", attention.reference_attention, dict(q=Q, k=K, v=K),
          {"q": [Q[0], None], "k": [5]}),
    Entry("attention.repeat_kv", attention.repeat_kv, dict(x=K, n_rep=2), {"n_rep": POS_INT}),
    Entry("attention.packed_attention", attention.packed_attention,
          dict(q=torch.zeros(3, 4, 8), k=torch.zeros(3, 2, 8), v=torch.zeros(3, 2, 8), cu_q=[0, 3], cu_k=[0, 3]),
          {"cu_q": [[0, 1.5], [], [1, 3], [0, 3, 2]], "cu_k": [[0, NAN]]}, {"cu_q": "cu_", "cu_k": "cu_"}),
    Entry("attention.pack", attention.pack, dict(seqs=[torch.zeros(2, 3)]), {"seqs": [[], 5, [5]]}),
    Entry("costs.make_qkv", costs.make_qkv, dict(lengths=[2, 3]),
          {"lengths": [[], [0], [1.5], [HUGE]], "nh": POS_INT + [3], "nkv": POS_INT + [3], "hd": POS_INT,
           "dtype": [torch.int64], "device": DEVICES}, {"nh": "n"}),
    Entry("costs.measure_attention_costs", costs.measure_attention_costs, dict(lengths=[2, 3], repeat=1, device="cpu"),
          {"lengths": [[], [0], [1.5], "23"], "repeat": POS_INT, "side": NAME, "device": DEVICES}),
    Entry("fused_ops.add_rms_norm", fused_ops.add_rms_norm,
          dict(x=torch.zeros(2, 8), weight=torch.ones(8), eps=1e-6, delta=torch.zeros(2, 8)),
          {"weight": [torch.ones(7), torch.ones(2, 8)], "delta": [torch.zeros(3, 8)]}),
    Entry("fused_ops.silu_mul", fused_ops.silu_mul, dict(gate_up=torch.zeros(2, 8)), {"gate_up": [torch.zeros(2, 7)]}),
    Entry("fused_ops.rope", fused_ops.rope, dict(x=torch.zeros(1, 3, 4, 8), cos=torch.ones(1, 3, 1, 8),
                                                 sin=torch.zeros(1, 3, 1, 8), heads=3), {"heads": [-1, 5]}),
    Entry("fused_ops.write_kv", fused_ops.write_kv,
          dict(k=torch.zeros(3, 2, 8), v=torch.zeros(3, 2, 8), slots=torch.tensor([0, 5, 9]),
               key_blocks=torch.zeros(4, 2, 8, 4), value_blocks=torch.zeros(4, 2, 4, 8)),
          {"slots": [torch.tensor([0, 5, 16]), torch.tensor([-1, 0, 1])]}),
    Entry("op_count.count_ops", op_count.count_ops, dict(fn=lambda: torch.ones(2) + 1, modules=[torch.nn.ReLU()]),
          {"fn": [3, None, "f"], "modules": [5, "ab", [5], [None]]}),
    Entry("fused_ops.c_runs", fused_ops.c_runs, dict(device="cpu", dtype=torch.float32),
          {"device": DEVICES, "dtype": [None, "float32", 5]}),
    # ---- generation ----
    Entry("generate.generate", gen.generate, dict(model=MODEL, prompts=[[65, 66]], max_new_tokens=2),
          {"prompts": [[], [[]], [[300]], [[1.5]], "ab", [[65] * 64]], "max_new_tokens": NONNEG_INT,
           "model": [None, 5], "eos_id": [-1, 2.5, 300]}),
    Entry("generate.stream_greedy", _listed(gen.stream_greedy), dict(model=MODEL, prompt=[65, 66], max_new_tokens=2),
          {"prompt": [[], [300], [1.5], "ab", [65] * 64], "max_new_tokens": POS_INT + [63], "model": [None]}),
    Entry("generate.beam_search", gen.beam_search, dict(model=MODEL, prompt=[65, 66], beam_width=2, max_new_tokens=2),
          {"prompt": [[], [300], [1.5], "ab", [65] * 64], "beam_width": POS_INT + [65],
           "max_new_tokens": POS_INT + [63], "model": [None, 5], "eos_id": [-1, 2.5, 300]}),
    Entry("generate.continue_text", gen.continue_text, dict(model=MODEL, text="hi", max_new_tokens=2),
          {"text": [5, None, "x" * 64], "max_new_tokens": [0, -1, 2.5, NAN, INF, True, "3", [2], 62]}),
    Entry("decoding.greedy_no_cache", decoding.greedy_no_cache, dict(model=MODEL, prompt=[65, 66], n_new=2),
          {"prompt": [[], [300], [1.5], [65] * 64], "n_new": POS_INT + [63], "model": [None]}),
    Entry("decoding.greedy_with_store", decoding.greedy_with_store,
          dict(model=MODEL, store=ReferenceKVStore.for_model(MODEL), prompt=[65, 66], n_new=2),
          {"store": [None, "paged"], "prompt": [[], [300]], "n_new": POS_INT, "free": BOOL}),
    Entry("decoding.run_packed", decoding.run_packed,
          dict(model=MODEL, store=ReferenceKVStore.for_model(MODEL), prompts=[[65, 66]], steps=2),
          {"prompts": [[], [[]], [[300]], 5], "steps": POS_INT, "store": [None], "first_id": [1.5, "a"]}),
    # ---- replay and the paged lessons ----
    Entry("replay.replay", lambda **kw: replay.replay(**{"store": ContiguousKVStore(1, 1, 1, capacity=32), **kw}),
          dict(trace=TRACE, step_time=1.0),
          {"trace": [5, [(4, 3)], None], "store": ["arena", None], "step_time": FIN_POS,
           "max_steps": POS_INT, "snapshot_every": OPT_POS_INT, "max_batch": OPT_POS_INT, "model": [5]}),
    Entry("replay.compare_policies", replay.compare_policies,
          dict(trace=TRACE, make_store=lambda p: ContiguousKVStore(1, 1, 1, capacity=32, reservation=p)),
          {"make_store": [None, 5], "policies": [5, []]}),
    Entry("paged_lab.torch_threads", _enter(paged_lab.torch_threads), dict(n=1), {"n": OPT_POS_INT + [HUGE]},
          {"n": "threads"}),
    Entry("paged_lab.sample_in_parallel", paged_lab.sample_in_parallel,
          dict(model=MODEL, prompt=[65, 66, 67], n=2, new_tokens=2, block_size=2),
          {"n": POS_INT + [65], "new_tokens": POS_INT + [62], "temperature": FIN_NONNEG, "prompt": [[], [300]],
           "seed": NONNEG_INT, "block_size": [0, 2.5], "model": [None]}),
    Entry("paged_lab.block_size_sweep", paged_lab.block_size_sweep,
          dict(trace=TRACE, capacity=64, block_sizes=(4, 16), batch=2, context=16, repeat=1),
          {"capacity": [0, 8, 2.5, NAN], "block_sizes": [[], [0], [300], [2.5], 5], "batch": POS_INT,
           "context": POS_INT, "repeat": POS_INT, "step_time": FIN_POS, "threads": [0, 2.5]}),
    Entry("paged_lab.parallel_sampling_savings", paged_lab.parallel_sampling_savings, dict(trace=TRACE, n=2),
          {"n": POS_INT + [65], "block_size": POS_INT}),
    Entry("paged_lab.compare_prefix_caching", paged_lab.compare_prefix_caching,
          dict(model=MODEL, requests=[Request([65, 66], 2, rid=0)], num_blocks=8, block_size=4, rounds=1),
          {"rounds": POS_INT, "num_blocks": POS_INT, "block_size": [0, 2.5, 300]}),
    # ---- incidents ----
    Entry("incidents.ServerConfig", incidents.ServerConfig, dict(),
          {"kv_store": NAME, "kv_slots": POS_INT + [HUGE], "block_size": POS_INT + [7, 300], "prefix_caching": BOOL,
           "policy": NAME, "max_running": POS_INT + [65], "max_tokens_per_step": POS_INT, "preemption": NAME,
           "reservation": NAME, "placement": NAME}),
    Entry("incidents.Target", incidents.Target, dict(metric="m", op="<=", bound=1.0, label="l"),
          {"op": ["!=", "<", "", 5, None], "bound": [NAN, INF, "1", None], "metric": [5, None], "label": [5]}),
    Entry("incidents.Target.met", _target_met, dict(metrics={"ttft_p99_ms": 50.0}),
          {"metrics": [{}, {"other": 1.0}, 5, None]}),
    Entry("incidents.get_incident", incidents.get_incident, dict(key="a"), {"key": ["z", "", 5, None]},
          {"key": "incident"}),
    Entry("incidents.run_config", incidents.run_config,
          dict(model=MODEL, config=incidents.ServerConfig(kv_slots=256), requests=[Request([65], 2, rid=0)],
               slo=SLO(1.0, 1.0)), {"config": [None, 5, "paged"], "slo": [None, 5]}),
    Entry("incidents.documents_trace", incidents.documents_trace, dict(n_chat=2, n_docs=1),
          {"seed": NONNEG_INT, "n_chat": NONNEG_INT, "rate_docs": POS_OR_INF}, {"n_chat": "n", "rate_docs": "rate"}),
    Entry("incidents.ServerConfig.vllm_command", lambda **kw: incidents.ServerConfig().vllm_command(**kw),
          dict(model="m"), {"model": [5, None, ["m"]]}),
    Entry("incidents.vllm_metrics", incidents.vllm_metrics, dict(run=INCIDENT_RUN), {"run": [None, 5, "run"]}),
    Entry("labs.scheduling.contention_trace", contention_trace, dict(n_streams=2, n_docs=1),
          {"seed": NONNEG_INT, "n_streams": NONNEG_INT, "n_docs": NONNEG_INT, "stream_output": [8, 2.5, NAN, "9"],
           "doc_prompt": [8, 2.5, None], "doc_output": POS_INT, "stream_prompt": [(5,), (0, 3), (5, 3), "ab", 5],
           "streams_within": FIN_NONNEG, "first_doc": FIN_NONNEG, "doc_every": FIN_NONNEG}),
    Entry("incidents.stalls", incidents.stalls, dict(run=None, threshold=1.0), {"run": [None, 5]}),
    # ---- plots ----
    Entry("plots.timeline", ptime.timeline, dict(result=RESULT),
          {"result": [None, 5, {}], "x": NAME, "max_steps": [0, -1, 2.5, NAN, True, "10"], "show_ids": BOOL[:2],
           "title": TITLE}),
    Entry("plots.latency_boxes", ptime.latency_boxes, dict(results={"a": RESULT}),
          {"results": [5, [RESULT], {"a": 5}], "metrics": [["x"], [], "ttft", [5]], "scale": FIN_POS,
           "unit": [5], "title": TITLE}),
    Entry("plots.step_breakdown", ptime.step_breakdown, dict(results={"a": RESULT}),
          {"results": [5, None, {"a": None}], "title": TITLE}),
    Entry("plots.tokens_per_step", ptime.tokens_per_step, dict(results={"a": RESULT}), {"results": [5, {"a": 1}]}),
    Entry("plots.step_durations", ptime.step_durations, dict(results={"a": RESULT}),
          {"results": [5], "scale": FIN_POS, "unit": [None, 5]}),
    Entry("plots.batch_heatmap", ppad.batch_heatmap, dict(tokens=[["a", "<pad>"]]),
          {"tokens": [[], "ab", 5, [5]], "pad": [5], "title": TITLE}),
    Entry("plots.cost_bars", ppad.cost_bars, dict(labels=["a", "b"], values=[1.0, 2.0], unit="ms"),
          {"labels": [[], 5], "values": [[1.0], [1.0, NAN], [1.0, "x"], 5], "unit": [None, 5]}),
    Entry("plots.memory_bar", pmem.memory_bar, dict(segments=SEGMENTS),
          {"segments": [[], 5, [5]], "capacity": [0, -1, 2.5, NAN], "request": [-1, 2.5, NAN], "title": TITLE}),
    Entry("plots.memory_map", pmem.memory_map, dict(result=REPLAY),
          {"result": [None, 5, RESULT], "t_range": [(5, 1), (1,), 5, (-1, 2), (0, NAN)], "height": [0, NAN, HUGE]}),
    Entry("plots.usage_over_time", pmem.usage_over_time, dict(result=REPLAY),
          {"result": [None, RESULT], "max_points": POS_INT, "height": [0, 2.5]}),
    Entry("plots.waste_breakdown", pmem.waste_breakdown, dict(measured={"max": SHARES}),
          {"measured": [{}, 5, {"max": {}}, {"max": {**SHARES, "internal": NAN}}, {"max": 5}],
           "published": [5, {"max": {"token_states": 1}}], "source": [5]}),
    Entry("plots.block_table_map", ppag.block_table_map, dict(snap=SNAP),
          {"snap": [None, 5, RESULT], "columns": [0, -1, 2.5, NAN], "max_blocks": [0, -1, 2, 2.5]},
          {"max_blocks": "max_blocks"}),
    Entry("plots.pool_over_time", ppag.pool_over_time, dict(counts=[SNAP.counts()]),
          {"counts": [5, [5], "ab"], "steps": [[1, 2], [1.5], 5], "height": [0]}),
    Entry("plots.waste_with_paging", ppag.waste_with_paging, dict(measured={"max": SHARES}, published={}),
          {"paper_token_share": [-1, 101, NAN, "96"], "paged_key": [5], "measured": [{}]}),
    Entry("plots.block_size_tradeoff", ppag.block_size_tradeoff,
          dict(block_sizes=[4, 16], token_share=[0.5, 0.6], kernel_ms=[1.0, 2.0]),
          {"block_sizes": [[], [0], [1.5, 2]], "token_share": [[0.5], [0.5, NAN]], "kernel_ms": [[1.0], 5],
           "contiguous_ms": [-1, NAN, "1"]}),
    Entry("plots.decode_timings", ppag.decode_timings, dict(times={"contiguous SDPA": [0.1], "paged": [0.2]}),
          {"times": [{}, 5, {"contiguous SDPA": []}, {"contiguous SDPA": [NAN]}], "baseline": ["x", 5],
           "paper_band": [(1.2,), (1.2, NAN), 5, (2.0, 1.0)]}),
    Entry("plots.tradeoff", psch.tradeoff, dict(points=[{"label": "a", "ttft": 1.0, "tbt": 0.5}]),
          {"points": [[{}], [5], 5, [{"label": "a", "ttft": "x", "tbt": 1.0}]], "slo": [5, "slo"], "unit": [5]}),
    Entry("plots.latency_cdf", psch.latency_cdf, dict(results={"a": RESULT}), {"results": [5, {"a": 5}], "slo": [5]}),
    Entry("plots.token_gaps", psch.token_gaps, dict(results={"a": RESULT}), {"results": [{}, 5, {"a": None}]}),
    Entry("plots.waits_by_arrival", psch.waits_by_arrival, dict(results={"a": RESULT}),
          {"results": [{}, 5], "metric": NAME}),
    Entry("plots.request_gantt", psch.request_gantt, dict(result=RESULT),
          {"result": [None, 5], "max_requests": [0, -1, 2.5, NAN], "color_by": NAME}),
    Entry("plots.pipeline_gantt", psch.pipeline_gantt, dict(dres=DRESULT),
          {"dres": [None, 5, RESULT], "max_requests": [0, 2.5]}),
    Entry("plots.handover_whatif", psch.handover_whatif,
          dict(rows=[{"link": "a", "delay_ms": 1.0, "tbt_p99_ms": 2.0, "ttft_p99_ms": 3.0}]),
          {"rows": [[], [{}], 5, [5]]}),
    Entry("plots.telemetry", psch.telemetry, dict(run=None), {"run": [None, 5, RESULT]}),
    Entry("plots.before_after", psch.before_after, dict(rows=[{"run": "a", "m": 1.0}], metrics=[("m", "M")]),
          {"metrics": [[], [("m",)], 5], "rows": [[{"run": "a"}], 5]}),
    Entry("plots.table_figure", psch.table_figure, dict(header=["a", "b"], rows=[[1, 2]]),
          {"header": [[], 5], "rows": [[[1]], 5, [5]], "fill": [["red", "blue"], 5]}),
    # ---- widgets: panel constructors and reports ----
    Entry("widgets.check_int", widgets.check_int, dict(value="3", name="slots", lo=1, hi=8),
          {"value": ["x", "", "2.5", NAN, INF, True, None, [3], "0", "9"]}, {"value": "slots"}),
    Entry("widgets.parse_int_list", widgets.parse_int_list, dict(text="1, 2", name="lengths", lo=1, hi=8),
          {"text": ["", "1, x", "1, 9", "0", "1.5"]}, {"text": "lengths"}),
    Entry("widgets.batching_panel", wbatch.batching_panel, PANEL_GOOD,
          {"model": [None, 5], "policy": NAME, "max_running": POS_INT + [17], "budget": POS_INT + [513],
           "kv_capacity": NONNEG_INT + [4097], "step_mode": NAME, "prompt_lens": [5, None]}),
    Entry("widgets.make_requests", wbatch.make_requests, dict(prompt_lens=[3], output_lens=[2], arrivals=[0]),
          {"prompt_lens": [[0], [1.5], "3", [], 5], "output_lens": [[0], [NAN]], "arrivals": [[NAN], [-1], [INF], 5],
           "seed": NONNEG_INT}),
    Entry("widgets.scheduling_panel", wsched.scheduling_panel, PANEL_GOOD,
          {"model": [None], "trace": NAME, "batching": NAME, "queue": NAME, "ageing_rate": FIN_NONNEG + [11],
           "preempt": BOOL, "max_running": POS_INT + [17], "budget": POS_INT + [1025]}),
    Entry("widgets.make_queue", wsched.make_queue, dict(name="ageing", ageing_rate=0.5),
          {"name": NAME, "ageing_rate": FIN_NONNEG}, {"name": "queue", "ageing_rate": "rate"}),
    Entry("widgets.trace_for", wsched.trace_for, dict(kind="starvation"), {"kind": NAME, "seed": NONNEG_INT},
          {"kind": "trace"}),
    Entry("widgets.run_scheduling", wsched.run_scheduling,
          dict(model=MODEL, kind="starvation", batching="chunked", queue="fcfs", ageing_rate=0.1, preempt=False,
               max_running=4, budget=64),
          {"kind": NAME, "batching": NAME, "queue": NAME, "preempt": BOOL, "max_running": POS_INT},
          {"kind": "trace"}),
    Entry("widgets.incident_panel", wsched.incident_panel, dict(model=MODEL, key="a"),
          {"key": ["z", 5, None], "config": [5, "paged"], "model": [None]}, {"key": "incident"}),
    Entry("widgets.padding_panel", wpad.padding_panel, dict(max_len=64),
          {"max_len": POS_INT + [5000], "device": ["gpu", 5] + CUDA + MPS}),
    Entry("widgets.padding_report", wpad.padding_report, dict(n_sequences=2, lengths_text="3, 4", side="left",
                                                               max_len=16, repeat=1),
          {"n_sequences": ["x", 0, 9, NAN], "lengths_text": ["", "3", "3, 99", "3, x"], "side": NAME},
          {"n_sequences": "sequences", "lengths_text": "lengths"}),
    Entry("widgets.fragmentation_report", wmem.fragmentation_report,
          dict(source="my lengths", lengths_text="20:60, 10:10", n_requests=4, rate=5.0, arena_slots=512,
               reservation="pow2", placement="first-fit"),
          {"source": NAME, "lengths_text": ["", "20", "20:x", "300:1", "0:5"], "rate": ["x", 0, -1, NAN, INF, 1001],
           "arena_slots": ["x", 0, 100, 10**6], "reservation": NAME, "placement": NAME},
          {"lengths_text": "lengths", "arena_slots": "arena slots"}),
    Entry("widgets.paging_report", wpag.paging_report, dict(lengths_text="5, 9", block_size=4, num_blocks=8),
          {"lengths_text": ["", "0", "x", "600"], "block_size": ["x", 0, 65, NAN], "num_blocks": ["x", 0, 257, 1]},
          {"lengths_text": "lengths", "block_size": "block size", "num_blocks": "pool blocks"}),
    Entry("widgets.sharing_report", wpag.sharing_report, dict(prefix_len=8, n_requests=2, own_len=3, block_size=4),
          {"prefix_len": [-1, "x", 300], "n_requests": [0, 9], "own_len": [0, 200], "block_size": [0, "x"]},
          {"prefix_len": "shared prefix", "n_requests": "requests", "own_len": "own tokens",
           "block_size": "block size"}),
    # ---- quiz ----
    Entry("quiz.Choice", quiz.Choice, dict(text="a", correct=True, why="w"),
          {"text": [5, None], "correct": BOOL, "why": [None]}),
    Entry("quiz.Quiz", quiz.Quiz, dict(question="q", choices=[quiz.Choice("a", True, "y"), quiz.Choice("b", False, "n")]),
          {"question": [5], "choices": [[], 5, [quiz.Choice("a", True, "y")], [quiz.Choice("a", False, "n")] * 2,
                                        ["a", "b"]]}),
    Entry("quiz.Quiz.answer", _quiz_answer, dict(index=0), {"index": [-1, 2, 1.5, "0", None]}),
]

# Per-field admission at submit: each field of a request changed after construction (as a client
# bypassing the constructor would send it) gets a named refusal from Request.validate.
for fname, values in {"max_new_tokens": [0, 1.5, NAN], "arrival": [NAN, INF, -1.0], "temperature": [NAN, -1.0, INF],
                      "rid": ["a", 1.5], "eos_id": [-1, VOCAB], "seed": [-1], "priority": [NAN]}.items():
    ENTRIES.append(Entry(f"Request.validate({fname})", _request_field(fname), dict(value=getattr(Request([1], 2), fname)),
                         {"value": values}, {"value": fname}))


def _needs_incident_run(entry):
    return entry.name in ("incidents.stalls", "plots.telemetry")


@pytest.fixture(scope="module")
def incident_run():
    return incidents.run_config(MODEL, incidents.ServerConfig(kv_slots=256),
                                [Request([65, 66], 3, rid=0), Request([67], 2, arrival=0.001, rid=1)], SLO(1.0, 1.0))


CASES = [pytest.param(e, param, value, id=f"{e.name}:{param}={validate.show(value, 24)}")
         for e in ENTRIES for param, values in e.bad.items() for value in values]


@contextmanager
def time_limit(seconds: float = TIME_LIMIT_S):
    """Fail (TimeoutError: not a ValueError) instead of hanging."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"the case ran past {seconds} s: a hang")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _kwargs(entry, incident_run, **changes):
    kw = dict(entry.good)
    if _needs_incident_run(entry) and kw.get("run", 0) is None:
        kw["run"] = incident_run
    kw.update(changes)
    return kw


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.name) for e in ENTRIES])
def test_good_arguments_work(entry, incident_run):
    with time_limit(60):
        entry.call(**_kwargs(entry, incident_run))


@pytest.mark.parametrize("entry, param, value", CASES)
def test_bad_value_is_refused_by_name(entry, param, value, incident_run):
    name = entry.names.get(param, param)
    with time_limit():
        with pytest.raises((ValueError, TypeError)) as info:
            entry.call(**_kwargs(entry, incident_run, **{param: value}))
    msg = str(info.value)
    assert "\n" not in msg, f"the message must be one line: {msg!r}"
    assert msg.startswith(name) and ": " in msg, f"the message must start with {name!r}: {msg!r}"


def test_the_table_covers_the_library():
    """How much the table drives (the closing note of issue 12 quotes these numbers)."""
    assert len(ENTRIES) >= 150 and len(CASES) >= 900, (len(ENTRIES), len(CASES))


# ---- one bad request never stops the others ------------------------------------------------------------
def _bad_requests():
    """Each of these is refused at submission, with a reason naming what is wrong; rids 100..."""
    out = []
    r = Request([65, 66], 3, rid=100)
    r.prompt[1] = 10**6                                  # past the vocabulary
    out.append((r, Rejection.INVALID, "prompt[1]"))
    r = Request([65, 66], 3, rid=101)
    r.prompt[0] = -1                                     # negative token id
    out.append((r, Rejection.INVALID, "prompt[0]"))
    r = Request([65, 66], 3, rid=102)
    r.prompt[1] = 66.0                                   # a float token: refused, never truncated
    out.append((r, Rejection.INVALID, "prompt[1]"))
    r = Request([65], 3, rid=103)
    r.temperature = NAN
    out.append((r, Rejection.INVALID, "temperature"))
    r = Request([65], 3, rid=104)
    r.rid = "req-104"                                    # not an integer id
    out.append((r, Rejection.INVALID, "rid"))
    out.append((Request([66, 67], 2, rid=0), Rejection.DUPLICATE, "rid: 0"))   # the id of a good request
    r = Request([65], 3, rid=105)
    r.arrival = NAN                                      # would stop the clock forever
    out.append((r, Rejection.INVALID, "arrival"))
    out.append((Request([65] * 40, 40, rid=106), Rejection.TOO_LONG, "exceeds"))   # 80 > the 64-token context
    r = Request([65], 3, rid=107)
    r.max_new_tokens = 2.5
    out.append((r, Rejection.INVALID, "max_new_tokens"))
    return out


GOOD = [Request([65, 66, 67], 5, rid=0), Request([70, 71], 4, arrival=1.0, rid=1),
        Request([72, 73, 74, 75], 3, arrival=2.0, rid=2, temperature=0.8, seed=7)]


def _solo(store_factory, req):
    return Engine(MODEL, store_factory(), clock="steps").run([req.clone()]).requests[0].output


@pytest.mark.parametrize("kind", ["reference", "contiguous", "paged"])
def test_bad_requests_are_rejected_and_the_good_ones_get_their_solo_tokens(kind):
    stores = {"reference": lambda: None,
              "contiguous": lambda: ContiguousKVStore.for_model(MODEL, capacity=256),
              "paged": lambda: PagedKVStore.for_model(MODEL, num_blocks=32, block_size=4)}
    make = stores[kind]
    bad = _bad_requests()
    with time_limit(60):
        res = Engine(MODEL, make(), policy="chunked", max_tokens_per_step=8, clock="steps").run(
            [r.clone() for r in GOOD[:1]] + [b for b, _, _ in bad] + [r.clone() for r in GOOD[1:]])
    assert [r.rid for r in res.finished] == [0, 1, 2]
    for r in res.finished:
        assert r.output == _solo(make, next(g for g in GOOD if g.rid == r.rid))
    assert len(res.rejected) == len(bad)
    for b, kind_, words in bad:
        assert b.state is State.REJECTED and b.rejection is kind_ and words in b.finish_reason, (b, b.finish_reason)
        assert not b.output and b.admitted_time is None          # rejected before any work
    steps_with_bad = [s for s in res.steps if any(rid >= 100 for rid, _, _ in s.items)]
    assert not steps_with_bad


def test_a_request_bigger_than_the_pool_is_rejected_before_any_work():
    """The limit is the smaller of the model's context and what the store can ever hold."""
    store = PagedKVStore.for_model(MODEL, num_blocks=4, block_size=4)          # 16 slots; the model: 64
    assert store.max_model_len == 16 and store.longest_sequence() == 16
    res = Engine(MODEL, store, clock="steps").run([Request([65] * 10, 10, rid=0), Request([65, 66], 3, rid=1)])
    big, ok = res.requests
    assert big.rejection is Rejection.TOO_LONG and "PagedKVStore.max_model_len=16" in big.finish_reason
    assert not big.output and ok.state is State.FINISHED
    roomy = PagedKVStore.for_model(MODEL, num_blocks=4, block_size=4, max_model_len=64)   # asked for more than the pool
    res = Engine(MODEL, roomy, clock="steps").run([Request([65] * 10, 10, rid=0)])
    assert res.requests[0].rejection is Rejection.TOO_LONG and "capacity=16" in res.requests[0].finish_reason


def test_a_clock_that_returns_nan_fails_loudly_instead_of_hanging():
    class NaNClock:
        name, unit = "nan", "s"

        def cost(self, wall_s, num_tokens, num_seqs):
            return NAN

    eng = Engine(MODEL, clock=NaNClock())
    with time_limit(30), pytest.raises(ValueError, match="clock"):
        eng.run([Request([65], 3, rid=0), Request([66], 3, arrival=1.0, rid=1)])


def test_nan_never_reaches_a_clock_or_a_loop():
    for call, name in ((lambda: CostModelClock(per_token=NAN), "per_token"),
                       (lambda: workloads.trace_from_lengths([(3, 2)], interval=NAN), "interval"),
                       (lambda: requests_from_trace(TRACE, time_scale=NAN), "time_scale"),
                       (lambda: two_class_trace(high_every=NAN), "high_every")):
        with time_limit(), pytest.raises(ValueError, match=f"^{name}"):
            call()


def test_the_type_error_is_also_a_value_error():
    """One `except ValueError` (the widgets' red line) catches a wrong type too."""
    with pytest.raises(TypeError) as info:
        Engine(MODEL, store="paged")
    assert isinstance(info.value, ValueError) and str(info.value).startswith("store:")
    with pytest.raises(TypeError, match="^model:"):
        Engine(None)


def test_double_free_is_refused_everywhere():
    for name, make in STORES.items():
        s = make()
        s.free(0)
        with pytest.raises(ValueError, match="^seq_id: 0 is not in the store"):
            s.free(0)
        assert not s.cached, name
