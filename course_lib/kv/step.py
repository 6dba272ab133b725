"""One packed model step over any KV store: the single path every caller runs.

Whoever drives the model (the engine, the lesson-02 replay, greedy decoding,
parallel sampling) runs a step the same way, as nano-vllm's ModelRunner.run does:

    1. grow     make room for each sequence's new tokens   (optional: the engine's
                                                             scheduler reserves it first)
    2. prepare  every sequence's new tokens side by side: ONE (1, N) input, the
                positions where each sequence's cache ends, and the store's
                attention context (or another one, e.g. BatchedDecodeContext)
    3. run      model.forward_ctx(ids, positions, ctx): each layer writes its new
                keys and values into the store and attends over them
    4. commit   the store's cached lengths move on by the new tokens

    step = PackedStep(model, store, [(seq_id, new_tokens), ...], grow=True)
    last = step.run()          # (S, V): the logits of each sequence's last new token
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from course_lib.kv.base import KVStore, StepContext


class PackedStep:
    """A packed step, prepared (`__init__`) and then run (`run`), so that a caller can time
    the two phases apart.

    model:   anything with forward_ctx(ids, positions, ctx) and .device (a TinyLM)
    store:   any KVStore holding every sequence of the batch
    batch:   (seq_id, new_tokens) in packing order; new_tokens continue the sequence
             where its cache ends (store.num_cached(seq_id))
    context: a factory (store, [(seq_id, n_new)]) -> StepContext; None: the store's own
    grow:    grow each sequence's room first (False when a scheduler reserved it already)
    """

    def __init__(self, model, store: KVStore, batch: Sequence[tuple[int, Sequence[int]]],
                 context: Callable[[KVStore, list[tuple[int, int]]], StepContext] | None = None, grow: bool = False):
        self.model, self.store = model, store
        self.sizes = [(seq_id, len(tokens)) for seq_id, tokens in batch]            # (seq_id, n_new)
        if grow:
            for seq_id, n in self.sizes:
                store.grow(seq_id, store.num_cached(seq_id) + n)
        self.ids = torch.tensor([[t for _, tokens in batch for t in tokens]], dtype=torch.long,
                                device=model.device)                                 # (1, N)
        self.ctx = context(store, self.sizes) if context is not None else store.step_context(self.sizes)
        self.positions = self.ctx.positions(model.device)                            # (1, N)

    @property
    def num_tokens(self) -> int:
        """N: the tokens this step runs through the model."""
        return self.ids.shape[1]

    @torch.no_grad()
    def run(self) -> torch.Tensor:
        """Run the model, commit the new tokens' K/V, and return the logits of each
        sequence's LAST new token: (S, V), in batch order."""
        ends = torch.tensor([n for _, n in self.sizes]).cumsum(0) - 1                # (S,) last token of each
        logits = self.model.forward_ctx(self.ids, self.positions, self.ctx, keep=ends)   # (1, S, V)
        self.ctx.commit()
        return logits[0]                                                             # (S, V)
