"""Exercise 04 (paged attention): the tasks, their public cases, the check cells' functions."""

from __future__ import annotations

import torch

from course_lib.checks.core import Call, Case, Task, practice

LESSON = "04_paged_attention"


def seeded_tensor(seed: int, shape: list, scale: float = 1.0) -> torch.Tensor:
    """A float32 tensor of normal values, the same for the same seed on every machine."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


def attention_case(name: str, seed: int, nh: int, nkv: int, hd: int, bs: int, table: list, context: int) -> Case:
    """q (nh, hd), key_blocks (nb, nkv, hd, bs), value_blocks (nb, nkv, bs, hd), block_table, context_len."""
    nb = max(table) + 2
    here = "course_lib.checks.paging:seeded_tensor"
    return Case(name, (Call(here, (10 * seed, [nh, hd], 2.0)), Call(here, (10 * seed + 1, [nb, nkv, hd, bs])),
                       Call(here, (10 * seed + 2, [nb, nkv, bs, hd], 3.0)), table, context))


TASKS = {t.name: t for t in [
    Task("slot_for_position", [Case(n, (t, p, b)) for n, t, p, b in [
        ("the first token", [5, 2, 9], 0, 4),
        ("the last slot of a block", [5, 2, 9], 3, 4),
        ("the first slot of the next block", [5, 2, 9], 4, 4),
        ("a token in the last block", [5, 2, 9], 10, 4),
        ("blocks out of order", [7, 0, 3, 1], 13, 4),
        ("block size 1", [3, 1, 2], 1, 1),
        ("block size 16 (vLLM's default)", [40, 12, 7], 33, 16),
    ]]),
    # append_token(table, length, free, block_size): changes table and free in place
    Task("append_token", [Case(n, (t, length, free, bs)) for n, t, length, free, bs in [
        ("an empty table takes a block", [], 0, [4, 7, 1], 4),
        ("room left in the last block", [4], 2, [7, 1], 4),
        ("the last slot of a block", [4], 3, [7, 1], 4),
        ("a full block: take the next free one", [4], 4, [7, 1], 4),
        ("block size 1: every token takes a block", [2, 5], 2, [0, 3], 1),
        ("a full table, no free block", [4, 7], 8, [], 4),
        ("room left, no free block needed", [4, 7], 6, [], 4),
    ]], probe="inplace"),
    Task("internal_fragmentation", [Case(n, (lengths, b)) for n, lengths, b in [
        ("one short sequence", [5], 16),
        ("exact multiples waste nothing", [16, 32], 16),
        ("one token over a block", [17], 16),
        ("block size 1 wastes nothing", [3, 7, 1], 1),
        ("several lengths", [1, 15, 16, 17, 40], 8),
        ("no sequences", [], 16),
    ]]),
    Task("paged_attention", [
        attention_case("one block, 4 heads share 2 kv heads", 0, 4, 2, 8, 4, [1], 4),
        attention_case("a partial last block", 1, 4, 2, 8, 4, [3, 0, 2], 10),
        attention_case("blocks out of order", 2, 2, 2, 4, 2, [4, 0, 6, 1], 8),
        attention_case("a single token", 3, 4, 1, 8, 4, [2, 1], 1),
        attention_case("block size 1", 4, 2, 1, 4, 1, [5, 3, 0, 1, 4], 5),
        attention_case("block size 16, longer context", 5, 4, 2, 16, 16, [6, 2, 5, 0], 50),
    ], judge="close_1e-5"),
]}


def check_slot_for_position(fn) -> None:
    """fn(block_table, position, block_size) -> the flat slot (block * block_size + offset)."""
    practice(LESSON, TASKS["slot_for_position"], fn)


def check_append_token(fn) -> None:
    """fn(table, length, free, block_size) -> slot of the new token; takes a block from the FRONT of `free`
    only when the table is full; MemoryError when it needs one and none is free. Changes table and free."""
    practice(LESSON, TASKS["append_token"], fn)


def check_internal_fragmentation(fn) -> None:
    """fn(lengths, block_size) -> slots held in blocks but holding no token (the empty tails)."""
    practice(LESSON, TASKS["internal_fragmentation"], fn)


def check_paged_attention(fn) -> None:
    """fn(q (nh, hd), key_blocks (nb, nkv, hd, bs), value_blocks (nb, nkv, bs, hd), block_table, context_len)
    -> (nh, hd): one sequence's decode attention over its first context_len tokens."""
    practice(LESSON, TASKS["paged_attention"], fn)
