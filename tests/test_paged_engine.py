"""Lesson 03's engine on the paged store: every request gets exactly its solo tokens.

With preemption by recompute and by swap, prefix caching on and off, several
block sizes and batch policies, on random traces (hypothesis), in float64 so
no greedy argmax can flip on a rounding-level tie. And parallel sampling: on
the store level with fork + copy-on-write, on the engine level as n requests
with one prompt sharing its blocks through the prefix cache.
"""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from course_lib.engine.engine import Engine, clone_requests
from course_lib.engine.request import Request
from course_lib.generate import generate
from course_lib.kv.paged import PagedKVStore, num_blocks_for
from course_lib.kv.reference import ReferenceKVStore
from course_lib.model import TinyLMConfig, build_model

SYSTEM = [ord(c) for c in "You are a helpful assistant. "]       # a shared system prompt (29 tokens)
_SOLO: dict = {}


@pytest.fixture(scope="module")
def model64():
    """float64 (no argmax flips on rounding), and initialised 15x sharper than the default so its
    attention really depends on the context: a wrong key or value changes its tokens."""
    cfg = TinyLMConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.3)
    return build_model(cfg, seed=1, dtype=torch.float64, weights="random")


class Recorder:
    """A greedy sampler that keeps every row of logits it sees, by (request, output position)."""

    def __init__(self):
        self.rows: dict[tuple[int, int], torch.Tensor] = {}

    def __call__(self, requests, logits):
        for r, row in zip(requests, logits):
            self.rows[(r.rid, len(r.output))] = row.clone()
        return logits.argmax(-1).tolist()


def solo(model, prompt, n):
    """The oracle: the request generated alone, greedy, padded path, no paging."""
    key = (id(model), tuple(prompt), n)
    if key not in _SOLO:
        _SOLO[key] = generate(model, [list(prompt)], n, eos_id=None)[0]
    return _SOLO[key]


def make_requests(seed: int, n: int, max_new: int = 8):
    rng = random.Random(seed)
    reqs = []
    for i in range(n):
        prefix = SYSTEM[:rng.choice([0, 8, 16, 29])]
        prompt = prefix + [rng.randrange(97, 123) for _ in range(rng.randint(1, 10))]
        reqs.append(Request(prompt, rng.randint(1, max_new), arrival=round(rng.random() * 6), rid=i, eos_id=None))
    return reqs


def run_paged(model, reqs, *, block_size, num_blocks, preemption, prefix_caching, policy="prefill-first",
              max_running=4, budget=32):
    store = PagedKVStore.for_model(model, num_blocks=num_blocks, block_size=block_size, prefix_caching=prefix_caching)
    rec = Recorder()
    eng = Engine(model, store, policy=policy, max_running=max_running, max_tokens_per_step=budget,
                 preemption=preemption, clock="steps", sampler=rec)
    res = eng.run(clone_requests(reqs))
    res.recorded = rec.rows
    return store, res


def assert_solo(model, reqs, store, res):
    """Tokens equal to each request generated alone; logits equal to the reference store's (1e-9)."""
    assert not res.rejected, [r.finish_reason for r in res.rejected]
    for r in reqs:
        assert res.outputs()[r.rid] == solo(model, r.prompt, r.max_new_tokens), f"request {r.rid} differs from solo"
    if hasattr(res, "recorded"):
        rec = Recorder()
        Engine(model, ReferenceKVStore.for_model(model), max_running=8, clock="steps", sampler=rec).run(clone_requests(reqs))
        assert res.recorded.keys() == rec.rows.keys()
        for key, row in res.recorded.items():
            torch.testing.assert_close(row, rec.rows[key], atol=1e-9, rtol=0)
    store.check_invariants()
    assert not store.seqs and not store.swapped
    assert store.num_free_blocks() == store.num_blocks and all(c == 0 for c in store.ref_count)


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_tight_pool_preempts_hits_the_cache_and_still_matches_solo(model64, preemption):
    reqs = make_requests(seed=1, n=8)
    longest = max(len(r.prompt) + r.max_new_tokens for r in reqs)
    store, res = run_paged(model64, reqs, block_size=4, num_blocks=num_blocks_for(longest, 4) + 2,
                           preemption=preemption, prefix_caching=True)
    assert sum(r.num_preemptions for r in res.requests) > 0          # the pool really was too small
    assert store.stats.hit_tokens > 0                                  # and the system prompt was reused
    if preemption == "swap":
        assert store.stats.swapped_out > 0 and store.stats.swapped_in == store.stats.swapped_out
    assert_solo(model64, reqs, store, res)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), n=st.integers(1, 6), bs=st.sampled_from([1, 2, 4, 8]),
       spare=st.integers(0, 6), preemption=st.sampled_from(["recompute", "swap"]), prefix=st.booleans(),
       policy=st.sampled_from(["prefill-first", "decode-first", "chunked"]), max_running=st.integers(1, 5),
       budget=st.sampled_from([8, 16, 64]))
def test_random_traces_match_solo(model64, seed, n, bs, spare, preemption, prefix, policy, max_running, budget):
    reqs = make_requests(seed, n)
    longest = max(len(r.prompt) + r.max_new_tokens for r in reqs)
    store, res = run_paged(model64, reqs, block_size=bs, num_blocks=num_blocks_for(longest, bs) + spare,
                           preemption=preemption, prefix_caching=prefix, policy=policy,
                           max_running=max_running, budget=budget)
    assert_solo(model64, reqs, store, res)


@pytest.mark.parametrize("mode", [dict(step_mode="padded"), dict(attention="batched")], ids=["padded", "batched"])
def test_engine_contexts_that_read_and_write_through_the_store(model64, mode):
    """The engine's padded steps and its batched-decode context use store.read / store.write,
    not the store's own step context: the paged store serves them too (prefix caching included)."""
    reqs = make_requests(seed=3, n=4)
    store = PagedKVStore.for_model(model64, num_blocks=40, block_size=4, prefix_caching=True)
    res = Engine(model64, store, max_running=3, clock="steps", **mode).run(clone_requests(reqs))
    assert_solo(model64, reqs, store, res)


# ---- parallel sampling -----------------------------------------------------------------------------
@pytest.mark.parametrize("attention", ["kernel", "gather"])
def test_fork_parallel_sampling_matches_solo_and_saves_memory(model64, attention):
    """Fork n children after the prompt; each continues with a different token (as sampling
    would pick); every child's logits equal a solo run of prompt + its tokens."""
    model = model64
    prompt = SYSTEM + [ord(c) for c in "Name a fruit:"]
    firsts = [ord(c) for c in " ABCD"]                                 # the n "sampled" first tokens
    store = PagedKVStore.for_model(model, num_blocks=64, block_size=8, attention=attention)

    def step(batch, ids):
        for s, n in batch:
            store.grow(s, store.num_cached(s) + n)
        ctx = store.step_context(batch)
        logits = model.forward_ctx(torch.tensor([ids]), ctx.positions(), ctx)     # (1, N, V)
        ctx.commit()
        return logits[0]

    with torch.no_grad():
        store.add(0, prompt, 64)
        step([(0, len(prompt))], prompt)
        for c in range(1, len(firsts)):
            store.fork(0, c)
        shared = store.sharing()
        assert shared["saved_blocks"] == (len(firsts) - 1) * num_blocks_for(len(prompt), 8)
        seqs = {c: [firsts[c]] for c in range(len(firsts))}
        logits_of = {c: [] for c in seqs}
        for _ in range(6):                                              # every child decodes greedily
            logits = step([(c, 1) for c in seqs], [seqs[c][-1] for c in seqs])
            for c, row in zip(seqs, logits):
                seqs[c].append(int(row.argmax()))
                logits_of[c].append(row)
        # the partial last prompt block was copied by each writer but one; full blocks stayed shared
        assert store.stats.cow_copies == len(firsts) - 1
        assert store.sharing()["saved_blocks"] == (len(firsts) - 1) * (len(prompt) // 8)
        store.check_invariants()
    for c, toks in seqs.items():
        ref = generate(model, [prompt + toks[:1]], 6, eos_id=None)[0]
        assert toks[1:] == ref, f"child {c} differs from its solo run"
        solo_store = ReferenceKVStore.for_model(model)             # and its logits, step by step
        with torch.no_grad():
            solo_store.add(0, prompt, 64)
            solo_store.grow(0, len(prompt))
            ctx = solo_store.step_context([(0, len(prompt))])
            model.forward_ctx(torch.tensor([prompt]), ctx.positions(), ctx)
            ctx.commit()
            for t, expected in zip(toks, logits_of[c]):
                solo_store.grow(0, solo_store.num_cached(0) + 1)
                ctx = solo_store.step_context([(0, 1)])
                got = model.forward_ctx(torch.tensor([[t]]), ctx.positions(), ctx)[0, 0]
                ctx.commit()
                torch.testing.assert_close(expected, got, atol=1e-10, rtol=0)
    for c in seqs:
        store.free(c)
    assert store.num_free_blocks() == store.num_blocks


def test_engine_parallel_sampling_shares_the_prompt_through_the_cache(model64):
    """n sampled continuations (temperature 1, own seeds) of one prompt, as n requests: the
    prompt's full blocks are computed once, and every sample equals its solo run."""
    prompt = SYSTEM + [ord(c) for c in "Say something:"]
    reqs = [Request(prompt, 6, arrival=0.0 if i == 0 else 1.0, rid=i, eos_id=None, temperature=1.0, seed=100 + i)
            for i in range(4)]                                          # the first prefills, the others find it
    store = PagedKVStore.for_model(model64, num_blocks=48, block_size=4, prefix_caching=True)
    res = Engine(model64, store, policy="decode-first", max_running=4, clock="steps").run(clone_requests(reqs))
    for r in reqs:
        alone = Engine(model64, ReferenceKVStore.for_model(model64), clock="steps").run(clone_requests([r]))
        assert res.outputs()[r.rid] == alone.outputs()[r.rid]
    assert len({tuple(o) for o in res.outputs().values()}) > 1          # they really are different samples
    assert store.stats.hit_tokens == 3 * ((len(prompt) - 1) // 4) * 4   # 3 of 4 prompts found cached
    store.check_invariants()


def test_the_engine_on_the_test_device_serves_solo_tokens(device):
    """TinyLM in float32 and its paged store on the test device (COURSE_DEVICE): the steps run the
    device's fast kernel ('auto': the Triton kernel on a GPU, the C kernel on the CPU), and every
    request gets its solo tokens, with logits within 1e-4 of the reference store's."""
    from course_lib.paged_attention import fast_impl, unavailable_reason

    cfg = TinyLMConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.3)
    model = build_model(cfg, seed=1, dtype=torch.float32, device=device, weights="random")
    reqs = make_requests(seed=5, n=5)
    longest = max(len(r.prompt) + r.max_new_tokens for r in reqs)
    store, res = run_paged(model, reqs, block_size=4, num_blocks=num_blocks_for(longest, 4) + 4,
                           preemption="recompute", prefix_caching=True)
    impl = fast_impl(device)
    q = torch.empty(0, cfg.num_attention_heads, store.head_dim, device=device)
    assert store.resolved_attention(cfg.num_attention_heads) == (
        impl if unavailable_reason(impl, q, store.key_blocks(0)) is None else "gather")
    assert not res.rejected
    for r in reqs:
        assert res.outputs()[r.rid] == solo(model, r.prompt, r.max_new_tokens), f"request {r.rid} differs from solo"
    rec = Recorder()
    Engine(model, ReferenceKVStore.for_model(model), max_running=8, clock="steps", sampler=rec).run(clone_requests(reqs))
    assert res.recorded.keys() == rec.rows.keys()
    for key, row in res.recorded.items():
        torch.testing.assert_close(row, rec.rows[key], atol=1e-4, rtol=1e-4)
    store.check_invariants()
