"""Padding: making sequences of different lengths into one rectangular batch.

A GPU (or a vectorised CPU kernel) wants a (B, T) tensor. Sequences are not all
T long, so the short ones are filled with <pad> tokens. Three things follow:

* the model must be told which positions are padding (the attention mask),
* position ids must count only real tokens (else left padding shifts them),
* every <pad> slot still costs memory and compute: the waste this module measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from course_lib.tokenizer import PAD
from course_lib.validate import check_choice, check_int, check_ints, check_sequence, check_tensor, check_tokens

SIDES = ("left", "right")
MAX_PADDED_LENGTH = 1 << 20    # no padded row is longer than this


def _check_side(side: str) -> None:
    check_choice("side", side, SIDES)


def pad_tokens(seqs: Sequence[Sequence[Any]], pad: Any = "<pad>", side: str = "right",
               length: int | None = None) -> list[list[Any]]:
    """Pad lists of tokens (strings or ids) to one length.

    >>> pad_tokens([['The','cat','sat'], ['A','quick','brown','fox']])
    [['The', 'cat', 'sat', '<pad>'], ['A', 'quick', 'brown', 'fox']]

    length: the target length (default: the longest sequence); must be >= every length.
    """
    _check_side(side)
    seqs = check_sequence("seqs", seqs, what="a list of token lists")
    for i, s in enumerate(seqs):
        check_sequence(f"seqs[{i}]", s, what="a list of tokens")
    longest = max((len(s) for s in seqs), default=0)
    target = longest if length is None else check_int("length", length, 0, MAX_PADDED_LENGTH)
    if target < longest:
        raise ValueError(f"length: must be >= the longest sequence ({longest}); got {target}")
    out = []
    for s in seqs:
        fill = [pad] * (target - len(s))
        out.append(fill + list(s) if side == "left" else list(s) + fill)
    return out


def attention_mask_from_lengths(lengths: Sequence[int], side: str = "left", length: int | None = None) -> torch.Tensor:
    """(B, T) long mask: 1 where a real token sits, 0 on padding.

    length: T (default: the longest); must be >= every length (a mask never cuts tokens off)."""
    _check_side(side)
    lengths = check_ints("lengths", lengths, 0, MAX_PADDED_LENGTH)
    longest = max(lengths, default=0)
    T = longest if length is None else check_int("length", length, longest, MAX_PADDED_LENGTH,
                                                  note="the longest length or more")
    idx = torch.arange(T)[None, :]                                   # (1, T)
    lens = torch.tensor(list(lengths), dtype=torch.long)[:, None]    # (B, 1)
    real = idx >= (T - lens) if side == "left" else idx < lens       # (B, T)
    return real.long()


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) mask -> (B, T) position ids counting only real tokens.

    Left padding:  [0 0 1 1 1] -> [0 0 0 1 2]  (padding before the first real token gets 0)
    Right padding: [1 1 1 0 0] -> [0 1 2 2 2]  (padding after the last one repeats its position)
    Either way the real tokens count 0, 1, 2, ... and padding slots are masked, so theirs never matter.
    """
    check_tensor("mask", mask, ndim=2)
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass
class PaddedBatch:
    input_ids: torch.Tensor       # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long, 1 = real token
    position_ids: torch.Tensor    # (B, T) long
    lengths: list[int]            # real tokens per sequence
    side: str

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.input_ids.shape)


def pad_batch(seqs: Sequence[Sequence[int]], side: str = "left", pad_id: int = PAD,
              device: torch.device | str | None = None) -> PaddedBatch:
    """Token-id lists -> a PaddedBatch of tensors ready for the model.

    Decoder-only generation pads on the LEFT so every sequence's newest token
    sits in the last column, where the next token is predicted.
    """
    _check_side(side)
    seqs = check_sequence("seqs", seqs, 1, what="a list of token-id lists")
    seqs = [check_tokens(f"seqs[{i}]", s) for i, s in enumerate(seqs)]
    check_int("pad_id", pad_id, 0)
    ids = torch.tensor(pad_tokens(seqs, pad=pad_id, side=side), dtype=torch.long, device=device)  # (B, T)
    mask = attention_mask_from_lengths([len(s) for s in seqs], side).to(device)                  # (B, T)
    return PaddedBatch(ids, mask, position_ids_from_mask(mask), [len(s) for s in seqs], side)


@dataclass
class PaddingStats:
    """How much of a padded batch is padding.

    token_waste: share of the (B, T) slots that hold <pad>. This is the memory
                 (activations, KV cache) and MLP compute spent on nothing.
    attn_waste:  share of the causal attention scores (query, key) pairs
                 computed for a (B, T) batch that involve a pad.
    """

    batch_size: int
    padded_length: int
    real_tokens: int
    padded_slots: int
    attn_pairs_real: int
    attn_pairs_padded: int

    @property
    def pad_tokens(self) -> int:
        return self.padded_slots - self.real_tokens

    @property
    def token_waste(self) -> float:
        return self.pad_tokens / self.padded_slots if self.padded_slots else 0.0

    @property
    def attn_waste(self) -> float:
        return 1 - self.attn_pairs_real / self.attn_pairs_padded if self.attn_pairs_padded else 0.0


def padding_stats(lengths: Sequence[int]) -> PaddingStats:
    """Waste of padding sequences of these lengths into one (B, max(lengths)) batch."""
    lengths = check_ints("lengths", lengths, 0)
    B, T = len(lengths), max(lengths, default=0)
    return PaddingStats(
        batch_size=B,
        padded_length=T,
        real_tokens=sum(lengths),
        padded_slots=B * T,
        attn_pairs_real=sum(n * (n + 1) // 2 for n in lengths),
        attn_pairs_padded=B * T * (T + 1) // 2,
    )


def batches_in_order(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of `batch_size` in arrival order (no sorting)."""
    _check_batch_size(batch_size)
    lengths = check_ints("lengths", lengths, 0)
    idx = list(range(len(lengths)))
    return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]


def bucket_by_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, with the least padding.

    Sort by length, then cut the sorted order into batches of `batch_size`.
    Neighbours in sorted order differ little, so each batch pads little.
    When len(lengths) is not a multiple of batch_size one batch is smaller;
    where it goes matters ([1, 1, 2] in pairs: {1,1},{2} pads nothing, {1},{1,2}
    pads one slot), so every place for it is tried and the cheapest kept.
    Ties keep arrival order, so the result is deterministic.
    """
    _check_batch_size(batch_size)
    lengths = check_ints("lengths", lengths, 0)
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    n, r = len(order), len(order) % batch_size
    best, best_slots = None, None
    for start in range(0, n - r + 1, batch_size):   # the smaller batch sits at order[start:start + r]
        cuts = list(range(0, start, batch_size)) + [start] + list(range(start + r, n, batch_size)) + [n]
        batches = [order[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]
        slots = sum(len(b) * lengths[b[-1]] for b in batches)
        if best_slots is None or slots < best_slots:
            best, best_slots = batches, slots
    return best or []


def total_waste(lengths: Sequence[int], batches: list[list[int]]) -> float:
    """Share of padded slots that are padding, over several batches."""
    lengths = check_ints("lengths", lengths, 0)
    for j, b in enumerate(check_sequence("batches", batches, what="a list of index lists")):
        check_ints(f"batches[{j}]", b, 0, len(lengths) - 1)
    slots = sum(len(b) * max((lengths[i] for i in b), default=0) for b in batches)
    real = sum(lengths[i] for b in batches for i in b)
    return 1 - real / slots if slots else 0.0


def _check_batch_size(batch_size: int) -> None:
    check_int("batch_size", batch_size, 1)
