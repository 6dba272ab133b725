"""Replaying traces through KV stores: conservation, the paper's regime, and the model on top."""

from __future__ import annotations

import pytest
import torch

from course_lib.generate import generate
from course_lib.kv.contiguous import ContiguousKVStore
from course_lib.kv.reference import ReferenceKVStore
from course_lib.kv.replay import PAPER_FIGURE2, compare_policies, replay
from course_lib.kv.sizing import GIB, PUBLISHED
from course_lib.model import build_model
from course_lib.workloads import sharegpt_like, trace_from_lengths

OPT13B_SLOTS = PUBLISHED["OPT-13B"].tokens_in(12 * GIB)      # ~12 GiB of an A100-40GB left for KV


def arena(capacity, reservation="oracle", placement="first-fit", max_model_len=2048):
    return ContiguousKVStore(1, 1, 1, capacity=capacity, max_model_len=max_model_len,
                             reservation=reservation, placement=placement)


def test_every_request_finishes_and_the_arena_is_empty_afterwards():
    trace = sharegpt_like(60, rate=20.0, seed=0, scale=0.125)
    s = arena(600, "pow2", "best-fit", 256)
    res = replay(trace, s, snapshot_every=5)
    assert res.complete and set(res.finished) == {r.id for r in trace}
    assert all(res.admitted[i] <= res.finished[i] for i in res.finished)
    # a request is in the cache for at least output_len steps after admission
    assert all(res.finished[r.id] - res.admitted[r.id] == r.output_len for r in trace)
    assert s.slabs == {} and s.holes() == [(0, 600)] and s.cached == {}
    for u in res.usage:
        assert u.token_states + u.reserved + u.internal + u.external + u.free == 600
    assert sum(res.busy()) > 0 and res.snapshots


def test_refusals_record_the_paradox():
    # 3 requests of 8 fill a 24-slot arena; the middle one ends first, leaving a hole of 8;
    # a request of 12 then waits although 8 + 4 slots are free... in two pieces.
    trace = trace_from_lengths([(4, 4), (2, 2), (4, 4), (6, 6)], interval=0.0)
    res = replay(trace, arena(28, max_model_len=28), step_time=1.0)
    refused = [r for r in res.refusals if r is not None]
    assert refused and all(r.seq_id == 3 and r.requested == 12 for r in refused)
    assert any(r.paradox for r in refused)                 # total free >= 12 > largest hole
    assert all(r.largest_free < r.requested for r in refused)
    assert res.complete


def test_the_three_policies_land_in_the_papers_regime():
    trace = sharegpt_like(200, rate=5.0, seed=0)
    results = compare_policies(trace, lambda p: arena(OPT13B_SLOTS, p, "buddy"), step_time=0.05,
                               snapshot_every=None)
    shares = {p: r.figure2()["token_states"] * 100 for p, r in results.items()}
    assert shares["max"] < shares["pow2"] < shares["oracle"]
    for p, share in shares.items():
        assert abs(share - PAPER_FIGURE2[p]["token_states"]) < 7, (p, share)
    assert all(r.busy_fraction > 0.7 for r in results.values())
    assert results["max"].mean_batch(busy_only=True) == pytest.approx(7.0)   # 15728 // 2048 slabs
    for r in results.values():
        assert sum(r.figure2().values()) == pytest.approx(1.0)


def test_replay_also_drives_the_reference_store_with_preemption():
    trace = sharegpt_like(12, rate=100.0, seed=1, scale=0.0625)
    tight = ReferenceKVStore(1, 1, 1, capacity=80)
    res = replay(trace, tight)
    assert res.complete and res.preemptions > 0
    assert tight.cached == {}


@torch.no_grad()
def test_model_mode_tokens_match_solo_generation_and_the_reference_store():
    model = build_model(seed=0, weights="random")
    trace = sharegpt_like(5, rate=40.0, seed=3, scale=0.0625)
    a = replay(trace, ContiguousKVStore.for_model(model, capacity=200, reservation="pow2"), model=model)
    b = replay(trace, ReferenceKVStore.for_model(model), model=model)
    c = replay(trace, ReferenceKVStore.for_model(model, capacity=90), model=model)    # preempts, recomputes
    assert a.outputs == b.outputs == c.outputs and c.preemptions > 0
    for r in trace:
        assert a.outputs[r.id] == generate(model, [list(r.prompt)], r.output_len, eos_id=None)[0]


@pytest.mark.parametrize("kwargs, name", [(dict(step_time=0), "step_time"), (dict(max_steps=0), "max_steps"),
                                          (dict(snapshot_every=0), "snapshot_every"), (dict(max_batch=0), "max_batch")])
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        replay(sharegpt_like(2, 1.0, scale=0.0625), arena(200, max_model_len=128), **kwargs)


def test_a_request_longer_than_the_store_allows_is_refused_up_front():
    with pytest.raises(ValueError, match="trace"):
        replay(trace_from_lengths([(50, 50)]), arena(200, max_model_len=64))
    with pytest.raises(ValueError, match="trace"):
        replay(trace_from_lengths([(50, 50)]), ReferenceKVStore(1, 1, 1, capacity=99))


def test_progress_bars_are_off_when_the_environment_says_so(monkeypatch):
    from course_lib.progress import progress_bar
    monkeypatch.setenv("TQDM_DISABLE", "1")
    bar = progress_bar(total=3, desc="x")
    assert bar.disable
    bar.close()
    monkeypatch.setenv("TQDM_DISABLE", "0")
    bar = progress_bar(total=3, desc="x")
    assert not bar.disable
    bar.close()
