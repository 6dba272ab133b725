"""What every benchmark shares: result records, honest timers, the bandwidth probe, the report.

A benchmark returns a `BenchResult`: the machine it ran on (`environment`),
the sizes it used, one or more `Table`s of figures, the `Target`s of issue 8
it checks (reported, never asserted), every ratio it measured, and plotly
figures. `__main__` turns a list of them into one Markdown report, one
offline HTML page of charts and one JSON file.

Measuring on a shared, noisy machine (a laptop, two CPU cores that other
work also uses) follows three rules here:

    interleave   contenders run round after round, one call each per round,
                 so a burst of background load hits all of them alike;
    spread       every figure is the median of at least ROUNDS (5) rounds, printed
                 with its min and max (`Spread`, shown "median [min–max]");
    ratios       what the report compares are ratios measured in the same run:
                 one ratio per round (A's round i over B's round i), then their
                 median, min and max. A target is met only when the WORSE end of
                 that spread meets it (`Target.low`/`high`), so one lucky round
                 cannot carry a claim.

The memory-bandwidth limit is measured in the same run too (`copy_bandwidth`):
one large tensor copy, several times bigger than the last-level cache, so it
streams from DRAM (or HBM). Like the STREAM benchmark's "Copy", it counts the
bytes read plus the bytes written.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from course_lib.device import device_name, get_device, synchronize

MIB = 1 << 20


# ---- the machine ----------------------------------------------------------------
def _version(module: str) -> str:
    try:
        mod = __import__(module)
        return str(getattr(mod, "__version__", "?"))
    except ImportError:
        return "not installed"


def last_level_cache_bytes(device: torch.device | None = None) -> int | None:
    """The largest cache in front of memory: a GPU's L2, or a CPU's L3 (L2 if it has none)."""
    device = device or get_device()
    if device.type == "cuda":
        return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0)) or None
    best = None
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in sorted(os.listdir(base)):
            try:
                with open(os.path.join(base, entry, "size")) as f:
                    text = f.read().strip()
                with open(os.path.join(base, entry, "type")) as f:
                    if f.read().strip() == "Instruction":
                        continue
            except OSError:
                continue
            unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            size = int(text.rstrip("KMG")) * unit
            best = max(best or 0, size)
    except OSError:
        return None
    return best


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(os.path.abspath(__file__)))
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def environment(device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Everything a reader needs to know about where the figures came from."""
    device = device or get_device()
    llc = last_level_cache_bytes(device)
    env = {
        "device": device_name(device),
        "device_type": device.type,
        "dtype": str(dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "transformers": _version("transformers"),
        "plotly": _version("plotly"),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "last_level_cache_MiB": round(llc / MIB, 1) if llc else None,
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "git": git_commit(),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    return env


def env_line(env: dict) -> str:
    """One line naming the machine (for the top of a report)."""
    threads = f"{env['torch_threads']} torch thread(s), OMP_NUM_THREADS={env['OMP_NUM_THREADS']}"
    llc = f", LLC {env['last_level_cache_MiB']} MiB" if env.get("last_level_cache_MiB") else ""
    load = f", load {env['load_average_1min']} at start" if env.get("load_average_1min") is not None else ""
    return (f"{env['device']} ({env['cpu']}, {env['cpu_cores']} cores{llc}; {threads}{load}) | {env['dtype']} | "
            f"torch {env['torch']}, python {env['python']}, numpy {env['numpy']}, transformers {env['transformers']}, "
            f"plotly {env['plotly']} | git {env['git']} | {env['date']}")


# ---- timing -----------------------------------------------------------------------
def time_interleaved(contenders: dict[str, Callable[[], Any]], repeat: int = 10, warmup: int = 1,
                     device: torch.device | None = None, ordered: bool = False) -> dict[str, list[float]]:
    """Seconds per call of each contender, round by round (every contender once per round),
    synced on a GPU. Returns name -> the `repeat` times, sorted (fastest first), or in round
    order with ordered=True (to pair rounds: `Spread.ratio`)."""
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat: must be an integer >= 1; got {repeat!r}")
    device = device or get_device()
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
    return {name: (list(ts) if ordered else sorted(ts)) for name, ts in times.items()}


def median(xs: list[float]) -> float:
    """The middle value (for an even count, the mean of the two middle values)."""
    xs = sorted(xs)
    if not xs:
        return float("nan")
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


ROUNDS = 5          # at least this many interleaved rounds behind every timed figure of the full set


@dataclass(frozen=True)
class Spread:
    """A figure measured over several rounds: its median, min and max, and how many rounds."""

    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, xs) -> "Spread":
        xs = [float(x) for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
        if not xs:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        return cls(median(xs), min(xs), max(xs), len(xs))

    @classmethod
    def ratio(cls, num, den) -> "Spread":
        """Round-by-round ratios num[i] / den[i] (the rounds were interleaved, so round i of
        both saw the same load), summarised. Lists must be in round order, equally long."""
        if len(num) != len(den):
            raise ValueError(f"num, den: must hold one value per round each; got {len(num)} and {len(den)}")
        return cls.of([a / b for a, b in zip(num, den) if b])

    def scaled(self, k: float) -> "Spread":
        return Spread(self.median * k, self.min * k, self.max * k, self.n)

    def text(self, unit: str = "") -> str:
        """'1.23 [1.10–1.40]' (median [min–max]); one round: just the value."""
        if self.n <= 1:
            return f"{fmt(self.median)}{unit}"
        return f"{fmt(self.median)}{unit} [{fmt(self.min)}–{fmt(self.max)}]"

    def asdict(self) -> dict:
        return {"median": self.median, "min": self.min, "max": self.max, "n": self.n}


# ---- the bandwidth limit -----------------------------------------------------------
@dataclass
class Bandwidth:
    """A large copy dst.copy_(src): `bytes_per_s` counts bytes read + bytes written."""

    bytes_per_s: float
    nbytes: int                  # size of ONE buffer (the copy moves 2 x this)
    seconds: float               # fastest copy
    median_seconds: float
    repeat: int

    @property
    def gb_per_s(self) -> float:
        return self.bytes_per_s / 1e9


_BANDWIDTH: dict[tuple, Bandwidth] = {}


def probe_size(device: torch.device) -> int:
    """Buffer bytes for the probe: 4x the last-level cache, at least 256 MiB, at most 1 GiB
    (and at most an eighth of free memory), so the copy streams from memory, not cache."""
    llc = last_level_cache_bytes(device) or 32 * MIB
    size = min(max(4 * llc, 256 * MIB), 1024 * MIB)
    if device.type == "cpu" and hasattr(os, "sysconf"):
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            size = min(size, max(64 * MIB, avail // 8))
        except (ValueError, OSError):
            pass
    return int(size) // 4 * 4


def copy_probe(device: torch.device | None = None, nbytes: int | None = None) -> tuple[Callable[[], Any], int]:
    """(fn, bytes moved per call): fn copies one large buffer into another. Run it as one
    more contender among kernels to measure the limit under the very same load."""
    device = device or get_device()
    n = (nbytes or probe_size(device)) // 4
    src = torch.ones(n, dtype=torch.float32, device=device)           # (n,) touched, so pages exist
    dst = torch.empty_like(src)
    dst.copy_(src)                                                    # fault the destination's pages in
    return (lambda: dst.copy_(src)), 2 * n * 4


def copy_bandwidth(device: torch.device | None = None, nbytes: int | None = None, repeat: int = 5) -> Bandwidth:
    """Measure the memory-bandwidth limit with a large tensor copy (memoised per process,
    so every benchmark of one run compares against the same probe)."""
    device = device or get_device()
    nbytes = nbytes or probe_size(device)
    key = (str(device), nbytes, repeat)
    if key not in _BANDWIDTH:
        fn, moved = copy_probe(device, nbytes)
        times = time_interleaved({"copy": fn}, repeat=repeat, warmup=1, device=device)["copy"]
        _BANDWIDTH[key] = Bandwidth(moved / times[0], moved // 2, times[0], median(times), repeat)
        del fn
    return _BANDWIDTH[key]


# ---- records --------------------------------------------------------------------------
@dataclass
class Table:
    """Rows of figures; `columns` are keys of the rows, in display order."""

    title: str
    columns: list[str]
    rows: list[dict]
    note: str = ""

    def markdown(self) -> str:
        head = "| " + " | ".join(self.columns) + " |"

        def numeric(c):      # numbers align right, words left
            vals = [r.get(c) for r in self.rows if r.get(c) is not None]
            return bool(vals) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
        rule = "|" + "|".join("---:" if numeric(c) else ":---" for c in self.columns) + "|"
        body = ["| " + " | ".join(fmt(r.get(c)) for c in self.columns) + " |" for r in self.rows]
        text = [f"**{self.title}**", "", head, rule, *body]
        if self.note:
            text += ["", self.note]
        return "\n".join(text)


@dataclass
class Target:
    """A claim of issue 8, checked against a measured figure (reported, never asserted).

    kind '>=': met when measured >= goal;  kind 'near': met when |measured - goal| <= tolerance.
    limit: what limits the figure and what would close the gap (shown when it is missed).
    low, high: the spread over rounds (min, max) when the figure was measured more than once:
    then the WORSE end decides: '>=' needs low >= goal, 'near' needs both ends within tolerance.
    `measured` is the median. A figure that does not depend on timing (steps, slots) has no spread.
    """

    claim: str
    measured: float | None
    goal: float
    unit: str = "x"              # 'x' (a ratio), '%' (percent), '' (a fraction)
    kind: str = ">="
    tolerance: float = 0.0
    limit: str = ""
    source: str = ""
    low: float | None = None
    high: float | None = None
    rounds: int | None = None

    @classmethod
    def from_spread(cls, claim: str, spread: Spread, goal: float, **kw) -> "Target":
        return cls(claim, spread.median, goal, low=spread.min, high=spread.max, rounds=spread.n, **kw)

    @property
    def worse(self) -> float | None:
        """The end of the spread that is furthest from meeting the goal (the median if no spread)."""
        if self.measured is None or (isinstance(self.measured, float) and math.isnan(self.measured)):
            return None
        ends = [v for v in (self.low, self.high) if v is not None] or [self.measured]
        if self.kind == "near":
            return max(ends, key=lambda v: abs(v - self.goal))
        return min(ends)

    @property
    def met(self) -> bool | None:
        w = self.worse
        if w is None:
            return None
        if self.kind == "near":
            return abs(w - self.goal) <= self.tolerance
        return w >= self.goal

    def goal_text(self) -> str:
        if self.kind == "near":
            return f"{self.goal:g}{self.unit} ± {self.tolerance:g}"
        return f"≥ {self.goal:g}{self.unit}"

    def row(self) -> dict:
        verdict = {True: "✅ met", False: "❌ missed", None: "– not measured"}[self.met]
        if self.met is None:
            value, worse = "–", "–"
        elif self.low is not None and self.high is not None:
            value = f"{fmt(self.measured)}{self.unit} [{fmt(self.low)}–{fmt(self.high)}]"
            worse = f"{fmt(self.worse)}{self.unit}"
        else:
            value, worse = f"{fmt(self.measured)}{self.unit}", "(no spread: not timed)"
        return {"target": self.claim, "median [min–max]": value, "worse end": worse,
                "rounds": self.rounds if self.rounds else "–", "goal": self.goal_text(), "verdict": verdict,
                "what limits it / what would close it": self.limit if self.met is False else ""}


@dataclass
class BenchResult:
    name: str
    title: str
    env: dict
    sizes: dict
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)     # every ratio measured: name -> value
    notes: list[str] = field(default_factory=list)
    figures: list = field(default_factory=list)                 # plotly figures (not in the JSON)
    data: dict = field(default_factory=dict)                    # raw numbers for the JSON
    seconds: float = 0.0

    def markdown(self) -> str:
        sizes = "; ".join(f"{k} {v}" for k, v in self.sizes.items())
        out = [f"### {self.title}", "", f"*{self.env['device']}, {self.env['dtype']}, "
               f"{self.env['torch_threads']} thread(s); took {self.seconds:.1f} s. Sizes: {sizes}*", ""]
        for t in self.tables:
            out += [t.markdown(), ""]
        for n in self.notes:
            out += [f"- {n}"]
        return "\n".join(out).rstrip() + "\n"

    def to_json(self) -> dict:
        return {"name": self.name, "title": self.title, "env": self.env, "sizes": self.sizes,
                "seconds": self.seconds, "tables": [asdict(t) for t in self.tables],
                "targets": [{**asdict(t), "met": t.met} for t in self.targets],
                "ratios": self.ratios, "notes": self.notes, "data": self.data}


# ---- formatting ------------------------------------------------------------------------
def fmt(v) -> str:
    """Numbers for a table: 3 significant digits, thousands separators, '–' for nothing."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.3g}" if abs(v) >= 0.01 else f"{v:.2e}"
    return str(v)


def pct(x: float | None) -> float | None:
    """A fraction as percent (None stays None)."""
    return None if x is None else 100.0 * x


# ---- the report ---------------------------------------------------------------------------
def targets_table(results: list[BenchResult]) -> Table:
    rows = [t.row() for r in results for t in r.targets]
    return Table("Targets (reported, not asserted; met only when the worse end of the spread meets the goal)",
                 ["target", "median [min–max]", "worse end", "rounds", "goal", "verdict",
                  "what limits it / what would close it"], rows)


def stamp(env: dict, command: str) -> str:
    """The line that says where and when a report was made, and how its figures were taken."""
    return (f"Made by `{command}` on {env['date']} | machine: {env['cpu']}, "
            f"{env['cpu_cores']} cores ({env['device']}) | threads: {env['torch_threads']} torch, "
            f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']} | load average {env.get('load_average_1min')} at the start | "
            f"spread: median [min–max] over interleaved rounds (at least {ROUNDS} in the full set)")


def render_markdown(results: list[BenchResult], command: str, quick: bool) -> str:
    env = results[0].env if results else environment()
    out = ["## Benchmark results", "",
           f"`{command}` ({'quick set' if quick else 'full set'}), on **{env['device']}**.", "",
           stamp(env, command), "",
           f"Machine: {env_line(env)}", ""]
    if any(r.targets for r in results):
        out += [targets_table(results).markdown(), ""]
    for r in results:
        out += [r.markdown()]
    ratios = [(f"{r.name}: {k}", v) for r in results for k, v in r.ratios.items()]
    if ratios:
        out += ["### Every ratio measured in this run", ""]
        out += [f"- {k} = {fmt(v)}" for k, v in ratios]
        out += [""]
    return "\n".join(out)


def write_html(results: list[BenchResult], path: str, markdown_text: str) -> None:
    """One self-contained HTML page: the report's figures with plotly.js EMBEDDED once
    (from the installed plotly package; no CDN, works offline)."""
    import html

    parts, first = [], True
    for r in results:
        if not r.figures:
            continue
        parts.append(f"<h2>{html.escape(r.title)}</h2>")
        for fig in r.figures:
            parts.append(fig.to_html(full_html=False, include_plotlyjs=True if first else False))
            first = False
    body = "\n".join(parts) or "<p>(no charts in this run)</p>"
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Benchmarks</title>"
            f"<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}pre{{white-space:pre-wrap}}</style>"
            f"</head><body><h1>LLM serving course: benchmarks</h1>{body}"
            f"<h2>The table</h2><pre>{html.escape(markdown_text)}</pre></body></html>")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)


def write_json(results: list[BenchResult], path: str, extra: dict | None = None) -> None:
    doc = _clean({"results": [r.to_json() for r in results], **(extra or {})})
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, allow_nan=False)


def _clean(o):
    """Plain JSON: NaN and inf become null, tuples lists, tensors and odd keys plain values."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, (bool, int, str)) or o is None:
        return o
    if hasattr(o, "item"):
        return _clean(o.item())
    return str(o)


class NullProgress:
    """Stands in for a tqdm bar when none is wanted."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str, refresh: bool = True) -> None:
        pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
