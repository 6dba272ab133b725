"""Exercise 05's hidden cases."""

from __future__ import annotations

import random

from course_lib.checks.core import Case, Ref
from course_lib.checks.prefix import cache_of
from course_lib.kv.prefix_cache import ROOT_HASH, block_hash

TUPLE_HASH = Ref("course_lib.checks.prefix:tuple_hash")
SPELLED = Ref("course_lib.checks.prefix:spelled_hash")


def cases(rng: random.Random, refs: dict | None = None) -> dict[str, list[Case]]:
    a = list(range(10, 18))                                   # two blocks of 4
    wrong_parent = cache_of(a, block_size=4)
    h0 = block_hash(ROOT_HASH, tuple(a[:4]))
    h1 = block_hash(h0, tuple(a[4:]))
    wrong_parent[h1] = (12345, tuple(a[4:]))                 # the right tokens under another parent
    chains, prefixes, cows = [], [], []
    for i in range(4):
        toks = [rng.randint(0, 50) for _ in range(rng.randint(0, 14))]
        chains.append(Case(f"random tokens {i}", (toks, rng.choice([1, 2, 3, 4]), SPELLED)))
        bs = rng.choice([2, 3, 4])
        shared = [rng.randint(0, 9) for _ in range(rng.randint(0, 10))]
        prompt = shared + [rng.randint(0, 9) for _ in range(rng.randint(0, 6))]
        prefixes.append(Case(f"random prompt {i}", (prompt, bs, cache_of(shared, [1, 2, 3], block_size=bs))))
        n = 8
        table = rng.sample(range(n), 3)
        refc = [0] * n
        for b in table:
            refc[b] = rng.choice([1, 1, 2, 3])
        free = [b for b in range(n) if refc[b] == 0][:rng.randint(0, 3)]
        cows.append(Case(f"random tables {i}", (table, rng.randrange(3), refc, free)))
    return {
        "chain_hashes": [
            Case("the block's tokens as a tuple", ([1, 2, 3, 4], 2, TUPLE_HASH)),
            Case("a tuple of tokens", ((4, 5, 6), 3, SPELLED)),
            Case("block size larger than the prompt", ([1, 2], 3, SPELLED)),
        ] + chains,
        "cached_prefix_len": [
            Case("the entry's parent hash does not match", (a + [1], 4, wrong_parent)),
            Case("a one-token prompt", ([10], 4, cache_of(a, block_size=4))),
            Case("a prompt of one whole block", (a[:4], 4, cache_of(a, block_size=4))),
            Case("one token past the whole blocks", (a + [99], 4, cache_of(a, block_size=4))),
        ] + prefixes,
        "copy_on_write": [
            Case("shared, several free: the front one", ([2, 0], 0, [1, 0, 2, 0, 0], [4, 3, 1])),
            Case("shared, no free block: nothing changes", ([1, 2], 0, [0, 4, 1], [])),
            Case("the last block of the table", ([0, 1, 2], 2, [1, 1, 2, 0], [3])),
        ] + cows,
        "blocks_saved": [
            Case("a prompt of exactly one block", (5, 16, 3, 16)),
            Case("two samples, a long prompt", (2, 1000, 50, 16)),
            Case("an empty prompt shares nothing", (4, 0, 8, 4)),
        ] + [Case(f"random sizes {i}", (rng.randint(1, 9), rng.randint(0, 200), rng.randint(1, 40),
                                        rng.choice([1, 4, 16, 32]))) for i in range(4)],
    }
