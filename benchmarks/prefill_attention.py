"""Prefill attention on mixed prompt lengths: padded vs packed, and the compute spent on padding.

    python -m benchmarks prefill_attention [--quick]

A batch of prompts whose lengths come from a ShareGPT-like or Alpaca-like
trace (course_lib.workloads) is prefilled three ways (TinyLM's attention
shape: 4 query heads, 2 key/value heads, head_dim 32, fp32):

    padded                  one (B, T_max) batch, left-padded, ONE SDPA call with a
                            padding-aware causal mask (course_lib.attention.sdpa_attention)
    packed (varlen)         no padding: the prompts side by side, attention per prompt
                            (course_lib.attention.packed_attention; Orca's selective batching)
    packed (one masked call) the packed tokens in ONE SDPA call with a block-diagonal
                            causal mask (course_lib.attention.packed_attention_masked):
                            no padding, but it scores every pair of the N tokens

"Compute on padding" counts causal (query, key) score pairs, as lesson 01
does (course_lib.padding.padding_stats): the share of the pairs a method
computes that involve a pad (padded) or two different prompts (one masked
call); token waste is the share of (B, T_max) slots holding a pad, which
is also the share of the projections and MLP spent on nothing.
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import BenchResult, NullProgress, Table, environment, median, time_interleaved
from course_lib.attention import pack, packed_attention, packed_attention_masked, padded_causal_mask, sdpa_attention
from course_lib.device import get_device
from course_lib.padding import padding_stats
from course_lib.workloads import alpaca_like, sharegpt_like

NAME = "prefill_attention"
TITLE = "Prefill attention: padded vs packed on mixed lengths"

SHAPE = dict(num_heads=4, num_kv_heads=2, head_dim=32)
# (trace, scale, batch sizes): the lengths are the prompts of the first `batch` requests of the trace
FULL = dict(cases=(("ShareGPT-like", 0.5, (8, 32)), ("Alpaca-like", 1.0, (8, 32))), repeat=10)
QUICK = dict(cases=(("ShareGPT-like", 0.25, (8,)), ("Alpaca-like", 1.0, (8,))), repeat=5)
MASKED_MAX_TOKENS = 4096                  # one masked call scores N x N pairs: skip it beyond this
METHODS = ("padded", "packed (varlen)", "packed (one masked call)")


def prompt_lengths(trace_name: str, batch: int, scale: float, seed: int = 0) -> list[int]:
    """Prompt lengths of the first `batch` requests of a seeded trace."""
    make = sharegpt_like if trace_name.startswith("ShareGPT") else alpaca_like
    return [r.prompt_len for r in make(n=batch, rate=float("inf"), seed=seed, scale=scale)]


def build(lengths: list[int], device=None, seed: int = 0) -> dict:
    """Random q, k, v for every prompt, packed (N, heads, hd) and left-padded (B, heads, T, hd)."""
    device = device or get_device()
    nh, nkv, hd = SHAPE["num_heads"], SHAPE["num_kv_heads"], SHAPE["head_dim"]
    g = torch.Generator().manual_seed(seed)
    qs = [torch.randn(n, nh, hd, generator=g) for n in lengths]                  # each (L_i, nh, hd)
    ks = [torch.randn(n, nkv, hd, generator=g) for n in lengths]
    vs = [torch.randn(n, nkv, hd, generator=g) for n in lengths]
    q, cu = pack(qs)                                                               # (N, nh, hd), (B+1,)
    k, _ = pack(ks)
    v, _ = pack(vs)
    B, T = len(lengths), max(lengths)
    Q = torch.zeros(B, nh, T, hd)
    K = torch.zeros(B, nkv, T, hd)
    V = torch.zeros(B, nkv, T, hd)
    key_mask = torch.zeros(B, T, dtype=torch.bool)                                 # (B, T) real tokens
    for b, n in enumerate(lengths):                                                # left padding
        Q[b, :, T - n:] = qs[b].transpose(0, 1)
        K[b, :, T - n:] = ks[b].transpose(0, 1)
        V[b, :, T - n:] = vs[b].transpose(0, 1)
        key_mask[b, T - n:] = True
    d = dict(q=q, k=k, v=v, cu=cu, Q=Q, K=K, V=V, key_mask=key_mask)
    d = {name: t.to(device) for name, t in d.items()}
    d["mask"] = padded_causal_mask(d["key_mask"], T)                               # (B, 1, T, T)
    d["lengths"] = list(lengths)
    return d


def contenders(d: dict) -> dict:
    fns = {"padded": lambda: sdpa_attention(d["Q"], d["K"], d["V"], d["mask"]),
           "packed (varlen)": lambda: packed_attention(d["q"], d["k"], d["v"], d["cu"], d["cu"])}
    if d["q"].shape[0] <= MASKED_MAX_TOKENS:
        fns["packed (one masked call)"] = lambda: packed_attention_masked(d["q"], d["k"], d["v"], d["cu"], d["cu"])
    return fns


def unpad(d: dict, out: torch.Tensor) -> torch.Tensor:
    """(B, nh, T, hd) left-padded -> (N, nh, hd) packed, real tokens only."""
    T = out.shape[2]
    return torch.cat([out[b, :, T - n:].transpose(0, 1) for b, n in enumerate(d["lengths"])])


def waste(lengths: list[int]) -> dict[str, float]:
    """Share of the causal score pairs each method computes on nothing, and token waste."""
    st = padding_stats(lengths)
    N = st.real_tokens
    return {"padded": st.attn_waste, "packed (varlen)": 0.0,
            "packed (one masked call)": 1 - st.attn_pairs_real / (N * (N + 1) // 2) if N else 0.0,
            "token_waste": st.token_waste}


def measure(lengths: list[int], repeat: int, device=None) -> dict:
    device = device or get_device()
    d = build(lengths, device)
    fns = contenders(d)
    ref = fns["packed (varlen)"]()
    diffs = {"padded": float((unpad(d, fns["padded"]()) - ref).abs().max())}
    if "packed (one masked call)" in fns:
        diffs["packed (one masked call)"] = float((fns["packed (one masked call)"]() - ref).abs().max())
    times = time_interleaved(fns, repeat=repeat, warmup=1, device=device)
    return {"lengths": lengths, "N": sum(lengths), "T_max": max(lengths), "waste": waste(lengths),
            "times": {k: {"best_s": v[0], "median_s": median(v)} for k, v in times.items()}, "max_abs_diff": diffs}


def run(quick: bool = False, progress=None, device=None) -> BenchResult:
    t_start = time.perf_counter()
    device = device or get_device()
    progress = progress or NullProgress()
    cfg = QUICK if quick else FULL
    rows, records, ratios = [], [], {}
    for trace_name, scale, batches in cfg["cases"]:
        for B in batches:
            progress.set_postfix_str(f"prefill {trace_name} B={B}")
            lengths = prompt_lengths(trace_name, B, scale)
            rec = measure(lengths, cfg["repeat"], device)
            rec.update(trace=trace_name, scale=scale, batch=B)
            records.append(rec)
            t, w = rec["times"], rec["waste"]
            row = {"trace": f"{trace_name} ×{scale:g}", "batch": B, "tokens": rec["N"], "T max": rec["T_max"],
                   "token waste %": 100 * w["token_waste"]}
            for m in METHODS:
                row[f"{m} ms"] = 1e3 * t[m]["best_s"] if m in t else None
                row[f"{m}: pairs on nothing %"] = 100 * w[m] if m in t else None
            row["padded / packed time"] = t["padded"]["best_s"] / t["packed (varlen)"]["best_s"]
            rows.append(row)
            tag = f"{trace_name} B={B}"
            ratios[f"padded / packed (varlen) time, {tag}"] = row["padded / packed time"]
            if "packed (one masked call)" in t:
                ratios[f"packed (one masked call) / packed (varlen) time, {tag}"] = (
                    t["packed (one masked call)"]["best_s"] / t["packed (varlen)"]["best_s"])
            ratios[f"share of causal score pairs on padding (padded), {tag}"] = w["padded"]
            progress.update(1)
    cols = ["trace", "batch", "tokens", "T max", "token waste %"]
    for m in METHODS:
        cols += [f"{m} ms", f"{m}: pairs on nothing %"]
    cols.append("padded / packed time")
    table = Table(f"Prefill attention, best of {cfg['repeat']} interleaved rounds (ms per call, one layer)", cols, rows,
                  note=("'pairs on nothing': share of the causal (query, key) score pairs a method computes that "
                        "involve a pad (padded) or two different prompts (one masked call). The one masked call is "
                        f"skipped above {MASKED_MAX_TOKENS} packed tokens (N x N scores)."))
    worst = max(max(r["max_abs_diff"].values()) for r in records)
    notes = [f"Every method agrees with packed (varlen) on the real tokens: largest |difference| {worst:.1e}.",
             "Padded attention computes every pad's row and column; packed attention computes none, but as "
             "one call per prompt (many small kernels) or one masked call (N x N scores)."]
    res = BenchResult(NAME, TITLE, environment(device),
                      {"cases": [f"{t} ×{s:g}, batch {list(b)}" for t, s, b in cfg["cases"]], **SHAPE,
                       "repeat": cfg["repeat"], "padding": "left"},
                      [table], [], ratios, notes, data={"records": records})
    res.figures = figures(records)
    res.seconds = time.perf_counter() - t_start
    return res


def figures(records) -> list:
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    from course_lib.plots import style

    labels = [f"{r['trace']} B={r['batch']}" for r in records]
    fig = go.Figure()
    for i, m in enumerate(METHODS):
        fig.add_trace(go.Bar(name=m, x=labels, y=[1e3 * r["times"][m]["best_s"] if m in r["times"] else None
                                                  for r in records],
                             marker_color=qualitative.Plotly[i],
                             text=[f"{100 * r['waste'][m]:.0f}% on nothing" if m in r["times"] else "skipped"
                                   for r in records], textposition="outside"))
    style(fig, "Prefill attention on mixed lengths (labels: share of score pairs computed on nothing)", height=420)
    fig.update_layout(barmode="group", yaxis_title="ms per call (best round)", yaxis_type="log")
    return [fig]


def units(quick: bool) -> int:
    cfg = QUICK if quick else FULL
    return sum(len(b) for _, _, b in cfg["cases"])
