"""Lesson 04/05's claims and helpers: the paper-comparison numbers on lesson 02's trace, the
panels (valid values draw, bad values raise one-line ValueErrors), the plots, the lab
experiments and the benchmark's command line."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

from course_lib.kv.contiguous import ContiguousKVStore
from course_lib.kv.paged import PagedKVStore
from course_lib.kv.pool_views import pool_counts
from course_lib.kv.replay import replay
from course_lib.kv.sizing import GIB, PUBLISHED
from course_lib.workloads import alpaca_like, make_trace, sharegpt_like


@pytest.fixture(scope="module")
def lesson02_replays():
    """Lesson 02's experiment: OPT-13B's ~12 GB of KV slots, the full-length ShareGPT-like trace."""
    capacity = PUBLISHED["OPT-13B"].tokens_in(12 * GIB)
    capacity -= capacity % 16
    trace = sharegpt_like(n=300, rate=5.0, seed=0)
    max_ = replay(trace, ContiguousKVStore(1, 1, 1, capacity=capacity, max_model_len=2048, reservation="max",
                                           placement="buddy"), step_time=0.05, snapshot_every=None)
    paged = replay(trace, PagedKVStore(1, 1, 1, capacity=capacity, block_size=16, max_model_len=2048),
                   step_time=0.05, snapshot_every=None)
    return max_, paged


def test_paged_memory_holds_token_states_like_vllm(lesson02_replays):
    _, paged = lesson02_replays
    assert paged.complete
    shares = paged.figure2()
    assert shares["token_states"] >= 0.96                      # vLLM paper, Figure 2: 96.3 %
    assert shares["reservation"] == 0.0                        # nothing is held for future tokens
    assert shares["internal"] < 0.03                           # under one block per request


def test_paged_runs_3x_the_requests_of_max_reservation(lesson02_replays):
    max_, paged = lesson02_replays
    assert paged.mean_batch(busy_only=True) >= 3 * max_.mean_batch(busy_only=True)   # paper Fig. 13: 30.42 vs 7.00


def test_replay_with_prefix_caching_registers_and_hits():
    """An allocation-only replay sets `cached` directly; the store still caches the full blocks."""
    trace = make_trace("alpaca", n=30, rate=2.0, seed=1, scale=1 / 4, shared_prefix=80, num_prefixes=2)
    store = PagedKVStore(1, 1, 1, num_blocks=64, block_size=16, prefix_caching=True, max_model_len=512)
    res = replay(trace, store, step_time=0.1, snapshot_every=5)
    assert res.complete and store.stats.hit_rate > 0.5
    store.check_invariants()
    counts = pool_counts(res.snapshots[max(res.snapshots)], 16, 64)
    assert counts.held + counts.cached + counts.free == 64


# ---- panels -----------------------------------------------------------------------------------
def test_paging_panel_report():
    from course_lib.widgets.paging import paging_report
    status, fig = paging_report("37, 5, 120, 64", 16, 24)
    assert isinstance(fig, go.Figure) and "88.3%" in status          # 226 of 256 held slots hold tokens
    for bad, match in [(("37, x", 16, 24), "lengths"), (("600", 16, 24), "lengths"), (("5", 0, 24), "block size"),
                       (("5", 16, 0), "pool blocks"), (("200, 200", 16, 10), "pool blocks"),
                       (("1 2 3 4 5 6 7 8 9", 16, 24), "lengths")]:
        with pytest.raises(ValueError, match=match):
            paging_report(*bad)


def test_sharing_panel_report():
    from course_lib.widgets.paging import sharing_report
    status, fig = sharing_report(44, 4, 10, 8)
    assert isinstance(fig, go.Figure)
    assert "[0, 40, 40, 40]" in status and "13 instead of 28" in status
    status, _ = sharing_report(0, 3, 5, 4)
    assert "[0, 0, 0]" in status
    for bad, match in [((300, 4, 10, 8), "shared prefix"), ((40, 0, 10, 8), "requests"), ((40, 4, 0, 8), "own tokens"),
                       ((256, 8, 128, 1), "requests")]:
        with pytest.raises(ValueError, match=match):
            sharing_report(*bad)


def test_panels_show_errors_in_red_not_tracebacks():
    from course_lib.widgets.paging import paging_panel, sharing_panel
    p = paging_panel()
    p.controls["lengths_text"].value = "12, banana"
    assert "lengths" in p.message.value and "#c62828" in p.message.value
    s = sharing_panel()
    assert s.figures and s.message.value


# ---- plots --------------------------------------------------------------------------------------
def test_plots_build():
    from course_lib.plots.paging import (block_size_tradeoff, block_table_map, decode_timings, pool_over_time,
                                         waste_with_paging)
    s = PagedKVStore(1, 1, 4, num_blocks=12, block_size=4, prefix_caching=True)
    s.add(0, list(range(9)), 12)
    s.mark_computed(0, 9)
    s.fork(0, 1)
    snap = s.snapshot()
    fig = block_table_map(snap)
    assert len(fig.data) == 4                                        # lines, 2 tables, the pool
    assert pool_over_time([snap, snap.counts()]).data[1].y == (3, 3)  # after the fork all 3 blocks are shared
    shares = {"token_states": 0.9, "reservation": 0.0, "internal": 0.05, "external_and_others": 0.05}
    f2 = waste_with_paging({"max": shares, "paged": shares}, {"max": {k: 100 * v for k, v in shares.items()}},
                           paper_token_share=96.3)
    assert any(t.name == "paper: vLLM's token states (96.3 %)" for t in f2.data)
    assert len(block_size_tradeoff([1, 16], [0.99, 0.97], [3.0, 1.0], 1.2).data) == 3
    assert decode_timings({"contiguous SDPA": [0.001], "paged (fast kernel)": [0.0012]}).data[0].text[1] == "1.20x"
    with pytest.raises(ValueError, match="max_blocks: must be >= the pool's 300 blocks"):
        block_table_map(PagedKVStore(1, 1, 1, num_blocks=300, block_size=1).snapshot())


# ---- lab experiments ------------------------------------------------------------------------------
def test_parallel_sampling_savings_matches_the_block_arithmetic():
    from course_lib.labs.paging import parallel_sampling_savings
    from course_lib.workloads import trace_from_lengths
    trace = trace_from_lengths([(32, 1)])                            # 2 full prompt blocks, one output token
    # n=3: tables name 3 x 3 = 9 blocks, 3 + 2 x 1... held: 2 shared + 3 private = 5 -> saved 4/9
    assert parallel_sampling_savings(trace, 3, block_size=16) == pytest.approx(4 / 9)
    assert parallel_sampling_savings(alpaca_like(n=20, seed=0), 1) == 0.0
    with pytest.raises(ValueError, match="n:"):
        parallel_sampling_savings(trace, 0)


def test_block_size_sweep_trades_waste_for_speed():
    from course_lib.labs.paging import block_size_sweep
    trace = sharegpt_like(n=60, rate=5.0, seed=0, scale=1 / 8)
    rows = block_size_sweep(trace, 384, block_sizes=(1, 16, 64), batch=4, context=128, repeat=1, max_model_len=256)
    assert [r["capacity"] for r in rows] == [384, 384, 384]
    assert rows[0]["token_share"] > rows[1]["token_share"] > rows[2]["token_share"]   # bigger blocks waste more
    assert rows[0]["internal_share"] == 0.0 < rows[1]["internal_share"] < rows[2]["internal_share"]
    assert all(r["contiguous_ms"] > 0 for r in rows)
    from course_lib.paged_attention import kernel_available
    if kernel_available():
        assert all(r["kernel_ms"] > 0 for r in rows)


def test_compare_preemption_and_prefix_caching_keep_tokens(model64):
    import random
    from course_lib.engine import Request
    from course_lib.labs.paging import compare_prefix_caching, compare_preemption
    rng = random.Random(0)
    reqs = [Request([rng.randrange(97, 123) for _ in range(rng.randint(4, 10))], 8, rid=i, eos_id=None)
            for i in range(4)]
    rows = compare_preemption(model64, reqs, num_blocks=6, block_size=4, max_running=4, clock="steps", threads=1)
    assert all(r["same tokens as the unlimited reference"] for r in rows.values())
    assert rows["recompute"]["preemptions"] > 0 and rows["recompute"]["tokens computed again"] > 0
    assert rows["swap"]["blocks copied to CPU and back"] > 0
    system = list(b"shared system prompt, 32 tokens!")
    reqs = [Request(system + [97 + i], 4, arrival=float(i), rid=i, eos_id=None) for i in range(3)]
    rows = compare_prefix_caching(model64, reqs, num_blocks=32, block_size=8, rounds=1, clock="steps")
    assert rows["same tokens"]
    assert rows["prefix caching"]["prefill tokens computed"] < rows["no prefix caching"]["prefill tokens computed"]


# ---- the benchmark's command line ---------------------------------------------------------------------
def test_benchmark_runs_small(capsys):
    from benchmarks.paged_attention import main
    report = main(["--batch", "2", "--context", "64", "--repeat", "2", "--threads", "1"])
    out = capsys.readouterr().out
    assert "contiguous SDPA" in out and "paged (readable gather)" in out and "1.20-1.26x" in out
    assert report[1]["ratios"]["contiguous SDPA"] == 1.0
    with pytest.raises(SystemExit):
        main(["--threads", "0"])
