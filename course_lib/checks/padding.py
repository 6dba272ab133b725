"""Exercise 01 (padding): the tasks, their public cases, and the check cells' functions.

Each `check_<task>(fn)` runs the public cases on `fn` and prints one verdict line.
The expected answers are not here: they come from the reference answers, kept with
the solutions and the grader.
"""

from __future__ import annotations

import torch

from course_lib.checks.core import Case, Task, practice

LESSON = "01_padding"
SEED_BATCH = [["The", "cat", "sat"], ["A", "quick", "brown", "fox"], ["On", "the", "mat"]]


def _mask(lengths, side):
    T = max(lengths, default=0)
    rows = [[0] * (T - n) + [1] * n if side == "left" else [1] * n + [0] * (T - n) for n in lengths]
    return torch.tensor(rows, dtype=torch.long).reshape(len(lengths), T)


TASKS = {t.name: t for t in [
    Task("pad_sequences", [
        Case("the seeds' batch, right padding", (SEED_BATCH, "<pad>", "right")),
        Case("the seeds' batch, left padding", (SEED_BATCH, "<pad>", "left")),
        Case("an empty sequence", ([["a", "b"], []], "<pad>", "left")),
        Case("all lengths equal", ([[1, 2], [3, 4]], 0, "right")),
        Case("one very long sequence", ([["x"], ["w"] * 40], ".", "left")),
        Case("ids, not strings", ([[5], [6, 7, 8]], 256, "right")),
        Case("a single-token sequence", ([["a"], ["b", "c"]], "<pad>", "right")),
    ]),
    Task("attention_mask", [
        Case("left padding", ([3, 5, 1], "left")),
        Case("right padding", ([3, 5, 1], "right")),
        Case("an empty sequence", ([0, 2], "left")),
        Case("all lengths equal", ([4, 4, 4], "right")),
        Case("one very long sequence", ([1, 300], "left")),
    ]),
    Task("position_ids", [
        Case("left padding", (_mask([2, 4], "left"),)),
        Case("right padding", (_mask([2, 4], "right"),)),
        Case("no padding", (_mask([3, 3], "left"),)),
        Case("an empty sequence", (_mask([0, 3], "left"),)),
        Case("one very long sequence", (_mask([1, 200], "left"),)),
    ]),
    Task("padding_waste", [
        Case("the seeds' batch", ([3, 4, 3],)),
        Case("all lengths equal", ([7, 7, 7, 7],)),
        Case("one very long sequence", ([1, 1, 1, 1000],)),
        Case("an empty sequence", ([0, 5],)),
        Case("no sequences", ([],)),
        Case("all empty", ([0, 0],)),
    ], judge="close"),
    Task("bucket_batches", [
        Case("short and long interleaved", ([5, 100, 6, 98, 7, 99], 2)),
        Case("all lengths equal", ([4, 4, 4, 4], 3)),
        Case("one very long sequence", ([3, 1000, 2, 1], 2)),
        Case("batch larger than the data", ([9, 1, 5], 8)),
        Case("an empty sequence", ([0, 3, 0, 3], 2)),
    ], judge="partition"),
]}


def check_pad_sequences(fn) -> None:
    """fn(seqs, pad, side) -> new lists, every one as long as the longest; the inputs unchanged."""
    practice(LESSON, TASKS["pad_sequences"], fn)


def check_attention_mask(fn) -> None:
    """fn(lengths, side) -> (B, T) torch.long tensor, 1 on real tokens, 0 on padding."""
    practice(LESSON, TASKS["attention_mask"], fn)


def check_position_ids(fn) -> None:
    """fn(mask (B, T)) -> (B, T) torch.long positions counting real tokens only; 0 on padding."""
    practice(LESSON, TASKS["position_ids"], fn)


def check_padding_waste(fn) -> None:
    """fn(lengths) -> share of a (B, max_len) batch's slots that hold padding (0.0 for no slots)."""
    practice(LESSON, TASKS["padding_waste"], fn)


def check_bucket_batches(fn) -> None:
    """fn(lengths, batch_size) -> batches of indices, all of batch_size but one, with the least padding."""
    practice(LESSON, TASKS["bucket_batches"], fn)
