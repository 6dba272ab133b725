"""Checks for lesson 06's exercise (scheduling policies and disaggregation).

The expected answers come from course_lib itself: the ageing rule from
course_lib.engine.queues.Ageing, the goals of the deadline task from runs of
the real engine (PriorityEngine, a step clock, so every verdict is
deterministic), the hand-over size from real KV packets copied out of real
stores (course_lib.engine.disagg.export_kv), the SLO verdicts from
course_lib.engine.slo.meets.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from course_lib.checks.core import Case, run_cases
from course_lib.engine.priority import PriorityEngine, clone_tagged
from course_lib.engine.queues import Ageing
from course_lib.labs.scheduling import deadline_trace, starvation, two_class_trace
from course_lib.engine.request import Request, State
from course_lib.engine.slo import SLO, meets


@lru_cache(maxsize=1)
def _model():
    """The lessons' TinyLM (float32, seed 0). Schedules do not depend on its numbers:
    every request runs to its max_new_tokens, so the checks' verdicts are exact."""
    from course_lib.model import build_model
    return build_model()


def _close(got, expected) -> bool:
    return (not isinstance(got, bool) and isinstance(got, (int, float)) and math.isfinite(got)
            and abs(got - expected) <= 1e-9 * max(1.0, abs(expected)))


# ---- task 1: ageing ---------------------------------------------------------------------------------------
STARVATION = dict(n_high=30, n_low=3, high_every=2.5, low_at=4, high_output=10, low_output=10)
ENGINE = dict(policy="decode-first", max_running=4, max_tokens_per_step=32, clock="steps")
AGEING_RATE = 0.1


def reference_aged_priority(priority, arrival, now, rate):
    return Ageing(rate).effective_priority(Request([0], 1, arrival=arrival, priority=priority), now)


def longest_low_priority_wait(aged_priority, rate: float = AGEING_RATE) -> float:
    """Run the starvation trace with the queue ordered by `aged_priority` (largest first)
    and return the longest queueing delay of a low-priority request (steps)."""
    key = lambda req, now: -aged_priority(req.priority, req.arrival, now, rate)
    res = PriorityEngine(_model(), queue=key, **ENGINE).run(clone_tagged(two_class_trace(**STARVATION)))
    return starvation(res, priority=0)


AGEING_SPECS = [
    ("just arrived", (1, 5.0, 5.0, 0.1)),
    ("waited 10 steps at rate 0.1", (1, 5.0, 15.0, 0.1)),
    ("rate 0: strict priority", (2, 0.0, 100.0, 0.0)),
    ("low priority that waited long", (0, 0.0, 40.0, 0.1)),
    ("fractional times", (3, 1.5, 2.25, 2.0)),
    ("a big rate", (0, 10.0, 11.0, 5.0)),
]


def check_aged_priority(fn) -> bool:
    """fn(priority, arrival, now, rate) -> the effective priority (larger runs first)."""
    cases = [Case(name, ("value", args), reference_aged_priority(*args), compare=_close) for name, args in AGEING_SPECS]
    want = longest_low_priority_wait(reference_aged_priority)
    cases.append(Case("the starvation trace, as the engine's queue order (longest low-priority wait, steps)",
                      ("engine", None), want, compare=_close))

    def call(kind, args):
        if kind == "value":
            return fn(*args)
        return longest_low_priority_wait(fn)

    return run_cases("aged_priority", call, cases)


# ---- task 2: a policy with a goal ----------------------------------------------------------------------------
DEADLINE_ENGINE = dict(policy="chunked", max_running=2, max_tokens_per_step=32, clock="steps", preempt=True)
BATCH_WAIT = 25.0          # steps: a batch request's first token must come within this long
PUBLIC_SEEDS = (0, 3, 5, 7)


def goal_report(key, seed: int) -> str:
    """Run the deadline trace `seed` with queue order `key`; 'all goals met' or what was missed."""
    reqs = deadline_trace(seed)
    res = PriorityEngine(_model(), queue=key, **DEADLINE_ENGINE).run(clone_tagged(reqs))
    inter = [r for r in res.requests if r.priority == 1]
    batch = [r for r in res.requests if r.priority == 0]
    missed = [r.rid for r in inter if r.first_token_time is None or r.first_token_time > r.deadline + 1e-9]
    slow = [(r.rid, r.first_token_time - r.arrival) for r in batch
            if r.first_token_time is None or r.first_token_time - r.arrival > BATCH_WAIT + 1e-9]
    unfinished = [r.rid for r in res.requests if r.state is not State.FINISHED]
    problems = []
    if missed:
        problems.append(f"{len(missed)} interactive deadline(s) missed (requests {missed[:4]})")
    if slow:
        worst = max(slow, key=lambda x: x[1])
        problems.append(f"{len(slow)} batch request(s) waited over {BATCH_WAIT:g} steps (request {worst[0]}: {worst[1]:g})")
    if unfinished:
        problems.append(f"requests {unfinished[:4]} did not finish")
    return "; ".join(problems) if problems else "all goals met"


def check_deadline_policy(fn, seeds=PUBLIC_SEEDS) -> bool:
    """fn(req, now) (or fn(req)) -> a sort key, smaller first: every interactive request's first
    token by its deadline, every batch request's first token within BATCH_WAIT steps."""
    cases = [Case(f"deadline trace, seed {s}", (s,), "all goals met") for s in seeds]
    return run_cases("deadline_policy", lambda seed: goal_report(fn, seed), cases)


# ---- task 3: the KV hand-over size ------------------------------------------------------------------------------
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _shape(config: dict) -> tuple[int, int, int, torch.dtype]:
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads", heads)
    hd = config.get("head_dim", config["hidden_size"] // heads)
    return config["num_hidden_layers"], kv, hd, DTYPES[config["torch_dtype"]]


def measured_handover_bytes(config: dict, prompt_len: int, block_size: int | None) -> int:
    """Copy a prompt's K/V out of a real store, as the disaggregated server does, and count
    the packet's bytes. Paged stores (block_size given) send whole blocks."""
    from course_lib.engine.disagg import export_kv, handover_bytes
    from course_lib.kv.paged import PagedKVStore
    from course_lib.kv.reference import ReferenceKVStore
    from course_lib.kv.sizing import kv_bytes_per_token

    layers, kv, hd, dtype = _shape(config)
    per_token = kv_bytes_per_token(layers, kv, hd, torch.tensor([], dtype=dtype).element_size())
    if per_token * (prompt_len + (block_size or 1)) > 64 * 2**20:       # too big to copy in a check: the formula
        return handover_bytes(prompt_len, per_token, block_size)         # (tests check it against real packets)
    if block_size is None:
        src, dst = (ReferenceKVStore(layers, kv, hd, dtype=dtype) for _ in range(2))
    else:
        cap = -(-(prompt_len + 1) // block_size) * block_size
        src, dst = (PagedKVStore(layers, kv, hd, dtype=dtype, capacity=cap, block_size=block_size) for _ in range(2))
    tokens = list(range(prompt_len))
    src.add(0, tokens, prompt_len + 1)
    zeros = torch.zeros(prompt_len, kv, hd, dtype=dtype)
    for layer in range(layers):
        src.write(layer, 0, 0, zeros, zeros)
    src.cached[0] = prompt_len
    return export_kv(src, 0, prompt_len, like=dst).nbytes


TINY = {"num_hidden_layers": 4, "hidden_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "torch_dtype": "float32"}
MHA16 = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "torch_dtype": "float16"}
HEADDIM = {"num_hidden_layers": 3, "hidden_size": 96, "num_attention_heads": 6, "num_key_value_heads": 3,
           "head_dim": 8, "torch_dtype": "bfloat16"}
OPT13B = {"num_hidden_layers": 40, "hidden_size": 5120, "num_attention_heads": 40, "torch_dtype": "float16"}

HANDOVER_SPECS = [
    ("TinyLM, 10-token prompt, blocks of 4", TINY, 10, 4),
    ("a prompt that fills its blocks exactly", TINY, 32, 16),
    ("one token more", TINY, 33, 16),
    ("a one-token prompt", TINY, 1, 16),
    ("plain multi-head attention in fp16", MHA16, 20, 8),
    ("head_dim given, bf16", HEADDIM, 7, 4),
    ("tokens, not blocks (block_size None)", TINY, 10, None),
    ("OPT-13B, ShareGPT's mean prompt (161), blocks of 16", OPT13B, 161, 16),
]


def check_handover_bytes(fn) -> bool:
    """fn(config, prompt_len, block_size) -> bytes of K/V sent to the decode engine."""
    cases = [Case(name, (dict(cfg), n, bs), measured_handover_bytes(cfg, n, bs)) for name, cfg, n, bs in HANDOVER_SPECS]
    return run_cases("handover_bytes", fn, cases)


# ---- task 4: requests meeting an SLO ----------------------------------------------------------------------------
def _request(arrival: float, times) -> Request:
    r = Request([0], max(1, len(times)), arrival=arrival)
    r.token_times = list(times)
    r.state = State.FINISHED if times else State.WAITING
    return r


def reference_slo_met(requests, ttft_target, tbt_target) -> int:
    slo = SLO(ttft_target, tbt_target)
    return sum(meets(_request(a, t), slo) for a, t in requests)


SLO_SPECS = [
    ("all fast", [(0.0, [0.1, 0.15, 0.2]), (1.0, [1.2, 1.25])], 0.5, 0.1),
    ("one slow first token", [(0.0, [0.9, 0.95]), (0.0, [0.2, 0.25])], 0.5, 0.1),
    ("a stall mid-stream fails even if the mean gap is fine", [(0.0, [0.1, 0.12, 0.14, 0.5, 0.52, 0.54])], 0.5, 0.1),
    ("exactly on both targets counts as met", [(1.0, [1.5, 1.625, 1.75])], 0.5, 0.125),
    ("one token: only TTFT matters", [(0.0, [0.3])], 0.5, 0.1),
    ("no token at all: missed", [(0.0, [])], 0.5, 0.1),
    ("nobody", [], 0.5, 0.1),
    ("steps as the unit", [(0, [3, 4, 5]), (2, [9, 10]), (4, [6, 8, 9])], 5, 1),
]


def check_slo_met(fn) -> bool:
    """fn(requests, ttft_target, tbt_target) -> how many requests met both targets.
    requests: [(arrival, [time of each token])]."""
    cases = [Case(name, ([(a, list(t)) for a, t in reqs], ttft, tbt), reference_slo_met(reqs, ttft, tbt))
             for name, reqs, ttft, tbt in SLO_SPECS]
    return run_cases("slo_met", fn, cases)


__all__ = ["check_aged_priority", "check_deadline_policy", "check_handover_bytes", "check_slo_met",
           "reference_aged_priority", "longest_low_priority_wait", "goal_report", "measured_handover_bytes",
           "reference_slo_met", "BATCH_WAIT", "PUBLIC_SEEDS"]
