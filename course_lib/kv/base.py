"""The contract every KV store keeps, so one engine and one model can run on any of them.

A KV store holds the keys and values of many requests ("sequences") at once.
The engine talks to it in four verbs, always by sequence id:

    add(seq_id, tokens, max_len)  admit a sequence; reserve what the store's policy
                                  reserves; returns how many leading tokens are already
                                  cached (a prefix-cache hit; 0 for stores without one)
    grow(seq_id, length)          make room for `length` tokens in total
    step_context(batch)           an attention context for one packed model step
    free(seq_id)                  give everything back

Out of memory is never a crash and never a silent overwrite: `add` and `grow`
raise KVAllocationError, which says how much was asked for, the largest free
span, and the total free, so "OOM with free memory" can be diagnosed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import torch

from course_lib.attention import sequence_attention
from course_lib.device import check_device
from course_lib.validate import FLOAT_DTYPES, check_dtype, check_has, check_int


def free_memory_paradox(requested: int, largest_free: int, total_free: int) -> bool:
    """The paradox of free memory: a request is refused although enough memory is free in
    total, because no free span is large enough (external fragmentation)."""
    return total_free >= requested > largest_free


class KVAllocationError(RuntimeError):
    """The store cannot give a sequence the room it asks for."""

    def __init__(self, requested: int, largest_free: int, total_free: int, unit: str = "tokens", detail: str = ""):
        self.requested, self.largest_free, self.total_free, self.unit = requested, largest_free, total_free, unit
        msg = (f"KV allocation failed: requested {requested} {unit}, largest free span {largest_free} {unit}, "
               f"total free {total_free} {unit}")
        if free_memory_paradox(requested, largest_free, total_free):
            msg += " (enough memory is free, but not in one piece: external fragmentation)"
        super().__init__(msg + (f"; {detail}" if detail else ""))


@dataclass
class KVUsage:
    """Where a store's capacity goes right now, in token slots (they add up to `capacity`).

    token_states: slots holding a token's keys/values          (useful)
    reserved:     slots set aside for tokens not generated yet  (will be used, is idle now)
    internal:     slots allocated that will never hold a token  (internal fragmentation)
    external:     free slots in holes too small to serve a request (external fragmentation)
    free:         the remaining free slots
    """

    capacity: int
    token_states: int
    reserved: int = 0
    internal: int = 0
    external: int = 0

    @property
    def free(self) -> int:
        return self.capacity - self.token_states - self.reserved - self.internal - self.external

    def shares(self) -> dict[str, float]:
        c = self.capacity or 1
        return {k: getattr(self, k) / c for k in ("token_states", "reserved", "internal", "external", "free")}


class KVStore(ABC):
    """Base class: shapes, bookkeeping of cached lengths, and the default step context."""

    can_fork = False     # True where fork(parent, child) shares the parent's memory (PagedKVStore)

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        self.num_layers = check_int("num_layers", num_layers, 1, 4096)
        self.num_kv_heads = check_int("num_kv_heads", num_kv_heads, 1, 4096)
        self.head_dim = check_int("head_dim", head_dim, 1, 1 << 16)
        self.dtype = check_dtype("dtype", dtype, FLOAT_DTYPES)
        self.device = check_device("cpu" if device is None else device)
        self.cached: dict[int, int] = {}   # seq_id -> tokens whose K/V are written

    @classmethod
    def for_model(cls, model, **kwargs) -> "KVStore":
        check_has("model", model, ("config", "dtype", "device"), "a TinyLM (with .config, .dtype and .device)")
        cfg = model.config
        return cls(cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim,
                   dtype=model.dtype, device=model.device, **kwargs)

    # ---- the engine's verbs -------------------------------------------------
    @abstractmethod
    def add(self, seq_id: int, tokens: Sequence[int], max_len: int) -> int:
        """Admit a sequence whose prompt is `tokens` and which may reach `max_len` tokens."""

    @abstractmethod
    def grow(self, seq_id: int, length: int) -> None:
        """Ensure room for `length` tokens in total, or raise KVAllocationError."""

    @abstractmethod
    def free(self, seq_id: int) -> None:
        """Release everything the sequence holds."""

    @abstractmethod
    def kv_view(self, layer: int, seq_id: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the first `length` tokens: two (length, nkv, hd) tensors.
        Writing into them must write into the store (views, not copies) for
        `write`; stores that cannot give views override `write` and `read`."""

    @abstractmethod
    def usage(self) -> KVUsage:
        """How the capacity is split right now."""

    def can_add(self, tokens: Sequence[int], max_len: int) -> bool:
        """Would `add` succeed now? (Default: no side effects, so be conservative.)"""
        return True

    def _itemsize(self) -> int:
        """Bytes of one element of self.dtype."""
        return torch.empty(0, dtype=self.dtype).element_size()

    def longest_sequence(self) -> int | None:
        """The most tokens ONE sequence can ever hold here, with nothing else stored
        (None: no limit). An engine rejects a longer request before doing any work."""
        return getattr(self, "max_model_len", None)

    def _check_seq(self, name: str, seq_id) -> None:
        """A sequence id is an integer (the engine's request id)."""
        check_int(name, seq_id)

    def _unknown(self, seq_id, verb: str = "free") -> ValueError:
        return ValueError(f"seq_id: {seq_id!r} is not in the store (cannot {verb} it: "
                          f"never added, or already freed)")

    # ---- reading and writing K/V ------------------------------------------
    def write(self, layer: int, seq_id: int, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store k, v (n, nkv, hd) at positions start .. start+n-1."""
        K, V = self.kv_view(layer, seq_id, start + k.shape[0])
        K[start:], V[start:] = k, v

    def read(self, layer: int, seq_id: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(length, nkv, hd) keys and values of the first `length` tokens."""
        return self.kv_view(layer, seq_id, length)

    def num_cached(self, seq_id: int) -> int:
        return self.cached.get(seq_id, 0)

    # ---- moving a sequence's K/V to another store (disaggregated serving) ----
    def export_tokens(self, seq_id: int, n_tokens: int) -> torch.Tensor:
        """A copy of the first `n_tokens` tokens' keys and values, every layer:
        (layers, 2, n_tokens, nkv, hd)."""
        layers = []
        for layer in range(self.num_layers):
            K, V = self.read(layer, seq_id, n_tokens)                          # (n, nkv, hd) each
            layers.append(torch.stack([K, V]))                                  # (2, n, nkv, hd) copy
        return torch.stack(layers)                                              # (layers, 2, n, nkv, hd)

    def import_tokens(self, seq_id: int, start: int, data: torch.Tensor) -> None:
        """Write positions start .. n-1 of `data` (layers, 2, n, nkv, hd), as export_tokens
        made it, into the sequence (its room must be there already: `grow` first)."""
        n = data.shape[2]
        for layer in range(self.num_layers):
            kv = data[layer].to(self.device)                                    # (2, n, nkv, hd)
            self.write(layer, seq_id, start, kv[0, start:n], kv[1, start:n])

    def step_context(self, batch: Sequence[tuple[int, int]]) -> "StepContext":
        """batch: (seq_id, n_new) in the order their new tokens sit in the packed step."""
        return StepContext(self, list(batch))


class StepContext:
    """Attention for one packed step: every sequence's new tokens side by side (B = 1).

    For each layer, each sequence's new k, v are written at positions
    cached .. cached+n_new-1, then its new queries attend causally over all
    of its cached + new keys. `commit()` advances the cached lengths once the
    whole forward pass has run.
    """

    def __init__(self, store: KVStore, batch: list[tuple[int, int]]):
        self.store, self.batch = store, batch
        self.starts = [store.num_cached(s) for s, _ in batch]

    def positions(self, device=None) -> torch.Tensor:
        """(1, N) position ids of the packed new tokens."""
        pos = [p for (s, n), start in zip(self.batch, self.starts) for p in range(start, start + n)]
        return torch.tensor([pos], dtype=torch.long, device=device or self.store.device)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (1, N, nh, hd); k, v (1, N, nkv, hd) -> (1, N, nh, hd)."""
        out = torch.empty_like(q)
        offset = 0
        for (seq_id, n), start in zip(self.batch, self.starts):
            sl = slice(offset, offset + n)
            self.store.write(layer, seq_id, start, k[0, sl], v[0, sl])
            K, V = self.store.read(layer, seq_id, start + n)                      # (L, nkv, hd)
            out[0, sl] = sequence_attention(q[0, sl], K, V)                       # (n, nh, hd)
            offset += n
        return out

    def commit(self) -> None:
        for (seq_id, n), start in zip(self.batch, self.starts):
            self.store.cached[seq_id] = start + n
