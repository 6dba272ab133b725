"""Every attention path agrees with the explicit-softmax reference to 1e-5 in fp32,
on the test device (the `device` fixture: COURSE_DEVICE, else the best one here)."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from course_lib.attention import (causal_mask, pack, packed_attention, packed_attention_masked,
                                  padded_causal_mask, reference_attention, repeat_kv, sdpa_attention)
from course_lib.padding import attention_mask_from_lengths

TOL = dict(atol=1e-5, rtol=1e-5)


def rand(*shape, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(device)


def test_reference_matches_textbook_formula_without_mask(device):
    q, k, v = rand(2, 4, 5, 8, device=device), rand(2, 4, 5, 8, seed=1, device=device), rand(2, 4, 5, 8, seed=2, device=device)
    expected = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, -1) @ v
    assert torch.allclose(reference_attention(q, k, v), expected, **TOL)


@pytest.mark.parametrize("nh,nkv", [(4, 4), (4, 2), (8, 1)])
def test_sdpa_matches_reference_with_causal_padding_mask(nh, nkv, device):
    B, T, hd = 3, 7, 16
    q, k, v = rand(B, nh, T, hd, device=device), rand(B, nkv, T, hd, seed=1, device=device), rand(B, nkv, T, hd, seed=2, device=device)
    mask = padded_causal_mask(attention_mask_from_lengths([7, 3, 1], "left").to(device), T)
    ref = reference_attention(q, k, v, mask)
    assert torch.allclose(sdpa_attention(q, k, v, mask), ref, **TOL)
    # padding query rows have no key to attend to: they return zeros, not NaN
    assert torch.all(ref[2, :, :6] == 0) and not torch.isnan(ref).any()


def test_gqa_really_shares_heads():
    k = rand(1, 2, 3, 4)
    r = repeat_kv(k, 3)
    assert r.shape == (1, 6, 3, 4)
    assert torch.equal(r[:, 0], r[:, 2]) and torch.equal(r[:, 3], k[:, 1])
    with pytest.raises(ValueError, match="heads"):
        reference_attention(rand(1, 3, 2, 4), rand(1, 2, 2, 4), rand(1, 2, 2, 4))


def test_causal_mask_puts_queries_at_the_end():
    m = causal_mask(2, 4)
    assert m.tolist() == [[True, True, True, False], [True, True, True, True]]
    with pytest.raises(ValueError, match="q_len"):
        causal_mask(5, 4)


@settings(max_examples=25, deadline=None)
@given(lens=st.lists(st.tuples(st.integers(1, 9), st.integers(0, 6)), min_size=1, max_size=5),
       nkv=st.sampled_from([1, 2, 4]), seed=st.integers(0, 10_000))
def test_packed_paths_agree_with_per_sequence_reference(lens, nkv, seed, device):
    """Each sequence has lk keys and its last lq (<= lk) tokens as queries (prefill or decode)."""
    nh, hd = 4, 8
    qs, ks, vs, expected = [], [], [], []
    for i, (lq, extra) in enumerate(lens):
        lk = lq + extra
        q, k, v = (rand(n, h, hd, seed=seed + 3 * i + j, device=device) for j, (n, h) in enumerate([(lq, nh), (lk, nkv), (lk, nkv)]))
        qs.append(q); ks.append(k); vs.append(v)
        ref = reference_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
                                  causal_mask(lq, lk, device))
        expected.append(ref[0].transpose(0, 1))
    q, cu_q = pack(qs)
    k, cu_k = pack(ks)
    v, _ = pack(vs)
    expected = torch.cat(expected)
    assert torch.allclose(packed_attention(q, k, v, cu_q, cu_k), expected, **TOL)
    assert torch.allclose(packed_attention_masked(q, k, v, cu_q, cu_k), expected, **TOL)


def test_padded_batch_equals_each_sequence_alone(device):
    """The lesson-01 claim: with a mask, padding changes nothing for the real tokens."""
    lengths, nh, hd, T = [6, 2, 4], 2, 8, 6
    x = [rand(n, nh, hd, seed=i, device=device) for i, n in enumerate(lengths)]
    q = torch.zeros(3, nh, T, hd, device=device)
    for b, n in enumerate(lengths):                      # left padding
        q[b, :, T - n:] = x[b].transpose(0, 1)
    mask = padded_causal_mask(attention_mask_from_lengths(lengths, "left").to(device), T)
    out = sdpa_attention(q, q, q, mask)
    for b, n in enumerate(lengths):
        alone = reference_attention(x[b].transpose(0, 1)[None], x[b].transpose(0, 1)[None], x[b].transpose(0, 1)[None],
                                    causal_mask(n, n, device))
        assert torch.allclose(out[b, :, T - n:], alone[0], **TOL)


def test_bad_cu_seqlens_is_a_clear_error():
    q = rand(3, 2, 4)
    with pytest.raises(ValueError, match="cu_seqlens"):
        packed_attention(q, q, q, [0, 2, 1], [0, 2, 3])
