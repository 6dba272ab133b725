"""The prefix cache's index: chained hashes, verified hits, LRU eviction, broken chains.

(The store-level behaviour, with real K/V, is in tests/test_paged.py; the model-level
"a hit equals a fresh prefill" is below.)
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from course_lib.kv.paged import PagedKVStore
from course_lib.kv.prefix_cache import ROOT_ENTRY, ROOT_HASH, PrefixCache, block_hash, prefix_block_hashes
from course_lib.kv.reference import ReferenceKVStore


def test_block_hash_is_chained_and_deterministic():
    a = block_hash(ROOT_HASH, [1, 2, 3])
    assert a == block_hash(ROOT_HASH, (1, 2, 3)) == block_hash(0, [1, 2, 3])
    assert block_hash(a, [4, 5, 6]) != block_hash(ROOT_HASH, [4, 5, 6])      # the parent matters
    assert block_hash(ROOT_HASH, [1, 2, 3]) != block_hash(ROOT_HASH, [3, 2, 1])  # order matters
    assert 0 <= a < 2**64


@settings(max_examples=50, deadline=None)
@given(common=st.lists(st.integers(0, 3), max_size=20), a=st.lists(st.integers(0, 3), max_size=10),
       b=st.lists(st.integers(0, 3), max_size=10), bs=st.integers(1, 5))
def test_prefix_block_hashes_agree_exactly_on_the_shared_full_blocks(common, a, b, bs):
    ta, tb = common + a, common + b
    ha, hb = prefix_block_hashes(ta, bs), prefix_block_hashes(tb, bs)
    assert len(ha) == len(ta) // bs                                           # full blocks only
    first_diff = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))
    same_blocks = first_diff // bs
    assert ha[:same_blocks] == hb[:same_blocks]
    # after the first differing block every hash differs (with this 64-bit hash, collisions are negligible)
    assert all(x != y for x, y in zip(ha[same_blocks:], hb[same_blocks:]))


def test_prefix_block_hashes_validates_block_size():
    with pytest.raises(ValueError, match="block_size"):
        prefix_block_hashes([1, 2], 0)


def fill(cache: PrefixCache, tokens, blocks):
    """Register tokens' full blocks in `blocks`, chained, as the store does."""
    h, parent = ROOT_HASH, ROOT_ENTRY
    bs = cache.block_size
    entries = []
    for i, block in enumerate(blocks):
        e = cache.register(block, h, parent, tokens[i * bs:(i + 1) * bs])
        entries.append(e)
        h, parent = e.hash, e.entry_id
    return entries


def test_match_stops_at_the_first_miss_and_respects_the_limit():
    c = PrefixCache(2)
    fill(c, [1, 2, 3, 4, 5, 6], [10, 11, 12])
    assert [e.block for e in c.match([1, 2, 3, 4, 5, 6, 7])] == [10, 11, 12]
    assert [e.block for e in c.match([1, 2, 3, 4, 5, 6], max_blocks=2)] == [10, 11]
    assert [e.block for e in c.match([1, 2, 9, 4, 5, 6])] == [10]            # the chain breaks at block 1
    assert c.match([3, 4, 5, 6]) == []                                         # block 1's tokens, wrong position


def test_duplicate_registration_returns_the_existing_entry():
    c = PrefixCache(2)
    (e,) = fill(c, [1, 2], [10])
    again = c.register(20, ROOT_HASH, ROOT_ENTRY, [1, 2])
    assert again is e and 20 not in c and len(c) == 1


def test_every_hash_colliding_still_verifies():
    c = PrefixCache(2, hash_fn=lambda parent, tokens: 42)
    fill(c, [1, 2, 3, 4], [10, 11])
    fill(c, [5, 6, 3, 4], [20, 21])
    assert [e.block for e in c.match([1, 2, 3, 4])] == [10, 11]
    assert [e.block for e in c.match([5, 6, 3, 4])] == [20, 21]               # same 2nd block tokens, other parent
    assert c.match([7, 8]) == [] and c.collisions > 0


def test_lru_eviction_order_and_descendants():
    c = PrefixCache(1)
    a = fill(c, [1, 2, 3], [10, 11, 12])
    b = fill(c, [7, 8], [20, 21])
    for blk in (12, 11, 10, 21, 20):                                           # released tail first, a before b
        c.release(blk)
    c.acquire(20)                                                              # b's head is in use again
    victim, freed = c.evict()
    assert victim == 12 and freed == [] and [e.block for e in c.match([1, 2, 3])] == [10, 11]
    c.evictable.move_to_end(10, last=False)
    victim, freed = c.evict()                                                  # a's head: 11 goes with it
    assert victim == 10 and freed == [11] and c.match([1, 2, 3]) == []
    assert [e.block for e in c.match([7, 8])] == [20, 21]
    assert c.evictions == 2 and list(c.evictable) == [21]


def test_register_after_parent_was_evicted_is_refused():
    c = PrefixCache(1)
    (a,) = fill(c, [1], [10])
    c.release(10)
    c.evict()
    assert c.register(11, a.hash, a.entry_id, [2]) is None and 11 not in c


# ---- with the model: a hit returns exactly what a fresh prefill computes ---------------------------
def test_prefix_hit_kv_equals_a_fresh_prefill(model64):
    """Request B reuses A's cached system-prompt blocks; its K/V for those positions equal a
    fresh prefill of B alone, and its logits equal the reference store's."""
    model = model64
    system = list(b"You are terse. Answer in one word. ")           # 35 tokens: 4 full blocks of 8
    a, b = system + list(b"Sky?"), system + list(b"Grass?")

    def prefill(store, seq_id, tokens):
        hit = store.add(seq_id, tokens, 64)
        store.grow(seq_id, len(tokens))
        ctx = store.step_context([(seq_id, len(tokens) - hit)])
        ids = torch.tensor([tokens[hit:]])
        logits = model.forward_ctx(ids, ctx.positions(), ctx)
        ctx.commit()
        return hit, logits[0, -1]

    paged = PagedKVStore.for_model(model, num_blocks=32, block_size=8, prefix_caching=True)
    with torch.no_grad():
        prefill(paged, 0, a)
        paged.free(0)                                                 # A is gone; its full blocks stay cached
        hit, last = prefill(paged, 1, b)
        fresh = ReferenceKVStore.for_model(model)
        _, ref_last = prefill(fresh, 1, b)
    assert hit == 32
    for layer in range(model.config.num_hidden_layers):
        K, V = paged.read(layer, 1, len(b))
        rK, rV = fresh.read(layer, 1, len(b))
        torch.testing.assert_close(K, rK, atol=1e-12, rtol=0)
        torch.testing.assert_close(V, rV, atol=1e-12, rtol=0)
    torch.testing.assert_close(last, ref_last, atol=1e-10, rtol=0)
