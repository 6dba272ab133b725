"""Lesson 02's panel: choose the requests (a trace and its rate, or your own lengths),
the arena size and the policies; see the memory map over time, the measured
waste, and the first allocation that failed although enough memory was free.

Traces are scaled down 8x (a 256-token context; ShareGPT-like means of about
20 / 42 tokens) so a replay takes a fraction of a second. One iteration stands
for 8x as long too, so a rate means the same load as at full scale.
"""

from __future__ import annotations

import math

import ipywidgets as W

from course_lib.kv.contiguous import RESERVATIONS, ContiguousKVStore
from course_lib.kv.allocators import PLACEMENTS
from course_lib.kv.replay import replay
from course_lib.plots.memory import memory_map, usage_over_time
from course_lib.widgets import Panel, check_int
from course_lib.workloads import make_trace, trace_from_lengths

SCALE = 1 / 8
MAX_LEN = 256                  # the scaled context: 'max' reserves this much per request
STEP_TIME = 0.05 / SCALE       # seconds one iteration stands for
SOURCES = ("ShareGPT-like", "Alpaca-like", "my lengths")
MAX_REQUESTS = 150
ARENA_RANGE = (MAX_LEN, 16_384)


def parse_pairs(text: str, name: str = "lengths", max_len: int = MAX_LEN, max_items: int = 24) -> list[tuple[int, int]]:
    """'20:60, 100:40' -> [(20, 60), (100, 40)]: prompt:output pairs, prompt + output <= max_len."""
    items = [t for t in str(text).replace(",", " ").split() if t]
    if not items:
        raise ValueError(f"{name}: give at least one prompt:output pair, e.g. 20:60")
    if len(items) > max_items:
        raise ValueError(f"{name}: at most {max_items} pairs; got {len(items)}")
    pairs = []
    for item in items:
        parts = item.split(":")
        if len(parts) != 2:
            raise ValueError(f"{name}: each item must be prompt:output, e.g. 20:60; got {item!r}")
        p = check_int(parts[0], f"{name} (prompt)", 1, max_len - 1)
        o = check_int(parts[1], f"{name} (output)", 1, max_len - p)
        pairs.append((p, o))
    return pairs


def _check_rate(rate) -> float:
    try:
        r = float(rate)
    except (TypeError, ValueError):
        raise ValueError(f"rate: must be a number in (0, 1000] requests per second; got {rate!r}") from None
    if not (0 < r <= 1000) or math.isnan(r):
        raise ValueError(f"rate: must be a number in (0, 1000] requests per second; got {rate!r}")
    return r


def fragmentation_report(source: str, lengths_text: str, n_requests, rate, arena_slots,
                         reservation: str, placement: str, seed: int = 0):
    """Validate the panel's values, replay, and return (result, status text, first paradox refusal or None).
    Raises ValueError naming the bad parameter and its range."""
    if source not in SOURCES:
        raise ValueError(f"source: must be one of {', '.join(SOURCES)}; got {source!r}")
    capacity = check_int(arena_slots, "arena slots", *ARENA_RANGE)
    if reservation not in RESERVATIONS:
        raise ValueError(f"reservation: must be one of {', '.join(RESERVATIONS)}; got {reservation!r}")
    if placement not in PLACEMENTS:
        raise ValueError(f"placement: must be one of {', '.join(PLACEMENTS)}; got {placement!r}")
    r = _check_rate(rate)
    if source == "my lengths":
        trace = trace_from_lengths(parse_pairs(lengths_text), interval=1.0 / r, max_len=MAX_LEN)
    else:
        n = check_int(n_requests, "requests", 1, MAX_REQUESTS)
        trace = make_trace("sharegpt" if source.startswith("Share") else "alpaca", n, r, seed, SCALE)
    store = ContiguousKVStore(1, 1, 1, capacity=capacity, max_model_len=MAX_LEN,
                              reservation=reservation, placement=placement)
    result = replay(trace, store, step_time=STEP_TIME, snapshot_every=1)
    busy = any(result.busy())
    shares = result.shares(busy_only=busy)
    refused = [x for x in result.refusals if x is not None]
    paradox = result.paradox_refusals()
    when = "while a request waited for memory" if busy else "over the whole run (no request ever waited)"
    picked = [u for u, b in zip(result.usage, result.busy()) if b or not busy]
    rounding = sum(getattr(u, "rounding", 0) / (u.capacity or 1) for u in picked) / max(len(picked), 1)
    rounded = f", buddy rounding {rounding:.0%}" if placement == "buddy" else ""
    status = (f"{trace.name}, {len(trace)} requests, {reservation} / {placement}, {capacity} slots. "
              f"Share of the arena {when}: token states {shares['token_states']:.0%}, reserved "
              f"{shares['reserved']:.0%}, internal (over-reservation) {shares['internal'] - rounding:.0%}{rounded}, "
              f"external {shares['external']:.0%}, "
              f"free {shares['free']:.0%}. Mean batch {result.mean_batch():.1f}; {len(refused)} refused admissions, "
              f"{len(paradox)} of them with enough total free memory.")
    return result, status, (paradox[0] if paradox else None)


def fragmentation_panel() -> Panel:
    """The interactive panel of lesson 02."""
    controls = {
        "source": W.Dropdown(options=list(SOURCES), value="ShareGPT-like", description="requests"),
        "lengths_text": W.Text(value="20:60, 100:40, 8:120, 60:60, 30:90, 120:20, 10:10, 90:30",
                               description="my lengths", continuous_update=False,
                               tooltip="prompt:output pairs, used when requests = my lengths"),
        "n_requests": W.IntSlider(value=60, min=1, max=MAX_REQUESTS, description="how many", continuous_update=False),
        "rate": W.FloatText(value=5.0, description="rate (req/s)"),
        "arena_slots": W.IntText(value=1966, description="arena slots"),
        "reservation": W.Dropdown(options=list(RESERVATIONS), value="pow2", description="reservation"),
        "placement": W.Dropdown(options=list(PLACEMENTS), value="first-fit", description="placement"),
    }

    def update(source, lengths_text, n_requests, rate, arena_slots, reservation, placement):
        result, status, paradox = fragmentation_report(source, lengths_text, n_requests, rate, arena_slots,
                                                       reservation, placement)
        note = None
        if paradox is not None:                 # shown above the map, gone with the next run that has none
            note = (f"Step {paradox.step}: request {paradox.seq_id} needed {paradox.requested} contiguous slots and "
                    f"was refused, although {paradox.total_free} slots were free (largest hole "
                    f"{paradox.largest_free}).")
        return status, [memory_map(result, title="Memory map over time (red: holes too small for the waiting request)"),
                        usage_over_time(result, title="Where the arena goes, step by step")], note

    return Panel(controls, update, columns=4, cache=16).show()
