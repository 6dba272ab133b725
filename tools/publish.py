"""Classroom delivery: reveal.js slides and a static site of the lessons, both offline.

    python tools/publish.py slides notebooks slides        # make slides: decks from the stored outputs
    python tools/publish.py site notebooks site            # make site: execute, then render HTML
    python tools/publish.py mark-slides notebooks/*.ipynb  # add slide metadata where a cell has none
    python tools/publish.py mark-slides --check notebooks/*.ipynb

Nothing is fetched from the network, at build time or when a page is opened:

* plotly figures are stored in the notebooks as `application/vnd.plotly.v1+json`
  (the course's renderer); here each becomes an HTML div drawn by plotly.js, which
  is copied from the installed plotly package to `static/plotly.min.js`;
* reveal.js is copied from the installed `sphinx-revealjs` package (a pinned dev
  dependency that ships reveal.js 5) to `reveal.js/`; nbconvert's default would
  load it, require.js, jQuery and MathJax from CDNs;
* widgets cannot run without a kernel: each widget output becomes a static copy of
  what it showed (its text, and the figures in its output area, when the notebook
  carries widget state, as it does after `site` executes it) with a note to open
  the lesson in JupyterLab to use it.

Slides follow each cell's `metadata.slideshow.slide_type` (JupyterLab: the property
inspector, "Slide Type"); `mark-slides` gives every cell that has none a type:
a markdown cell that starts with a `#`/`##` heading opens a new slide, every other
cell continues the current one.
"""

from __future__ import annotations

import argparse
import copy
import html
import importlib.util
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = Path(__file__).resolve().parent / "templates"
sys.path.insert(0, str(ROOT))
from course_lib.exercises import render  # noqa: E402

PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
SLIDE_TYPES = {"slide", "subslide", "fragment", "skip", "notes", "-"}
WIDGET_NOTE = "Interactive in JupyterLab: open this lesson there to change the values. Shown here as it first ran."


class PublishError(Exception):
    """A one-line reason the build cannot go on."""


# --------------------------------------------------------------------------- local copies

def plotly_js() -> Path:
    """plotly.min.js from the installed plotly package (the same plotly.js the notebooks use)."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise PublishError(f"plotly.min.js not found in the installed plotly package ({path})")
    return path


def reveal_js() -> Path:
    """reveal.js (dist/ and plugin/) from the installed sphinx-revealjs package, found without
    importing it (which would import Sphinx). REVEAL_JS_DIR overrides."""
    if os.environ.get("REVEAL_JS_DIR"):
        path = Path(os.environ["REVEAL_JS_DIR"])
    else:
        spec = importlib.util.find_spec("sphinx_revealjs")
        if spec is None or not spec.submodule_search_locations:
            raise PublishError("reveal.js not found: install the dev extra (pip install -e '.[dev]', "
                               "which brings sphinx-revealjs) or set REVEAL_JS_DIR to a reveal.js folder")
        path = Path(list(spec.submodule_search_locations)[0]) / "_static" / "revealjs"
    if not (path / "dist" / "reveal.js").is_file() or not (path / "plugin" / "notes" / "notes.js").is_file():
        raise PublishError(f"{path}: no dist/reveal.js and plugin/notes/notes.js in it")
    return path


def copy_assets(out: Path, reveal: bool) -> None:
    (out / "static").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plotly_js(), out / "static" / "plotly.min.js")
    if reveal:
        src, dst = reveal_js(), out / "reveal.js"
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src / "dist", dst / "dist", ignore=shutil.ignore_patterns("*.map", "*.esm.js"))
        shutil.copytree(src / "plugin" / "notes", dst / "plugin" / "notes",
                        ignore=shutil.ignore_patterns("*.map", "*.esm.js"))
        if (src / "LICENSE").is_file():
            shutil.copyfile(src / "LICENSE", dst / "LICENSE")


# --------------------------------------------------------------------------- slide metadata

def default_slide_type(cell) -> str:
    if cell.cell_type == "markdown" and re.match(r"\s*#{1,2}\s", cell.source):
        return "slide"
    return "-"


def missing_slide_metadata(nb) -> list[int]:
    """Indices of cells without a valid slideshow.slide_type."""
    return [i for i, c in enumerate(nb.cells)
            if c.get("metadata", {}).get("slideshow", {}).get("slide_type") not in SLIDE_TYPES]


def mark_slides(nb) -> int:
    """Give every cell without a slide type a default one; returns how many were set."""
    todo = missing_slide_metadata(nb)
    for i in todo:
        nb.cells[i].metadata.setdefault("slideshow", {})["slide_type"] = default_slide_type(nb.cells[i])
    return len(todo)


# --------------------------------------------------------------------------- outputs -> static HTML

class Figures:
    """Turns plotly JSON outputs into HTML divs with stable ids (plotly.js is loaded by the page)."""

    def __init__(self, prefix: str, font_size: int | None = None):
        self.prefix, self.font_size, self.count = prefix, font_size, 0

    def html(self, fig_json: dict) -> str:
        import plotly.io as pio

        fig = copy.deepcopy(fig_json)
        layout = fig.setdefault("layout", {})
        if self.font_size:
            layout.setdefault("font", {})["size"] = self.font_size
            title = layout.get("title")
            if isinstance(title, dict):
                title.setdefault("font", {})["size"] = int(self.font_size * 1.3)
        self.count += 1
        return pio.to_html(fig, include_plotlyjs=False, include_mathjax=False, full_html=False,
                           div_id=f"{self.prefix}-fig{self.count}", validate=False,
                           config={"responsive": True, "displaylogo": False})

    def convert(self, outputs: list) -> None:
        """In place: every plotly output gets a text/html version and loses its JSON."""
        for out in outputs:
            data = out.get("data", {})
            if PLOTLY_MIME in data:
                data["text/html"] = self.html(data.pop(PLOTLY_MIME))
                data.pop("text/plain", None)


def widget_html(model_id: str, state: dict, figures: Figures, live: dict, seen: set | None = None) -> str:
    """A static picture of a widget (and its children) from the notebook's widget state;
    `live` holds the figures of FigureWidgets by model id (see execute)."""
    seen = set() if seen is None else seen
    if model_id in seen:
        return ""
    seen.add(model_id)
    if model_id in live:
        return figures.html(live[model_id])
    if model_id not in state:
        return ""
    model = state[model_id].get("state", {})
    name = model.get("_model_name", "")
    parts = []
    for child in model.get("children", []):
        if isinstance(child, str) and child.startswith("IPY_MODEL_"):
            parts.append(widget_html(child[len("IPY_MODEL_"):], state, figures, live, seen))
    if name == "OutputModel":
        outs = copy.deepcopy(model.get("outputs", []))
        figures.convert(outs)
        for out in outs:
            data = out.get("data", {})
            if "text/html" in data:
                parts.append(_text(data["text/html"]))
            elif out.get("output_type") == "stream":
                parts.append(f"<pre>{html.escape(_text(out.get('text', '')))}</pre>")
            elif "text/plain" in data:
                parts.append(f"<pre>{html.escape(_text(data['text/plain']))}</pre>")
    elif name in ("HTMLModel", "HTMLMathModel"):
        parts.append(f"<div>{model.get('value', '')}</div>")
    elif name in ("LabelModel",):
        parts.append(f"<div>{html.escape(str(model.get('value', '')))}</div>")
    elif "_options_labels" in model:    # Dropdown, RadioButtons, ...: the choice, or every option
        labels, index = model["_options_labels"], model.get("index")
        label = html.escape(str(model.get("description") or ""))
        if isinstance(index, int) and 0 <= index < len(labels):
            parts.append(f"<div><b>{label}</b> {html.escape(labels[index])}</div>")
        else:
            items = "".join(f"<li>{html.escape(o)}</li>" for o in labels)
            parts.append(f"<div><b>{label}</b><ul>{items}</ul></div>")
    elif "value" in model and name not in ("ButtonModel",):     # sliders, text boxes, ...
        label = html.escape(str(model.get("description") or ""))
        parts.append(f"<div><b>{label}</b> {html.escape(str(model.get('value')))}</div>")
    return "".join(p for p in parts if p)


def _text(x) -> str:
    return "".join(x) if isinstance(x, list) else str(x)


def make_static(nb, prefix: str, font_size: int | None = None, live: dict | None = None):
    """A copy of the notebook whose figures and widgets render without a kernel or network."""
    nb = copy.deepcopy(nb)
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    figures = Figures(prefix, font_size)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        # nbval's markers are for the test suite, not for readers
        cell.source = "\n".join(ln for ln in cell.source.split("\n") if not ln.strip().startswith("# NBVAL_"))
        figures.convert(cell.get("outputs", []))
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_MIME in data:
                inner = widget_html(data[WIDGET_MIME].get("model_id", ""), state, figures, live or {})
                data.clear()
                data["text/html"] = (f'<div class="course-static-widget"><div class="note">{WIDGET_NOTE}</div>'
                                     f"{inner}</div>")
    nb.metadata.pop("widgets", None)
    return nb


# --------------------------------------------------------------------------- building

def lesson_title(nb, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if m:
                return m.group(1).strip()
    return fallback


def _relink(text: str, names: set[str], suffix: str) -> str:
    """href="01_padding.ipynb" -> href="01_padding<suffix>" for lessons that are part of the build."""
    def sub(m):
        target = m.group(2)
        return f'{m.group(1)}{target[:-len(".ipynb")]}{suffix}{m.group(3)}' if target in names else m.group(0)
    return re.sub(r'(href=")([^"/#?]+\.ipynb)((?:#[^"]*)?")', sub, text)


# Run after a lesson's last cell: the figure each live FigureWidget (a panel's figure) shows,
# by model id, so the static page can draw it; printed after a marker line.
FIGURE_MARK = "course-publish-figure-widgets:"
FIGURE_DUMP = f"""
import json as _json
try:
    import plotly.graph_objects as _go
    from plotly.utils import PlotlyJSONEncoder as _Enc
    from ipywidgets.widgets.widget import _instances as _live
    _figs = {{k: w.to_plotly_json() for k, w in list(_live.items()) if isinstance(w, _go.FigureWidget)}}
except Exception:
    _figs, _Enc = {{}}, None
print({FIGURE_MARK!r} + _json.dumps(_figs, cls=_Enc))
"""


def execute(nb, path: Path, timeout: int = 600):
    """Run a lesson top to bottom in a fresh kernel of this Python (figures as plotly JSON).
    Returns {model id: figure JSON} of the FigureWidgets it left on screen."""
    os.environ["PLOTLY_RENDERER"] = "plotly_mimetype"   # every figure as JSON, whatever the lesson imports
    nb.cells.append(nbformat.v4.new_code_cell(FIGURE_DUMP))
    client = _StaticClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                           resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    finally:
        dump = nb.cells.pop()
    text = "".join(o.get("text", "") for o in dump.get("outputs", []) if o.get("output_type") == "stream")
    for line in text.splitlines():
        if line.startswith(FIGURE_MARK):
            return json.loads(line[len(FIGURE_MARK):])
    return {}


class _StaticClient(NotebookClient):
    """nbclient without its mimic of the Output widget.

    The mimic syncs captured outputs back to the kernel on the shell channel, and with
    a figure shown inside an Output widget (a panel) the cell then intermittently waits
    for its full timeout (seen here: 20 of 20 s, 60 of 60 s). Without it, what a panel
    draws lands in the cell's own outputs, after the widget, which is what a static
    page wants; a panel's clear_output clears only that part.
    """

    def on_comm_open_jupyter_widget(self, msg):
        return None

    def process_message(self, msg, cell, cell_index):
        if msg.get("msg_type") == "clear_output":
            keep = [i for i, o in enumerate(cell.outputs) if WIDGET_MIME in o.get("data", {})]
            del cell.outputs[keep[-1] + 1 if keep else 0:]
            return None
        return super().process_message(msg, cell, cell_index)


def build(kind: str, sources: list[Path], out: Path, run: bool) -> list[Path]:
    from nbconvert import HTMLExporter, SlidesExporter

    out.mkdir(parents=True, exist_ok=True)
    copy_assets(out, reveal=kind == "slides")
    suffix = ".slides.html" if kind == "slides" else ".html"
    names = {p.name for p in sources}
    if kind == "slides":
        exporter = SlidesExporter(template_name="course_slides", extra_template_basedirs=[str(TEMPLATES)],
                                  reveal_url_prefix="reveal.js", reveal_theme="white", reveal_transition="slide",
                                  reveal_number="c/t", reveal_width="1280", reveal_height="800",
                                  exclude_input_prompt=True, exclude_output_prompt=True)
    else:
        exporter = HTMLExporter(template_name="course_site", extra_template_basedirs=[str(TEMPLATES)],
                                exclude_input_prompt=False)
    written, index = [], []
    for i, src in enumerate(sources):
        nb = nbformat.read(src, as_version=4)
        start = time.perf_counter()
        live = execute(nb, src) if run else {}
        if kind == "slides":
            mark_slides(nb)                         # a lesson without slide types still gets a deck
        static = make_static(nb, src.stem, font_size=18 if kind == "slides" else None, live=live)
        resources = {"metadata": {"name": src.stem, "path": str(src.parent)},
                     "course": {"static": "static",
                                "prev": sources[i - 1].stem + suffix if i > 0 else "",
                                "next": sources[i + 1].stem + suffix if i + 1 < len(sources) else ""}}
        body, _ = exporter.from_notebook_node(static, resources=resources)
        target = out / f"{src.stem}{suffix}"
        target.write_text(_relink(body, names, suffix), encoding="utf-8")
        written.append(target)
        index.append((target.name, lesson_title(nb, src.stem)))
        print(f"{target}: {'executed and ' if run else ''}rendered in {time.perf_counter() - start:.1f} s", flush=True)
    (out / "index.html").write_text(_index_page(kind, index), encoding="utf-8")
    return written


def _index_page(kind: str, entries: list[tuple[str, str]]) -> str:
    what = "Lecture slides" if kind == "slides" else "Lessons"
    items = "\n".join(f'  <li><a href="{html.escape(href)}">{html.escape(title)}</a></li>' for href, title in entries)
    hint = ("Arrow keys move between slides; <kbd>S</kbd> opens the speaker view; <kbd>F</kbd> goes full screen."
            if kind == "slides" else
            "Figures are interactive (zoom, hover). Widgets need a kernel: run the lessons in JupyterLab to use them.")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>How LLM inference servers manage memory and batch work</title>
<style>body {{ font-family: system-ui, sans-serif; max-width: 760px; margin: 40px auto; padding: 0 16px; }}
li {{ margin: 6px 0; }}</style></head>
<body><h1>How LLM inference servers manage memory and batch work</h1>
<h2>{what}</h2>
<ul>
{items}
</ul>
<p>{hint}</p>
</body></html>
"""


def lessons_in(paths: list[Path]) -> list[Path]:
    found = []
    for p in paths:
        found.extend(sorted(p.glob("*.ipynb")) if p.is_dir() else [p])
    missing = [str(p) for p in found if not p.is_file()]
    if missing:
        raise PublishError(f"no such notebook: {', '.join(missing)}")
    if not found:
        raise PublishError(f"no notebooks in {', '.join(map(str, paths))}")
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("slides", "reveal.js decks from the lessons' stored outputs"),
                        ("site", "execute the lessons and render them as static HTML")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("source", type=Path, help="a folder of notebooks (or one notebook)")
        p.add_argument("out", type=Path, help="output folder")
        if name == "slides":
            p.add_argument("--execute", action="store_true", help="run the lessons first")
        else:
            p.add_argument("--no-execute", action="store_true", help="use the stored outputs")
    p = sub.add_parser("mark-slides", help="add slide metadata to cells that have none")
    p.add_argument("notebooks", type=Path, nargs="+")
    p.add_argument("--check", action="store_true", help="only report notebooks with cells lacking it")
    args = parser.parse_args(argv)
    try:
        if args.command == "mark-slides":
            bad = []
            for path in lessons_in(args.notebooks):
                nb = nbformat.read(path, as_version=4)
                if args.check:
                    if missing_slide_metadata(nb):
                        bad.append(f"{path} ({len(missing_slide_metadata(nb))} of {len(nb.cells)} cells)")
                elif mark_slides(nb):
                    path.write_text(render(nb), encoding="utf-8")
                    print(f"{path}: slide metadata added")
            if bad:
                print("no slide type on some cells: " + "; ".join(bad) + " (run tools/publish.py mark-slides)")
                return 1
            return 0
        run = args.execute if args.command == "slides" else not args.no_execute
        start = time.perf_counter()
        written = build(args.command, lessons_in([args.source]), args.out, run)
        print(f"{args.out}/index.html: {len(written)} {args.command == 'slides' and 'decks' or 'pages'} "
              f"in {time.perf_counter() - start:.1f} s")
        return 0
    except PublishError as exc:
        print(f"publish: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
