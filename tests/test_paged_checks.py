"""Lessons 04 and 05's checks accept the reference answers and reject plausible wrong ones."""

from __future__ import annotations

import math

import pytest
import torch

from course_lib.checks import paging as P
from course_lib.checks import prefix as X
from course_lib.kv.paged import slot_of
from course_lib.kv.prefix_cache import ROOT_HASH, block_hash, prefix_block_hashes
from course_lib.paged_attention import gather_kv
from helpers import verdict


# ---- reference answers (as a learner would write them) ----------------------------------------
def slot_ok(table, position, bs):
    return table[position // bs] * bs + position % bs


def append_ok(table, length, free, bs):
    if length % bs == 0:
        if not free:
            raise MemoryError("no free block")
        table.append(free.pop(0))
    return table[length // bs] * bs + length % bs


def frag_ok(lengths, bs):
    return sum(math.ceil(n / bs) * bs - n for n in lengths)


def attention_ok(q, key_blocks, value_blocks, table, context_len):
    K, V = gather_kv(key_blocks, value_blocks, table, context_len)          # (L, nkv, hd)
    rep = q.shape[0] // K.shape[1]
    K, V = K.repeat_interleave(rep, 1), V.repeat_interleave(rep, 1)         # (L, nh, hd)
    scores = torch.einsum("hd,lhd->hl", q, K) / math.sqrt(q.shape[-1])
    return torch.einsum("hl,lhd->hd", torch.softmax(scores, -1), V)


def chain_ok(tokens, bs, hash_block):
    out, h = [], 0
    for i in range(len(tokens) // bs):
        h = hash_block(h, tuple(tokens[i * bs:(i + 1) * bs]))
        out.append(h)
    return out


def cached_ok(tokens, bs, cache):
    parent, n = ROOT_HASH, 0
    for i in range((len(tokens) - 1) // bs):
        block = tuple(tokens[i * bs:(i + 1) * bs])
        h = block_hash(parent, block)
        if h not in cache or cache[h] != (parent, block):
            break
        parent, n = h, n + bs
    return n


def cow_ok(table, index, ref_count, free):
    old = table[index]
    if ref_count[old] == 1:
        return old, None
    if not free:
        raise MemoryError
    new = free.pop(0)
    ref_count[old] -= 1
    ref_count[new] = 1
    table[index] = new
    return new, old


def saved_ok(n, p, o, bs):
    return (n - 1) * (p // bs)


def test_reference_answers_pass(capsys):
    for check, fn in [(P.check_slot_for_position, slot_ok), (P.check_append_token, append_ok),
                      (P.check_internal_fragmentation, frag_ok), (P.check_paged_attention, attention_ok),
                      (X.check_chain_hashes, chain_ok), (X.check_cached_prefix_len, cached_ok),
                      (X.check_copy_on_write, cow_ok), (X.check_blocks_saved, saved_ok)]:
        out = verdict(capsys, check, fn)
        assert out.startswith("✅"), out


def test_course_lib_answers_pass(capsys):
    assert verdict(capsys, P.check_slot_for_position, slot_of).startswith("✅")
    assert verdict(capsys, X.check_chain_hashes, lambda t, b, h: prefix_block_hashes(t, b, h)).startswith("✅")


def test_a_stub_fails_with_a_hint(capsys):
    def stub(*args):
        raise NotImplementedError()
    for check in (P.check_slot_for_position, P.check_append_token, P.check_internal_fragmentation,
                  P.check_paged_attention, X.check_chain_hashes, X.check_cached_prefix_len, X.check_copy_on_write,
                  X.check_blocks_saved):
        out = verdict(capsys, check, stub)
        assert out.startswith("❌") and "not implemented" in out


# ---- plausible wrong answers --------------------------------------------------------------------
def attention_no_scale(q, kb, vb, table, L):
    K, V = gather_kv(kb, vb, table, L)
    rep = q.shape[0] // K.shape[1]
    K, V = K.repeat_interleave(rep, 1), V.repeat_interleave(rep, 1)
    return torch.einsum("hl,lhd->hd", torch.softmax(torch.einsum("hd,lhd->hl", q, K), -1), V)


def attention_sorted_table(q, kb, vb, table, L):
    return attention_ok(q, kb, vb, sorted(table), L)


def attention_whole_blocks(q, kb, vb, table, L):
    bs = kb.shape[-1]
    return attention_ok(q, kb, vb, table, len(table) * bs)             # attends to the empty tail too


def attention_keys_not_transposed(q, kb, vb, table, L):
    nb, nkv, hd, bs = kb.shape
    wrong = kb.reshape(nb, nkv, bs, hd).transpose(2, 3)                 # reads (hd, bs) as if it were (bs, hd)
    return attention_ok(q, wrong, vb, table, L)


def attention_heads_tiled(q, kb, vb, table, L):
    K, V = gather_kv(kb, vb, table, L)
    rep = q.shape[0] // K.shape[1]
    K, V = K.repeat(1, rep, 1), V.repeat(1, rep, 1)                     # head h -> kv head h % nkv (wrong GQA)
    scores = torch.einsum("hd,lhd->hl", q, K) / math.sqrt(q.shape[-1])
    return torch.einsum("hl,lhd->hd", torch.softmax(scores, -1), V)


def chain_unchained(tokens, bs, hash_block):
    return [hash_block(0, tuple(tokens[i * bs:(i + 1) * bs])) for i in range(len(tokens) // bs)]


def chain_with_partial(tokens, bs, hash_block):
    out, h = [], 0
    for i in range(math.ceil(len(tokens) / bs)):
        h = hash_block(h, tuple(tokens[i * bs:(i + 1) * bs]))
        out.append(h)
    return out


def chain_parent_is_tokens(tokens, bs, hash_block):
    out, parent = [], 0
    for i in range(len(tokens) // bs):
        block = tuple(tokens[i * bs:(i + 1) * bs])
        out.append(hash_block(parent, block))
        parent = block[-1]
    return out


def cached_trusts_hash(tokens, bs, cache):
    parent, n = ROOT_HASH, 0
    for i in range((len(tokens) - 1) // bs):
        h = block_hash(parent, tuple(tokens[i * bs:(i + 1) * bs]))
        if h not in cache:
            break
        parent, n = h, n + bs
    return n


def cached_whole_prompt(tokens, bs, cache):
    parent, n = ROOT_HASH, 0
    for i in range(len(tokens) // bs):                                   # may return len(tokens)
        block = tuple(tokens[i * bs:(i + 1) * bs])
        h = block_hash(parent, block)
        if cache.get(h) != (parent, block):
            break
        parent, n = h, n + bs
    return n


def cached_skips_misses(tokens, bs, cache):
    parent, n = ROOT_HASH, 0
    for i in range((len(tokens) - 1) // bs):
        block = tuple(tokens[i * bs:(i + 1) * bs])
        h = block_hash(parent, block)
        if cache.get(h) == (parent, block):
            n += bs
        parent = h
    return n


def cow_always_copies(table, index, ref_count, free):
    old = table[index]
    if not free:
        raise MemoryError
    new = free.pop(0)
    ref_count[old] -= 1
    ref_count[new] = 1
    table[index] = new
    return new, old


def cow_forgets_count(table, index, ref_count, free):
    old = table[index]
    if ref_count[old] == 1:
        return old, None
    new = free.pop(0)
    table[index] = new
    return new, old


def cow_takes_last_free(table, index, ref_count, free):
    old = table[index]
    if ref_count[old] == 1:
        return old, None
    if not free:
        raise MemoryError
    new = free.pop()
    ref_count[old] -= 1
    ref_count[new] = 1
    table[index] = new
    return new, old


@pytest.mark.parametrize("check,fn", [
    (P.check_slot_for_position, lambda t, p, b: p),                              # ignores the table
    (P.check_slot_for_position, lambda t, p, b: t[p // b] * b),                  # forgets the offset
    (P.check_slot_for_position, lambda t, p, b: t[p // b] + p % b),              # block id is not a slot
    (P.check_slot_for_position, lambda t, p, b: t[p % len(t)] * b + p % b),
    (P.check_append_token, lambda t, n, f, b: (t.append(f.pop(0)), t[-1] * b + n % b)[1]),   # always allocates
    (P.check_append_token, lambda t, n, f, b: (t.append(f.pop()) if n % b == 0 else None, t[n // b] * b + n % b)[1]),
    (P.check_append_token, lambda t, n, f, b: (t.append(f.pop(0)) if n % b == 0 and f else None,
                                               t[min(n // b, len(t) - 1)] * b + n % b)[1]),  # no MemoryError
    (P.check_append_token, lambda t, n, f, b: (t.append(f.pop(0)) if n % b == 0 else None, n)[1]),  # position, not slot
    (P.check_internal_fragmentation, lambda l, b: sum(n % b for n in l)),
    (P.check_internal_fragmentation, lambda l, b: sum(b - n % b for n in l)),
    (P.check_internal_fragmentation, lambda l, b: len(l) * b // 2),
    (P.check_paged_attention, attention_no_scale),
    (P.check_paged_attention, attention_sorted_table),
    (P.check_paged_attention, attention_whole_blocks),
    (P.check_paged_attention, attention_keys_not_transposed),
    (P.check_paged_attention, attention_heads_tiled),
    (X.check_chain_hashes, chain_unchained),
    (X.check_chain_hashes, chain_with_partial),
    (X.check_chain_hashes, chain_parent_is_tokens),
    (X.check_cached_prefix_len, cached_trusts_hash),
    (X.check_cached_prefix_len, cached_whole_prompt),
    (X.check_cached_prefix_len, cached_skips_misses),
    (X.check_copy_on_write, cow_always_copies),
    (X.check_copy_on_write, cow_forgets_count),
    (X.check_copy_on_write, cow_takes_last_free),
    (X.check_blocks_saved, lambda n, p, o, b: (n - 1) * math.ceil(p / b)),        # shares the partial block too
    (X.check_blocks_saved, lambda n, p, o, b: n * (p // b)),
    (X.check_blocks_saved, lambda n, p, o, b: (n - 1) * ((p + o) // b)),
])
def test_wrong_answers_fail(capsys, check, fn):
    out = verdict(capsys, check, fn)
    assert out.startswith("❌"), out
