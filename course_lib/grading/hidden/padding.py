"""Exercise 01's hidden cases."""

from __future__ import annotations

import random

import torch

from course_lib.checks.core import Case


def _mask(lengths, side, dtype=torch.long):
    T = max(lengths, default=0)
    rows = [[0] * (T - n) + [1] * n if side == "left" else [1] * n + [0] * (T - n) for n in lengths]
    return torch.tensor(rows, dtype=torch.long).reshape(len(lengths), T).to(dtype)


def cases(rng: random.Random, refs: dict | None = None) -> dict[str, list[Case]]:
    words = ["a", "b", "c", "<s>", "\t", ""]
    lengths = lambda n, hi: [rng.randint(0, hi) for _ in range(n)]
    pad = {
        "pad_sequences": [
            Case("tuples in, lists out", ([("a",), ("b", "c", "d")], "_", "left")),
            Case("no sequences at all", ([], "<pad>", "right")),
            Case("pad is 0 (a falsy pad)", ([[3], [1, 2, 3]], 0, "left")),
            Case("pad is None", ([[1, 2], []], None, "right")),
            Case("every sequence empty", ([[], []], "x", "left")),
        ] + [Case(f"random batch {i}", ([[rng.choice(words) for _ in range(n)] for n in lengths(rng.randint(1, 5), 6)],
                                        rng.choice(["<pad>", 0, "."]), side))
             for i, side in enumerate(["left", "right", "left", "right"])],
        "attention_mask": [
            Case("no sequences at all", ([], "left")),
            Case("every sequence empty", ([0, 0], "right")),
            Case("one sequence", ([3], "left")),
        ] + [Case(f"random lengths {i}", (lengths(rng.randint(1, 6), 7), side))
             for i, side in enumerate(["left", "right", "right", "left"])],
        "position_ids": [
            Case("right padding, padding slots get 0", (_mask([1, 3, 2], "right"),)),
            Case("a bool mask", (_mask([2, 4], "left", torch.bool),)),
            Case("a bool mask, right padding", (_mask([3, 1], "right", torch.bool),)),
            Case("every row empty", (_mask([0, 0], "left"),)),
            Case("no rows", (_mask([], "left"),)),
        ] + [Case(f"random mask {i}", (_mask(lengths(rng.randint(1, 5), 8), side),))
             for i, side in enumerate(["left", "right", "right", "left"])],
        "padding_waste": [
            Case("one sequence", ([5],)),
            Case("a third is padding", ([1, 2, 3],)),
            Case("tuple of lengths", ((2, 4),)),
        ] + [Case(f"random lengths {i}", (lengths(rng.randint(1, 8), 50),)) for i in range(4)],
        "bucket_batches": [
            Case("the hint: [1, 1, 2] in pairs", ([1, 1, 2], 2)),
            Case("the hint: [2, 2, 1] in pairs", ([2, 2, 1], 2)),
            Case("the short batch belongs in the middle", ([9, 1, 5, 1, 9, 1, 9], 3)),
            Case("batch size 1", ([4, 2, 9], 1)),
            Case("no sequences", ([], 3)),
            Case("an odd count, unsorted", ([9, 1, 5, 3, 7], 2)),
        ] + [Case(f"random lengths {i}", (lengths(n, 40), b))
             for i, (n, b) in enumerate([(7, 2), (10, 3), (11, 4), (9, 2), (13, 5)])],
    }
    return pad
