"""Checks for lesson 01's exercise (padding). Each compares against course_lib.padding."""

from __future__ import annotations

import torch

from course_lib.checks.core import Case, run_cases
from course_lib.padding import bucket_by_length, padding_stats, total_waste

SEED_BATCH = [["The", "cat", "sat"], ["A", "quick", "brown", "fox"], ["On", "the", "mat"]]


def check_pad_sequences(fn) -> None:
    """fn(seqs, pad, side) -> list of lists, every one as long as the longest."""
    long = ["w"] * 40
    cases = [
        Case("the seeds' batch, right padding", (SEED_BATCH, "<pad>", "right"),
             [["The", "cat", "sat", "<pad>"], ["A", "quick", "brown", "fox"], ["On", "the", "mat", "<pad>"]]),
        Case("the seeds' batch, left padding", (SEED_BATCH, "<pad>", "left"),
             [["<pad>", "The", "cat", "sat"], ["A", "quick", "brown", "fox"], ["<pad>", "On", "the", "mat"]]),
        Case("an empty sequence", ([["a", "b"], []], "<pad>", "left"), [["a", "b"], ["<pad>", "<pad>"]]),
        Case("all lengths equal", ([[1, 2], [3, 4]], 0, "right"), [[1, 2], [3, 4]]),
        Case("one very long sequence", ([["x"], long], ".", "left"), [["."] * 39 + ["x"], long]),
        Case("ids, not strings", ([[5], [6, 7, 8]], 256, "right"), [[5, 256, 256], [6, 7, 8]]),
        Case("a single-token sequence", ([["a"], ["b", "c"]], "<pad>", "right"), [["a", "<pad>"], ["b", "c"]]),
    ]
    run_cases("pad_sequences", fn, cases)


def _mask(lengths, side):
    T = max(lengths, default=0)
    rows = [[0] * (T - n) + [1] * n if side == "left" else [1] * n + [0] * (T - n) for n in lengths]
    return torch.tensor(rows, dtype=torch.long).reshape(len(lengths), T)


def check_attention_mask(fn) -> None:
    """fn(lengths, side) -> (B, T) long tensor, 1 on real tokens, 0 on padding."""
    specs = [
        ("left padding", [3, 5, 1], "left"),
        ("right padding", [3, 5, 1], "right"),
        ("an empty sequence", [0, 2], "left"),
        ("all lengths equal", [4, 4, 4], "right"),
        ("one very long sequence", [1, 300], "left"),
    ]
    run_cases("attention_mask", fn, [Case(n, (l, s), _mask(l, s)) for n, l, s in specs])


def check_position_ids(fn) -> None:
    """fn(mask (B, T)) -> (B, T) long positions counting real tokens only; 0 on padding."""
    def expected(mask):
        return (mask.cumsum(-1) - 1).clamp(min=0)
    masks = [
        ("left padding", _mask([2, 4], "left")),
        ("right padding", _mask([2, 4], "right")),
        ("no padding", _mask([3, 3], "left")),
        ("an empty sequence", _mask([0, 3], "left")),
        ("one very long sequence", _mask([1, 200], "left")),
    ]
    run_cases("position_ids", fn, [Case(n, (m.clone(),), expected(m)) for n, m in masks])


def check_padding_waste(fn) -> None:
    """fn(lengths) -> share of a (B, max_len) batch's slots that hold padding (0.0 for no slots)."""
    specs = [
        ("the seeds' batch", [3, 4, 3]),
        ("all lengths equal", [7, 7, 7, 7]),
        ("one very long sequence", [1, 1, 1, 1000]),
        ("an empty sequence", [0, 5]),
        ("no sequences", []),
        ("all empty", [0, 0]),
    ]
    run_cases("padding_waste", fn, [Case(n, (l,), float(padding_stats(l).token_waste)) for n, l in specs])


def check_bucket_batches(fn) -> None:
    """fn(lengths, batch_size) -> list of index batches, each of `batch_size`
    (the last may be smaller), grouping similar lengths. Any grouping with as
    little total padding as sort-then-chunk is accepted."""
    specs = [
        ("short and long interleaved", [5, 100, 6, 98, 7, 99], 2),
        ("all lengths equal", [4, 4, 4, 4], 3),
        ("one very long sequence", [3, 1000, 2, 1], 2),
        ("batch larger than the data", [9, 1, 5], 8),
        ("an empty sequence", [0, 3, 0, 3], 2),
    ]
    run_cases("bucket_batches", fn,
              [Case(n, (l, b), _Best(l, b), compare=_as_good_as) for n, l, b in specs])


class _Best:
    """The reference grouping for (lengths, batch_size); shown in failure messages."""

    def __init__(self, lengths, batch_size):
        self.lengths, self.batches = lengths, bucket_by_length(lengths, batch_size)

    def __repr__(self):
        return repr(self.batches)


def _as_good_as(got, best: _Best) -> bool:
    """A partition of all indices, with the same batch sizes and no more padding."""
    try:
        batches = [[int(i) for i in b] for b in got]
    except TypeError:
        return False
    n = len(best.lengths)
    if sorted(i for b in batches for i in b) != list(range(n)):
        return False
    if sorted(len(b) for b in batches) != sorted(len(b) for b in best.batches):
        return False
    return total_waste(best.lengths, batches) <= total_waste(best.lengths, best.batches) + 1e-12
