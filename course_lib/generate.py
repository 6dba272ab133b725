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


@torch.no_grad()
def generate(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, eos_id: int | None = EOS) -> list[list[int]]:
    """Greedy-decode a left-padded batch with a KV cache.

    prompts: token-id lists (each >= 1 token)
    returns: for each prompt, its new tokens (ending with <EOS> if it was emitted)
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens: must be an integer >= 0; got {max_new_tokens!r}")
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
