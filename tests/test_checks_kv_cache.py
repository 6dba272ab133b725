"""The lesson-02 checks accept the reference answers (and independent re-implementations)
and reject plausible wrong ones."""

from __future__ import annotations

import pytest

from course_lib.checks import kv_cache as C
from course_lib.kv.allocators import best_fit, first_fit, insert_hole
from course_lib.kv.contiguous import split_usage
from course_lib.kv.sizing import shape_from_config
from helpers import verdict


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


def bytes_needs_kv_key(cfg):                     # KeyError on plain multi-head configs
    return 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * 128 * 2


def bytes_hidden_only(cfg):                      # the paper's 2 x hidden x layers x bytes: wrong for GQA
    return 2 * cfg["hidden_size"] * cfg["num_hidden_layers"] * 2


def bytes_ignores_head_dim(cfg):
    return bytes_right({k: v for k, v in cfg.items() if k != "head_dim"})


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


def first_fit_total_free(holes, size):           # "enough memory is free" -> place it anyway
    if sum(h for _, h in holes) < size:
        return None
    return first_fit(holes, size) or (holes[0][0], [])


def first_fit_from_the_end(holes, size):
    for i in reversed(range(len(holes))):
        s, h = holes[i]
        if h >= size:
            return s + h - size, holes[:i] + ([(s, h - size)] if h > size else []) + holes[i + 1:]
    return None


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


# ---- the tests ---------------------------------------------------------------------------
def test_reference_and_independent_answers_pass(capsys):
    assert verdict(capsys, C.check_kv_bytes_per_token, lambda cfg: shape_from_config(cfg).bytes_per_token).startswith("✅")
    assert verdict(capsys, C.check_kv_bytes_per_token, bytes_right).startswith("✅")
    assert verdict(capsys, C.check_first_fit, first_fit).startswith("✅")
    assert verdict(capsys, C.check_free_slab, insert_hole).startswith("✅")
    assert verdict(capsys, C.check_waste_split, split_right).startswith("✅")
    assert verdict(capsys, C.check_waste_split, split_independent).startswith("✅")


@pytest.mark.parametrize("check, wrong", [
    (C.check_kv_bytes_per_token, bytes_no_factor_two),
    (C.check_kv_bytes_per_token, bytes_query_heads),
    (C.check_kv_bytes_per_token, bytes_always_fp16),
    (C.check_kv_bytes_per_token, bytes_needs_kv_key),
    (C.check_kv_bytes_per_token, bytes_hidden_only),
    (C.check_kv_bytes_per_token, bytes_ignores_head_dim),
    (C.check_first_fit, best_fit),
    (C.check_first_fit, first_fit_strict),
    (C.check_first_fit, first_fit_keeps_empty_holes),
    (C.check_first_fit, first_fit_total_free),
    (C.check_first_fit, first_fit_from_the_end),
    (C.check_free_slab, free_no_merge),
    (C.check_free_slab, free_merge_after_only),
    (C.check_free_slab, free_unsorted),
    (C.check_free_slab, free_merges_across_gaps),
    (C.check_waste_split, split_all_free_external),
    (C.check_waste_split, split_less_or_equal),
    (C.check_waste_split, split_reserved_as_internal),
], ids=lambda f: getattr(f, "__name__", ""))
def test_plausible_wrong_answers_fail(capsys, check, wrong):
    out = verdict(capsys, check, wrong)
    assert out.startswith("❌") and "case" in out


def test_a_stub_is_reported_as_not_implemented(capsys):
    def stub(*args):
        raise NotImplementedError()
    for check in (C.check_kv_bytes_per_token, C.check_first_fit, C.check_free_slab, C.check_waste_split):
        assert "not implemented" in verdict(capsys, check, stub)
