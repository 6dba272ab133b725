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
    block_tables:  (N, max_blocks) int64       row i: the blocks query i reads, in order;
                                               entries past the last block are ignored
    context_lens:  (N,) int64                  query i sits at position context_lens[i] - 1
                                               and sees keys 0 .. context_lens[i] - 1

A decoding batch has one query per sequence (N = number of sequences). A
prefill chunk of n tokens gives n rows with the same block table and context
lengths start+1 .. start+n: that is the causal mask, written as lengths.

Two paths that must agree (tests/test_paged_attention.py, to 1e-5 in fp32):

    paged_attention_gather   readable: copy each row's blocks into one contiguous
                             (L, nkv, hd) tensor, then ordinary SDPA with a length
                             mask. Easy to trust; but it copies the whole context
                             of every sequence at every step.
    paged_attention_kernel   fast: a short C kernel (PAGED_ATTENTION_C below) that
                             walks the block table and reads each block where it
                             lies: nothing is copied. Compiled on first use with the
                             system C compiler (gcc/cc) and loaded with ctypes;
                             CPU tensors, float32/float64.

`paged_attention(..., impl="auto")` uses the kernel where it can run and
otherwise falls back to the gather path, printing a one-line notice once.

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
On a GPU (where this C kernel does not run) FlexAttention is the natural fast
path; this module then falls back to the gather path, with a notice.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache

import torch

from course_lib.attention import sdpa_attention

IMPLS = ("auto", "kernel", "gather")
PARALLEL_MIN_WORK = 1 << 20     # multiply-adds (rows x heads x keys x head_dim) below which the kernel uses one thread


# ---- shapes and checks ------------------------------------------------------------
def _check_inputs(q, key_blocks, value_blocks, block_tables, context_lens) -> tuple[int, int, int, int, int]:
    """Validate shapes; return (N, nh, nkv, hd, bs)."""
    if q.dim() != 3:
        raise ValueError(f"q: must be (N, nh, hd); got shape {tuple(q.shape)}")
    if key_blocks.dim() != 4 or value_blocks.dim() != 4:
        raise ValueError("key_blocks/value_blocks: must be (num_blocks, nkv, hd, bs) and (num_blocks, nkv, bs, hd)")
    N, nh, hd = q.shape
    nb, nkv, hd_k, bs = key_blocks.shape
    if hd_k != hd or tuple(value_blocks.shape) != (nb, nkv, bs, hd):
        raise ValueError(f"value_blocks: must be {(nb, nkv, bs, hd)} to match key_blocks {tuple(key_blocks.shape)} "
                         f"and q's head_dim {hd}; got {tuple(value_blocks.shape)}")
    if nh % nkv:
        raise ValueError(f"heads: query heads ({nh}) must be a multiple of key/value heads ({nkv})")
    if block_tables.dim() != 2 or block_tables.shape[0] != N:
        raise ValueError(f"block_tables: must be (N={N}, max_blocks); got shape {tuple(block_tables.shape)}")
    if context_lens.dim() != 1 or context_lens.shape[0] != N:
        raise ValueError(f"context_lens: must be (N={N},); got shape {tuple(context_lens.shape)}")
    if N and (int(context_lens.min()) < 0 or int(context_lens.max()) > block_tables.shape[1] * bs):
        raise ValueError(f"context_lens: every length must be in [0, max_blocks * block_size = "
                         f"{block_tables.shape[1] * bs}]; got {context_lens.tolist()}")
    return N, nh, nkv, hd, bs


def _check_block_ids(block_tables: torch.Tensor, context_lens: torch.Tensor, bs: int, num_blocks: int) -> None:
    """Every block a row reads must exist in the pool."""
    used = torch.arange(block_tables.shape[1], device=block_tables.device)[None, :] < (context_lens[:, None] + bs - 1) // bs
    ids = block_tables[used]                                                 # the entries rows really read
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_blocks):
        raise ValueError(f"block_tables: the blocks a row reads must be in [0, {num_blocks - 1}]; "
                         f"got ids from {int(ids.min())} to {int(ids.max())}")


# ---- the readable path ---------------------------------------------------------------
def gather_kv(key_blocks: torch.Tensor, value_blocks: torch.Tensor, block_table, length: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """One sequence's first `length` keys and values, copied out of the pool.

    key_blocks (num_blocks, nkv, hd, bs), value_blocks (num_blocks, nkv, bs, hd),
    block_table: the sequence's block ids (list or 1-D tensor)
    returns K, V: (length, nkv, hd) each, contiguous copies
    """
    bs = key_blocks.shape[-1]
    n_blocks = -(-length // bs)                                              # ceil(length / bs)
    ids = torch.as_tensor(list(block_table)[:n_blocks] if not torch.is_tensor(block_table) else block_table[:n_blocks],
                          dtype=torch.long, device=key_blocks.device)       # (n_blocks,)
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
    n_blocks = -(-L // bs)
    ids = block_tables[:, :n_blocks].long().clamp(min=0)                     # (N, n_blocks)
    K = key_blocks[ids]                                                      # (N, n_blocks, nkv, hd, bs)  a copy
    V = value_blocks[ids]                                                    # (N, n_blocks, nkv, bs, hd)  a copy
    K = K.permute(0, 2, 1, 4, 3).reshape(N, nkv, n_blocks * bs, hd)          # (N, nkv, Lp, hd)
    V = V.transpose(1, 2).reshape(N, nkv, n_blocks * bs, hd)                 # (N, nkv, Lp, hd)
    pos = torch.arange(n_blocks * bs, device=q.device)                       # (Lp,)
    mask = (pos[None, :] < context_lens.to(q.device)[:, None])[:, None, None, :]   # (N, 1, 1, Lp)
    out = sdpa_attention(q[:, :, None, :], K, V, mask)                        # (N, nh, 1, hd)
    return out[:, :, 0, :]


# ---- the fast path: a C kernel ---------------------------------------------------------
PAGED_ATTENTION_C = r"""
/* Paged attention, one query per row, reading keys and values where they lie in the pool.
   Compiled for one shape: -DSCALAR=float|double -DHD=<head_dim> -DBS=<block_size>
   -DREP=<query heads per kv head>, so every inner loop has a known length and vectorises. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
typedef SCALAR real;
#if IS_DOUBLE
#define EXP exp
#else
#define EXP expf
#endif

void paged_attention(const real *q,            /* (N, nh, HD)                */
                     const real *key_blocks,   /* (num_blocks, nkv, HD, BS)  */
                     const real *value_blocks, /* (num_blocks, nkv, BS, HD)  */
                     const int64_t *block_tables,   /* (N, max_blocks)       */
                     const int64_t *context_lens,   /* (N,)                  */
                     real *out,                /* (N, nh, HD)                */
                     int64_t N, int64_t nh, int64_t nkv, int64_t max_blocks, int64_t max_len,
                     double scale, int nthreads) {
  const int64_t block = nkv * HD * BS;         /* elements of one block (keys or values) */
  const int64_t width = max_len + BS;          /* a row of scores, padded to whole blocks */
  #pragma omp parallel num_threads(nthreads)
  {
    real *scores = (real *)malloc(sizeof(real) * (size_t)(REP * width));
    #pragma omp for schedule(dynamic, 1)
    for (int64_t w = 0; w < N * nkv; w++) {    /* one work item: query row i, kv head g */
      const int64_t i = w / nkv, g = w % nkv, L = context_lens[i], nblk = (L + BS - 1) / BS;
      const int64_t *table = block_tables + i * max_blocks;
      const real *qg = q + (i * nh + g * REP) * HD;   /* the REP query heads that share head g */
      real *og = out + (i * nh + g * REP) * HD;
      real qs[REP][HD];
      for (int r = 0; r < REP; r++)
        for (int d = 0; d < HD; d++) qs[r][d] = qg[r * HD + d] * (real)scale;

      /* 1. scores[r][j] = q_r . k_j / sqrt(HD), a block at a time, straight from the pool.
            Keys are stored (HD, BS) in a block: the inner loop runs over its BS tokens. */
      for (int64_t b = 0; b < nblk; b++) {
        const real *kt = key_blocks + table[b] * block + g * HD * BS;      /* (HD, BS) */
        real s[REP][BS];
        for (int r = 0; r < REP; r++)
          for (int t = 0; t < BS; t++) s[r][t] = 0;
        for (int d = 0; d < HD; d++)
          for (int r = 0; r < REP; r++) {
            #pragma omp simd
            for (int t = 0; t < BS; t++) s[r][t] += qs[r][d] * kt[d * BS + t];
          }
        for (int r = 0; r < REP; r++)
          for (int t = 0; t < BS; t++) scores[r * width + b * BS + t] = s[r][t];
      }
      /* 2. softmax over the L real positions (the rest of the last block is ignored) */
      real inv[REP];
      for (int r = 0; r < REP; r++) {
        real *sr = scores + r * width, m = (real)-1e30, total = 0;
        for (int64_t j = 0; j < L; j++) m = sr[j] > m ? sr[j] : m;
        #pragma omp simd reduction(+:total)
        for (int64_t j = 0; j < L; j++) { sr[j] = EXP(sr[j] - m); total += sr[j]; }
        inv[r] = L > 0 ? 1 / total : 0;
      }
      /* 3. out_r = sum_j p[r][j] v_j, a block at a time. Values are stored (BS, HD). */
      real acc[REP][HD];
      for (int r = 0; r < REP; r++)
        for (int d = 0; d < HD; d++) acc[r][d] = 0;
      for (int64_t b = 0; b < nblk; b++) {
        const real *vb = value_blocks + table[b] * block + g * BS * HD;   /* (BS, HD) */
        const int64_t used = b == nblk - 1 ? L - b * BS : BS;
        for (int64_t t = 0; t < used; t++)
          for (int r = 0; r < REP; r++) {
            const real p = scores[r * width + b * BS + t];
            #pragma omp simd
            for (int d = 0; d < HD; d++) acc[r][d] += p * vb[t * HD + d];
          }
      }
      for (int r = 0; r < REP; r++)
        for (int d = 0; d < HD; d++) og[r * HD + d] = acc[r][d] * inv[r];
    }
    free(scores);
  }
}
"""

_DTYPES = {torch.float32: ("float", 0), torch.float64: ("double", 1)}
_notice_shown = False


def _cache_dir() -> str:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    path = os.environ.get("COURSE_KERNEL_CACHE") or os.path.join(tempfile.gettempdir(), f"course_lib_kernels_{uid}")
    os.makedirs(path, exist_ok=True)
    return path


def _compiler() -> str | None:
    for cc in (os.environ.get("CC"), "gcc", "cc", "clang"):
        if cc and shutil.which(cc):
            return shutil.which(cc)
    return None


def _compile(cc: str, src: str, obj: str, lib: str, defines: list[str], openmp: bool) -> None:
    """Compile and link in two steps: -ffast-math (vectorised exp) only at compile time,
    so the linker does not add crtfastmath.o (which would flush denormals process-wide)."""
    omp = ["-fopenmp"] if openmp else []
    common = ["-O3", "-fPIC", *omp, *defines]
    arch = ["-march=native"] if platform.machine() in ("x86_64", "AMD64") else ["-mcpu=native"]
    for flags in (arch + ["-mprefer-vector-width=512"], arch, []):
        r = subprocess.run([cc, "-c", *common, *flags, "-ffast-math", src, "-o", obj], capture_output=True, text=True)
        if r.returncode == 0:
            break
    else:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "compile failed")
    r = subprocess.run([cc, "-shared", *omp, obj, "-o", lib, "-lm"], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "link failed")


@lru_cache(maxsize=None)
def _load_kernel(scalar: str, is_double: int, head_dim: int, block_size: int, rep: int):
    """Compile (once per machine, cached on disk) and load the kernel for one shape."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    defines = [f"-DSCALAR={scalar}", f"-DIS_DOUBLE={is_double}", f"-DHD={head_dim}", f"-DBS={block_size}",
               f"-DREP={rep}"]
    ident = "\0".join([PAGED_ATTENTION_C, cc, platform.node(), platform.machine(), *defines])
    key = hashlib.sha256(ident.encode()).hexdigest()[:16]
    folder = _cache_dir()
    lib = os.path.join(folder, f"paged_attention_{key}.so")
    if not os.path.exists(lib):
        tmp = f"{lib}.{os.getpid()}"               # this process's own files: parallel builds never collide
        with open(f"{tmp}.c", "w") as f:
            f.write(PAGED_ATTENTION_C)
        try:
            try:
                _compile(cc, f"{tmp}.c", f"{tmp}.o", f"{tmp}.so", defines, openmp=True)
            except RuntimeError:
                _compile(cc, f"{tmp}.c", f"{tmp}.o", f"{tmp}.so", defines, openmp=False)   # e.g. clang without OpenMP
            os.replace(f"{tmp}.so", lib)           # atomic: nobody ever loads half a file
        finally:
            for ext in (".c", ".o", ".so"):
                if os.path.exists(tmp + ext):
                    os.remove(tmp + ext)
    fn = ctypes.CDLL(lib).paged_attention
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_int64] * 5 + [ctypes.c_double, ctypes.c_int]
    return fn


def kernel_unavailable_reason(q: torch.Tensor, key_blocks: torch.Tensor) -> str | None:
    """Why the C kernel cannot serve these tensors (None: it can). Compiles it if needed."""
    if q.device.type != "cpu" or key_blocks.device.type != "cpu":
        return f"the C kernel runs on CPU tensors; these are on {q.device.type}"
    if q.dtype not in _DTYPES or key_blocks.dtype != q.dtype:
        return f"the C kernel supports float32/float64; got {q.dtype} queries and {key_blocks.dtype} blocks"
    nh, hd, nkv, bs = q.shape[1], q.shape[-1], key_blocks.shape[1], key_blocks.shape[-1]
    if nh % nkv or (nh // nkv) * hd > 16384 or bs > 1024:
        return "the C kernel needs (query heads per kv head) x head_dim <= 16384 and block_size <= 1024"
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


def paged_attention_kernel(q: torch.Tensor, key_blocks: torch.Tensor, value_blocks: torch.Tensor,
                           block_tables: torch.Tensor, context_lens: torch.Tensor,
                           num_threads: int | None = None) -> torch.Tensor:
    """The fast path: the C kernel reads each block in place. q (N, nh, hd) -> (N, nh, hd).
    Raises RuntimeError if it cannot run here (see kernel_unavailable_reason)."""
    N, nh, nkv, hd, bs = _check_inputs(q, key_blocks, value_blocks, block_tables, context_lens)
    reason = kernel_unavailable_reason(q, key_blocks)
    if reason:
        raise RuntimeError(reason)
    fn = _load_kernel(*_DTYPES[q.dtype], hd, bs, nh // nkv)
    q = q.contiguous()
    kb, vb = key_blocks.contiguous(), value_blocks.contiguous()     # the pool's own layout: no copy
    tables = block_tables.to(torch.int64).contiguous()
    lens = context_lens.to(torch.int64).contiguous()
    _check_block_ids(tables, lens, bs, kb.shape[0])           # C does not check bounds: we must
    out = torch.empty_like(q)
    if N:
        max_len = int(lens.max())
        if num_threads is None:     # small work: waking a second thread costs more than it saves
            num_threads = torch.get_num_threads() if N * nh * max_len * hd >= PARALLEL_MIN_WORK else 1
        fn(q.data_ptr(), kb.data_ptr(), vb.data_ptr(), tables.data_ptr(), lens.data_ptr(), out.data_ptr(),
           N, nh, nkv, tables.shape[1], max_len, 1.0 / math.sqrt(hd), int(num_threads))
    return out


def paged_attention(q: torch.Tensor, key_blocks: torch.Tensor, value_blocks: torch.Tensor,
                    block_tables: torch.Tensor, context_lens: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """Paged attention. impl: 'kernel' (fast), 'gather' (readable), 'auto' (kernel where it
    can run, else gather with a one-line notice). q (N, nh, hd) -> (N, nh, hd)."""
    if impl not in IMPLS:
        raise ValueError(f"impl: must be one of {', '.join(IMPLS)}; got {impl!r}")
    if impl == "gather":
        return paged_attention_gather(q, key_blocks, value_blocks, block_tables, context_lens)
    if impl == "auto":
        reason = kernel_unavailable_reason(q, key_blocks)
        if reason:
            notice(reason)
            return paged_attention_gather(q, key_blocks, value_blocks, block_tables, context_lens)
    return paged_attention_kernel(q, key_blocks, value_blocks, block_tables, context_lens)


def notice(reason: str) -> None:
    """Say once per process that the fast path is not used, and why."""
    global _notice_shown
    if not _notice_shown:
        _notice_shown = True
        print(f"paged attention: using the readable gather path ({reason})", file=sys.stderr)


# ---- measuring decode attention ---------------------------------------------------------------
def random_decode_problem(batch: int = 32, context: int = 1024, num_heads: int = 4, num_kv_heads: int = 2,
                          head_dim: int = 32, block_size: int = 16, seed: int = 0, dtype=torch.float32):
    """One decode step's attention inputs, twice: in a paged pool whose blocks are scattered
    at random, and as contiguous (B, nkv, L, hd) tensors holding the same keys and values.

    returns dict(q (B, nh, hd), key_blocks, value_blocks, block_tables (B, L/bs), context_lens (B,),
                 k (B, nkv, L, hd), v (B, nkv, L, hd))
    """
    for name, value, lo in (("batch", batch, 1), ("context", context, 1), ("num_heads", num_heads, 1),
                            ("num_kv_heads", num_kv_heads, 1), ("head_dim", head_dim, 1), ("block_size", block_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"{name}: must be an integer >= {lo}; got {value!r}")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_kv_heads: must divide num_heads ({num_heads}); got {num_kv_heads}")
    g = torch.Generator().manual_seed(seed)
    n_blocks = -(-context // block_size)
    k = torch.randn(batch, num_kv_heads, context, head_dim, generator=g, dtype=dtype)        # (B, nkv, L, hd)
    v = torch.randn(batch, num_kv_heads, context, head_dim, generator=g, dtype=dtype)
    q = torch.randn(batch, num_heads, head_dim, generator=g, dtype=dtype)                     # (B, nh, hd)
    tables = torch.randperm(batch * n_blocks, generator=g).view(batch, n_blocks)              # scattered blocks
    pad = n_blocks * block_size - context
    kp = torch.nn.functional.pad(k, (0, 0, 0, pad)).view(batch, num_kv_heads, n_blocks, block_size, head_dim)
    vp = torch.nn.functional.pad(v, (0, 0, 0, pad)).view(batch, num_kv_heads, n_blocks, block_size, head_dim)
    key_blocks = torch.empty(batch * n_blocks, num_kv_heads, head_dim, block_size, dtype=dtype)
    value_blocks = torch.empty(batch * n_blocks, num_kv_heads, block_size, head_dim, dtype=dtype)
    key_blocks[tables.flatten()] = kp.permute(0, 2, 1, 4, 3).reshape(-1, num_kv_heads, head_dim, block_size)
    value_blocks[tables.flatten()] = vp.permute(0, 2, 1, 3, 4).reshape(-1, num_kv_heads, block_size, head_dim)
    lens = torch.full((batch,), context, dtype=torch.long)
    return dict(q=q, key_blocks=key_blocks, value_blocks=value_blocks, block_tables=tables, context_lens=lens, k=k, v=v)


def decode_contenders(problem: dict) -> dict:
    """name -> a no-argument function computing the step's attention (B, nh, hd)."""
    p = problem
    q4 = p["q"][:, :, None, :]                                                               # (B, nh, 1, hd)
    out = {"contiguous SDPA": lambda: torch.nn.functional.scaled_dot_product_attention(
        q4, p["k"], p["v"], enable_gqa=p["q"].shape[1] != p["k"].shape[1])[:, :, 0]}
    args = (p["q"], p["key_blocks"], p["value_blocks"], p["block_tables"], p["context_lens"])
    if kernel_unavailable_reason(p["q"], p["key_blocks"]) is None:
        out["paged (fast kernel)"] = lambda: paged_attention_kernel(*args)
    out["paged (readable gather)"] = lambda: paged_attention_gather(*args)
    return out


def time_contenders(contenders: dict, repeat: int = 20, warmup: int = 2, threads: int | None = None,
                    progress: bool = False) -> dict[str, list[float]]:
    """Seconds per call of each contender, interleaved round by round so that a shared
    machine's load hits every contender alike. `threads`: torch's thread count while timing
    (the kernel follows it; None: leave it). Returns name -> sorted list of times."""
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat: must be an integer >= 1; got {repeat!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads: must be an integer >= 1 or None; got {threads!r}")
    import time
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        for fn in contenders.values():
            for _ in range(warmup):
                fn()
        times = {name: [] for name in contenders}
        rounds = range(repeat)
        if progress:
            from tqdm.auto import tqdm
            rounds = tqdm(rounds, desc="timing", leave=False)
        for _ in rounds:
            for name, fn in contenders.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    return {name: sorted(ts) for name, ts in times.items()}
