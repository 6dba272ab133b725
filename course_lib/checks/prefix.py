"""Exercise 05 (prefix caching and sharing): the tasks, their public cases, the check cells' functions."""

from __future__ import annotations

from course_lib.checks.core import Case, Ref, Task, practice
from course_lib.kv.prefix_cache import ROOT_HASH, block_hash

LESSON = "05_prefix_caching"


def spelled_hash(parent, tokens) -> str:
    """A hash you can read: the chain is spelled out, so a wrong chain shows in the message."""
    return f"h({parent}|{','.join(str(t) for t in tokens)})"


def tuple_hash(parent, tokens) -> str:
    """spelled_hash that insists on what the task says: the block's tokens as a tuple."""
    if type(tokens) is not tuple:
        raise TypeError(f"hash_block wants the block's tokens as a tuple; got {type(tokens).__name__}")
    return spelled_hash(parent, tokens)


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


def _cached_prefix_cases():
    system, other = list(range(100, 112)), list(range(200, 212))       # 12 tokens = 3 blocks of 4
    collided = cache_of(system, block_size=4)
    h0 = block_hash(ROOT_HASH, tuple(system[:4]))
    h1 = block_hash(h0, tuple(system[4:8]))
    collided[h1] = (h0, (9, 9, 9, 9))                                  # same hash key, other tokens
    no_head = cache_of(system, block_size=4)
    del no_head[h0]                                                    # the chain's first block was evicted
    return [Case(n, (t, b, c)) for n, t, b, c in [
        ("an empty cache", system + [1, 2], 4, {}),
        ("the whole system prompt is cached", system + [1, 2], 4, cache_of(system, block_size=4)),
        ("a prompt of exactly the cached blocks: the last is recomputed", system, 4, cache_of(system, block_size=4)),
        ("the prompts differ in the second block", system[:4] + [0] * 8 + [1], 4, cache_of(system, block_size=4)),
        ("another prompt's blocks do not count", system + [1], 4, cache_of(other, block_size=4)),
        ("a hash collision: never trust the hash alone", system + [1], 4, collided),
        ("the first block is missing: the chain stops", system + [1], 4, no_head),
        ("block size 1", [5, 6, 7], 1, cache_of([5, 6, 7], block_size=1)),
    ]]


SPELLED, BLOCK_HASH = Ref("course_lib.checks.prefix:spelled_hash"), Ref("course_lib.kv.prefix_cache:block_hash")

TASKS = {t.name: t for t in [
    Task("chain_hashes", [Case(n, (t, b, h)) for n, t, b, h in [
        ("two full blocks", [1, 2, 3, 4], 2, SPELLED),
        ("a partial last block gets no hash", [1, 2, 3, 4, 5], 2, SPELLED),
        ("shorter than a block", [7, 8], 4, SPELLED),
        ("block size 1", [5, 5, 5], 1, SPELLED),
        ("no tokens", [], 4, SPELLED),
        ("the course's 64-bit block_hash", list(range(40)), 16, BLOCK_HASH),
    ]]),
    Task("cached_prefix_len", _cached_prefix_cases()),
    # copy_on_write(table, index, ref_count, free): changes them in place
    Task("copy_on_write", [Case(n, (t, i, r, f)) for n, t, i, r, f in [
        ("a private block is written in place", [3, 5], 1, [0, 0, 0, 1, 0, 1, 0], [0, 2]),
        ("shared by two: copy", [3, 5], 1, [0, 0, 0, 1, 0, 2, 0], [6, 2]),
        ("shared by three: copy, two remain", [3, 5], 0, [0, 0, 0, 3, 0, 1, 0], [6, 2]),
        ("shared, but no free block", [3, 5], 1, [0, 0, 0, 1, 0, 2, 0], []),
        ("the first block of a long table", [4, 1, 2], 0, [0, 1, 1, 0, 2, 0], [5, 3]),
    ]], probe="inplace"),
    Task("blocks_saved", [Case(n, (s, p, o, b)) for n, s, p, o, b in [
        ("one sample saves nothing", 1, 100, 20, 16),
        ("a prompt of whole blocks", 4, 64, 10, 16),
        ("a partial last prompt block is copied by each sample", 4, 70, 10, 16),
        ("a prompt shorter than a block", 8, 10, 30, 16),
        ("block size 1", 3, 5, 5, 1),
    ]]),
]}


def check_chain_hashes(fn) -> None:
    """fn(tokens, block_size, hash_block) -> one hash per FULL block: h_i = hash_block(h_{i-1}, block i's
    tokens as a tuple), h_{-1} = 0."""
    practice(LESSON, TASKS["chain_hashes"], fn)


def check_cached_prefix_len(fn) -> None:
    """fn(tokens, block_size, cache) -> how many leading tokens are cached (whole blocks whose chained hash is
    in `cache` AND whose entry (parent hash, tokens) matches); at most len(tokens) - 1."""
    practice(LESSON, TASKS["cached_prefix_len"], fn)


def check_copy_on_write(fn) -> None:
    """fn(table, index, ref_count, free) -> (block to write into, block copied from or None); changes them."""
    practice(LESSON, TASKS["copy_on_write"], fn)


def check_blocks_saved(fn) -> None:
    """fn(n_samples, prompt_len, output_len, block_size) -> blocks saved by sharing the prompt's blocks."""
    practice(LESSON, TASKS["blocks_saved"], fn)
