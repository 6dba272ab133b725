"""Fused operations of a decoder layer: each one pass in C on the CPU, with its PyTorch reference.

A small model's decode step is made of many small operations. In eager PyTorch each line of a
layer is several of them (RMSNorm alone is a square, a mean, an add, an rsqrt and two
multiplies), and every operation costs a few microseconds whatever its size: dispatch, a new
output tensor, one more pass over memory. At 8-64 rows of a 128-wide model that fixed cost is
most of the step (lesson 04 and benchmarks/peer.py measure it). Serving engines therefore fuse
them; vLLM ships these same four as custom ops (its csrc/ kernels, for GPUs and for CPUs):

    add_rms_norm(x, w, eps, delta)   the residual add and RMSNorm in one pass  (fused_add_rms_norm)
    silu_mul(gate_up)                SwiGLU's silu(gate) * up                  (silu_and_mul)
    rope(x, cos, sin, heads)         rotate q's and k's heads by position      (rotary_embedding)
    write_kv(k, v, slots, kb, vb)    keys and values into their paged slots    (reshape_and_cache)

Each runs the C code in fused_ops.c (compiled on first use, like the paged attention kernel;
course_lib/kernel_build.py) when the tensors are CPU float32/float64 and no gradient is being
recorded, and otherwise its PyTorch reference below (on a GPU, in half precision, while training).
The two agree to rounding (tests/test_fused_ops.py). `use("torch")` makes every call take the
reference, e.g. to time one against the other:

    with fused_ops.use("torch"): ...       # 'auto' (default), 'c' (raise if C cannot run) or 'torch'
    fused_ops.c_runs(device, dtype)       # does the C code serve such tensors here?
"""

from __future__ import annotations

import contextlib
import ctypes

import torch
import torch.nn.functional as F

from course_lib.device import check_device
from course_lib.kernel_build import load_library
from course_lib.validate import check_type

SOURCE = "fused_ops.c"
IMPLS = ("auto", "c", "torch")
_impl = "auto"
_DEFINES = {torch.float32: ("-DSCALAR=float", "-DIS_DOUBLE=0"), torch.float64: ("-DSCALAR=double", "-DIS_DOUBLE=1")}
_P, _I, _D = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
_SIGNATURES = {
    "add_rms_norm": [_P, _P, _P, _P, _P, _I, _I, _D],
    "silu_mul": [_P, _P, _I, _I],
    "rope": [_P, _I, _P, _P, _P, _I, _I, _I],
    "write_kv": [_P, _I, _P, _I, _P, _P, _P, _I, _I, _I, _I],
}
_libs: dict[torch.dtype, object] = {}
_noticed: set[str] = set()


@contextlib.contextmanager
def use(impl: str):
    """Within the block, every fused op runs `impl`: 'auto' (C where it can run, else PyTorch),
    'c' (C, or RuntimeError saying why not) or 'torch' (the reference)."""
    global _impl
    if impl not in IMPLS:
        raise ValueError(f"impl: must be one of {', '.join(IMPLS)}; got {impl!r}")
    before, _impl = _impl, impl
    try:
        yield
    finally:
        _impl = before


def _lib(*tensors: torch.Tensor):
    """The C library for these tensors, or None when the reference must serve them.
    (Called for every op of every layer: the common case is checked first and fast.)"""
    if _impl == "torch":
        return None
    dtype = tensors[0].dtype
    lib = _libs.get(dtype)
    ok = dtype in _DEFINES
    grad = torch.is_grad_enabled()
    for x in tensors:
        if not x.is_cpu or x.dtype is not dtype or (grad and x.requires_grad):
            ok = False
    if not ok:
        if _impl == "c":
            raise RuntimeError("fused_ops: C runs CPU float32/float64 tensors of one dtype, with no gradient "
                               f"recorded; got {[(x.dtype, x.device.type, x.requires_grad) for x in tensors]}")
        return None
    return lib if lib is not None else _load(dtype)


def _load(dtype: torch.dtype):
    """Build or load the library for `dtype`; None (after one notice) if it cannot be had in 'auto'."""
    try:
        lib = load_library(SOURCE, _DEFINES[dtype])
        for name, argtypes in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, None
    except (RuntimeError, AttributeError) as exc:
        if _impl == "c":
            raise RuntimeError(f"fused_ops: {exc}") from exc
        if str(exc) not in _noticed:          # say once why, then serve with the reference
            _noticed.add(str(exc))
            print(f"note: the fused C ops cannot run here ({exc}); using PyTorch's operations")
        return None
    _libs[dtype] = lib
    return lib


def c_runs(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> bool:
    """Whether the C code serves tensors of this device and dtype here (a CPU, float32 or float64,
    a C compiler); elsewhere the PyTorch references do. Builds the library if needed."""
    x = torch.zeros(1, 2, device=check_device(device), dtype=check_type("dtype", dtype, torch.dtype))
    try:
        with use("c"):
            return _lib(x) is not None
    except RuntimeError:
        return False


# ---- RMSNorm, with the residual add ------------------------------------------------------------
def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last dim (F.rms_norm: one PyTorch op made of six)."""
    return F.rms_norm(x, x.shape[-1:], weight, eps)


def add_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
                 delta: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(s) * weight, s) with s = x + delta (s = x when delta is None): the residual
    stream moves on and is normalised in one pass. x, delta (..., D); weight (D,). x is not changed."""
    D = x.shape[-1]
    if weight.shape != (D,):
        raise ValueError(f"weight: must have shape ({D},), x's last dim; got {tuple(weight.shape)}")
    if delta is not None and delta.shape != x.shape:
        raise ValueError(f"delta: must have x's shape {tuple(x.shape)}; got {tuple(delta.shape)}")
    lib = _lib(x, weight) if delta is None else _lib(x, weight, delta)
    if (lib is None or not x.is_contiguous() or not weight.is_contiguous()
            or (delta is not None and not delta.is_contiguous())):           # C reads contiguous rows
        s = x if delta is None else x + delta
        return rms_norm_reference(s, weight, eps), s
    N = x.numel() // D if D else 0                                              # rows
    out = torch.empty_like(x)                                                   # (..., D)
    if delta is None:
        lib.add_rms_norm(x.data_ptr(), None, weight.data_ptr(), None, out.data_ptr(), N, D, eps)
        return out, x
    s = torch.empty_like(x)                                                     # (..., D)
    lib.add_rms_norm(x.data_ptr(), delta.data_ptr(), weight.data_ptr(), s.data_ptr(), out.data_ptr(), N, D, eps)
    return out, s


# ---- SwiGLU's activation -------------------------------------------------------------------------
def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up (..., 2 I), gate then up -> silu(gate) * up (..., I)."""
    two_i = gate_up.shape[-1]
    if two_i % 2:
        raise ValueError(f"gate_up: its last dim must be even (gate and up side by side); got {two_i}")
    lib = _lib(gate_up)
    if lib is None or not gate_up.is_contiguous():
        gate, up = gate_up.chunk(2, dim=-1)                                     # (..., I) each
        return F.silu(gate) * up
    out = gate_up.new_empty(*gate_up.shape[:-1], two_i // 2)                      # (..., I)
    lib.silu_mul(gate_up.data_ptr(), out.data_ptr(), gate_up.numel() // two_i if two_i else 0, two_i // 2)
    return out


# ---- RoPE ------------------------------------------------------------------------------------------
def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the last dim: each feature pair (i, i + hd/2) turned by 90 degrees."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, T, heads, hd); cos, sin (B, T, 1, hd): each pair rotated by its position's angle."""
    return x * cos + rotate_half(x) * sin


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int) -> torch.Tensor:
    """The first `heads` heads of x (B, T, H, hd) rotated -> (B, T, heads, hd); cos, sin (B, T, 1, hd).
    Only the tokens' heads and features need be contiguous (x may be a slice of qkv)."""
    B, T, H, hd = x.shape
    if not 0 <= heads <= H:
        raise ValueError(f"heads: must be in [0, {H}] (the heads x has); got {heads}")
    lib = _lib(x, cos, sin)
    if (lib is None or x.stride(3) != 1 or x.stride(2) != hd or x.stride(0) != T * x.stride(1)
            or cos.shape != (B, T, 1, hd) or sin.shape != (B, T, 1, hd)
            or not (cos.is_contiguous() and sin.is_contiguous())):    # e.g. angles broadcast over the batch
        return apply_rope(x[:, :, :heads], cos, sin)
    out = x.new_empty(B, T, heads, hd)                                          # (B, T, heads, hd)
    lib.rope(x.data_ptr(), x.stride(1), cos.data_ptr(), sin.data_ptr(), out.data_ptr(), B * T, heads, hd)
    return out


# ---- writing keys and values into the paged pool ---------------------------------------------------
def write_kv_reference(k, v, slots, key_blocks, value_blocks) -> None:
    """Token i of k, v (n, nkv, hd) into slot slots[i] of the pool: two indexed writes."""
    bs = key_blocks.shape[-1]
    blocks, offsets = slots // bs, slots % bs                      # (n,) each
    key_blocks[blocks, :, :, offsets] = k.to(key_blocks.dtype)      # (n, nkv, hd) into (nb, nkv, hd, bs)
    value_blocks[blocks, :, offsets, :] = v.to(value_blocks.dtype)  # (n, nkv, hd) into (nb, nkv, bs, hd)


def write_kv(k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor, key_blocks: torch.Tensor,
             value_blocks: torch.Tensor, checked: bool = False) -> None:
    """Token i of k, v (n, nkv, hd) into flat slot slots[i] (n,): block slots[i] // bs, offset
    slots[i] % bs of key_blocks (nb, nkv, hd, bs) and value_blocks (nb, nkv, bs, hd).
    Every slot must be in [0, nb * bs): checked here (ValueError), unless checked=True says the
    caller knows it (a step's slots come from the store's own tables). C checks nothing."""
    n, nkv, hd = k.shape
    top = key_blocks.shape[0] * key_blocks.shape[-1] - 1
    if not checked and slots.numel() and not 0 <= int(slots.min()) <= int(slots.max()) <= top:
        raise ValueError(f"slots: must be in [0, {top}]; got {int(slots.min())} .. {int(slots.max())}")
    lib = _lib(k, v, key_blocks, value_blocks)
    if (lib is None or slots.dtype != torch.int64 or slots.device.type != "cpu" or not slots.is_contiguous()
            or any(t.stride(2) != 1 or t.stride(1) != hd for t in (k, v))
            or not (key_blocks.is_contiguous() and value_blocks.is_contiguous())):
        write_kv_reference(k, v, slots, key_blocks, value_blocks)
        return
    if (v.shape != k.shape or slots.shape != (n,) or key_blocks.shape[1:3] != (nkv, hd)
            or value_blocks.shape != (key_blocks.shape[0], nkv, key_blocks.shape[-1], hd)):
        raise ValueError(f"write_kv: k, v {tuple(k.shape)}, {tuple(v.shape)} and slots {tuple(slots.shape)} do not "
                         f"fit the pool {tuple(key_blocks.shape)}, {tuple(value_blocks.shape)}")
    lib.write_kv(k.data_ptr(), k.stride(0), v.data_ptr(), v.stride(0), slots.data_ptr(), key_blocks.data_ptr(),
                 value_blocks.data_ptr(), n, nkv, hd, key_blocks.shape[-1])
