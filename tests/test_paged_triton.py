"""The Triton paged-attention kernel equals an explicit-softmax reference, over the C kernel's grid
of shapes (tests/test_paged_attention.py) and the edge cases: empty rows, block sizes that are not
powers of two, odd head sizes, unused table entries holding garbage, NaN in slots nobody reads,
prefill chunks (one row per query, lengths start+1 .. start+n).

Without a GPU it runs under Triton's interpreter (TRITON_INTERPRET=1, which must be set before
triton is imported, so in a child process); on a CUDA machine the same cases also run compiled,
in this process, on the GPU (COURSE_DEVICE=cuda, as `make gpu-check` sets).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
HAS_TRITON = importlib.util.find_spec("triton") is not None
TRITON_VERSION = tuple(int(x) for x in importlib.metadata.version("triton").split(".")[:2]) if HAS_TRITON else ()
# Triton 3.6's interpreter cannot use a loaded value as a loop bound under numpy 2 (its __index__
# calls int() on a 1-element array; 3.7 squeezes it first), and this kernel's loop runs to each
# row's context length. So the interpreter tests need 3.7 or newer (the pin in pyproject.toml);
# a GPU with triton 3.6 still runs the compiled kernel's tests below.
INTERPRETER_OK = TRITON_VERSION >= (3, 7)
needs_triton = pytest.mark.skipif(not INTERPRETER_OK, reason=(
    "triton is not installed (pip install -e '.[dev]')" if not HAS_TRITON else
    f"Triton {'.'.join(map(str, TRITON_VERSION))}'s interpreter cannot run this kernel under numpy 2 "
    f"(3.7 or newer can)"))

# The C kernel's grid (tests/test_paged_attention.py): heads (nh, nkv), head_dim, block size;
# plus shapes the store allows that are awkward for a kernel (block size 3, head_dim 24).
HEADS = [(4, 2), (4, 4), (6, 3), (8, 1)]
HEAD_DIMS = [8, 32]
BLOCK_SIZES = [1, 4, 16]
EXTRA = [((4, 2), 24, 3), ((2, 1), 16, 5)]


def cases():
    """(name, nh, nkv, hd, bs, N, max_blocks, seed) for every shape of the grid."""
    out, seed = [], 0
    for nh, nkv in HEADS:
        for hd in HEAD_DIMS:
            for bs in BLOCK_SIZES:
                seed += 1
                out.append((f"nh{nh} nkv{nkv} hd{hd} bs{bs}", nh, nkv, hd, bs, 1 + seed % 6, 1 + seed % 5, seed))
    for (nh, nkv), hd, bs in EXTRA:
        seed += 1
        out.append((f"nh{nh} nkv{nkv} hd{hd} bs{bs}", nh, nkv, hd, bs, 5, 4, seed))
    return out


def make_problem(nh, nkv, hd, bs, N, max_blocks, seed, dtype=torch.float32, device="cpu"):
    """A random pool with random distinct-per-row block tables; row 0 uses its whole table and,
    when N > 1, row 1 has no context at all. Unused table entries hold a huge id, and every slot
    no row reads holds NaN: neither may reach the answer."""
    g = torch.Generator().manual_seed(seed)
    num_blocks = max_blocks * N + 3
    kb = torch.randn(num_blocks, nkv, hd, bs, generator=g, dtype=torch.float64)          # (nb, nkv, hd, bs)
    vb = torch.randn(num_blocks, nkv, bs, hd, generator=g, dtype=torch.float64)          # (nb, nkv, bs, hd)
    tables = torch.stack([torch.randperm(num_blocks, generator=g)[:max_blocks] for _ in range(N)])  # (N, mb)
    lens = torch.randint(0, max_blocks * bs + 1, (N,), generator=g)
    lens[0] = max_blocks * bs
    if N > 1:
        lens[1] = 0
    read = torch.zeros(num_blocks, bs, dtype=torch.bool)
    for i in range(N):
        for j in range(int(lens[i])):
            read[tables[i, j // bs], j % bs] = True
        tables[i, -(-int(lens[i]) // bs):] = 2 ** 40                                       # never read
    kb.masked_fill_(~read[:, None, None, :], float("nan"))
    vb.masked_fill_(~read[:, None, :, None], float("nan"))
    q = torch.randn(N, nh, hd, generator=g, dtype=torch.float64)
    return [t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device) for t in (q, kb, vb)] + \
        [tables.to(device), lens.to(device)]


def prefill_chunk_problem(device="cpu", dtype=torch.float32):
    """Chunked prefill: a chunk of 5 tokens at positions 7..11 of one sequence gives 5 rows with
    the same block table and lengths 8..12 (the causal mask), next to a decode row of another."""
    q, kb, vb, tables, lens = make_problem(4, 2, 16, 4, 6, 4, seed=99, dtype=dtype, device=device)
    kb, vb = kb.nan_to_num(0.0), vb.nan_to_num(0.0)
    tables = tables.clone()
    tables[1:] = tables[0]                                  # rows 1..5: one sequence's chunk
    lens = torch.tensor([16, 8, 9, 10, 11, 12], device=device)
    return q, kb, vb, tables, lens


def reference(q, kb, vb, tables, lens) -> torch.Tensor:
    """Explicit softmax in float64, row by row, reading token j from block table[j // bs], slot j % bs."""
    N, nh, hd = q.shape
    nkv, bs = kb.shape[1], kb.shape[3]
    out = torch.zeros(N, nh, hd, dtype=torch.float64)
    for i in range(N):
        L = int(lens[i])
        if L == 0:
            continue
        blocks = [int(tables[i, j // bs]) for j in range(L)]
        K = torch.stack([kb[b, :, :, j % bs] for j, b in enumerate(blocks)]).double().cpu()   # (L, nkv, hd)
        V = torch.stack([vb[b, :, j % bs, :] for j, b in enumerate(blocks)]).double().cpu()   # (L, nkv, hd)
        K, V = K.repeat_interleave(nh // nkv, dim=1), V.repeat_interleave(nh // nkv, dim=1)  # (L, nh, hd)
        scores = torch.einsum("hd,lhd->hl", q[i].double().cpu(), K) / hd ** 0.5            # (nh, L)
        out[i] = torch.einsum("hl,lhd->hd", scores.softmax(-1), V)
    return out


CHILD = r"""
import json, os, sys, time
os.environ["TRITON_INTERPRET"] = "1"          # before triton is imported
sys.path[:0] = [sys.argv[1], os.path.join(sys.argv[1], "tests")]
import torch
from test_paged_triton import cases, make_problem, prefill_chunk_problem, reference
from course_lib.paged_attention import paged_attention, triton_unavailable_reason
import course_lib.paged_attention_triton as T
result = {"interpreted": T.INTERPRETED, "errors": {}, "seconds": {}}
t0 = time.perf_counter()
problems = [(name, make_problem(*args)) for name, *args in cases()] + [("prefill chunk", prefill_chunk_problem())]
for name, args in problems:
    t = time.perf_counter()
    out = paged_attention(*args, impl="triton")
    result["seconds"][name] = time.perf_counter() - t
    result["errors"][name] = float((out.double() - reference(*args)).abs().max())
q, kb, vb, tables, lens = prefill_chunk_problem(dtype=torch.float16)
result["float16"] = float((paged_attention(q, kb, vb, tables, lens, impl="triton").double()
                           - reference(q, kb, vb, tables, lens)).abs().max())
result["float64 reason"] = triton_unavailable_reason(q.double(), kb.double())

# the engine on a paged store whose steps run the Triton kernel (prefill chunks and decode rows)
from course_lib.engine.engine import Engine, clone_requests
from course_lib.engine.request import Request
from course_lib.kv.paged import PagedKVStore
from course_lib.model import TinyLMConfig, build_model
cfg = TinyLMConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.3)
model = build_model(cfg, seed=1, weights="random")
reqs = [Request([97 + i] * (3 + 4 * i), 6, arrival=i, rid=i, eos_id=None) for i in range(3)]
outputs = {}
for attention in ("triton", "gather"):
    store = PagedKVStore.for_model(model, num_blocks=24, block_size=4, attention=attention)
    res = Engine(model, store, policy="chunked", max_tokens_per_step=8, clock="steps").run(clone_requests(reqs))
    outputs[attention] = res.outputs()
    result[f"engine {attention} impl"] = store.resolved_attention(cfg.num_attention_heads)
result["engine outputs equal"] = outputs["triton"] == outputs["gather"]
result["total"] = time.perf_counter() - t0
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def interpreted():
    """Run every case under Triton's interpreter in a child process; its results as a dict."""
    if not INTERPRETER_OK:
        pytest.skip("needs triton >= 3.7 (see INTERPRETER_OK)")
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1", COURSE_DEVICE="cpu")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ROOT)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_triton
def test_interpreter_runs_the_kernel(interpreted):
    assert interpreted["interpreted"] is True


@needs_triton
@pytest.mark.parametrize("name", [c[0] for c in cases()] + ["prefill chunk"])
def test_triton_kernel_equals_the_reference_under_the_interpreter(interpreted, name):
    assert interpreted["errors"][name] <= 1e-5, interpreted["errors"][name]


@needs_triton
def test_half_precision_and_unsupported_dtypes(interpreted):
    """float16 agrees to half-precision rounding; float64 is refused with a reason ('auto'
    then falls back), never computed wrongly."""
    assert interpreted["float16"] <= 1e-2
    assert "float16/bfloat16/float32" in interpreted["float64 reason"]


@needs_triton
def test_the_engine_serves_through_the_triton_kernel(interpreted):
    """A paged store on attention='triton' (chunked prefill and decode steps through the kernel)
    gives the engine the same tokens as the readable path."""
    assert interpreted["engine triton impl"] == "triton" and interpreted["engine gather impl"] == "gather"
    assert interpreted["engine outputs equal"]


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_the_kernel_compiles_for_an_nvidia_gpu():
    """The interpreter runs the kernel's Python; a GPU compiles it. Compile it here too, for an
    H100/H200 (sm_90) with Triton's own ptxas, no GPU needed: the sides tl.dot accepts, the dtypes,
    the launch options (as run_triton passes them) are all checked before a GPU ever sees it."""
    import course_lib.paged_attention_triton as T
    if T.INTERPRETED:
        pytest.skip("TRITON_INTERPRET=1 is set in this process")
    import triton
    from triton.backends.compiler import GPUTarget
    ptr = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32"}
    for dtype, group, hd, bs in [(torch.float16, 4, 128, 16), (torch.bfloat16, 4, 128, 16),
                                 (torch.float32, 4, 128, 16), (torch.float32, 3, 24, 3)]:
        consts = dict(GROUP=group, GROUP_P=T._pow2_at_least_16(group), HEAD_DIM=hd,
                      HEAD_DIM_P=T._pow2_at_least_16(hd), BLOCK_SIZE=bs, TILE=T.TILE,
                      DOT_PRECISION=T.FLOAT32_DOT if dtype == torch.float32 else "ieee")
        fn = T._paged_attention_program
        types = {"Q": ptr[dtype], "K_BLOCKS": ptr[dtype], "V_BLOCKS": ptr[dtype], "OUT": ptr[dtype],
                 "BLOCK_TABLES": "*i64", "CONTEXT_LENS": "*i32", "qk_scale": "fp32"}
        signature = {n: "constexpr" if n in consts else types.get(n, "i32") for n in fn.arg_names}
        try:
            source = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=consts)
        except TypeError as exc:                      # another Triton's ASTSource: nothing to learn here
            pytest.skip(f"this Triton's ASTSource differs ({exc})")
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
        assert compiled.asm["cubin"], (dtype, group, hd, bs)


def test_without_a_gpu_or_interpreter_auto_never_picks_triton():
    """On CPU tensors 'auto' is the C kernel (or gather), whatever is installed; asking for
    'triton' there, outside the interpreter, is a RuntimeError that says what it needs."""
    import course_lib.paged_attention_triton as T
    from course_lib.paged_attention import fast_impl, paged_attention, paged_attention_gather

    assert fast_impl("cpu") == "kernel" and fast_impl(torch.device("cuda")) == "triton"
    args = make_problem(4, 2, 8, 4, 3, 2, seed=1)
    args[1], args[2] = args[1].nan_to_num(0.0), args[2].nan_to_num(0.0)
    torch.testing.assert_close(paged_attention(*args), paged_attention_gather(*args), atol=1e-5, rtol=1e-5)
    if not T.INTERPRETED:
        with pytest.raises(RuntimeError, match="CUDA GPU|not installed"):
            paged_attention(*args, impl="triton")
    with pytest.raises(ValueError, match="block_tables"):       # bad input is checked before any kernel
        bad = args[3].clone()
        bad[0, 0] = -1
        paged_attention(*args[:3], bad, args[4], impl="triton")


# ---- on a GPU: the compiled kernel, in this process ---------------------------------------------------
def cuda_device() -> torch.device:
    from course_lib.device import get_device
    dev = get_device()
    if dev.type != "cuda" or not HAS_TRITON:
        pytest.skip("needs a CUDA GPU and triton (run with COURSE_DEVICE=cuda: make gpu-check)")
    return dev


# every shape in float32; a spread of them in half precision (each shape and dtype is one compile)
GPU_CASES = [(c[0], torch.float32) for c in cases()] + [(c[0], dt) for c in cases()[::6]
                                                       for dt in (torch.float16, torch.bfloat16)]


@pytest.mark.parametrize("name,dtype", GPU_CASES, ids=[f"{n} {str(d)[6:]}" for n, d in GPU_CASES])
def test_triton_kernel_on_the_gpu(name, dtype):
    dev = cuda_device()
    from course_lib.paged_attention import paged_attention
    _, *args = next(c for c in cases() if c[0] == name)
    problem = make_problem(*args, dtype=dtype, device=dev)
    err = (paged_attention(*problem).double().cpu() - reference(*problem)).abs().max().item()   # 'auto' on CUDA
    assert err <= {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}[dtype], err


def test_prefill_chunk_and_the_store_on_the_gpu():
    """A prefill chunk row by row, and a paged store on the GPU picking the Triton kernel for its steps."""
    dev = cuda_device()
    from course_lib.kv.paged import PagedKVStore
    from course_lib.paged_attention import paged_attention
    problem = prefill_chunk_problem(device=dev)
    assert (paged_attention(*problem).double().cpu() - reference(*problem)).abs().max().item() <= 1e-5

    def step(attention):
        s = PagedKVStore(1, 2, 16, dtype=torch.float32, device=dev, num_blocks=6, block_size=4, attention=attention)
        s.add(0, list(range(9)), 12)
        s.grow(0, 9)
        g = torch.Generator(device=dev).manual_seed(3)
        q, k, v = (torch.randn(1, 9, n, 16, generator=g, device=dev) for n in (4, 2, 2))
        return s.resolved_attention(4), s.step_context([(0, 9)]).attend(0, q, k, v)

    (impl, fast), (_, readable) = step("auto"), step("gather")
    assert impl == "triton"
    torch.testing.assert_close(fast, readable, atol=1e-5, rtol=1e-5)


@needs_triton
def test_the_gpu_benchmark_runs_under_the_interpreter(tmp_path):
    """benchmarks/gpu_decode.py (make gpu-check's benchmark) on a tiny shape under the interpreter:
    it runs end to end, its kernel agrees with SDPA, and it names both targets. Without a GPU
    or the interpreter it says in one line why it cannot run."""
    out = tmp_path / "gpu_decode.json"
    cmd = [sys.executable, "-m", "benchmarks.gpu_decode", "--shape", "tiny", "--quick", "--dtypes", "float32",
           "--repeat", "1", "--sweep", "--json", str(out)]
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1", COURSE_DEVICE="cpu")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "target Triton/SDPA <= 1.25x" in proc.stdout and "of copy bandwidth" in proc.stdout
    data = json.loads(out.read_text())
    assert data["records"][0]["max_abs_diff"]["paged (Triton)"] <= 1e-5
    assert all("best_us" in r for r in data["sweeps"]["float32"])
    env.pop("TRITON_INTERPRET")
    proc = subprocess.run(cmd[:3], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and proc.stdout.count("\n") == 1 and "cannot run here" in proc.stdout
