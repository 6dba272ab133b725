"""ipywidgets panels. Every value from a control is validated before use, and a
bad value shows a one-line message in red; a learner never sees a traceback.
"""

from __future__ import annotations

import html
from typing import Callable

import ipywidgets as W
from IPython.display import display


def check_int(value, name: str, lo: int, hi: int) -> int:
    """Return value as an int in [lo, hi] or raise ValueError naming `name` and the range."""
    if isinstance(value, bool) or not isinstance(value, (int, str, float)):
        raise ValueError(f"{name}: must be an integer in [{lo}, {hi}]; got {value!r}")
    try:
        as_float = float(value)
    except ValueError:
        raise ValueError(f"{name}: must be an integer in [{lo}, {hi}]; got {value!r}") from None
    if not as_float.is_integer():
        raise ValueError(f"{name}: must be an integer in [{lo}, {hi}]; got {value!r}")
    n = int(as_float)
    if not lo <= n <= hi:
        raise ValueError(f"{name}: must be an integer in [{lo}, {hi}]; got {n}")
    return n


def parse_int_list(text: str, name: str, lo: int, hi: int, max_items: int | None = None) -> list[int]:
    """'5, 12 3' -> [5, 12, 3]; each item checked against [lo, hi]."""
    items = [t for t in str(text).replace(",", " ").split() if t]
    if not items:
        raise ValueError(f"{name}: give at least one integer in [{lo}, {hi}]")
    if max_items is not None and len(items) > max_items:
        raise ValueError(f"{name}: at most {max_items} values; got {len(items)}")
    return [check_int(t, name, lo, hi) for t in items]


def error_html(message: str) -> str:
    return f'<span style="color:#c62828;font-weight:600">{html.escape(message)}</span>'


def info_html(message: str) -> str:
    return f'<span style="color:#333">{html.escape(message)}</span>'


class Panel:
    """Controls + a message line + an output area, redrawn by `update()` on every change.

    `update(**values)` gets the controls' current values, does the work, and
    displays figures / returns a status string. A ValueError becomes a red
    one-line message; any other error too (with its type), never a traceback.
    """

    def __init__(self, controls: dict[str, W.Widget], update: Callable[..., str | None], columns: int = 3):
        self.controls, self.update = controls, update
        self.message = W.HTML()
        self.output = W.Output()
        rows = list(controls.values())
        grid = W.GridBox(rows, layout=W.Layout(grid_template_columns=f"repeat({columns}, max-content)", grid_gap="4px 16px"))
        self.box = W.VBox([grid, self.message, self.output])
        for c in rows:
            c.observe(lambda _change: self.refresh(), names="value")

    def values(self) -> dict:
        return {k: c.value for k, c in self.controls.items()}

    def refresh(self) -> None:
        self.output.clear_output(wait=True)
        with self.output:
            try:
                status = self.update(**self.values())
                self.message.value = info_html(status) if status else ""
            except ValueError as exc:
                self.message.value = error_html(str(exc))
            except Exception as exc:  # keep the kernel and the panel alive
                self.message.value = error_html(f"{type(exc).__name__}: {exc}")

    def show(self) -> "Panel":
        display(self.box)
        self.refresh()
        return self
