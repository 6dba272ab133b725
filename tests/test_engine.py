"""The engine's step loop: packed vs padded steps, clocks, metrics, sampling, requests."""

from __future__ import annotations

import pytest
import torch

from course_lib.engine import (CostModelClock, Engine, Rejection, Request, Sampler, State, max_gap, serve,
                               table, ttft_tpot)
from course_lib.generate import generate
from course_lib.kv.contexts import BatchedDecodeContext, PaddedStepContext
from course_lib.kv.reference import ReferenceKVStore
from course_lib.model import build_model
from course_lib.tokenizer import EOS
from helpers import one_thread, tiny_config  # noqa: F401 (an autouse fixture)

CFG = tiny_config()


@pytest.fixture(scope="module")
def model32():
    model = build_model(CFG, seed=5, weights="random")
    with torch.no_grad():                      # larger weights: logits far from uniform, so a mismatch shows
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8)
    return model


@pytest.fixture(scope="module")
def model64():
    return build_model(CFG, seed=5, dtype=torch.float64, weights="random")


def trace(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        p = int(torch.randint(1, 9, (1,), generator=g))
        out.append(Request(torch.randint(32, 127, (p,), generator=g).tolist(), int(torch.randint(1, 8, (1,), generator=g)),
                           arrival=float(i // 2), rid=i))
    return out


# ---- the padded step is the packed step, with padding ---------------------------------------
@torch.no_grad()
def test_padded_step_matches_packed_step_fp32(model32):
    """A mixed step (one decode, one prefill chunk, one paused row, one dead row): same logits
    and the same keys/values stored, to 1e-5 in fp32."""
    prompts = {0: [70, 71, 72, 73, 74], 1: [80, 81, 82, 83, 84, 85, 86], 2: [90, 91]}
    stores = [ReferenceKVStore.for_model(model32) for _ in range(2)]
    for store in stores:                       # same history in both: seq 0 and 2 prefilled, seq 1 half-way
        for sid, p in prompts.items():
            store.add(sid, p, 32)
        hist = [(0, 5), (1, 3), (2, 2)]
        ctx = store.step_context(hist)
        ids = torch.tensor([prompts[0] + prompts[1][:3] + prompts[2]])
        model32.forward_ctx(ids, ctx.positions(), ctx)
        ctx.commit()
    for store in stores:
        store.grow(0, 6)
    new = {0: [99], 1: prompts[1][3:6]}
    packed_ctx = stores[0].step_context([(0, 1), (1, 3)])
    packed = model32.forward_ctx(torch.tensor([new[0] + new[1]]), packed_ctx.positions(), packed_ctx)  # (1, 4, V)
    packed_ctx.commit()
    padded_ctx = PaddedStepContext(stores[1], [(0, 1), (1, 3), (2, 0), (None, 0)], T=3)
    ids, pos = padded_ctx.inputs([new[0], new[1], [], []], "cpu")                                       # (4, 3)
    assert ids.shape == (4, 3) and pos[1].tolist() == [3, 4, 5] and pos[0].tolist() == [0, 0, 5]
    padded = model32.forward_ctx(ids, pos, padded_ctx)                                                 # (4, 3, V)
    padded_ctx.commit()
    assert packed.abs().max() > 1e-1
    torch.testing.assert_close(padded[0, 2], packed[0, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded[1], packed[0, 1:4], atol=1e-5, rtol=1e-5)
    for sid in (0, 1, 2):
        assert stores[0].num_cached(sid) == stores[1].num_cached(sid)
        for layer in range(CFG.num_hidden_layers):
            k0, v0 = stores[0].read(layer, sid, stores[0].num_cached(sid))
            k1, v1 = stores[1].read(layer, sid, stores[1].num_cached(sid))
            torch.testing.assert_close(k0, k1, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(v0, v1, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_batched_decode_context_matches_the_per_request_path_fp32(model32):
    """Decodes in one attention call == one call per request (the readable path), to 1e-5 in fp32."""
    prompts = {0: [70, 71, 72, 73, 74], 1: [80, 81], 2: [90, 91, 92, 93, 94, 95, 96, 97], 3: [60, 61, 62]}
    stores = [ReferenceKVStore.for_model(model32) for _ in range(2)]
    for store in stores:
        for sid, p in prompts.items():
            store.add(sid, p, 32)
        hist = [(0, 5), (1, 2), (2, 8), (3, 1)]                  # seq 3 is still prefilling
        ctx = store.step_context(hist)
        ids = torch.tensor([prompts[0] + prompts[1] + prompts[2] + prompts[3][:1]])
        model32.forward_ctx(ids, ctx.positions(), ctx)
        ctx.commit()
        for sid in (0, 1, 2):
            store.grow(sid, store.num_cached(sid) + 1)
    batch = [(0, 1), (3, 2), (1, 1), (2, 1)]                    # decodes around a prefill chunk
    ids = torch.tensor([[40, 61, 62, 41, 42]])
    outs = []
    for store, ctx_cls in ((stores[0], None), (stores[1], BatchedDecodeContext)):
        ctx = store.step_context(batch) if ctx_cls is None else ctx_cls(store, batch)
        outs.append(model32.forward_ctx(ids, ctx.positions(), ctx))                          # (1, 5, V)
        ctx.commit()
    assert outs[0].abs().max() > 1e-1
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)
    for sid in prompts:
        k0, _ = stores[0].read(1, sid, stores[0].num_cached(sid))
        k1, _ = stores[1].read(1, sid, stores[1].num_cached(sid))
        torch.testing.assert_close(k0, k1, atol=1e-5, rtol=1e-5)


def test_attention_choice(model64):
    assert Engine(model64).attention == "batched"                 # the reference store has no context of its own
    assert Engine(model64, attention="store").attention == "store"
    with pytest.raises(ValueError, match="attention"):
        Engine(model64, attention="flash")
    reqs = trace(6, seed=4)
    a = serve(model64, reqs, attention="store", max_running=3, clock="steps")
    b = serve(model64, reqs, attention="batched", max_running=3, clock="steps")
    assert a.outputs() == b.outputs()


def test_packed_has_no_padding_and_padded_pays_for_it(model64):
    reqs = trace(8)
    packed = serve(model64, reqs, policy="static", step_mode="packed", max_running=4, clock="steps")
    padded = serve(model64, reqs, policy="static", step_mode="padded", max_running=4, clock="steps")
    assert packed.outputs() == padded.outputs()
    assert all(s.padded_tokens == 0 for s in packed.steps)
    assert sum(s.padded_tokens for s in padded.steps) > 0
    assert padded.summary()["padding"] > 0 == packed.summary()["padding"]


def test_engine_matches_generate_fp64(model64):
    reqs = trace(8, seed=3)
    res = serve(model64, reqs, policy="chunked", max_running=3, max_tokens_per_step=5, clock="steps")
    for r in res.requests:
        assert r.output == generate(model64, [r.prompt], r.max_new_tokens)[0]


# ---- clocks and timestamps ------------------------------------------------------------------
def test_step_clock_times_are_step_counts(model64):
    r = Request([65, 66, 67], 4, arrival=2, eos_id=None)
    res = serve(model64, [r], policy="prefill-first", clock="steps")
    r = res.requests[0]
    assert res.steps[0].start == 2                         # idle until it arrives
    assert r.token_times == [3.0, 4.0, 5.0, 6.0] and r.token_steps == [0, 1, 2, 3]
    assert ttft_tpot(r.arrival, r.token_times) == (1.0, 1.0)
    assert res.makespan == 4.0 and res.throughput == 1.0


def test_measured_clock_uses_real_step_times(model64):
    res = serve(model64, trace(4), policy="decode-first", clock="measured")
    for s in res.steps:
        assert s.duration == s.wall_s > 0
        assert s.wall_s >= s.schedule_s + s.build_s + s.model_s
    for a, b in zip(res.steps, res.steps[1:]):
        assert b.start >= a.end - 1e-12
    assert res.wall_throughput > 0


def test_cost_model_clock_is_deterministic(model64):
    clock = CostModelClock(fixed=1.0, per_token=0.5, per_seq=0.0)
    res = serve(model64, [Request([65] * 4, 3, eos_id=None)], clock=clock)
    assert [s.duration for s in res.steps] == [3.0, 1.5, 1.5]
    with pytest.raises(ValueError, match="fixed"):
        CostModelClock(fixed=-1)


def test_cost_model_fit_recovers_known_costs():
    from types import SimpleNamespace
    steps = []
    for tokens, seqs in [(1, 1), (8, 8), (40, 1), (64, 4), (3, 3), (100, 6), (16, 2), (5, 5)]:
        wall = 2e-3 + 1e-4 * tokens + 5e-4 * seqs
        steps.append(SimpleNamespace(num_tokens=tokens, items=[None] * seqs, wall_s=wall))
    steps.append(SimpleNamespace(num_tokens=2, items=[None] * 2, wall_s=0.5))        # a hiccup: ignored
    clock = CostModelClock.fit(steps)
    assert clock.fixed == pytest.approx(2e-3, rel=1e-6)
    assert clock.per_token == pytest.approx(1e-4, rel=1e-6) and clock.per_seq == pytest.approx(5e-4, rel=1e-6)
    flat = [SimpleNamespace(num_tokens=t, items=[None] * t, wall_s=1e-3 - 1e-6 * t) for t in range(1, 9)]
    assert min(CostModelClock.fit(flat).per_token, CostModelClock.fit(flat).per_seq) >= 0   # never negative
    with pytest.raises(ValueError, match="steps"):
        CostModelClock.fit(steps[:2])


# ---- metrics -------------------------------------------------------------------------------
def test_ttft_tpot_and_gaps():
    assert ttft_tpot(1.0, [3.0, 4.0, 6.0]) == (2.0, 1.5)
    assert ttft_tpot(0.0, [2.0]) == (2.0, None)
    assert ttft_tpot(0.0, []) == (None, None)
    assert max_gap([1.0, 2.0, 5.0, 5.5]) == 3.0 and max_gap([1.0]) is None


def test_summary_and_table(model64):
    res = serve(model64, trace(6), policy="chunked", max_running=2, max_tokens_per_step=6, clock="steps")
    row = res.summary()
    assert row["finished"] == 6 and row["generated"] == res.generated_tokens
    assert row["throughput"] == pytest.approx(res.generated_tokens / res.makespan)
    assert 0 < row["occupancy"] <= 1 and 0 <= row["reorg_share"] < 1
    text = table([row], ["policy", "throughput", "ttft_mean"], units={"ttft_mean": "steps"})
    assert "chunked" in text and "ttft_mean (steps)" in text


def test_timeline_slots_show_stalls_and_held_slots(model64):
    reqs = [Request([65] * 3, 6, rid=0, eos_id=None), Request([66] * 3, 2, rid=1, eos_id=None),
            Request([67] * 4, 2, arrival=2, rid=2, eos_id=None)]
    static = serve(model64, reqs, policy="static", max_running=2, clock="steps")
    assert any(kind == "held" for s in static.steps for _, _, kind in s.slots)
    from course_lib.engine import PrefillFirst
    pf = serve(model64, reqs, policy=PrefillFirst(mix_decodes=False), max_running=3, clock="steps")
    assert any(kind == "stalled" for s in pf.steps for _, _, kind in s.slots)
    assert static.outputs() == pf.outputs()


# ---- sampling ------------------------------------------------------------------------------
def test_seeded_sampling_does_not_depend_on_batching(model64):
    reqs = [Request([65 + i] * (2 + i), 6, arrival=i, rid=i, temperature=1.5, seed=100 + i) for i in range(4)]
    alone = serve(model64, reqs, policy="static", max_running=1, clock="steps").outputs()
    for policy in ["prefill-first", "chunked"]:
        assert serve(model64, reqs, policy=policy, max_running=4, max_tokens_per_step=4,
                     kv_capacity=16, clock="steps").outputs() == alone
    greedy = serve(model64, [Request(r.prompt, r.max_new_tokens, arrival=r.arrival, rid=r.rid) for r in reqs],
                   clock="steps").outputs()
    reseeded = [Request(r.prompt, r.max_new_tokens, arrival=r.arrival, rid=r.rid, temperature=1.5, seed=7) for r in reqs]
    assert serve(model64, reseeded, clock="steps").outputs() != alone
    assert greedy != alone                   # temperature 1.5 on this model does move off the argmax


def test_sampler_is_a_hook(model64):
    def always_eos(requests, logits):
        return [EOS] * len(requests)
    res = serve(model64, [Request([65, 66], 5)], sampler=always_eos, clock="steps")
    r = res.requests[0]
    assert r.output == [EOS] and r.finish_reason == "eos" and r.state is State.FINISHED
    greedy = Sampler()(res.requests, torch.tensor([[0.0, 3.0, 1.0]]))
    assert greedy == [1]


# ---- requests in ---------------------------------------------------------------------------
def test_request_validation():
    with pytest.raises(ValueError, match="prompt"):
        Request([], 3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        Request([1], 0)
    with pytest.raises(ValueError, match="arrival"):
        Request([1], 2, arrival=-1)
    with pytest.raises(ValueError, match="temperature"):
        Request([1], 2, temperature=-0.5)


def test_submit_guards(model64):
    eng = Engine(model64, clock="steps")
    eng.submit(Request([1], 2, rid=4))
    dup = eng.submit(Request([1], 2, rid=4))               # a reused id: rejected on its own, before any work
    assert dup.state is State.REJECTED and dup.rejection is Rejection.DUPLICATE and "rid: 4" in dup.finish_reason
    with pytest.raises(TypeError, match="Request"):
        eng.submit(([1], 2))
    res = eng.run()
    assert [r.state for r in res.requests] == [State.FINISHED, State.REJECTED]
    assert res.outputs()[4] == res.requests[0].output and len(res.requests[0].output) == 2
    with pytest.raises(ValueError, match="fresh copy"):
        Engine(model64).submit(res.requests[0])
    assert Engine(model64).submit(Request([1], 2)).rid == 0


def test_store_max_model_len_rejects_up_front(model64):
    store = ReferenceKVStore.for_model(model64)
    store.max_model_len = 10
    res = Engine(model64, store, clock="steps").run([Request([1] * 8, 5), Request([1] * 3, 5)])
    assert res.requests[0].state is State.REJECTED and "max_model_len=10" in res.requests[0].finish_reason
    assert res.requests[1].state is State.FINISHED


def test_prefix_cache_hits_skip_cached_prompt_tokens(model64):
    paged = pytest.importorskip("course_lib.kv.paged")
    store = paged.PagedKVStore.for_model(model64, capacity=256, block_size=4, prefix_caching=True)
    system = [70, 71, 72, 73, 74, 75, 76, 77]
    reqs = [Request(system + [80], 3, arrival=0, rid=0), Request(system + [81, 82], 3, arrival=5, rid=1)]
    res = Engine(model64, store, clock="steps").run(reqs)
    assert res.requests[1].cached_prompt_tokens == 8
    first = next(s for s in res.steps if any(rid == 1 for rid, _, _ in s.items))
    assert [(rid, n) for rid, n, _ in first.items if rid == 1] == [(1, 2)]      # only the 2 new tokens
    for r in res.requests:
        assert r.output == generate(model64, [r.prompt], r.max_new_tokens)[0]


def test_a_sampler_hands_a_random_stream_over_and_the_draws_go_on_where_they_stopped():
    from course_lib.engine import Sampler
    logits = torch.linspace(0, 1, 16)[None]                              # (1, V): every token possible
    req = Request([40, 41], 4, rid=7, temperature=1.0, seed=3)
    alone = Sampler()
    straight = [alone([req], logits)[0] for _ in range(4)]
    first, second = Sampler(), Sampler()
    moved = [first([req], logits)[0] for _ in range(2)]
    first.hand_over(7, second)
    moved += [second([req], logits)[0] for _ in range(2)]
    assert moved == straight
    first.hand_over(7, second)                                           # nothing left to move: a no-op
    with pytest.raises(ValueError, match="rid: request 7 already has a random stream"):
        second.adopt(7, torch.Generator())
