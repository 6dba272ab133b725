"""The lesson-01 checks accept the reference answers and reject plausible wrong ones."""

import pytest
import torch

from course_lib.checks import padding as C
from course_lib.padding import (attention_mask_from_lengths, batches_in_order, bucket_by_length, pad_tokens,
                                padding_stats, position_ids_from_mask)
from helpers import verdict


def test_reference_answers_pass(capsys):
    assert verdict(capsys, C.check_pad_sequences, lambda s, p, side: pad_tokens(s, p, side)).startswith("✅")
    assert verdict(capsys, C.check_attention_mask, attention_mask_from_lengths).startswith("✅")
    assert verdict(capsys, C.check_position_ids, position_ids_from_mask).startswith("✅")
    assert verdict(capsys, C.check_padding_waste, lambda l: padding_stats(l).token_waste).startswith("✅")
    assert verdict(capsys, C.check_bucket_batches, bucket_by_length).startswith("✅")


def always_right(seqs, pad, side):
    return pad_tokens(seqs, pad, "right")


def off_by_one_mask(lengths, side):
    m = attention_mask_from_lengths(lengths, side)
    return torch.roll(m, 1, dims=1)


def positions_with_padding_counted(mask):
    return torch.arange(mask.shape[1]).expand_as(mask).clone()


def waste_as_count(lengths):
    return padding_stats(lengths).pad_tokens


def waste_divided_by_real(lengths):
    s = padding_stats(lengths)
    return s.pad_tokens / s.real_tokens


def mask_as_bool(lengths, side):
    return attention_mask_from_lengths(lengths, side).bool().float() + 0.5  # wrong values


def mutates_input(seqs, pad, side):
    T = max(map(len, seqs), default=0)
    for s in seqs:
        s.extend([pad] * (T - len(s)))
    return seqs


@pytest.mark.parametrize("check,fn", [
    (C.check_pad_sequences, always_right),
    (C.check_pad_sequences, lambda s, p, side: [list(x) for x in s]),
    (C.check_attention_mask, off_by_one_mask),
    (C.check_attention_mask, lambda l, side: attention_mask_from_lengths(l, "left")),
    (C.check_attention_mask, mask_as_bool),
    (C.check_position_ids, positions_with_padding_counted),
    (C.check_position_ids, lambda m: m.cumsum(-1)),
    (C.check_padding_waste, waste_as_count),
    (C.check_padding_waste, waste_divided_by_real),
    (C.check_bucket_batches, batches_in_order),
    (C.check_bucket_batches, lambda l, b: [list(range(len(l)))]),
])
def test_wrong_answers_are_rejected(capsys, check, fn):
    assert verdict(capsys, check, fn).startswith("❌")


def test_stub_and_crash_give_one_line_verdicts(capsys):
    def stub(*a):
        raise NotImplementedError()
    assert "not implemented yet" in verdict(capsys, C.check_pad_sequences, stub)
    assert "raised ZeroDivisionError" in verdict(capsys, C.check_padding_waste, lambda l: 1 / 0)
