"""The contiguous KV arena: placement, reservation, accounting, real-tensor safety, and the model through it."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from course_lib.generate import generate
from course_lib.kv.allocators import BuddyAllocator, best_fit, first_fit, insert_hole, spans_cover
from course_lib.kv.base import KVAllocationError
from course_lib.kv.contiguous import ContiguousKVStore, reservation_size, split_usage
from course_lib.kv.decoding import greedy_no_cache, greedy_with_store, run_packed
from course_lib.kv.reference import ReferenceKVStore
from course_lib.model import TinyLMConfig, build_model

SMALL = dict(num_layers=1, num_kv_heads=1, head_dim=2)


def store(capacity=64, reservation="oracle", placement="first-fit", max_model_len=None, **kw):
    return ContiguousKVStore(**SMALL, capacity=capacity, reservation=reservation, placement=placement,
                             max_model_len=max_model_len, **kw)


def fill(s: ContiguousKVStore, seq_id: int, n: int, value: float) -> None:
    """Write n tokens of a recognisable value through the store's own write path."""
    s.grow(seq_id, n)
    k = torch.full((n, s.num_kv_heads, s.head_dim), value)
    for layer in range(s.num_layers):
        s.write(layer, seq_id, 0, k, -k)
    s.cached[seq_id] = n


# ---- reservation policies ------------------------------------------------------------
def test_reservation_policies_follow_the_paper():
    assert reservation_size("max", 10, 35, 2048) == 2048
    assert reservation_size("pow2", 10, 35, 2048) == 10 + 32        # output 25 -> 32 positions (paper's example)
    assert reservation_size("pow2", 10, 42, 2048) == 10 + 32        # output exactly a power of two
    assert reservation_size("pow2", 10, 10, 2048) == 10             # no output
    assert reservation_size("pow2", 100, 1900, 2048) == 2048        # capped at the model's maximum
    assert reservation_size("oracle", 10, 35, 2048) == 35


@pytest.mark.parametrize("args, name", [(("most", 1, 2, 8), "reservation"), (("max", 1, 9, 8), "max_len"),
                                        (("oracle", 0, 2, 8), "prompt_len"), (("oracle", 3, 2, 8), "prompt_len")])
def test_reservation_rejects_bad_input(args, name):
    with pytest.raises(ValueError, match=name):
        reservation_size(*args)


def test_slab_sizes_per_policy():
    for policy, expected in (("max", 128), ("pow2", 5 + 32), ("oracle", 25)):
        s = store(capacity=256, reservation=policy, max_model_len=128)
        s.add(0, [1] * 5, 25)
        assert s.slabs[0].size == expected
    s = store(capacity=256, reservation="oracle", placement="buddy", max_model_len=128)
    s.add(0, [1] * 5, 25)
    assert s.slabs[0].size == 32 and s.usage().rounding == 7 and s.memory_map()[0].rounding == 7


# ---- placement ---------------------------------------------------------------------
def _two_holes(placement):
    """Holes of 10 at 0 and of 4 at 15 (slabs of 5 at 10 and the rest after 19)."""
    s = store(capacity=40, placement=placement)
    for i, n in enumerate([10, 5, 4, 21]):
        s.add(i, [1], n)
    s.free(0)
    s.free(2)
    assert s.holes() == [(0, 10), (15, 4)]
    return s


def test_first_fit_takes_the_lowest_hole_and_best_fit_the_tightest():
    ff, bf = _two_holes("first-fit"), _two_holes("best-fit")
    ff.add(9, [1], 4)
    bf.add(9, [1], 4)
    assert ff.slabs[9].start == 0
    assert bf.slabs[9].start == 15


def test_pure_placement_functions():
    holes = [(0, 10), (15, 4), (30, 6)]
    assert first_fit(holes, 4) == (0, [(4, 6), (15, 4), (30, 6)])
    assert best_fit(holes, 4) == (15, [(0, 10), (30, 6)])
    assert best_fit(holes, 6) == (30, [(0, 10), (15, 4)])
    assert first_fit(holes, 11) is None and best_fit(holes, 11) is None
    assert insert_hole([(0, 4), (8, 2)], 4, 4) == [(0, 10)]              # merges both sides
    assert insert_hole([(0, 4)], 6, 2) == [(0, 4), (6, 2)]               # not adjacent: no merge
    with pytest.raises(ValueError, match="freed twice"):
        insert_hole([(0, 4)], 2, 4)


def test_buddy_splits_and_merges_back():
    b = BuddyAllocator(16)
    a = b.alloc(3)                     # 4 slots
    c = b.alloc(4)
    d = b.alloc(8)
    assert (a, c, d) == (0, 4, 8) and b.free_blocks() == []
    b.free(c, 4)
    b.free(a, 3)
    assert b.free_blocks() == [(0, 8)]
    b.free(d, 8)
    assert b.free_blocks() == [(0, 16)]
    assert BuddyAllocator(12).free_blocks() == [(0, 8), (8, 4)]
    with pytest.raises(ValueError, match="min_block"):
        BuddyAllocator(16, min_block=3)


def test_buddy_does_not_merge_neighbours_that_are_not_buddies():
    s = store(capacity=16, placement="buddy")
    for i in range(4):
        s.add(i, [1], 4)
    s.free(1)
    s.free(2)                          # [4, 8) and [8, 12) touch but are not buddies
    assert s.holes() == [(4, 4), (8, 4)]
    with pytest.raises(KVAllocationError) as err:
        s.add(9, [1], 8)
    assert (err.value.requested, err.value.largest_free, err.value.total_free) == (8, 4, 8)


# ---- the paradox of free memory ----------------------------------------------------
def test_paradox_of_free_memory_is_a_typed_error_and_overwrites_nothing():
    s = store(capacity=32)
    for i in range(4):
        s.add(i, [1] * 8, 8)
        fill(s, i, 8, float(i + 1))
    s.free(0)
    s.free(2)
    before = s.arena.clone()
    with pytest.raises(KVAllocationError) as err:
        s.add(7, [1] * 12, 12)
    e = err.value
    assert (e.requested, e.largest_free, e.total_free) == (12, 8, 16)
    assert "external fragmentation" in str(e)
    assert torch.equal(s.arena, before) and 7 not in s.slabs and 7 not in s.cached
    u = s.usage()
    assert (u.token_states, u.external, u.free) == (16, 16, 0)       # both holes are too small for 12
    assert s.usage(request=0).external == 0 and s.usage(request=8).external == 0
    s.add(8, [1] * 4, 8)                                             # a fitting request is admitted
    assert s.usage().external == 0                                   # ... and nobody is blocked now


def test_can_add_has_no_side_effects():
    s = store(capacity=16)
    assert s.can_add([1] * 4, 16)
    assert s.slabs == {} and s.holes() == [(0, 16)]
    s.add(0, [1], 10)
    assert not s.can_add([1], 7) and s.can_add([1], 6)


# ---- accounting ----------------------------------------------------------------------
def test_usage_split_for_a_max_reservation():
    s = store(capacity=100, reservation="max", max_model_len=32)
    s.add(0, [1] * 5, 12)
    fill(s, 0, 5, 1.0)
    u = s.usage()
    assert (u.token_states, u.reserved, u.internal, u.external, u.free) == (5, 7, 20, 0, 68)
    assert u.figure2()["internal"] == pytest.approx(0.20) and u.figure2()["reservation"] == pytest.approx(0.07)


def test_split_usage_counts_buddy_rounding_apart():
    u = split_usage(64, [(32, 10, 20, 25), (8, 8, 8)], [8, 16], too_small=12)
    assert (u.token_states, u.reserved, u.internal, u.rounding, u.external, u.free) == (18, 10, 12, 7, 8, 16)
    f = u.figure2()
    assert f["internal"] == pytest.approx(5 / 64) and f["external_and_others"] == pytest.approx((8 + 16 + 7) / 64)


# ---- real tensors: views, no overwrite, growth, swapping -------------------------------
def test_kv_view_is_a_writable_view_of_the_arena():
    s = ContiguousKVStore(2, 2, 4, capacity=16)
    s.add(0, [1] * 3, 5)
    s.add(1, [1] * 3, 5)
    k, v = s.kv_view(1, 1, 5)
    assert k.shape == (5, 2, 4) and v.shape == (5, 2, 4)
    k.fill_(3.0)
    v.fill_(-3.0)
    assert torch.all(s.arena[5:10, 0, 1] == 3.0) and torch.all(s.arena[5:10, 1, 1] == -3.0)
    assert s.arena[:5].abs().sum() == 0 and s.arena[10:].abs().sum() == 0 and s.arena[5:10, :, 0].abs().sum() == 0
    with pytest.raises(ValueError, match="length"):
        s.kv_view(0, 0, 6)                   # past its own slab: refused, never an overwrite


def test_grow_past_the_reservation_extends_in_place_or_moves_with_the_data():
    s = store(capacity=32)
    s.add(0, [1] * 4, 4)
    fill(s, 0, 4, 5.0)
    s.grow(0, 6)                             # the hole right after is free: in place
    assert s.slabs[0].start == 0 and s.slabs[0].size == 6 and s.moves == 0
    s.add(1, [1] * 2, 2)                     # now seq 1 sits right after seq 0
    s.grow(0, 10)                            # must move
    assert s.moves == 1 and s.slabs[0].start >= 8
    k, v = s.kv_view(0, 0, 4)
    assert torch.all(k == 5.0) and torch.all(v == -5.0)
    s.add(2, [1], 14)
    with pytest.raises(KVAllocationError):
        s.grow(0, 20)                        # nowhere to go: refused, data kept
    k, _ = s.kv_view(0, 0, 4)
    assert torch.all(k == 5.0)


def test_swap_out_and_in_keeps_the_keys_and_values():
    s = store(capacity=24)
    s.add(0, [1] * 4, 8)
    fill(s, 0, 4, 2.0)
    s.add(1, [1], 8)
    s.swap_out(0)
    assert s.total_free() == 16 and 0 not in s.slabs
    with pytest.raises(ValueError, match="swapped out"):
        s.kv_view(0, 0, 1)
    s.add(2, [1], 8)                         # takes the old place
    s.swap_in(0)
    assert s.slabs[0].start == 16 and s.num_cached(0) == 4
    k, v = s.kv_view(0, 0, 4)
    assert torch.all(k == 2.0) and torch.all(v == -2.0)
    with pytest.raises(NotImplementedError):
        s.fork(0, 5)


@pytest.mark.parametrize("kwargs, name", [
    (dict(capacity=0), "capacity"), (dict(reservation="most"), "reservation"),
    (dict(placement="worst-fit"), "placement"), (dict(max_model_len=0), "max_model_len"),
    (dict(placement="buddy", min_block=3), "min_block"), (dict(capacity=32, max_model_len=33), "max_model_len"),
    (dict(capacity=48, max_model_len=33, placement="buddy"), "max_model_len"),
])
def test_bad_configuration_is_a_value_error(kwargs, name):
    with pytest.raises(ValueError, match=name):
        store(**kwargs)


def test_bad_requests_are_value_errors():
    s = store(capacity=32, max_model_len=16)
    with pytest.raises(ValueError, match="max_len"):
        s.add(0, [1], 17)
    with pytest.raises(ValueError, match="tokens"):
        s.add(0, [1] * 5, 4)
    with pytest.raises(ValueError, match="tokens"):
        s.add(0, [], 4)
    s.add(0, [1], 4)
    with pytest.raises(ValueError, match="already"):
        s.add(0, [1], 4)
    with pytest.raises(ValueError, match="length"):
        s.grow(0, 17)
    s.free(0)
    with pytest.raises(ValueError, match="seq_id: 0 is not in the store"):
        s.free(0)                            # freeing twice is a bookkeeping bug: it says so
    with pytest.raises(ValueError, match="seq_id"):
        s.free(99)                           # so is freeing an id that was never added
    assert s.holes() == [(0, 32)]


# ---- property tests: random add / grow / free sequences --------------------------------
OPS = st.lists(st.tuples(st.sampled_from(["add", "add", "grow", "free"]), st.integers(0, 9),
                         st.integers(1, 20), st.integers(0, 20)), min_size=1, max_size=40)


def _initial_holes(s):
    return store(capacity=s.capacity, placement=s.placement).holes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, placement=st.sampled_from(["first-fit", "best-fit", "buddy"]),
       reservation=st.sampled_from(["max", "pow2", "oracle"]), capacity=st.integers(32, 96))
def test_random_operations_keep_the_arena_consistent(ops, placement, reservation, capacity):
    s = store(capacity=capacity, reservation=reservation, placement=placement, max_model_len=24)
    values: dict[int, float] = {}
    for n, (op, seq, prompt, extra) in enumerate(ops):
        if op == "add" and seq not in s.slabs:
            final = min(24, prompt + extra)
            prompt = min(prompt, final)
            need = s.slab_size_for(prompt, final)
            largest = s.largest_free()
            try:
                s.add(seq, [1] * prompt, final)
            except KVAllocationError as e:
                # an allocation fails only when no span is large enough
                assert largest < need and e.largest_free == largest and e.requested == need
                assert e.total_free == s.total_free()
            else:
                assert largest >= need
                values[seq] = float(n + 1)
                fill(s, seq, prompt, values[seq])
        elif op == "grow" and seq in s.slabs:
            length = min(24, s.num_cached(seq) + extra + 1)
            try:
                s.grow(seq, length)
            except KVAllocationError as e:
                assert e.largest_free < e.requested
            else:
                fill(s, seq, length, values[seq])
        elif op == "free" and seq in s.slabs:
            s.free(seq)
            values.pop(seq, None)
        elif op == "free":
            with pytest.raises(ValueError, match="not in the store"):
                s.free(seq)                  # an id that is not there: an error, and nothing changes
        # slabs never overlap and every slot is either owned or free
        segs = s.memory_map()
        assert spans_cover([(g.start, g.size) for g in segs], capacity)
        assert {g.seq_id for g in segs if g.seq_id is not None} == set(s.slabs) == set(values)
        u = s.usage()
        assert min(u.token_states, u.reserved, u.internal, u.external, u.free) >= 0
        assert u.token_states + u.reserved + u.internal + u.external + u.free == capacity
        # nobody's keys and values were overwritten by anybody else
        for seq_id, value in values.items():
            k, v = s.kv_view(0, seq_id, s.num_cached(seq_id))
            assert torch.all(k == value) and torch.all(v == -value)
    for seq_id in list(s.slabs):
        s.free(seq_id)
    assert s.holes() == _initial_holes(s)    # one free span again (buddy: the top blocks)
    if placement != "buddy":
        assert s.holes() == [(0, capacity)]


# ---- TinyLM through the arena -------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    return build_model(TinyLMConfig(), seed=0, weights="random")


@torch.no_grad()
@pytest.mark.parametrize("placement, reservation", [("first-fit", "oracle"), ("best-fit", "pow2"), ("buddy", "max")])
def test_model_through_the_arena_matches_the_reference_store(model, placement, reservation):
    prompts = [[72, 105, 33], list(range(40, 60)), [7]]
    arena = ContiguousKVStore.for_model(model, capacity=4096, placement=placement, reservation=reservation)
    assert arena.max_model_len == model.config.max_position_embeddings
    for j in range(3):                                   # fragment the arena first: slabs land mid-arena
        arena.add(100 + j, [1] * 5, 37)
    arena.free(101)
    got_logits, got = run_packed(model, arena, prompts, steps=8)
    ref_logits, ref = run_packed(model, ReferenceKVStore.for_model(model), prompts, steps=8)
    assert torch.allclose(got_logits, ref_logits, atol=1e-5, rtol=1e-5)
    assert got == ref
    solo = [generate(model, [p], 8, eos_id=None)[0] for p in prompts]
    assert got == solo
    assert arena.slabs[0].start > 0                                  # really not at the arena's start


@torch.no_grad()
def test_decoding_with_the_arena_equals_decoding_without_a_cache(model):
    prompt = list(range(65, 95))
    arena = ContiguousKVStore.for_model(model, capacity=128, placement="best-fit")
    cached, plain = greedy_with_store(model, arena, prompt, 12), greedy_no_cache(model, prompt, 12)
    assert cached.tokens == plain.tokens
    assert cached.tokens_processed == 30 + 11 and plain.tokens_processed == sum(range(30, 42))
    assert arena.slabs == {} and arena.holes() == [(0, 128)]


def test_arena_bytes_are_where_the_model_wrote(model):
    arena = ContiguousKVStore.for_model(model, capacity=64)
    arena.add(0, [1, 2, 3], 8)
    arena.add(1, [4, 5], 8)
    ctx = arena.step_context([(1, 2)])
    with torch.no_grad():
        model.forward_ctx(torch.tensor([[4, 5]]), ctx.positions(), ctx)
    ctx.commit()
    assert arena.arena[8:10].abs().sum() > 0                  # seq 1's slab [8, 16) holds its K/V
    assert arena.arena[:8].abs().sum() == 0 and arena.arena[10:].abs().sum() == 0
