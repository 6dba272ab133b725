"""Exercise 01's tasks: right answers written differently pass every case (public, hidden, random);
plausible wrong ones fail some, including the hint's own trap; each check cell prints one line."""

from __future__ import annotations

import itertools

import pytest
import torch

from checks_helpers import accepted, rejected, stub
from course_lib.checks import padding as C
from course_lib.padding import attention_mask_from_lengths, batches_in_order, padding_stats, pad_tokens
from helpers import verdict

LESSON = C.LESSON


# ---- right answers, written differently from the solution -------------------------------------
def pad_right(seqs, pad, side):
    width = max(map(len, seqs), default=0)
    return [([pad] * (width - len(s)) if side == "left" else []) + list(s) +
            ([pad] * (width - len(s)) if side == "right" else []) for s in seqs]


def mask_right(lengths, side):
    T = max(lengths, default=0)
    m = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        if n and side == "left":
            m[i, T - n:] = 1
        elif n:
            m[i, :n] = 1
    return m


def positions_right(mask):
    out = torch.zeros(mask.shape, dtype=torch.long)
    for i, row in enumerate(mask.tolist()):
        k = 0
        for j, real in enumerate(row):
            if real:
                out[i, j], k = k, k + 1
    return out


def waste_right(lengths):
    return 1 - sum(lengths) / (len(lengths) * max(lengths)) if lengths and max(lengths) else 0.0


def bucket_right(lengths, batch_size):
    """Brute force over where the smaller batch sits in the longest-first order."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n, r = len(order), len(order) % batch_size
    sizes = [batch_size] * (n // batch_size)
    best = None
    for pos in range(len(sizes) + 1) if r else [0]:
        cut = sizes[:pos] + ([r] if r else []) + sizes[pos:]
        it = iter(order)
        batches = [list(itertools.islice(it, k)) for k in cut]
        slots = sum(len(b) * max(lengths[i] for i in b) for b in batches)
        if best is None or slots < best[0]:
            best = (slots, batches)
    return best[1] if best else []


# ---- wrong answers ------------------------------------------------------------------------------
def pad_always_right(seqs, pad, side):
    return pad_tokens(seqs, pad, "right")


def pad_mutates_input(seqs, pad, side):
    T = max(map(len, seqs), default=0)
    for s in seqs:
        fill = [pad] * (T - len(s))
        if side == "left":
            s[:0] = fill
        else:
            s.extend(fill)
    return seqs


def pad_crashes_on_empty_batch(seqs, pad, side):
    T = max(len(s) for s in seqs)
    return [[pad] * (T - len(s)) + list(s) if side == "left" else list(s) + [pad] * (T - len(s)) for s in seqs]


def pad_needs_lists(seqs, pad, side):            # s + [...] fails on a tuple
    T = max((len(s) for s in seqs), default=0)
    return [[pad] * (T - len(s)) + s if side == "left" else s + [pad] * (T - len(s)) for s in seqs]


def pad_falsy_default(seqs, pad, side):          # `pad or ...` loses a pad of 0
    return pad_right(seqs, pad or "<pad>", side)


def mask_bool(lengths, side):
    return attention_mask_from_lengths(lengths, side).bool()


def mask_float(lengths, side):
    return attention_mask_from_lengths(lengths, side).float()


def mask_crashes_on_no_sequences(lengths, side):
    return torch.stack([attention_mask_from_lengths([n], side, max(lengths))[0] for n in lengths])


def mask_sides_swapped(lengths, side):
    return attention_mask_from_lengths(lengths, "right" if side == "left" else "left")


def positions_without_mask(mask):                # right padding: pads get n - 1, the task says 0
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def positions_arange(mask):
    return torch.arange(mask.shape[1]).expand_as(mask).clone()


def positions_float(mask):
    return ((mask.float().cumsum(-1) - 1).clamp(min=0) * mask)


def positions_in_place(mask):                    # changes the caller's mask
    m = mask.long() if mask.dtype == torch.bool else mask
    real = m.clone()
    m.cumsum_(-1).sub_(1).clamp_(min=0).mul_(real)
    return m


def waste_as_count(lengths):
    return padding_stats(lengths).pad_tokens


def waste_divided_by_real(lengths):
    s = padding_stats(lengths)
    return s.pad_tokens / s.real_tokens if s.real_tokens else 0.0


def waste_crashes_on_empty(lengths):
    return 1 - sum(lengths) / (len(lengths) * max(lengths))


def bucket_short_batch_last(lengths, batch_size):     # the hint's trap: sort, then chunk
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def bucket_descending(lengths, batch_size):
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def bucket_sorts_the_callers_list(lengths, batch_size):
    best = bucket_right(list(lengths), batch_size)
    lengths.sort()
    return best


RIGHT = [("pad_sequences", pad_right), ("attention_mask", mask_right), ("position_ids", positions_right),
         ("padding_waste", waste_right), ("bucket_batches", bucket_right)]
WRONG = [
    ("pad_sequences", pad_always_right), ("pad_sequences", pad_mutates_input),
    ("pad_sequences", pad_crashes_on_empty_batch), ("pad_sequences", pad_needs_lists),
    ("pad_sequences", pad_falsy_default),
    ("attention_mask", mask_bool), ("attention_mask", mask_float), ("attention_mask", mask_crashes_on_no_sequences),
    ("attention_mask", mask_sides_swapped),
    ("position_ids", positions_without_mask), ("position_ids", positions_arange), ("position_ids", positions_float),
    ("position_ids", positions_in_place),
    ("padding_waste", waste_as_count), ("padding_waste", waste_divided_by_real), ("padding_waste", waste_crashes_on_empty),
    ("bucket_batches", bucket_short_batch_last), ("bucket_batches", bucket_descending),
    ("bucket_batches", bucket_sorts_the_callers_list), ("bucket_batches", batches_in_order),
]


@pytest.mark.parametrize("task, fn", RIGHT, ids=lambda x: getattr(x, "__name__", x))
def test_right_answers_pass_every_case(task, fn):
    accepted(LESSON, task, fn)


@pytest.mark.parametrize("task, fn", WRONG, ids=lambda x: getattr(x, "__name__", x))
def test_plausible_wrong_answers_fail(task, fn):
    rejected(LESSON, task, fn)


@pytest.mark.parametrize("fn", [bucket_short_batch_last, bucket_descending, pad_needs_lists, pad_falsy_default,
                                mask_crashes_on_no_sequences], ids=lambda f: f.__name__)
def test_the_public_cases_miss_these_and_hidden_ones_catch_them(capsys, fn):
    task = {"bucket": "bucket_batches", "pad": "pad_sequences", "mask": "attention_mask"}[fn.__name__.split("_")[0]]
    assert verdict(capsys, getattr(C, f"check_{task}"), fn).startswith("✅")
    assert all(name.startswith("hidden:") for name in rejected(LESSON, task, fn))


def test_the_mask_must_be_long(capsys):
    out = verdict(capsys, C.check_attention_mask, mask_bool)
    assert out.startswith("❌ attention_mask: case 'left padding'") and '"bool"' in out


def test_check_cells_print_one_verdict_line(capsys):
    assert verdict(capsys, C.check_pad_sequences, pad_right) == "✅ pad_sequences: all 7 cases pass"
    assert "not implemented yet" in verdict(capsys, C.check_pad_sequences, stub)
    assert "raised ZeroDivisionError: division by zero" in verdict(capsys, C.check_padding_waste, lambda l: 1 / 0)
    assert "changed argument 1" in verdict(capsys, C.check_pad_sequences, pad_mutates_input)
