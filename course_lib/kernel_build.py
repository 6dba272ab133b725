"""Building and loading paged attention's C kernel: the plumbing behind course_lib.paged_attention.

Nothing here is needed to understand paged attention; it is what makes "compile a C file on
first use" safe on a learner's machine (several notebooks, threads and processes at once; a
full disk; a compiler that hangs or is missing). The kernel itself is paged_attention_kernel.c
next to this file, and course_lib.paged_attention calls it through `_load_kernel`.

    _load_kernel(scalar, is_double, head_dim, block_size, rep) -> ctypes function
        one shared library per shape, from memory, else from the disk cache, else built;
        raises RuntimeError saying why it cannot be had
    load_library(source_name, defines) -> ctypes.CDLL
        the same for the package's other C files (fused_ops.c: course_lib.fused_ops)
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import math
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from importlib import resources

CACHE_ENV = "COURSE_KERNEL_CACHE"                  # folder for compiled kernels (default: the temp folder)
TIMEOUT_ENV = "COURSE_KERNEL_COMPILE_TIMEOUT"      # seconds one build may take, every compiler call together
DEFAULT_COMPILE_TIMEOUT_S = 60.0
RETRY_AFTER_S = 60.0            # a failed build is tried again after this long (at once if the compiler changes)

KERNEL_SOURCE = "paged_attention_kernel.c"   # package data next to paged_attention.py


def read_source(name: str) -> str:
    """The text of the package's C file `name` ('' if the file is missing from this installation)."""
    try:
        return resources.files("course_lib").joinpath(name).read_text(encoding="utf-8")
    except (OSError, ModuleNotFoundError):
        return ""


PAGED_ATTENTION_C = read_source(KERNEL_SOURCE)      # print(PAGED_ATTENTION_C) shows the kernel


# ---- building and loading the C kernel (plumbing, safe under threads and processes) --------------
#
# One shared library per shape (dtype, head_dim, block_size, heads per kv head), cached on disk in
# $COURSE_KERNEL_CACHE (default: <temp folder>/course_lib_kernels_<uid>) under a name hashed from
# the source, the compiler, the machine, its C library, its CPU (what -march=native means here:
# _native_target) and the shape.
# What can go wrong, and what guards it:
#
#   two builders at once        a threading.Lock in the process, an fcntl lock file across processes;
#                               each build in its own fresh folder (mkdtemp), moved into place with
#                               os.replace, so nobody ever sees half a file
#   a cached file that is       a .sha256 sidecar, written only after a build succeeded, is checked
#   empty, truncated, garbage   before every load: a bad file is rebuilt, never mapped into memory
#                               (mapping a truncated library kills the process with SIGBUS)
#   a compiler that hangs       $COURSE_KERNEL_COMPILE_TIMEOUT seconds (default 60) for one build;
#                               then the compiler and everything it started are killed
#   a cache folder shared by    the key holds the CPU model and instruction sets the library was
#   machines with other CPUs    built for, so each CPU gets its own (never an illegal instruction)
#   a failure                   remembered per shape for RETRY_AFTER_S, or until the compiler that
#                               would be used changes; then tried again: it never disables the kernel
#                               for good
_kernels: dict[tuple, object] = {}               # shape (or source and defines) -> loaded C function (or library)
_failures: dict[tuple, tuple] = {}               # the same keys -> (monotonic time, environment, message)
_build_lock = threading.Lock()


def _cache_dir() -> str:
    """The folder of compiled kernels, created if needed (only its owner may write to the default one)."""
    path = os.environ.get(CACHE_ENV)
    if path:
        os.makedirs(path, exist_ok=True)
        return path
    uid = os.getuid() if hasattr(os, "getuid") else 0
    path = os.path.join(tempfile.gettempdir(), f"course_lib_kernels_{uid}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    if hasattr(os, "getuid") and os.stat(path).st_uid != uid:      # a shared /tmp: trust only our own folder
        raise RuntimeError(f"the kernel cache {path} belongs to another user; set {CACHE_ENV}")
    return path


def _compiler() -> str | None:
    """The C compiler to use: $CC if it names one, else gcc, cc or clang on the PATH."""
    for cc in (os.environ.get("CC"), "gcc", "cc", "clang"):
        if cc and shutil.which(cc):
            return shutil.which(cc)
    return None


def _compile_timeout() -> float:
    """Seconds one build may take: $COURSE_KERNEL_COMPILE_TIMEOUT, else 60."""
    raw = os.environ.get(TIMEOUT_ENV)
    if not raw:
        return DEFAULT_COMPILE_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise RuntimeError(f"{TIMEOUT_ENV}: must be a number of seconds > 0; got {raw!r}")
    return value


def _run_compiler(cmd: list[str], deadline: float) -> tuple[int, str]:
    """Run one compiler command until `deadline` (time.monotonic()); return (exit code, its output)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace",
                                start_new_session=True)        # its own process group, to kill it whole
    except OSError as exc:
        raise RuntimeError(f"could not run the C compiler {cmd[0]}: {exc}") from exc
    with proc:
        try:
            output, _ = proc.communicate(timeout=remaining)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)          # the driver and the cc1/as/ld it started
            except (AttributeError, OSError):
                proc.kill()
            proc.wait()
            raise TimeoutError from None
    return proc.returncode, output


def _arch_flags() -> list[str]:
    """Tune for this machine's own CPU: the library is built where it runs (and cached per CPU, see
    _native_target), so it may use every vector instruction this CPU has."""
    return ["-march=native"] if platform.machine() in ("x86_64", "AMD64") else ["-mcpu=native"]


_targets: dict[str, str] = {}                    # compiler -> what -march=native means on this machine


def _native_target(cc: str, deadline: float) -> str:
    """What `-march=native` (or -mcpu=native) expands to with this compiler on this machine: the
    CPU model and instruction sets it turns on (`cc -###` prints them). It is part of the cache key,
    so a cache folder shared between machines (a network home, a container image) never hands one
    machine a library built for another CPU, which could stop on an illegal instruction. Paths
    and temporary file names are left out, so the text depends only on the compiler and the CPU."""
    if cc not in _targets:
        code, output = _run_compiler([cc, "-###", *_arch_flags(), "-c", "-x", "c", os.devnull, "-o", os.devnull],
                                     deadline)
        words = [w.strip('"\'') for w in output.split()]
        _targets[cc] = f"{code} " + " ".join(w for w in words if w and "/" not in w and "\\" not in w)
    return _targets[cc]


def _compile(cc: str, src: str, obj: str, lib: str, defines: list[str], threads: bool, deadline: float) -> None:
    """Compile and link in two steps: -ffast-math (vectorised exp) only at compile time,
    so the linker does not add crtfastmath.o (which would flush denormals process-wide).
    threads: helper threads (pthreads) and `#pragma omp simd` (-fopenmp-simd: the pragmas only,
    no OpenMP runtime); without them the kernel runs on the calling thread.
    Raises RuntimeError (the compiler's last line of complaint) or TimeoutError."""
    par = ["-pthread", "-fopenmp-simd"] if threads else ["-DUSE_THREADS=0"]
    link = ["-pthread"] if threads else []
    common = ["-O3", "-fPIC", *par, *defines]
    arch = _arch_flags()
    for flags in (arch + ["-mprefer-vector-width=512"], arch, []):
        code, output = _run_compiler([cc, "-c", *common, *flags, "-ffast-math", src, "-o", obj], deadline)
        if code == 0:
            break
    else:
        raise RuntimeError(output.strip().splitlines()[-1] if output.strip() else "compile failed")
    code, output = _run_compiler([cc, "-shared", *link, obj, "-o", lib, "-lm"], deadline)
    if code != 0:
        raise RuntimeError(output.strip().splitlines()[-1] if output.strip() else "link failed")


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _is_intact(lib: str) -> bool:
    """Is `lib` exactly the file a finished build wrote? (Its sha256 is in lib + '.sha256'.)"""
    try:
        with open(lib + ".sha256", encoding="ascii") as f:
            expected = f.read().strip()
        return os.path.getsize(lib) > 0 and _sha256(lib) == expected
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _file_lock(path: str, deadline: float):
    """Hold an exclusive lock on the file `path` (other processes wait); give up at `deadline`."""
    try:
        import fcntl
    except ImportError:             # no fcntl (Windows): builds still never collide (own folder, os.replace)
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"timed out waiting for another process to finish building {path[:-5]}")
                time.sleep(0.02)
            except OSError:         # a file system without locks: builds still never collide (see above)
                break
        yield
    finally:
        os.close(fd)                # closing the file releases the lock


def _build(cc: str, source: str, stem: str, defines: list[str], lib: str, deadline: float) -> None:
    """Compile `source` (C text) into `lib` (then its sha256 sidecar), in a folder of this build's own."""
    folder = tempfile.mkdtemp(prefix=".build-", dir=os.path.dirname(lib))   # unique per thread and process
    try:
        src, obj, so = (os.path.join(folder, f"{stem}{ext}") for ext in (".c", ".o", ".so"))
        with open(src, "w", encoding="utf-8") as f:
            f.write(source)
        try:
            _compile(cc, src, obj, so, defines, threads=True, deadline=deadline)
        except RuntimeError:
            _compile(cc, src, obj, so, defines, threads=False, deadline=deadline)   # e.g. no pthreads
        digest = _sha256(so)
        with contextlib.suppress(FileNotFoundError):
            os.remove(lib + ".sha256")                 # no sidecar while the library changes
        os.replace(so, lib)                            # atomic: nobody ever loads half a file
        with open(os.path.join(folder, "sha256"), "w", encoding="ascii") as f:
            f.write(digest + "\n")
        os.replace(os.path.join(folder, "sha256"), lib + ".sha256")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _too_slow(timeout: float) -> RuntimeError:
    return RuntimeError(f"the C compiler took longer than {timeout:g} s (set {TIMEOUT_ENV} to allow more)")


def _build_and_load_library(source_name: str, defines: list[str]) -> ctypes.CDLL:
    """Find the library built from the package's C file `source_name` with `defines` in the cache
    (rebuilding a missing or bad one) and load it."""
    source = PAGED_ATTENTION_C if source_name == KERNEL_SOURCE else read_source(source_name)
    if not source:
        raise RuntimeError(f"the kernel source {source_name} is missing from this installation of course_lib")
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    timeout = _compile_timeout()
    try:
        target = _native_target(cc, deadline=time.monotonic() + timeout)
    except TimeoutError:
        raise _too_slow(timeout) from None
    # the machine's name and C library too: a library built against a newer glibc would not load on an older one
    ident = "\0".join([source, cc, platform.node(), platform.machine(), " ".join(platform.libc_ver()),
                       target, *defines])
    stem = source_name.removesuffix(".c")
    lib = os.path.join(_cache_dir(), f"{stem}_{hashlib.sha256(ident.encode()).hexdigest()[:16]}.so")
    with _file_lock(lib + ".lock", deadline=time.monotonic() + timeout):
        if not _is_intact(lib):
            try:
                _build(cc, source, stem, defines, lib, deadline=time.monotonic() + timeout)
            except TimeoutError:
                raise _too_slow(timeout) from None
        try:                        # loaded while we hold the lock: nobody can replace it meanwhile
            return ctypes.CDLL(lib)
        except OSError as exc:
            raise RuntimeError(f"could not load {lib}: {exc}") from exc


def _build_and_load(scalar: str, is_double: int, head_dim: int, block_size: int, rep: int):
    """Paged attention's C function for one shape (built or found in the cache, then loaded)."""
    defines = [f"-DSCALAR={scalar}", f"-DIS_DOUBLE={is_double}", f"-DHD={head_dim}", f"-DBS={block_size}",
               f"-DREP={rep}"]
    try:
        fn = _build_and_load_library(KERNEL_SOURCE, defines).paged_attention
    except AttributeError as exc:
        raise RuntimeError(f"the kernel library has no paged_attention function: {exc}") from exc
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_int64] * 5 + [ctypes.c_double, ctypes.c_int]
    return fn


def _remembered(key: tuple, make):
    """make() once per key, kept in memory; a failure is remembered per key for RETRY_AFTER_S (or
    until the compiler or the cache settings change) and raised again as RuntimeError meanwhile."""
    found = _kernels.get(key)
    if found is not None:
        return found
    environment = (_compiler(), os.environ.get(CACHE_ENV), os.environ.get(TIMEOUT_ENV))
    with _build_lock:               # one build at a time in this process
        if key in _kernels:         # another thread built it while we waited
            return _kernels[key]
        failed = _failures.get(key)
        if failed and failed[1] == environment and time.monotonic() - failed[0] < RETRY_AFTER_S:
            raise RuntimeError(failed[2])
        try:
            found = make()
        except Exception as exc:    # whatever went wrong, the caller gets a RuntimeError saying what
            _failures[key] = (time.monotonic(), environment, str(exc) or type(exc).__name__)
            raise RuntimeError(_failures[key][2]) from exc
        _failures.pop(key, None)
        _kernels[key] = found
        return found


def _load_kernel(scalar: str, is_double: int, head_dim: int, block_size: int, rep: int):
    """Paged attention's C function for one shape: from memory, else built or read from the disk cache.
    Raises RuntimeError saying why it cannot be had (a failure is remembered; see above)."""
    shape = (scalar, is_double, head_dim, block_size, rep)
    return _remembered(shape, lambda: _build_and_load(*shape))


def load_library(source_name: str, defines: tuple[str, ...]) -> ctypes.CDLL:
    """Any other C file of the package (e.g. fused_ops.c), built with `defines`: from memory, else
    built or read from the disk cache. Raises RuntimeError saying why it cannot be had."""
    return _remembered((source_name, *defines), lambda: _build_and_load_library(source_name, list(defines)))


def _forget_kernels() -> None:
    """Forget loaded kernels and remembered failures (tests; the disk cache stays)."""
    with _build_lock:
        _kernels.clear()
        _failures.clear()


_load_kernel.cache_clear = _forget_kernels      # the name an lru_cache would have
