"""Exercise 02's hidden cases."""

from __future__ import annotations

import random

from course_lib.checks.core import Case


def _arena(rng: random.Random, capacity: int):
    """Random used spans and holes of an arena: (holes [(start, size)], used [(start, size)])."""
    holes, used, pos = [], [], 0
    while pos < capacity:
        n = min(rng.randint(1, 9), capacity - pos)
        (used if rng.random() < 0.5 else holes).append((pos, n))
        pos += n
    merged = []
    for s, n in holes:                      # holes never touch: merge neighbours
        if merged and merged[-1][0] + merged[-1][1] == s:
            merged[-1] = (merged[-1][0], merged[-1][1] + n)
        else:
            merged.append((s, n))
    return merged, used


def cases(rng: random.Random, refs: dict | None = None) -> dict[str, list[Case]]:
    dtypes = ["float32", "float16", "bfloat16"]
    configs = []
    for i in range(5):
        heads = rng.choice([2, 4, 8, 12, 16])
        kv = rng.choice([d for d in range(1, heads + 1) if heads % d == 0])
        cfg = {"num_hidden_layers": rng.randint(1, 48), "hidden_size": heads * rng.choice([16, 64, 128]),
               "num_attention_heads": heads, "torch_dtype": rng.choice(dtypes)}
        if kv != heads or rng.random() < 0.5:
            cfg["num_key_value_heads"] = kv
        if rng.random() < 0.4:
            cfg["head_dim"] = rng.choice([32, 80, 96])
        configs.append(Case(f"random config {i}", (cfg,)))
    fits, frees, splits = [], [], []
    for i in range(5):
        holes, used = _arena(rng, rng.randint(20, 60))
        fits.append(Case(f"random holes {i}", (holes, rng.randint(1, 12))))
        if used:
            frees.append(Case(f"random free {i}", (holes, *rng.choice(used))))
        slabs = [(n, w, rng.randint(w, n)) for _, n in used for w in [rng.randint(0, n)]]
        cap = sum(n for _, n in used) + sum(n for _, n in holes)
        splits.append(Case(f"random arena {i}", (cap, slabs, [n for _, n in holes], rng.choice([0, 3, 6, 10]))))
    return {
        "kv_bytes_per_token": [
            Case("GQA with head_dim given", ({"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 8,
                                              "num_key_value_heads": 2, "head_dim": 16, "torch_dtype": "float16"},)),
            Case("num_key_value_heads equal to the heads", ({"num_hidden_layers": 3, "hidden_size": 96,
                                                             "num_attention_heads": 6, "num_key_value_heads": 6,
                                                             "torch_dtype": "float32"},)),
            Case("other keys in the config", ({"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2,
                                               "vocab_size": 50000, "intermediate_size": 88,
                                               "torch_dtype": "bfloat16"},)),
        ] + configs,
        "first_fit": [
            Case("a too-small hole first, then an exact one", ([(0, 2), (5, 3)], 3)),
            Case("only the last hole fits", ([(0, 1), (3, 2), (9, 7)], 7)),
            Case("one slot", ([(4, 1)], 1)),
            Case("larger than every hole", ([(0, 5), (10, 5)], 6)),
        ] + fits,
        "free_slab": [
            Case("merge with both of three holes' middle neighbours", ([(0, 2), (5, 2), (10, 2)], 7, 3)),
            Case("a gap of one slot after", ([(10, 4)], 5, 4)),
            Case("at the very start, touching", ([(3, 4)], 0, 3)),
        ] + frees,
        "waste_split": [
            Case("nobody waits: no external fragmentation", (50, [(10, 2, 5)], [20, 20], 0)),
            Case("every hole smaller than the request", (30, [(10, 10, 10)], [4, 6, 10], 11)),
            Case("a slab larger than its final length", (40, [(32, 3, 7)], [8], 8)),
            Case("full arena, nothing free", (24, [(8, 8, 8), (16, 4, 12)], [], 5)),
        ] + splits,
    }
