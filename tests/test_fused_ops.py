"""The fused C ops (course_lib/fused_ops.c) against their PyTorch references."""

import pytest
import torch
import torch.nn.functional as F

from course_lib import fused_ops as fo
from course_lib.model import TinyLMConfig, build_model

DTYPES = [(torch.float32, 1e-6), (torch.float64, 1e-12)]


def close(a, b, tol):
    assert a.shape == b.shape and a.dtype == b.dtype
    assert torch.allclose(a, b, atol=tol, rtol=tol), float((a - b).abs().max())


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 128), (2, 7, 128), (5, 33), (0, 16)])
def test_add_rms_norm_matches_the_reference(dtype, tol, shape):
    g = torch.Generator().manual_seed(0)
    x, d = (torch.randn(shape, generator=g, dtype=dtype) * 3 for _ in range(2))
    w = torch.randn(shape[-1], generator=g, dtype=dtype)
    x0 = x.clone()
    with fo.use("c"):
        out, s = fo.add_rms_norm(x, w, 1e-6, d)
        plain, same = fo.add_rms_norm(x, w, 1e-6)
    close(s, x + d, tol)
    close(out, F.rms_norm(x + d, shape[-1:], w, 1e-6), tol * 10)
    close(plain, F.rms_norm(x, shape[-1:], w, 1e-6), tol * 10)
    assert same is x and torch.equal(x, x0)                   # x itself is never written


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_silu_mul_matches_the_reference(dtype, tol):
    gu = torch.randn(3, 4, 2 * 344, dtype=dtype) * 4
    with fo.use("c"):
        out = fo.silu_mul(gu)
    gate, up = gu.chunk(2, dim=-1)
    close(out, F.silu(gate) * up, tol * 10)
    with pytest.raises(ValueError, match="gate_up"), fo.use("c"):
        fo.silu_mul(torch.randn(2, 5, dtype=dtype))


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_rope_on_a_slice_of_qkv_matches_the_reference(dtype, tol):
    B, T, H, hd, heads = 2, 5, 8, 32, 6
    qkv = torch.randn(B, T, H, hd, dtype=dtype)
    pos = torch.arange(B * T).reshape(B, T) * 7
    freqs = pos[..., None].to(dtype) * (1.0 / 10000 ** (torch.arange(0, hd, 2, dtype=dtype) / hd))
    emb = torch.cat([freqs, freqs], dim=-1)[:, :, None, :]                           # (B, T, 1, hd)
    cos, sin = emb.cos(), emb.sin()
    with fo.use("c"):
        out = fo.rope(qkv, cos, sin, heads)
    close(out, fo.apply_rope(qkv[:, :, :heads], cos, sin), tol)
    with fo.use("torch"):
        close(fo.rope(qkv, cos, sin, heads), fo.apply_rope(qkv[:, :, :heads], cos, sin), 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_write_kv_puts_every_token_in_its_slot(dtype):
    nb, nkv, hd, bs, n = 6, 2, 8, 4, 9
    kv = torch.randn(n, 3 * nkv, hd, dtype=dtype)               # k, v as slices of a wider row (qkv-like)
    k, v = kv[:, nkv:2 * nkv], kv[:, 2 * nkv:]
    slots = torch.randperm(nb * bs)[:n]
    pools = [(torch.zeros(nb, nkv, hd, bs, dtype=dtype), torch.zeros(nb, nkv, bs, hd, dtype=dtype)) for _ in "ct"]
    with fo.use("c"):
        fo.write_kv(k, v, slots, *pools[0])
    fo.write_kv_reference(k, v, slots, *pools[1])
    assert torch.equal(pools[0][0], pools[1][0]) and torch.equal(pools[0][1], pools[1][1])
    kb, vb = pools[0]
    for i, s in enumerate(slots.tolist()):
        assert torch.equal(kb[s // bs, :, :, s % bs], k[i]) and torch.equal(vb[s // bs, :, s % bs], v[i])
    assert int((kb != 0).sum()) == n * nkv * hd                 # nothing written anywhere else


def test_c_refuses_what_it_cannot_run_and_auto_falls_back():
    x = torch.randn(2, 8, requires_grad=True)
    w = torch.ones(8)
    with pytest.raises(RuntimeError, match="no gradient"), fo.use("c"):
        fo.add_rms_norm(x, w, 1e-6)
    out, _ = fo.add_rms_norm(x, w, 1e-6)                         # auto: the reference, so autograd works
    out.sum().backward()
    assert x.grad is not None
    with pytest.raises(ValueError, match="impl"):
        with fo.use("fast"):
            pass


def test_a_build_that_fails_falls_back_to_pytorch_with_one_notice(monkeypatch, capsys):
    def broken(*_):
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    monkeypatch.setattr(fo, "load_library", broken)
    monkeypatch.setattr(fo, "_libs", {})
    monkeypatch.setattr(fo, "_noticed", set())
    x, w = torch.randn(3, 8), torch.randn(8)
    for _ in range(2):
        close(fo.add_rms_norm(x, w, 1e-6)[0], F.rms_norm(x, (8,), w, 1e-6), 0)
    assert capsys.readouterr().out.count("cannot run here (no C compiler found") == 1
    with pytest.raises(RuntimeError, match="no C compiler"), fo.use("c"):
        fo.silu_mul(torch.randn(2, 4))


@torch.no_grad()
def test_the_model_gives_the_same_logits_with_c_ops_and_with_pytorch_ops():
    model = build_model(TinyLMConfig(), seed=0)
    ids = torch.randint(0, 256, (3, 17))
    mask = torch.ones(3, 17, dtype=torch.long)
    mask[0, :4] = 0                                              # left padding too
    with fo.use("torch"):
        ref = model(ids, mask)
    with fo.use("c"):
        out = model(ids, mask)
    close(out, ref, 1e-4)
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.99


def test_rope_takes_the_reference_for_angles_broadcast_over_the_batch():
    x = torch.randn(3, 4, 6, 8)
    cos, sin = torch.rand(1, 4, 1, 8), torch.rand(1, 4, 1, 8)            # one set of angles for the whole batch
    with fo.use("c"):
        close(fo.rope(x, cos, sin, 4), fo.apply_rope(x[:, :, :4], cos, sin), 0)


def test_write_kv_refuses_a_slot_outside_the_pool_before_any_write():
    kb, vb = torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    k = torch.ones(2, 1, 4)
    for bad in ([0, 8], [-1, 0]):
        with pytest.raises(ValueError, match=r"slots: must be in \[0, 7\]"), fo.use("c"):
            fo.write_kv(k, k, torch.tensor(bad), kb, vb)
    assert not kb.any() and not vb.any()


def test_c_and_the_reference_take_the_same_inputs():
    """A non-contiguous x goes to the reference (C reads contiguous rows); a bad shape is refused on both."""
    x, w = torch.randn(8, 4).t(), torch.randn(8)                            # (4, 8), not contiguous
    for impl in ("auto", "torch"):
        with fo.use(impl):
            close(fo.add_rms_norm(x, w, 1e-6)[0], F.rms_norm(x, (8,), w, 1e-6), 1e-6)
            with pytest.raises(ValueError, match="^weight"):
                fo.add_rms_norm(x, torch.ones(7), 1e-6)
            with pytest.raises(ValueError, match="^gate_up"):
                fo.silu_mul(torch.randn(2, 5))
