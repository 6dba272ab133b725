"""Exercise 02 (the KV cache and fragmentation): the tasks, their public cases, the check cells' functions."""

from __future__ import annotations

from course_lib.checks.core import Case, Task, practice

LESSON = "02_kv_cache_and_fragmentation"

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

TASKS = {t.name: t for t in [
    Task("kv_bytes_per_token", [Case(name, (dict(cfg),)) for name, cfg in CONFIGS.items()]),
    Task("first_fit", [
        Case("the first hole fits", ([(0, 10), (20, 5)], 4)),
        Case("skip the holes that are too small", ([(0, 3), (10, 8), (30, 20)], 5)),
        Case("an exact fit uses the hole up", ([(0, 3), (10, 5)], 5)),
        Case("first, not best: a later hole fits better", ([(0, 50), (60, 6)], 6)),
        Case("the paradox: 16 free in total, no hole of 12", ([(0, 8), (16, 8)], 12)),
        Case("no free memory at all", ([], 1)),
        Case("one big hole, the whole arena", ([(0, 64)], 64)),
    ]),
    Task("free_slab", [
        Case("merge with the hole after", ([(8, 4)], 4, 4)),
        Case("merge with the hole before", ([(0, 4)], 4, 4)),
        Case("merge on both sides", ([(0, 4), (8, 4)], 4, 4)),
        Case("a gap of one slot: no merge", ([(0, 4), (9, 3)], 5, 3)),
        Case("into an arena with no holes", ([], 10, 6)),
        Case("lands before every hole", ([(20, 5), (40, 5)], 0, 10)),
        Case("lands after every hole", ([(0, 5)], 30, 2)),
    ]),
    Task("waste_split", [
        Case("Max: a 32-slot slab, 5 tokens written, 12 at the end", (100, [(32, 5, 12)], [68], 0)),
        Case("Oracle: slabs sized exactly, nobody waiting", (64, [(20, 10, 20), (30, 30, 30)], [14], 0)),
        Case("the paradox: holes of 8 and 8, a request of 12 waits", (32, [(8, 8, 8), (8, 3, 8)], [8, 8], 12)),
        Case("a hole exactly the request's size is usable", (40, [(28, 20, 24)], [12], 12)),
        Case("some holes too small, one big enough", (60, [(20, 4, 10)], [5, 10, 25], 12)),
        Case("an empty arena", (16, [], [16], 4)),
        Case("Pow2: several slabs", (128, [(64, 40, 50), (32, 17, 17), (16, 2, 9)], [16], 20)),
    ]),
]}


def check_kv_bytes_per_token(fn) -> None:
    """fn(config: dict) -> int: KV-cache bytes one token needs (keys and values, every layer)."""
    practice(LESSON, TASKS["kv_bytes_per_token"], fn)


def check_first_fit(fn) -> None:
    """fn(holes, size) -> (start, holes left) or None; the list given is not modified."""
    practice(LESSON, TASKS["first_fit"], fn)


def check_free_slab(fn) -> None:
    """fn(holes, start, size) -> holes after freeing [start, start + size), merged with its neighbours."""
    practice(LESSON, TASKS["free_slab"], fn)


def check_waste_split(fn) -> None:
    """fn(capacity, slabs, holes, request) -> dict of token_states, reserved, internal, external, free."""
    practice(LESSON, TASKS["waste_split"], fn)
