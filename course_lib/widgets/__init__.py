"""ipywidgets panels. Every value from a control is validated before use, and a
bad value shows a one-line message in red naming the parameter; a learner never
sees a traceback, and never a figure or a number that no longer matches the
controls: while a value is bad the figures are greyed out and the numbers give way
to the message, which goes as soon as its cause does.
"""

from __future__ import annotations

import html
import re
import time
from collections import OrderedDict
from typing import Any, Callable

import ipywidgets as W
from IPython.display import display

ERROR, NOTE = "#c62828", "#c62828"

# One style sheet for every panel (an HTML widget's <style> applies to the whole page; the rules
# are scoped to .course-panel). Stale: the figures below a bad value, greyed at once. Busy: the
# figures and numbers while the kernel computes new ones, greyed only if that takes over 0.4 s,
# so a quick update does not flash.
PANEL_CSS = """<style>
.course-panel .course-stale { opacity: 0.25; filter: grayscale(1); pointer-events: none; }
.course-panel .course-busy { opacity: 0.45; transition: opacity 0.15s linear 0.4s; }
.course-panel .course-table { overflow-x: auto; max-width: 100%; margin: 4px 0 10px 0; }
.course-panel .course-table table { border-collapse: collapse; font-size: 13px; }
.course-panel .course-table th, .course-panel .course-table td { padding: 3px 10px; border-bottom: 1px solid #dde3ec;
  white-space: nowrap; }
.course-panel .course-table-title { font-size: 15px; color: #2a3f5f; margin: 6px 0 4px 0; }
</style>"""


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


def fmt_value(v) -> str:
    """A cell or a number for reading: integers as they are, other numbers to 4 significant digits
    (74.39999999999999 -> 74.4), text unchanged."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int) or (v.is_integer() and abs(v) < 1e15):      # (nan and inf are not integers)
        return str(int(v))
    return f"{v:.4g}"


def error_html(message: str) -> str:
    return f'<span class="course-error" style="color:{ERROR};font-weight:600">{html.escape(message)}</span>'


def info_html(message: str) -> str:
    return f'<span class="course-info" style="color:#333">{html.escape(message)}</span>'


def note_html(message: str) -> str:
    """A finding of the run that deserves attention (not an error of the learner's)."""
    return f'<span class="course-note" style="color:{NOTE}">{html.escape(message)}</span>'


def _plain(text) -> str:
    """A plotly table cell ('<b>TTFT</b>') as escaped HTML: plotly's own tags dropped, <br> kept."""
    parts = re.split(r"<br\s*/?>", fmt_value(text))
    return "<br>".join(html.escape(re.sub(r"</?(?:b|i|em|sup|sub|span)(?:\s[^>]*)?>", "", p)) for p in parts)


def _pick(spec, col: int, row: int, default=None):
    """plotly's rule for a table attribute: a value, a list per column, or a list of lists (column, row)."""
    if spec is None:
        return default
    if isinstance(spec, (list, tuple)):
        if not spec:
            return default
        column = spec[min(col, len(spec) - 1)]
        if isinstance(column, (list, tuple)):
            return column[min(row, len(column) - 1)] if column else default
        return column
    return spec


def is_table(fig) -> bool:
    """A figure that is one plotly Table (drawn by a panel as an HTML table)."""
    return len(fig.data) == 1 and fig.data[0].type == "table"


def table_html(fig) -> str:
    """A one-Table plotly figure as an HTML table: every header and cell readable at any width
    (a plotly table in a FigureWidget can clip its header and leave cells blank on first render)."""
    t = fig.data[0]
    header = list(t.header.values or [])
    columns = [list(c) for c in (t.cells.values or [])]
    n_rows = max((len(c) for c in columns), default=0)
    n_cols = max(len(header), len(columns))
    align = lambda part, c, r: _pick(part.align, c, r, "left")              # noqa: E731
    head = "".join(f'<th style="text-align:{align(t.header, c, 0)};background:{_pick(t.header.fill.color, c, 0, "#e8eef7")}">'
                   f"{_plain(header[c]) if c < len(header) else ''}</th>" for c in range(n_cols))
    rows = []
    for r in range(n_rows):
        cells = []
        for c in range(n_cols):
            value = columns[c][r] if c < len(columns) and r < len(columns[c]) else ""
            fill = _pick(t.cells.fill.color, c, r)
            bg = f";background:{fill}" if fill else ""
            cells.append(f'<td style="text-align:{align(t.cells, c, r)}{bg}">{_plain(value)}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    title = fig.layout.title.text
    title_html = f'<div class="course-table-title">{_plain(title)}</div>' if title else ""
    return (f'<div class="course-table">{title_html}<table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


class Panel:
    """Controls + a message line + a note line + figures + an output area, redrawn on every change.

    `update(**values)` gets the controls' current values, does the work, and returns
    one of: a status string, a plotly figure, a tuple (status, figure or list of
    figures), or (status, figures, note): a note is a finding of the run worth a red
    line of its own (lesson 02's first refusal with enough memory free), shown above
    the figures and gone with the next update that has none. Returned figures are drawn into
    `plotly.graph_objects.FigureWidget`s (each created with its figure, then updated in
    place, so the page does not flicker); a figure that is a single plotly Table is drawn
    as an HTML table. Anything `update` prints or displays goes to the output area
    below the figures, cleared at the next update.

    A ValueError becomes a red one-line message (naming the parameter: the update
    raises it so), the figures below it are greyed out, since they no longer match
    the controls, and the output area is emptied; any other error too (with its
    type), never a traceback. The next good value clears the message and redraws.

    `cache`: remember the results of that many recent settings (only for an `update`
    whose results depend on the values alone, not on a clock), so coming back to
    a setting is instant (what the first run printed is not printed again).
    """

    def __init__(self, controls: dict[str, W.Widget], update: Callable[..., Any], columns: int = 3,
                 cache: int = 0):
        self.controls, self.update = controls, update
        self.cache_size, self._cache = int(cache), OrderedDict()
        self.message = W.HTML(layout=W.Layout(width="auto", min_width="0"))
        self.note = W.HTML(layout=W.Layout(width="auto", min_width="0"))
        self.output = W.Output(layout=W.Layout(max_width="100%", overflow="auto"))
        self.figures: list = []                      # FigureWidgets or HTML tables, one per figure slot
        self.figure_box = W.VBox(layout=W.Layout(width="100%", max_width="100%", overflow="hidden"))
        self.state = "new"                           # "ok", "error" (a bad value) or "busy"
        self.seq = 0                                 # updates so far (the page shows it: data-seq)
        self.seconds: float | None = None            # how long the last update took in the kernel
        rows = list(controls.values())
        for c in rows:
            if c.layout.width is None:
                c.layout.width = "auto"              # fill the grid cell
        n = max(1, int(columns))
        cell = f"min(100%, max(250px, calc((100% - {n - 1} * 16px) / {n})))"   # at most `columns` a row
        grid = W.GridBox(rows, layout=W.Layout(grid_template_columns=f"repeat(auto-fill, minmax({cell}, 1fr))",
                                               grid_gap="4px 16px", width="100%"))
        self.box = W.VBox([W.HTML(PANEL_CSS, layout=W.Layout(display="none")), grid, self.message, self.note,
                           self.figure_box, self.output],
                          layout=W.Layout(width="100%", max_width="100%", overflow="hidden"))
        self.box.add_class("course-panel")
        self.figure_box.add_class("course-figures")
        self.output.add_class("course-output")
        for c in rows:
            c.observe(lambda _change: self.refresh(), names="value")

    def values(self) -> dict:
        return {k: c.value for k, c in self.controls.items()}

    def _message(self, body: str) -> None:
        ms = "" if self.seconds is None else f' data-kernel-ms="{1e3 * self.seconds:.0f}"'
        self.message.value = (f'<div class="course-msg" data-state="{self.state}" data-seq="{self.seq}"{ms}>'
                              f"{body}</div>")

    def _mark(self, state: str) -> None:
        """Grey (or un-grey) what the controls no longer match. (add_class and remove_class do
        nothing, and send nothing, when the class is already there or already gone.)"""
        for w in (self.figure_box, self.output):
            (w.add_class if state == "error" else w.remove_class)("course-stale")
        for w in (self.figure_box, self.output, self.message, self.note):
            (w.add_class if state == "busy" else w.remove_class)("course-busy")

    def _run(self, values: dict):
        key = tuple(sorted(values.items())) if self.cache_size else None
        try:
            hash(key)
        except TypeError:                            # a control whose value is a list: not cached
            key = None
        if key is not None and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        result = _split_result(self.update(**values))
        if key is not None:
            self._cache[key] = result
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return result

    def refresh(self) -> None:
        self.seq += 1
        start = time.perf_counter()
        previous, self.state = self.state, "busy"
        if previous == "ok":
            self._mark("busy")
        self.output.clear_output()
        failure = None
        with self.output:                            # what update() prints goes there
            try:                                     # (inside: the Output widget would show a traceback)
                status, figs, note = self._run(self.values())
                self._draw(figs)
            except Exception as exc:  # keep the kernel and the panel alive
                failure = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        self.seconds = time.perf_counter() - start
        if failure is None:
            self.state = "ok"
            self._mark("ok")
            self.note.value = note_html(note) if note else ""
            self._message(info_html(status) if status else "")
        else:
            self.output.clear_output()
            self.state = "error"
            self._mark("error")
            self.note.value = ""
            self._message(error_html(failure))

    def _draw(self, figs: list) -> None:
        import plotly.graph_objects as go

        for i, fig in enumerate(figs):
            table = is_table(fig)
            old = self.figures[i] if i < len(self.figures) else None
            if table:
                if isinstance(old, W.HTML):
                    old.value = table_html(fig)
                    continue
                new = W.HTML(table_html(fig), layout=W.Layout(width="auto", min_width="0"))
            elif isinstance(old, go.FigureWidget):
                _redraw(old, fig)
                continue
            else:
                new = go.FigureWidget(fig)            # created with its data: nothing to lose in transit
            if old is not None:
                old.close()
                self.figures[i] = new
            else:
                self.figures.append(new)
        self.figure_box.children = tuple(self.figures[: len(figs)])

    def show(self) -> "Panel":
        display(self.box)
        self.refresh()
        return self


def _changes(old: dict, new: dict, keep=("type", "uid")) -> dict:
    """The top-level properties of `new` that differ from `old`; None for those `new` lacks (unset)."""
    out = {k: v for k, v in new.items() if k not in keep and old.get(k) != v}
    out.update({k: None for k in old if k not in new and k not in keep})
    return out


def _redraw(widget, fig) -> None:
    """Make FigureWidget `widget` show `fig`, in place. With the same kinds of traces (a panel's
    figure after a change of values): one update message carrying only what changed, so the
    browser redraws once. Otherwise the traces are replaced and the layout set."""
    if [t.type for t in widget.data] == [t.type for t in fig.data]:
        new = fig.to_plotly_json()
        with widget.batch_update():
            for trace, props in zip(widget.data, new["data"]):
                trace.update(_changes(trace.to_plotly_json(), props), overwrite=True)
            widget.layout.update(_changes(widget.layout.to_plotly_json(), new["layout"], keep=()), overwrite=True)
    else:
        widget.data = []
        widget.add_traces(list(fig.data))
        widget.layout = fig.layout


def _split_result(result) -> tuple[str | None, list, str | None]:
    """update()'s return value -> (status text or None, list of figures, note or None)."""
    import plotly.graph_objects as go

    if result is None or isinstance(result, str):
        return result, [], None
    if isinstance(result, go.Figure):
        return None, [result], None
    if isinstance(result, tuple) and len(result) in (2, 3):
        status, figs = result[0], result[1]
        note = result[2] if len(result) == 3 else None
        figs = [figs] if isinstance(figs, go.Figure) else list(figs or [])
        return status, figs, note
    raise TypeError(f"update() must return a status string, a figure, (status, figures) or (status, figures, note); "
                    f"got {type(result).__name__}")
