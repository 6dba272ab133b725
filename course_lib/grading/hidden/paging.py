"""Exercise 04's hidden cases."""

from __future__ import annotations

import math
import random

from course_lib.checks.core import Case
from course_lib.checks.paging import attention_case


def cases(rng: random.Random, refs: dict | None = None) -> dict[str, list[Case]]:
    slots, appends, frags, attns = [], [], [], []
    for i in range(5):
        bs = rng.choice([1, 2, 4, 8, 16])
        table = rng.sample(range(40), rng.randint(1, 6))
        slots.append(Case(f"random table {i}", (table, rng.randrange(len(table) * bs), bs)))
        length = rng.randint(0, 20)
        pool = rng.sample(range(50), 12)
        held, free = pool[:math.ceil(length / bs)], pool[12 - rng.randint(0, 3):]
        appends.append(Case(f"random append {i}", (held, length, free, bs)))
        frags.append(Case(f"random lengths {i}", ([rng.randint(0, 70) for _ in range(rng.randint(1, 6))],
                                                   rng.choice([1, 4, 16, 32]))))
        nkv = rng.choice([1, 2])
        nh, hd, bs = nkv * rng.choice([1, 2, 4]), rng.choice([4, 8]), rng.choice([2, 4, 8])
        ctx = rng.randint(1, 30)
        attns.append(attention_case(f"random problem {i}", 100 + i, nh, nkv, hd, bs,
                                    rng.sample(range(20), math.ceil(ctx / bs)), ctx))
    return {
        "slot_for_position": [
            Case("the last slot of the last block", ([3, 8], 7, 4)),
            Case("a table of one block", ([11], 2, 4)),
        ] + slots,
        "append_token": [
            Case("an empty table, no free block", ([], 0, [], 4)),
            Case("block size 1, no free block", ([3], 1, [], 1)),
            Case("the front of the free list, not the back", ([0], 2, [9, 5, 2], 2)),
            Case("the middle of the second block", ([6, 1], 6, [3], 4)),
        ] + appends,
        "internal_fragmentation": [
            Case("an empty sequence holds no block", ([0, 0], 8)),
            Case("one token", ([1], 16)),
            Case("a tuple of lengths", ((9, 10), 4)),
        ] + frags,
        "paged_attention": [
            attention_case("context on a block boundary", 6, 2, 1, 4, 4, [1, 0], 8),
            attention_case("8 query heads share 1 kv head", 7, 8, 1, 4, 4, [0, 2], 6),
            attention_case("one token in a block of 16", 8, 2, 2, 8, 16, [3], 1),
            attention_case("a table longer than the context", 9, 4, 2, 4, 4, [2, 4, 1], 5),
        ] + attns,
    }
