"""Exercise 04's tasks on every case (public, hidden, random): right answers written differently pass,
plausible wrong ones fail, including IndexError for MemoryError and block-boundary slips.
(tests/test_paged_checks.py checks the check cells' verdict lines on the public cases.)"""

from __future__ import annotations

import math

import pytest
import torch

from checks_helpers import accepted, rejected
from course_lib.checks import paging as P
from course_lib.kv.paged import slot_of
from course_lib.paged_attention import gather_kv

LESSON = P.LESSON


def slot_right(table, position, bs):
    block, offset = divmod(position, bs)
    return table[block] * bs + offset


def append_right(table, length, free, bs):
    if len(table) * bs == length:
        if len(free) == 0:
            raise MemoryError("pool exhausted")
        table += [free.pop(0)]
    return slot_of(table, length, bs)


def append_index_error(table, length, free, bs):     # free.pop(0) on an empty list: IndexError, not MemoryError
    if length % bs == 0:
        table.append(free.pop(0))
    return table[length // bs] * bs + length % bs


def append_takes_last(table, length, free, bs):
    if length % bs == 0:
        if not free:
            raise MemoryError
        table.append(free.pop())
    return table[length // bs] * bs + length % bs


def append_off_by_one(table, length, free, bs):      # a new block one token too late
    if length and (length - 1) % bs == 0 and length > 1 or not table:
        if not free:
            raise MemoryError
        table.append(free.pop(0))
    block = min(length // bs, len(table) - 1)
    return table[block] * bs + length % bs


def frag_right(lengths, bs):
    return sum((-n) % bs for n in lengths)


def attention_right(q, key_blocks, value_blocks, table, context_len):
    bs = key_blocks.shape[-1]
    ks, vs = [], []
    for pos in range(context_len):
        b, o = table[pos // bs], pos % bs
        ks.append(key_blocks[b, :, :, o])
        vs.append(value_blocks[b, :, o, :])
    K, V = torch.stack(ks, 1), torch.stack(vs, 1)                  # (nkv, L, hd)
    group = q.shape[0] // K.shape[0]
    out = []
    for h in range(q.shape[0]):
        w = torch.softmax(K[h // group] @ q[h] / math.sqrt(q.shape[-1]), 0)
        out.append(w @ V[h // group])
    return torch.stack(out)


def attention_ok(q, kb, vb, table, L):
    K, V = gather_kv(kb, vb, table, L)
    rep = q.shape[0] // K.shape[1]
    K, V = K.repeat_interleave(rep, 1), V.repeat_interleave(rep, 1)
    scores = torch.einsum("hd,lhd->hl", q, K) / math.sqrt(q.shape[-1])
    return torch.einsum("hl,lhd->hd", torch.softmax(scores, -1), V)


def attention_no_scale(q, kb, vb, table, L):
    return attention_ok(q * math.sqrt(q.shape[-1]), kb, vb, table, L)


def attention_whole_blocks(q, kb, vb, table, L):
    return attention_ok(q, kb, vb, table, len(table) * kb.shape[-1])     # attends to the empty tail


def attention_heads_tiled(q, kb, vb, table, L):                          # head h -> kv head h % nkv
    K, V = gather_kv(kb, vb, table, L)
    rep = q.shape[0] // K.shape[1]
    K, V = K.repeat(1, rep, 1), V.repeat(1, rep, 1)
    scores = torch.einsum("hd,lhd->hl", q, K) / math.sqrt(q.shape[-1])
    return torch.einsum("hl,lhd->hd", torch.softmax(scores, -1), V)


def attention_keys_not_transposed(q, kb, vb, table, L):
    nb, nkv, hd, bs = kb.shape
    return attention_ok(q, kb.reshape(nb, nkv, bs, hd).transpose(2, 3), vb, table, L)


def attention_float64(q, kb, vb, table, L):                              # the task returns q's dtype
    return attention_ok(q.double(), kb.double(), vb.double(), table, L)


RIGHT = [("slot_for_position", slot_right), ("append_token", append_right),
         ("internal_fragmentation", frag_right), ("paged_attention", attention_right)]
WRONG = [
    ("slot_for_position", lambda t, p, b: p), ("slot_for_position", lambda t, p, b: t[p // b] * b),
    ("slot_for_position", lambda t, p, b: t[p // b] + p % b),
    ("append_token", append_index_error), ("append_token", append_takes_last), ("append_token", append_off_by_one),
    ("append_token", lambda t, n, f, b: (t.append(f.pop(0)), t[-1] * b + n % b)[1]),          # always allocates
    ("internal_fragmentation", lambda l, b: sum(n % b for n in l)),
    ("internal_fragmentation", lambda l, b: sum(b - n % b for n in l)),
    ("internal_fragmentation", lambda l, b: sum(math.ceil(n / b) * b for n in l) - sum(l) + (b if not l else 0)),
    ("paged_attention", attention_no_scale), ("paged_attention", attention_whole_blocks),
    ("paged_attention", attention_heads_tiled), ("paged_attention", attention_keys_not_transposed),
    ("paged_attention", attention_float64),
]


@pytest.mark.parametrize("task, fn", RIGHT, ids=lambda x: getattr(x, "__name__", x))
def test_right_answers_pass_every_case(task, fn):
    accepted(LESSON, task, fn)


@pytest.mark.parametrize("task, fn", WRONG, ids=lambda x: getattr(x, "__name__", x))
def test_plausible_wrong_answers_fail(task, fn):
    rejected(LESSON, task, fn)


def test_index_error_is_not_memory_error():
    from course_lib.grading.evaluate import evaluate
    bad = [(n, got) for n, ok, got, _ in evaluate(LESSON, "append_token", append_index_error) if not ok]
    assert bad and all('"IndexError"' in got for _, got in bad)
