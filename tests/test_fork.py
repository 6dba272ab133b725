"""Parallel sampling and beam search in the engine (engine/fork.py): exact, shared, leak-free.

* Request(n=k): sample i equals Request(seed=seed + i) served alone, whatever shares its
  steps, under every policy, under memory pressure (preemption by recompute and swap), and
  on a store that cannot fork (each sample computes the prompt again: nothing is shared).
* Request(beam_width=W): the engine's hypotheses equal a beam search that recomputes every
  sequence from scratch (generate.beam_search), also when a preemption restarts the search.
* Sharing is measured (blocks the tables name vs blocks held) and no block leaks.
* A request the engine can never serve this way is rejected with a one-line reason.
"""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from course_lib.engine import Engine, Rejection, Request, State
from course_lib.engine.fork import best_expansions, sample_seed
from course_lib.generate import beam_search
from course_lib.kv.contiguous import ContiguousKVStore
from course_lib.kv.paged import PagedKVStore
from course_lib.model import TinyLMConfig, build_model

POLICIES = ["static", "prefill-first", "decode-first", "chunked"]
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def model64():
    """float64, so that a cached and a recomputed log-probability agree far below any gap
    between two beams; initialised sharply so that the context matters."""
    cfg = TinyLMConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=96, initializer_range=0.3)
    return build_model(cfg, seed=3, dtype=torch.float64, weights="random")


def paged(model, num_blocks=200, block_size=4, **kw):
    return PagedKVStore.for_model(model, num_blocks=num_blocks, block_size=block_size, **kw)


def alone(model, req: Request, index: int) -> list[int]:
    """Sample `index` of `req`, served alone: the same request with seed + index, n = 1."""
    solo = req.clone(n=1, seed=sample_seed(req.seed, index), rid=0)
    return Engine(model).run([solo]).outputs()[0]


def assert_no_leak(store: PagedKVStore) -> None:
    store.check_invariants()
    assert not store.seqs and store.num_free_blocks() == store.num_blocks


def prompt_of(rng: random.Random, lo=3, hi=14) -> list[int]:
    return [rng.randrange(1, 250) for _ in range(rng.randint(lo, hi))]


# ---- parallel sampling ---------------------------------------------------------------------------
@pytest.mark.parametrize("policy", POLICIES)
def test_each_sample_equals_its_seed_served_alone(model64, policy):
    rng = random.Random(1)
    reqs = [Request(prompt_of(rng), 10, n=4, temperature=1.0, seed=11, rid=0, eos_id=None),
            Request(prompt_of(rng), 7, rid=1, eos_id=None),
            Request(prompt_of(rng), 9, n=2, temperature=0.7, seed=5, rid=2, eos_id=None, arrival=0.0)]
    store = paged(model64)
    res = Engine(model64, store=store, policy=policy, max_running=8).run([r.clone() for r in reqs])
    samples = res.samples()
    for req in reqs:
        got = samples[req.rid]
        assert len(got) == req.n
        assert got == [alone(model64, req, i) for i in range(req.n)]
    assert len({tuple(s) for s in samples[0]}) == 4, "four seeds, four different samples"
    assert all(r.state is State.FINISHED for r in res.requests)
    assert len(res.requests) == 3 + 3 + 1, "every sample is in the result, after its request"
    assert [r.sample_index for r in res.requests if r.parent_rid == 0] == [1, 2, 3]
    assert res.generated_tokens == 4 * 10 + 7 + 2 * 9
    assert_no_leak(store)


def test_samples_share_the_prompt_blocks_and_copy_only_on_write(model64):
    prompt = list(range(1, 19))                                     # 18 tokens: 4 full blocks of 4 + a partial one
    store = paged(model64)
    res = Engine(model64, store=store).run([Request(prompt, 6, n=4, temperature=1.0, seed=2, eos_id=None)])
    shared = res.block_sharing()
    assert shared["held"] < shared["named"] and 0 < shared["saved"] < 1
    # the 4 full prompt blocks stay shared by all 4 samples; the partial block is copied by 3 of them
    assert store.stats.cow_copies == 3
    prefill, first_decode = res.steps[0], res.steps[1]
    assert (prefill.kv_blocks_named, prefill.kv_blocks_held) == (20, 5), "after the fork: 4 tables, 5 blocks held"
    assert (first_decode.kv_blocks_named, first_decode.kv_blocks_held) == (20, 8), "3 copies of the partial block"
    assert_no_leak(store)


def test_a_store_that_cannot_fork_recomputes_each_sample_and_shares_nothing(model64):
    req = Request(list(range(1, 15)), 6, n=3, temperature=1.0, seed=4, eos_id=None)
    store = ContiguousKVStore.for_model(model64, capacity=400)
    res = Engine(model64, store=store).run([req.clone(rid=0)])
    assert res.samples()[0] == [alone(model64, req, i) for i in range(3)]
    prefill = sum(n for s in res.steps for _, n, kind in s.items if kind == "prefill")
    assert prefill == 14 + 2 * 15, "each other sample computed the prompt and its first token again"
    assert res.block_sharing()["named"] == 0


def test_samples_that_stop_at_their_first_token_free_everything(model64):
    store = paged(model64)
    res = Engine(model64, store=store).run([Request([5, 6, 7], 1, n=3, temperature=1.0, seed=0)])
    assert [len(s) for s in res.samples()[0]] == [1, 1, 1]
    assert all(r.finish_reason == "length" for r in res.requests)
    assert_no_leak(store)


# ---- beam search ---------------------------------------------------------------------------------
def test_best_expansions_orders_by_score_then_beam_then_token():
    lp = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.5, 0.5, 0.0]], dtype=torch.float64))
    got = best_expansions([0.0, 0.0], lp, 4)
    assert [(b, t) for b, t, _ in got] == [(0, 0), (1, 0), (1, 1), (0, 1)]
    assert got[0][2] == pytest.approx(-0.6931471805599453)


@pytest.mark.parametrize("width", [2, 3])
@pytest.mark.parametrize("policy", ["prefill-first", "chunked", "static"])
def test_beam_search_equals_the_recomputing_reference(model64, width, policy):
    rng = random.Random(width)
    reqs = [Request(prompt_of(rng), 9, beam_width=width, rid=0),
            Request(prompt_of(rng), 8, rid=1, temperature=1.0, seed=3),
            Request(prompt_of(rng), 7, beam_width=2, rid=2, arrival=0.0)]
    store = paged(model64)
    res = Engine(model64, store=store, policy=policy, max_running=8).run([r.clone() for r in reqs])
    for req in (reqs[0], reqs[2]):
        got = next(r for r in res.requests if r.rid == req.rid)
        ref = beam_search(model64, req.prompt, req.beam_width, req.max_new_tokens, req.eos_id)
        assert [t for t, _ in got.beams] == [t for t, _ in ref]
        assert [s for _, s in got.beams] == pytest.approx([s for _, s in ref], abs=1e-9)
        assert got.output == ref[0][0] and len(got.beams) == req.beam_width
        assert len(got.token_times) == len(got.output)
    assert res.outputs()[1] == alone(model64, reqs[1], 0)
    assert len(res.requests) == 3, "beams are the engine's own sequences, not requests"
    assert res.block_sharing()["saved"] > 0
    assert_no_leak(store)


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_a_preempted_beam_search_starts_over_and_ends_the_same(model64, preemption):
    rng = random.Random(7)
    beam = Request(prompt_of(rng, 10, 12), 14, beam_width=3, rid=0, arrival=1.0)    # the latest: the victim
    others = [Request(prompt_of(rng, 8, 12), 14, rid=i, arrival=0.0, eos_id=None) for i in (1, 2)]
    store = paged(model64, num_blocks=16, block_size=4)
    res = Engine(model64, store=store, max_running=6, preemption=preemption, clock="steps").run([beam.clone()] + others)
    got = res.requests[0]
    ref = beam_search(model64, beam.prompt, 3, 14, beam.eos_id)
    assert got.state is State.FINISHED and got.beam_restarts >= 1 and got.num_preemptions >= got.beam_restarts
    assert [t for t, _ in got.beams] == [t for t, _ in ref]
    for r in others:
        assert res.outputs()[r.rid] == alone(model64, r, 0)
    assert_no_leak(store)


def test_trained_model_beam_search_tells_a_whole_story():
    model = build_model()
    from course_lib.tokenizer import EOS, decode, encode

    prompt = encode("Once upon a time, there was a little frog named Sue.")
    res = Engine(model, store=PagedKVStore.for_model(model, num_blocks=120)).run([Request(prompt, 120, beam_width=4)])
    got = res.requests[0]
    assert got.output[-1] == EOS and decode(got.output).endswith("The end.")
    assert 0.3 < res.block_sharing()["saved"] < 0.8
    # the same search beside two sampled stories (lesson 05 also checks it against generate.beam_search)
    crowd = [Request(prompt, 120, beam_width=4, rid=0)] + [Request(prompt, 60, temperature=1.0, seed=s, rid=s)
                                                           for s in (1, 2)]
    mixed = Engine(model, store=PagedKVStore.for_model(model, num_blocks=200)).run(crowd)
    assert [t for t, _ in mixed.requests[0].beams] == [t for t, _ in got.beams]


# ---- what is refused, and why ----------------------------------------------------------------------
def test_requests_the_engine_can_never_fork_are_rejected_with_a_reason(model64):
    eng = Engine(model64, store=paged(model64), max_running=4, max_tokens_per_step=32)
    too_wide = eng.submit(Request([1, 2], 3, n=5, temperature=1.0, rid=0))
    assert too_wide.rejection is Rejection.INVALID and "n: 5 samples need 5 batch slots" in too_wide.finish_reason
    contiguous = Engine(model64, store=ContiguousKVStore.for_model(model64, capacity=64))
    beams = contiguous.submit(Request([1, 2], 3, beam_width=2, rid=0))
    assert beams.rejection is Rejection.INVALID and "cannot fork" in beams.finish_reason
    with pytest.raises(ValueError, match="temperature"):
        Request([1, 2], 3, beam_width=2, temperature=1.0)
    with pytest.raises(ValueError, match="beam_width"):
        Request([1, 2], 3, beam_width=2, n=2)
    with pytest.raises(ValueError, match="n"):
        Request([1, 2], 3, n=0)
    eng.run([Request([1, 2], 3, rid=1)])
    assert eng.result().outputs()[1]


# ---- everything at once, on random traces ---------------------------------------------------------------
@st.composite
def mixed_trace(draw):
    rng = random.Random(draw(st.integers(0, 10_000)))
    reqs = []
    for rid in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["greedy", "sample", "n", "beam"]))
        kw = dict(rid=rid, arrival=float(draw(st.integers(0, 6))), eos_id=None)
        if kind == "sample":
            kw.update(temperature=1.0, seed=rid)
        elif kind == "n":
            kw.update(n=draw(st.integers(2, 3)), temperature=1.0, seed=10 * rid)
        elif kind == "beam":
            kw.update(beam_width=draw(st.integers(2, 3)), eos_id=7)
        reqs.append(Request(prompt_of(rng, 2, 10), draw(st.integers(1, 8)), **kw))
    return reqs


@settings(max_examples=25, **SETTINGS)
@given(trace=mixed_trace(), policy=st.sampled_from(POLICIES), preemption=st.sampled_from(["recompute", "swap"]),
       num_blocks=st.integers(8, 40), max_running=st.integers(3, 6))
def test_random_mixes_keep_every_sample_and_beam_exact(model64, trace, policy, preemption, num_blocks, max_running):
    store = paged(model64, num_blocks=num_blocks, block_size=4)
    res = Engine(model64, store=store, policy=policy, preemption=preemption, max_running=max_running,
                 clock="steps").run([r.clone() for r in trace])
    by_rid = {r.rid: r for r in res.requests}
    for req in trace:
        got = by_rid[req.rid]
        assert got.done, f"request {req.rid} was lost"
        if got.state is State.REJECTED:
            assert got.finish_reason
            continue
        if req.beam_width > 1:
            ref = beam_search(model64, req.prompt, req.beam_width, req.max_new_tokens, req.eos_id)
            assert [t for t, _ in got.beams] == [t for t, _ in ref]
        else:
            assert res.samples()[req.rid] == [alone(model64, req, i) for i in range(req.n)]
    assert_no_leak(store)


def test_a_running_beam_search_counts_once_among_the_schedulers_requests(model64):
    eng = Engine(model64, store=paged(model64), clock="steps")
    eng.submit(Request([1, 2, 3, 4, 5], 6, beam_width=3, rid=0))
    eng.submit(Request([6, 7, 8], 6, rid=1))
    eng.step()                                        # both prefill; the search forks its 3 beams
    eng.step()
    running = [r for r in eng.scheduler.running]
    assert len(running) == 4, "3 beams and request 1 hold batch slots"
    assert sorted(r.rid for r in eng.scheduler.requests()) == [0, 1]


def test_a_request_preempted_after_its_samples_forked_comes_back_needing_one_slot(model64):
    """Its samples are ordinary requests by then: readmitted, it must not keep n - 1 slots
    for samples that will never fork again (they would sit idle until it leaves)."""
    store = paged(model64, num_blocks=14)
    eng = Engine(model64, store=store, max_running=4, max_tokens_per_step=64)
    req = Request(prompt=list(range(1, 9)), max_new_tokens=30, n=3, temperature=1.0, seed=5, rid=0)
    eng.submit(req)
    readmitted = []
    while eng.step() is not None:
        if req.num_preemptions and req.state is State.RUNNING and req.output:
            readmitted.append(dict(eng.scheduler.reserved))
    assert req.num_preemptions > 0 and readmitted          # the case happened
    assert all(0 not in r for r in readmitted)
    res = eng.result()
    assert len(res.samples()[0]) == 3
    for i, tokens in enumerate(res.samples()[0]):
        assert tokens == alone(model64, req, i)
    assert_no_leak(store)
