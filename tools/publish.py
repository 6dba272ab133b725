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

Decks are planned from the lesson's content at build time (tools/slide_plan.py says how): every
heading opens a slide (`#`/`##` a new one, `###` a vertical sub-slide of its section), text that
follows code opens the next slide of the section, and what does not fit goes on to continuation
sub-slides, so that no slide is taller than the deck (1280 x 800). Long prose shows its lead and
goes whole to the speaker notes, long code and output are collapsed, figures are sized to fit.
Each cell's `metadata.slideshow.slide_type` (JupyterLab: the property inspector, "Slide Type") is
honoured as well: "skip" leaves the cell out, "notes" makes it speaker notes, "slide"/"subslide"
start a new slide of the section (unless the cell is only a short remark on the results above it,
which stays beside them), "fragment" continues the slide. `mark-slides` gives every cell that has none a type: a markdown cell that starts
with a `#`/`##` heading gets "slide", every other cell "-" (continue).
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
from slide_plan import (SLIDE_H, SLIDE_W, WIDGET_MIME, WIDGET_NOTE, WIDGET_STATE, Figures,  # noqa: E402
                        deck_notebook, lesson_title, reader_source, slide_css, widget_html)

SLIDE_TYPES = {"slide", "subslide", "fragment", "skip", "notes", "-"}


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

def make_static(nb, prefix: str, live: dict | None = None):
    """A copy of the notebook whose figures and widgets render without a kernel or network."""
    nb = copy.deepcopy(nb)
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    figures = Figures(prefix)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.source = reader_source(cell.source)
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
                                  reveal_number="c/t", reveal_width=str(SLIDE_W), reveal_height=str(SLIDE_H),
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
            static = deck_notebook(nb, src.stem, live=live)
        else:
            static = make_static(nb, src.stem, live=live)
        resources = {"metadata": {"name": src.stem, "path": str(src.parent)},
                     "course": {"static": "static", "css": slide_css() if kind == "slides" else "",
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
    hint = ("<kbd>Space</kbd> goes through every slide in order; <kbd>&rarr;</kbd> jumps to the next section, "
            "<kbd>&darr;</kbd> to the next slide of a section; <kbd>S</kbd> opens the speaker view (with the "
            "lesson's full text as notes); <kbd>F</kbd> goes full screen."
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
