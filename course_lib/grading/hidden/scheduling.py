"""Exercise 06's hidden cases, and the hand-over size measured on real KV packets (for the tests)."""

from __future__ import annotations

import random

import torch

from course_lib.checks.core import Case

# deadline_trace seeds the official policy was checked on (all goals met on 0..59); hidden ones come from here
DEADLINE_SEEDS = range(8, 60)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def measured_handover_bytes(config: dict, prompt_len: int, block_size: int | None) -> int:
    """Copy a prompt's K/V out of a real store, as the disaggregated server does, and count the packet's
    bytes. Paged stores (block_size given) send whole blocks."""
    from course_lib.engine.disagg import export_kv, handover_bytes
    from course_lib.kv.paged import PagedKVStore
    from course_lib.kv.reference import ReferenceKVStore
    from course_lib.kv.sizing import kv_bytes_per_token

    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads", heads)
    hd = config.get("head_dim", config["hidden_size"] // heads)
    layers, dtype = config["num_hidden_layers"], DTYPES[config["torch_dtype"]]
    per_token = kv_bytes_per_token(layers, kv, hd, torch.tensor([], dtype=dtype).element_size())
    if per_token * (prompt_len + (block_size or 1)) > 64 * 2**20:       # too big to copy: the formula
        return handover_bytes(prompt_len, per_token, block_size)
    if block_size is None:
        src, dst = (ReferenceKVStore(layers, kv, hd, dtype=dtype) for _ in range(2))
    else:
        cap = -(-(prompt_len + 1) // block_size) * block_size
        src, dst = (PagedKVStore(layers, kv, hd, dtype=dtype, capacity=cap, block_size=block_size) for _ in range(2))
    src.add(0, list(range(prompt_len)), prompt_len + 1)
    zeros = torch.zeros(prompt_len, kv, hd, dtype=dtype)
    for layer in range(layers):
        src.write(layer, 0, 0, zeros, zeros)
    src.cached[0] = prompt_len
    return export_kv(src, 0, prompt_len, like=dst).nbytes


def cases(rng: random.Random, refs: dict | None = None) -> dict[str, list[Case]]:
    slos = []
    for i in range(4):
        reqs = []
        for _ in range(rng.randint(1, 5)):
            a = rng.randint(0, 20)
            t, times = a + rng.randint(0, 6), []
            for _ in range(rng.randint(0, 5)):
                times.append(t)
                t += rng.randint(1, 3)
            reqs.append((a, times))
        slos.append(Case(f"random requests {i}", (reqs, rng.randint(2, 5), rng.randint(1, 3))))
    handovers = []
    for i in range(4):
        heads = rng.choice([2, 4, 8])
        cfg = {"num_hidden_layers": rng.randint(1, 6), "hidden_size": heads * rng.choice([8, 16]),
               "num_attention_heads": heads, "torch_dtype": rng.choice(list(DTYPES))}
        if rng.random() < 0.6:
            cfg["num_key_value_heads"] = rng.choice([d for d in (1, 2, heads) if heads % d == 0])
        handovers.append(Case(f"random config {i}", (cfg, rng.randint(1, 70), rng.choice([None, 1, 4, 16]))))
    seeds = rng.sample([s for s in DEADLINE_SEEDS if s not in (12, 25)], 3)
    return {
        "slo_met": [
            Case("a stall between the last two tokens", ([(0.0, [0.1, 0.2, 0.3, 0.9])], 0.5, 0.2)),
            Case("TTFT exactly on target, one token", ([(2.0, [2.5])], 0.5, 0.1)),
            Case("a tuple of times", ([(0.0, (0.1, 0.2))], 0.5, 0.1)),
        ] + slos,
        "aged_priority": [
            Case("a negative priority", (-2, 0.0, 30.0, 0.1)),
            Case("integer times", (1, 3, 10, 1)),
            Case("now equal to arrival, a big rate", (1, 10.0, 10.0, 3.0)),
        ] + [Case(f"random request {i}", (rng.randint(0, 3), a, a + round(rng.uniform(0, 50), 3),
                                          round(rng.uniform(0, 2), 3)))
             for i, a in enumerate(round(rng.uniform(0, 100), 2) for _ in range(4))],
        "deadline_policy": [Case(f"deadline trace, seed {s}", (s,)) for s in [12, 25, *seeds]],
        "handover_bytes": [
            Case("block size 1: exactly the tokens", (dict(TINY_), 7, 1)),
            Case("a prompt of exactly one block", (dict(TINY_), 16, 16)),
            Case("grouped-query attention with head_dim", ({"num_hidden_layers": 2, "hidden_size": 64,
                                                            "num_attention_heads": 8, "num_key_value_heads": 2,
                                                            "head_dim": 4, "torch_dtype": "float16"}, 9, 4)),
        ] + handovers,
    }


TINY_ = {"num_hidden_layers": 4, "hidden_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
         "torch_dtype": "float32"}
