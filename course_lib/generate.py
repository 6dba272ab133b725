"""Greedy generation for a static, padded batch: the baseline every later lesson improves on.

The whole batch runs until every sequence has finished: a sequence that emits
<EOS> early keeps occupying its row (and its KV cache) until the longest is done.
"""

from __future__ import annotations

from typing import Sequence

import torch

from course_lib.kv.dense import DenseKVCache
from course_lib.padding import pad_batch
from course_lib.tokenizer import EOS
from course_lib.validate import check_has, check_int, check_sequence, check_tokens


@torch.no_grad()
def generate(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, eos_id: int | None = EOS) -> list[list[int]]:
    """Greedy-decode a left-padded batch with a KV cache.

    prompts: token-id lists (each >= 1 token)
    returns: for each prompt, its new tokens (ending with <EOS> if it was emitted)
    """
    check_has("model", model, ("config", "device"), "a TinyLM")
    check_int("max_new_tokens", max_new_tokens, 0)
    check_int("eos_id", eos_id, 0, model.config.vocab_size - 1, none_ok=True)
    prompts = check_sequence("prompts", prompts, 1, what="a list of token-id lists")
    prompts = [check_tokens(f"prompts[{i}]", p, model.config.vocab_size) for i, p in enumerate(prompts)]
    limit = model.config.max_position_embeddings
    for i, p in enumerate(prompts):
        if len(p) + max_new_tokens > limit:
            raise ValueError(f"prompts[{i}]: prompt ({len(p)}) + max_new_tokens ({max_new_tokens}) must be <= {limit}")
    batch = pad_batch(prompts, side="left", device=model.device)
    B = len(prompts)
    out: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    if max_new_tokens == 0:
        return out
    cache = DenseKVCache(model.config.num_hidden_layers)
    mask = batch.attention_mask                                          # (B, T)
    logits = model(batch.input_ids, mask, cache)                          # (B, T, V) prefill
    for step in range(max_new_tokens):
        next_ids = logits[:, -1].argmax(-1)                               # (B,)
        for b in range(B):
            if not done[b]:
                out[b].append(int(next_ids[b]))
                done[b] = eos_id is not None and out[b][-1] == eos_id
        if all(done) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=mask.device)], dim=1)
        logits = model(next_ids[:, None], mask, cache)                     # (B, 1, V) decode step
    return out


@torch.no_grad()
def stream_greedy(model, prompt: Sequence[int], max_new_tokens: int, eos_id: int | None = EOS):
    """Yield greedy tokens for ONE prompt, one at a time, as a server streams them.

    The prompt is prefilled once; then each step feeds only the newest token and
    reads every earlier key and value from the cache (course_lib.kv.dense).
    Stops after <EOS> (which it yields) or `max_new_tokens` tokens.
    """
    check_has("model", model, ("config", "device"), "a TinyLM")
    limit = model.config.max_position_embeddings
    prompt = check_tokens("prompt", prompt, model.config.vocab_size)
    if len(prompt) >= limit:
        raise ValueError(f"prompt: must hold fewer than {limit} tokens (the model's context); got {len(prompt)}")
    check_int("max_new_tokens", max_new_tokens, 1, limit - len(prompt), note=f"for a {len(prompt)}-token prompt")
    cache = DenseKVCache(model.config.num_hidden_layers)
    ids = torch.tensor([list(prompt)], device=model.device)              # (1, T)
    logits = model(ids, cache=cache)                                      # (1, T, V) prefill
    for _ in range(max_new_tokens):
        token = int(logits[0, -1].argmax())
        yield token
        if token == eos_id:
            return
        logits = model(torch.tensor([[token]], device=model.device), cache=cache)   # (1, 1, V) decode step


def continue_text(model, text: str, max_new_tokens: int | None = None) -> tuple[str, list[int]]:
    """Greedy continuation of `text` (after <SOS>): (the new text, the new token ids).

    max_new_tokens=None: as many as the context allows; the model usually stops
    earlier, on its own <EOS>.
    """
    from course_lib.tokenizer import decode, encode

    prompt = encode(text)
    room = model.config.max_position_embeddings - len(prompt)
    if room < 1:
        raise ValueError(f"text: must fit the context with room to grow ({model.config.max_position_embeddings - 1} "
                         f"tokens at most); got {len(prompt)} tokens")
    tokens = list(stream_greedy(model, prompt, room if max_new_tokens is None else max_new_tokens))
    return decode(tokens), tokens


@torch.no_grad()
def beam_search(model, prompt: Sequence[int], beam_width: int, max_new_tokens: int,
                eos_id: int | None = EOS) -> list[tuple[list[int], float]]:
    """Beam search written to be read, not to be fast: the reference the engine's beam
    search (engine/fork.py) must match, with no KV cache and no sharing at all. Every step
    runs the model over each live beam's WHOLE sequence again.

    Rules: the W best (beam, next token) pairs by summed log-probability; a pair that
    ends on <EOS> among the W best is a finished hypothesis, kept if among the W best
    finished ones by log-probability per token; the next best other pairs keep W beams
    alive; stop when W have finished and the best live beam's per-token score would
    not rank among them, or at max_new_tokens (every beam finishes there).
    Returns the finished hypotheses, best first: (tokens, summed log-probability).
    """
    check_has("model", model, ("config", "device"), "a TinyLM")
    prompt = check_tokens("prompt", prompt, model.config.vocab_size)
    limit = model.config.max_position_embeddings
    if len(prompt) >= limit:
        raise ValueError(f"prompt: must hold fewer than {limit} tokens (the model's context); got {len(prompt)}")
    check_int("beam_width", beam_width, 1, 64)
    check_int("max_new_tokens", max_new_tokens, 1, limit - len(prompt), note=f"for a {len(prompt)}-token prompt")
    check_int("eos_id", eos_id, 0, model.config.vocab_size - 1, none_ok=True)
    W = beam_width
    beams: list[tuple[list[int], float]] = [([], 0.0)]                   # live: (tokens, log-probability)
    finished: list[tuple[list[int], float]] = []

    def rank(h):                                                          # finished hypotheses: per token
        return -h[1] / len(h[0])

    for length in range(1, max_new_tokens + 1):
        candidates = []                                                   # (score, beam, token)
        for b, (tokens, score) in enumerate(beams):
            ids = torch.tensor([list(prompt) + tokens], device=model.device)              # (1, T)
            logp = torch.log_softmax(model(ids)[0, -1].double().cpu(), -1)               # (V,)
            candidates += [(score + float(lp), b, t) for t, lp in enumerate(logp.tolist())]
        candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
        live, taken = [], 0
        for i, (score, b, t) in enumerate(candidates):
            tokens = beams[b][0] + [t]
            if t == eos_id:
                if i < W:
                    finished = sorted(finished + [(tokens, score)], key=rank)[:W]
                continue
            if length == max_new_tokens:
                finished = sorted(finished + [(tokens, score)], key=rank)[:W]
            else:
                live.append((tokens, score))
            taken += 1
            if taken == W:
                break
        beams = live
        if not beams or (len(finished) == W and beams[0][1] / length <= -rank(finished[-1])):
            break
    return finished
