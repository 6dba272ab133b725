"""The reference KV store: each sequence gets its own tensor, sized exactly.

No arena, no fragmentation: capacity is just a count of token slots, and a
sequence holds exactly the slots of the tokens it has. It is what an ideal
allocator would achieve, and the oracle the other stores are tested against.
"""

from __future__ import annotations

from typing import Sequence

import torch

from course_lib.kv.base import KVAllocationError, KVStore, KVUsage
from course_lib.validate import check_int, check_ints


class ReferenceKVStore(KVStore):
    """capacity: total token slots (None = unlimited)."""

    def __init__(self, num_layers, num_kv_heads, head_dim, dtype=torch.float32, device=None, capacity: int | None = None):
        super().__init__(num_layers, num_kv_heads, head_dim, dtype, device)
        self.capacity = check_int("capacity", capacity, 1, none_ok=True)
        self.k: dict[int, torch.Tensor] = {}   # seq_id -> (layers, L, nkv, hd)
        self.v: dict[int, torch.Tensor] = {}

    def _used(self) -> int:
        return sum(t.shape[1] for t in self.k.values())

    def _need(self, extra: int) -> None:
        if self.capacity is not None and self._used() + extra > self.capacity:
            free = self.capacity - self._used()
            raise KVAllocationError(extra, free, free)

    def longest_sequence(self) -> int | None:
        limits = [n for n in (self.capacity, getattr(self, "max_model_len", None)) if n is not None]
        return min(limits, default=None)

    def _check_new(self, seq_id, tokens, max_len) -> None:
        if seq_id is not None:
            self._check_seq("seq_id", seq_id)
            if seq_id in self.k:
                raise ValueError(f"seq_id: {seq_id} is already in the store")
        check_int("max_len", max_len, 1, self.capacity)
        n = len(check_ints("tokens", tokens, 0))
        if not 1 <= n <= max_len:
            raise ValueError(f"tokens: the prompt must hold between 1 and max_len ({max_len}) tokens; got {n}")

    def can_add(self, tokens, max_len) -> bool:
        self._check_new(None, tokens, max_len)
        return self.capacity is None or self._used() + len(tokens) <= self.capacity

    def add(self, seq_id: int, tokens: Sequence[int], max_len: int) -> int:
        self._check_seq("seq_id", seq_id)
        self._check_new(seq_id, tokens, max_len)
        self.k[seq_id] = self._empty(0)
        self.v[seq_id] = self._empty(0)
        self.cached[seq_id] = 0
        try:
            self.grow(seq_id, len(tokens))
        except KVAllocationError:
            self.free(seq_id)
            raise
        return 0

    def grow(self, seq_id: int, length: int) -> None:
        if seq_id not in self.k:
            raise self._unknown(seq_id, "grow")
        check_int("length", length, 1)
        have = self.k[seq_id].shape[1]
        if length <= have:
            return
        self._need(length - have)
        self.k[seq_id] = torch.cat([self.k[seq_id], self._empty(length - have)], dim=1)
        self.v[seq_id] = torch.cat([self.v[seq_id], self._empty(length - have)], dim=1)

    def free(self, seq_id: int) -> None:
        """Give the sequence's slots back. Freeing an id that is not here (twice, or never
        added) raises ValueError: a silent double free hides a bookkeeping bug."""
        if seq_id not in self.k:
            raise self._unknown(seq_id)
        self.k.pop(seq_id, None)
        self.v.pop(seq_id, None)
        self.cached.pop(seq_id, None)

    def kv_view(self, layer, seq_id, length):
        if seq_id not in self.k:
            raise self._unknown(seq_id, "read")
        check_int("layer", layer, 0, self.num_layers - 1)
        check_int("length", length, 0)
        if length > self.k[seq_id].shape[1]:
            raise ValueError(f"length: sequence {seq_id} has room for {self.k[seq_id].shape[1]} tokens; asked for {length}")
        return self.k[seq_id][layer, :length], self.v[seq_id][layer, :length]

    def usage(self) -> KVUsage:
        used = sum(self.cached.values())
        allocated = self._used()
        cap = self.capacity if self.capacity is not None else allocated
        return KVUsage(capacity=cap, token_states=used, reserved=allocated - used)

    def _empty(self, n: int) -> torch.Tensor:
        return torch.zeros(self.num_layers, n, self.num_kv_heads, self.head_dim, dtype=self.dtype, device=self.device)
