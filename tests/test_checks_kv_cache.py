"""Exercise 02's tasks: right answers written differently pass every case (public, hidden, random);
plausible wrong ones fail some; each check cell prints one verdict line."""

from __future__ import annotations

import pytest

from checks_helpers import accepted, rejected, stub
from course_lib.checks import kv_cache as C
from course_lib.kv.allocators import best_fit, insert_hole
from course_lib.kv.contiguous import split_usage
from helpers import verdict

LESSON = C.LESSON


# ---- answers a learner might write --------------------------------------------------
def bytes_right(cfg):
    heads = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads", heads)
    hd = cfg.get("head_dim", cfg["hidden_size"] // heads)
    nbytes = {"float32": 4, "float16": 2, "bfloat16": 2}[cfg["torch_dtype"]]
    return 2 * cfg["num_hidden_layers"] * kv * hd * nbytes


def bytes_no_factor_two(cfg):
    return bytes_right(cfg) // 2


def bytes_query_heads(cfg):                      # ignores GQA
    return bytes_right({**cfg, "num_key_value_heads": cfg["num_attention_heads"]})


def bytes_always_fp16(cfg):
    return bytes_right({**cfg, "torch_dtype": "float16"})


def bytes_ignores_head_dim(cfg):
    return bytes_right({k: v for k, v in cfg.items() if k != "head_dim"})


def bytes_as_float(cfg):                         # true division: a float, where the task says int
    return 2 * cfg["num_hidden_layers"] * cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * \
        cfg.get("head_dim", cfg["hidden_size"] / cfg["num_attention_heads"]) * \
        {"float32": 4, "float16": 2, "bfloat16": 2}[cfg["torch_dtype"]]


def first_fit_right(holes, size):
    i = next((i for i, (_, n) in enumerate(holes) if n >= size), None)
    if i is None:
        return None
    start, n = holes[i]
    return start, holes[:i] + ([(start + size, n - size)] if n > size else []) + holes[i + 1:]


def first_fit_strict(holes, size):               # '>' instead of '>=': misses exact fits
    for i, (s, h) in enumerate(holes):
        if h > size:
            return s, holes[:i] + [(s + size, h - size)] + holes[i + 1:]
    return None


def first_fit_keeps_empty_holes(holes, size):
    for i, (s, h) in enumerate(holes):
        if h >= size:
            return s, holes[:i] + [(s + size, h - size)] + holes[i + 1:]
    return None


def first_fit_in_place(holes, size):             # shrinks the caller's list: the task says it must not
    for i, (s, h) in enumerate(holes):
        if h >= size:
            if h == size:
                holes.pop(i)
            else:
                holes[i] = (s + size, h - size)
            return s, holes
    return None


def first_fit_from_the_end(holes, size):
    for i in reversed(range(len(holes))):
        s, h = holes[i]
        if h >= size:
            return s + h - size, holes[:i] + ([(s, h - size)] if h > size else []) + holes[i + 1:]
    return None


def free_right(holes, start, size):
    before = [h for h in holes if h[0] + h[1] == start]
    after = [h for h in holes if h[0] == start + size]
    lo = before[0][0] if before else start
    hi = after[0][0] + after[0][1] if after else start + size
    rest = [h for h in holes if h not in before + after]
    return sorted(rest + [(lo, hi - lo)])


def free_no_merge(holes, start, size):
    return sorted(holes + [(start, size)])


def free_merge_after_only(holes, start, size):
    holes = sorted(holes)
    for i, (s, h) in enumerate(holes):
        if s == start + size:
            return holes[:i] + [(start, size + h)] + holes[i + 1:]
    return sorted(holes + [(start, size)])


def free_unsorted(holes, start, size):
    merged = insert_hole(holes, start, size)
    return merged[::-1] if len(merged) > 1 else merged


def free_merges_across_gaps(holes, start, size):
    out = []
    for s, h in sorted(holes + [(start, size)]):
        if out and out[-1][0] + out[-1][1] >= s - 1:
            out[-1] = (out[-1][0], s + h - out[-1][0])
        else:
            out.append((s, h))
    return out


def split_right(capacity, slabs, holes, request):
    u = split_usage(capacity, slabs, holes, request)
    return {"token_states": u.token_states, "reserved": u.reserved, "internal": u.internal,
            "external": u.external, "free": u.free}


def split_independent(capacity, slabs, holes, request):
    tokens = sum(t for _, t, _ in slabs)
    reserved = sum(min(f, s) - t for s, t, f in slabs)
    internal = sum(s - min(f, s) for s, _, f in slabs)
    external = sum(h for h in holes if h < request)
    return {"token_states": tokens, "reserved": reserved, "internal": internal, "external": external,
            "free": capacity - tokens - reserved - internal - external}


def split_all_free_external(capacity, slabs, holes, request):
    out = split_right(capacity, slabs, holes, request)
    return {**out, "external": out["external"] + out["free"], "free": 0} if request else out


def split_less_or_equal(capacity, slabs, holes, request):
    out = split_right(capacity, slabs, holes, 0)
    ext = sum(h for h in holes if h <= request)
    return {**out, "external": ext, "free": out["free"] - ext}


def split_reserved_as_internal(capacity, slabs, holes, request):
    out = split_right(capacity, slabs, holes, request)
    return {**out, "internal": out["internal"] + out["reserved"], "reserved": 0}


RIGHT = [("kv_bytes_per_token", bytes_right), ("first_fit", first_fit_right), ("free_slab", free_right),
         ("free_slab", insert_hole), ("waste_split", split_independent), ("waste_split", split_right)]
WRONG = [
    ("kv_bytes_per_token", bytes_no_factor_two), ("kv_bytes_per_token", bytes_query_heads),
    ("kv_bytes_per_token", bytes_always_fp16), ("kv_bytes_per_token", bytes_ignores_head_dim),
    ("kv_bytes_per_token", bytes_as_float),
    ("first_fit", best_fit), ("first_fit", first_fit_strict), ("first_fit", first_fit_keeps_empty_holes),
    ("first_fit", first_fit_in_place), ("first_fit", first_fit_from_the_end),
    ("free_slab", free_no_merge), ("free_slab", free_merge_after_only), ("free_slab", free_unsorted),
    ("free_slab", free_merges_across_gaps),
    ("waste_split", split_all_free_external), ("waste_split", split_less_or_equal),
    ("waste_split", split_reserved_as_internal),
]


@pytest.mark.parametrize("task, fn", RIGHT, ids=lambda x: getattr(x, "__name__", x))
def test_right_answers_pass_every_case(task, fn):
    accepted(LESSON, task, fn)


@pytest.mark.parametrize("task, fn", WRONG, ids=lambda x: getattr(x, "__name__", x))
def test_plausible_wrong_answers_fail(task, fn):
    rejected(LESSON, task, fn)


def test_check_cells_print_one_verdict_line(capsys):
    assert verdict(capsys, C.check_kv_bytes_per_token, bytes_right) == "✅ kv_bytes_per_token: all 6 cases pass"
    assert verdict(capsys, C.check_free_slab, free_no_merge).startswith("❌ free_slab: case 'merge with the hole after'")
    for check in (C.check_kv_bytes_per_token, C.check_first_fit, C.check_free_slab, C.check_waste_split):
        assert "not implemented" in verdict(capsys, check, stub)


def test_modifying_the_list_given_is_reported(capsys):
    out = verdict(capsys, C.check_first_fit, first_fit_in_place)
    assert out.startswith("❌") and "changed argument 1" in out
