"""Paged attention: the fast kernel and the readable gather path both equal contiguous SDPA,
and both check their input alike. (Crash-prone cases, such as a corrupt kernel cache or shapes
that overflowed the kernel's stack, run in child processes: tests/test_paged_kernel_robustness.py.)"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

import course_lib.kernel_build as build
import course_lib.paged_attention as pa
from course_lib.paged_attention import (gather_kv, kernel_available, paged_attention, paged_attention_gather,
                                        paged_attention_kernel)

KERNEL = kernel_available()
needs_kernel = pytest.mark.skipif(not KERNEL, reason="no C compiler here: the fast kernel cannot be built")


def random_paged(N, nh, nkv, hd, bs, max_blocks, num_blocks, seed, dtype=torch.float32, lens=None, device="cpu"):
    """A random pool, random (distinct-per-row) block tables and context lengths (made on the
    CPU from the seed, then moved to `device`)."""
    g = torch.Generator().manual_seed(seed)
    kb = torch.randn(num_blocks, nkv, hd, bs, generator=g, dtype=dtype)             # (nb, nkv, hd, bs)
    vb = torch.randn(num_blocks, nkv, bs, hd, generator=g, dtype=dtype)             # (nb, nkv, bs, hd)
    tables = torch.stack([torch.randperm(num_blocks, generator=g)[:max_blocks] for _ in range(N)])  # (N, mb)
    if lens is None:
        lens = torch.randint(0, max_blocks * bs + 1, (N,), generator=g)
    q = torch.randn(N, nh, hd, generator=g, dtype=dtype)
    return tuple(t.to(device) for t in (q, kb, vb, tables, torch.as_tensor(lens, dtype=torch.long)))


def contiguous_reference(q, kb, vb, tables, lens):
    """Row by row: copy the keys out (gather_kv), then torch's SDPA on a contiguous tensor."""
    rows = []
    for i in range(q.shape[0]):
        L = int(lens[i])
        if L == 0:
            rows.append(torch.zeros_like(q[i]))
            continue
        K, V = gather_kv(kb, vb, tables[i].tolist(), L)                                # (L, nkv, hd)
        o = F.scaled_dot_product_attention(q[i][None, :, None], K.transpose(0, 1)[None], V.transpose(0, 1)[None],
                                           enable_gqa=True)                          # (1, nh, 1, hd)
        rows.append(o[0, :, 0])
    return torch.stack(rows)


def test_gather_kv_follows_the_block_table():
    """Token j comes from block table[j // bs], slot j % bs: checked against a hand-made pool."""
    nb, nkv, hd, bs = 5, 2, 3, 4
    kb = torch.zeros(nb, nkv, hd, bs)
    vb = torch.zeros(nb, nkv, bs, hd)
    for b in range(nb):
        for t in range(bs):
            kb[b, :, :, t] = 100 * b + t          # the key of (block b, slot t) is 100 b + t everywhere
            vb[b, :, t, :] = -(100 * b + t)
    table = [3, 0, 4]
    K, V = gather_kv(kb, vb, table, 10)
    expected = torch.tensor([100 * table[j // bs] + j % bs for j in range(10)], dtype=torch.float32)
    assert K.shape == (10, nkv, hd)
    assert torch.equal(K[:, 0, 0], expected) and torch.equal(V[:, 1, 2], -expected)


@settings(max_examples=25, deadline=None)
@given(N=st.integers(1, 6), heads=st.sampled_from([(4, 2), (4, 4), (6, 3), (8, 1)]), hd=st.sampled_from([8, 16, 32]),
       bs=st.sampled_from([1, 4, 16]), max_blocks=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_gather_path_equals_contiguous_sdpa(N, heads, hd, bs, max_blocks, seed, device):
    """On the test device; 'auto' too (there: the C kernel on the CPU, the Triton kernel on CUDA)."""
    nh, nkv = heads
    q, kb, vb, tables, lens = random_paged(N, nh, nkv, hd, bs, max_blocks, max_blocks * N + 3, seed, device=device)
    ref = contiguous_reference(q, kb, vb, tables, lens)
    torch.testing.assert_close(paged_attention_gather(q, kb, vb, tables, lens), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(paged_attention(q, kb, vb, tables, lens), ref, atol=1e-5, rtol=1e-5)


@needs_kernel
@settings(max_examples=25, deadline=None)
@given(N=st.integers(1, 6), heads=st.sampled_from([(4, 2), (4, 4), (6, 3), (8, 1)]), hd=st.sampled_from([8, 32]),
       bs=st.sampled_from([1, 4, 16]), max_blocks=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_kernel_equals_contiguous_sdpa(N, heads, hd, bs, max_blocks, seed):
    nh, nkv = heads
    q, kb, vb, tables, lens = random_paged(N, nh, nkv, hd, bs, max_blocks, max_blocks * N + 3, seed)
    ref = contiguous_reference(q, kb, vb, tables, lens)
    torch.testing.assert_close(paged_attention_kernel(q, kb, vb, tables, lens), ref, atol=1e-5, rtol=1e-5)


@needs_kernel
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("bs", [1, 4, 16, 32, 64, 128])
def test_kernel_long_contexts_cross_many_tiles(bs, dtype, tol):
    """The kernel's online softmax takes a tile of blocks (about 128 tokens) at a time: contexts of
    many tiles, ending on a tile's edge, one past it, one short of it and mid-block, with 1, 2 and 3
    threads; TinyLM's head shape and head_dim 128 with 8 kv heads (32 query heads)."""
    tile = bs if bs >= pa.KERNEL_TILE_TOKENS else pa.KERNEL_TILE_TOKENS // bs * bs
    lens = [1, tile - 1, tile, tile + 1, 3 * tile, 3 * tile + bs // 2 + 1, 700]
    max_blocks = -(-max(lens) // bs)
    for nh, nkv, hd in ((4, 2, 32), (32, 8, 128)):
        q, kb, vb, tables, lens_t = random_paged(len(lens), nh, nkv, hd, bs, max_blocks, max_blocks * len(lens) + 1,
                                                 seed=bs, dtype=dtype, lens=lens)
        ref = contiguous_reference(q, kb, vb, tables, lens_t)
        for threads in (1, 2, 3):
            out = paged_attention_kernel(q, kb, vb, tables, lens_t, num_threads=threads)
            torch.testing.assert_close(out, ref, atol=tol, rtol=tol, msg=f"{nh}/{nkv}/{hd}, {threads} threads")


@needs_kernel
@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_kernel_running_max_rises_and_falls(direction):
    """Scores that grow along the context make every tile bring a new max (the running sums are
    rescaled each time); scores that shrink never do. Both match the reference, with large scores
    (up to ~100) that would overflow exp without the max."""
    g = torch.Generator().manual_seed(11)
    N, nh, nkv, hd, bs, L = 2, 4, 2, 32, 16, 1000                           # 8 tiles of 128 tokens
    q = torch.randn(N, nh, hd, generator=g)
    K = torch.randn(N, L, nkv, hd, generator=g) * 0.1
    ramp = direction * torch.linspace(-3, 3, L)                                   # (L,)
    K += ramp[None, :, None, None] * q.view(N, nkv, nh // nkv, hd).mean(2)[:, None] * 4
    V = torch.randn(N, L, nkv, hd, generator=g)
    n_blocks = -(-L // bs)
    kb = torch.zeros(N * n_blocks, nkv, hd, bs)
    vb = torch.zeros(N * n_blocks, nkv, bs, hd)
    tables = torch.randperm(N * n_blocks, generator=g).view(N, n_blocks)
    for i in range(N):
        for j in range(L):
            kb[tables[i, j // bs], :, :, j % bs] = K[i, j]
            vb[tables[i, j // bs], :, j % bs, :] = V[i, j]
    lens = torch.full((N,), L)
    ref = contiguous_reference(q, kb, vb, tables, lens)
    scores = torch.einsum("nhd,nlhd->nhl", q, K.repeat_interleave(nh // nkv, 2)) / hd ** 0.5
    assert scores.abs().max() > 20                                     # exp(score) alone would be far off scale
    torch.testing.assert_close(paged_attention_kernel(q, kb, vb, tables, lens), ref, atol=1e-5, rtol=1e-5)


@needs_kernel
def test_kernel_ignores_nan_past_the_context_across_tiles():
    """NaN in every slot past each row's length (the tail of its last block, in its last tile) and in
    the blocks it does not read never reaches the answer, for rows of several tiles."""
    N, nh, nkv, hd, bs, max_blocks = 3, 4, 2, 32, 16, 12
    q, kb, vb, _, _ = random_paged(N, nh, nkv, hd, bs, max_blocks, N * max_blocks, seed=9)
    tables = torch.arange(N * max_blocks).view(N, max_blocks)            # disjoint: each slot has one owner
    lens = torch.tensor([70, 129, 191])
    good = contiguous_reference(q, kb, vb, tables, lens)
    kb, vb = kb.clone(), vb.clone()
    for i, L in enumerate(lens.tolist()):
        for j in range(L, max_blocks * bs):
            kb[tables[i, j // bs], :, :, j % bs] = float("nan")
            vb[tables[i, j // bs], :, j % bs, :] = float("nan")
    for threads in (1, 2):
        out = paged_attention_kernel(q, kb, vb, tables, lens, num_threads=threads)
        torch.testing.assert_close(out, good, atol=1e-5, rtol=1e-5)


@needs_kernel
def test_kernel_float64_and_edge_lengths():
    """Lengths 0 (zeros out), 1, a full table, and a partial last block; float64 to 1e-12."""
    lens = [0, 1, 5 * 16, 37, 16]
    q, kb, vb, tables, lens = random_paged(5, 4, 2, 32, 16, 5, 40, seed=3, dtype=torch.float64, lens=lens)
    out = paged_attention_kernel(q, kb, vb, tables, lens)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    torch.testing.assert_close(out, contiguous_reference(q, kb, vb, tables, lens), atol=1e-12, rtol=1e-12)


@needs_kernel
def test_kernel_reads_in_place_not_stale_copies():
    """Changing one block of the pool changes exactly the rows whose tables use it."""
    q, kb, vb, tables, lens = random_paged(4, 4, 2, 16, 4, 3, 12, seed=7, lens=[12, 12, 12, 12])
    before = paged_attention_kernel(q, kb, vb, tables, lens)
    victim = int(tables[2, 1])
    vb[victim] += 1.0
    after = paged_attention_kernel(q, kb, vb, tables, lens)
    users = [(victim in tables[i].tolist()) for i in range(4)]
    for i in range(4):
        assert torch.allclose(before[i], after[i]) != users[i]


def test_causal_rows_are_a_prefill():
    """n rows with one block table and lengths start+1..start+n = causal attention of a chunk."""
    g = torch.Generator().manual_seed(0)
    L, nh, nkv, hd, bs = 13, 4, 2, 8, 4
    K, V = torch.randn(L, nkv, hd, generator=g), torch.randn(L, nkv, hd, generator=g)
    q = torch.randn(5, nh, hd, generator=g)                        # the last 5 tokens' queries
    table = [2, 0, 3, 1]
    kb, vb = torch.zeros(4, nkv, hd, bs), torch.zeros(4, nkv, bs, hd)
    for j in range(L):
        kb[table[j // bs], :, :, j % bs] = K[j]
        vb[table[j // bs], :, j % bs, :] = V[j]
    tables = torch.tensor([table] * 5)
    lens = torch.arange(L - 5 + 1, L + 1)
    from course_lib.attention import causal_mask, reference_attention
    ref = reference_attention(q.transpose(0, 1)[None], K.transpose(0, 1)[None], V.transpose(0, 1)[None],
                              causal_mask(5, L))[0].transpose(0, 1)        # (5, nh, hd)
    for impl in ("gather",) + (("kernel",) if KERNEL else ()):
        torch.testing.assert_close(paged_attention(q, kb, vb, tables, lens, impl=impl), ref, atol=1e-5, rtol=1e-5)


def test_bad_inputs_raise_value_errors():
    q, kb, vb, tables, lens = random_paged(2, 4, 2, 8, 4, 2, 6, seed=0, lens=[3, 8])
    with pytest.raises(ValueError, match="impl"):
        paged_attention(q, kb, vb, tables, lens, impl="fast")
    with pytest.raises(ValueError, match="context_lens"):
        paged_attention(q, kb, vb, tables, torch.tensor([3, 9]))
    with pytest.raises(ValueError, match="heads"):
        paged_attention(torch.randn(2, 3, 8), kb, vb, tables, lens)
    with pytest.raises(ValueError, match="value_blocks"):
        paged_attention(q, kb, vb.transpose(2, 3), tables, lens)
    bad = tables.clone()
    bad[1, 1] = 99
    for impl in ("gather",) + (("kernel", "auto") if KERNEL else ()):
        with pytest.raises(ValueError, match=r"block_tables: .*\[0, 5\]"):
            paged_attention(q, kb, vb, bad, lens, impl=impl)


def test_auto_falls_back_with_one_notice(capsys, monkeypatch):
    """Where the kernel cannot run (here: bfloat16), 'auto' uses the gather path and says so once."""
    monkeypatch.setattr(pa, "_notice_shown", False)
    q, kb, vb, tables, lens = random_paged(3, 4, 2, 8, 4, 2, 6, seed=1, dtype=torch.bfloat16, lens=[3, 8, 1])
    out = paged_attention(q, kb, vb, tables, lens)
    paged_attention(q, kb, vb, tables, lens)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "readable gather path" in err[0] and "bfloat16" in err[0]
    torch.testing.assert_close(out.float(), paged_attention_gather(q, kb, vb, tables, lens).float())
    with pytest.raises(RuntimeError, match="float32/float64"):
        paged_attention(q, kb, vb, tables, lens, impl="kernel")


def test_no_compiler_means_gather(monkeypatch):
    """Without a C compiler the kernel reports why, and 'auto' still answers correctly."""
    monkeypatch.setattr(build, "_compiler", lambda: None)
    pa._load_kernel.cache_clear()
    try:
        q, kb, vb, tables, lens = random_paged(2, 4, 2, 24, 4, 2, 6, seed=2, lens=[5, 2])
        assert "no C compiler" in pa.kernel_unavailable_reason(q, kb)
        torch.testing.assert_close(paged_attention(q, kb, vb, tables, lens),
                                   contiguous_reference(q, kb, vb, tables, lens), atol=1e-5, rtol=1e-5)
    finally:
        pa._load_kernel.cache_clear()


def test_block_order_matters():
    """Reversing a row's block table changes its answer (for a row that is not all one block):
    a kernel that ignored the table's order could not pass the agreement tests."""
    q, kb, vb, tables, lens = random_paged(2, 4, 2, 16, 4, 3, 8, seed=5, lens=[10, 10])
    out = paged_attention_gather(q, kb, vb, tables, lens)
    flipped = torch.stack([tables[0].flip(0), tables[1]])
    again = paged_attention_gather(q, kb, vb, flipped, lens)
    assert not torch.allclose(out[0], again[0], atol=1e-4) and torch.allclose(out[1], again[1])


def test_gather_checks_the_blocks_a_row_reads_and_ignores_the_rest():
    """A block id of -1 inside the context is an error (it used to be clamped to block 0);
    a table entry past a row's last block may hold anything, even a huge id (it used to raise
    a bare IndexError). Both paths, alike."""
    q, kb, vb, tables, lens = random_paged(2, 4, 2, 8, 4, 3, 6, seed=4, lens=[5, 12])   # row 0 reads 2 blocks
    impls = ("gather",) + (("kernel", "auto") if KERNEL else ())
    good = paged_attention_gather(q, kb, vb, tables, lens)
    inside = tables.clone()
    inside[0, 1] = -1
    unused = tables.clone()
    unused[0, 2] = 2 ** 62
    for impl in impls:
        with pytest.raises(ValueError, match=r"block_tables: .*\[0, 5\].*from -1"):
            paged_attention(q, kb, vb, inside, lens, impl=impl)
        torch.testing.assert_close(paged_attention(q, kb, vb, unused, lens, impl=impl), good, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16, torch.uint8])
def test_block_ids_of_any_integer_dtype_are_checked_alike(dtype):
    """The ids check runs in numpy on CPU tensors (negative ids seen unsigned are out of range):
    every integer dtype of block_tables and context_lens gives the same verdict and message."""
    q, kb, vb, _, _ = random_paged(2, 4, 2, 8, 4, 3, 6, seed=0)
    lens = torch.tensor([5, 12], dtype=dtype)                              # row 0 reads 2 entries, row 1 all 3
    pa._check_inputs(q, kb, vb, torch.tensor([[0, 1, 99], [2, 3, 4]], dtype=dtype), lens)   # 99: never read
    with pytest.raises(ValueError, match=r"block_tables: .*\[0, 5\].*from 0 to 6"):
        pa._check_inputs(q, kb, vb, torch.tensor([[0, 6, 1], [2, 3, 4]], dtype=dtype), lens)
    if dtype != torch.uint8:
        with pytest.raises(ValueError, match=r"from -1 to 4"):
            pa._check_inputs(q, kb, vb, torch.tensor([[0, 1, 1], [2, -1, 4]], dtype=dtype), lens)
    with pytest.raises(ValueError, match="context_lens: every length"):
        pa._check_inputs(q, kb, vb, torch.tensor([[0, 1, 1], [2, 3, 4]], dtype=dtype),
                         torch.tensor([5, 13], dtype=dtype))


def test_ignored_slots_may_hold_nan():
    """Slots past a row's length (the tail of its last block, blocks it does not read) are
    never part of the answer, even when they hold NaN: the kernel never reads them, and
    the gather path zeroes them before SDPA (a masked NaN still poisons a matrix product)."""
    q, kb, vb, tables, lens = random_paged(2, 4, 2, 8, 4, 3, 6, seed=6, lens=[5, 9])
    good = contiguous_reference(q, kb, vb, tables, lens)
    kb, vb = kb.clone(), vb.clone()
    for i, L in enumerate(lens.tolist()):
        for j in range(L, 3 * 4):                      # every slot of row i's table past its length
            b, t = int(tables[i, j // 4]), j % 4
            if all(int(tables[r, p // 4]) != b or p % 4 != t for r in range(2) for p in range(int(lens[r]))):
                kb[b, :, :, t] = float("nan")
                vb[b, :, t, :] = float("nan")
    assert kb.isnan().any()
    for impl in ("gather",) + (("kernel",) if KERNEL else ()):
        torch.testing.assert_close(paged_attention(q, kb, vb, tables, lens, impl=impl), good, atol=1e-5, rtol=1e-5)


def test_wrong_types_raise_type_errors_naming_the_parameter():
    """Mixed dtypes (q and keys float64, values float32) used to give values up to 1e266 on
    the kernel path; float tables were silently truncated. Checked here on the gather path
    (the kernel and 'auto' cases run in a child process: test_paged_kernel_robustness.py)."""
    q, kb, vb, tables, lens = random_paged(2, 4, 2, 8, 4, 2, 6, seed=0, dtype=torch.float64, lens=[3, 8])
    for args, name in (((q, kb, vb.float(), tables, lens), "value_blocks"),
                       ((q, kb.float(), vb, tables, lens), "key_blocks"),
                       ((q, kb, vb, tables.double(), lens), "block_tables"),
                       ((q, kb, vb, tables, lens.double()), "context_lens"),
                       ((q, kb, vb, tables.tolist(), lens), "block_tables"),
                       ((q.long(), kb.long(), vb.long(), tables, lens), "q")):
        with pytest.raises(TypeError, match=f"^{name}: "):
            paged_attention_gather(*args)


def test_gather_kv_checks_its_table_and_length():
    kb, vb = torch.zeros(3, 1, 2, 4), torch.zeros(3, 1, 4, 2)
    assert gather_kv(kb, vb, [2, 99], 4)[0].shape == (4, 1, 2)        # the unread entry is ignored
    assert gather_kv(kb, vb, [], 0)[0].shape == (0, 1, 2)
    with pytest.raises(ValueError, match="block_table: .*\\[0, 2\\]"):
        gather_kv(kb, vb, [2, -1], 5)
    with pytest.raises(ValueError, match="length"):
        gather_kv(kb, vb, [2, 1], 9)
    with pytest.raises(TypeError, match="block_table"):
        gather_kv(kb, vb, [1.0], 3)


def test_kernel_source_is_a_packaged_file():
    """The C source lives in paged_attention_kernel.c (shipped as package data) and
    PAGED_ATTENTION_C holds its text, for lesson 04 to print."""
    path = Path(pa.__file__).with_name(pa.KERNEL_SOURCE)
    assert pa.PAGED_ATTENTION_C == path.read_text(encoding="utf-8")
    assert "int paged_attention(" in pa.PAGED_ATTENTION_C
    # Python sizes the kernel's scratch with the C file's tile length
    assert f"#define TILE_TOKENS {pa.KERNEL_TILE_TOKENS} " in pa.PAGED_ATTENTION_C
    config = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert pa.KERNEL_SOURCE in config["tool"]["setuptools"]["package-data"]["course_lib"]


@needs_kernel
def test_the_cache_key_holds_the_cpu_the_library_was_built_for(monkeypatch, tmp_path):
    """The library is built with -march=native, so a cache folder shared with a machine whose CPU
    differs (a network home, a copied container) must not hand it over: the key holds what
    -march=native expands to. Here another CPU is pretended: a second library is built beside the first."""
    cc = build._compiler()
    target = build._native_target(cc, deadline=time.monotonic() + 60)
    assert any(word in target for word in ("march=", "target-cpu", "mcpu=")), target[:500]
    monkeypatch.setenv(build.CACHE_ENV, str(tmp_path))
    pa._load_kernel.cache_clear()
    try:
        assert kernel_available(torch.float32, 8, 4, 2, 1)
        first = sorted(tmp_path.glob("paged_attention_*.so"))
        assert len(first) == 1
        assert kernel_available(torch.float32, 8, 4, 2, 1) and sorted(tmp_path.glob("*.so")) == first   # cached
        monkeypatch.setitem(build._targets, cc, target + " -mno-avx2")          # "another CPU"
        pa._load_kernel.cache_clear()
        assert kernel_available(torch.float32, 8, 4, 2, 1)
        assert len(list(tmp_path.glob("paged_attention_*.so"))) == 2
    finally:
        pa._load_kernel.cache_clear()


def test_a_failed_build_is_retried_when_the_compiler_changes(monkeypatch):
    """A failure is remembered (no rebuild on every call), but not for good: once a compiler
    can be found again, the next call builds and serves."""
    if not KERNEL:
        pytest.skip("no C compiler here")
    real = build._compiler()
    monkeypatch.setattr(pa, "_notice_shown", True)
    pa._load_kernel.cache_clear()
    try:
        monkeypatch.setattr(build, "_compiler", lambda: None)
        assert "no C compiler" in pa.kernel_unavailable_reason(torch.empty(0, 2, 8), torch.empty(0, 1, 8, 4))
        monkeypatch.setattr(build, "_compiler", lambda: real)
        assert pa.kernel_unavailable_reason(torch.empty(0, 2, 8), torch.empty(0, 1, 8, 4)) is None
    finally:
        pa._load_kernel.cache_clear()


@needs_kernel
def test_the_store_falls_back_when_the_kernel_fails_at_run_time(capsys, monkeypatch):
    """A paged store on 'auto' whose kernel fails mid-step (here: made to fail) serves the
    step on the readable path with the one-line notice; on 'kernel' the failure is raised."""
    from course_lib.kv.paged import PagedKVStore

    def step(attention):
        s = PagedKVStore(1, 2, 8, dtype=torch.float32, num_blocks=6, block_size=4, attention=attention)
        s.add(0, list(range(6)), 10)
        s.grow(0, 6)
        g = torch.Generator().manual_seed(3)
        q, k, v = (torch.randn(1, 6, n, 8, generator=g) for n in (4, 2, 2))     # (1, N, heads, hd)
        return s.step_context([(0, 6)]).attend(0, q, k, v)                       # (1, N, nh, hd)

    good = step("gather")

    def broken(*args, **kwargs):
        raise RuntimeError("the kernel broke")
    monkeypatch.setattr(pa.KernelCall, "__call__", broken)          # prepared fine, fails when it runs
    monkeypatch.setattr(pa, "_notice_shown", False)
    torch.testing.assert_close(step("auto"), good, atol=1e-5, rtol=1e-5)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "readable gather path (the kernel broke)" in err[0]
    with pytest.raises(RuntimeError, match="the kernel broke"):
        step("kernel")


@needs_kernel
def test_a_kernel_call_is_prepared_once_and_checks_what_each_layer_gives_it():
    """KernelCall: the block tables are checked once; each call gives the kernel's answer for
    that layer's q and blocks, and refuses tensors of another shape or dtype."""
    q, kb, vb, tables, lens = random_paged(5, 4, 2, 8, 4, 3, 12, seed=7)
    call = pa.KernelCall(q, kb, vb, tables, lens)
    for layer_seed in (1, 2):                                   # another layer: other q and blocks, same rows
        q2, kb2, vb2, _, _ = random_paged(5, 4, 2, 8, 4, 3, 12, seed=layer_seed)
        torch.testing.assert_close(call(q2, kb2, vb2), contiguous_reference(q2, kb2, vb2, tables, lens),
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="q: must be a CPU torch.float32 tensor of shape"):
        call(q[:4], kb, vb)
    with pytest.raises(ValueError, match="value_blocks"):
        call(q, kb, vb.double())
    with pytest.raises(ValueError, match="block_tables"):
        pa.KernelCall(q, kb, vb, tables.clone().fill_(99), lens)      # bad ids are refused when it is made


@needs_kernel
def test_a_paged_step_checks_its_block_tables_once_for_all_layers(monkeypatch):
    """The engine's step on the C kernel checks the step's block ids once, when the step is built
    (in Python, on the store's own tables), not once per layer, and refuses an id outside the pool."""
    from course_lib.kv.paged import PagedKVStore
    from course_lib.kv.step import PackedStep
    from course_lib.model import TinyLMConfig, build_model
    model = build_model(TinyLMConfig(), seed=0)
    store = PagedKVStore.for_model(model, capacity=256, block_size=16, max_model_len=128, attention="kernel")
    store.add(0, [1, 2, 3, 4, 5], 20)
    calls = []
    real = pa._check_lengths_and_block_ids
    monkeypatch.setattr(pa, "_check_lengths_and_block_ids", lambda *a: calls.append(1) or real(*a))
    PackedStep(model, store, [(0, [1, 2, 3, 4, 5])], grow=True).run()
    assert model.config.num_hidden_layers > 1 and calls == []          # no per-layer (nor per-step) tensor check
    real_slots = store.writable_slots
    monkeypatch.setattr(store, "writable_slots", lambda *a: ([store.num_blocks], real_slots(*a)[1]))
    with pytest.raises(RuntimeError, match="outside the pool"):
        PackedStep(model, store, [(0, [6])], grow=True)
