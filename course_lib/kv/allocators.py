"""Placing variable-sized slabs in one arena: first-fit, best-fit and buddy.

The arena is a row of `capacity` token slots. A slab is a run of consecutive
slots [start, start + size). A hole is a run of free slots. The allocators
here only do the arithmetic of addresses; `contiguous.py` puts a tensor behind it.

    first-fit  the lowest-addressed hole that is big enough (fast, simple)
    best-fit   the smallest hole that is big enough (keeps big holes big)
    buddy      sizes rounded up to powers of two; a block splits into two
               "buddies" and merges back only with its own buddy
               (what the vLLM paper assumes its Orca baselines use)

All three fail the same way: when no single hole (buddy: no free block) is
large enough, even if the holes together are. That is external fragmentation.

The pure functions (`first_fit`, `best_fit`, `insert_hole`) work on a list of
(start, size) holes sorted by address; the exercise asks for the same ones.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from typing import Iterable, Literal, get_args

from course_lib.validate import check_choice, check_int

Hole = tuple[int, int]          # (start, size)
Placement = Literal["first-fit", "best-fit", "buddy"]
PLACEMENTS: tuple[str, ...] = get_args(Placement)


def _check_size(size: int, name: str = "size") -> None:
    check_int(name, size, 1)


def _take(holes: list[Hole], i: int, size: int) -> tuple[int, list[Hole]]:
    """Carve `size` slots off the front of hole i; drop the hole if it is used up."""
    start, hole = holes[i]
    rest = holes[:i] + ([(start + size, hole - size)] if hole > size else []) + holes[i + 1:]
    return start, rest


def first_fit(holes: list[Hole], size: int) -> tuple[int, list[Hole]] | None:
    """Place `size` slots in the first (lowest-address) hole that fits.

    holes: (start, size) pairs sorted by start, no two touching.
    returns (start of the slab, the holes left) or None if no hole is big enough.
    """
    _check_size(size)
    for i, (_, hole) in enumerate(holes):
        if hole >= size:
            return _take(list(holes), i, size)
    return None


def best_fit(holes: list[Hole], size: int) -> tuple[int, list[Hole]] | None:
    """Place `size` slots in the smallest hole that fits (lowest address on ties)."""
    _check_size(size)
    fits = [(hole, i) for i, (_, hole) in enumerate(holes) if hole >= size]
    if not fits:
        return None
    return _take(list(holes), min(fits)[1], size)


def insert_hole(holes: list[Hole], start: int, size: int) -> list[Hole]:
    """Give [start, start + size) back and merge it with the holes it touches.

    Without the merge, two freed neighbours of 8 slots would stay two holes of
    8 and a request for 16 would fail with 16 free slots side by side.
    """
    _check_size(size)
    check_int("start", start, 0)
    holes = sorted(holes)
    i = bisect_left(holes, (start, 0))
    if i > 0 and holes[i - 1][0] + holes[i - 1][1] > start or i < len(holes) and start + size > holes[i][0]:
        raise ValueError(f"start: [{start}, {start + size}) overlaps a free hole; was it freed twice?")
    if i < len(holes) and start + size == holes[i][0]:          # merge with the hole after
        size += holes.pop(i)[1]
    if i > 0 and holes[i - 1][0] + holes[i - 1][1] == start:    # merge with the hole before
        start, size = holes[i - 1][0], holes[i - 1][1] + size
        holes.pop(i - 1)
        i -= 1
    holes.insert(i, (start, size))
    return holes


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (n >= 1)."""
    _check_size(n, "n")
    return 1 << (n - 1).bit_length()


class FreeList:
    """First-fit or best-fit over a sorted, always-coalesced list of holes."""

    def __init__(self, capacity: int, policy: str = "first-fit"):
        check_int("capacity", capacity, 1)
        check_choice("policy", policy, ("first-fit", "best-fit"))
        self.capacity, self.policy = capacity, policy
        self.holes: list[Hole] = [(0, capacity)]
        self._pick = first_fit if policy == "first-fit" else best_fit

    def slab_size(self, n: int) -> int:
        """Slots actually taken for a request of n slots (exact here)."""
        return n

    def alloc(self, n: int) -> int | None:
        placed = self._pick(self.holes, n)
        if placed is None:
            return None
        start, self.holes = placed
        return start

    def free(self, start: int, size: int) -> None:
        self.holes = insert_hole(self.holes, start, size)

    def extend(self, start: int, size: int, extra: int) -> bool:
        """Grow the slab [start, start+size) by `extra` slots in place, if the hole right after it is big enough."""
        end = start + size
        for i, (h_start, h_size) in enumerate(self.holes):
            if h_start == end and h_size >= extra:
                self.holes = _take(self.holes, i, extra)[1]
                return True
        return False

    def free_blocks(self) -> list[Hole]:
        return list(self.holes)


class BuddyAllocator:
    """Binary buddy allocation over `capacity` slots.

    Every block has a power-of-two size (>= min_block) and starts at a multiple
    of its size. A request takes the smallest free block that fits, splitting
    bigger blocks in halves as needed; a freed block merges with its buddy
    (the other half of the block it was split from) whenever that is free too.
    A capacity that is not a power of two is covered by several top blocks
    (its binary expansion: 12 = 8 + 4).
    """

    def __init__(self, capacity: int, min_block: int = 1):
        check_int("capacity", capacity, 1)
        if check_int("min_block", min_block, 1, note="a power of two") & (min_block - 1):
            raise ValueError(f"min_block: must be a power of two >= 1; got {min_block!r}")
        if capacity % min_block:
            raise ValueError(f"capacity: must be a multiple of min_block ({min_block}); got {capacity}")
        self.capacity, self.min_block = capacity, min_block
        self.free_by_size: dict[int, list[int]] = {}      # block size -> sorted starts
        start = 0
        for bit in reversed(range(capacity.bit_length())):
            size = 1 << bit
            if capacity - start >= size and size >= min_block:
                self._push(start, size)
                start += size

    def _push(self, start: int, size: int) -> None:
        insort(self.free_by_size.setdefault(size, []), start)

    def slab_size(self, n: int) -> int:
        return max(next_pow2(n), self.min_block)

    def alloc(self, n: int) -> int | None:
        need = self.slab_size(n)
        sizes = sorted(s for s, starts in self.free_by_size.items() if s >= need and starts)
        if not sizes:
            return None
        size = sizes[0]
        start = self.free_by_size[size].pop(0)
        while size > need:                                  # split, keep the lower half
            size //= 2
            self._push(start + size, size)
        return start

    def free(self, start: int, size: int) -> None:
        size = self.slab_size(size)
        check_int("start", start, 0, self.capacity - size)
        if start % size:
            raise ValueError(f"start: a block of {size} slots must start at a multiple of {size}; got {start}")
        if any(s <= start < s + sz or start <= s < start + size for sz, ss in self.free_by_size.items() for s in ss):
            raise ValueError(f"start: [{start}, {start + size}) overlaps a free block; was it freed twice?")
        while True:
            buddy = start ^ size
            starts = self.free_by_size.get(size, [])
            j = bisect_left(starts, buddy)
            if j < len(starts) and starts[j] == buddy:
                starts.pop(j)
                start, size = min(start, buddy), size * 2
            else:
                break
        self._push(start, size)

    def extend(self, start: int, size: int, extra: int) -> bool:
        return False                                        # a buddy block never grows in place

    def free_blocks(self) -> list[Hole]:
        return sorted((s, size) for size, starts in self.free_by_size.items() for s in starts)


def make_allocator(capacity: int, placement: Placement, min_block: int = 1):
    check_choice("placement", placement, PLACEMENTS)
    if placement == "buddy":
        return BuddyAllocator(capacity, min_block)
    return FreeList(capacity, placement)


def spans_cover(spans: Iterable[Hole], capacity: int) -> bool:
    """True when the (start, size) spans tile [0, capacity) exactly: no gap, no overlap."""
    pos = 0
    for start, size in sorted(spans):
        if start != pos or size < 1:
            return False
        pos += size
    return pos == capacity
