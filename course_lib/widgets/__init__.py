"""ipywidgets panels. Every value from a control is validated before use, and a
bad value shows a one-line message in red; a learner never sees a traceback.
"""

from __future__ import annotations

import html
from typing import Any, Callable

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
    """Controls + a message line + figures + an output area, redrawn on every change.

    `update(**values)` gets the controls' current values, does the work, and returns
    one of: a status string, a plotly figure, or a tuple (status, figure or list of
    figures). Returned figures are drawn into `plotly.graph_objects.FigureWidget`s
    that are updated in place, so the page does not flicker and nothing waits on
    re-displaying a figure inside an Output widget (which stalls headless runners).
    Anything `update` prints or displays goes to the output area below the figures.

    A ValueError becomes a red one-line message; any other error too (with its
    type), never a traceback.
    """

    def __init__(self, controls: dict[str, W.Widget], update: Callable[..., Any], columns: int = 3):
        self.controls, self.update = controls, update
        self.message = W.HTML()
        self.output = W.Output()
        self.figures: list = []                      # FigureWidgets, created on first use
        self.figure_box = W.VBox()
        rows = list(controls.values())
        grid = W.GridBox(rows, layout=W.Layout(grid_template_columns=f"repeat({columns}, max-content)", grid_gap="4px 16px"))
        self.box = W.VBox([grid, self.message, self.figure_box, self.output])
        for c in rows:
            c.observe(lambda _change: self.refresh(), names="value")

    def values(self) -> dict:
        return {k: c.value for k, c in self.controls.items()}

    def refresh(self) -> None:
        self.output.clear_output(wait=True)
        with self.output:
            try:
                status, figs = _split_result(self.update(**self.values()))
                self._draw(figs)
                self.message.value = info_html(status) if status else ""
            except ValueError as exc:
                self.message.value = error_html(str(exc))
            except Exception as exc:  # keep the kernel and the panel alive
                self.message.value = error_html(f"{type(exc).__name__}: {exc}")

    def _draw(self, figs: list) -> None:
        import plotly.graph_objects as go

        while len(self.figures) < len(figs):
            self.figures.append(go.FigureWidget())
        for widget, fig in zip(self.figures, figs):
            widget.data = []                          # replace traces and layout in place
            widget.add_traces(list(fig.data))
            widget.layout = fig.layout
        self.figure_box.children = tuple(self.figures[: len(figs)])

    def show(self) -> "Panel":
        display(self.box)
        self.refresh()
        return self


def _split_result(result) -> tuple[str | None, list]:
    """update()'s return value -> (status text or None, list of figures)."""
    import plotly.graph_objects as go

    if result is None or isinstance(result, str):
        return result, []
    if isinstance(result, go.Figure):
        return None, [result]
    if isinstance(result, tuple) and len(result) == 2:
        status, figs = result
        figs = [figs] if isinstance(figs, go.Figure) else list(figs or [])
        return status, figs
    raise TypeError(f"update() must return a status string, a figure, or (status, figures); got {type(result).__name__}")
