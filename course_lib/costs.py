"""Measure what padding costs, on real tensors, on this machine.

Three ways to run causal self-attention over sequences of different lengths:

    padded   one (B, nh, T, hd) batch, T = longest, masked: one kernel call, wasted slots
    packed   no padding: sequences concatenated, attention run per sequence (varlen)
    one-by-one  a separate call per sequence, each with its own tensors

All three compute the same numbers for the real tokens (checked here every time);
only the time and the memory differ. Packed and one-by-one do the same per-sequence
calls here (a real varlen kernel, FlashAttention's, does them in one launch), so
expect their times to be close. The counts (slots, score pairs, bytes) are the
machine-independent evidence; the times are medians of interleaved rounds with their
spread, because a shared machine's load would otherwise fall on one contender only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from course_lib.attention import causal_mask, pack, packed_attention, padded_causal_mask, sdpa_attention
from course_lib.device import Timing, check_device, get_device, time_interleaved
from course_lib.padding import attention_mask_from_lengths, padding_stats
from course_lib.validate import FLOAT_DTYPES, check_choice, check_dtype, check_int, check_ints

MAX_LENGTH = 8192      # the longest sequence a cost measurement takes


@dataclass
class AttentionCosts:
    lengths: list[int]
    padded_ms: float        # medians of the interleaved rounds (see `times` for the spread)
    packed_ms: float
    one_by_one_ms: float
    padded_bytes: int       # bytes of q, k, v held for the padded batch
    packed_bytes: int       # ... for the packed batch
    max_abs_diff: float     # padded vs packed outputs on real tokens (should be ~1e-7)
    token_waste: float
    attn_waste: float
    pairs_padded: int = 0   # causal (query, key) score pairs per head over the padded batch: B * T(T+1)/2
    pairs_real: int = 0     # ... that the real tokens need: sum of L(L+1)/2 (packed and one by one)
    times: dict[str, Timing] | None = None   # "padded", "packed", "one by one" -> Timing

    @property
    def pairs_ratio(self) -> float:
        """How many times more attention score pairs the padded batch spans than the tokens need."""
        return self.pairs_padded / self.pairs_real if self.pairs_real else 1.0


def make_qkv(lengths: Sequence[int], nh: int = 4, nkv: int = 2, hd: int = 32, seed: int = 0,
             device=None, dtype=torch.float32) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Random per-sequence q (L, nh, hd), k, v (L, nkv, hd) for each length L."""
    lengths = check_ints("lengths", lengths, 1, MAX_LENGTH, min_len=1)
    for name, value in (("nh", nh), ("nkv", nkv), ("hd", hd)):
        check_int(name, value, 1, 1024)
    if nh % nkv:
        raise ValueError(f"nkv: must divide nh ({nh}); got {nkv}")
    check_int("seed", seed, 0)
    check_dtype("dtype", dtype, FLOAT_DTYPES)
    device = None if device is None else check_device(device)
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        q, k, v = (torch.randn(n, h, hd, generator=g, dtype=dtype) for h in (nh, nkv, nkv))
        out.append(tuple(t.to(device) for t in (q, k, v)))
    return out


def to_padded(seqs, side: str = "left"):
    """Per-sequence (L, h, hd) tensors -> (B, h, T, hd) padded tensors and the (B, T) mask."""
    lengths = [s.shape[0] for s in seqs]
    T = max(lengths)
    B, h, hd = len(seqs), seqs[0].shape[1], seqs[0].shape[2]
    out = seqs[0].new_zeros(B, h, T, hd)
    for b, s in enumerate(seqs):
        n = s.shape[0]
        sl = slice(T - n, T) if side == "left" else slice(0, n)
        out[b, :, sl] = s.transpose(0, 1)
    mask = attention_mask_from_lengths(lengths, side).to(out.device)
    return out, mask


def measure_attention_costs(lengths: Sequence[int], nh: int = 4, nkv: int = 2, hd: int = 32, repeat: int = 5,
                            device=None, side: str = "left", threads: int | None = 1,
                            number: int = 1) -> AttentionCosts:
    """Time padded, packed and one-by-one causal attention over `lengths`: `repeat` interleaved
    rounds (one call of each per round), medians in the *_ms fields, every round in `times`.
    `threads`: torch's CPU threads while timing (1: a shared CPU's threads cannot stall
    each other; None: leave torch's setting). `number`: calls per round, timed together (use
    more for tiny batches, whose single calls the OS scheduler can stretch)."""
    lengths = check_ints("lengths", lengths, 1, MAX_LENGTH, min_len=1, max_len=64)
    check_int("repeat", repeat, 1, 1000)
    check_choice("side", side, ("left", "right"))
    device = check_device(device) if device is not None else get_device()
    qkv = make_qkv(lengths, nh, nkv, hd, device=device)
    qs, ks, vs = zip(*qkv)
    # padded: one batch
    Q, mask = to_padded(list(qs), side)
    K, _ = to_padded(list(ks), side)
    V, _ = to_padded(list(vs), side)
    full_mask = padded_causal_mask(mask, Q.shape[2])                       # (B, 1, T, T)
    padded_fn = lambda: sdpa_attention(Q, K, V, full_mask)                 # noqa: E731
    # packed: concatenated, per-sequence attention
    q, cu = pack(list(qs))
    k, _ = pack(list(ks))
    v, _ = pack(list(vs))
    packed_fn = lambda: packed_attention(q, k, v, cu, cu)                  # noqa: E731

    def one_by_one():
        return [sdpa_attention(a.transpose(0, 1)[None], b.transpose(0, 1)[None], c.transpose(0, 1)[None],
                               causal_mask(a.shape[0], a.shape[0], device)) for a, b, c in qkv]

    # the three must agree on every real token before their times mean anything
    out_padded, out_packed = padded_fn(), packed_fn()
    T, diff, offset = Q.shape[2], 0.0, 0
    for b, n in enumerate(lengths):
        sl = slice(T - n, T) if side == "left" else slice(0, n)
        diff = max(diff, (out_padded[b, :, sl].transpose(0, 1) - out_packed[offset:offset + n]).abs().max().item())
        offset += n
    stats = padding_stats(lengths)
    nbytes = lambda *ts: sum(t.numel() * t.element_size() for t in ts)   # noqa: E731
    times = time_interleaved({"padded": padded_fn, "packed": packed_fn, "one by one": one_by_one},
                             rounds=repeat, warmup=1, device=device, threads=threads, number=number)
    return AttentionCosts(
        lengths=lengths,
        padded_ms=times["padded"].ms, packed_ms=times["packed"].ms, one_by_one_ms=times["one by one"].ms,
        padded_bytes=nbytes(Q, K, V), packed_bytes=nbytes(q, k, v),
        max_abs_diff=diff, token_waste=stats.token_waste, attn_waste=stats.attn_waste,
        pairs_padded=stats.attn_pairs_padded, pairs_real=stats.attn_pairs_real, times=times,
    )
