"""The scheduler's policies, limits, preemption and rejection, on small real runs."""

from __future__ import annotations

import pytest

from course_lib.engine import (DecodeFirst, Engine, Limits, Plan, Policy, PrefillFirst, Rejection, Request, Scheduler,
                               State, highest_priority_first, make_policy, prefill_share, serve)
from course_lib.kv.reference import ReferenceKVStore
from helpers import one_thread, tiny_model  # noqa: F401 (an autouse fixture)

MODEL = tiny_model(seed=3, layers=1)


def run(reqs, **kw):
    kw.setdefault("clock", "steps")
    return serve(MODEL, reqs, **kw)      # fresh copies: the same list can run under several policies


def seed_scenario(policy, budget=64, **kw):
    """The seed's question: three long requests are decoding; at step 4 a short one arrives.
    Returns the step that runs right after it arrived."""
    reqs = [Request([65 + i] * 3, 20, arrival=0, rid=i, eos_id=None) for i in range(3)]
    reqs.append(Request([70] * 5, 2, arrival=4, rid=3, eos_id=None))
    res = run(reqs, policy=policy, max_running=4, max_tokens_per_step=budget, **kw)
    step = next(s for s in res.steps if s.start >= 4)
    return {rid: (n, kind) for rid, n, kind in step.items}, res


def test_seed_question_static_keeps_the_newcomer_waiting():
    items, res = seed_scenario("static")
    assert items == {0: (1, "decode"), 1: (1, "decode"), 2: (1, "decode")}
    short = res.requests[3]
    assert short.first_token_step > max(r.finish_step for r in res.requests[:3])   # waits for the whole batch


def test_seed_question_prefill_first_admits_the_newcomer_next_step():
    items, _ = seed_scenario("prefill-first")
    assert items == {3: (5, "prefill"), 0: (1, "decode"), 1: (1, "decode"), 2: (1, "decode")}
    items, _ = seed_scenario(PrefillFirst(mix_decodes=False))
    assert items == {3: (5, "prefill")}                       # every running decode pauses for it


def test_seed_question_decode_first_and_chunked_under_a_tight_budget():
    items, _ = seed_scenario("decode-first", budget=6)
    assert items == {0: (1, "decode"), 1: (1, "decode"), 2: (1, "decode")}   # 5 tokens do not fit in 3
    items, _ = seed_scenario("chunked", budget=6)
    assert items == {0: (1, "decode"), 1: (1, "decode"), 2: (1, "decode"), 3: (3, "prefill")}
    items, _ = seed_scenario("prefill-first", budget=6)
    assert items == {3: (5, "prefill"), 0: (1, "decode")}     # the newcomer first; two decodes stall


def test_static_batch_holds_finished_slots_until_its_last_member_ends():
    reqs = [Request([65], 2, rid=0, eos_id=None), Request([66], 6, rid=1, eos_id=None),
            Request([67], 1, rid=2, eos_id=None)]
    res = run(reqs, policy="static", max_running=2)
    held_steps = [s for s in res.steps if any(kind == "held" for _, _, kind in s.slots)]
    assert held_steps, "request 0 finishes first: its slot must stay held"
    assert res.requests[2].first_token_step > res.requests[1].finish_step
    cont = run(reqs, policy="decode-first", max_running=2)
    assert cont.requests[2].first_token_step < cont.requests[1].finish_step   # continuous: joins at once
    assert len(cont.steps) < len(res.steps)


def test_prefill_share():
    r = Request([1] * 10, 4)
    assert prefill_share(r, 16, 16, chunked=False) == 10
    assert prefill_share(r, 9, 16, chunked=False) == 0       # whole prompts only
    assert prefill_share(r, 9, 16, chunked=True) == 9        # a chunk
    assert prefill_share(r, 0, 16, chunked=True) == 0
    assert prefill_share(r, 8, 8, chunked=False) == 8        # longer than the whole budget: runs alone in pieces
    assert prefill_share(r, 7, 8, chunked=False) == 0


def test_limits_and_options_are_validated():
    with pytest.raises(ValueError, match="max_running"):
        Limits(max_running=0)
    with pytest.raises(ValueError, match="max_tokens_per_step"):
        Limits(max_tokens_per_step=1.5)
    with pytest.raises(ValueError, match="policy"):
        make_policy("round-robin")
    store = ReferenceKVStore.for_model(MODEL)
    with pytest.raises(ValueError, match="swap_out"):
        Scheduler(store, "chunked", preemption="swap")
    with pytest.raises(ValueError, match="preemption"):
        Scheduler(store, "chunked", preemption="drop")
    with pytest.raises(ValueError, match="step_mode"):
        Engine(MODEL, step_mode="ragged")
    with pytest.raises(ValueError, match="clock"):
        Engine(MODEL, clock="sundial")


def test_budget_and_slots_are_never_exceeded():
    reqs = [Request([65 + i % 4] * (3 + i), 5, arrival=i // 3, rid=i) for i in range(9)]
    for policy in ["static", "prefill-first", "decode-first", "chunked"]:
        res = run(reqs, policy=policy, max_running=3, max_tokens_per_step=7)
        assert all(s.num_tokens <= 7 for s in res.steps), policy
        assert all(len(s.items) <= 3 and len(s.slots) <= 3 for s in res.steps), policy
        assert len(res.finished) == 9


def test_preemption_picks_the_latest_arrival_and_requeues_it():
    reqs = [Request([65] * 4, 10, arrival=0, rid=0, eos_id=None), Request([66] * 4, 10, arrival=1, rid=1, eos_id=None)]
    res = run(reqs, policy="decode-first", kv_capacity=18)
    assert res.requests[0].num_preemptions == 0
    assert res.requests[1].num_preemptions >= 1
    assert [r.state for r in res.requests] == [State.FINISHED, State.FINISHED]
    assert any(s.preempted == [1] for s in res.steps)


def test_requests_that_can_never_fit_are_rejected_with_a_reason():
    reqs = [Request([65] * 10, 60, rid=0), Request([65] * 40, 5, rid=1), Request([66] * 3, 3, rid=2)]
    res = run(reqs, policy="chunked", kv_capacity=30)
    by = {r.rid: r for r in res.requests}
    for rid in (0, 1):                    # longer than the store can ever hold: rejected before any step
        assert by[rid].state is State.REJECTED and by[rid].rejection is Rejection.TOO_LONG
        assert "ReferenceKVStore.capacity=30" in by[rid].finish_reason and not by[rid].output
    assert by[2].state is State.FINISHED
    res = run(reqs, policy="chunked")
    by = {r.rid: r for r in res.requests}
    assert by[0].state is State.REJECTED and "context of 64" in by[0].finish_reason
    assert by[1].state is by[2].state is State.FINISHED


def test_order_key_admits_higher_priority_first():
    reqs = [Request([65] * 3, 4, arrival=0, rid=0), Request([66] * 3, 4, arrival=1, rid=1, priority=0),
            Request([67] * 3, 4, arrival=1, rid=2, priority=5)]
    fcfs = run(reqs, policy="decode-first", max_running=1)
    prio = run(reqs, policy="decode-first", max_running=1, queue=highest_priority_first)
    assert fcfs.requests[1].first_token_step < fcfs.requests[2].first_token_step
    assert prio.requests[2].first_token_step < prio.requests[1].first_token_step


class PreemptForPriority(DecodeFirst):
    """An extension a later lesson can write: a waiting request of higher priority
    takes the slot of the lowest-priority running one."""

    def plan(self, s):
        if s.waiting and s.free_slots == 0:
            low = max(s.running, key=s.key)
            if s.key(s.waiting[0]) < s.key(low):
                s.preempt(low)
        return super().plan(s)


def test_a_policy_can_preempt_for_priority():
    reqs = [Request([65] * 3, 12, arrival=0, rid=0, priority=0, eos_id=None),
            Request([66] * 3, 3, arrival=2, rid=1, priority=9, eos_id=None)]
    res = run(reqs, policy=PreemptForPriority(), max_running=1, queue=highest_priority_first)
    low, high = res.requests
    assert low.num_preemptions == 1 and high.finish_step < low.finish_step
    assert [r.state for r in res.requests] == [State.FINISHED, State.FINISHED]


class Greedy(Policy):
    """A buggy policy: ignores the token budget."""

    def plan(self, s):
        return Plan(admit=s.waiting[: s.free_slots], work=[(r, r.remaining) for r in s.running + s.waiting[: s.free_slots]])


def test_a_buggy_policy_fails_loudly():
    with pytest.raises(RuntimeError, match="max_tokens_per_step"):
        run([Request([65] * 9, 2)], policy=Greedy(), max_tokens_per_step=4)


def test_chunked_prefill_bounds_every_step():
    reqs = [Request([65] * 3, 30, arrival=0, rid=0, eos_id=None), Request([66] * 40, 2, arrival=3, rid=1, eos_id=None)]
    whole = run(reqs, policy="decode-first", max_tokens_per_step=64)
    chunked = run(reqs, policy="chunked", max_tokens_per_step=9)
    assert max(s.num_tokens for s in whole.steps) == 41           # the whole prompt plus one decode
    assert max(s.num_tokens for s in chunked.steps) <= 9
    assert sum(1 for s in chunked.steps if any(rid == 1 and k == "prefill" for rid, _, k in s.items)) == 5  # 40 = 8 x 5
    assert whole.outputs() == chunked.outputs()


def test_a_function_policy_reproduces_chunked_prefill():
    from course_lib.grading.hidden.batching import reference_schedule_step
    from course_lib.engine import FunctionPolicy
    reqs = [Request([65 + i % 3] * (2 + 3 * i), 4 + i, arrival=i, rid=i, eos_id=None) for i in range(6)]
    mine = run(reqs, policy=FunctionPolicy(reference_schedule_step), max_running=3, max_tokens_per_step=7)
    ref = run(reqs, policy="chunked", max_running=3, max_tokens_per_step=7)
    assert [s.items for s in mine.steps] == [s.items for s in ref.steps]
    with pytest.raises(ValueError, match="fn"):
        FunctionPolicy(3)
    with pytest.raises(RuntimeError, match="neither running nor waiting"):
        run(reqs, policy=FunctionPolicy(lambda running, waiting, slots, budget: [(99, 1)]))


def test_a_preempted_request_waits_flagged_and_comes_back():
    eng = Engine(MODEL, policy="decode-first", kv_capacity=18, clock="steps")
    reqs = [Request([65] * 4, 10, arrival=0, rid=0, eos_id=None), Request([66] * 4, 10, arrival=1, rid=1, eos_id=None)]
    for r in reqs:
        eng.submit(r)
    while not any(s.preempted for s in eng.steps):
        eng.step()
    victim = reqs[1]
    assert victim.is_preempted and victim.state is State.WAITING and victim.num_computed == 0
    assert victim.output, "it keeps the tokens it already generated"
    res = eng.run()
    assert not victim.is_preempted and victim.state is State.FINISHED


def test_next_tokens_is_the_slice_of_all_tokens_a_step_runs():
    r = Request(rid=0, prompt=[5, 6, 7], max_new_tokens=8)
    r.output = [8, 9]
    for computed in range(6):
        r.num_computed = computed
        for n in range(0, 7 - computed):
            assert r.next_tokens(n) == r.all_tokens[computed:computed + n], (computed, n)


# ---- the KV margin (Limits.kv_margin) ---------------------------------------------------------------
def _margin_run(kv_margin):
    from course_lib.engine import Engine
    from course_lib.kv.paged import PagedKVStore
    from course_lib.model import build_model
    from helpers import tiny_config
    model = build_model(tiny_config(), seed=3, weights="random")
    store = PagedKVStore.for_model(model, capacity=96, block_size=4, max_model_len=48)
    reqs = [Request([40 + i % 7] * (3 + i % 5), 14 + i % 9, rid=i) for i in range(12)]
    eng = Engine(model, store=store, max_running=8, max_tokens_per_step=64, clock="steps", kv_margin=kv_margin)
    seen = []                                  # (free share before the step, admitted while others ran)
    real = eng.scheduler.schedule

    def watched(now=0.0):
        usage, running = store.usage(), set(map(id, eng.scheduler.running))
        work = real(now)
        newcomers = [r for r, _ in work if id(r) not in running and r.num_computed == 0]
        seen.append((usage.free / usage.capacity, bool(newcomers) and bool(running)))
        return work
    eng.scheduler.schedule = watched
    res = eng.run(reqs)
    return res, seen


def test_kv_margin_admits_no_newcomer_below_it_and_cuts_preemptions_without_changing_tokens():
    plain, _ = _margin_run(0.0)
    kept, seen = _margin_run(0.25)
    assert len(kept.finished) == len(plain.finished) == 12 and kept.outputs() == plain.outputs()
    assert all(free >= 0.25 for free, admitted in seen if admitted)       # newcomers only above the margin
    assert any(free < 0.25 for free, _ in seen)                            # and the margin was reached
    preempted = [sum(r.num_preemptions for r in res.requests) for res in (plain, kept)]
    assert preempted[1] < preempted[0], preempted
    assert kept.config["kv_margin"] == 0.25


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan"), "0.1", True])
def test_kv_margin_is_refused_outside_zero_to_one(bad):
    with pytest.raises((ValueError, TypeError), match="kv_margin"):
        Limits(kv_margin=bad)


def test_kv_margin_needs_a_store_with_a_capacity():
    from course_lib.engine import Engine
    from course_lib.model import build_model
    from helpers import tiny_config
    with pytest.raises(ValueError, match="kv_margin: ReferenceKVStore grows without a limit"):
        Engine(build_model(tiny_config(), seed=3, weights="random"), kv_margin=0.1)
