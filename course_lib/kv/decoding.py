"""Greedy decoding with and without a KV cache, timed step by step.

Without a cache, every new token re-runs the model over the WHOLE sequence so
far: step t processes P + t tokens, and the keys and values of the first
P + t - 1 of them are recomputed exactly as they were the step before.

With a cache, the first step (prefill) runs over the P prompt tokens at once
and stores their keys and values; each later step (decode) runs over ONE new
token, writes its K/V and attends over everything stored. The work per step
stops growing with the sequence (except attention's reads of the cache), and
the price is memory: the cache holds every token's K/V for as long as the
request lives. That memory is what the rest of the lesson is about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from course_lib.device import Timer
from course_lib.kv.base import KVStore
from course_lib.kv.step import PackedStep
from course_lib.validate import check_bool, check_has, check_int, check_sequence, check_tokens, check_type


@dataclass
class Decoded:
    tokens: list[int]                                   # the generated tokens
    step_ms: list[float] = field(default_factory=list)  # wall time of every step (step 0 = prefill)
    tokens_processed: int = 0                           # token positions the model ran over, all steps

    @property
    def total_ms(self) -> float:
        return sum(self.step_ms)


def _check(model, prompt, n_new, name: str = "prompt", n_name: str = "n_new") -> list[int]:
    """The prompt as a list of token ids; n_new >= 1 and prompt + n_new within the model's context."""
    check_has("model", model, ("forward_ctx", "config", "device"), "a TinyLM")
    prompt = check_tokens(name, prompt, model.config.vocab_size)
    limit = model.config.max_position_embeddings
    if len(prompt) >= limit:
        raise ValueError(f"{name}: must hold fewer than {limit} tokens (the model's context); got {len(prompt)}")
    check_int(n_name, n_new, 1, limit - len(prompt), note=f"{name} + {n_name} within the context of {limit}")
    return prompt


@torch.no_grad()
def greedy_no_cache(model, prompt: Sequence[int], n_new: int) -> Decoded:
    """Each step runs the model over prompt + everything generated so far."""
    seq = _check(model, prompt, n_new)
    out = Decoded([])
    for _ in range(n_new):
        with Timer(model.device) as t:
            ids = torch.tensor([seq], device=model.device)                        # (1, L)
            nxt = int(model(ids)[0, -1].argmax())
        out.step_ms.append(t.ms)
        out.tokens_processed += len(seq)
        seq.append(nxt)
        out.tokens.append(nxt)
    return out


@torch.no_grad()
def greedy_with_store(model, store: KVStore, prompt: Sequence[int], n_new: int, seq_id: int = 0,
                      free: bool = True) -> Decoded:
    """Prefill once into `store`, then one token per step through it."""
    prompt = _check(model, prompt, n_new)
    check_type("store", store, KVStore)
    check_bool("free", free)
    store.add(seq_id, list(prompt), len(prompt) + n_new)
    out = Decoded([])
    feed = list(prompt)
    try:
        for _ in range(n_new):
            with Timer(model.device) as t:
                last = PackedStep(model, store, [(seq_id, feed)], grow=True).run()   # (1, V)
                nxt = int(last[0].argmax())
            out.step_ms.append(t.ms)
            out.tokens_processed += len(feed)
            out.tokens.append(nxt)
            feed = [nxt]
    finally:
        if free:
            store.free(seq_id)
    return out


@torch.no_grad()
def run_packed(model, store: KVStore, prompts: Sequence[Sequence[int]], steps: int,
               first_id: int = 0) -> tuple[torch.Tensor, list[list[int]]]:
    """Prefill every prompt in ONE packed step, then decode them together for `steps - 1` more.

    Sequences get ids first_id, first_id + 1, ... and stay in the store (free them yourself).
    returns: logits of each sequence's last position at every step (steps, B, vocab), and the
             greedy tokens of each sequence (B lists of `steps`)
    """
    check_type("store", store, KVStore)
    prompts = [_check(model, p, steps, f"prompts[{i}]", "steps")
               for i, p in enumerate(check_sequence("prompts", prompts, 1, what="a list of token-id lists"))]
    check_int("first_id", first_id)
    ids_ = [first_id + i for i in range(len(prompts))]
    for i, p in zip(ids_, prompts):
        store.add(i, list(p), len(p) + steps)
    seqs = [list(p) for p in prompts]
    batch = [(i, len(p)) for i, p in zip(ids_, prompts)]
    rows = []
    for _ in range(steps):
        last = PackedStep(model, store, [(i, s[len(s) - n:]) for (i, n), s in zip(batch, seqs)], grow=True).run()   # (B, V)
        rows.append(last)
        for s, t in zip(seqs, last.argmax(-1).tolist()):
            s.append(t)
        batch = [(i, 1) for i in ids_]
    return torch.stack(rows), [s[len(p):] for s, p in zip(seqs, prompts)]
