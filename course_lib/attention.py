"""Attention, four ways, that must all give the same answer.

Shapes (the names used everywhere in the course):
    B   batch size            T   tokens per sequence (padded length)
    nh  query heads           nkv key/value heads (nh % nkv == 0: grouped-query attention)
    hd  head dimension        N   total tokens of a packed (unpadded) batch

1. `reference_attention`  : explicit masked softmax; slow and readable: the definition.
2. `sdpa_attention`       : the same contract through torch's fused
                            `scaled_dot_product_attention` (the fast path).
3. `packed_attention`     : no padding at all. Sequences are concatenated into
                            one (N, ...) tensor and attention runs per sequence
                            ("varlen"; Orca's selective batching).
4. `packed_attention_masked`: the same packed tensors in ONE SDPA call with a
                            block-diagonal causal mask: one kernel launch, but it
                            scores every pair of the N tokens (wasted work).

Convention for masks: a bool tensor, True = "this query may attend to this key".
A query row with no allowed key (a padding query under left padding) returns zeros.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from course_lib.validate import check_int, check_ints, check_sequence, check_tensor


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, nkv, T, hd) -> (B, nkv * n_rep, T, hd): share each K/V head with n_rep query heads."""
    if check_int("n_rep", n_rep, 1) == 1:
        return x
    return x.repeat_interleave(n_rep, dim=1)


def _check_heads(q: torch.Tensor, k: torch.Tensor, head_dim: int = 1, v: torch.Tensor | None = None) -> int:
    ndim = 4 if head_dim == 1 else 3
    for name, t in (("q", q), ("k", k), ("v", v)):
        if name != "v" or v is not None:            # _check_heads(q, k) checks two of them
            check_tensor(name, t, ndim=ndim, floating=True)
    nh, nkv = q.shape[head_dim], k.shape[head_dim]
    if nh % nkv:
        raise ValueError(f"q: its {nh} query heads must be a multiple of k's {nkv} key/value heads")
    return nh // nkv


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(hd) + mask) v, written out.

    q:    (B, nh, Tq, hd)
    k, v: (B, nkv, Tk, hd)
    mask: bool, broadcastable to (B, nh, Tq, Tk); True = may attend. None = attend everywhere.
    returns (B, nh, Tq, hd)
    """
    n_rep = _check_heads(q, k, v=v)
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)              # (B, nh, Tk, hd)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])     # (B, nh, Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)                       # (B, nh, Tq, Tk)
    weights = torch.nan_to_num(weights, nan=0.0)                  # rows with no key -> 0
    return weights @ v                                            # (B, nh, Tq, hd)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Same contract as `reference_attention`, through torch's fused SDPA kernel."""
    n_rep = _check_heads(q, k, v=v)
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=n_rep > 1)
    has_key = mask.any(dim=-1, keepdim=True)                      # (B, *, Tq, 1)
    safe_mask = mask | ~has_key                                   # fused kernels give NaN on empty rows
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe_mask, enable_gqa=n_rep > 1)
    return out * has_key.to(out.dtype)


def causal_mask(q_len: int, k_len: int, device: torch.device | None = None) -> torch.Tensor:
    """(q_len, k_len) bool. The q_len queries are the LAST q_len of k_len positions,
    so query i sits at position k_len - q_len + i and sees keys 0..that position."""
    check_int("q_len", q_len, 0)
    check_int("k_len", k_len, 0)
    if q_len > k_len:
        raise ValueError(f"q_len: must be <= k_len ({k_len}); got {q_len}")
    q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]   # (Tq, 1)
    k_pos = torch.arange(k_len, device=device)[None, :]                  # (1, Tk)
    return k_pos <= q_pos


def padded_causal_mask(key_mask: torch.Tensor, q_len: int) -> torch.Tensor:
    """Causal mask AND "the key is a real token, not padding".

    key_mask: (B, Tk) bool or 0/1, 1 = real token
    returns   (B, 1, Tq, Tk) bool, ready to broadcast over heads
    """
    key_mask = key_mask.bool()
    causal = causal_mask(q_len, key_mask.shape[1], key_mask.device)       # (Tq, Tk)
    return causal[None, None] & key_mask[:, None, None, :]


def sequence_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """One sequence's new queries over all of its keys (no batch, no padding).

    q:    (n, nh, hd)   the queries of the sequence's LAST n positions
    k, v: (L, nkv, hd)  the keys and values of all its L positions (L >= n)
    returns (n, nh, hd); causal: query i sees keys 0 .. L - n + i
    """
    mask = causal_mask(q.shape[0], k.shape[0], q.device) if causal else None      # (n, L)
    out = sdpa_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], mask)
    return out[0].transpose(0, 1)                                                  # (1, nh, n, hd) -> (n, nh, hd)


def _cu_to_list(cu: torch.Tensor | list[int]) -> list[int]:
    cu = check_ints("cu_seqlens", cu, 0, min_len=1)
    if cu[0] != 0 or any(b < a for a, b in zip(cu, cu[1:])):
        raise ValueError(f"cu_seqlens: must start at 0 and never decrease; got {cu}")
    return cu


def packed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q, cu_k, causal: bool = True) -> torch.Tensor:
    """Attention over a packed batch, one sequence at a time (no padding anywhere).

    q:    (Nq, nh, hd)   the new tokens of every sequence, concatenated
    k, v: (Nk, nkv, hd)  every sequence's keys/values, concatenated
    cu_q, cu_k: (S+1,)   cumulative lengths: sequence s owns q[cu_q[s]:cu_q[s+1]]
                         and k[cu_k[s]:cu_k[s+1]]; its queries are its LAST tokens.
    returns (Nq, nh, hd)
    """
    cu_q, cu_k = _cu_to_list(cu_q), _cu_to_list(cu_k)
    if len(cu_q) != len(cu_k):
        raise ValueError(f"cu_q/cu_k: must describe the same number of sequences; got {len(cu_q) - 1} and {len(cu_k) - 1}")
    out = torch.empty_like(q)
    for s in range(len(cu_q) - 1):
        if cu_q[s + 1] == cu_q[s]:
            continue
        qs = q[cu_q[s]:cu_q[s + 1]]                                # (lq, nh, hd)
        ks, vs = k[cu_k[s]:cu_k[s + 1]], v[cu_k[s]:cu_k[s + 1]]    # (lk, nkv, hd)
        out[cu_q[s]:cu_q[s + 1]] = sequence_attention(qs, ks, vs, causal)
    return out


def packed_attention_masked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q, cu_k, causal: bool = True) -> torch.Tensor:
    """Same result as `packed_attention`, in one SDPA call with a block-diagonal mask.

    Simple and a single kernel launch, but it computes all Nq x Nk scores,
    most of which the mask throws away: fine for short packs, wasteful for long ones.
    """
    cu_q, cu_k = _cu_to_list(cu_q), _cu_to_list(cu_k)
    seq_q = torch.repeat_interleave(torch.arange(len(cu_q) - 1), torch.tensor(cu_q).diff()).to(q.device)  # (Nq,)
    seq_k = torch.repeat_interleave(torch.arange(len(cu_k) - 1), torch.tensor(cu_k).diff()).to(q.device)  # (Nk,)
    mask = seq_q[:, None] == seq_k[None, :]                                                                # (Nq, Nk)
    if causal:
        # position of each token inside its own sequence; queries are the last tokens of their keys
        pos_k = torch.arange(len(seq_k), device=q.device) - torch.tensor(cu_k[:-1], device=q.device)[seq_k]
        lens_q = torch.tensor(cu_q, device=q.device).diff()
        lens_k = torch.tensor(cu_k, device=q.device).diff()
        pos_q = (torch.arange(len(seq_q), device=q.device) - torch.tensor(cu_q[:-1], device=q.device)[seq_q]
                 + (lens_k - lens_q)[seq_q])
        mask &= pos_k[None, :] <= pos_q[:, None]
    out = sdpa_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], mask[None, None])
    return out[0].transpose(0, 1)                                                                          # (Nq, nh, hd)


def pack(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate per-sequence tensors (L_s, ...) into (N, ...) plus cu_seqlens (S+1,)."""
    seqs = check_sequence("seqs", seqs, 1, what="a list of tensors")
    for i, s in enumerate(seqs):
        check_tensor(f"seqs[{i}]", s)
    lengths = torch.tensor([s.shape[0] for s in seqs])
    cu = torch.zeros(len(seqs) + 1, dtype=torch.long)
    cu[1:] = lengths.cumsum(0)
    return torch.cat(seqs, dim=0), cu
