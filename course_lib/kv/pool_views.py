"""What the plots read about a paged pool: copies of its bookkeeping, not the pool itself.

    BlockSegment   one block (or a run of free ones) in a memory map, with the same fields
                   as lesson 02's MapSegment, so one plot draws either kind of store
    PoolSnapshot   every table, fill, reference count and cached block at one moment
                   (PagedKVStore.snapshot())
    PoolCounts     blocks by state at one moment: held, shared, cached, free
    pool_counts    PoolCounts from a memory map (the snapshots a replay records)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class BlockSegment(NamedTuple):
    """One block of the pool in a memory map (a hole: seq_id None). Same fields as
    lesson 02's MapSegment, so its plots can draw a paged pool too."""

    start: int
    size: int
    seq_id: int | None
    token_states: int = 0
    reserved: int = 0
    internal: int = 0
    shared: int = 1            # block tables holding this block
    cached: bool = False       # in the prefix cache


@dataclass(frozen=True)
class PoolSnapshot:
    """A copy of the pool's bookkeeping at one moment (what the plots draw)."""

    num_blocks: int
    block_size: int
    tables: dict[int, list[int]]     # seq_id -> its blocks
    fill: dict[int, int]             # held block -> slots holding a token state
    ref_count: list[int]
    cached: frozenset[int]           # blocks in the prefix cache (held or evictable)
    cached_free: tuple[int, ...]     # evictable cached blocks, least recently used first
    free: int                        # blocks on the free list

    @property
    def held(self) -> int:
        return sum(1 for c in self.ref_count if c > 0)

    @property
    def shared(self) -> int:
        return sum(1 for c in self.ref_count if c > 1)

    def counts(self) -> "PoolCounts":
        return PoolCounts(self.num_blocks, self.held, self.shared, len(self.cached_free), self.free)


class PoolCounts(NamedTuple):
    """Blocks by state at one moment: held (by one table or more), shared (by several),
    cached (no owner, kept for reuse: evictable), free."""

    num_blocks: int
    held: int
    shared: int
    cached: int
    free: int


def pool_counts(segments, block_size: int, num_blocks: int) -> PoolCounts:
    """PoolCounts from a PagedKVStore.memory_map() (e.g. the snapshots a replay records)."""
    held = shared = cached = free = 0
    for seg in segments:
        n = seg.size // block_size
        if seg.seq_id is not None:
            held += n
            shared += n if seg.shared > 1 else 0
        elif seg.cached:
            cached += n
        else:
            free += n
    return PoolCounts(num_blocks, held, shared, cached, free)
