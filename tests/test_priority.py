"""Priority scheduling: queue orders, preemption for priority, starvation and ageing.

The property test: whatever the priorities, the queue policy, the preemptions
(for priority or for memory) and the store, every request ends FINISHED with
exactly the tokens it generates alone (course_lib.generate.generate, greedy),
and the store ends empty. float64 for the same reason as test_engine_property.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from course_lib.engine import Request, State
from course_lib.engine.priority import PriorityEngine, PriorityRequest, clone_tagged, serve_priority, tag
from course_lib.engine.queues import (Ageing, FairShare, QueuePolicy, as_key, earliest_deadline_first, expected_work,
                                      fcfs, highest_priority_first, shortest_job_first)
from course_lib.generate import generate
from course_lib.labs.scheduling import (class_report, deadline_trace, mixed_trace, starvation, two_class_trace,
                                       wait_time)
from course_lib.kv.paged import PagedKVStore
from course_lib.kv.reference import ReferenceKVStore
from helpers import one_thread, tiny_model  # noqa: F401 (an autouse fixture)

MODEL = tiny_model(seed=3, dtype=torch.float64)
_SOLO: dict = {}
STATS = {"runs": 0, "priority_preempted": 0, "memory_preempted": 0}


def solo(prompt, n):
    key = (tuple(prompt), n)
    if key not in _SOLO:
        _SOLO[key] = generate(MODEL, [list(prompt)], n, eos_id=None)[0]
    return _SOLO[key]


def run(reqs, **kw):
    kw.setdefault("clock", "steps")
    return PriorityEngine(MODEL, **kw).run(clone_tagged(reqs))


# ---- keys ----------------------------------------------------------------------------------------------
def test_as_key_accepts_one_or_two_arguments_names_and_classes():
    r = PriorityRequest([1], 3, arrival=2.0, priority=4, deadline=9.0)
    assert as_key(lambda req: req.priority)(r, 100.0) == 4
    assert as_key(lambda req, now: now - req.arrival)(r, 10.0) == 8.0
    assert as_key("edf")(r, 0.0) == 9.0
    assert as_key(Ageing(0.5))(r, 4.0) == -(4 + 0.5 * 2)
    for bad in (3, "lifo", lambda: 1, lambda a, b, c: 1):
        with pytest.raises(ValueError, match="queue"):
            as_key(bad)


def test_builtin_keys():
    a = PriorityRequest([1, 2, 3], 10, arrival=1.0, priority=0, deadline=None, expected_output=4)
    b = PriorityRequest([1], 10, arrival=2.0, priority=2, deadline=5.0)
    assert fcfs(a) < fcfs(b) and highest_priority_first(b) < highest_priority_first(a)
    assert earliest_deadline_first(b) < earliest_deadline_first(a) == math.inf
    assert expected_work(a) == 3 + 4 and expected_work(b) == 1 + 10
    a.num_computed, a.output = 3, [5, 6]
    assert shortest_job_first(a) == 2


def test_request_fields_are_validated():
    with pytest.raises(ValueError, match="expected_output"):
        PriorityRequest([1], 3, expected_output=0)
    with pytest.raises(ValueError, match="deadline"):
        PriorityRequest([1], 3, deadline="soon")
    with pytest.raises(ValueError, match="rate"):
        Ageing(-1)
    with pytest.raises(ValueError, match="weights"):
        FairShare({"a": 0})
    with pytest.raises(ValueError, match="fields"):
        tag(Request([1], 2), colour="red")


def test_engine_refuses_bad_combinations():
    with pytest.raises(ValueError, match="thrash"):
        PriorityEngine(MODEL, queue=FairShare(), preempt=True)
    with pytest.raises(ValueError, match="continuous"):
        PriorityEngine(MODEL, policy="static", preempt=True)
    with pytest.raises(TypeError, match="order"):       # one way to order the queue: queue=
        PriorityEngine(MODEL, order=fcfs)


# ---- ordering and preemption --------------------------------------------------------------------------
def test_queue_order_decides_who_gets_the_free_slot():
    reqs = [PriorityRequest([65] * 3, 6, arrival=0, rid=0, eos_id=None),
            PriorityRequest([66] * 3, 3, arrival=1, rid=1, priority=0, eos_id=None, deadline=30.0),
            PriorityRequest([67] * 3, 3, arrival=1, rid=2, priority=5, eos_id=None, deadline=20.0),
            PriorityRequest([68] * 3, 3, arrival=1, rid=3, priority=1, eos_id=None, deadline=10.0)]
    order = lambda res: [r.rid for r in sorted(res.requests[1:], key=lambda r: r.first_token_step)]
    assert order(run(reqs, queue="fcfs", max_running=1, policy="decode-first")) == [1, 2, 3]
    assert order(run(reqs, queue="priority", max_running=1, policy="decode-first")) == [2, 3, 1]
    assert order(run(reqs, queue="edf", max_running=1, policy="decode-first")) == [3, 2, 1]


def test_a_high_priority_newcomer_preempts_the_least_important_running_request():
    reqs = [PriorityRequest([65] * 3, 12, arrival=0, rid=0, priority=1, eos_id=None),
            PriorityRequest([66] * 3, 12, arrival=0, rid=1, priority=0, eos_id=None),
            PriorityRequest([67] * 3, 3, arrival=3, rid=2, priority=9, eos_id=None)]
    res = run(reqs, queue="priority", preempt=True, max_running=2, policy="chunked")
    by = {r.rid: r for r in res.requests}
    assert res.config["priority_preemptions"] == [(3.0, 1, 2)]
    assert by[1].num_preemptions == 1 and by[0].num_preemptions == 0
    assert by[2].first_token_time - by[2].arrival <= 1.0
    assert all(r.output == solo(r.prompt, r.max_new_tokens) for r in res.requests)
    calm = run(reqs, queue="priority", preempt=False, max_running=2, policy="chunked")
    assert calm.requests[2].first_token_time > by[2].first_token_time


def test_preemption_for_memory_picks_a_lower_priority_victim():
    store = ReferenceKVStore.for_model(MODEL, capacity=30)
    reqs = [PriorityRequest([65] * 4, 10, arrival=0, rid=0, priority=0, eos_id=None),
            PriorityRequest([66] * 4, 10, arrival=0, rid=1, priority=0, eos_id=None),
            PriorityRequest([67] * 12, 4, arrival=4, rid=2, priority=5, eos_id=None)]
    res = PriorityEngine(MODEL, store, queue="priority", preempt=True, max_running=3, clock="steps").run(clone_tagged(reqs))
    by = {r.rid: r for r in res.requests}
    assert by[2].num_preemptions == 0 and by[0].num_preemptions + by[1].num_preemptions >= 1
    assert all(r.output == solo(r.prompt, r.max_new_tokens) for r in res.requests)
    assert not store.cached


# ---- starvation and ageing ------------------------------------------------------------------------------
STARVE = dict(n_high=18, n_low=2, high_every=2.5, low_at=4, high_output=8, low_output=6)


def test_strict_priority_starves_and_ageing_bounds_the_wait():
    trace = two_class_trace(**STARVE)
    kw = dict(policy="decode-first", max_running=3, max_tokens_per_step=32)
    strict = run(trace, queue="priority", **kw)
    aged = run(trace, queue=Ageing(0.1), **kw)
    fair = run(trace, queue="fcfs", **kw)
    # the last high-priority arrival is at 42.5: strict priority keeps a low one waiting nearly to the end
    assert starvation(strict, 0) > 30
    assert starvation(aged, 0) < starvation(strict, 0) / 2
    assert starvation(fair, 0) <= starvation(aged, 0)
    # ageing costs the high-priority class something: strict priority is its best case
    assert starvation(strict, 1) <= starvation(aged, 1)
    rows = {r["priority"]: r for r in class_report(strict)}
    assert rows[0]["wait_max"] == starvation(strict, 0) and rows[1]["requests"] == 18


def test_ageing_order_does_not_flip_over_time():
    q = Ageing(0.3)
    a = PriorityRequest([1], 2, arrival=0.0, priority=0)
    b = PriorityRequest([1], 2, arrival=5.0, priority=1)
    orders = {q.key(a, now) < q.key(b, now) for now in (5.0, 7.0, 100.0, 1e6)}
    assert len(orders) == 1


def test_fair_share_lets_a_light_tenant_through_a_flood():
    flood = [PriorityRequest([65 + i % 3] * 3, 6, arrival=0, rid=i, tenant="bulk", eos_id=None) for i in range(8)]
    light = [PriorityRequest([70] * 3, 3, arrival=2, rid=8 + i, tenant="app", eos_id=None) for i in range(2)]
    kw = dict(policy="decode-first", max_running=2, max_tokens_per_step=16)
    fifo = run(flood + light, queue="fcfs", **kw)
    fair = run(flood + light, queue=FairShare(), **kw)
    ttft = lambda res: max(r.first_token_time - r.arrival for r in res.requests if r.tenant == "app")
    assert ttft(fair) < ttft(fifo) / 2


class LongestFirst(QueuePolicy):
    """A learner's policy: a small class with state (counts how often it was asked)."""

    name = "longest first"

    def __init__(self):
        self.calls = 0

    def key(self, req, now):
        self.calls += 1
        return -req.max_new_tokens


def test_a_learner_class_plugs_in_without_touching_the_engine():
    pol = LongestFirst()
    reqs = [PriorityRequest([65] * 2, n, arrival=0, rid=i, eos_id=None) for i, n in enumerate((2, 5, 3))]
    res = run(reqs, queue=pol, max_running=1, policy="decode-first")
    assert [r.rid for r in sorted(res.requests, key=lambda r: r.first_token_step)] == [1, 2, 0]
    assert pol.calls > 0 and pol.scheduler is not None and res.config["queue"] == "longest first"


def test_traces_are_seeded():
    assert [(r.arrival, r.prompt, r.priority) for r in mixed_trace(seed=4)] == \
           [(r.arrival, r.prompt, r.priority) for r in mixed_trace(seed=4)]
    d = deadline_trace(2)
    assert {r.priority for r in d} == {0, 1} and all((r.deadline is None) == (r.priority == 0) for r in d)
    with pytest.raises(ValueError, match="n_high"):
        two_class_trace(n_high=-1)


def test_wait_time():
    r = PriorityRequest([1], 2, arrival=3.0)
    assert wait_time(r) is None
    r.admitted_time = 7.5
    assert wait_time(r) == 4.5


# ---- the property ----------------------------------------------------------------------------------------
QUEUE_CHOICES = ["fcfs", "priority", "edf", "sjf", "ageing", "fair-share"]
prompt_st = st.lists(st.integers(65, 68), min_size=1, max_size=8)
req_st = st.tuples(prompt_st, st.integers(1, 8), st.integers(0, 10), st.integers(0, 3), st.integers(0, 20))


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(trace=st.lists(req_st, min_size=1, max_size=6), queue=st.sampled_from(QUEUE_CHOICES),
       preempt=st.booleans(), policy=st.sampled_from(["prefill-first", "decode-first", "chunked"]),
       store=st.sampled_from(["reference", "paged"]), max_running=st.integers(1, 3), budget=st.integers(2, 12),
       tight=st.booleans(), preemption=st.sampled_from(["recompute", "swap"]))
def test_every_queue_policy_and_preemption_keeps_solo_tokens(trace, queue, preempt, policy, store, max_running,
                                                            budget, tight, preemption):
    if queue == "fair-share":
        preempt = False
    reqs = [PriorityRequest(p, n, arrival=a, rid=i, priority=pr, eos_id=None, deadline=a + d,
                            tenant="ab"[i % 2]) for i, (p, n, a, pr, d) in enumerate(trace)]
    need = max(len(p) + n for p, n, *_ in trace)
    if store == "paged":
        cap = (-(-need // 4) + (1 if tight else 8)) * 4
        kv = PagedKVStore.for_model(MODEL, capacity=cap, block_size=4)
    else:
        kv = ReferenceKVStore.for_model(MODEL, capacity=need + 2 if tight else None)
        preemption = "recompute"                          # the reference store cannot swap
    q = {"ageing": Ageing(0.2), "fair-share": FairShare()}.get(queue, queue)
    eng = PriorityEngine(MODEL, kv, policy=policy, queue=q, preempt=preempt, max_running=max_running,
                         max_tokens_per_step=budget, preemption=preemption, clock="steps")
    res = eng.run(clone_tagged(reqs), max_steps=3000)
    assert eng.step() is None
    for r in res.requests:
        assert r.state is State.FINISHED, f"request {r.rid} ended {r.state}: {r.finish_reason}"
        assert r.output == solo(r.prompt, r.max_new_tokens), f"request {r.rid} changed its tokens"
    assert not kv.cached
    prio = len(res.config["priority_preemptions"])
    STATS["runs"] += 1
    STATS["priority_preempted"] += prio > 0
    STATS["memory_preempted"] += sum(r.num_preemptions for r in res.requests) > prio


def test_the_random_cases_preempted():
    """Runs after the property (file order): a fair share of its cases preempted, both ways."""
    if STATS["runs"] < 20:
        pytest.skip("run the whole file to count")
    assert STATS["priority_preempted"] >= 3 and STATS["memory_preempted"] >= 3, STATS


def test_the_property_really_preempts():
    """Not vacuous: a case like the property's preempts both for priority and for memory."""
    reqs = [PriorityRequest([65, 66] * 3, 8, arrival=0, rid=0, priority=0, eos_id=None),
            PriorityRequest([66] * 4, 8, arrival=0, rid=1, priority=0, eos_id=None),
            PriorityRequest([67] * 5, 6, arrival=2, rid=2, priority=3, eos_id=None)]
    kv = PagedKVStore.for_model(MODEL, capacity=28, block_size=4)
    res = PriorityEngine(MODEL, kv, policy="chunked", queue="priority", preempt=True, max_running=2,
                         max_tokens_per_step=8, clock="steps").run(clone_tagged(reqs))
    assert res.config["priority_preemptions"] and sum(r.num_preemptions for r in res.requests) >= 1
    assert all(r.output == solo(r.prompt, r.max_new_tokens) for r in res.requests)


def test_serve_priority_runs_copies():
    reqs = two_class_trace(n_high=2, n_low=1, high_output=2, low_output=2)
    a = serve_priority(MODEL, reqs, queue="priority", clock="steps")
    assert all(r.output == [] for r in reqs) and len(a.finished) == 3


def test_contention_trace_is_where_prefill_first_and_decode_first_differ():
    """Lesson 06's section 2: with 16 slots and 128 tokens per step a document's whole prompt does not
    fit beside every stream's decode, so prefill-first makes streams skip steps and decode-first holds
    documents back; with 512 tokens per step the two make the same steps."""
    from course_lib.engine import Engine
    from course_lib.engine.slo import gpu_like_clock
    from course_lib.labs.scheduling import contention_trace
    model = tiny_model(seed=3, max_len=256)                            # room for a 124-token prompt and its answer
    trace = contention_trace(seed=0)
    assert [(r.prompt, r.arrival) for r in trace] == [(r.prompt, r.arrival) for r in contention_trace(seed=0)]
    docs = [r for r in trace if r.tenant == "document"]
    assert len(docs) == 4 and all(108 <= len(r.prompt) <= 124 for r in docs)
    assert all(a.arrival <= b.arrival for a, b in zip(trace, trace[1:]))

    def run(policy, budget):
        return Engine(model, policy=policy, max_running=16, max_tokens_per_step=budget,
                      clock=gpu_like_clock()).run(clone_tagged(trace))

    def skipped(res):
        return sum(1 for s in res.steps for _, _, kind in s.slots if kind == "stalled")

    def doc_ttft(res):
        return max(r.first_token_time - r.arrival for r in res.requests if r.tenant == "document")

    pf, df = run("prefill-first", 128), run("decode-first", 128)
    assert all(r.state is State.FINISHED for r in pf.requests + df.requests)
    assert skipped(pf) > 0 and skipped(df) == 0 and doc_ttft(df) > 3 * doc_ttft(pf)
    assert pf.outputs() == df.outputs()
    wide = [[sorted(s.items) for s in run(p, 512).steps] for p in ("prefill-first", "decode-first")]
    assert wide[0] == wide[1]
    with pytest.raises(ValueError, match="stream_prompt"):
        contention_trace(stream_prompt=(9, 3))
    with pytest.raises(ValueError, match="doc_prompt"):
        contention_trace(doc_prompt=2)


def test_a_waiting_request_of_several_samples_takes_as_many_slots_at_once():
    """A more important request with n = 3 arrives while 3 less important ones fill the 3 batch
    slots: preemption makes room for all 3 of its samples in one step (it needs them together),
    and every request still gets its solo tokens."""
    low = [PriorityRequest(list(range(1, 6 + i)), 12, arrival=0.0, priority=0, rid=i, eos_id=None)
           for i in range(3)]
    high = PriorityRequest([9, 8, 7, 6], 5, arrival=2.0, priority=5, n=3, temperature=1.0, seed=4, rid=3)
    res = run(low + [high], queue="priority", preempt=True, max_running=3, policy="prefill-first")
    h = next(r for r in res.requests if r.rid == 3)
    arrived_step = next(s.index for s in res.steps if s.start >= 2.0)
    assert h.first_token_step == arrived_step                       # prefilled the step it could first run
    assert sorted(v for _, v, f in res.config["priority_preemptions"] if f == 3) == [0, 1, 2]
    for r in res.requests:
        if r.rid in (0, 1, 2):
            assert r.state is State.FINISHED and r.output == solo(r.prompt, 12)
    assert len(res.samples()[3]) == 3 and all(len(t) == 5 for t in res.samples()[3])
