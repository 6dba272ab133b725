"""Decode attention against the memory-bandwidth limit: contiguous, padded, paged (readable and fast).

    python -m benchmarks decode_attention [--quick]

One decode step: each of B sequences has ONE new query and L tokens of keys
and values to read. Reading those keys and values is nearly all the work
(one multiply-add per element read), so a decode kernel is judged by how
close its KV bytes per second come to the machine's memory bandwidth,
measured in the same run by a large tensor copy (benchmarks.common).

The same keys and values, four ways (TinyLM's attention shape: 4 query
heads, 2 key/value heads, head_dim 32, fp32; 16-token blocks):

    contiguous SDPA   a dense (B, nkv, L, hd) cache, as Hugging Face keeps it: one
                      scaled_dot_product_attention call (a key mask if lengths differ)
    padded batch      per-sequence (L_i, nkv, hd) tensors (an exact-size store):
                      every step stacks them into a padded batch + mask, then SDPA
                      (kv/contexts.py's BatchedDecodeContext)
    paged (readable)  blocks scattered in a pool; copy each sequence's blocks out,
                      then SDPA (course_lib.paged_attention.paged_attention_gather)
    paged (fast)      the kernel that reads every block where it lies: the C kernel on
                      the CPU (course_lib.paged_attention.paged_attention_kernel), the
                      Triton kernel on a GPU (paged_attention_triton)

Achieved KV bandwidth = bytes of the REAL keys and values (sum of the
sequences' lengths x nkv x hd x 2 x 4 bytes) / seconds per step. A kernel
that reads padding or copies blocks first gets no credit for those bytes.
The grid runs uniform lengths (every sequence holds L tokens); one extra
row at batch 32 gives the sequences mixed lengths (uniform in [L/4, L]).

The bandwidth targets (issue 18, item 3) are judged cache-cold at batch 32 and
1,024 tokens, for two head shapes (TinyLM's, and head_dim 128 with 8 kv heads
and 32 query heads, Llama-3-8B's attention) and with 1 and with 2 threads: four
rows, each against the copy interleaved with it round by round under the same
thread count (`measure_cold`), each printed as median [min-max] with the load
average of the machine while it ran.
"""

from __future__ import annotations

import math
import os
import time

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from benchmarks.common import (BenchResult, NullProgress, Spread, Table, Target, copy_bandwidth, copy_probe,
                               environment, fmt, median, time_interleaved)
from course_lib.attention import sdpa_attention
from course_lib.device import get_device
from course_lib.paged_attention import (KernelCall, fast_impl, paged_attention_gather, paged_attention_kernel,
                                        paged_attention_triton, random_decode_problem, unavailable_reason)

NAME = "decode_attention"
TITLE = "Decode attention: KV bytes per second against the copy bandwidth"

# repeat: interleaved rounds per grid point; target_repeat: rounds at the target point (and its
# mixed-length and cache-cold variants), where more rounds make the best round robust to a noisy machine
FULL = dict(contexts=(128, 256, 512, 1024, 2048, 4096), batches=(1, 2, 4, 8, 16, 32, 64), repeat=10, target_repeat=30)
QUICK = dict(contexts=(256, 1024), batches=(4, 32), repeat=5, target_repeat=10)
TARGET_POINT = (32, 1024)                 # issue 8: batch 32, 1,024 tokens of context
SHAPE = dict(num_heads=4, num_kv_heads=2, head_dim=32, block_size=16)   # TinyLM's attention
LARGE_SHAPE = dict(num_heads=32, num_kv_heads=8, head_dim=128, block_size=16)   # Llama-3-8B's attention
# the bandwidth targets (issue 18): cache-cold at TARGET_POINT, each shape with each thread count
BANDWIDTH_SHAPES = (("TinyLM: 4 heads, 2 kv heads, head_dim 32", SHAPE),
                    ("32 heads, 8 kv heads, head_dim 128", LARGE_SHAPE))
BANDWIDTH_THREADS = (1, 2)
BANDWIDTH_GOAL = 0.6
KERNELS = ("contiguous SDPA", "padded batch", "paged (readable)", "paged (fast)")
PAPER_PAGED_OVERHEAD = "vLLM paper §7.1: its paged kernel costs 20-26 % more attention-kernel time than a contiguous one (GPU)"


def build_problem(batch: int, context: int, lengths: list[int] | None = None, device=None, seed: int = 0,
                  shape: dict | None = None) -> dict:
    """One decode step's inputs in every layout (the paged pool from course_lib.paged_attention).
    `shape`: num_heads, num_kv_heads, head_dim, block_size (default SHAPE, TinyLM's).

    returns q (B, nh, hd); k, v (B, nkv, L, hd) dense; key_blocks, value_blocks, block_tables,
    context_lens (the paged pool); per_seq: list of (k_i, v_i), each (L_i, nkv, hd);
    key_mask (B, 1, 1, L) or None when every sequence holds L tokens.
    """
    device = device or get_device()
    p = random_decode_problem(batch, context, seed=seed, **(shape or SHAPE))
    if lengths is not None:
        if len(lengths) != batch or not all(1 <= n <= context for n in lengths):
            raise ValueError(f"lengths: must be {batch} integers in [1, {context}]; got {lengths}")
        p["context_lens"] = torch.tensor(lengths, dtype=torch.long)           # the paged rows read only these
    p = {k: v.to(device) for k, v in p.items()}
    lens = p["context_lens"].tolist()
    p["per_seq"] = [(p["k"][i, :, :n].transpose(0, 1).contiguous(), p["v"][i, :, :n].transpose(0, 1).contiguous())
                    for i, n in enumerate(lens)]                              # each (L_i, nkv, hd)
    uniform = all(n == context for n in lens)
    p["key_mask"] = None if uniform else (torch.arange(context, device=device)[None, :]
                                          < p["context_lens"][:, None])[:, None, None, :]   # (B, 1, 1, L)
    p["lengths"] = lens
    return p


def kv_bytes(p: dict) -> int:
    """Bytes of the real keys and values one step must read."""
    _, nkv, _, hd = p["k"].shape
    return sum(p["lengths"]) * nkv * hd * 2 * p["k"].element_size()


def contenders(p: dict, threads: int | None = None) -> tuple[dict, dict]:
    """name -> no-argument function returning (B, nh, hd); and name -> why it cannot run.
    `threads`: the C kernel's thread count (None: it follows torch's)."""
    q4 = p["q"][:, :, None, :]                                                 # (B, nh, 1, hd)
    gqa = p["q"].shape[1] != p["k"].shape[1]

    def contiguous():
        mask = p["key_mask"]
        return F.scaled_dot_product_attention(q4, p["k"], p["v"], attn_mask=mask, enable_gqa=gqa)[:, :, 0]

    def padded():
        keys, values = zip(*p["per_seq"])
        K = pad_sequence(keys, batch_first=True).transpose(1, 2)              # (B, nkv, Lmax, hd) a copy
        V = pad_sequence(values, batch_first=True).transpose(1, 2)
        lengths = p["context_lens"]
        mask = (torch.arange(K.shape[2], device=K.device) < lengths[:, None])[:, None, None, :]  # (B, 1, 1, Lmax)
        return sdpa_attention(q4, K, V, mask)[:, :, 0]

    args = (p["q"], p["key_blocks"], p["value_blocks"], p["block_tables"], p["context_lens"])
    fns = {"contiguous SDPA": contiguous, "padded batch": padded,
           "paged (readable)": lambda: paged_attention_gather(*args)}
    skipped = {}
    impl = fast_impl(p["q"].device)                              # C on the CPU, Triton on a GPU
    reason = unavailable_reason(impl, p["q"], p["key_blocks"])
    if reason is None:
        if impl == "triton":
            fns["paged (fast)"] = lambda: paged_attention_triton(*args)
        else:
            fns["paged (fast)"] = lambda: paged_attention_kernel(*args, num_threads=threads)
    else:
        skipped["paged (fast)"] = reason
    return fns, skipped


def measure_point(batch: int, context: int, repeat: int, bandwidth, lengths=None, device=None) -> dict:
    """Time every kernel at one (batch, context); check they agree; return one record."""
    device = device or get_device()
    p = build_problem(batch, context, lengths, device)
    fns, skipped = contenders(p)
    ref = fns["contiguous SDPA"]()
    errors = {name: float((fn() - ref).abs().max()) for name, fn in fns.items()}
    times = time_interleaved(fns, repeat=repeat, warmup=1, device=device, ordered=True)
    nbytes = kv_bytes(p)
    rec = {"batch": batch, "context": context, "mixed": lengths is not None, "kv_bytes": nbytes,
           "mean_len": sum(p["lengths"]) / batch, "skipped": skipped, "max_abs_diff": errors, "kernels": {}}
    for name, ts in times.items():
        rec["kernels"][name] = {"best_s": min(ts), "median_s": median(ts), "rounds_s": ts,
                                "bytes_per_s": nbytes / median(ts),
                                "fraction_of_copy": nbytes / median(ts) / bandwidth.bytes_per_s}
    return rec


def cold_layers(layer_bytes: int, bandwidth) -> int:
    """How many layers a cache-cold step runs: enough that their KV together is at least the copy
    probe's buffer (probe_size: 4x the last-level cache, at least 256 MiB), at least 2."""
    return max(2, -(-bandwidth.nbytes // layer_bytes))


def measure_cold(batch: int, context: int, repeat: int, bandwidth, device=None, shape: dict | None = None,
                 threads: int | None = None) -> dict:
    """The step cache-cold, as in a real model: one decode step runs attention for every layer of
    a model whose layers keep their KV in pools of their own, and the layers' KV together is at
    least the copy probe's buffer (cold_layers). Each layer's KV was last read a whole step
    earlier, with several times the last-level cache read since, so it comes from memory. A
    round times the whole step (every layer) for contiguous SDPA and for the fast paged kernel
    (on the CPU its block tables checked once per step for all layers: `kernel_step`),
    with the copy probe before them and after them (the copy that opens the next round, one more
    after the last): each timing spans ~0.1 s or more, and the round's copy time is the mean of
    the two copies flanking its kernels (A-B-A), so a drift of the shared machine's speed weighs
    alike on kernel and copy; the fraction is taken round by round.
    `shape`: the attention shape (default SHAPE); `threads`: torch's and the kernel's thread
    count while it runs, the copy's too (None: leave the process setting)."""
    device = device or get_device()
    shape = dict(shape or SHAPE)
    layer_bytes = batch * context * shape["num_kv_heads"] * shape["head_dim"] * 2 * 4     # fp32 K and V
    n_layers = cold_layers(layer_bytes, bandwidth)
    layers = []
    for _ in range(n_layers):      # the same numbers in every layer's own pool, so one set of block tables
        p = random_decode_problem(batch, context, seed=0, device=device, **shape)      # serves all, as in a model
        p["key_mask"] = None                                  # every sequence holds `context` tokens
        layers.append(p)
    before_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    load_before = _load()
    try:
        per_layer = [contenders(p, threads)[0] for p in layers]
        names = [k for k in ("contiguous SDPA", "paged (fast)") if k in per_layer[0]]
        errors = {name: max(float((fns[name]() - fns["contiguous SDPA"]()).abs().max()) for fns in per_layer)
                  for name in names}
        step = {name: (lambda fs=tuple(fns[name] for fns in per_layer): [f() for f in fs]) for name in names}
        if "paged (fast)" in step and fast_impl(device) == "kernel":
            step["paged (fast)"] = lambda: kernel_step(layers, threads)
        copy_fn, moved = copy_probe(device, bandwidth.nbytes)
        times = time_interleaved({"copy probe": copy_fn, **step}, repeat=repeat, warmup=1, device=device,
                                 ordered=True)
        last_copy = time_interleaved({"copy probe": copy_fn}, repeat=1, warmup=0, device=device)["copy probe"]
    finally:
        torch.set_num_threads(before_threads)
    copies = times.pop("copy probe") + last_copy            # repeat + 1 copies: one before every round's kernels,
    copy_rounds = [(a + b) / 2 for a, b in zip(copies, copies[1:])]   # one after the last: each round's copy time is
    copy_bps = moved / median(copy_rounds)                  # the mean of the two that flank its kernels (A-B-A)
    nbytes = layer_bytes * n_layers
    rec = {"batch": batch, "context": context, "mixed": False, "cold": True, "kv_bytes": nbytes,
           "layers": n_layers, "layer_kv_bytes": layer_bytes,
           "mean_len": float(context), "skipped": {}, "max_abs_diff": errors, "kernels": {},
           "copy_bytes_per_s": copy_bps, "copy_rounds_s": copy_rounds, "copy_bytes": moved,
           "shape": shape, "threads": threads if threads is not None else before_threads,
           "load_average_1min": [load_before, _load()]}
    for name, ts in times.items():
        # fraction of the copy: round by round (kernel and copy of the same round), median of the rounds
        fr = Spread.ratio([nbytes / t for t in ts], [moved / t for t in copy_rounds])
        rec["kernels"][name] = {"best_s": min(ts), "median_s": median(ts), "rounds_s": ts,
                                "bytes_per_s": nbytes / median(ts), "fraction_of_copy": fr.median,
                                "fraction_of_copy_spread": fr.asdict()}
    return rec


def kernel_step(layers: list[dict], threads: int | None) -> list[torch.Tensor]:
    """The C kernel over every layer of one decode step, as the engine runs it (kv/paged.py's
    PagedStepContext): the block tables, shared by all layers, are checked and converted once
    per step (KernelCall), then each layer's call reads its own pool."""
    first = layers[0]
    call = KernelCall(first["q"], first["key_blocks"], first["value_blocks"], first["block_tables"],
                      first["context_lens"], num_threads=threads)
    return [call(p["q"], p["key_blocks"], p["value_blocks"]) for p in layers]          # each (B, nh, hd)


def _load() -> float | None:
    """The machine's 1-minute load average now (None where the OS does not say)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def measure_bandwidth_targets(repeat: int, bandwidth, device=None, progress=None) -> list[dict]:
    """The four bandwidth-target rows: cache-cold at TARGET_POINT, every BANDWIDTH_SHAPES shape
    with every BANDWIDTH_THREADS thread count (on a GPU: each shape once, threads do not apply)."""
    device = device or get_device()
    progress = progress or NullProgress()
    tb, tc = TARGET_POINT
    threads = BANDWIDTH_THREADS if device.type == "cpu" else (None,)
    out = []
    for label, shape in BANDWIDTH_SHAPES:
        for t in threads:
            progress.set_postfix_str(f"decode cache-cold, {label}, {t} thread(s)")
            rec = measure_cold(tb, tc, repeat, bandwidth, device, shape=shape, threads=t)
            rec["label"] = label
            out.append(rec)
    return out


def _fraction_spread(rec: dict, name: str = "paged (fast)") -> Spread | None:
    k = rec["kernels"].get(name)
    return Spread(**k["fraction_of_copy_spread"]) if k else None


def _bandwidth_row(rec: dict) -> dict:
    k = rec["kernels"]
    fast, sdpa = _fraction_spread(rec), _fraction_spread(rec, "contiguous SDPA")
    loads = [x for x in rec["load_average_1min"] if x is not None]
    return {"shape": rec["label"], "threads": rec["threads"], "layers": rec["layers"],
            "KV MiB per layer": rec["layer_kv_bytes"] / 2**20, "copy GB/s": rec["copy_bytes_per_s"] / 1e9,
            "paged (fast) µs per layer": 1e6 * k["paged (fast)"]["median_s"] / rec["layers"]
            if "paged (fast)" in k else None,
            "paged (fast) / copy BW": fast.text() if fast else None,
            "contiguous SDPA / copy BW": sdpa.text() if sdpa else None,
            "load (1 min)": " → ".join(fmt(x) for x in loads) if loads else None}


def _speed(rec: dict, name: str, base: str = "contiguous SDPA") -> float | None:
    k = rec["kernels"]
    return k[base]["median_s"] / k[name]["median_s"] if name in k and base in k else None


def _speed_spread(rec: dict, name: str, base: str = "contiguous SDPA") -> Spread | None:
    """base time / kernel time, round by round (both ran in the same round)."""
    k = rec["kernels"]
    return Spread.ratio(k[base]["rounds_s"], k[name]["rounds_s"]) if name in k and base in k else None


def _target(claim: str, spread: Spread | None, goal: float, **kw) -> Target:
    return Target(claim, None, goal, **kw) if spread is None else Target.from_spread(claim, spread, goal, **kw)


def _row(rec: dict) -> dict:
    k = rec["kernels"]
    context = f"mixed ≤ {rec['context']}" if rec["mixed"] else rec["context"]
    row = {"batch": rec["batch"], "context": context,
           "KV MiB": rec["kv_bytes"] / 2**20}
    for name in KERNELS:
        row[f"{name} µs"] = 1e6 * k[name]["median_s"] if name in k else None
    for name in KERNELS:
        row[f"{name} % of copy BW"] = 100 * k[name]["fraction_of_copy"] if name in k else None
    row["fast / SDPA speed"] = _speed(rec, "paged (fast)")
    row["readable / SDPA speed"] = _speed(rec, "paged (readable)")
    return row


def run(quick: bool = False, progress=None, device=None) -> BenchResult:
    t_start = time.perf_counter()
    device = device or get_device()
    progress = progress or NullProgress()
    cfg = QUICK if quick else FULL
    bw = copy_bandwidth(device)
    points = [(b, c) for c in cfg["contexts"] for b in cfg["batches"]]
    records = []
    for b, c in points:
        progress.set_postfix_str(f"decode B={b} L={c}")
        repeat = cfg["target_repeat"] if (b, c) == TARGET_POINT else cfg["repeat"]
        records.append(measure_point(b, c, repeat, bw, device=device))
        progress.update(1)
    # mixed lengths at the target batch: uniform in [L/4, L], seeded
    tb, tc = TARGET_POINT
    g = torch.Generator().manual_seed(1)
    mixed_lengths = torch.randint(tc // 4, tc + 1, (tb,), generator=g).tolist()
    progress.set_postfix_str("decode mixed lengths")
    mixed = measure_point(tb, tc, cfg["target_repeat"], bw, lengths=mixed_lengths, device=device)
    progress.update(1)
    env = environment(device)
    llc = env.get("last_level_cache_MiB")
    cold_rows = measure_bandwidth_targets(cfg["target_repeat"], bw, device, progress)
    progress.update(1)

    at = {(r["batch"], r["context"]): r for r in records}
    target = at[TARGET_POINT]
    # the table: the context sweep at batch 32 and the batch sweep at context 1024 (the grid is in the JSON)
    shown = [r for r in records if r["batch"] == tb] + [r for r in records if r["context"] == tc and r["batch"] != tb]
    cols = ["batch", "context", "KV MiB", *[f"{n} µs" for n in KERNELS], *[f"{n} % of copy BW" for n in KERNELS],
            "fast / SDPA speed", "readable / SDPA speed"]
    table = Table(f"Decode attention, median of {cfg['repeat']} interleaved rounds ({cfg['target_repeat']} at batch {tb}, "
                  f"context {tc}) (µs per step, one layer)", cols,
                  [_row(r) for r in shown] + [_row(mixed)],
                  note=(f"Copy bandwidth measured in this run: {bw.gb_per_s:.1f} GB/s (read + write of a "
                        f"{bw.nbytes / 2**20:.0f} MiB buffer). 'speed' = SDPA time / kernel time (> 1: faster than "
                        f"SDPA). 'mixed': sequences of mixed lengths, KV credited only for real tokens. "
                        f"{PAPER_PAGED_OVERHEAD}."))
    bw_table = Table(f"Bandwidth targets: batch {tb}, context {tc}, cache-cold, median [min–max] of "
                     f"{cfg['target_repeat']} interleaved rounds",
                     ["shape", "threads", "layers", "KV MiB per layer", "copy GB/s", "paged (fast) µs per layer",
                      "paged (fast) / copy BW",
                      "contiguous SDPA / copy BW", "load (1 min)"],
                     [_bandwidth_row(r) for r in cold_rows],
                     note=("A round times one decode step over `layers` layers, each with its KV in a pool of its "
                           "own, the layers' KV together at least the copy probe's buffer, so every layer's KV comes "
                           "from memory (as in a real model). A fraction is KV bytes/s over the copy's bytes/s (read + "
                           "write) in the same round, under the same thread count (the round's copy time: the mean of "
                           "the copy before its kernels and the one after them); median [min–max] over the rounds. "
                           "'load': the 1-minute load average before and after the row (a shared machine)."))
    speed = _speed_spread(target, "paged (fast)")
    in_cache = llc is not None and target["kv_bytes"] / 2**20 < llc
    targets = [
        _target("fast paged decode attention / contiguous SDPA throughput, batch 32, 1,024 context", speed, 0.8,
               limit=("the paged kernel walks a block table (one indirection per 16 tokens); SDPA reads one "
                      "contiguous run. Closing it: larger blocks (fewer indirections), fp16/bf16 KV (half the bytes)."),
               source="issue 8"),
    ]
    for rec in cold_rows:
        threads = f", {rec['threads']} thread{'s' if rec['threads'] != 1 else ''}" if device.type == "cpu" else ""
        targets.append(_target(
            f"fast paged decode attention, share of the measured copy bandwidth (batch 32, 1,024, cache-cold; "
            f"{rec['label']}{threads})", _fraction_spread(rec), BANDWIDTH_GOAL, unit="",
            limit=("the worse end is set by the rounds in which other work on the shared machine takes a core or "
                   "memory bandwidth while the kernel runs (the copies flanking it run a moment before and after); with 2 "
                   "threads the helper thread then waits for a core. The kernel reads each K/V byte once (one pass, "
                   "each K/V block shared by its query heads, a tile of blocks in flight at once, the next tile "
                   "prefetched where two fit in the caches); the block tables are checked once per step for all "
                   "layers, as the engine does. Closing the rest: a quiet machine; fp16/bf16 KV (half the bytes "
                   "per token)"),
            source="issue 18"))
    ratios = {}
    for r in [*records, mixed]:
        tag = f"B={r['batch']} L={r['context']}{' mixed' if r['mixed'] else ''}"
        for name in ("paged (fast)", "paged (readable)", "padded batch"):
            s = _speed(r, name)
            if s is not None:
                ratios[f"{name} / contiguous SDPA speed, {tag}"] = s
    for name in KERNELS:
        if name in target["kernels"]:
            ratios[f"{name} fraction of copy bandwidth, B=32 L=1024"] = target["kernels"][name]["fraction_of_copy"]
    for rec in cold_rows:
        tag = f"B=32 L=1024 cache-cold, {rec['label']}, {rec['threads']} thread(s)"
        for name, k in rec["kernels"].items():
            ratios[f"{name} fraction of copy bandwidth, {tag}"] = k["fraction_of_copy"]
        if _speed(rec, "paged (fast)") is not None:
            ratios[f"paged (fast) / contiguous SDPA speed, {tag}"] = _speed(rec, "paged (fast)")
    notes = [f"Copy bandwidth (this run): {bw.gb_per_s:.2f} GB/s, fastest of {bw.repeat} copies of "
             f"{bw.nbytes / 2**20:.0f} MiB (median {2 * bw.nbytes / bw.median_seconds / 1e9:.2f} GB/s).",
             f"Largest |difference| from contiguous SDPA over all points: "
             f"{max(max(r['max_abs_diff'].values()) for r in [*records, mixed, *cold_rows]):.1e}."]
    if in_cache:
        notes.append(f"At batch 32 and 1,024 tokens TinyLM's KV is {target['kv_bytes'] / 2**20:.1f} MiB: it fits in "
                     f"the {llc:.0f} MiB last-level cache, so a warm kernel can beat the DRAM copy (fraction > 1); "
                     f"the bandwidth targets are judged on the cache-cold rows.")
    for name, why in {**target["skipped"]}.items():
        notes.append(f"{name}: not run here ({why}).")
    res = BenchResult(NAME, TITLE, env, {
        "contexts": list(cfg["contexts"]), "batches": list(cfg["batches"]), **SHAPE, "repeat": cfg["repeat"],
        "repeat at the target point": cfg["target_repeat"],
        "mixed lengths": f"batch {tb}, uniform in [{tc // 4}, {tc}] (mean {mixed['mean_len']:.0f})",
        "bandwidth targets": "; ".join(label for label, _ in BANDWIDTH_SHAPES) + " x "
                             + ", ".join(f"{t} thread(s)" for t in BANDWIDTH_THREADS)},
        [table, bw_table], targets, ratios, notes,
        data={"bandwidth": vars(bw), "grid": records, "mixed": mixed, "cold": cold_rows})
    res.figures = figures(records, bw, cfg)
    res.seconds = time.perf_counter() - t_start
    return res


def figures(records, bw, cfg) -> list:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from plotly.colors import qualitative

    from course_lib.plots import style

    palette = qualitative.Plotly
    tb, tc = TARGET_POINT
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"batch {tb}, context doubling", f"context {tc}, batch doubling"))
    for i, name in enumerate(KERNELS):
        for col, (key, fixed, axis) in enumerate((("context", "batch", tb), ("batch", "context", tc)), start=1):
            pts = sorted((r[key], r["kernels"][name]["fraction_of_copy"]) for r in records
                         if r[fixed] == axis and name in r["kernels"])
            if pts:
                fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=name,
                                         legendgroup=name, showlegend=col == 1,
                                         line=dict(color=palette[i % len(palette)])), row=1, col=col)
    for col in (1, 2):
        fig.add_hline(y=1.0, line_dash="dot", annotation_text="copy bandwidth", row=1, col=col)
        fig.add_hline(y=BANDWIDTH_GOAL, line_dash="dash", line_color="gray", annotation_text=f"target {BANDWIDTH_GOAL}",
                      row=1, col=col)
        fig.update_xaxes(type="log", dtick=math.log10(2), row=1, col=col)
    fig.update_xaxes(title_text="context (tokens)", row=1, col=1)
    fig.update_xaxes(title_text="batch", row=1, col=2)
    fig.update_yaxes(title_text=f"KV bytes/s ÷ copy bandwidth ({bw.gb_per_s:.1f} GB/s)", row=1, col=1)
    style(fig, "Decode attention: achieved KV bandwidth as a share of a large copy", height=450)
    figs = [fig]
    if len(cfg["contexts"]) > 1 and len(cfg["batches"]) > 1 and all("paged (fast)" in r["kernels"] for r in records):
        z = [[_speed(next(r for r in records if r["batch"] == b and r["context"] == c), "paged (fast)")
              for c in cfg["contexts"]] for b in cfg["batches"]]
        heat = go.Figure(go.Heatmap(z=z, x=[str(c) for c in cfg["contexts"]], y=[str(b) for b in cfg["batches"]],
                                    colorscale="RdBu", zmid=1.0, colorbar=dict(title="fast / SDPA"),
                                    text=[[f"{v:.2f}" for v in row] for row in z], texttemplate="%{text}"))
        style(heat, "Fast paged kernel speed relative to contiguous SDPA (> 1: faster)", height=420)
        heat.update_layout(xaxis_title="context (tokens)", yaxis_title="batch")
        figs.append(heat)
    return figs


def units(quick: bool) -> int:
    cfg = QUICK if quick else FULL
    return len(cfg["contexts"]) * len(cfg["batches"]) + 2
