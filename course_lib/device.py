"""Pick a device, say what it is, time work on it honestly, and seed everything.

The course runs on a laptop CPU and scales to a GPU without code changes:
every notebook asks `get_device()` instead of writing "cuda".
"""

from __future__ import annotations

import os
import platform
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from course_lib.validate import BadType, check_int, show

_VALID = ("cuda", "mps", "cpu")


def get_device(prefer: str | None = None) -> torch.device:
    """Return the best available device: cuda > mps > cpu.

    `prefer` (or the environment variable COURSE_DEVICE) overrides the choice,
    e.g. COURSE_DEVICE=cpu on a GPU machine to compare the two.
    """
    if prefer is not None and not isinstance(prefer, str):
        raise BadType(f"device: must be one of {', '.join(_VALID)} or None; got {show(prefer)}")
    choice = prefer or os.environ.get("COURSE_DEVICE")
    if choice:
        choice = choice.lower()
        if choice not in _VALID:
            raise ValueError(f"device: must be one of {', '.join(_VALID)}; got {choice!r}")
        if choice == "cuda" and not torch.cuda.is_available():
            raise ValueError("device: 'cuda' was asked for but no CUDA GPU is visible")
        if choice == "mps" and not torch.backends.mps.is_available():
            raise ValueError("device: 'mps' was asked for but MPS is not available")
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def check_device(device, name: str = "device") -> torch.device:
    """`device` (a torch.device or a name such as 'cpu', 'cuda:0') as a torch.device that
    really exists here; otherwise a one-line ValueError naming `name` (never the bare
    AssertionError torch raises when a tensor is put on a GPU that is not there)."""
    if not isinstance(device, (str, torch.device)):
        raise BadType(f"{name}: must be a torch.device or one of {', '.join(_VALID)}; got {show(device)}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"{name}: must be a torch.device or one of {', '.join(_VALID)}; got {show(device)}") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{name}: {str(device)!r} was asked for but no CUDA GPU is visible (use 'cpu')")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"{name}: {str(device)!r} was asked for but only {count} CUDA GPU(s) are visible")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}: {str(device)!r} was asked for but MPS is not available (use 'cpu')")
    elif dev.type not in _VALID:
        raise ValueError(f"{name}: must be one of {', '.join(_VALID)}; got {str(device)!r}")
    return dev


def memory_bytes(device: torch.device | str | None = None) -> int | None:
    """Total memory of `device` in bytes (the GPU's, or the machine's RAM for the CPU); None if unknown."""
    dev = torch.device(device or "cpu")
    try:
        if dev.type == "cuda":
            return torch.cuda.get_device_properties(dev.index or 0).total_memory
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError, RuntimeError):
        return None


def check_fits(name: str, value, nbytes: int, device: torch.device | str | None = None, what: str = "") -> None:
    """Raise a ValueError naming `name` when an allocation of `nbytes` can never fit in the
    device's memory (before torch tries, and fails with an allocator error)."""
    total = memory_bytes(device)
    if total is not None and nbytes > total:
        dev = torch.device(device or "cpu").type
        raise ValueError(f"{name}: {value!r} needs {nbytes / 2**30:.3g} GiB{' for ' + what if what else ''}; "
                         f"the {dev} has {total / 2**30:.3g} GiB in all")


def default_dtype(device: torch.device | None = None) -> torch.dtype:
    """fp32 everywhere: the course compares kernels to 1e-5, which needs fp32."""
    return torch.float32


def device_name(device: torch.device | None = None) -> str:
    """A human name for the device ("NVIDIA H100 (79 GiB, compute capability 9.0)", "Apple MPS",
    "CPU (x86_64, 2 threads)")."""
    device = device or get_device()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB, compute capability {props.major}.{props.minor})"
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def banner(device: torch.device | None = None, dtype: torch.dtype | None = None) -> str:
    """One line naming the device and dtype, printed at the top of every notebook."""
    device = device or get_device()
    dtype = dtype or default_dtype(device)
    return f"course_lib on {device.type}: {device_name(device)} | dtype {str(dtype).replace('torch.', '')} | torch {torch.__version__}"


def synchronize(device: torch.device | None = None) -> None:
    """Wait until queued GPU work is done; a no-op on the CPU.

    GPU calls return before the work finishes, so a timer must sync first
    or it measures only how long it took to *queue* the work.
    """
    device = device or get_device()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass
class Timer:
    """Wall-clock timer that synchronises the device before reading the clock.

    >>> with Timer() as t:
    ...     y = x @ x
    >>> t.ms
    """

    device: torch.device | None = None
    seconds: float = 0.0
    _start: float = field(default=0.0, repr=False)

    def __enter__(self) -> "Timer":
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._start

    @property
    def ms(self) -> float:
        return self.seconds * 1e3


def time_fn(fn, *args, repeat: int = 5, warmup: int = 1, device: torch.device | None = None, **kwargs) -> float:
    """Median seconds of `fn(*args, **kwargs)` over `repeat` synced runs (after `warmup`)."""
    check_int("repeat", repeat, 1)
    check_int("warmup", warmup, 0)
    for _ in range(warmup):
        fn(*args, **kwargs)
    times = []
    for _ in range(repeat):
        with Timer(device) as t:
            fn(*args, **kwargs)
        times.append(t.seconds)
    times.sort()
    return times[len(times) // 2]


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one contender over several rounds, in the order they ran.

    `str(t)` reads "12.3 ms (11.9-13.0 over 5 rounds)": the median and the spread (min-max).
    """

    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        s = sorted(self.seconds)
        n = len(s)
        return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2

    @property
    def ms(self) -> float:
        """The median, in milliseconds."""
        return 1e3 * self.median

    @property
    def lo_ms(self) -> float:
        return 1e3 * min(self.seconds)

    @property
    def hi_ms(self) -> float:
        return 1e3 * max(self.seconds)

    def ratio(self, other: "Timing") -> tuple[float, float, float]:
        """self / other, round by round (both ran in the same rounds): (median, min, max)."""
        r = sorted(a / b for a, b in zip(self.seconds, other.seconds))
        n = len(r)
        mid = r[n // 2] if n % 2 else (r[n // 2 - 1] + r[n // 2]) / 2
        return mid, r[0], r[-1]

    def __str__(self) -> str:
        return f"{self.ms:.3g} ms ({self.lo_ms:.3g}-{self.hi_ms:.3g} over {len(self.seconds)} rounds)"


def time_interleaved(contenders: dict, rounds: int = 5, warmup: int = 1,
                     device: torch.device | None = None, threads: int | None = None,
                     number: int = 1) -> dict[str, Timing]:
    """Time every contender (name -> zero-argument callable) once per round, round after
    round, so that a busy machine's load falls on all of them alike; the device is synced
    around every call. `threads`: torch's CPU thread count while timing (None: leave it;
    1 on a shared CPU, where threads waiting for each other can turn a 50 us call into
    milliseconds). `number`: calls per round, timed together (a sample of one 50 us call is at
    the mercy of the OS scheduler; of 20, much less). Returns name -> Timing: seconds per call,
    median and spread over the rounds."""
    if not isinstance(contenders, dict) or not contenders:
        raise ValueError(f"contenders: must be a non-empty dict of name -> callable; got {contenders!r}")
    for name, fn in contenders.items():
        if not callable(fn):
            raise ValueError(f"contenders[{name!r}]: must be callable; got {fn!r}")
    check_int("rounds", rounds, 1, 1000)
    check_int("warmup", warmup, 0, 100)
    check_int("threads", threads, 1, 1024, none_ok=True)
    check_int("number", number, 1, 100_000)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        for fn in contenders.values():
            for _ in range(warmup):
                fn()
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(rounds):
            for name, fn in contenders.items():
                with Timer(device) as t:
                    for _ in range(number):
                        fn()
                times[name].append(t.seconds / number)
    finally:
        torch.set_num_threads(before)
    return {name: Timing(tuple(ts)) for name, ts in times.items()}


def seed_everything(seed: int = 0) -> None:
    """Seed Python, torch (all devices) and numpy if present, for reproducible runs."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass


@contextmanager
def timed(label: str, device: torch.device | None = None):
    """`with timed("prefill"): ...` prints `prefill: 12.3 ms` (synced)."""
    with Timer(device) as t:
        yield t
    print(f"{label}: {t.ms:.1f} ms")


# ---- sizes that follow the device -------------------------------------------------------------
@dataclass(frozen=True)
class SizeProfile:
    """How big the lessons' live experiments are on one kind of device: `profile()` picks one.

    The CPU sizes are the ones the lessons are written with (each lesson runs top to bottom in
    about a minute on two cores). The GPU sizes are larger, so that a GPU's timings measure
    work rather than kernel-launch overhead. Each field names the lesson and the call it sizes
    (with its CPU value, which a lesson on the CPU keeps unchanged).
    """

    name: str                              # "cpu" or "gpu"
    padding_sequences: int = 32            # 01: the lengths given to measure_attention_costs
    bucketing_sequences: int = 64          # 01: sequences run through TinyLM, arrival order vs bucketed
    bucketing_batch: int = 8               # 01: the batch size of that comparison
    batching_requests: int = 24            # 03: sharegpt_like(n=...) for static vs continuous batching
    stream_requests: int = 20              # 03: sharegpt_like(n=...) for the arrival stream
    decode_batch: int = 32                 # 04: random_decode_problem(batch=...) for the decode timing
    decode_context: int = 1024             # 04: random_decode_problem(context=...)
    decode_heads: tuple[int, int, int] = (4, 2, 32)   # 04: (num_heads, num_kv_heads, head_dim) of that problem
    timing_repeat: int = 15                # 04: time_contenders(repeat=...)
    prefix_requests: int = 12              # 05: make_trace("alpaca", n=...) for prefix caching
    eviction_requests: int = 60            # 05: make_trace("alpaca", n=...) for eviction under a small pool
    documents: tuple[int, int] = (16, 4)   # 06: documents_trace(n_chat=..., n_docs=...)

    def __str__(self) -> str:
        return f"{self.name} sizes"


CPU_PROFILE = SizeProfile("cpu")
GPU_PROFILE = SizeProfile("gpu", padding_sequences=128, bucketing_sequences=256, bucketing_batch=32,
                          batching_requests=96, stream_requests=80, decode_batch=64, decode_context=4096,
                          decode_heads=(32, 8, 128), timing_repeat=30, prefix_requests=48, eviction_requests=240,
                          documents=(64, 16))
PROFILES = {"cpu": CPU_PROFILE, "gpu": GPU_PROFILE}


def profile(device: torch.device | str | None = None) -> SizeProfile:
    """The sizes for `device` (default: get_device()): GPU sizes on CUDA, CPU sizes elsewhere
    (Apple MPS included: it serves the readable paths). COURSE_PROFILE=cpu or gpu overrides the
    choice, e.g. to run a GPU with the CPU's sizes and compare the two.

    >>> p = profile(device)
    >>> problem = random_decode_problem(batch=p.decode_batch, context=p.decode_context, ...)
    """
    forced = os.environ.get("COURSE_PROFILE")
    if forced:
        if forced.lower() not in PROFILES:
            raise ValueError(f"COURSE_PROFILE: must be one of {', '.join(PROFILES)}; got {forced!r}")
        return PROFILES[forced.lower()]
    dev = check_device(device) if device is not None else get_device()
    return GPU_PROFILE if dev.type == "cuda" else CPU_PROFILE
