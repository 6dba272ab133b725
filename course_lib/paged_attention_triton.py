"""Paged attention as a Triton kernel: the GPU's fast path (the C kernel's twin on the CPU).

Same inputs, same answer as course_lib.paged_attention (read its docstring first):

    q:             (N, nh, hd)                 one row per query
    key_blocks:    (num_blocks, nkv, hd, bs)   keys, transposed inside a block
    value_blocks:  (num_blocks, nkv, bs, hd)
    block_tables:  (N, max_blocks) integers    row i: its blocks, in order
    context_lens:  (N,) integers               row i sees keys 0 .. context_lens[i] - 1
    returns        (N, nh, hd)

A decode step has one row per sequence; a prefill chunk of n tokens has n rows
sharing one block table, with context lengths start+1 .. start+n (the causal
mask, written as lengths). The kernel does not care which: every row is a query
with its own context length.

How the work is cut (one PROGRAM is one instance of the kernel; the GPU runs
thousands at once, each on its own slice of the data):

    grid = (N, nkv)          program (i, h) computes row i's answer for the GROUP =
                             nh / nkv query heads that share kv head h (grouped-query
                             attention): each key and value is read ONCE for the whole
                             group, which is the point of GQA at serving time
    loop over the context    TILE tokens at a time (a tile may span several blocks, or
                             part of one: any block size works). For each token t of
                             the tile it looks up where the token lives,
                                 block = block_table[i, t // bs],  slot = t % bs
                             and loads its key and value from there: nothing is copied,
                             the pool is read in place
    online softmax           softmax(s) @ V needs the maximum and the sum over ALL
                             scores, but the program sees one tile at a time. It keeps,
                             per query head, the running maximum m, the running sum l
                             of exp(s - m) and the running output acc = sum exp(s - m) v;
                             when a tile raises the maximum to m', the old l and acc are
                             rescaled by exp(m - m'). After the last tile, acc / l is
                             exactly the softmax-weighted sum (FlashAttention's trick)

Masks and padding: Triton works on tiles whose sides are powers of two, and its
matrix product (tl.dot) wants each side >= 16. So head_dim, the group of query
heads and the tile are padded to powers of two >= 16 inside the kernel: padded
lanes load 0 and are never stored, and tokens at or past the row's length are
masked out before the softmax (they are never even loaded, so a stale NaN in an
unused slot cannot leak into the answer).

Where it runs: compiled for a CUDA (or ROCm) GPU, or under Triton's interpreter
on CPU tensors when TRITON_INTERPRET=1 is set before triton is imported (slow:
numpy, one program at a time; tests/test_paged_triton.py uses it to check this
kernel against the reference on a machine without a GPU). float16, bfloat16 and
float32. Half-precision products run on the tensor cores with float32 sums; float32
ones too, as "3xTF32" on an NVIDIA GPU (each operand split into two TF32 parts, three
products: close to float32's accuracy, unlike plain TF32), exact float32 elsewhere.

What it does not do (real engines do): split a long context over several
programs and merge their partial softmaxes (flash-decoding / vLLM's v2 kernel),
which matters when N * nkv programs cannot fill the GPU; share the key tiles
between the rows of a prefill chunk (each row reads its own context).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:            # no triton: the kernel is simply unavailable (paged_attention falls back)
    triton = tl = None

TILE = 64                       # tokens per loop iteration (a power of two >= 16)
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
LOG2_E = 1.4426950408889634     # exp(x) = exp2(x * log2(e)); exp2 is the GPU's native instruction
FLOAT32_DOT = "tf32x3"          # float32 products on an NVIDIA GPU: tensor cores, near-fp32 accuracy
                                # ("ieee": exact, but plain FMAs; "tf32": fast, ~1e-3 off, fails the 1e-5 tests)

if triton is not None:
    @triton.jit
    def _paged_attention_program(
            Q, K_BLOCKS, V_BLOCKS, BLOCK_TABLES, CONTEXT_LENS, OUT,
            qk_scale,                                        # 1/sqrt(hd) * log2(e)
            stride_qn, stride_qh, stride_qd,                 # q            (N, nh, hd)
            stride_kb, stride_kh, stride_kd, stride_kt,      # key_blocks   (num_blocks, nkv, hd, bs)
            stride_vb, stride_vh, stride_vt, stride_vd,      # value_blocks (num_blocks, nkv, bs, hd)
            stride_tn, stride_tb,                            # block_tables (N, max_blocks)
            stride_on, stride_oh, stride_od,                 # out          (N, nh, hd)
            GROUP: tl.constexpr, GROUP_P: tl.constexpr,      # query heads per kv head; padded
            HEAD_DIM: tl.constexpr, HEAD_DIM_P: tl.constexpr,
            BLOCK_SIZE: tl.constexpr, TILE: tl.constexpr,
            DOT_PRECISION: tl.constexpr):                    # how tl.dot multiplies float32 (see run_triton)
        row = tl.program_id(0)                               # which query row
        kv_head = tl.program_id(1)                           # which kv head (and its GROUP query heads)
        heads = kv_head * GROUP + tl.arange(0, GROUP_P)      # (GROUP_P,)  query heads of this program
        head_ok = tl.arange(0, GROUP_P) < GROUP
        dims = tl.arange(0, HEAD_DIM_P)                      # (HEAD_DIM_P,)
        dim_ok = dims < HEAD_DIM
        context_len = tl.load(CONTEXT_LENS + row)

        q = tl.load(Q + row * stride_qn + heads[:, None] * stride_qh + dims[None, :] * stride_qd,
                    mask=head_ok[:, None] & dim_ok[None, :], other=0.0)                  # (GROUP_P, HEAD_DIM_P)
        m = tl.full((GROUP_P,), float("-inf"), tl.float32)   # running max of the scores (log2 units)
        l = tl.zeros((GROUP_P,), tl.float32)                 # running sum of exp2(score - m)
        acc = tl.zeros((GROUP_P, HEAD_DIM_P), tl.float32)    # running sum of exp2(score - m) * value

        for start in range(0, context_len, TILE):
            tokens = start + tl.arange(0, TILE)                                          # (TILE,)
            token_ok = tokens < context_len
            # where each token lives: its block (through the table) and its slot in the block
            block = tl.load(BLOCK_TABLES + row * stride_tn + (tokens // BLOCK_SIZE) * stride_tb,
                            mask=token_ok, other=0).to(tl.int64)                          # (TILE,)
            slot = tokens % BLOCK_SIZE                                                    # (TILE,)
            k = tl.load(K_BLOCKS + block[None, :] * stride_kb + kv_head * stride_kh
                        + dims[:, None] * stride_kd + slot[None, :] * stride_kt,
                        mask=dim_ok[:, None] & token_ok[None, :], other=0.0)             # (HEAD_DIM_P, TILE)
            s = tl.dot(q, k, input_precision=DOT_PRECISION) * qk_scale                  # (GROUP_P, TILE)
            s = tl.where(token_ok[None, :], s, float("-inf"))                             # past the length: no weight

            m_new = tl.maximum(m, tl.max(s, axis=1))                                      # (GROUP_P,)
            rescale = tl.exp2(m - m_new)                     # how much the old sums shrink (0 at the first tile)
            p = tl.exp2(s - m_new[:, None])                                               # (GROUP_P, TILE)
            l = l * rescale + tl.sum(p, axis=1)

            v = tl.load(V_BLOCKS + block[:, None] * stride_vb + kv_head * stride_vh
                        + slot[:, None] * stride_vt + dims[None, :] * stride_vd,
                        mask=token_ok[:, None] & dim_ok[None, :], other=0.0)             # (TILE, HEAD_DIM_P)
            acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
            m = m_new

        out = acc / tl.where(l > 0, l, 1.0)[:, None]         # a row with no context (length 0) gives 0
        tl.store(OUT + row * stride_on + heads[:, None] * stride_oh + dims[None, :] * stride_od,
                 out.to(OUT.dtype.element_ty), mask=head_ok[:, None] & dim_ok[None, :])

    INTERPRETED = type(_paged_attention_program).__name__ == "InterpretedFunction"
else:
    INTERPRETED = False

_failures: dict[tuple, str] = {}   # a shape whose compilation failed -> why (not retried in this process)


def _pow2_at_least_16(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


def triton_unavailable_reason(q: torch.Tensor, key_blocks: torch.Tensor) -> str | None:
    """Why the Triton kernel cannot serve these tensors (None: it can). Only device,
    dtype and shape are looked at (empty tensors of the right shape will do)."""
    if triton is None:
        return "Triton is not installed"
    if not isinstance(q, torch.Tensor) or not isinstance(key_blocks, torch.Tensor):
        return "the Triton kernel needs torch tensors"
    devices = {q.device.type, key_blocks.device.type}
    if INTERPRETED and devices != {"cpu"}:
        return "Triton's interpreter (TRITON_INTERPRET=1) runs on CPU tensors"
    if not INTERPRETED and devices != {"cuda"}:
        return (f"the Triton kernel runs on a CUDA GPU (or on the CPU with TRITON_INTERPRET=1 set before "
                f"triton is imported); these tensors are on {q.device.type}")
    if q.dtype not in DTYPES or key_blocks.dtype != q.dtype:
        return f"the Triton kernel supports float16/bfloat16/float32; got {q.dtype} and {key_blocks.dtype}"
    if q.dim() != 3 or key_blocks.dim() != 4 or min(q.shape[1:]) < 1 or min(key_blocks.shape[1:]) < 1:
        return "the Triton kernel needs q (N, nh, hd) and key_blocks (num_blocks, nkv, hd, bs)"
    if q.shape[1] % key_blocks.shape[1]:
        return f"query heads ({q.shape[1]}) must be a multiple of key/value heads ({key_blocks.shape[1]})"
    return _failures.get(_shape_key(q, key_blocks))


def _shape_key(q: torch.Tensor, key_blocks: torch.Tensor, *options) -> tuple:
    """What one compiled kernel is specialised on (its launch options default to (TILE, None, None))."""
    options = options or (TILE, None, None)
    return q.dtype, q.shape[1], q.shape[2], key_blocks.shape[1], key_blocks.shape[3], q.device.type, *options


def run_triton(q: torch.Tensor, key_blocks: torch.Tensor, value_blocks: torch.Tensor,
               block_tables: torch.Tensor, context_lens: torch.Tensor, tile: int = TILE,
               num_warps: int | None = None, num_stages: int | None = None) -> torch.Tensor:
    """Launch the kernel on inputs course_lib.paged_attention has checked. q (N, nh, hd) -> (N, nh, hd).

    tile: tokens per loop iteration; num_warps, num_stages: Triton's launch options (None:
    Triton's defaults). benchmarks/gpu_decode.py --sweep measures the choices on a GPU.
    Raises RuntimeError when it cannot run here (see triton_unavailable_reason), or when
    Triton fails to compile it (remembered for this shape: the next call fails at once)."""
    reason = triton_unavailable_reason(q, key_blocks)
    if reason:
        raise RuntimeError(reason)
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 16 or tile & (tile - 1):
        raise ValueError(f"tile: must be a power of two >= 16; got {tile!r}")
    N, nh, hd = q.shape
    nkv, bs = key_blocks.shape[1], key_blocks.shape[3]
    out = torch.zeros_like(q)                                                   # (N, nh, hd)
    if N == 0:
        return out
    tables = block_tables.to(q.device)                                          # (N, max_blocks)
    lens = context_lens.to(q.device, torch.int32)                               # (N,)
    group = nh // nkv
    on_nvidia = q.device.type == "cuda" and torch.version.hip is None
    precision = FLOAT32_DOT if on_nvidia and q.dtype == torch.float32 else "ieee"
    options = {k: v for k, v in (("num_warps", num_warps), ("num_stages", num_stages)) if v is not None}
    try:
        _paged_attention_program[(N, nkv)](
            q, key_blocks, value_blocks, tables, lens, out,
            hd ** -0.5 * LOG2_E,
            *q.stride(), *key_blocks.stride(), *value_blocks.stride(), *tables.stride(), *out.stride(),
            GROUP=group, GROUP_P=_pow2_at_least_16(group), HEAD_DIM=hd, HEAD_DIM_P=_pow2_at_least_16(hd),
            BLOCK_SIZE=bs, TILE=tile, DOT_PRECISION=precision, **options)
    except Exception as exc:   # a compiler error (or an out-of-resources launch) is not the caller's fault
        lines = str(exc).strip().splitlines()
        message = f"the Triton kernel failed: {type(exc).__name__}" + (f": {lines[-1]}" if lines else "")
        if not isinstance(exc, torch.cuda.OutOfMemoryError):     # out of memory may pass; a compile error does not
            _failures[_shape_key(q, key_blocks, tile, num_warps, num_stages)] = message
        raise RuntimeError(message) from exc
    return out
