"""Lesson 01's panel: pick how many sequences, their lengths and the padding side;
see the padded batch and the measured cost of attending over it."""

from __future__ import annotations

import ipywidgets as W

from course_lib.costs import measure_attention_costs
from course_lib.plots.padding import batch_heatmap
from course_lib.device import check_device
from course_lib.validate import check_int as vcheck_int
from course_lib.widgets import Panel, check_int, parse_int_list

MAX_SEQUENCES = 8


def padded_rows(lengths: list[int], side: str) -> list[list[str]]:
    """Rows of display tokens: 'tok' for a real token, '<pad>' for padding."""
    T = max(lengths)
    rows = []
    for n in lengths:
        real = ["<SOS>"] + ["tok"] * (n - 1)
        fill = ["<pad>"] * (T - n)
        rows.append(fill + real if side == "left" else real + fill)
    return rows


def padding_report(n_sequences, lengths_text: str, side: str, max_len: int, device=None, repeat: int = 3):
    """Validate the panel's values, then build the figure and the measured numbers.
    Raises ValueError naming the bad parameter and its range."""
    n = check_int(n_sequences, "sequences", 1, MAX_SEQUENCES)
    lengths = parse_int_list(lengths_text, "lengths", 1, max_len, max_items=MAX_SEQUENCES)
    if len(lengths) != n:
        raise ValueError(f"lengths: give exactly {n} values (one per sequence); got {len(lengths)}")
    if side not in ("left", "right"):
        raise ValueError(f"side: must be 'left' or 'right'; got {side!r}")
    costs = measure_attention_costs(lengths, repeat=repeat, device=device, side=side)
    fig = batch_heatmap(padded_rows(lengths, side), title=f"{n} sequences padded on the {side} to {max(lengths)} slots")
    t = costs.times
    status = (f"{sum(lengths)} real tokens in {n * max(lengths)} slots: {costs.token_waste:.0%} padding; the padded "
              f"batch spans {costs.pairs_padded:,} causal attention scores per head where the tokens need "
              f"{costs.pairs_real:,} ({costs.pairs_ratio:.2f}x). Measured attention, median (min-max) of {repeat} "
              f"interleaved rounds: padded {t['padded']}, packed {t['packed']}, one by one {t['one by one']}. "
              f"Packed makes the same per-sequence calls as one by one, plus slicing its concatenated tensor and "
              f"writing one output (a varlen kernel such as FlashAttention's does all of it in one launch); "
              f"outputs agree to {costs.max_abs_diff:.1e}.")
    return fig, status


def padding_panel(max_len: int = 512, device=None) -> Panel:
    """The interactive panel of lesson 01."""
    vcheck_int("max_len", max_len, 1, 4096)
    if device is not None:
        check_device(device)
    controls = {
        "n_sequences": W.IntSlider(value=3, min=1, max=MAX_SEQUENCES, description="sequences"),
        "lengths_text": W.Text(value="4, 7, 2", description="lengths", continuous_update=False),
        "side": W.Dropdown(options=["left", "right"], value="left", description="pad side"),
    }

    def update(n_sequences, lengths_text, side):
        fig, status = padding_report(n_sequences, lengths_text, side, max_len, device)
        return status, fig

    return Panel(controls, update, columns=3).show()
