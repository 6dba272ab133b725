"""A paged KV cache: fixed-size blocks, block tables, reference counts (vLLM's PagedAttention).

The contiguous arena of lesson 02 gives each request one run of slots, sized
at admission for the longest it might get: most of it sits idle, and the holes
between runs are too small to use. Paging cuts memory into BLOCKS of
`block_size` token slots (16 by default, as in vLLM) and gives a request
blocks one at a time, as its tokens arrive, from anywhere in the pool:

    pool:         ONE preallocated tensor (num_layers, 2, num_blocks, nkv * hd * bs)
                  block b of layer l: keys pool[l, 0, b] viewed (nkv, hd, bs),
                  values pool[l, 1, b] viewed (nkv, bs, hd)  (see course_lib.paged_attention)
    free list:    block ids nobody holds
    ref counts:   how many block tables hold each block (sharing is allowed)
    block table:  per sequence, its blocks in logical order, like a page table:
                  token j lives in block table[j // bs], slot j % bs
    slot mapping: the flat slot of token j, table[j // bs] * bs + j % bs: where a
                  step writes each new token's keys and values

Only a sequence's LAST block can be partly empty, so the waste per request is
under one block (internal fragmentation) and there is no external
fragmentation at all: any free block serves any request.

Sharing, with reference counts:

    fork(parent, child)   the child's table is a copy of the parent's; every block's
                          count goes up: n continuations of one prompt (parallel
                          sampling) hold the prompt's blocks once
    copy-on-write         before a sequence writes into a block someone else also
                          holds, it gets its own copy of that block (`grow` does this,
                          so a step never runs out of memory half way)
    prefix caching        full blocks stay cached after their request ends and are
                          found again by a chained hash (course_lib.kv.prefix_cache)

Preemption by swapping: `swap_out` copies a sequence's blocks to a CPU pool
and frees them; `swap_in` brings them back into whichever blocks are free.

What the store assumes: the tokens given to `add` are the sequence's first
tokens, in order, and a step writes position p's keys and values only once
(the engine computes tokens in order). Blocks are cached only when they are
full and hold tokens the store knows; generated tokens the store never sees
are not cached, and a forked child inherits only its parent's computed tokens.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from course_lib.attention import sequence_attention
from course_lib.device import check_fits
from course_lib.fused_ops import write_kv
from course_lib.kv.base import KVAllocationError, KVStore, KVUsage, StepContext
from course_lib.kv.pool_views import BlockSegment, PoolSnapshot
from course_lib.kv.prefix_cache import ROOT_ENTRY, ROOT_HASH, PrefixCache, block_hash
from course_lib.paged_attention import (IMPLS, KernelCall, fast_impl, gather_kv, notice, paged_attention,
                                        unavailable_reason)
from course_lib.validate import check_bool, check_callable, check_choice, check_int, check_ints

MAX_BLOCK_SIZE = 256


def num_blocks_for(tokens: int, block_size: int) -> int:
    """Blocks needed to hold `tokens` tokens: ceil(tokens / block_size)."""
    return -(-tokens // block_size)


def slot_of(block_table: Sequence[int], position: int, block_size: int) -> int:
    """The flat slot of the token at `position`: its physical block times bs, plus its offset."""
    return block_table[position // block_size] * block_size + position % block_size


@dataclass
class _Seq:
    """What the store knows about one sequence."""

    table: list[int]                         # physical blocks in logical order
    tokens: list[int]                        # token ids known to the store (the prompt given to add)
    max_len: int
    room: int                                # tokens it has asked room for (add, grow)
    chain: tuple[int, int, int] = (ROOT_HASH, ROOT_ENTRY, 0)   # prefix-cache walk: (hash, entry, full blocks done)


@dataclass
class _Swapped:
    cpu_blocks: list[int]
    seq: _Seq
    cached: int


@dataclass
class PagedStats:
    """Counters a lesson reads (they only grow)."""

    lookup_tokens: int = 0       # prompt tokens looked up in the prefix cache (at most len - 1 each)
    hit_tokens: int = 0          # of those, found cached
    cow_copies: int = 0          # blocks copied on write
    swapped_out: int = 0         # blocks copied to the CPU pool
    swapped_in: int = 0          # blocks copied back
    evictions: int = 0           # cached blocks reclaimed

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.lookup_tokens if self.lookup_tokens else 0.0


class PagedKVStore(KVStore):
    """A block pool with per-sequence block tables.

    num_blocks:     blocks in the pool (or give `capacity` in token slots, a multiple of block_size)
    block_size:     token slots per block, in [1, 256] (vLLM's default: 16)
    max_model_len:  the longest sequence accepted (default: the whole pool)
    prefix_caching: keep full blocks for reuse by later requests with the same prefix
    swap_blocks:    blocks in the CPU pool used by swap_out (default: as many as the pool)
    attention:      'auto' (the device's fast kernel where it runs, else readable), 'kernel' (C, CPU),
                    'triton' (GPU), 'gather'
    hash_fn:        the prefix cache's block hash (tests pass a colliding one)
    """

    can_fork = True

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype = torch.float32,
                 device=None, num_blocks: int | None = None, block_size: int = 16, capacity: int | None = None,
                 max_model_len: int | None = None, prefix_caching: bool = False, swap_blocks: int | None = None,
                 attention: str = "auto", hash_fn: Callable = block_hash):
        super().__init__(num_layers, num_kv_heads, head_dim, dtype, device)
        block_size = check_int("block_size", block_size, 1, MAX_BLOCK_SIZE)
        if (num_blocks is None) == (capacity is None):
            raise ValueError("num_blocks/capacity: give exactly one of them (blocks, or token slots)")
        size_name = "num_blocks" if capacity is None else "capacity"
        if capacity is not None:
            capacity = check_int("capacity", capacity, block_size, note=f"a multiple of block_size ({block_size})")
            if capacity % block_size:
                raise ValueError(f"capacity: must be a multiple of block_size ({block_size}); got {capacity}")
            num_blocks = capacity // block_size
        num_blocks = check_int("num_blocks", num_blocks, 1)
        check_choice("attention", attention, IMPLS)
        prefix_caching = check_bool("prefix_caching", prefix_caching)
        check_callable("hash_fn", hash_fn, "a function (parent_hash, tokens) -> int")
        block_numel = num_kv_heads * head_dim * block_size
        check_fits(size_name, num_blocks if capacity is None else capacity,
                   num_layers * 2 * num_blocks * block_numel * self._itemsize(), self.device, "the block pool")
        self.block_size, self.num_blocks = block_size, num_blocks
        self.capacity = num_blocks * block_size
        self.max_model_len = check_int("max_model_len", self.capacity if max_model_len is None else max_model_len, 1)
        swap_blocks = check_int("swap_blocks", num_blocks if swap_blocks is None else swap_blocks, 0)
        check_fits("swap_blocks", swap_blocks, num_layers * 2 * swap_blocks * block_numel * self._itemsize(), "cpu",
                   "the CPU swap pool")
        self.attention = attention
        # The pool: every layer's keys and values, block by block.
        self.block_numel = num_kv_heads * head_dim * block_size
        self.pool = torch.zeros(num_layers, 2, num_blocks, self.block_numel, dtype=self.dtype,
                                device=self.device)                                  # (layers, 2, nb, nkv*hd*bs)
        self.free_blocks: deque[int] = deque(range(num_blocks))
        self.ref_count = [0] * num_blocks
        self.num_shared = 0                      # blocks held by more than one table
        self.seqs: dict[int, _Seq] = {}
        self.prefix_cache = PrefixCache(block_size, hash_fn) if prefix_caching else None
        # CPU pool for swapping, allocated on the first swap_out
        self.swap_blocks = swap_blocks
        self.cpu_pool: torch.Tensor | None = None
        self.cpu_free: deque[int] = deque(range(swap_blocks))
        self.swapped: dict[int, _Swapped] = {}
        self.stats = PagedStats()

    @classmethod
    def for_model(cls, model, **kwargs) -> "PagedKVStore":
        """A store shaped for `model`; max_model_len defaults to the model's context length
        or the whole pool, whichever is smaller (a longer request could never fit)."""
        store = super().for_model(model, **kwargs)
        if kwargs.get("max_model_len") is None:
            store.max_model_len = min(model.config.max_position_embeddings, store.capacity)
        return store

    def longest_sequence(self) -> int:
        """The most tokens one sequence can ever hold: max_model_len, or the whole pool if smaller."""
        return min(self.max_model_len, self.capacity)

    # ---- views into the pool ------------------------------------------------------
    def key_blocks(self, layer: int) -> torch.Tensor:
        """(num_blocks, nkv, hd, bs): layer's keys, transposed inside each block (a view)."""
        return self._views()[layer][0]

    def value_blocks(self, layer: int) -> torch.Tensor:
        """(num_blocks, nkv, bs, hd): layer's values (a view)."""
        return self._views()[layer][1]

    def _views(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every layer's (key_blocks, value_blocks) views of the pool, made once (every layer of
        every step asks for them) and again only if the pool tensor itself is replaced."""
        if getattr(self, "_viewed", None) is not self.pool:
            nb, nkv, hd, bs = self.num_blocks, self.num_kv_heads, self.head_dim, self.block_size
            self._layer_views = [(self.pool[layer, 0].view(nb, nkv, hd, bs), self.pool[layer, 1].view(nb, nkv, bs, hd))
                                 for layer in range(self.num_layers)]
            self._viewed = self.pool
        return self._layer_views

    @property
    def bytes_per_token(self) -> int:
        """Pool bytes of one token slot (keys + values of every layer)."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.pool.element_size()

    # ---- block bookkeeping --------------------------------------------------------
    def num_free_blocks(self) -> int:
        """Blocks an allocation can take now: free ones plus evictable cached ones."""
        return len(self.free_blocks) + (len(self.prefix_cache.evictable) if self.prefix_cache else 0)

    def _allocate(self) -> int:
        """Take a free block (evicting the least recently used cached one if none is free)."""
        if self.free_blocks:
            block = self.free_blocks.popleft()
        elif self.prefix_cache is not None and self.prefix_cache.evictable:
            block, also_freed = self.prefix_cache.evict()
            self.free_blocks.extend(also_freed)
            self.stats.evictions += 1 + len(also_freed)
        else:   # callers check num_free_blocks() first: reaching this is a bug
            raise KVAllocationError(self.block_size, 0, 0, detail="internal: no free block")
        self.ref_count[block] = 1
        return block

    def _hold(self, block: int) -> None:
        """One more table holds `block` (a fork, or a prefix-cache hit)."""
        if self.ref_count[block] == 0 and self.prefix_cache is not None:
            self.prefix_cache.acquire(block)
        self.ref_count[block] += 1
        self.num_shared += self.ref_count[block] == 2

    def _release(self, block: int) -> None:
        """One table lets go of `block`; at 0 it is free (or, if cached, evictable)."""
        self.ref_count[block] -= 1
        self.num_shared -= self.ref_count[block] == 1
        if self.ref_count[block] < 0:
            raise RuntimeError(f"block {block}: released more often than held")
        if self.ref_count[block] == 0:
            if self.prefix_cache is not None and block in self.prefix_cache:
                self.prefix_cache.release(block)
            else:
                self.free_blocks.append(block)

    def _refuse(self, blocks: int, what: str) -> KVAllocationError:
        free = self.num_free_blocks() * self.block_size
        # any free block serves any request: the largest free span IS the total free
        return KVAllocationError(blocks * self.block_size, free, free, detail=what)

    def _copy_block(self, src: int, dst: int) -> None:
        self.pool[:, :, dst] = self.pool[:, :, src]                 # (layers, 2, block_numel), every layer at once

    # ---- the engine's verbs ----------------------------------------------------------
    def _check_new(self, seq_id, tokens, max_len) -> None:
        if seq_id is not None:
            self._check_seq("seq_id", seq_id)
        if seq_id in self.seqs or seq_id in self.swapped:
            raise ValueError(f"seq_id: {seq_id} is already in the store")
        check_int("max_len", max_len, 1, self.max_model_len)
        n = len(check_ints("tokens", tokens, 0))  # token ids: integers, never truncated floats
        if not 1 <= n <= max_len:
            raise ValueError(f"tokens: the prompt must hold between 1 and max_len ({max_len}) tokens; got {n}")

    def _prefix_hit(self, tokens: Sequence[int]) -> list:
        """Cached entries for the leading full blocks of `tokens`, leaving >= 1 token to compute."""
        if self.prefix_cache is None:
            return []
        return self.prefix_cache.match(tokens, max_blocks=(len(tokens) - 1) // self.block_size)

    def _blocks_to_add(self, tokens, hits) -> tuple[int, int]:
        """(new blocks needed, blocks available once the hits are taken) for admitting `tokens`."""
        need = num_blocks_for(len(tokens), self.block_size) - len(hits)
        revived = sum(1 for e in hits if self.ref_count[e.block] == 0)   # hits sitting in the evictable list
        return need, self.num_free_blocks() - revived

    def can_add(self, tokens: Sequence[int], max_len: int) -> bool:
        self._check_new(None, tokens, max_len)
        self.sync_prefix_cache()
        need, available = self._blocks_to_add(tokens, self._prefix_hit(tokens))
        return need <= available

    def add(self, seq_id: int, tokens: Sequence[int], max_len: int) -> int:
        """Admit a sequence: take cached prefix blocks, allocate blocks for the rest of the
        prompt (nothing is reserved for the output). Returns the cached token count."""
        self._check_seq("seq_id", seq_id)
        self._check_new(seq_id, tokens, max_len)
        tokens = [int(t) for t in tokens]
        self.sync_prefix_cache()
        hits = self._prefix_hit(tokens)
        need, available = self._blocks_to_add(tokens, hits)
        if need > available:
            raise self._refuse(need, f"admitting sequence {seq_id}: a {len(tokens)}-token prompt needs {need} "
                                     f"blocks of {self.block_size}")
        for e in hits:
            self._hold(e.block)
        table = [e.block for e in hits] + [self._allocate() for _ in range(need)]
        hit = len(hits) * self.block_size
        chain = (hits[-1].hash, hits[-1].entry_id, len(hits)) if hits else (ROOT_HASH, ROOT_ENTRY, 0)
        self.seqs[seq_id] = _Seq(table, tokens, max_len, len(tokens), chain)
        self.cached[seq_id] = hit
        if self.prefix_cache is not None:
            self.stats.lookup_tokens += len(tokens) - 1
            self.stats.hit_tokens += hit
        return hit

    def _seq(self, seq_id: int, name: str = "seq_id") -> _Seq:
        if seq_id not in self.seqs:
            where = "swapped out" if seq_id in self.swapped else "not in the store"
            raise ValueError(f"{name}: {seq_id!r} is {where}")
        return self.seqs[seq_id]

    def _shared_in(self, seq: _Seq, start: int, end: int) -> list[int]:
        """Logical block indices in positions [start, end) that other tables also hold."""
        first, last = start // self.block_size, min(num_blocks_for(end, self.block_size), len(seq.table))
        return [i for i in range(first, last) if self.ref_count[seq.table[i]] > 1]

    def grow(self, seq_id: int, length: int) -> None:
        """Room for `length` tokens: new blocks on demand, and a private copy of every
        shared block the coming tokens will be written into (copy-on-write)."""
        seq = self._seq(seq_id)
        check_int("length", length, 1, self.max_model_len)
        new = max(0, -(-length // self.block_size) - len(seq.table))
        if new == 0 and length <= seq.room and not self.num_shared:
            return                                        # the common decode step: room already there
        cow = self._shared_in(seq, self.num_cached(seq_id), length) if self.num_shared else []
        if new + len(cow) > self.num_free_blocks():
            raise self._refuse(new + len(cow), f"sequence {seq_id} growing to {length} tokens needs {new} new "
                                               f"block(s) and {len(cow)} copy-on-write cop(ies)")
        for i in cow:
            self._copy_on_write(seq, i)
        for _ in range(new):
            seq.table.append(self._allocate())
        seq.room = max(seq.room, length)

    def _copy_on_write(self, seq: _Seq, i: int) -> None:
        """Give `seq` its own copy of its i-th block."""
        old = seq.table[i]
        new = self._allocate()
        self._copy_block(old, new)
        seq.table[i] = new
        self._release(old)
        self.stats.cow_copies += 1

    def free(self, seq_id: int) -> None:
        """Release every block; last block first, so cached tails are evicted before heads.
        Freeing an id that is not here (twice, or never added) raises ValueError."""
        if seq_id not in self.seqs and seq_id not in self.swapped:
            raise self._unknown(seq_id)
        self._register_full_blocks(seq_id)
        seq = self.seqs.pop(seq_id, None)
        if seq is not None:
            for b in reversed(seq.table):
                self._release(b)
        sw = self.swapped.pop(seq_id, None)
        if sw is not None:
            self.cpu_free.extend(sw.cpu_blocks)
        self.cached.pop(seq_id, None)

    # ---- sharing -----------------------------------------------------------------------
    def fork(self, parent_id: int, child_id: int) -> None:
        """The child shares all of the parent's blocks (counts go up; nothing is copied).
        The first of them to write into a shared block gets a copy (copy-on-write)."""
        parent = self._seq(parent_id, "parent_id")
        self._check_seq("child_id", child_id)
        if child_id in self.seqs or child_id in self.swapped:
            raise ValueError(f"child_id: {child_id} is already in the store")
        for b in parent.table:
            self._hold(b)
        n = self.num_cached(parent_id)
        # the child's tokens past the parent's computed ones are its own (unknown here): only
        # the computed ones may ever be registered in the prefix cache on the child's behalf
        self.seqs[child_id] = _Seq(list(parent.table), parent.tokens[:n], parent.max_len, parent.room, parent.chain)
        self.cached[child_id] = n

    # ---- reading and writing --------------------------------------------------------------
    def block_table(self, seq_id: int) -> list[int]:
        """A copy of the sequence's block table."""
        return list(self._seq(seq_id).table)

    def writable_slots(self, seq_id: int, start: int, n: int) -> tuple[list[int], list[int]]:
        """(block table, flat slots of positions start .. start+n-1) as plain lists, for a step
        about to write those positions: their blocks are made private first (copy-on-write; a
        no-op when `grow` already copied them). What a step's context needs for each sequence,
        without a tensor per sequence (slot_mapping gives the same slots as a tensor)."""
        self._ensure_private(seq_id, start, start + n)
        table, bs = list(self._seq(seq_id).table), self.block_size
        if start + n > len(table) * bs:
            raise ValueError(f"n: sequence {seq_id} has room for {len(table) * bs} tokens, not {start + n}; "
                             f"grow it first")
        return table, [slot_of(table, p, bs) for p in range(start, start + n)]

    def slot_mapping(self, seq_id: int, start: int, n: int) -> torch.Tensor:
        """(n,) flat slots of positions start .. start+n-1 (block * block_size + offset)."""
        seq = self._seq(seq_id)
        allocated = len(seq.table) * self.block_size
        check_int("start", start, 0, allocated, note=f"positions must lie in the sequence's {allocated} allocated slots")
        check_int("n", n, 0, allocated - start, note=f"positions must lie in the sequence's {allocated} allocated slots")
        pos = torch.arange(start, start + n)
        table = torch.tensor(seq.table, dtype=torch.long)
        return table[pos // self.block_size] * self.block_size + pos % self.block_size

    def _ensure_private(self, seq_id: int, start: int, end: int) -> None:
        """Copy-on-write for blocks about to be written that `grow` did not already copy."""
        seq = self._seq(seq_id)
        if not self.num_shared:
            return                                        # the common case: no block is shared, nothing to copy
        cow = self._shared_in(seq, start, end)
        if len(cow) > self.num_free_blocks():
            raise self._refuse(len(cow), f"copy-on-write for sequence {seq_id}")
        for i in cow:
            self._copy_on_write(seq, i)

    def write_slots(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    checked: bool = False) -> None:
        """Scatter k, v (n, nkv, hd) into flat `slots` (n,) of one layer (fused_ops.write_kv: one pass
        in C on the CPU). checked=True: the caller knows every slot is in [0, capacity)."""
        slots = slots.to(self.device)
        write_kv(k, v, slots, self.key_blocks(layer), self.value_blocks(layer), checked=checked)   # ValueError if not

    def write(self, layer: int, seq_id: int, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store k, v (n, nkv, hd) at positions start .. start+n-1 (through the slot mapping)."""
        self._ensure_private(seq_id, start, start + k.shape[0])
        self.write_slots(layer, self.slot_mapping(seq_id, start, k.shape[0]), k, v)

    def read(self, layer: int, seq_id: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(length, nkv, hd) keys and values, gathered from the sequence's blocks (copies)."""
        seq = self._seq(seq_id)
        check_int("layer", layer, 0, self.num_layers - 1)
        check_int("length", length, 0)
        if not 0 <= length <= len(seq.table) * self.block_size:
            raise ValueError(f"length: sequence {seq_id} has {len(seq.table) * self.block_size} slots; asked for {length}")
        return gather_kv(self.key_blocks(layer), self.value_blocks(layer), seq.table, length)

    def kv_view(self, layer: int, seq_id: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the first `length` tokens: COPIES (a sequence's tokens are
        scattered over blocks, so no single view exists); write through `write`."""
        return self.read(layer, seq_id, length)

    def step_context(self, batch: Sequence[tuple[int, int]]) -> "PagedStepContext":
        return PagedStepContext(self, list(batch))

    def resolved_attention(self, num_heads: int) -> str:
        """'kernel' (the C kernel, CPU), 'triton' (GPU) or 'gather': what a step runs for a
        model with `num_heads` query heads ('auto': the fast path of the store's device)."""
        if self.attention == "gather":
            return "gather"
        impl = fast_impl(self.device) if self.attention == "auto" else self.attention
        q = torch.empty(0, num_heads, self.head_dim, dtype=self.dtype, device=self.device)
        reason = unavailable_reason(impl, q, self.key_blocks(0) if self.num_layers else q)
        if reason is None:
            return impl
        if self.attention != "auto":
            raise RuntimeError(reason)
        notice(reason)
        return "gather"

    # ---- prefix caching: register blocks once they are full --------------------------------
    def sync_prefix_cache(self) -> None:
        """Register the full blocks of every sequence whose cached count moved without a
        step context (an allocation-only replay sets `cached` directly)."""
        if self.prefix_cache is not None:
            for seq_id, seq in self.seqs.items():
                if seq.chain[2] < min(self.num_cached(seq_id), len(seq.tokens)) // self.block_size:
                    self._register_full_blocks(seq_id)

    def _register_full_blocks(self, seq_id: int) -> None:
        """Cache every newly completed block whose tokens the store knows."""
        if self.prefix_cache is None or seq_id not in self.seqs:
            return
        seq, bs = self.seqs[seq_id], self.block_size
        h, entry, done = seq.chain
        full = min(self.num_cached(seq_id), len(seq.tokens)) // bs
        for i in range(done, full):
            e = self.prefix_cache.register(seq.table[i], h, entry, seq.tokens[i * bs:(i + 1) * bs])
            if e is None:                   # an ancestor was evicted: this chain cannot be found again
                break
            h, entry = e.hash, e.entry_id
        seq.chain = (h, entry, max(done, full))

    # ---- moving whole blocks to another pool (disaggregated serving) ---------------------------
    def same_block_layout(self, other) -> bool:
        """Can whole blocks of this pool be copied into `other`'s? (a paged store with the
        same block size, layers, block shape and dtype)"""
        return (isinstance(other, PagedKVStore) and other.block_size == self.block_size
                and other.pool.shape[0] == self.pool.shape[0] and other.pool.shape[-1] == self.pool.shape[-1]
                and other.pool.dtype == self.pool.dtype)

    def export_blocks(self, seq_id: int, n_tokens: int) -> torch.Tensor:
        """A copy of the blocks holding the first `n_tokens` tokens, in table order (the
        last one partly empty): (layers, 2, n_blocks, block_numel)."""
        table = self.block_table(seq_id)[: num_blocks_for(n_tokens, self.block_size)]
        ids = torch.tensor(table, dtype=torch.long, device=self.device)
        return self.pool[:, :, ids]                                           # (layers, 2, n_blocks, block_numel) copy

    def import_blocks(self, seq_id: int, data: torch.Tensor, first: int = 0) -> None:
        """Copy blocks first .. of `data` (layers, 2, n_blocks, block_numel), as export_blocks
        made them, into the sequence's blocks first .. (the first `first` it holds already:
        a prefix-cache hit). Its blocks must be there already: `grow` first."""
        table = self.block_table(seq_id)[first: data.shape[2]]
        ids = torch.tensor(table, dtype=torch.long, device=self.device)
        self.pool[:, :, ids] = data[:, :, first:first + len(table)].to(self.device)   # (layers, 2, nb, numel)

    # ---- preemption by swapping ----------------------------------------------------------------
    def swap_out(self, seq_id: int) -> None:
        """Copy the sequence's blocks to the CPU pool and free them on the device."""
        seq = self._seq(seq_id)
        n = len(seq.table)
        if n > len(self.cpu_free):
            room = len(self.cpu_free) * self.block_size
            raise KVAllocationError(n * self.block_size, room, room, detail=f"swapping out sequence {seq_id}: CPU pool full")
        if self.cpu_pool is None:
            self.cpu_pool = torch.zeros(self.num_layers, 2, self.swap_blocks, self.block_numel, dtype=self.dtype)
        cpu = [self.cpu_free.popleft() for _ in range(n)]
        src = torch.tensor(seq.table, dtype=torch.long, device=self.device)
        self.cpu_pool[:, :, cpu] = self.pool[:, :, src].to("cpu")           # (layers, 2, n, block_numel)
        for b in reversed(seq.table):
            self._release(b)
        del self.seqs[seq_id]
        self.swapped[seq_id] = _Swapped(cpu, seq, self.num_cached(seq_id))
        self.stats.swapped_out += n

    def swap_in(self, seq_id: int) -> None:
        """Bring a swapped sequence back into whichever blocks are free."""
        if seq_id not in self.swapped:
            raise ValueError(f"seq_id: {seq_id} is not swapped out")
        sw = self.swapped[seq_id]
        n = len(sw.cpu_blocks)
        if n > self.num_free_blocks():
            raise self._refuse(n, f"swapping sequence {seq_id} back in")
        table = [self._allocate() for _ in range(n)]
        dst = torch.tensor(table, dtype=torch.long, device=self.device)
        self.pool[:, :, dst] = self.cpu_pool[:, :, sw.cpu_blocks].to(self.device)
        self.cpu_free.extend(sw.cpu_blocks)
        del self.swapped[seq_id]
        sw.seq.table = table
        sw.seq.chain = (ROOT_HASH, ROOT_ENTRY, 0)       # its blocks are new: re-register (duplicates are skipped)
        self.seqs[seq_id] = sw.seq
        self.cached[seq_id] = sw.cached
        self.stats.swapped_in += n
        self._register_full_blocks(seq_id)

    # ---- accounting ------------------------------------------------------------------------------
    def block_fill(self) -> dict[int, int]:
        """Held block -> how many of its slots hold a token state (max over the tables holding it)."""
        fill: dict[int, int] = {}
        bs = self.block_size
        for seq_id, seq in self.seqs.items():
            n = self.num_cached(seq_id)
            for i, b in enumerate(seq.table):
                fill[b] = max(fill.get(b, 0), min(bs, max(0, n - i * bs)))
        return fill

    def usage(self) -> KVUsage:
        """Token slots: token_states (written, shared blocks once), internal (held slots
        without a token: the unused tail of last blocks). Evictable cached blocks count as free."""
        if self.num_shared == 0:        # the common case, in O(sequences): no block is counted twice
            tokens = sum(min(self.num_cached(i), len(s.table) * self.block_size) for i, s in self.seqs.items())
            held = sum(len(s.table) for s in self.seqs.values())
        else:
            fill = self.block_fill()
            tokens, held = sum(fill.values()), len(fill)
        return KVUsage(capacity=self.capacity, token_states=tokens, internal=held * self.block_size - tokens)

    def memory_map(self) -> list[BlockSegment]:
        """Every block in address order (runs of free blocks merged into one hole)."""
        fill = self.block_fill()
        owner: dict[int, int] = {}
        for seq_id, seq in self.seqs.items():
            for b in seq.table:
                owner.setdefault(b, seq_id)
        bs, segs = self.block_size, []
        cached = set(self.prefix_cache.blocks()) if self.prefix_cache else set()
        for b in range(self.num_blocks):
            if b in fill:
                segs.append(BlockSegment(b * bs, bs, owner[b], fill[b], 0, bs - fill[b], self.ref_count[b], b in cached))
            elif segs and segs[-1].seq_id is None and not segs[-1].cached and b not in cached:
                last = segs[-1]
                segs[-1] = last._replace(size=last.size + bs)
            else:
                segs.append(BlockSegment(b * bs, bs, None, 0, 0, 0, 0, b in cached))
        return segs

    def snapshot(self) -> PoolSnapshot:
        """The bookkeeping now, copied (for plots and widgets)."""
        pc = self.prefix_cache
        return PoolSnapshot(self.num_blocks, self.block_size, {i: list(s.table) for i, s in self.seqs.items()},
                            self.block_fill(), list(self.ref_count), frozenset(pc.blocks()) if pc else frozenset(),
                            tuple(pc.evictable) if pc else (), len(self.free_blocks))

    def mark_computed(self, seq_id: int, n: int) -> None:
        """Record that the first `n` tokens' K/V are written (an allocation-only simulation
        does this instead of running the model); full blocks enter the prefix cache."""
        seq = self._seq(seq_id)
        check_int("n", n, 0, len(seq.table) * self.block_size, note="the sequence's allocated slots")
        self.cached[seq_id] = n
        self._register_full_blocks(seq_id)

    def sharing(self) -> dict[str, int]:
        """Blocks the tables name in total vs physical blocks held: what sharing saves."""
        logical = sum(len(s.table) for s in self.seqs.values())
        evictable = len(self.prefix_cache.evictable) if self.prefix_cache else 0
        physical = self.num_blocks - len(self.free_blocks) - evictable          # every other block is held
        return {"logical_blocks": logical, "physical_blocks": physical, "saved_blocks": logical - physical}

    def check_invariants(self) -> None:
        """Raise AssertionError if the bookkeeping is inconsistent (the property tests call this)."""
        counts = [0] * self.num_blocks
        for seq in self.seqs.values():
            assert len(set(seq.table)) == len(seq.table), "a table names a block twice"
            for b in seq.table:
                counts[b] += 1
        assert counts == self.ref_count, "reference counts differ from the tables holding each block"
        assert self.num_shared == sum(1 for c in counts if c > 1), "the shared-block counter is off"
        free = list(self.free_blocks)
        assert len(set(free)) == len(free), "a block is on the free list twice"
        evictable = set(self.prefix_cache.evictable) if self.prefix_cache else set()
        for b in free:
            assert self.ref_count[b] == 0, f"block {b} is free but held"
            assert b not in evictable, f"block {b} is both free and evictable"
            assert self.prefix_cache is None or b not in self.prefix_cache, f"free block {b} is still cached"
        for b in evictable:
            assert self.ref_count[b] == 0 and b in self.prefix_cache, f"evictable block {b} is held or uncached"
        held = sum(1 for c in self.ref_count if c > 0)
        assert held + len(free) + len(evictable) == self.num_blocks, "a block is lost (neither held, free nor cached)"
        cpu = sum(len(s.cpu_blocks) for s in self.swapped.values())
        assert cpu + len(self.cpu_free) == self.swap_blocks, "a CPU block is lost"
        for seq_id, seq in self.seqs.items():
            assert self.num_cached(seq_id) <= len(seq.table) * self.block_size, f"sequence {seq_id} cached past its blocks"

    def __repr__(self) -> str:
        return (f"PagedKVStore({self.num_blocks} blocks of {self.block_size}, {len(self.seqs)} sequences, "
                f"{self.num_free_blocks()} blocks free" + (", prefix caching" if self.prefix_cache else "") + ")")


class PagedStepContext(StepContext):
    """One packed step on the paged pool.

    Built once per step (shared by every layer): the slot of every new token,
    and for every new token a row of (block table, context length). Per layer:
    scatter the new keys/values into their slots, then paged attention over the
    pool: the fast kernel (C on the CPU, Triton on a GPU) reads the blocks in place;
    the readable path gathers each sequence's blocks and runs causal SDPA. The C
    kernel is prepared (checked, its tables converted) at the first layer and reused
    by the others (paged_attention.KernelCall).
    """

    def __init__(self, store: PagedKVStore, batch: list[tuple[int, int]]):
        super().__init__(store, batch)
        self.impl: str | None = None            # decided at the first layer, once q's heads are known
        slots, lens, counts, tables = [], [], [], []
        self.tables: dict[int, list[int]] = {}                       # seq_id -> its block table
        for (seq_id, n), start in zip(batch, self.starts):
            self.tables[seq_id], seq_slots = store.writable_slots(seq_id, start, n)
            tables.append(self.tables[seq_id])
            slots += seq_slots
            counts.append(n)
            lens += range(start + 1, start + n + 1)                   # query at position p sees p + 1 keys
        dev = store.device
        self.slots = torch.tensor(slots, dtype=torch.long, device=dev)                             # (N,)
        width = max((len(t) for t in tables), default=0)
        # the kernel reads raw memory: every id a row reads must be a block of the pool (the store's own
        # tables, so this holds by construction; checked here once, in Python, for the whole step)
        if tables and not 0 <= min(min(t, default=0) for t in tables) <= max(max(t, default=0) for t in tables) \
                < store.num_blocks:
            raise RuntimeError(f"a block table holds an id outside the pool of {store.num_blocks} blocks")
        seq_tables = torch.tensor([t + [0] * (width - len(t)) for t in tables],
                                  dtype=torch.long, device=dev).reshape(len(batch), width)         # (S, max_blocks)
        if all(n == 1 for n in counts):                               # decode only: one row per sequence
            self.block_tables = seq_tables                                                         # (N, max_blocks)
        else:                                                         # each new token's row: its sequence's table
            self.block_tables = seq_tables.repeat_interleave(torch.tensor(counts, device=dev), dim=0)
        self.context_lens = torch.tensor(lens, dtype=torch.long, device=dev)                       # (N,)
        self.kernel: KernelCall | None = None   # the C kernel prepared for this step's rows (CPU fast path)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (1, N, nh, hd); k, v (1, N, nkv, hd) -> (1, N, nh, hd)."""
        store: PagedKVStore = self.store
        store.write_slots(layer, self.slots, k[0], v[0], checked=True)     # the store's own slots: in range
        kb, vb = store.key_blocks(layer), store.value_blocks(layer)
        dtype, q = q.dtype, q[0] if q.dtype is store.dtype else q[0].to(store.dtype)   # q: (N, nh, hd)
        if self.impl is None:
            self.impl = store.resolved_attention(q.shape[1])
            if self.impl == "kernel":      # checked and prepared once; every layer reuses it
                self.kernel = self._fast_path(lambda: KernelCall(q, kb, vb, self.block_tables, self.context_lens,
                                                                    checked=True))
        if self.kernel is not None:
            out = self._fast_path(lambda: self.kernel(q, kb, vb))
            if out is not None:
                return (out if out.dtype is dtype else out.to(dtype))[None]       # (1, N, nh, hd)
        if self.impl != "gather":     # 'auto': a kernel failing at run time falls back to gather, with a notice
            out = paged_attention(q, kb, vb, self.block_tables, self.context_lens, impl=store.attention)
            return out.to(dtype)[None]                                            # (1, N, nh, hd)
        out = torch.empty_like(q)
        offset = 0
        for (seq_id, n), start in zip(self.batch, self.starts):
            K, V = gather_kv(kb, vb, self.tables[seq_id], start + n)               # (L, nkv, hd) copies
            out[offset:offset + n] = sequence_attention(q[offset:offset + n], K, V)   # (n, nh, hd)
            offset += n
        return out.to(dtype)[None]

    def _fast_path(self, run: Callable):
        """run(); if the kernel cannot run (RuntimeError) and the store's attention is 'auto',
        say so once and switch this step to the gather path (returns None); else raise."""
        try:
            return run()
        except RuntimeError as exc:
            if self.store.attention != "auto":
                raise
            notice(str(exc) or type(exc).__name__)
            self.impl, self.kernel = "gather", None
            return None

    def commit(self) -> None:
        """The new tokens' keys and values are written: each sequence's cached length moves on,
        and the blocks they filled enter the prefix cache (mark_computed)."""
        for (seq_id, n), start in zip(self.batch, self.starts):
            self.store.mark_computed(seq_id, start + n)
