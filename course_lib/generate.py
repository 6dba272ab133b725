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
