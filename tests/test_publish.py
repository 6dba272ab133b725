"""Classroom delivery (tools/publish.py): slide metadata, reveal.js decks and the static site,
all offline. The decks and pages are built from the lessons' stored outputs here (fast);
`make site` executes the lessons as well. Opening them in Chromium is skipped without it."""

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import publish  # noqa: E402

LESSONS = sorted((ROOT / "notebooks").glob("*.ipynb"))
LESSON = ROOT / "notebooks" / "01_padding.ipynb"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_every_lesson_carries_slide_metadata(path):
    nb = nbformat.read(path, as_version=4)
    missing = publish.missing_slide_metadata(nb)
    assert not missing, (f"{path.name}: {len(missing)} cells have no slide type; "
                         f"run `python tools/publish.py mark-slides {path.relative_to(ROOT)}`")
    assert nb.cells[0].metadata["slideshow"]["slide_type"] == "slide"


def test_mark_slides_defaults():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Title"), nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_markdown_cell("## 1. A section"), nbformat.v4.new_markdown_cell("text"),
        nbformat.v4.new_markdown_cell("### a sub-heading")])
    nb.cells[3].metadata["slideshow"] = {"slide_type": "fragment"}          # kept as the author set it
    assert publish.missing_slide_metadata(nb) == [0, 1, 2, 4]
    assert publish.mark_slides(nb) == 4 and publish.missing_slide_metadata(nb) == []
    assert [c.metadata["slideshow"]["slide_type"] for c in nb.cells] == ["slide", "-", "slide", "fragment", "-"]


def test_static_copy_has_no_plotly_json_or_live_widgets():
    fig = {"data": [{"type": "bar", "y": [1, 2]}], "layout": {"title": {"text": "t"}}}
    state = {"a": {"state": {"_model_name": "VBoxModel", "children": ["IPY_MODEL_b", "IPY_MODEL_c", "IPY_MODEL_d"]}},
             "b": {"state": {"_model_name": "IntSliderModel", "description": "sequences", "value": 3}},
             "c": {"state": {"_model_name": "DropdownModel", "description": "pad side", "index": 1,
                             "_options_labels": ["left", "right"]}},
             "d": {"state": {"_model_name": "AnyModel"}}}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("# NBVAL_IGNORE_OUTPUT\nshow()", outputs=[
        nbformat.v4.new_output("display_data", data={publish.PLOTLY_MIME: fig}),
        nbformat.v4.new_output("display_data", data={publish.WIDGET_MIME: {"model_id": "a"}, "text/plain": "VBox()"}),
    ])])
    nb.metadata["widgets"] = {publish.WIDGET_STATE: {"state": state}}
    static = publish.make_static(nb, "lesson", live={"d": fig})
    text = json.dumps(static)
    assert publish.PLOTLY_MIME not in text and publish.WIDGET_MIME not in text and "widgets" not in static.metadata
    html_out = [o["data"]["text/html"] for o in static.cells[0].outputs]
    assert 'id="lesson-fig1"' in html_out[0] and "Plotly.newPlot" in html_out[0]
    assert "sequences</b> 3" in html_out[1] and "pad side</b> right" in html_out[1]
    assert 'id="lesson-fig2"' in html_out[1]                              # the FigureWidget, drawn statically
    assert static.cells[0].source == "show()"                            # nbval markers dropped
    assert publish.PLOTLY_MIME in json.dumps(nb)                         # the original is untouched


def test_relink_points_lessons_at_their_pages():
    text = '<a href="02_kv.ipynb">next</a> <a href="../exercises/01_padding.ipynb">ex</a> <a href="x.ipynb#s">'
    out = publish._relink(text, {"02_kv.ipynb", "x.ipynb"}, ".slides.html")
    assert out == '<a href="02_kv.slides.html">next</a> <a href="../exercises/01_padding.ipynb">ex</a> <a href="x.slides.html#s">'


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("publish")
    publish.build("slides", [LESSON], out / "slides", run=False)
    publish.build("site", [LESSON], out / "site", run=False)
    return out


def _external(html_text: str) -> list[str]:
    """Every script/stylesheet/image the page would load from another host."""
    refs = re.findall(r'<(?:script|img|iframe)[^>]*\bsrc="([^"]+)"', html_text)
    refs += re.findall(r'<link[^>]*\bhref="([^"]+)"', html_text)
    refs += re.findall(r'import\s*\(?\s*["\']([^"\']+)["\']', html_text)
    return [r for r in refs if re.match(r"(https?:)?//", r)]


def test_decks_and_pages_load_nothing_from_the_network(built):
    deck = (built / "slides" / "01_padding.slides.html").read_text()
    page = (built / "site" / "01_padding.html").read_text()
    for text in (deck, page):
        assert _external(text) == []
        assert "cdn" not in " ".join(re.findall(r'src="[^"]*"', text)).lower()
        assert "application/vnd.plotly.v1+json" not in text and "Plotly.newPlot" in text
    assert (built / "slides" / "reveal.js" / "dist" / "reveal.js").is_file()
    assert (built / "slides" / "reveal.js" / "plugin" / "notes" / "notes.js").is_file()
    for out in ("slides", "site"):
        assert (built / out / "static" / "plotly.min.js").stat().st_size > 1_000_000
        assert (built / out / "index.html").is_file()
    assert 'src="reveal.js/dist/reveal.js"' in deck and "<section" in deck


@pytest.mark.skipif(not CHROMIUM.exists(), reason="opening the pages needs Chromium at /usr/bin/chromium "
                                                  "(apt-get install -y chromium; .ci/run installs it)")
def test_deck_and_page_render_offline_in_chromium(built):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            offsite, errors = [], []
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file://")
                       else (offsite.append(r.request.url), r.abort()))
            page.goto((built / "slides" / "01_padding.slides.html").as_uri())
            page.wait_for_function("() => window.Reveal && Reveal.isReady()", timeout=30_000)
            assert page.evaluate("() => Reveal.getTotalSlides()") >= 5
            page.evaluate("() => Reveal.slide(Reveal.getTotalSlides() - 1)")
            page.goto((built / "site" / "01_padding.html").as_uri())
            page.wait_for_function("() => document.querySelectorAll('.plotly-graph-div').length > 0 && "
                                   "[...document.querySelectorAll('.plotly-graph-div')]"
                                   ".every(d => d.querySelector('svg.main-svg'))", timeout=30_000)
            assert page.locator(".course-static-widget").count() >= 1
            assert errors == [] and offsite == []
        finally:
            browser.close()
