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
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from benchmarks.common import (BenchResult, NullProgress, Spread, Table, Target, copy_bandwidth, copy_probe,
                               environment, median, time_interleaved)
from course_lib.attention import sdpa_attention
from course_lib.device import get_device
from course_lib.paged_attention import (fast_impl, paged_attention_gather, paged_attention_kernel,
                                        paged_attention_triton, random_decode_problem, unavailable_reason)

NAME = "decode_attention"
TITLE = "Decode attention: KV bytes per second against the copy bandwidth"

# repeat: interleaved rounds per grid point; target_repeat: rounds at the target point (and its
# mixed-length and cache-cold variants), where more rounds make the best round robust to a noisy machine
FULL = dict(contexts=(128, 256, 512, 1024, 2048, 4096), batches=(1, 2, 4, 8, 16, 32, 64), repeat=10, target_repeat=30)
QUICK = dict(contexts=(256, 1024), batches=(4, 32), repeat=5, target_repeat=10)
TARGET_POINT = (32, 1024)                 # issue 8: batch 32, 1,024 tokens of context
SHAPE = dict(num_heads=4, num_kv_heads=2, head_dim=32, block_size=16)   # TinyLM's attention
KERNELS = ("contiguous SDPA", "padded batch", "paged (readable)", "paged (fast)")
PAPER_PAGED_OVERHEAD = "vLLM paper §7.1: its paged kernel costs 20-26 % more attention-kernel time than a contiguous one (GPU)"


def build_problem(batch: int, context: int, lengths: list[int] | None = None, device=None, seed: int = 0) -> dict:
    """One decode step's inputs in every layout (the paged pool from course_lib.paged_attention).

    returns q (B, nh, hd); k, v (B, nkv, L, hd) dense; key_blocks, value_blocks, block_tables,
    context_lens (the paged pool); per_seq: list of (k_i, v_i), each (L_i, nkv, hd);
    key_mask (B, 1, 1, L) or None when every sequence holds L tokens.
    """
    device = device or get_device()
    p = random_decode_problem(batch, context, seed=seed, **SHAPE)
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


def contenders(p: dict) -> tuple[dict, dict]:
    """name -> no-argument function returning (B, nh, hd); and name -> why it cannot run."""
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
        fast = paged_attention_triton if impl == "triton" else paged_attention_kernel
        fns["paged (fast)"] = lambda: fast(*args)
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


def measure_cold(batch: int, context: int, repeat: int, bandwidth, device=None) -> dict:
    """The same step, cache-cold: before every timed call the copy probe streams its buffers
    (several times the last-level cache) through the caches, so the step must fetch its KV
    from memory, as with a real model whose KV cache is gigabytes. Contiguous SDPA and the fast
    paged kernel only (the copying paths are far from the limit either way), interleaved with
    the copy probe itself, so kernels and limit are measured under the same load."""
    device = device or get_device()
    p = build_problem(batch, context, device=device)
    fns, _ = contenders(p)
    fns = {k: fns[k] for k in ("contiguous SDPA", "paged (fast)") if k in fns}
    copy_fn, moved = copy_probe(device, bandwidth.nbytes)
    timed = {**fns, "copy probe": copy_fn}
    times = time_interleaved(timed, repeat=repeat, warmup=1, device=device, before={k: copy_fn for k in fns},
                             ordered=True)
    copy_rounds = times.pop("copy probe")
    copy_bps = moved / median(copy_rounds)
    nbytes = kv_bytes(p)
    rec = {"batch": batch, "context": context, "mixed": False, "cold": True, "kv_bytes": nbytes,
           "mean_len": float(context), "skipped": {}, "max_abs_diff": {}, "kernels": {}, "copy_bytes_per_s": copy_bps,
           "copy_rounds_s": copy_rounds, "copy_bytes": moved}
    for name, ts in times.items():
        # fraction of the copy: round by round (kernel and copy of the same round), median of the rounds
        fr = Spread.ratio([nbytes / t for t in ts], [moved / t for t in copy_rounds])
        rec["kernels"][name] = {"best_s": min(ts), "median_s": median(ts), "rounds_s": ts,
                                "bytes_per_s": nbytes / median(ts), "fraction_of_copy": fr.median,
                                "fraction_of_copy_spread": fr.asdict()}
    del copy_fn
    return rec


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
    if rec.get("cold"):
        context = f"{rec['context']}, cache-cold"
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
    progress.set_postfix_str("decode cache-cold")
    cold = measure_cold(tb, tc, cfg["target_repeat"], bw, device)
    progress.update(1)

    at = {(r["batch"], r["context"]): r for r in records}
    target = at[TARGET_POINT]
    # the table: the context sweep at batch 32 and the batch sweep at context 1024 (the grid is in the JSON)
    shown = [r for r in records if r["batch"] == tb] + [r for r in records if r["context"] == tc and r["batch"] != tb]
    cols = ["batch", "context", "KV MiB", *[f"{n} µs" for n in KERNELS], *[f"{n} % of copy BW" for n in KERNELS],
            "fast / SDPA speed", "readable / SDPA speed"]
    table = Table(f"Decode attention, median of {cfg['repeat']} interleaved rounds ({cfg['target_repeat']} at batch {tb}, "
                  f"context {tc}) (µs per step, one layer)", cols,
                  [_row(r) for r in shown] + [_row(mixed), _row(cold)],
                  note=(f"Copy bandwidth measured in this run: {bw.gb_per_s:.1f} GB/s (read + write of a "
                        f"{bw.nbytes / 2**20:.0f} MiB buffer). 'speed' = SDPA time / kernel time (> 1: faster than "
                        f"SDPA). 'mixed': sequences of mixed lengths, KV credited only for real tokens. 'cache-cold': "
                        f"the caches are flushed (by the copy probe) before every timed step, so the KV streams from "
                        f"memory; its fractions are of the copy interleaved with it "
                        f"({cold['copy_bytes_per_s'] / 1e9:.1f} GB/s). "
                        f"{PAPER_PAGED_OVERHEAD}."))
    speed = _speed_spread(target, "paged (fast)")
    # judged cache-cold: the copy probe streams from memory, so the kernel must too
    fast_cold = cold["kernels"].get("paged (fast)")
    frac = Spread(**{k: fast_cold["fraction_of_copy_spread"][k] for k in ("median", "min", "max", "n")}) \
        if fast_cold else None
    in_cache = llc is not None and target["kv_bytes"] / 2**20 < llc
    targets = [
        _target("fast paged decode attention / contiguous SDPA throughput, batch 32, 1,024 context", speed, 0.8,
               limit=("the paged kernel walks a block table (one indirection per 16 tokens) and runs a softmax "
                      "pass between its two passes over the blocks; SDPA reads one contiguous run. Closing it: "
                      "larger blocks (fewer indirections), a single-pass online softmax, fp16/bf16 KV (half the bytes)."),
               source="issue 8"),
        _target("fast paged decode attention, share of the measured copy bandwidth (batch 32, 1,024, cache-cold)",
                frac, 0.6, unit="",
               limit=("at this size one decode step does ~1 multiply-add per byte-pair read and an exp per score; with "
                      "TinyLM's head_dim 32 and 2 kv heads the work items are short, so loop overhead, the exp pass "
                      "and thread start-up (OpenMP on a shared 2-core CPU) cost as much as the reads. Closing it: "
                      "fuse the softmax into the value pass (online softmax), vectorise exp, pin the threads, and "
                      "measure at larger head_dim/kv heads where reads dominate"),
               source="issue 8"),
    ]
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
    for name, k in cold["kernels"].items():
        ratios[f"{name} fraction of copy bandwidth, B=32 L=1024 cache-cold"] = k["fraction_of_copy"]
    if _speed(cold, "paged (fast)") is not None:
        ratios["paged (fast) / contiguous SDPA speed, B=32 L=1024 cache-cold"] = _speed(cold, "paged (fast)")
    notes = [f"Copy bandwidth (this run): {bw.gb_per_s:.2f} GB/s, fastest of {bw.repeat} copies of "
             f"{bw.nbytes / 2**20:.0f} MiB (median {2 * bw.nbytes / bw.median_seconds / 1e9:.2f} GB/s).",
             f"Largest |difference| from contiguous SDPA over all points: "
             f"{max(max(r['max_abs_diff'].values()) for r in [*records, mixed]):.1e}."]
    if in_cache:
        notes.append(f"At batch 32 and 1,024 tokens the KV is {target['kv_bytes'] / 2**20:.1f} MiB: it fits in the "
                     f"{llc:.0f} MiB last-level cache, so a warm kernel can beat the DRAM copy (fraction > 1); the "
                     f"bandwidth target is judged on the cache-cold row.")
    for name, why in {**target["skipped"]}.items():
        notes.append(f"{name}: not run here ({why}).")
    res = BenchResult(NAME, TITLE, env, {
        "contexts": list(cfg["contexts"]), "batches": list(cfg["batches"]), **SHAPE, "repeat": cfg["repeat"],
        "repeat at the target point": cfg["target_repeat"],
        "mixed lengths": f"batch {tb}, uniform in [{tc // 4}, {tc}] (mean {mixed['mean_len']:.0f})"},
        [table], targets, ratios, notes,
        data={"bandwidth": vars(bw), "grid": records, "mixed": mixed, "cold": cold})
    res.figures = figures(records, mixed, bw, cfg)
    res.seconds = time.perf_counter() - t_start
    return res


def figures(records, mixed, bw, cfg) -> list:
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
        fig.add_hline(y=0.6, line_dash="dash", line_color="gray", annotation_text="target 0.6", row=1, col=col)
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
