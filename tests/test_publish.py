"""Classroom delivery (tools/publish.py; the decks' plan: tools/slide_plan.py): slide metadata,
reveal.js decks and the static site, all offline. The decks and pages are built from the lessons'
stored outputs here (fast); `make site` executes the lessons as well. Opening them in Chromium is
skipped without it: that includes measuring every slide of every deck against the deck's slide
height (`pytest tests/test_publish.py -s` prints the tallest slide of each deck)."""

import html
import json
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import publish  # noqa: E402
import slide_plan  # noqa: E402

LESSONS = sorted((ROOT / "notebooks").glob("*.ipynb"))
LESSON = ROOT / "notebooks" / "01_padding.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def launch_chromium(playwright):
    """Debian's headless Chromium (never `playwright install`)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


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
        nbformat.v4.new_output("display_data", data={slide_plan.PLOTLY_MIME: fig}),
        nbformat.v4.new_output("display_data", data={slide_plan.WIDGET_MIME: {"model_id": "a"},
                                                     "text/plain": "VBox()"}),
    ])])
    nb.metadata["widgets"] = {slide_plan.WIDGET_STATE: {"state": state}}
    static = publish.make_static(nb, "lesson", live={"d": fig})
    text = json.dumps(static)
    assert slide_plan.PLOTLY_MIME not in text and slide_plan.WIDGET_MIME not in text
    assert "widgets" not in static.metadata
    html_out = [o["data"]["text/html"] for o in static.cells[0].outputs]
    assert 'id="lesson-fig1"' in html_out[0] and "Plotly.newPlot" in html_out[0]
    assert "sequences</b> 3" in html_out[1] and "pad side</b> right" in html_out[1]
    assert 'id="lesson-fig2"' in html_out[1]                              # the FigureWidget, drawn statically
    assert static.cells[0].source == "show()"                            # nbval markers dropped
    assert slide_plan.PLOTLY_MIME in json.dumps(nb)                      # the original is untouched


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
        browser = launch_chromium(p)
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


# --------------------------------------------------------------------------- lecture decks

def _words(n: int, word: str = "tokens") -> str:
    return " ".join(f"{word}{i}" for i in range(n))


def test_condense_keeps_a_lead_and_balanced_markup():
    short = "A **short** paragraph stays whole."
    assert slide_plan.condense(short, 330, 230) == (short, False)
    long_ = ("The **first** sentence says what matters (see `course_lib.engine`). Then " + _words(30) + ". "
             + "A third sentence, e.g. this one, is only in the notes. " * 4)
    shown, cut = slide_plan.condense(long_, 330, 230)
    assert cut and shown.endswith(" …") and shown.startswith("The **first** sentence")
    assert len(shown) <= 232 and shown.count("**") % 2 == 0 and shown.count("`") % 2 == 0
    one = "**Reading it.** " + "a clause, " * 40 + "and the end."               # no sentence end in reach
    shown, cut = slide_plan.condense(one, 330, 230)
    assert cut and shown.startswith("**Reading it.** a clause") and len(shown) <= 232


def test_text_rows_wraps_like_a_line_breaker():
    assert slide_plan.text_rows("word", 1000, 26) == 1
    assert slide_plan.text_rows(_words(200), slide_plan.CONTENT_W, 26) >= 15
    wide = slide_plan.text_rows("x" * 300, slide_plan.CONTENT_W, 19, "m")          # no space: broken anywhere
    assert wide == -(-300 * slide_plan.MONO_EM * 19 // (slide_plan.CONTENT_W * slide_plan.WRAP))
    assert slide_plan.text_rows("**" + _words(40) + "**", 800, 26) >= slide_plan.text_rows(_words(40), 800, 26)


def _synthetic_lesson():
    fig = {"data": [{"type": "bar", "y": [1, 2]}], "layout": {"height": 900, "title": {"text": "tall"}}}
    code = "\n".join(f"x{i} = {i}  # line {i}" for i in range(60))
    cells = [
        nbformat.v4.new_markdown_cell("# A lesson\n\n" + "An introduction that goes on. " * 30),
        nbformat.v4.new_markdown_cell("## 1. A section\n\nSome items:\n\n" + "\n".join(
            f"* item {i}: {_words(12, 'w')}" for i in range(30))),
        nbformat.v4.new_code_cell(code, outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="\n".join(f"out {i}" for i in range(120))),
            nbformat.v4.new_output("display_data", data={slide_plan.PLOTLY_MIME: fig})]),
        nbformat.v4.new_markdown_cell("### 1.1 A sub-section\n\n| a | b |\n|---|---|\n" + "\n".join(
            f"| row {i} | {_words(20, 'cell')} |" for i in range(25))),
        nbformat.v4.new_markdown_cell("Hidden from the deck.", metadata={"slideshow": {"slide_type": "skip"}}),
        nbformat.v4.new_markdown_cell("Say this aloud.", metadata={"slideshow": {"slide_type": "notes"}}),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    publish.mark_slides(nb)
    return nb


def test_plan_fits_every_slide_and_sends_the_rest_to_notes_and_details():
    slides = slide_plan.plan(slide_plan.deck_items(_synthetic_lesson(), "t"))
    assert all(s.used <= slide_plan.BUDGET for s in slides), [round(s.used) for s in slides]
    kinds = [s.kind for s in slides]
    assert kinds[0] == "slide" and kinds.count("slide") == 2                # "#" and "##"; "###" is a sub-slide
    html_ = "".join(b.html for s in slides for b in s.blocks)
    notes = " ".join(n for s in slides for b in s.blocks for n in b.notes)
    assert "An introduction that goes on." * 2 not in html_ and ("An introduction that goes on. " * 30).strip() in notes
    assert html_.count('<details class="course-more">') == 2                 # the 60-line cell, the 120-line output
    assert "out 0\n" in html_ and "out 60\n" in html_                       # the output over two slides first
    assert "zoom:" in html_                                                   # the 900-px figure, zoomed to fit
    assert html_.count("<li>") == 30 and html_.count("<table") >= 2           # the list and the table split
    assert "Hidden from the deck." not in html_ and "Say this aloud." in notes
    titles = [b.html for s in slides for b in s.blocks if b.kind == "heading"]
    assert [re.sub("<[^>]+>", "", t) for t in titles] == ["A lesson", "1. A section", "1.1 A sub-section"]


def test_text_after_code_opens_a_slide_unless_it_is_a_remark_that_fits():
    c = nbformat.v4
    nb = c.new_notebook(cells=[c.new_markdown_cell("## A section\n\nIntro."), c.new_code_cell("x = 1"),
                               c.new_markdown_cell("A new idea, with code of its own."), c.new_code_cell("y = 2"),
                               c.new_markdown_cell("A short remark on the result.")])
    publish.mark_slides(nb)
    slides = slide_plan.plan(slide_plan.deck_items(nb, "t"))
    assert [[b.kind for b in s.blocks] for s in slides] == [["heading", "para", "code"], ["para", "code", "para"]]
    assert [s.kind for s in slides] == ["slide", "subslide"]


@pytest.fixture(scope="module")
def decks(tmp_path_factory):
    """Every lesson's deck, from its stored outputs."""
    out = tmp_path_factory.mktemp("decks")
    publish.build("slides", LESSONS, out, run=False)
    return out


def _headings(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    found = []
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.metadata.get("slideshow", {}).get("slide_type") != "skip":
            found += [m.group(2) for m in re.finditer(r"^(#{1,3})\s+(.*?)\s*#*\s*$", cell.source, re.M)]
    return [html.unescape(re.sub(r"<[^>]+>", "", slide_plan.md_html(h, inline=True))).strip() for h in found]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_every_section_opens_a_slide_with_notes_beside(decks, path):
    deck = (decks / f"{path.stem}.slides.html").read_text()
    slides = re.findall(r"<section[^>]*>\s*(?!<section)(.*?)</section>", deck, re.S)
    titles = [html.unescape(re.sub(r"<[^>]+>", "", m)).strip()
              for s in slides for m in re.findall(r'<div class="course-slide"><h[123]>(.*?)</h[123]>', s, re.S)]
    missing = [h for h in _headings(path) if h not in titles]
    assert not missing, f"{path.name}: no slide opens with these headings: {missing}"
    assert len(slides) >= len(titles) and len(slides) >= 8
    assert deck.count('<aside class="notes">') >= 3                           # the prose left off the slides


MEASURE = """async () => {
  await Promise.all(['400 26px "Source Sans Pro"', '600 26px "Source Sans Pro"',
                     'italic 400 26px "Source Sans Pro"'].map(f => document.fonts.load(f)));
  await document.fonts.ready;
  Reveal.configure({transition: 'none', backgroundTransition: 'none'});
  const root = document.querySelector('.reveal .slides');
  const leaves = [...root.querySelectorAll('section')].filter(s => !s.querySelector('section'));
  const out = [];
  for (const s of leaves) {
    const ix = Reveal.getIndices(s);
    Reveal.slide(ix.h, ix.v);
    const box = root.getBoundingClientRect(), k = box.width / root.offsetWidth;
    let bottom = 0, right = 0;
    for (const el of s.querySelectorAll('*')) {
      // what a closed <details> holds is not drawn; an SVG's parts are clipped by the SVG
      if (el.ownerSVGElement || (el.closest('details:not([open])') && !el.closest('summary'))) continue;
      if (el.classList.contains('course-slide')) continue;       // the slide's own box: its padding
      const r = el.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) continue;
      bottom = Math.max(bottom, (r.bottom - box.top) / k);
      right = Math.max(right, (r.right - box.left) / k);
    }
    const title = s.querySelector('h1, h2, h3, .course-label');
    out.push({where: `${ix.h + 1}.${(ix.v || 0) + 1}`, height: Math.round(bottom), width: Math.round(right),
              title: title ? title.textContent.trim().slice(0, 60) : ''});
  }
  return {width: Reveal.getConfig().width, height: Reveal.getConfig().height,
          fonts: document.fonts.check('600 26px "Source Sans Pro"'), slides: out};
}"""


@pytest.mark.skipif(not CHROMIUM.exists(), reason="measuring the slides needs Chromium at /usr/bin/chromium "
                                                  "(apt-get install -y chromium; .ci/run installs it)")
def test_every_slide_of_every_deck_fits_the_deck_in_chromium(decks):
    """Every slide of every deck drawn in Chromium (fonts loaded, figures drawn): the lowest and the
    rightmost point of what it shows must lie inside the deck's slide (reveal.js width x height)."""
    from playwright.sync_api import sync_playwright

    report, too_big, errors = [], [], []
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file://") else r.abort())
            for path in LESSONS:
                start = time.perf_counter()
                page.goto((decks / f"{path.stem}.slides.html").as_uri())
                page.wait_for_function("() => window.Reveal && Reveal.isReady()", timeout=60_000)
                got = page.evaluate(MEASURE)
                assert got["fonts"], "Source Sans Pro (reveal.js's theme font, beside the deck) did not load"
                tallest = max(got["slides"], key=lambda s: s["height"])
                widest = max(got["slides"], key=lambda s: s["width"])
                report.append(f"{path.stem}: {len(got['slides'])} slides; tallest {tallest['height']} px "
                              f"(slide {tallest['where']} {tallest['title']!r}) of {got['height']}; widest "
                              f"{widest['width']} of {got['width']} ({time.perf_counter() - start:.1f} s)")
                too_big += [f"{path.stem} slide {s['where']} {s['title']!r}: {s['width']} x {s['height']} px"
                            for s in got["slides"] if s["height"] > got["height"] or s["width"] > got["width"]]
        finally:
            browser.close()
    print("\n" + "\n".join(report))
    assert not too_big, "slides larger than the deck:\n" + "\n".join(too_big) + "\n\n" + "\n".join(report)
    assert errors == []
