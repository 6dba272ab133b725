"""Exercise 05's tasks on every case (public, hidden, random): right answers written differently pass,
plausible wrong ones fail, including a lookup that does not check the parent hash.
(tests/test_paged_checks.py checks the check cells' verdict lines on the public cases.)"""

from __future__ import annotations

import math

import pytest

from checks_helpers import accepted, rejected
from course_lib.checks import prefix as X
from course_lib.kv.prefix_cache import ROOT_HASH, block_hash

LESSON = X.LESSON


def chain_right(tokens, bs, hash_block):
    blocks = [tuple(tokens[i:i + bs]) for i in range(0, len(tokens) - len(tokens) % bs, bs)]
    out = []
    for b in blocks:
        out.append(hash_block(out[-1] if out else 0, b))
    return out


def chain_lists(tokens, bs, hash_block):             # passes the block as a list: the task says a tuple
    out, h = [], 0
    for i in range(len(tokens) // bs):
        h = hash_block(h, list(tokens[i * bs:(i + 1) * bs]))
        out.append(h)
    return out


def chain_unchained(tokens, bs, hash_block):
    return [hash_block(0, tuple(tokens[i * bs:(i + 1) * bs])) for i in range(len(tokens) // bs)]


def chain_with_partial(tokens, bs, hash_block):
    out, h = [], 0
    for i in range(math.ceil(len(tokens) / bs)):
        h = hash_block(h, tuple(tokens[i * bs:(i + 1) * bs]))
        out.append(h)
    return out


def cached_right(tokens, bs, cache):
    n, parent = 0, ROOT_HASH
    while n + bs <= len(tokens) - 1:
        block = tuple(tokens[n:n + bs])
        h = block_hash(parent, block)
        entry = cache.get(h)
        if entry is None or entry[0] != parent or tuple(entry[1]) != block:
            return n
        parent, n = h, n + bs
    return n


def cached_no_parent_check(tokens, bs, cache):      # compares the tokens only
    parent, n = ROOT_HASH, 0
    for i in range((len(tokens) - 1) // bs):
        block = tuple(tokens[i * bs:(i + 1) * bs])
        h = block_hash(parent, block)
        if h not in cache or cache[h][1] != block:
            break
        parent, n = h, n + bs
    return n


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
    for i in range(len(tokens) // bs):                  # may return len(tokens)
        block = tuple(tokens[i * bs:(i + 1) * bs])
        h = block_hash(parent, block)
        if cache.get(h) != (parent, block):
            break
        parent, n = h, n + bs
    return n


def cow_right(table, index, ref_count, free):
    block = table[index]
    if ref_count[block] > 1:
        if not free:
            raise MemoryError(f"no free block to copy block {block} into")
        table[index] = free.pop(0)
        ref_count[block] -= 1
        ref_count[table[index]] = 1
        return table[index], block
    return block, None


def cow_counts_before_raising(table, index, ref_count, free):   # changes the count, then finds no block
    old = table[index]
    if ref_count[old] == 1:
        return old, None
    ref_count[old] -= 1
    if not free:
        raise MemoryError
    new = free.pop(0)
    ref_count[new] = 1
    table[index] = new
    return new, old


def cow_forgets_count(table, index, ref_count, free):
    old = table[index]
    if ref_count[old] == 1:
        return old, None
    if not free:
        raise MemoryError
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


RIGHT = [("chain_hashes", chain_right), ("cached_prefix_len", cached_right), ("copy_on_write", cow_right),
         ("blocks_saved", lambda n, p, o, b: sum(p // b for _ in range(n - 1)))]
WRONG = [
    ("chain_hashes", chain_lists), ("chain_hashes", chain_unchained), ("chain_hashes", chain_with_partial),
    ("cached_prefix_len", cached_no_parent_check), ("cached_prefix_len", cached_trusts_hash),
    ("cached_prefix_len", cached_whole_prompt),
    ("copy_on_write", cow_counts_before_raising), ("copy_on_write", cow_forgets_count),
    ("copy_on_write", cow_takes_last_free),
    ("blocks_saved", lambda n, p, o, b: (n - 1) * math.ceil(p / b)),      # shares the partial block too
    ("blocks_saved", lambda n, p, o, b: n * (p // b)),
    ("blocks_saved", lambda n, p, o, b: (n - 1) * ((p + o) // b)),
]


@pytest.mark.parametrize("task, fn", RIGHT, ids=lambda x: getattr(x, "__name__", x))
def test_right_answers_pass_every_case(task, fn):
    accepted(LESSON, task, fn)


@pytest.mark.parametrize("task, fn", WRONG, ids=lambda x: getattr(x, "__name__", x))
def test_plausible_wrong_answers_fail(task, fn):
    rejected(LESSON, task, fn)


@pytest.mark.parametrize("task, fn", [("cached_prefix_len", cached_no_parent_check), ("chain_hashes", chain_lists)],
                         ids=lambda x: getattr(x, "__name__", x))
def test_hidden_cases_catch_what_the_public_ones_miss(task, fn):
    from course_lib.grading.evaluate import evaluate
    bad = [name for name, ok, _, _ in evaluate(LESSON, task, fn) if not ok]
    assert bad and all(n.startswith("hidden:") for n in bad)
