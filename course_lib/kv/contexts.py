"""Attention contexts that run one model step over ANY KV store.

A store brings its own packed-step context (`store.step_context(batch)`: the
readable per-sequence loop of kv/base.py, or the paged kernel of kv/paged.py).
These two work on top of any store's `write` and `read`:

    PaddedStepContext     a padded (B, T) step: every row's keys gathered and
                          left-padded, one attention call with a padding-aware mask
    BatchedDecodeContext  the packed step with every decoding sequence (one new
                          token) in ONE attention call instead of one call each

Both keep the StepContext contract (positions / attend / commit), so the model
runs them unchanged; tests check each against the per-sequence path to 1e-5.
"""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import pad_sequence

from course_lib.attention import padded_causal_mask, sdpa_attention, sequence_attention
from course_lib.kv.base import KVStore, StepContext
from course_lib.tokenizer import PAD


# ---- the padded step --------------------------------------------------------
class PaddedStepContext:
    """Attention for a padded (B, T) step over any KV store.

    rows: (seq_id or None, n_new) per row; row b's new tokens sit in its LAST
    n_new columns. Each layer writes the new k, v into the store, gathers
    every row's keys into one (B, nkv, Lk, hd) tensor (left-padded), and runs
    ONE attention call with a padding-aware causal mask.
    """

    def __init__(self, store: KVStore, rows: list[tuple[int | None, int]], T: int):
        self.store, self.rows, self.T = store, rows, T
        self.starts = [store.num_cached(s) if s is not None and n > 0 else 0 for s, n in rows]
        self.lengths = [st + n for st, (_, n) in zip(self.starts, rows)]     # keys each row attends to
        self.Lk = max(max(self.lengths, default=1), T)

    def inputs(self, new_tokens: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) input ids (<pad> on the left) and (B, T) positions (0 on padding)."""
        B, T = len(self.rows), self.T
        ids = torch.full((B, T), PAD, dtype=torch.long)
        pos = torch.zeros((B, T), dtype=torch.long)
        for b, (toks, start) in enumerate(zip(new_tokens, self.starts)):
            n = len(toks)
            if n:
                ids[b, T - n:] = torch.tensor(toks)
                pos[b, T - n:] = torch.arange(start, start + n)
        return ids.to(device), pos.to(device)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (B, T, nh, hd); k, v (B, T, nkv, hd) -> (B, T, nh, hd)."""
        B, T, nkv, hd = k.shape
        K = k.new_zeros(B, nkv, self.Lk, hd)                                 # (B, nkv, Lk, hd)
        V = v.new_zeros(B, nkv, self.Lk, hd)
        key_mask = torch.zeros(B, self.Lk, dtype=torch.bool, device=q.device)  # (B, Lk) real keys
        for b, ((seq_id, n), start, L) in enumerate(zip(self.rows, self.starts, self.lengths)):
            if seq_id is None or n == 0:
                continue                                                     # an all-padding row
            self.store.write(layer, seq_id, start, k[b, T - n:], v[b, T - n:])
            Kb, Vb = self.store.read(layer, seq_id, L)                       # (L, nkv, hd)
            K[b, :, self.Lk - L:] = Kb.transpose(0, 1)
            V[b, :, self.Lk - L:] = Vb.transpose(0, 1)
            key_mask[b, self.Lk - L:] = True
        mask = padded_causal_mask(key_mask, T)                               # (B, 1, T, Lk)
        out = sdpa_attention(q.transpose(1, 2), K, V, mask)                  # (B, nh, T, hd)
        return out.transpose(1, 2)                                           # (B, T, nh, hd)

    def commit(self) -> None:
        for (seq_id, n), start in zip(self.rows, self.starts):
            if seq_id is not None and n > 0:
                self.store.cached[seq_id] = start + n


# ---- the packed step, decodes batched ------------------------------------------
class BatchedDecodeContext(StepContext):
    """The packed step of `StepContext`, faster: every decoding sequence (one new
    token) attends in ONE attention call instead of one call each.

    The per-sequence loop of the base context is the readable path; on a CPU
    its many tiny calls dominate a decode step. Here each sequence's new k, v
    are still written through the store (any store), then the decoders' keys
    are gathered into one padded (S, nkv, Lmax, hd) tensor with a key mask,
    which is what a GPU decode kernel does without the padding. Prefill chunks
    (several new tokens) keep the per-sequence path. Same contract, same result
    (tests check 1e-5 in fp32).
    """

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (1, N, nh, hd); k, v (1, N, nkv, hd) -> (1, N, nh, hd)."""
        out = torch.empty_like(q)
        dec_idx, dec_rows, offset = [], [], 0
        for (seq_id, n), start in zip(self.batch, self.starts):
            sl = slice(offset, offset + n)
            self.store.write(layer, seq_id, start, k[0, sl], v[0, sl])
            if n == 1:
                dec_idx.append(offset)
                dec_rows.append((seq_id, start + 1))
            else:                                                                 # a prefill chunk
                K, V = self.store.read(layer, seq_id, start + n)                  # (L, nkv, hd)
                out[0, sl] = sequence_attention(q[0, sl], K, V)                   # (n, nh, hd)
            offset += n
        if dec_rows:
            keys, values = zip(*(self.store.read(layer, seq_id, L) for seq_id, L in dec_rows))   # each (L, nkv, hd)
            K = pad_sequence(keys, batch_first=True).transpose(1, 2)             # (S, nkv, Lmax, hd), right-padded
            V = pad_sequence(values, batch_first=True).transpose(1, 2)
            lengths = torch.tensor([L for _, L in dec_rows], device=q.device)
            key_mask = torch.arange(K.shape[2], device=q.device) < lengths[:, None]   # (S, Lmax) real keys
            key_mask = key_mask[:, None, None, :]                                 # (S, 1, 1, Lmax)
            idx = torch.tensor(dec_idx, device=q.device)
            qd = q[0, idx][:, :, None]                                            # (S, nh, 1, hd)
            o = sdpa_attention(qd, K, V, key_mask)                                # (S, nh, 1, hd)
            out[0, idx] = o[:, :, 0]                                              # (S, nh, hd)
        return out
