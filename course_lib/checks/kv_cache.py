"""Checks for lesson 02's exercise (the KV cache and fragmentation).

Each expected answer comes from course_lib itself (kv/sizing.py, kv/allocators.py,
kv/contiguous.py), so the checks and the lesson can never disagree.
"""

from __future__ import annotations

from course_lib.checks.core import Case, run_cases
from course_lib.kv.allocators import first_fit, insert_hole
from course_lib.kv.contiguous import split_usage
from course_lib.kv.sizing import shape_from_config

# Hugging Face-style configs (the keys a config.json uses).
CONFIGS = {
    "OPT-13B, the paper's 800 KB (no num_key_value_heads: plain multi-head)":
        {"num_hidden_layers": 40, "hidden_size": 5120, "num_attention_heads": 40, "torch_dtype": "float16"},
    "TinyLM in float32":
        {"num_hidden_layers": 4, "hidden_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
         "torch_dtype": "float32"},
    "Llama-3-8B: grouped-query attention, 8 KV heads":
        {"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
         "torch_dtype": "bfloat16"},
    "Llama-2-70B":
        {"num_hidden_layers": 80, "hidden_size": 8192, "num_attention_heads": 64, "num_key_value_heads": 8,
         "torch_dtype": "float16"},
    "head_dim given explicitly (Gemma-7B: 256, not 3072 / 16)":
        {"num_hidden_layers": 28, "hidden_size": 3072, "num_attention_heads": 16, "num_key_value_heads": 16,
         "head_dim": 256, "torch_dtype": "bfloat16"},
    "one layer, one head, float32":
        {"num_hidden_layers": 1, "hidden_size": 8, "num_attention_heads": 1, "torch_dtype": "float32"},
}


def check_kv_bytes_per_token(fn) -> None:
    """fn(config: dict) -> int: KV-cache bytes one token needs (keys and values, every layer)."""
    cases = [Case(name, (dict(cfg),), shape_from_config(cfg).bytes_per_token) for name, cfg in CONFIGS.items()]
    run_cases("kv_bytes_per_token", fn, cases)


def check_first_fit(fn) -> None:
    """fn(holes, size) -> (start, holes left) or None. holes: (start, size) sorted by start."""
    specs = [
        ("the first hole fits", [(0, 10), (20, 5)], 4),
        ("skip the holes that are too small", [(0, 3), (10, 8), (30, 20)], 5),
        ("an exact fit uses the hole up", [(0, 3), (10, 5)], 5),
        ("first, not best: a later hole fits better", [(0, 50), (60, 6)], 6),
        ("the paradox: 16 free in total, no hole of 12", [(0, 8), (16, 8)], 12),
        ("no free memory at all", [], 1),
        ("one big hole, the whole arena", [(0, 64)], 64),
    ]
    cases = [Case(name, (list(holes), size), first_fit(holes, size)) for name, holes, size in specs]
    run_cases("first_fit", fn, cases)


def check_free_slab(fn) -> None:
    """fn(holes, start, size) -> holes after freeing [start, start + size), merged with its neighbours."""
    specs = [
        ("merge with the hole after", [(8, 4)], 4, 4),
        ("merge with the hole before", [(0, 4)], 4, 4),
        ("merge on both sides", [(0, 4), (8, 4)], 4, 4),
        ("a gap of one slot: no merge", [(0, 4), (9, 3)], 5, 3),
        ("into an arena with no holes", [], 10, 6),
        ("lands before every hole", [(20, 5), (40, 5)], 0, 10),
        ("lands after every hole", [(0, 5)], 30, 2),
    ]
    cases = [Case(name, (list(holes), start, size), insert_hole(holes, start, size)) for name, holes, start, size in specs]
    run_cases("free_slab", fn, cases)


def _split(capacity, slabs, holes, request) -> dict:
    u = split_usage(capacity, slabs, holes, request)
    return {"token_states": u.token_states, "reserved": u.reserved, "internal": u.internal,
            "external": u.external, "free": u.free}


def check_waste_split(fn) -> None:
    """fn(capacity, slabs, holes, request) -> dict of token_states, reserved, internal, external, free.

    slabs:   (slab size, tokens written, final length) per request
    holes:   sizes of the free holes
    request: slots the waiting request needs (0: nobody is waiting)
    """
    specs = [
        ("Max: a 32-slot slab, 5 tokens written, 12 at the end", 100, [(32, 5, 12)], [68], 0),
        ("Oracle: slabs sized exactly, nobody waiting", 64, [(20, 10, 20), (30, 30, 30)], [14], 0),
        ("the paradox: holes of 8 and 8, a request of 12 waits", 32, [(8, 8, 8), (8, 3, 8)], [8, 8], 12),
        ("a hole exactly the request's size is usable", 40, [(28, 20, 24)], [12], 12),
        ("some holes too small, one big enough", 60, [(20, 4, 10)], [5, 10, 25], 12),
        ("an empty arena", 16, [], [16], 4),
        ("Pow2: several slabs", 128, [(64, 40, 50), (32, 17, 17), (16, 2, 9)], [16], 20),
    ]
    cases = [Case(name, (cap, list(slabs), list(holes), req), _split(cap, slabs, holes, req))
             for name, cap, slabs, holes, req in specs]
    run_cases("waste_split", fn, cases)
