"""Checks for lesson 04's exercise (paged attention). Each compares against course_lib.kv.paged
and course_lib.paged_attention on several cases, edge cases included."""

from __future__ import annotations

import torch

from course_lib.checks.core import Case, run_cases, same
from course_lib.kv.paged import slot_of
from course_lib.paged_attention import paged_attention_gather


def check_slot_for_position(fn) -> None:
    """fn(block_table, position, block_size) -> the flat slot (block * block_size + offset)."""
    specs = [
        ("the first token", [5, 2, 9], 0, 4),
        ("the last slot of a block", [5, 2, 9], 3, 4),
        ("the first slot of the next block", [5, 2, 9], 4, 4),
        ("a token in the last block", [5, 2, 9], 10, 4),
        ("blocks out of order", [7, 0, 3, 1], 13, 4),
        ("block size 1", [3, 1, 2], 1, 1),
        ("block size 16 (vLLM's default)", [40, 12, 7], 33, 16),
    ]
    run_cases("slot_for_position", fn, [Case(n, (list(t), p, b), slot_of(t, p, b)) for n, t, p, b in specs])


def _append_reference(table, length, free, block_size):
    if length % block_size == 0:
        if not free:
            raise MemoryError("out of blocks")
        table.append(free.pop(0))
    return slot_of(table, length, block_size)


def _run_append(fn):
    """Call fn on copies; return (slot, table after, free list after) or 'MemoryError'."""
    def run(table, length, free, block_size):
        table, free = list(table), list(free)
        try:
            slot = fn(table, length, free, block_size)
        except MemoryError:
            return "MemoryError"
        return (slot, table, free)
    return run


def check_append_token(fn) -> None:
    """fn(table, length, free, block_size) -> slot of the new token at position `length`;
    takes a block from the FRONT of `free` (appending it to `table`) only when the table is full;
    raises MemoryError when it needs a block and none is free. Mutates table and free in place."""
    specs = [
        ("an empty table takes a block", [], 0, [4, 7, 1], 4),
        ("room left in the last block", [4], 2, [7, 1], 4),
        ("the last slot of a block", [4], 3, [7, 1], 4),
        ("a full block: take the next free one", [4], 4, [7, 1], 4),
        ("block size 1: every token takes a block", [2, 5], 2, [0, 3], 1),
        ("a full table, no free block", [4, 7], 8, [], 4),
        ("room left, no free block needed", [4, 7], 6, [], 4),
    ]
    cases = []
    for n, t, length, free, bs in specs:
        expected = _run_append(_append_reference)(t, length, free, bs)
        cases.append(Case(n, (t, length, free, bs), expected))
    run_cases("append_token", _run_append(fn), cases)


def check_internal_fragmentation(fn) -> None:
    """fn(lengths, block_size) -> slots held in blocks but holding no token (the empty tails)."""
    specs = [
        ("one short sequence", [5], 16),
        ("exact multiples waste nothing", [16, 32], 16),
        ("one token over a block", [17], 16),
        ("block size 1 wastes nothing", [3, 7, 1], 1),
        ("several lengths", [1, 15, 16, 17, 40], 8),
        ("no sequences", [], 16),
    ]
    run_cases("internal_fragmentation", fn, [Case(n, (list(l), b), sum(-x % b for x in l)) for n, l, b in specs])


def _attention_case(seed, nh, nkv, hd, bs, n_blocks, context, table=None):
    g = torch.Generator().manual_seed(seed)
    nb = n_blocks + 3
    kb = torch.randn(nb, nkv, hd, bs, generator=g)                  # (num_blocks, nkv, hd, bs)
    vb = torch.randn(nb, nkv, bs, hd, generator=g) * 3               # (num_blocks, nkv, bs, hd)
    q = torch.randn(nh, hd, generator=g) * 2                          # (nh, hd)
    table = table or torch.randperm(nb, generator=g)[:n_blocks].tolist()
    expected = paged_attention_gather(q[None], kb, vb, torch.tensor([table]), torch.tensor([context]))[0]
    return (q, kb, vb, table, context), expected


def check_paged_attention(fn) -> None:
    """fn(q (nh, hd), key_blocks (nb, nkv, hd, bs), value_blocks (nb, nkv, bs, hd), block_table, context_len)
    -> (nh, hd): one sequence's decode attention over its first context_len tokens."""
    specs = [
        ("one block, 4 heads share 2 kv heads", dict(seed=0, nh=4, nkv=2, hd=8, bs=4, n_blocks=1, context=4)),
        ("a partial last block", dict(seed=1, nh=4, nkv=2, hd=8, bs=4, n_blocks=3, context=10)),
        ("blocks out of order", dict(seed=2, nh=2, nkv=2, hd=4, bs=2, n_blocks=4, context=8, table=[4, 0, 6, 1])),
        ("a single token", dict(seed=3, nh=4, nkv=1, hd=8, bs=4, n_blocks=2, context=1)),
        ("block size 1", dict(seed=4, nh=2, nkv=1, hd=4, bs=1, n_blocks=5, context=5)),
        ("block size 16, longer context", dict(seed=5, nh=4, nkv=2, hd=16, bs=16, n_blocks=4, context=50)),
    ]
    cases = []
    for name, kw in specs:
        args, expected = _attention_case(**kw)
        cases.append(Case(name, args, expected, compare=_close))
    run_cases("paged_attention", fn, cases)


def _close(got, expected) -> bool:
    return isinstance(got, torch.Tensor) and same(got.detach().float(), expected)
