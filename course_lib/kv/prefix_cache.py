"""Prefix caching: reuse the keys and values of prompt blocks another request already computed.

Many requests start the same way: a system prompt, few-shot examples, the
earlier turns of a chat. Their keys and values for that shared start are
identical (a token's K/V depend only on it and the tokens before it), so a
paged store can keep FULL blocks after their request finishes and hand them
to the next request with the same prefix, which then skips that prefill.

How a block is found (vLLM v1 does the same):

    hash_0 = block_hash(ROOT, tokens[0:bs])
    hash_i = block_hash(hash_{i-1}, tokens[i*bs:(i+1)*bs])      a CHAINED hash

so equal hashes mean "same tokens AND same everything before them", and a
request's prompt maps to a chain of lookups that stops at the first miss.
Only full blocks are cached: a partial block will still be written.

A hash is only an index, never the proof. Each cached block keeps its tokens
and the identity of its parent entry; a hit is accepted only when the tokens
are equal and the parent is the entry matched one block earlier, so a hash
collision can cost a miss but never returns someone else's keys and values.

Lifetime: a cached block in use by a request has a reference count > 0. When
the count drops to 0 it stays cached but becomes EVICTABLE; the store takes
evictable blocks, least recently used first, only when its free list is
empty. Evicting a block also un-caches its descendants (their chain is broken).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from course_lib.validate import check_callable, check_int, check_ints

ROOT_HASH = 0          # the "parent hash" of a prompt's first block
ROOT_ENTRY = 0         # the "parent entry" of a prompt's first block


def block_hash(parent_hash: int, tokens: Sequence[int]) -> int:
    """The chained hash of one full block: a 64-bit hash of (parent hash, the block's tokens).

    Python's hash of a tuple of ints is deterministic (PYTHONHASHSEED only affects
    str and bytes), so the same prompt gives the same hashes in every process.
    """
    return hash((parent_hash, tuple(int(t) for t in tokens))) & 0xFFFF_FFFF_FFFF_FFFF


def prefix_block_hashes(tokens: Sequence[int], block_size: int,
                        hash_fn: Callable[[int, Sequence[int]], int] = block_hash) -> list[int]:
    """One chained hash per FULL block of `tokens` (a trailing partial block gets none)."""
    check_int("block_size", block_size, 1)
    tokens = check_ints("tokens", tokens, 0)
    check_callable("hash_fn", hash_fn, "a function (parent_hash, tokens) -> int")
    hashes, h = [], ROOT_HASH
    for i in range(len(tokens) // block_size):
        h = hash_fn(h, tokens[i * block_size:(i + 1) * block_size])
        hashes.append(h)
    return hashes


@dataclass
class CacheEntry:
    """One cached block: where it is, what it holds, and whose child it is."""

    entry_id: int                 # unique per registration (a reused block gets a new id)
    block: int                    # physical block in the pool
    hash: int                     # chained hash (the index key)
    parent: int                   # entry_id of the previous block of the prefix (ROOT_ENTRY: none)
    tokens: tuple[int, ...]       # the block's tokens: what a hit is verified against
    children: set[int] = field(default_factory=set)   # entry_ids of cached blocks that follow this one


class PrefixCache:
    """The index of cached full blocks, and the LRU list of evictable ones.

    The cache never allocates memory itself: the store tells it when a block
    has been filled (`register`), when a block's last user left (`release`)
    or came back (`acquire`), and asks it for a victim (`evict`).
    """

    def __init__(self, block_size: int, hash_fn: Callable[[int, Sequence[int]], int] = block_hash):
        self.block_size = check_int("block_size", block_size, 1)
        self.hash_fn = check_callable("hash_fn", hash_fn, "a function (parent_hash, tokens) -> int")
        self.by_hash: dict[int, list[CacheEntry]] = {}        # hash -> entries (a list: collisions happen)
        self.by_block: dict[int, CacheEntry] = {}             # block -> its entry
        self.by_id: dict[int, CacheEntry] = {}                # entry_id -> entry
        self.evictable: OrderedDict[int, None] = OrderedDict()   # blocks with no user, least recent first
        self._next_id = ROOT_ENTRY + 1
        self.evictions = 0
        self.collisions = 0       # lookups where the hash matched but the verification did not

    # ---- lookups ----------------------------------------------------------------
    def find(self, parent_hash: int, parent_entry: int, tokens: Sequence[int]) -> tuple[int, CacheEntry | None]:
        """The verified entry for `tokens` after `parent_entry`, if cached. Returns (hash, entry or None)."""
        tokens = tuple(int(t) for t in tokens)
        h = self.hash_fn(parent_hash, tokens)
        for e in self.by_hash.get(h, ()):
            if e.tokens == tokens and e.parent == parent_entry:
                return h, e
        if h in self.by_hash:
            self.collisions += 1
        return h, None

    def match(self, tokens: Sequence[int], max_blocks: int | None = None) -> list[CacheEntry]:
        """The longest chain of cached full blocks that starts `tokens` (at most max_blocks)."""
        bs = self.block_size
        n = len(tokens) // bs if max_blocks is None else min(max_blocks, len(tokens) // bs)
        out, h, parent = [], ROOT_HASH, ROOT_ENTRY
        for i in range(n):
            h, e = self.find(h, parent, tokens[i * bs:(i + 1) * bs])
            if e is None:
                break
            out.append(e)
            parent = e.entry_id
        return out

    def __contains__(self, block: int) -> bool:
        return block in self.by_block

    def __len__(self) -> int:
        return len(self.by_block)

    # ---- the store's notifications ----------------------------------------------------
    def register(self, block: int, parent_hash: int, parent_entry: int, tokens: Sequence[int]) -> CacheEntry | None:
        """Cache a block the store has just filled. If an equal block is already cached,
        that entry is returned and `block` stays uncached (a duplicate). None if the
        parent entry has been evicted meanwhile: the chain is broken, nothing is cached."""
        if parent_entry != ROOT_ENTRY and parent_entry not in self.by_id:
            return None
        h, existing = self.find(parent_hash, parent_entry, tokens)
        if existing is not None:
            return existing
        if block in self.by_block:
            raise ValueError(f"block: {block} is already cached with other contents")
        e = CacheEntry(self._next_id, block, h, parent_entry, tuple(int(t) for t in tokens))
        self._next_id += 1
        self.by_hash.setdefault(h, []).append(e)
        self.by_block[block] = e
        self.by_id[e.entry_id] = e
        if parent_entry in self.by_id:
            self.by_id[parent_entry].children.add(e.entry_id)
        return e

    def release(self, block: int) -> None:
        """The block's last user left: keep it cached, most recently used."""
        self.evictable[block] = None
        self.evictable.move_to_end(block)

    def acquire(self, block: int) -> None:
        """A request took the block again: it is no longer evictable."""
        self.evictable.pop(block, None)

    def evict(self) -> tuple[int, list[int]]:
        """Un-cache the least recently used evictable block. Returns (that block,
        descendants that were evictable too and are now plain free blocks)."""
        block, _ = self.evictable.popitem(last=False)
        self.evictions += 1
        freed = self.drop(block)
        return block, freed

    def drop(self, block: int) -> list[int]:
        """Un-cache `block` and its descendants. Returns the descendants that were
        evictable (no user): the store must put them on its free list."""
        freed: list[int] = []
        stack = [self.by_block[block]] if block in self.by_block else []
        while stack:
            e = stack.pop()
            self.by_block.pop(e.block, None)
            self.by_id.pop(e.entry_id, None)
            bucket = self.by_hash.get(e.hash, [])
            bucket[:] = [x for x in bucket if x is not e]
            if not bucket:
                self.by_hash.pop(e.hash, None)
            if e.parent in self.by_id:
                self.by_id[e.parent].children.discard(e.entry_id)
            if e.block != block and e.block in self.evictable:
                del self.evictable[e.block]
                freed.append(e.block)
            stack.extend(self.by_id[c] for c in e.children if c in self.by_id)
        return freed

    def blocks(self) -> Iterable[int]:
        return self.by_block.keys()
