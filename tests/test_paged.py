"""The paged KV store: blocks, block tables, reference counts, copy-on-write, swapping, prefix caching.

The core is a hypothesis state machine that runs random add / step / fork /
free / swap sequences against a shadow model that knows what every token's
keys and values must be, and checks after every operation that:

    - no block is held without a reference and every count equals the number of
      tables holding the block; nothing is free and held at once (check_invariants)
    - every live sequence reads back exactly its own keys and values (copy-on-write
      never lets one sequence's writes reach another's)
    - a prefix-cache hit returns exactly the keys and values a fresh prefill computes
      (small pools: cached blocks are evicted, a `pressure` rule forces it)
    - attention through the store's step context equals attention on the shadow copy
    - nothing leaks once every sequence is freed
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from course_lib.attention import causal_mask, reference_attention
from course_lib.kv.base import KVAllocationError
from course_lib.kv.paged import PagedKVStore, num_blocks_for, slot_of
from course_lib.paged_attention import kernel_available

LAYERS, NKV, NH, HD = 2, 2, 4, 4
IMPLS = ["gather", "kernel"] if kernel_available(torch.float64, HD, 1, NH, NKV) else ["gather"]


def kv_for(prefix: tuple[int, ...]) -> torch.Tensor:
    """What a model would store for the last token of `prefix`: (layers, 2, nkv, hd),
    a deterministic function of the whole prefix (as real K/V are)."""
    g = torch.Generator().manual_seed(hash(prefix) & 0x7FFF_FFFF)
    return torch.randn(LAYERS, 2, NKV, HD, generator=g, dtype=torch.float64)


def store(**kw) -> PagedKVStore:
    kw.setdefault("num_blocks", 8)
    kw.setdefault("block_size", 4)
    kw.setdefault("max_model_len", 256)
    return PagedKVStore(LAYERS, NKV, HD, dtype=torch.float64, **kw)


# ---- plain unit tests ----------------------------------------------------------------------
def test_bad_parameters_name_the_parameter_and_range():
    with pytest.raises(ValueError, match=r"block_size: must be an integer in \[1, 256\]; got 0"):
        store(block_size=0)
    with pytest.raises(ValueError, match="block_size"):
        store(block_size=257)
    with pytest.raises(ValueError, match="capacity: must be a multiple of block_size"):
        PagedKVStore(1, 1, 4, capacity=50, block_size=16)
    with pytest.raises(ValueError, match="exactly one"):
        PagedKVStore(1, 1, 4, capacity=64, num_blocks=4)
    with pytest.raises(ValueError, match="attention"):
        store(attention="fast")
    s = store()
    with pytest.raises(ValueError, match="max_len"):
        s.add(0, [1, 2], 0)
    with pytest.raises(ValueError, match="tokens"):
        s.add(0, [], 5)
    s.add(0, [1, 2], 5)
    with pytest.raises(ValueError, match="already"):
        s.add(0, [1], 5)
    with pytest.raises(ValueError, match="length"):
        s.grow(0, 0)
    with pytest.raises(ValueError, match="not in the store"):
        s.grow(7, 3)


def test_block_arithmetic():
    assert [num_blocks_for(n, 4) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]
    table = [7, 2, 5]
    assert [slot_of(table, p, 4) for p in (0, 3, 4, 9)] == [28, 31, 8, 21]


def test_blocks_are_allocated_on_demand_and_all_come_back():
    s = store(num_blocks=6, block_size=4)
    assert s.add(0, list(range(5)), 20) == 0          # 5 tokens: 2 blocks, nothing reserved for the output
    assert len(s.block_table(0)) == 2 and s.num_free_blocks() == 4
    s.grow(0, 8)
    assert len(s.block_table(0)) == 2                  # still fits
    s.grow(0, 9)
    assert len(s.block_table(0)) == 3
    s.add(1, [1, 2, 3], 10)
    s.check_invariants()
    s.free(0)
    s.free(1)
    assert s.num_free_blocks() == 6 and s.ref_count == [0] * 6
    s.check_invariants()


def test_out_of_blocks_is_an_error_with_no_fragmentation_and_no_leak():
    s = store(num_blocks=4, block_size=4, max_model_len=64)
    s.add(0, list(range(12)), 16)                      # 3 blocks
    with pytest.raises(KVAllocationError) as err:
        s.add(1, list(range(8)), 16)                   # needs 2, 1 free
    e = err.value
    assert (e.requested, e.largest_free, e.total_free) == (8, 4, 4)
    assert "external fragmentation" not in str(e)      # paging has none: largest free == total free
    assert 1 not in s.seqs and s.num_free_blocks() == 1
    s.grow(0, 16)
    with pytest.raises(KVAllocationError):
        s.grow(0, 17)
    s.check_invariants()


def test_usage_counts_unused_slots_of_last_blocks_as_internal():
    s = store(num_blocks=8, block_size=4)
    s.add(0, list(range(5)), 10)
    s.add(1, list(range(4)), 10)
    s.cached[0], s.cached[1] = 5, 4                    # as a replay records written tokens
    u = s.usage()
    assert (u.capacity, u.token_states, u.internal, u.reserved, u.external) == (32, 9, 3, 0, 0)
    assert u.free == 32 - 12


def test_write_read_roundtrip_across_blocks():
    s = store(num_blocks=8, block_size=3)
    s.add(0, list(range(7)), 10)
    k = torch.randn(7, NKV, HD, dtype=torch.float64)
    v = torch.randn(7, NKV, HD, dtype=torch.float64)
    s.write(1, 0, 0, k[:4], v[:4])
    s.write(1, 0, 4, k[4:], v[4:])
    K, V = s.read(1, 0, 7)
    assert torch.equal(K, k) and torch.equal(V, v)
    K0, _ = s.read(0, 0, 7)
    assert torch.count_nonzero(K0) == 0                # other layers untouched
    slots = s.slot_mapping(0, 0, 7)
    table = s.block_table(0)
    assert slots.tolist() == [slot_of(table, p, 3) for p in range(7)]


def test_fork_shares_then_copy_on_write_keeps_the_parent_intact():
    s = store(num_blocks=8, block_size=4)
    s.add(0, list(range(6)), 12)                       # 6 tokens: a full block + a half-full one
    k = torch.randn(6, NKV, HD, dtype=torch.float64)
    for layer in range(LAYERS):
        s.write(layer, 0, 0, k, -k)
    s.cached[0] = 6
    s.fork(0, 1)
    assert s.block_table(1) == s.block_table(0) and all(s.ref_count[b] == 2 for b in s.block_table(0))
    assert s.sharing() == {"logical_blocks": 4, "physical_blocks": 2, "saved_blocks": 2}
    s.grow(1, 7)                                       # the child will write position 6: block 1 is shared
    assert s.stats.cow_copies == 1
    assert s.block_table(1)[0] == s.block_table(0)[0] and s.block_table(1)[1] != s.block_table(0)[1]
    new = torch.randn(1, NKV, HD, dtype=torch.float64)
    s.write(0, 1, 6, new, new)
    K1, _ = s.read(0, 1, 7)
    K0, _ = s.read(0, 0, 6)
    assert torch.equal(K1[:6], k) and torch.equal(K1[6], new[0]) and torch.equal(K0, k)
    s.grow(0, 7)                                       # the parent's block is now its own: no copy
    assert s.stats.cow_copies == 1
    s.check_invariants()
    s.free(0)
    s.free(1)
    assert s.num_free_blocks() == 8
    s.check_invariants()


def test_write_into_a_shared_block_copies_even_without_grow():
    s = store(num_blocks=4, block_size=4)
    s.add(0, [1, 2], 8)
    s.write(0, 0, 0, torch.ones(2, NKV, HD, dtype=torch.float64), torch.ones(2, NKV, HD, dtype=torch.float64))
    s.cached[0] = 2
    s.fork(0, 1)
    s.write(0, 1, 2, torch.full((1, NKV, HD), 5.0, dtype=torch.float64), torch.zeros(1, NKV, HD, dtype=torch.float64))
    assert s.block_table(0) != s.block_table(1)
    assert torch.count_nonzero(s.read(0, 0, 3)[0][2]) == 0    # the parent's slot 2 was not touched


def test_swap_roundtrip_moves_blocks_and_keeps_data():
    s = store(num_blocks=6, block_size=4, swap_blocks=3)
    s.add(0, list(range(9)), 12)
    k = torch.randn(9, NKV, HD, dtype=torch.float64)
    for layer in range(LAYERS):
        s.write(layer, 0, 0, k * (layer + 1), -k)
    s.cached[0] = 9
    s.swap_out(0)
    assert s.num_free_blocks() == 6 and s.num_cached(0) == 9
    with pytest.raises(ValueError, match="swapped out"):
        s.grow(0, 10)
    s.add(1, list(range(16)), 20)                      # someone else uses the device blocks meanwhile
    s.free(1)
    s.add(2, [1], 4)
    s.swap_in(0)
    for layer in range(LAYERS):
        K, V = s.read(layer, 0, 9)
        assert torch.equal(K, k * (layer + 1)) and torch.equal(V, -k)
    s.check_invariants()
    s.free(2)
    s.swap_out(0)                                      # fills the CPU pool (3 blocks)
    s.add(3, list(range(5)), 16)
    with pytest.raises(KVAllocationError, match="CPU pool"):
        s.swap_out(3)
    assert 3 in s.seqs
    s.free(0)                                          # freeing a swapped sequence drops its CPU copy
    assert len(s.cpu_free) == 3
    s.check_invariants()


def test_swap_in_without_room_is_refused_and_keeps_the_copy():
    s = store(num_blocks=4, block_size=4)
    s.add(0, list(range(8)), 8)
    s.swap_out(0)
    s.add(1, list(range(16)), 16)
    with pytest.raises(KVAllocationError):
        s.swap_in(0)
    assert 0 in s.swapped
    s.free(1)
    s.swap_in(0)
    s.check_invariants()


# ---- the state machine -------------------------------------------------------------------
PREFIXES = [(1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 9, 9, 9, 9), (5, 5, 5)]


class PagedMachine(RuleBasedStateMachine):
    """Random traffic against a shadow copy of every sequence's tokens."""

    @initialize(bs=st.sampled_from([1, 2, 4]), blocks=st.integers(4, 12),
                prefix=st.sampled_from([True, True, False]), impl=st.sampled_from(IMPLS), collide=st.booleans())
    def setup(self, bs, blocks, prefix, impl, collide):
        kw = {"hash_fn": (lambda parent, tokens: 7)} if collide else {}   # every block hash collides
        self.s = PagedKVStore(LAYERS, NKV, HD, dtype=torch.float64, num_blocks=blocks, block_size=bs,
                              prefix_caching=prefix, swap_blocks=6, attention=impl, max_model_len=1000, **kw)
        self.tokens: dict[int, list[int]] = {}      # live (or swapped) seq -> its tokens so far
        self.next_id = 0

    # -- helpers
    def live(self):
        return sorted(self.s.seqs)

    def expect_kv(self, seq_id, layer, n):
        toks = tuple(self.tokens[seq_id])
        if n == 0:
            return torch.zeros(0, NKV, HD, dtype=torch.float64), torch.zeros(0, NKV, HD, dtype=torch.float64)
        rows = torch.stack([kv_for(toks[:p + 1])[layer] for p in range(n)])   # (n, 2, nkv, hd)
        return rows[:, 0], rows[:, 1]                              # (n, nkv, hd) each

    def assert_reads(self, seq_id):
        n = self.s.num_cached(seq_id)
        for layer in range(LAYERS):
            K, V = self.s.read(layer, seq_id, n)
            eK, eV = self.expect_kv(seq_id, layer, n)
            assert torch.equal(K, eK) and torch.equal(V, eV), f"sequence {seq_id} reads wrong K/V"

    # -- rules
    @rule(which=st.integers(0, len(PREFIXES) - 1), suffix=st.lists(st.integers(0, 3), max_size=10),
          extra=st.integers(0, 8))
    def add(self, which, suffix, extra):
        prompt = list(PREFIXES[which]) + suffix
        seq_id, self.next_id = self.next_id, self.next_id + 1
        free_before = self.s.num_free_blocks()
        try:
            hit = self.s.add(seq_id, prompt, len(prompt) + extra)
        except KVAllocationError:
            assert seq_id not in self.s.seqs and self.s.num_free_blocks() == free_before
            return
        assert 0 <= hit <= len(prompt) - 1 and hit % self.s.block_size == 0
        if self.s.prefix_cache is None:
            assert hit == 0
        self.tokens[seq_id] = prompt
        self.assert_reads(seq_id)                          # a hit reads exactly a fresh prefill's K/V

    @precondition(lambda self: self.s.prefix_cache is not None and self.s.prefix_cache.evictable)
    @rule(extra=st.integers(1, 2))
    def pressure(self, extra):
        """A newcomer that needs more blocks than are free: cached blocks must be evicted."""
        bs, free = self.s.block_size, len(self.s.free_blocks)
        need = min(free + extra, self.s.num_free_blocks())
        prompt = [100 + self.next_id] + [6] * (need * bs - 1)            # a prompt no cached chain starts
        seq_id, self.next_id = self.next_id, self.next_id + 1
        before = self.s.stats.evictions
        hit = self.s.add(seq_id, prompt, len(prompt))
        assert hit == 0 and self.s.stats.evictions > before
        self.tokens[seq_id] = prompt

    @precondition(lambda self: self.s.seqs)
    @rule(data=st.data())
    def step(self, data):
        """One packed step: 1-3 sequences each compute their next 1-4 tokens."""
        picks = data.draw(st.lists(st.sampled_from(self.live()), min_size=1, max_size=3, unique=True))
        batch = []
        for seq_id in picks:
            n = data.draw(st.integers(1, 4))
            start = self.s.num_cached(seq_id)
            while len(self.tokens[seq_id]) < start + n:    # past the prompt: "generated" tokens
                self.tokens[seq_id].append(data.draw(st.integers(0, 3)))
            try:
                self.s.grow(seq_id, start + n)
            except KVAllocationError:
                continue
            batch.append((seq_id, n))
        if not batch:
            return
        ctx = self.s.step_context(batch)
        g = torch.Generator().manual_seed(len(self.tokens))
        for layer in range(LAYERS):
            rows_k, rows_v, qs = [], [], []
            for (seq_id, n), start in zip(batch, ctx.starts):
                toks = tuple(self.tokens[seq_id])
                new = torch.stack([kv_for(toks[:p + 1])[layer] for p in range(start, start + n)])  # (n, 2, nkv, hd)
                rows_k.append(new[:, 0])
                rows_v.append(new[:, 1])
            q = torch.randn(1, sum(n for _, n in batch), NH, HD, generator=g, dtype=torch.float64)
            out = ctx.attend(layer, q, torch.cat(rows_k)[None], torch.cat(rows_v)[None])      # (1, N, nh, hd)
            offset = 0
            for (seq_id, n), start in zip(batch, ctx.starts):     # the same attention on the shadow copy
                K, V = self.expect_kv(seq_id, layer, start + n)
                ref = reference_attention(q[0, offset:offset + n].transpose(0, 1)[None], K.transpose(0, 1)[None],
                                          V.transpose(0, 1)[None], causal_mask(n, start + n))[0].transpose(0, 1)
                torch.testing.assert_close(out[0, offset:offset + n], ref, atol=1e-10, rtol=1e-10)
                offset += n
        ctx.commit()
        for seq_id, _ in batch:
            self.assert_reads(seq_id)

    @precondition(lambda self: self.s.seqs)
    @rule(data=st.data())
    def fork(self, data):
        parent = data.draw(st.sampled_from(self.live()))
        child, self.next_id = self.next_id, self.next_id + 1
        self.s.fork(parent, child)
        self.tokens[child] = list(self.tokens[parent][:self.s.num_cached(parent)])
        self.assert_reads(child)

    @precondition(lambda self: self.s.seqs or self.s.swapped)
    @rule(data=st.data())
    def free(self, data):
        seq_id = data.draw(st.sampled_from(sorted(self.tokens)))
        self.s.free(seq_id)
        del self.tokens[seq_id]

    @precondition(lambda self: self.s.seqs)
    @rule(data=st.data())
    def swap_out(self, data):
        seq_id = data.draw(st.sampled_from(self.live()))
        try:
            self.s.swap_out(seq_id)
        except KVAllocationError:
            assert seq_id in self.s.seqs
            return
        assert seq_id in self.s.swapped

    @precondition(lambda self: self.s.swapped)
    @rule(data=st.data())
    def swap_in(self, data):
        seq_id = data.draw(st.sampled_from(sorted(self.s.swapped)))
        try:
            self.s.swap_in(seq_id)
        except KVAllocationError:
            assert seq_id in self.s.swapped
            return
        self.assert_reads(seq_id)

    # -- invariants
    @invariant()
    def bookkeeping(self):
        if hasattr(self, "s"):
            self.s.check_invariants()
            assert set(self.tokens) == set(self.s.seqs) | set(self.s.swapped)

    @invariant()
    def everyone_reads_their_own(self):
        if hasattr(self, "s"):
            for seq_id in self.s.seqs:
                self.assert_reads(seq_id)

    def teardown(self):
        if not hasattr(self, "s"):
            return
        for seq_id in list(self.tokens):
            self.s.free(seq_id)
        self.s.check_invariants()
        assert all(c == 0 for c in self.s.ref_count), "a block is still referenced after every request left"
        assert self.s.num_free_blocks() == self.s.num_blocks, "a block leaked"
        assert len(self.s.cpu_free) == self.s.swap_blocks, "a CPU block leaked"
        assert self.s.usage().token_states == 0


PagedMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
TestPagedMachine = PagedMachine.TestCase


# ---- prefix caching through the store ----------------------------------------------------------
def prefill(s: PagedKVStore, seq_id: int, tokens, upto: int | None = None):
    """Compute (fake) K/V for tokens[cached:upto] in one step, as a model would."""
    start, end = s.num_cached(seq_id), len(tokens) if upto is None else upto
    s.grow(seq_id, end)
    ctx = s.step_context([(seq_id, end - start)])
    for layer in range(LAYERS):
        new = torch.stack([kv_for(tuple(tokens[:p + 1]))[layer] for p in range(start, end)])   # (n, 2, nkv, hd)
        ctx.attend(layer, torch.zeros(1, end - start, NH, HD, dtype=torch.float64), new[None, :, 0], new[None, :, 1])
    ctx.commit()


def test_prefix_hit_skips_full_blocks_only_and_reads_the_same_kv():
    s = store(num_blocks=12, block_size=4, prefix_caching=True)
    system = list(range(10))                                # 2 full blocks + 2 tokens
    a = system + [50, 51]
    s.add(0, a, 20)
    prefill(s, 0, a)
    b = system + [60, 61, 62]
    assert s.add(1, b, 20) == 8                            # the 2 full blocks of the shared prefix
    assert s.block_table(1)[:2] == s.block_table(0)[:2]
    K, V = s.read(0, 1, 8)
    assert torch.equal(K, torch.stack([kv_for(tuple(b[:p + 1]))[0, 0] for p in range(8)]))
    assert s.stats.hit_tokens == 8 and s.stats.lookup_tokens == len(a) - 1 + len(b) - 1
    assert s.add(2, system[:8], 9) == 4                    # at most len - 1: the last block is recomputed
    assert s.add(3, [99] + system, 20) == 0                # same tokens, shifted: a different chain
    s.check_invariants()


def test_cached_blocks_outlive_their_request_and_are_evicted_lru():
    s = store(num_blocks=7, block_size=2, prefix_caching=True)
    old, new = [1, 1, 1, 1, 7], [2, 2, 2, 2, 7]           # 2 full blocks + 1 partial each
    s.add(0, old, 5)
    prefill(s, 0, old)
    s.free(0)
    s.add(1, new, 5)
    prefill(s, 1, new)
    s.free(1)
    assert len(s.prefix_cache) == 4 and len(s.free_blocks) == 3 and s.num_free_blocks() == 7
    s.add(2, [3] * 7, 7)                                  # 4 blocks: 3 free + 1 evicted: the older request's tail
    assert s.stats.evictions == 1
    assert s.add(3, new, 5) == 4                          # the newer request's blocks survived
    s.free(3)
    assert s.add(4, old, 5) == 0                          # the older one's chain is broken
    s.check_invariants()


def test_evicting_a_block_uncaches_its_descendants():
    s = store(num_blocks=6, block_size=2, prefix_caching=True)
    toks = [4, 4, 5, 5, 6, 6, 1]                          # 3 full blocks (cached) + 1 partial
    s.add(0, toks, 7)
    prefill(s, 0, toks)
    s.free(0)                                             # 3 free blocks, 3 cached evictable ones
    assert len(s.prefix_cache) == 3 and len(s.free_blocks) == 3
    head = s.prefix_cache.match(toks)[0].block
    s.prefix_cache.evictable.move_to_end(head, last=False)   # make the chain's head the LRU victim
    s.add(1, [9] * 7, 8)                                  # 4 blocks: the 3 free + 1 evicted (the head)
    assert len(s.prefix_cache) == 0                       # its descendants cannot be found any more
    assert s.block_table(1)[-1] == head and len(s.free_blocks) == 2
    assert s.stats.evictions == 3
    assert s.prefix_cache.match(toks) == []
    s.check_invariants()


def test_a_colliding_hash_never_returns_wrong_kv():
    """With a hash that maps every block to the same value, hits are still verified."""
    s = store(num_blocks=12, block_size=2, prefix_caching=True, hash_fn=lambda parent, tokens: 0)
    a = [1, 2, 3, 4, 5]
    s.add(0, a, 5)
    prefill(s, 0, a)
    b = [1, 2, 9, 9, 5]                                   # same first block, different second
    assert s.add(1, b, 5) == 2
    assert s.prefix_cache.collisions >= 1
    prefill(s, 1, b)
    c = [3, 4, 1, 2, 0]                                   # a's blocks in another order: no hit at all
    assert s.add(2, c, 5) == 0
    for seq, toks in ((1, b),):
        K, _ = s.read(1, seq, 5)
        assert torch.equal(K, torch.stack([kv_for(tuple(toks[:p + 1]))[1, 0] for p in range(5)]))
    s.check_invariants()


def test_can_add_agrees_with_add():
    s = store(num_blocks=5, block_size=2, prefix_caching=True)
    toks = [1, 2, 3, 4, 5, 6, 7]
    s.add(0, toks, 8)
    prefill(s, 0, toks)
    s.free(0)                                             # 3 full blocks cached and evictable
    assert s.can_add(toks, 8) and s.can_add([9] * 10, 10) and not s.can_add([9] * 11, 11)
    s.add(1, toks, 8)                                     # takes 3 hits + 1 new block
    assert s.can_add([8, 8], 2) and not s.can_add([8] * 3, 3)
    s.check_invariants()


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=12), bs=st.sampled_from([1, 4, 16]))
def test_internal_fragmentation_is_under_one_block_per_sequence(lengths, bs):
    s = PagedKVStore(1, 1, 1, num_blocks=sum(num_blocks_for(n, bs) for n in lengths), block_size=bs)
    for i, n in enumerate(lengths):
        s.add(i, [0] * n, n)
        s.cached[i] = n
    u = s.usage()
    assert u.token_states == sum(lengths)
    assert u.internal == sum(-n % bs for n in lengths)          # the empty tail of each last block
    assert u.internal <= (bs - 1) * len(lengths)
    assert u.free == 0
