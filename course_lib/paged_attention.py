"""Paged attention: attention over keys and values that live in fixed-size blocks.

A paged KV cache (course_lib.kv.paged) keeps every token's keys and values in
BLOCKS of `bs` token slots, drawn from one pool. A sequence's blocks can sit
anywhere in the pool; its BLOCK TABLE lists them in order, like an operating
system's page table lists a process's pages:

    token j of a sequence lives in block  block_table[j // bs],  slot  j % bs

Layout of one layer's pool (the store keeps all layers in one tensor):

    key_blocks:    (num_blocks, nkv, hd, bs)   keys stored transposed inside a block,
                                               so a kernel can run over the bs tokens
                                               of a block with vector instructions
                                               (vLLM's kernel lays its key cache out
                                               for the same reason)
    value_blocks:  (num_blocks, nkv, bs, hd)
    block_tables:  (N, max_blocks) integers    row i: the blocks query i reads, in order;
                                               entries past the last block are ignored
    context_lens:  (N,) integers               query i sits at position context_lens[i] - 1
                                               and sees keys 0 .. context_lens[i] - 1

A decoding batch has one query per sequence (N = number of sequences). A
prefill chunk of n tokens gives n rows with the same block table and context
lengths start+1 .. start+n: that is the causal mask, written as lengths.

Three paths that must agree (tests/test_paged_attention.py and tests/test_paged_triton.py,
to 1e-5 in fp32):

    paged_attention_gather   readable: copy each row's blocks into one contiguous
                             (L, nkv, hd) tensor, then ordinary SDPA with a length
                             mask. Easy to trust; but it copies the whole context
                             of every sequence at every step.
    paged_attention_kernel   fast: a short C kernel (paged_attention_kernel.c, next to
                             this file; its text is PAGED_ATTENTION_C) that walks the
                             block table and reads each block where it lies: nothing
                             is copied; one pass over a row's blocks (an online softmax,
                             a tile of blocks at a time), each K/V block read once for
                             all the query heads that share it. Compiled on first
                             use with the system C compiler (gcc/cc) and loaded with
                             ctypes; CPU tensors, float32/float64.
    paged_attention_triton   fast on a GPU: the same walk as a Triton kernel
                             (course_lib/paged_attention_triton.py: one program per
                             row and kv head, online softmax over tiles of tokens);
                             CUDA tensors, float16/bfloat16/float32. Tested on the
                             CPU under Triton's interpreter (TRITON_INTERPRET=1).

`paged_attention(..., impl="auto")` uses the fast path of the tensors' device
(the Triton kernel on CUDA, the C kernel on the CPU) where it can run, and
otherwise falls back to the gather path, printing a one-line notice once (on
Apple MPS, for instance, neither kernel runs: the readable path serves).

C checks nothing, so Python checks everything first, on both paths alike: the
tensors' types, dtypes (q, keys and values all one float dtype), devices and
shapes, and every block id a row really reads (those within its context). Bad
input raises a ValueError or TypeError naming the parameter. A kernel that
cannot run here (no compiler, a GPU tensor, a failed build) is not bad input:
'auto' falls back to the gather path, 'kernel' and 'triton' raise a RuntimeError. How the
kernel is built and cached safely is plumbing, kept out of this file:
course_lib/kernel_build.py.

Measuring (lesson 04, benchmarks/paged_attention.py): `random_decode_problem`
builds one decode step's inputs twice (scattered blocks, and contiguous tensors
holding the same keys and values), `decode_contenders` gives the paths as
functions, `time_contenders` times them interleaved, round by round.

Why not FlexAttention? torch.nn.attention.flex_attention with a paged
BlockMask does run on the CPU through torch.compile (with gcc; 10 s or more
to compile the first time), but its CPU template does one small GEMM per
(row, head, block): with 16-token blocks it measured about 2x contiguous SDPA
when every block is full and no mask function is needed, and over 10x with a
mask function for partial last blocks, on this course's 2-core CPU.
`python -m benchmarks.paged_attention --flex` measures it beside the rest.
On a GPU the Triton kernel serves (FlexAttention compiles to Triton there too;
ours is short enough to read).
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch

from course_lib.attention import sdpa_attention
from course_lib.device import check_device, get_device, time_interleaved
from course_lib.kernel_build import (  # noqa: F401  (CACHE_ENV ... RETRY_AFTER_S: public, importable from here)
    CACHE_ENV, DEFAULT_COMPILE_TIMEOUT_S, KERNEL_SOURCE, PAGED_ATTENTION_C, RETRY_AFTER_S, TIMEOUT_ENV, _load_kernel)
from course_lib.validate import check_int

IMPLS = ("auto", "kernel", "triton", "gather")   # kernel: the C kernel (CPU); triton: the GPU kernel
PARALLEL_MIN_WORK = 1 << 20     # multiply-adds (rows x heads x keys x head_dim) below which the kernel uses one thread
KERNEL_MAX_SCRATCH_BYTES = 1 << 30   # per-thread scratch the kernel may ask for; above it, the gather path serves
KERNEL_TILE_TOKENS = 128        # TILE_TOKENS in paged_attention_kernel.c (tokens per softmax tile)


# ---- shapes and checks ------------------------------------------------------------
def _check_inputs(q, key_blocks, value_blocks, block_tables, context_lens) -> tuple[int, int, int, int, int]:
    """Validate everything both paths rely on; return (N, nh, nkv, hd, bs).

    Raises TypeError (not a tensor, wrong dtype) or ValueError (shape, device, range),
    each naming the parameter. Nothing here depends on which path runs next."""
    for name, t in (("q", q), ("key_blocks", key_blocks), ("value_blocks", value_blocks),
                    ("block_tables", block_tables), ("context_lens", context_lens)):
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided:
            raise TypeError(f"{name}: must be a dense torch.Tensor; got {type(t).__name__}"
                            + (f" with layout {t.layout}" if isinstance(t, torch.Tensor) else ""))
    if not q.dtype.is_floating_point:
        raise TypeError(f"q: must be a floating-point tensor; got {q.dtype}")
    for name, t in (("key_blocks", key_blocks), ("value_blocks", value_blocks)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name}: must have q's dtype ({q.dtype}); got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name}: must be on q's device ({q.device}); got {t.device}")
    for name, t in (("block_tables", block_tables), ("context_lens", context_lens)):
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise TypeError(f"{name}: must be an integer tensor (e.g. torch.int64); got {t.dtype}")
    if q.dim() != 3:
        raise ValueError(f"q: must be (N, nh, hd); got shape {tuple(q.shape)}")
    if key_blocks.dim() != 4 or value_blocks.dim() != 4:
        raise ValueError("key_blocks/value_blocks: must be (num_blocks, nkv, hd, bs) and (num_blocks, nkv, bs, hd)")
    N, nh, hd = q.shape
    nb, nkv, hd_k, bs = key_blocks.shape
    if min(nkv, hd_k, bs) < 1:
        raise ValueError(f"key_blocks: nkv, head_dim and block_size must each be >= 1; "
                         f"got shape {tuple(key_blocks.shape)}")
    if hd_k != hd or tuple(value_blocks.shape) != (nb, nkv, bs, hd):
        raise ValueError(f"value_blocks: must be {(nb, nkv, bs, hd)} to match key_blocks {tuple(key_blocks.shape)} "
                         f"and q's head_dim {hd}; got {tuple(value_blocks.shape)}")
    if nh < 1 or nh % nkv:
        raise ValueError(f"heads: query heads ({nh}) must be a positive multiple of key/value heads ({nkv})")
    if block_tables.dim() != 2 or block_tables.shape[0] != N:
        raise ValueError(f"block_tables: must be (N={N}, max_blocks); got shape {tuple(block_tables.shape)}")
    if context_lens.dim() != 1 or context_lens.shape[0] != N:
        raise ValueError(f"context_lens: must be (N={N},); got shape {tuple(context_lens.shape)}")
    _check_lengths_and_block_ids(block_tables, context_lens, bs, nb)
    return N, nh, nkv, hd, bs


def _blocks_read(block_tables: torch.Tensor, context_lens: torch.Tensor, bs: int) -> torch.Tensor:
    """(N, max_blocks) bool: True for the table entries a row really reads, its first
    ceil(context_len / bs); the entries past them are ignored (they may hold anything)."""
    need = (context_lens.long().to(block_tables.device) + bs - 1) // bs                 # (N,)
    return torch.arange(block_tables.shape[1], device=block_tables.device)[None, :] < need[:, None]


def _check_lengths_and_block_ids(block_tables: torch.Tensor, context_lens: torch.Tensor, bs: int,
                                 num_blocks: int) -> None:
    """Every length must be in [0, max_blocks * bs], and every block a row reads (its first
    ceil(context_len / bs) table entries) must exist in the pool: ids in [0, num_blocks - 1].
    On the CPU this runs in numpy, on views of the same memory: it runs once per step (KernelCall),
    and torch's fixed cost per operation made it take ~100 us, where numpy takes ~25 us."""
    max_blocks = block_tables.shape[1]
    if block_tables.device.type == "cpu" and context_lens.device.type == "cpu":
        tables = block_tables.numpy().astype(np.int64, copy=False)                 # (N, max_blocks)
        lens = context_lens.numpy().astype(np.int64, copy=False)                   # (N,)
    else:
        tables, lens = block_tables.long(), context_lens.long().to(block_tables.device)
    if len(lens) and (int(lens.min()) < 0 or int(lens.max()) > max_blocks * bs):
        raise ValueError(f"context_lens: every length must be in [0, max_blocks * block_size = "
                         f"{max_blocks * bs}]; got lengths from {int(lens.min())} to {int(lens.max())}")
    if isinstance(tables, np.ndarray):
        read = np.arange(0, max_blocks * bs, bs) < lens[:, None]      # entry j is read when j * bs < length
        bad = (tables.view(np.uint64) >= num_blocks) & read          # a negative id, seen unsigned, is huge
    else:
        read = _blocks_read(tables, lens, bs)
        bad = ((tables < 0) | (tables >= num_blocks)) & read
    if bool(bad.any()):
        ids = tables[read]
        raise ValueError(f"block_tables: the blocks a row reads (its first ceil(context_len / block_size) "
                         f"entries) must be in [0, {num_blocks - 1}] (the pool has {num_blocks} blocks); "
                         f"got ids from {int(ids.min())} to {int(ids.max())}")


# ---- the readable path ---------------------------------------------------------------
def gather_kv(key_blocks: torch.Tensor, value_blocks: torch.Tensor, block_table, length: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """One sequence's first `length` keys and values, copied out of the pool.

    key_blocks (num_blocks, nkv, hd, bs), value_blocks (num_blocks, nkv, bs, hd),
    block_table: the sequence's block ids (list or 1-D tensor); entries past the
    first ceil(length / bs) are ignored
    returns K, V: (length, nkv, hd) each, contiguous copies
    """
    bs, num_blocks = key_blocks.shape[-1], key_blocks.shape[0]
    if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= len(block_table) * bs:
        raise ValueError(f"length: must be an integer in [0, len(block_table) * block_size = "
                         f"{len(block_table) * bs}]; got {length!r}")
    n_blocks = -(-length // bs)                                              # ceil(length / bs)
    ids = torch.as_tensor(list(block_table)[:n_blocks] if not torch.is_tensor(block_table) else block_table[:n_blocks])
    if ids.numel() and (ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool):
        raise TypeError(f"block_table: must hold integer block ids; got {ids.dtype}")
    ids = ids.to(device=key_blocks.device, dtype=torch.long)                 # (n_blocks,)
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_blocks):
        raise ValueError(f"block_table: the blocks read must be in [0, {num_blocks - 1}]; "
                         f"got ids from {int(ids.min())} to {int(ids.max())}")
    K = key_blocks[ids].permute(0, 3, 1, 2)                                  # (n_blocks, bs, nkv, hd)
    V = value_blocks[ids].transpose(1, 2)                                    # (n_blocks, bs, nkv, hd)
    nkv, hd = V.shape[2], V.shape[3]
    return K.reshape(-1, nkv, hd)[:length], V.reshape(-1, nkv, hd)[:length]  # (length, nkv, hd)


def paged_attention_gather(q: torch.Tensor, key_blocks: torch.Tensor, value_blocks: torch.Tensor,
                           block_tables: torch.Tensor, context_lens: torch.Tensor) -> torch.Tensor:
    """The readable path: gather every row's blocks into a padded contiguous batch, then SDPA.

    q (N, nh, hd) -> (N, nh, hd). See the module docstring for the other shapes.
    """
    N, nh, nkv, hd, bs = _check_inputs(q, key_blocks, value_blocks, block_tables, context_lens)
    L = int(context_lens.max()) if N else 0
    if L == 0:
        return torch.zeros_like(q)
    lens = context_lens.to(q.device, torch.long)                             # (N,)
    n_blocks = -(-L // bs)
    tables = block_tables[:, :n_blocks].to(q.device, torch.long)             # (N, n_blocks)
    ids = tables.masked_fill(~_blocks_read(tables, lens, bs), 0)             # ignored entries: any real block will do
    K = key_blocks[ids]                                                      # (N, n_blocks, nkv, hd, bs)  a copy
    V = value_blocks[ids]                                                    # (N, n_blocks, nkv, bs, hd)  a copy
    K = K.permute(0, 2, 1, 4, 3).reshape(N, nkv, n_blocks * bs, hd)          # (N, nkv, Lp, hd)
    V = V.transpose(1, 2).reshape(N, nkv, n_blocks * bs, hd)                 # (N, nkv, Lp, hd)
    pos = torch.arange(n_blocks * bs, device=q.device)                       # (Lp,)
    valid = pos[None, :] < lens[:, None]                                     # (N, Lp)
    # Slots past a row's length hold whatever was there (stale tokens, even NaN); the mask
    # gives them weight 0, but 0 * NaN is NaN, so zero them as the kernel never reads them.
    K = K.masked_fill(~valid[:, None, :, None], 0)
    V = V.masked_fill(~valid[:, None, :, None], 0)
    out = sdpa_attention(q[:, :, None, :], K, V, valid[:, None, None, :])    # (N, nh, 1, hd)
    return out[:, :, 0, :]


# ---- the fast path: a C kernel ---------------------------------------------------------
_DTYPES = {torch.float32: ("float", 0), torch.float64: ("double", 1)}
_notice_shown = False


def kernel_unavailable_reason(q: torch.Tensor, key_blocks: torch.Tensor) -> str | None:
    """Why the C kernel cannot serve these tensors (None: it can). Compiles it if needed.

    q (N, nh, hd) and key_blocks (num_blocks, nkv, hd, bs); only their device, dtype
    and shape are looked at, so empty tensors of the right shape will do."""
    if not isinstance(q, torch.Tensor) or not isinstance(key_blocks, torch.Tensor):
        return "the C kernel needs torch tensors"
    if q.device.type != "cpu" or key_blocks.device.type != "cpu":
        return f"the C kernel runs on CPU tensors; these are on {q.device.type}"
    if q.dtype not in _DTYPES or key_blocks.dtype != q.dtype:
        return f"the C kernel supports float32/float64; got {q.dtype} queries and {key_blocks.dtype} blocks"
    if q.dim() != 3 or key_blocks.dim() != 4 or min(q.shape[1:]) < 1 or min(key_blocks.shape[1:]) < 1:
        return "the C kernel needs q (N, nh, hd) and key_blocks (num_blocks, nkv, hd, bs) with nh, nkv, hd, bs >= 1"
    nh, hd, nkv, bs = q.shape[1], q.shape[-1], key_blocks.shape[1], key_blocks.shape[-1]
    if nh % nkv:
        return f"the C kernel needs query heads ({nh}) to be a multiple of key/value heads ({nkv})"
    try:
        _load_kernel(*_DTYPES[q.dtype], hd, bs, nh // nkv)
    except (RuntimeError, OSError) as exc:
        return f"the C kernel could not be built: {exc}"
    return None


def kernel_available(dtype: torch.dtype = torch.float32, head_dim: int = 32, block_size: int = 16,
                     num_heads: int = 1, num_kv_heads: int = 1) -> bool:
    """Can the fast kernel run here (CPU, a C compiler) for this shape? Compiles it if needed."""
    q = torch.empty(0, num_heads, head_dim, dtype=dtype)
    return kernel_unavailable_reason(q, torch.empty(0, num_kv_heads, head_dim, block_size, dtype=dtype)) is None


def kernel_scratch_bytes(rep: int, head_dim: int, block_size: int, element_size: int) -> int:
    """Bytes of scratch one thread of the C kernel needs: REP * (2 HD + TILE + 2) numbers, as
    SMALL_ELEMS in paged_attention_kernel.c (TILE: the blocks of about KERNEL_TILE_TOKENS tokens
    its online softmax takes at a time). It does not grow with the context."""
    tile = block_size if block_size >= KERNEL_TILE_TOKENS else KERNEL_TILE_TOKENS // block_size * block_size
    return rep * (2 * head_dim + tile + 2) * element_size


def paged_attention_kernel(q: torch.Tensor, key_blocks: torch.Tensor, value_blocks: torch.Tensor,
                           block_tables: torch.Tensor, context_lens: torch.Tensor,
                           num_threads: int | None = None) -> torch.Tensor:
    """The fast path: the C kernel reads each block in place. q (N, nh, hd) -> (N, nh, hd).

    Bad input raises ValueError/TypeError (as on the gather path); a kernel that cannot
    run here raises RuntimeError (see kernel_unavailable_reason). `num_threads`: None
    follows torch.get_num_threads() for large work and uses one thread for small; never
    more than the N * nkv work items (one per row and kv head) or 256."""
    return KernelCall(q, key_blocks, value_blocks, block_tables, context_lens, num_threads)(q, key_blocks, value_blocks)


class KernelCall:
    """The C kernel, prepared once for one step's rows and run for every layer.

    Every layer of a model step attends over the same rows: the same block tables and
    context lengths; only q and the layer's blocks change. So what costs most around the
    kernel is done here once per step, not once per layer: the checks (every block id a
    row reads, _check_lengths_and_block_ids), the compiled kernel for this shape, the
    tables as contiguous int64, the thread count. Calling it (once per layer) checks only
    that q and the blocks have the shapes and dtype it was prepared for. vLLM builds its
    attention metadata once per step for the same reason.

        call = KernelCall(q, key_blocks, value_blocks, block_tables, context_lens)  # layer 0's tensors
        out = call(q, key_blocks, value_blocks)       # (N, nh, hd), for each layer's q and blocks

    Raises ValueError/TypeError on bad input, RuntimeError when the kernel cannot run here.
    checked=True: the caller has run _check_inputs on these very tensors already."""

    def __init__(self, q: torch.Tensor, key_blocks: torch.Tensor, value_blocks: torch.Tensor,
                 block_tables: torch.Tensor, context_lens: torch.Tensor, num_threads: int | None = None,
                 checked: bool = False):
        if not checked:
            _check_inputs(q, key_blocks, value_blocks, block_tables, context_lens)
        if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int)
                                        or num_threads < 1):
            raise ValueError(f"num_threads: must be an integer >= 1 or None; got {num_threads!r}")
        reason = kernel_unavailable_reason(q, key_blocks)
        if reason:
            raise RuntimeError(reason)
        N, nh, hd = q.shape
        nkv, bs = key_blocks.shape[1], key_blocks.shape[-1]
        rep = nh // nkv
        self.fn = _load_kernel(*_DTYPES[q.dtype], hd, bs, rep)
        self.q_shape, self.dtype = tuple(q.shape), q.dtype
        self.key_shape, self.value_shape = tuple(key_blocks.shape), tuple(value_blocks.shape)
        # C reads raw memory: every array it gets is a contiguous CPU tensor of the dtype it was built for.
        self.tables = block_tables.to("cpu", torch.int64).contiguous()        # (N, max_blocks)
        self.lens = context_lens.to("cpu", torch.int64).contiguous()          # (N,)
        self.max_len = int(self.lens.max()) if N else 0
        scratch = kernel_scratch_bytes(rep, hd, bs, q.element_size())         # per thread, whatever the context
        if scratch > KERNEL_MAX_SCRATCH_BYTES:
            raise RuntimeError(f"the C kernel would need {scratch / 2**20:.0f} MiB of scratch per thread "
                               f"(more than KERNEL_MAX_SCRATCH_BYTES = {KERNEL_MAX_SCRATCH_BYTES / 2**20:.0f} MiB)")
        self.scratch = scratch
        if num_threads is None:     # small work: waking a second thread costs more than it saves
            num_threads = torch.get_num_threads() if N * nh * self.max_len * hd >= PARALLEL_MIN_WORK else 1
        self.num_threads = max(1, min(num_threads, N * nkv, 256))   # no thread without a work item
        self.scale = 1.0 / math.sqrt(hd)
        self._sizes = (N, nh, nkv, self.tables.shape[1], self.max_len, self.scale, self.num_threads)   # C's arguments

    def __call__(self, q: torch.Tensor, key_blocks: torch.Tensor, value_blocks: torch.Tensor) -> torch.Tensor:
        """q (N, nh, hd) and one layer's key_blocks, value_blocks -> (N, nh, hd)."""
        if not (isinstance(q, torch.Tensor) and isinstance(key_blocks, torch.Tensor)
                and isinstance(value_blocks, torch.Tensor) and q.shape == self.q_shape
                and key_blocks.shape == self.key_shape and value_blocks.shape == self.value_shape
                and q.dtype is key_blocks.dtype is value_blocks.dtype is self.dtype
                and q.is_cpu and key_blocks.is_cpu and value_blocks.is_cpu):      # fast when all is well
            self._refuse(q, key_blocks, value_blocks)
        q = q.contiguous()                                                # (N, nh, hd)
        kb, vb = key_blocks.contiguous(), value_blocks.contiguous()     # the pool's own layout: no copy
        out = torch.empty_like(q)                                       # the kernel writes every number of it
        if q.shape[0] == 0:
            return out
        status = self.fn(q.data_ptr(), kb.data_ptr(), vb.data_ptr(), self.tables.data_ptr(), self.lens.data_ptr(),
                         out.data_ptr(), *self._sizes)
        if status != 0:
            raise RuntimeError(f"the C kernel could not allocate its scratch memory "
                               f"({self.scratch / 2**20:.1f} MiB per thread)")
        return out

    def _refuse(self, q, key_blocks, value_blocks) -> None:
        """Raise ValueError naming the first argument that is not what this call was prepared for."""
        for name, t, shape in (("q", q, self.q_shape), ("key_blocks", key_blocks, self.key_shape),
                               ("value_blocks", value_blocks, self.value_shape)):
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape or t.dtype != self.dtype \
                    or t.device.type != "cpu":
                raise ValueError(f"{name}: must be a CPU {self.dtype} tensor of shape {shape}, as the KernelCall "
                                 f"was prepared for; got " + (f"{t.dtype} {tuple(t.shape)} on {t.device}"
                                                             if isinstance(t, torch.Tensor) else type(t).__name__))


def _run_kernel(q, key_blocks, value_blocks, block_tables, context_lens) -> torch.Tensor:
    """paged_attention_kernel on inputs _check_inputs has passed."""
    return KernelCall(q, key_blocks, value_blocks, block_tables, context_lens, checked=True)(q, key_blocks, value_blocks)


# ---- the fast path on a GPU: a Triton kernel (course_lib/paged_attention_triton.py) -----------------
def fast_impl(device) -> str:
    """The fast path for tensors on `device`: 'triton' on a CUDA GPU, 'kernel' (C) elsewhere."""
    return "triton" if torch.device(device).type == "cuda" else "kernel"


def triton_unavailable_reason(q: torch.Tensor, key_blocks: torch.Tensor) -> str | None:
    """Why the Triton kernel cannot serve these tensors (None: it can); see kernel_unavailable_reason."""
    from course_lib.paged_attention_triton import triton_unavailable_reason as reason   # imports triton when asked
    return reason(q, key_blocks)


def unavailable_reason(impl: str, q: torch.Tensor, key_blocks: torch.Tensor) -> str | None:
    """Why the fast path `impl` ('kernel' or 'triton') cannot serve these tensors; None: it can."""
    return (triton_unavailable_reason if impl == "triton" else kernel_unavailable_reason)(q, key_blocks)


def paged_attention_triton(q: torch.Tensor, key_blocks: torch.Tensor, value_blocks: torch.Tensor,
                           block_tables: torch.Tensor, context_lens: torch.Tensor) -> torch.Tensor:
    """The fast path on a GPU: the Triton kernel reads each block in place. q (N, nh, hd) -> (N, nh, hd).

    Bad input raises ValueError/TypeError (as on the other paths); a kernel that cannot run
    here (no triton, not a CUDA tensor, float64, a failed compile) raises RuntimeError."""
    _check_inputs(q, key_blocks, value_blocks, block_tables, context_lens)
    return _run_triton(q, key_blocks, value_blocks, block_tables, context_lens)


def _run_triton(q, key_blocks, value_blocks, block_tables, context_lens) -> torch.Tensor:
    """paged_attention_triton on inputs _check_inputs has passed."""
    from course_lib.paged_attention_triton import run_triton
    return run_triton(q, key_blocks, value_blocks, block_tables, context_lens)


# ---- one entry point -----------------------------------------------------------------------------
def paged_attention(q: torch.Tensor, key_blocks: torch.Tensor, value_blocks: torch.Tensor,
                    block_tables: torch.Tensor, context_lens: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """Paged attention. impl: 'kernel' (the C kernel, CPU), 'triton' (the Triton kernel, GPU),
    'gather' (readable), 'auto' (the fast path of q's device where it can run, else gather
    with a one-line notice). q (N, nh, hd) -> (N, nh, hd).

    Bad input raises ValueError/TypeError whatever the impl: it is the caller's error, not
    a reason to switch paths."""
    if impl not in IMPLS:
        raise ValueError(f"impl: must be one of {', '.join(IMPLS)}; got {impl!r}")
    if impl == "gather":
        return paged_attention_gather(q, key_blocks, value_blocks, block_tables, context_lens)
    if impl == "kernel":
        return paged_attention_kernel(q, key_blocks, value_blocks, block_tables, context_lens)
    if impl == "triton":
        return paged_attention_triton(q, key_blocks, value_blocks, block_tables, context_lens)
    _check_inputs(q, key_blocks, value_blocks, block_tables, context_lens)
    run = _run_triton if fast_impl(q.device) == "triton" else _run_kernel
    try:
        return run(q, key_blocks, value_blocks, block_tables, context_lens)
    except Exception as exc:    # the inputs are fine, so the kernel could not run here: say why, use the readable path
        notice(str(exc) or type(exc).__name__)
        return paged_attention_gather(q, key_blocks, value_blocks, block_tables, context_lens)


def notice(reason: str) -> None:
    """Say once per process that the fast path is not used, and why."""
    global _notice_shown
    if not _notice_shown:
        _notice_shown = True
        print(f"paged attention: using the readable gather path ({reason})", file=sys.stderr)


# ---- measuring decode attention ---------------------------------------------------------------
def random_decode_problem(batch: int = 32, context: int = 1024, num_heads: int = 4, num_kv_heads: int = 2,
                          head_dim: int = 32, block_size: int = 16, seed: int = 0, dtype=torch.float32,
                          device=None):
    """One decode step's attention inputs, twice: in a paged pool whose blocks are scattered
    at random, and as contiguous (B, nkv, L, hd) tensors holding the same keys and values.
    Made on `device` (default: the CPU) with that device's random generator.

    returns dict(q (B, nh, hd), key_blocks, value_blocks, block_tables (B, L/bs), context_lens (B,),
                 k (B, nkv, L, hd), v (B, nkv, L, hd))
    """
    for name, value, lo in (("batch", batch, 1), ("context", context, 1), ("num_heads", num_heads, 1),
                            ("num_kv_heads", num_kv_heads, 1), ("head_dim", head_dim, 1), ("block_size", block_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"{name}: must be an integer >= {lo}; got {value!r}")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_kv_heads: must divide num_heads ({num_heads}); got {num_kv_heads}")
    dev = check_device(device if device is not None else "cpu")
    g = torch.Generator(device=dev).manual_seed(seed)
    n_blocks = -(-context // block_size)
    on = dict(dtype=dtype, device=dev)
    k = torch.randn(batch, num_kv_heads, context, head_dim, generator=g, **on)               # (B, nkv, L, hd)
    v = torch.randn(batch, num_kv_heads, context, head_dim, generator=g, **on)
    q = torch.randn(batch, num_heads, head_dim, generator=g, **on)                            # (B, nh, hd)
    tables = torch.randperm(batch * n_blocks, generator=g, device=dev).view(batch, n_blocks)  # scattered blocks
    pad = n_blocks * block_size - context
    kp = torch.nn.functional.pad(k, (0, 0, 0, pad)).view(batch, num_kv_heads, n_blocks, block_size, head_dim)
    vp = torch.nn.functional.pad(v, (0, 0, 0, pad)).view(batch, num_kv_heads, n_blocks, block_size, head_dim)
    key_blocks = torch.empty(batch * n_blocks, num_kv_heads, head_dim, block_size, **on)
    value_blocks = torch.empty(batch * n_blocks, num_kv_heads, block_size, head_dim, **on)
    key_blocks[tables.flatten()] = kp.permute(0, 2, 1, 4, 3).reshape(-1, num_kv_heads, head_dim, block_size)
    value_blocks[tables.flatten()] = vp.permute(0, 2, 1, 3, 4).reshape(-1, num_kv_heads, block_size, head_dim)
    lens = torch.full((batch,), context, dtype=torch.long, device=dev)
    return dict(q=q, key_blocks=key_blocks, value_blocks=value_blocks, block_tables=tables, context_lens=lens, k=k, v=v)


def decode_contenders(problem: dict) -> dict:
    """name -> a no-argument function computing the step's attention (B, nh, hd)."""
    p = problem
    q4 = p["q"][:, :, None, :]                                                               # (B, nh, 1, hd)
    out = {"contiguous SDPA": lambda: torch.nn.functional.scaled_dot_product_attention(
        q4, p["k"], p["v"], enable_gqa=p["q"].shape[1] != p["k"].shape[1])[:, :, 0]}
    args = (p["q"], p["key_blocks"], p["value_blocks"], p["block_tables"], p["context_lens"])
    impl = fast_impl(p["q"].device)                      # the C kernel on the CPU, the Triton kernel on a GPU
    if unavailable_reason(impl, p["q"], p["key_blocks"]) is None:
        fast = paged_attention_triton if impl == "triton" else paged_attention_kernel
        out["paged (fast kernel)"] = lambda: fast(*args)
    out["paged (readable gather)"] = lambda: paged_attention_gather(*args)
    return out


def time_contenders(contenders: dict, repeat: int = 20, warmup: int = 2, threads: int | None = None,
                    device=None) -> dict[str, list[float]]:
    """Seconds per call of each contender, interleaved round by round so that a shared
    machine's load hits every contender alike (course_lib.device.time_interleaved, which
    syncs a GPU around every call). `threads`: torch's thread count while timing (the
    kernel follows it; None: leave it). Returns name -> the `repeat` times, sorted
    (fastest first)."""
    check_int("repeat", repeat, 1, 1000)
    timings = time_interleaved(contenders, rounds=repeat, warmup=warmup, threads=threads,
                               device=check_device(device) if device is not None else get_device())
    return {name: sorted(t.seconds) for name, t in timings.items()}
