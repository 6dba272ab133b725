"""Checks for lesson 05's exercise (prefix caching and sharing). Each compares against
course_lib.kv.prefix_cache / course_lib.kv.paged on several cases, edge cases included."""

from __future__ import annotations

from course_lib.checks.core import Case, run_cases
from course_lib.kv.prefix_cache import ROOT_HASH, block_hash, prefix_block_hashes


def spelled_hash(parent, tokens) -> str:
    """A hash you can read: the chain is spelled out, so a wrong chain shows in the message."""
    return f"h({parent}|{','.join(str(t) for t in tokens)})"


def check_chain_hashes(fn) -> None:
    """fn(tokens, block_size, hash_block) -> one hash per FULL block: h_i = hash_block(h_{i-1}, block i's
    tokens as a tuple), h_{-1} = 0."""
    specs = [
        ("two full blocks", [1, 2, 3, 4], 2, spelled_hash),
        ("a partial last block gets no hash", [1, 2, 3, 4, 5], 2, spelled_hash),
        ("shorter than a block", [7, 8], 4, spelled_hash),
        ("block size 1", [5, 5, 5], 1, spelled_hash),
        ("no tokens", [], 4, spelled_hash),
        ("the course's 64-bit block_hash", list(range(40)), 16, block_hash),
    ]
    run_cases("chain_hashes", fn, [Case(n, (list(t), b, h), prefix_block_hashes(t, b, h)) for n, t, b, h in specs])


def _cached_prefix_reference(tokens, block_size, cache):
    parent, n = ROOT_HASH, 0
    for i in range((len(tokens) - 1) // block_size):
        block = tuple(tokens[i * block_size:(i + 1) * block_size])
        h = block_hash(parent, block)
        if cache.get(h) != (parent, block):
            break
        parent, n = h, n + block_size
    return n


def cache_of(*prompts, block_size):
    """A cache holding every full block of the prompts: hash -> (parent hash, block tokens)."""
    cache = {}
    for p in prompts:
        parent = ROOT_HASH
        for i in range(len(p) // block_size):
            block = tuple(p[i * block_size:(i + 1) * block_size])
            h = block_hash(parent, block)
            cache[h] = (parent, block)
            parent = h
    return cache


def check_cached_prefix_len(fn) -> None:
    """fn(tokens, block_size, cache) -> how many leading tokens are cached: whole blocks whose
    chained hash is in `cache` AND whose entry (parent hash, tokens) matches; at most len(tokens) - 1."""
    system = list(range(100, 112))                                   # 12 tokens = 3 blocks of 4
    other = list(range(200, 212))
    collided = cache_of(system, block_size=4)
    h0 = block_hash(ROOT_HASH, tuple(system[:4]))
    h1 = block_hash(h0, tuple(system[4:8]))
    collided[h1] = (h0, (9, 9, 9, 9))                                # same hash key, other tokens
    no_head = cache_of(system, block_size=4)
    del no_head[h0]                                                  # the chain's first block was evicted
    specs = [
        ("an empty cache", system + [1, 2], 4, {}),
        ("the whole system prompt is cached", system + [1, 2], 4, cache_of(system, block_size=4)),
        ("a prompt of exactly the cached blocks: the last is recomputed", system, 4, cache_of(system, block_size=4)),
        ("the prompts differ in the second block", system[:4] + [0] * 8 + [1], 4, cache_of(system, block_size=4)),
        ("another prompt's blocks do not count", system + [1], 4, cache_of(other, block_size=4)),
        ("a hash collision: never trust the hash alone", system + [1], 4, collided),
        ("the first block is missing: the chain stops", system + [1], 4, no_head),
        ("block size 1", [5, 6, 7], 1, cache_of([5, 6, 7], block_size=1)),
    ]
    run_cases("cached_prefix_len", fn,
              [Case(n, (list(t), b, dict(c)), _cached_prefix_reference(t, b, c)) for n, t, b, c in specs])


def _cow_reference(table, index, ref_count, free):
    old = table[index]
    if ref_count[old] <= 1:
        return old, None
    if not free:
        raise MemoryError("out of blocks")
    new = free.pop(0)
    ref_count[old] -= 1
    ref_count[new] = 1
    table[index] = new
    return new, old


def _run_cow(fn):
    """Call fn on copies; return (its answer, table, ref_count, free after) or 'MemoryError'."""
    def run(table, index, ref_count, free):
        table, ref_count, free = list(table), list(ref_count), list(free)
        try:
            got = fn(table, index, ref_count, free)
        except MemoryError:
            return "MemoryError"
        return (tuple(got) if isinstance(got, (list, tuple)) else got, table, ref_count, free)
    return run


def check_copy_on_write(fn) -> None:
    """fn(table, index, ref_count, free) -> (block to write into, block copied from or None).
    A block held by more than one table is replaced in THIS table by the first free block
    (counts: old - 1, new = 1); a private block is written in place. MemoryError if a copy
    is needed and no block is free. Mutates table, ref_count and free in place."""
    specs = [
        ("a private block is written in place", [3, 5], 1, [0, 0, 0, 1, 0, 1, 0], [0, 2]),
        ("shared by two: copy", [3, 5], 1, [0, 0, 0, 1, 0, 2, 0], [6, 2]),
        ("shared by three: copy, two remain", [3, 5], 0, [0, 0, 0, 3, 0, 1, 0], [6, 2]),
        ("shared, but no free block", [3, 5], 1, [0, 0, 0, 1, 0, 2, 0], []),
        ("the first block of a long table", [4, 1, 2], 0, [0, 1, 1, 0, 2, 0], [5, 3]),
    ]
    cases = [Case(n, (t, i, r, f), _run_cow(_cow_reference)(t, i, r, f)) for n, t, i, r, f in specs]
    run_cases("copy_on_write", _run_cow(fn), cases)


def _saved_reference(n_samples, prompt_len, output_len, block_size):
    return (n_samples - 1) * (prompt_len // block_size)


def check_blocks_saved(fn) -> None:
    """fn(n_samples, prompt_len, output_len, block_size) -> blocks saved when n samples of one prompt
    share its blocks (fork + copy-on-write) instead of each holding a full copy, once every sample
    has written its output."""
    specs = [
        ("one sample saves nothing", 1, 100, 20, 16),
        ("a prompt of whole blocks", 4, 64, 10, 16),
        ("a partial last prompt block is copied by each sample", 4, 70, 10, 16),
        ("a prompt shorter than a block", 8, 10, 30, 16),
        ("block size 1", 3, 5, 5, 1),
    ]
    run_cases("blocks_saved", fn, [Case(n, (s, p, o, b), _saved_reference(s, p, o, b)) for n, s, p, o, b in specs])
