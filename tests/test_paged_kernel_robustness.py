"""The C kernel path never crashes the process and never returns a wrong answer.

Every case runs in a child process (a crash there is a failed test, not a dead test run),
with its own kernel cache folder (COURSE_KERNEL_CACHE) under pytest's tmp_path:

* a corrupt cache: a 0-byte, a truncated and a garbage library, and one without its
  checksum, are each detected and rebuilt, never loaded (a truncated one used to SIGBUS);
* a missing compiler and a hanging one (with COURSE_KERNEL_COMPILE_TIMEOUT=1): the readable
  path answers, the hung compiler is killed, and the kernel works again once a real
  compiler is back;
* concurrent first builds from several threads in several processes into one fresh cache;
* helper threads that come after the work is done, shared by concurrent callers, and across fork();
* oversize shapes (the one that used to segfault: float64, head_dim 16, 1,024 query heads on
  one kv head, blocks of 1,024, contexts 1,025 and 2,048) and a capped scratch size;
* bad input that must never reach C: mixed dtypes, float block tables, block ids out of
  range inside the context, huge ids in ignored table slots, tensors off the CPU.

Answers are compared with an explicit float64 softmax: 1e-10 in float64, 1e-5 in float32.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTICE = "using the readable gather path"
needs_cc = pytest.mark.skipif(not any(shutil.which(c) for c in ("gcc", "cc", "clang")),
                              reason="no C compiler here: nothing to build")

PRELUDE = r'''
import json, os, sys, threading, time
import torch
import course_lib.kernel_build as build
import course_lib.paged_attention as pa

def problem(nh, nkv, hd, bs, lens, num_blocks=None, seed=0, dtype=torch.float64):
    """A random pool and distinct random block tables: q (N, nh, hd), key_blocks, value_blocks, tables, lens."""
    g = torch.Generator().manual_seed(seed)
    max_blocks = max(1, -(-max(lens) // bs))
    num_blocks = num_blocks or max_blocks * len(lens) + 2
    kb = torch.randn(num_blocks, nkv, hd, bs, generator=g, dtype=dtype)     # (nb, nkv, hd, bs)
    vb = torch.randn(num_blocks, nkv, bs, hd, generator=g, dtype=dtype)     # (nb, nkv, bs, hd)
    tables = torch.stack([torch.randperm(num_blocks, generator=g)[:max_blocks] for _ in lens])
    q = torch.randn(len(lens), nh, hd, generator=g, dtype=dtype)
    return q, kb, vb, tables, torch.tensor(lens)

def reference(q, kb, vb, tables, lens):
    """Row by row in float64: keys and values copied out, then an explicit softmax."""
    rows = []
    for i in range(q.shape[0]):
        L, qi = int(lens[i]), q[i].double()                                  # qi (nh, hd)
        if L == 0:
            rows.append(torch.zeros_like(qi))
            continue
        K, V = pa.gather_kv(kb.double(), vb.double(), tables[i].tolist(), L)   # (L, nkv, hd)
        rep = q.shape[1] // K.shape[1]
        K, V = K.repeat_interleave(rep, 1), V.repeat_interleave(rep, 1)          # (L, nh, hd)
        p = (torch.einsum("hd,lhd->hl", qi, K) / q.shape[-1] ** 0.5).softmax(-1)  # (nh, L)
        rows.append(torch.einsum("hl,lhd->hd", p, V))
    return torch.stack(rows)

_references = {}

def err(out, args):
    """Max |out - reference|; the reference is computed once per set of input tensors."""
    key = tuple(id(t) for t in args)
    if key not in _references:
        _references[key] = (args, reference(*args))       # keeps args alive, so ids stay unique
    return float((out.double() - _references[key][1]).abs().max())

def outcome(fn):
    """'ok <max error>' or '<ExceptionType>: <message>'."""
    try:
        return f"ok {fn():.3g}"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"

def report(result):
    print("RESULT " + json.dumps(result), flush=True)
'''


def child_env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "COURSE_KERNEL_COMPILE_TIMEOUT")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "COURSE_KERNEL_CACHE": str(tmp_path / "cache"),
                **extra})
    return env


def finish(proc: subprocess.Popen | subprocess.CompletedProcess, stdout: str, stderr: str) -> tuple[dict, str]:
    """Assert the child exited cleanly; return its RESULT dict and its stderr."""
    rc = proc.returncode
    died = f" (killed by {signal.Signals(-rc).name})" if rc < 0 else ""
    assert rc == 0, f"the child exited with {rc}{died}:\n{stderr[-4000:]}"
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"the child reported nothing:\n{stdout[-2000:]}\n{stderr[-2000:]}"
    return json.loads(lines[-1][len("RESULT "):]), stderr


def run_child(code: str, env: dict, timeout: float = 120) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, "-c", PRELUDE + code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return finish(proc, proc.stdout, proc.stderr)


def libraries(cache: Path) -> list[Path]:
    return sorted(cache.glob("paged_attention_*.so"))


# ---- a corrupt cache -------------------------------------------------------------------------
BUILD = r'''
built = {}
for hd in (8, 16, 24, 40):
    cache = os.environ["COURSE_KERNEL_CACHE"]
    before = set(os.listdir(cache)) if os.path.isdir(cache) else set()
    assert pa.kernel_available(torch.float64, hd, 4, 2, 1), pa.kernel_unavailable_reason(
        torch.empty(0, 2, hd, dtype=torch.float64), torch.empty(0, 1, hd, 4, dtype=torch.float64))
    new = [f for f in os.listdir(cache) if f not in before and f.endswith(".so")]
    built[hd] = os.path.join(cache, new[0])
report(built)
'''

USE = r'''
result = {}
for hd in (8, 16, 24, 40):
    args = problem(2, 1, hd, 4, [7, 13])
    result[hd] = [outcome(lambda: err(pa.paged_attention(*args), args)),
                  outcome(lambda: err(pa.paged_attention(*args, impl="kernel"), args)),
                  build._is_intact(sys.argv[1 + [8, 16, 24, 40].index(hd)])]
report(result)
'''


@needs_cc
def test_a_corrupt_cached_library_is_rebuilt_not_loaded(tmp_path):
    env = child_env(tmp_path)
    built, _ = run_child(BUILD, env)
    libs = [Path(built[str(hd)]) for hd in (8, 16, 24, 40)]
    good = libs[1].read_bytes()
    libs[0].write_bytes(b"")                                    # 0 bytes, checksum kept
    libs[1].write_bytes(good[: len(good) // 2])                 # truncated: mapping it would SIGBUS
    libs[2].write_bytes(os.urandom(len(good)))                  # garbage of the right size
    libs[3].write_bytes(good[: len(good) // 3])                 # truncated, and its checksum gone
    Path(str(libs[3]) + ".sha256").unlink()
    proc = subprocess.run([sys.executable, "-c", PRELUDE + USE, *map(str, libs)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    result, stderr = finish(proc, proc.stdout, proc.stderr)
    for hd, (auto, kernel, intact) in result.items():
        assert auto.startswith("ok") and float(auto.split()[1]) < 1e-10, (hd, auto)
        assert kernel.startswith("ok") and float(kernel.split()[1]) < 1e-10, (hd, kernel)
        assert intact, f"head_dim {hd}: the library was not rebuilt"
    assert NOTICE not in stderr, stderr                         # the kernel itself answered every time


# ---- missing and hanging compilers -------------------------------------------------------------
COMPILERS = r'''
result = {}
real_path, real_cc = os.environ["PATH"], build._compiler()
args = problem(4, 2, 16, 4, [9, 3])
# 1. no compiler: CC names a missing file, and the PATH holds no gcc, cc or clang
os.environ["CC"], os.environ["PATH"] = "/nonexistent/cc", sys.argv[1]
result["missing reason"] = pa.kernel_unavailable_reason(*args[:2])
result["missing auto"] = outcome(lambda: err(pa.paged_attention(*args), args))
result["missing kernel"] = outcome(lambda: err(pa.paged_attention(*args, impl="kernel"), args))
# 2. a compiler that never finishes, with a 1-second limit
os.environ["PATH"], os.environ["CC"], os.environ[pa.TIMEOUT_ENV] = real_path, sys.argv[2], "1"
pa._notice_shown = False
t0 = time.monotonic()
result["hang auto"] = outcome(lambda: err(pa.paged_attention(*args), args))
result["hang seconds"] = time.monotonic() - t0
result["hang kernel"] = outcome(lambda: err(pa.paged_attention(*args, impl="kernel"), args))
alive = []
deadline = time.monotonic() + 5
for pid in map(int, open(os.environ["FAKE_CC_PIDS"]).read().split()):
    while True:         # the fake compiler and the sleep it started must be gone (or zombies)
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            break
        if state in ("Z", "X"):
            break
        if time.monotonic() > deadline:
            alive.append(pid)
            break
        time.sleep(0.05)
result["still running"] = alive
# 3. the cause gone: a real compiler again, and the kernel serves
os.environ["CC"] = real_cc
result["back reason"] = pa.kernel_unavailable_reason(*args[:2])
result["back kernel"] = outcome(lambda: err(pa.paged_attention(*args, impl="kernel"), args))
report(result)
'''


@needs_cc
@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX shell script plays the hanging compiler")
def test_missing_and_hanging_compilers_fall_back_then_recover(tmp_path):
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    fake = tmp_path / "hanging_cc"
    fake.write_text('#!/bin/sh\necho $$ >> "$FAKE_CC_PIDS"\nsleep 60 &\necho $! >> "$FAKE_CC_PIDS"\nwait\n')
    fake.chmod(0o755)
    env = child_env(tmp_path, FAKE_CC_PIDS=str(tmp_path / "pids"))
    proc = subprocess.run([sys.executable, "-c", PRELUDE + COMPILERS, str(empty), str(fake)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    r, stderr = finish(proc, proc.stdout, proc.stderr)
    assert "no C compiler" in r["missing reason"]
    assert r["missing auto"].startswith("ok") and float(r["missing auto"].split()[1]) < 1e-10
    assert r["missing kernel"].startswith("RuntimeError") and "no C compiler" in r["missing kernel"]
    assert r["hang auto"].startswith("ok") and float(r["hang auto"].split()[1]) < 1e-10
    assert r["hang seconds"] < 15, r["hang seconds"]           # one 1-second limit, not a hang
    assert r["hang kernel"].startswith("RuntimeError") and "longer than 1 s" in r["hang kernel"]
    assert r["still running"] == [], "the hung compiler (or its child) was left running"
    assert r["back reason"] is None and r["back kernel"].startswith("ok"), r
    assert float(r["back kernel"].split()[1]) < 1e-10
    notices = [line for line in stderr.splitlines() if NOTICE in line]
    assert len(notices) == 2 and "no C compiler" in notices[0] and "longer than 1 s" in notices[1], stderr


# ---- concurrent first builds -------------------------------------------------------------------
CONCURRENT = r'''
ready, go = sys.argv[1], sys.argv[2]
shapes = [(4, 2, 16, 8, torch.float64), (6, 2, 8, 4, torch.float32)]
problems = [problem(nh, nkv, hd, bs, [5, 17, 1], dtype=dt, seed=i) for i, (nh, nkv, hd, bs, dt) in enumerate(shapes)]
errors, worst = [], [0.0, 0.0]
barrier = threading.Barrier(4)

def work(t):
    try:
        barrier.wait()
        for _ in range(2):
            for k in (t % 2, 1 - t % 2):          # threads start on different shapes
                args = problems[k]
                worst[k] = max(worst[k], err(pa.paged_attention(*args), args))
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")

open(ready, "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < deadline:    # every process starts together
    time.sleep(0.01)
threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
for t in threads: t.start()
for t in threads: t.join()
report({"errors": errors, "worst": worst})
'''


@needs_cc
def test_concurrent_builds_from_threads_and_processes(tmp_path):
    env = child_env(tmp_path)
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", PRELUDE + CONCURRENT, str(tmp_path / f"ready{i}"), str(go)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(3)]
    try:
        deadline = time.monotonic() + 90
        while not all((tmp_path / f"ready{i}").exists() for i in range(3)) and time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.02)
        go.touch()
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (stdout, stderr) in zip(procs, outputs):
        r, stderr = finish(p, stdout, stderr)
        assert r["errors"] == [], r["errors"]
        assert r["worst"][0] < 1e-10 and r["worst"][1] < 1e-5, r["worst"]
        assert NOTICE not in stderr, stderr                     # every thread got the kernel
    cache = tmp_path / "cache"
    libs = libraries(cache)
    assert len(libs) == 2, libs                                 # one library per shape, built once each
    assert all(Path(str(lib) + ".sha256").exists() for lib in libs)
    assert not list(cache.glob(".build-*")), "a build folder was left behind"


# ---- helper threads: late, shared by concurrent callers, and across fork() -----------------------
LATE_HELPERS = r"""
import torch
result = {"worst": 0.0, "calls": 0, "errors": []}
small = problem(4, 2, 16, 4, [3, 9], dtype=torch.float32)              # 4 work items: helpers often find none left
big = problem(8, 2, 32, 16, [300, 77, 512], dtype=torch.float32)
for args in (small, big):
    err(pa.paged_attention_kernel(*args, num_threads=1), args)         # the reference, once per problem

def hammer(seconds, calls):
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and result["calls"] < calls:
            for args, threads in ((small, 4), (small, 2), (big, 3)):
                out = pa.paged_attention_kernel(*args, num_threads=threads)
                result["worst"] = max(result["worst"], err(out, args))
                result["calls"] += 1
    except Exception as exc:
        result["errors"].append(f"{type(exc).__name__}: {exc}")

hammer(10, 2000)                                                        # one caller
threads = [threading.Thread(target=hammer, args=(10, 4000)) for _ in range(3)]   # three callers at once
for t in threads: t.start()
for t in threads: t.join()
# fork(): the child has none of the parent's helper threads; it must start its own, not wait for them
pid = os.fork()
if pid == 0:
    try:
        out = pa.paged_attention_kernel(*big, num_threads=3)
        os._exit(0 if err(out, big) < 1e-5 else 3)
    except BaseException:
        os._exit(4)
deadline = time.monotonic() + 60
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done or time.monotonic() > deadline:
        break
    time.sleep(0.05)
if not done:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
result["child"] = os.waitstatus_to_exitcode(status) if done else "hung"
result["after fork"] = err(pa.paged_attention_kernel(*big, num_threads=3), big)   # the parent's helpers still serve
report(result)
"""


@needs_cc
@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")
def test_helper_threads_late_concurrent_and_across_fork(tmp_path):
    """The kernel's caller does items itself and returns once every item TAKEN is done; a helper that
    comes later finds no work and sleeps again, and the job is freed by the last thread holding it.
    Thousands of calls with more threads than there is work, from one caller and then from three at
    once (sharing the helpers), each exact, no crash; a fork()ed child (which has no helper threads)
    starts its own and answers, and the parent still does."""
    r, _ = run_child(LATE_HELPERS, child_env(tmp_path))
    assert r["errors"] == [], r["errors"]
    assert r["calls"] >= 300, r
    assert r["worst"] < 1e-5, r
    assert r["child"] == 0, r
    assert r["after fork"] < 1e-5, r


# ---- oversize shapes ---------------------------------------------------------------------------
OVERSIZE = r'''
result = {}
# the shape that segfaulted: float64, head_dim 16, 1,024 query heads on 1 kv head, blocks of 1,024
args = problem(1024, 1, 16, 1024, [1025, 2048], num_blocks=4)
t0 = time.monotonic()
result["auto"] = outcome(lambda: err(pa.paged_attention(*args), args))
result["kernel"] = outcome(lambda: err(pa.paged_attention(*args, impl="kernel"), args))
result["seconds"] = time.monotonic() - t0
result["kernel ran"] = pa.kernel_unavailable_reason(*args[:2]) is None
# small arrays too large for the stack, in float32 (64 heads per kv head: 64 x 81 > 4096 numbers)
args32 = problem(64, 1, 32, 16, [40, 3, 16], dtype=torch.float32)
result["float32"] = outcome(lambda: err(pa.paged_attention(*args32, impl="kernel"), args32))
# more scratch than allowed: 'auto' falls back, 'kernel' says why
pa.KERNEL_MAX_SCRATCH_BYTES = 1 << 20
result["capped auto"] = outcome(lambda: err(pa.paged_attention(*args), args))
result["capped kernel"] = outcome(lambda: err(pa.paged_attention(*args, impl="kernel"), args))
report(result)
'''


@needs_cc
def test_oversize_shapes_give_the_right_answer(tmp_path):
    r, stderr = run_child(OVERSIZE, child_env(tmp_path, OMP_NUM_THREADS="2"))
    assert r["kernel ran"], r
    for key in ("auto", "kernel", "capped auto"):
        assert r[key].startswith("ok") and float(r[key].split()[1]) < 1e-10, (key, r[key])
    assert r["float32"].startswith("ok") and float(r["float32"].split()[1]) < 1e-5, r["float32"]
    assert r["capped kernel"].startswith("RuntimeError") and "scratch" in r["capped kernel"]
    notices = [line for line in stderr.splitlines() if NOTICE in line]
    assert len(notices) == 1 and "scratch" in notices[0], stderr


# ---- bad input never reaches C -----------------------------------------------------------------
BAD_INPUTS = r'''
import torch
result = {}
q, kb, vb, tables, lens = problem(4, 2, 8, 4, [6, 11], num_blocks=6)      # 6 blocks: ids 0..5
impls = ("auto", "kernel", "gather")
def each(name, *args):
    result[name] = {impl: outcome(lambda: err(pa.paged_attention(*args, impl=impl), (q, kb, vb, tables, lens)))
                    for impl in impls}
each("values float32", q, kb, vb.float(), tables, lens)
each("keys float32", q, kb.float(), vb, tables, lens)
each("tables float", q, kb, vb, tables.double(), lens)
each("lens float", q, kb, vb, tables, lens.double())
each("q int", q.long(), kb.long(), vb.long(), tables, lens)
bad = tables.clone(); bad[1, 2] = -1          # row 1 (11 tokens) reads its blocks 0, 1, 2
each("-1 inside", q, kb, vb, bad, lens)
bad = tables.clone(); bad[0, 1] = 6           # row 0 (6 tokens) reads its blocks 0 and 1
each("6 inside", q, kb, vb, bad, lens)
bad = tables.clone(); bad[0, 2] = 2 ** 62     # row 0 never reads its third entry: ignored
each("huge unused", q, kb, vb, bad, lens)
bad = tables.clone(); bad[0, 2] = -1
each("-1 unused", q, kb, vb, bad, lens)
each("strided views", q.transpose(0, 1).contiguous().transpose(0, 1), kb, vb, tables.t().contiguous().t(), lens)
meta = [t.to("meta") for t in (q, kb, vb)]
result["meta auto"] = outcome(lambda: pa.paged_attention(*meta, tables, lens).shape[0])
result["meta kernel"] = outcome(lambda: pa.paged_attention(*meta, tables, lens, impl="kernel").shape[0])
result["values on meta"] = outcome(lambda: pa.paged_attention(q, kb, vb.to("meta"), tables, lens).shape[0])
result["tables list"] = outcome(lambda: pa.paged_attention(q, kb, vb, tables.tolist(), lens).shape[0])
report(result)
'''


@needs_cc
def test_bad_input_is_rejected_by_name_before_c(tmp_path):
    r, stderr = run_child(BAD_INPUTS, child_env(tmp_path))
    expect = {"values float32": "TypeError: value_blocks", "keys float32": "TypeError: key_blocks",
              "tables float": "TypeError: block_tables", "lens float": "TypeError: context_lens",
              "q int": "TypeError: q", "-1 inside": "ValueError: block_tables", "6 inside": "ValueError: block_tables"}
    for case, start in expect.items():
        for impl, got in r[case].items():
            assert got.startswith(start), (case, impl, got)
    for impl in ("auto", "kernel", "gather"):
        assert "[0, 5]" in r["-1 inside"][impl] and "[0, 5]" in r["6 inside"][impl]
        for case in ("huge unused", "-1 unused", "strided views"):
            got = r[case][impl]
            assert got.startswith("ok") and float(got.split()[1]) < 1e-10, (case, impl, got)
    assert r["meta auto"] == "ok 2", r["meta auto"]           # off the CPU: the readable path, never C
    assert r["meta kernel"].startswith("RuntimeError") and "CPU" in r["meta kernel"]
    assert r["values on meta"].startswith("ValueError: value_blocks")
    assert r["tables list"].startswith("TypeError: block_tables")
    notices = [line for line in stderr.splitlines() if NOTICE in line]
    assert len(notices) == 1 and "meta" in notices[0], stderr
