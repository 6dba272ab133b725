"""Lecture decks, planned at build time: what goes on each slide, so that no slide is taller than
the deck. tools/publish.py renders the result with reveal.js (`make slides`).

    deck = deck_notebook(nb, "01_padding")     # the lesson as a notebook of slides, one raw HTML cell each
    css = slide_css()                          # the deck's CSS, from the numbers the planner measures with

A deck is SLIDE_W x SLIDE_H (1280 x 800) px. reveal.js scales a slide to the screen, but what does
not fit on it is not carried over to another slide: it runs off the bottom. So nothing is left to
the browser; a deck is planned here, from the lesson's content, in four steps.

1. Blocks. `deck_items` reads the lesson cell by cell into a stream of Blocks (a heading, a
   paragraph, a list, a table, a code cell, a text output, a figure, a static copy of a widget),
   each with its HTML, its height and its speaker notes, and of slide boundaries between them:
   every heading opens a slide (`#`/`##` a new one, `###` a vertical sub-slide of its section);
   markdown that follows code opens the next slide of the section (one idea a slide), unless it is
   only a short remark on the results above it and fits beside them. A cell's
   `metadata.slideshow.slide_type` is honoured too: "skip" leaves it out, "notes" makes it speaker
   notes, "slide"/"subslide" start a new slide of the section, "fragment" continues the slide.

2. Measured heights. Nothing is drawn while planning: a block's height is computed from its text.
   `text_rows` is a greedy line-breaker over the advance widths of the font the slides use (Source
   Sans Pro, which reveal.js ships; _REGULAR and _SEMIBOLD are its widths as Chromium measures
   them), `mono_rows` the same for code and output, and rows times the line height plus the gaps
   is the height. Lines are broken as if the box were only WRAP (0.95) of its width, to err on the
   safe side. The font sizes, line heights, gaps and paddings are constants here, and `slide_css`
   writes the deck's CSS from the same numbers, so that the estimate and the drawing agree. HTML
   that is not ours (a widget's static copy, an HTML output) is only estimated, and may be zoomed
   smaller.

3. The budget. `plan` packs the blocks, in order, into slides of at most BUDGET px: the slide's
   height less its padding and the room for reveal.js's controls and slide number. A block that
   does not fit in what is left of the slide is drawn smaller (`shrink`: a figure or a widget
   zoomed, a long code cell showing fewer of its lines, down to its `least`) when much of the slide
   is left, else split (`split`: a list between items, a table between rows with its header
   repeated, an output between lines, at a blank one where one is near), else moved whole to the
   next slide. A paragraph that ends with ":" goes with the start of what follows it.

4. Continuation slides. What goes on past a full slide goes on a continuation sub-slide of the
   same section (the ↓ key): `slide_cells` starts it with the section's title and its place k/n
   among the section's slides (LABEL_LH px, which the budget counts), so the class sees where it is.
   Code longer than CODE_ROWS rows shows its first lines and a <details> that opens the whole cell
   over the slide; a long output goes over OUT_SLIDES slides at most, the rest behind a <details>.

Speaker notes (<aside class="notes">, the S key): the slide shows the lead, the notes the whole.
A paragraph longer than PARA_MAX characters (a list item: ITEM_MAX) shows its first sentence(s) and
" …" (`condense`) and goes whole to the notes of its slide, as do "notes" cells and a line for each
collapsed code cell or output; a slide that would hold only notes gives them to the slide before.

The static copies of outputs that blocks are drawn with (plotly figures as divs drawn by plotly.js:
`Figures`; widgets as what they showed: `widget_html`) are here as well; tools/publish.py uses them
for the site's pages too (make_static).

tests/test_publish.py draws every slide of every deck in Chromium and measures it against the deck.
"""

from __future__ import annotations

import copy
import html
import re
from urllib.parse import quote as url_quote

import nbformat

PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_NOTE = "Interactive in JupyterLab: open this lesson there to change the values. Shown here as it first ran."


# ---- the slide's geometry and type sizes: slide_css draws the deck from the same numbers

SLIDE_W, SLIDE_H = 1280, 800
PAD_X, PAD_TOP, PAD_BOTTOM = 48, 24, 40          # PAD_BOTTOM: room for the controls and the slide number
CONTENT_W = SLIDE_W - 2 * PAD_X
BUDGET = SLIDE_H - PAD_TOP - PAD_BOTTOM          # the height the planner fills
WRAP = 0.95                                      # lines are broken as if they were this much narrower

TEXT, TEXT_LH, GAP, LI_GAP, INDENT = 26, 35, 12, 4, 30
HEAD = {1: (46, 54, 16), 2: (38, 46, 14), 3: (30, 38, 10)}    # level: (font px, line px, gap below)
LABEL, LABEL_LH = 21, 28                         # a continuation slide's reminder of its section
CODE, CODE_LH, CODE_PAD, CODE_ROWS, CODE_MIN_ROWS = 19, 25, 8, 16, 6
TABLE, TABLE_LH, CELL_PAD = 19, 25, 8
OUT_MAX, OUT_MIN, OUT_SLIDES = 19, 14, 2
NOTE, NOTE_LH = 19, 25
FIG_DEFAULT, FIG_MIN = 450, 330
PARA_MAX, PARA_LEAD = 330, 230                   # characters: a longer paragraph shows its lead
ITEM_MAX, ITEM_LEAD = 200, 150

# Advance widths (1/1000 em) of ASCII 32-126 in Source Sans Pro regular and semibold, as Chromium
# measures them; any other character counts as 1 em (emoji, symbols: whatever font draws them).
_REGULAR = (202, 289, 425, 497, 497, 824, 609, 249, 303, 303, 418, 497, 249, 311, 249, 350, 497, 497, 497, 497,
            497, 497, 497, 497, 497, 497, 249, 249, 497, 497, 497, 425, 847, 544, 588, 571, 615, 527, 494, 617,
            652, 263, 480, 579, 486, 727, 647, 664, 576, 664, 581, 534, 536, 645, 515, 786, 513, 476, 539, 303,
            350, 303, 497, 500, 542, 512, 555, 456, 555, 496, 292, 504, 544, 246, 247, 495, 255, 829, 547, 542,
            555, 550, 347, 419, 338, 544, 467, 718, 446, 467, 425, 303, 241, 303, 497)
_SEMIBOLD = (205, 315, 482, 513, 513, 841, 639, 275, 324, 324, 438, 513, 275, 322, 275, 344, 513, 513, 513, 513,
             513, 513, 513, 513, 513, 513, 275, 275, 513, 513, 513, 444, 875, 558, 597, 576, 625, 538, 510, 628,
             663, 282, 494, 597, 502, 745, 656, 674, 592, 674, 599, 545, 546, 655, 536, 800, 541, 501, 540, 324,
             344, 324, 513, 500, 549, 523, 564, 462, 564, 507, 317, 520, 558, 262, 263, 522, 271, 843, 560, 549,
             564, 561, 373, 431, 361, 556, 495, 748, 481, 495, 443, 324, 255, 324, 513)
MONO_EM = 0.61                                   # monospace advance (DejaVu Sans Mono, Menlo: 0.602 em)


def _char_em(ch: str, style: str) -> float:
    if style == "m":
        return MONO_EM if ch.isascii() else 1.0
    o = ord(ch)
    if 32 <= o < 127:
        return (_SEMIBOLD if style == "b" else _REGULAR)[o - 32] / 1000
    return 1.0


_INLINE_TOKEN = re.compile(r"`[^`]*`|\*\*|\[|\]\([^)]*\)|<[^>\s][^>]*>|&#?\w+;|\$[^$]+\$")


def _runs(md: str) -> list[tuple[str, str]]:
    """Inline markdown as (text, style) runs: "r" regular, "b" bold, "m" code (drawn at 0.85 em)."""
    runs, bold, pos = [], False, 0
    for m in _INLINE_TOKEN.finditer(md):
        if m.start() > pos:
            runs.append((md[pos:m.start()].replace("*", "").replace("\\", ""), "b" if bold else "r"))
        tok = m.group(0)
        if tok == "**":
            bold = not bold
        elif tok.startswith("`"):
            runs.append(("\x00" + tok[1:-1] + "\x00", "m"))       # \x00: the code span's padding
        elif tok.startswith("&"):
            runs.append(("x", "b" if bold else "r"))
        elif tok.startswith("$"):
            runs.append((_tex_text(tok.strip("$")), "r"))
        pos = m.end()
    runs.append((md[pos:].replace("*", "").replace("\\", ""), "b" if bold else "r"))
    return runs


def _word_widths(md: str, size: float, style: str = "r") -> list[float]:
    """The widths (px) of the words of inline markdown `md` at `size` px; style "m": preformatted."""
    words, cur = [], 0.0
    for text, st in (_runs(md) if style != "m" else [(md, "m")]):
        st = "b" if style == "b" and st == "r" else st
        scale = size * (0.85 if st == "m" and style != "m" else 1.0)
        for ch in text:
            if ch == "\x00":
                cur += 3
            elif ch in " \n\t":
                words.append(cur)
                cur = 0.0
            else:
                cur += _char_em(ch, st) * scale
    words.append(cur)
    return words


def line_width(md: str, size: float, style: str = "r") -> float:
    """The width (px) of `md` on one line."""
    words = _word_widths(md, size, style)
    return sum(words) + (len(words) - 1) * _char_em(" ", "m" if style == "m" else "r") * size


def text_rows(md: str, width: float, size: float, style: str = "r") -> int:
    """How many lines the inline markdown `md` takes in a box `width` px wide at `size` px:
    a greedy line-breaker that breaks only at spaces (the browser may also break after a hyphen,
    which only ever saves lines)."""
    width *= WRAP
    space = _char_em(" ", "m" if style == "m" else "r") * size
    rows, line = 1, None
    for w in _word_widths(md, size, style):
        if line is not None and line + space + w <= width:
            line += space + w
            continue
        if line is not None:
            rows += 1
        line = w
        while line > width:                                 # a word longer than the line: broken anywhere
            rows, line = rows + 1, line - width
    return rows


def mono_rows(line: str, width: float, size: float) -> int:
    """Rows a line of preformatted text takes with `white-space: pre-wrap` (breaks at spaces)."""
    return text_rows(line.replace("\t", "    "), width, size, "m") if line.strip() else 1


def _tex_text(tex: str) -> str:
    """Simple TeX as text (the decks load no MathJax): \\text{a} -> a, \\times -> ×."""
    for a, b in ((r"\times", "×"), (r"\cdot", "·"), (r"\approx", "≈"), (r"\le", "≤"), (r"\ge", "≥"),
                 (r"\,", " "), (r"\ ", " ")):
        tex = tex.replace(a, b)
    tex = re.sub(r"\\(?:text|mathrm|mathbf)\{([^}]*)\}", r"\1", tex)
    return re.sub(r"\s+", " ", tex.replace("{", "").replace("}", "")).strip()


def _slide_markdown(md: str) -> str:
    """Markdown for a slide: TeX spans as plain text in a <span class="math">."""
    md = re.sub(r"\$\$(.+?)\$\$", lambda m: f'<span class="math">{html.escape(_tex_text(m.group(1)))}</span>', md, flags=re.S)
    return re.sub(r"(?<![\\$])\$([^$\n]+)\$", lambda m: f'<span class="math">{html.escape(_tex_text(m.group(1)))}</span>', md)


def md_html(md: str, inline: bool = False) -> str:
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    if inline:          # a title or a table cell: "6. Title" is no list, "# x" no heading
        md = re.sub(r"^(\s*)(\d+)([.)])", r"\1\2\\\3", md)
        md = re.sub(r"^(\s*)([-+*#>])(?=\s)", r"\1\\\2", md)
    out = markdown2html_mistune(_slide_markdown(md)).strip()
    if inline and out.startswith("<p>") and out.endswith("</p>") and out.count("<p>") == 1:
        out = out[3:-4]
    return out


# ---- condensing prose: a paragraph's lead on the slide, the whole of it in the notes

def _safe_cuts(text: str) -> list[bool]:
    """safe[i]: cutting the text before position i leaves no code span, link or emphasis open."""
    safe, code, link, url, bold, ital, math = [], False, 0, False, False, False, False
    i = 0
    while i < len(text):
        safe.append(not (code or link or url or bold or ital or math))
        c = text[i]
        if code:
            code = c != "`"
        elif url:
            url = c != ")"
        elif c == "`":
            code = True
        elif c == "$":
            math = not math
        elif c == "[":
            link += 1
        elif c == "]" and link:
            link -= 1
            if text[i + 1:i + 2] == "(":
                url, i = True, i + 1
                safe.append(False)
        elif text.startswith("**", i):
            bold = not bold
            safe.append(False)
            i += 1
        elif c == "*":
            ital = not ital
        i += 1
    safe.append(not (code or link or url or bold or ital or math))
    return safe[:len(text) + 1]


_ABBREV = ("e.g.", "i.e.", "vs.", "cf.", "etc.", "approx.", "no.", "fig.")


def _sentence_ends(text: str, safe: list[bool]) -> list[int]:
    ends = []
    for m in re.finditer(r"[.!?](?:\*\*|\*|\))?(?=\s+[A-Z0-9*`(\[\"'])", text):
        end = m.end()
        word = text[:m.start() + 1].rsplit(None, 1)[-1].lower()
        if safe[end] and not word.endswith(_ABBREV):
            ends.append(end)
    return ends


def condense(md: str, most: int, lead: int) -> tuple[str, bool]:
    """(what the slide shows, whether that is shorter than `md`): text of up to `most` characters
    is kept; a longer one keeps its first sentences up to `lead` characters (at least one sentence
    when that is under `most`, else a cut at a clause or a word) and ends with " …"."""
    text = " ".join(md.split())
    if len(text) <= most:
        return text, False
    safe = _safe_cuts(text)
    ends = _sentence_ends(text, safe)
    cut = max((e for e in ends if e <= lead), default=0)
    if cut < lead // 5:                 # "**Reading it.** ..." is no lead: the next sentence end, if short enough
        cut = next((e for e in ends if lead // 5 <= e <= most), None)
    if cut is None:
        clauses = [m.start() + 1 for m in re.finditer(r"[;:,)] ", text[:lead]) if safe[m.start() + 1]]
        words = [m.start() for m in re.finditer(r" ", text[:lead]) if safe[m.start()]]
        cut = max(clauses) if clauses and max(clauses) > lead // 2 else (max(words) if words else None)
    if cut is None or cut >= len(text) - 30:
        return text, False
    return text[:cut].rstrip(" ,;:") + " …", True


# ---- markdown blocks

_LIST_ITEM = re.compile(r"(\s*)([*+-]|\d+[.)])\s+(.*)")


def md_blocks(src: str) -> list[tuple]:
    """A markdown cell as blocks: ("heading", level, text), ("para", text), ("list", [(indent, marker,
    text)]), ("table", [row, ...]), ("fence", info, code), ("quote", text), ("html", text)."""
    lines, blocks, i = src.split("\n"), [], 0

    def starts(ln):                 # the line opens a block of another kind
        return re.match(r"#{1,6}\s", ln) or ln.lstrip().startswith(("```", "~~~", "|", ">")) or _LIST_ITEM.match(ln)
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if m := re.match(r"(#{1,6})\s+(.*?)\s*#*\s*$", line):
            blocks.append(("heading", len(m.group(1)), m.group(2)))
            i += 1
        elif line.lstrip().startswith(("```", "~~~")):
            fence, info, body = line.lstrip()[:3], line.lstrip()[3:].strip(), []
            i += 1
            while i < len(lines) and not lines[i].lstrip().startswith(fence):
                body.append(lines[i])
                i += 1
            blocks.append(("fence", info, "\n".join(body)))
            i += 1
        elif line.lstrip().startswith("|"):
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(lines[i].strip())
                i += 1
            blocks.append(("table", rows))
        elif line.startswith(">"):
            body = []
            while i < len(lines) and lines[i].startswith(">"):
                body.append(lines[i][1:].strip())
                i += 1
            blocks.append(("quote", "\n".join(body)))
        elif _LIST_ITEM.match(line):
            items = []
            while i < len(lines):
                ln = lines[i]
                if m := _LIST_ITEM.match(ln):
                    items.append([m.group(1), m.group(2), m.group(3)])
                elif ln.strip() and (ln.startswith((" ", "\t")) or not starts(ln)) and items:
                    items[-1][2] += "\n" + ln.strip()
                elif not ln.strip() and i + 1 < len(lines) and _LIST_ITEM.match(lines[i + 1]):
                    pass
                else:
                    break
                i += 1
            blocks.append(("list", [tuple(it) for it in items]))
        else:
            body = []
            while i < len(lines) and lines[i].strip() and not (body and starts(lines[i])):
                body.append(lines[i])
                i += 1
            text = "\n".join(body)
            blocks.append(("html" if re.match(r"\s*<(div|table|details|img|iframe)\b", text) else "para", text))
    return blocks


def _table_rows(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    def cells(line):
        line = line.strip().removeprefix("|").removesuffix("|")
        return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)]
    rows = [cells(ln) for ln in lines]
    if len(rows) > 1 and all(re.fullmatch(r":?-+:?", c) for c in rows[1] if c):
        return rows[0], rows[2:]
    return [], rows


# ---- blocks: what a slide is made of

class Block:
    """A piece of a slide: its HTML, its estimated height in px, speaker notes (markdown), and
    optionally how to split it (`split(avail)` -> (a part that fits, the rest) or None) or to draw
    it smaller (`shrink(avail)` -> a block at most that tall, allowed down to `least`)."""

    def __init__(self, html_: str, height: float, notes=(), split=None, shrink=None, least=0.0,
                 keep_with_next=False, kind=""):
        self.html, self.height, self.notes = html_, float(height), list(notes)
        self.split, self.shrink, self.least = split, shrink, least
        self.keep_with_next, self.kind = keep_with_next, kind


def heading_block(level: int, text: str) -> Block:
    size, lh, gap = HEAD[min(level, 3)]
    rows = text_rows(text, CONTENT_W, size, "b")
    tag = f"h{min(level, 3)}"
    return Block(f"<{tag}>{md_html(text, inline=True)}</{tag}>", rows * lh + gap, kind="heading")


def para_block(text: str, quote: bool = False) -> Block:
    shown, cut = condense(text, PARA_MAX, PARA_LEAD)
    width = CONTENT_W - (INDENT if quote else 0)
    rows = text_rows(shown, width, TEXT)
    body = md_html(shown)
    if quote:
        body = f"<blockquote>{body}</blockquote>"
    return Block(body, rows * TEXT_LH + GAP, notes=[text] if cut else [],
                 keep_with_next=shown.rstrip().endswith(":"), kind="para")


def list_block(items: list[tuple[str, str, str]]) -> Block:
    indents = sorted({len(ind) for ind, _, _ in items})
    shown, notes, heights = [], [], []
    for ind, marker, text in items:
        level = indents.index(len(ind))
        short, cut = condense(text, ITEM_MAX, ITEM_LEAD)
        shown.append((ind, marker, short))
        if cut:
            notes.append(f"{marker} {' '.join(text.split())}")
        heights.append(text_rows(short, CONTENT_W - INDENT * (level + 1), TEXT) * TEXT_LH + LI_GAP)
    return _list_part(shown, notes, heights)


def _list_part(shown, notes, heights) -> Block:
    src = "\n".join(f"{ind}{marker} {text}" for ind, marker, text in shown)

    def split(avail):
        n, used = 0, GAP
        while n < len(heights) and used + heights[n] <= avail:
            used, n = used + heights[n], n + 1
        if n == 0 or n == len(heights):
            return None
        base = min(len(ind) for ind, _, _ in shown[n:])           # the rest may start with a nested item
        rest = [(ind[base:], m, t) for ind, m, t in shown[n:]]
        return _list_part(shown[:n], [], heights[:n]), _list_part(rest, notes, heights[n:])
    return Block(md_html(src), sum(heights) + GAP, notes=notes, split=split, kind="list")


def table_block(lines: list[str]) -> Block:
    head, rows = _table_rows(lines)
    ncol = max(len(r) for r in [head, *rows] if r)
    grid = [r + [""] * (ncol - len(r)) for r in ([head] if head else []) + rows]
    natural = [max(line_width(c, TABLE, "b" if (head and k == 0) else "r") for k, c in enumerate(col)) / WRAP
               + 2 * CELL_PAD + 4 for col in zip(*grid)]
    widths = [int(w) for w in _share(natural, CONTENT_W)]
    row_h = [max(text_rows(c, w - 2 * CELL_PAD, TABLE, "b" if (head and k == 0) else "r")
                 for c, w in zip(r, widths)) * TABLE_LH + 2 * 4 + 1 for k, r in enumerate(grid)]
    head_h = row_h[0] if head else 0
    body = list(zip(grid[1:] if head else grid, row_h[1:] if head else row_h))
    return _table_part(head, body, widths, head_h)


def _share(natural: list[float], width: float) -> list[float]:
    """Column widths: each column its natural width when they all fit, else the narrow ones keep
    theirs and the wide ones share what is left equally."""
    if sum(natural) <= width:
        return natural
    out, left, todo = [0.0] * len(natural), width, set(range(len(natural)))
    while todo:
        share = left / len(todo)
        small = [i for i in todo if natural[i] <= share]
        if not small:
            for i in todo:
                out[i] = share
            break
        for i in small:
            out[i], left = natural[i], left - natural[i]
            todo.discard(i)
    return out


def _table_part(head, body, widths, head_h) -> Block:
    cols = "".join(f'<col style="width:{w}px">' for w in widths)
    thead = ("<thead><tr>" + "".join(f"<th>{md_html(c, inline=True)}</th>" for c in head) + "</tr></thead>"
             if head else "")
    tbody = "".join("<tr>" + "".join(f"<td>{md_html(c, inline=True)}</td>" for c in r) + "</tr>" for r, _ in body)
    html_ = (f'<table class="course-table" style="width:{sum(widths)}px"><colgroup>{cols}</colgroup>'
             f"{thead}<tbody>{tbody}</tbody></table>")

    def split(avail):
        n, used = 0, head_h + GAP
        while n < len(body) and used + body[n][1] <= avail:
            used, n = used + body[n][1], n + 1
        if n == 0 or n == len(body):
            return None
        return _table_part(head, body[:n], widths, head_h), _table_part(head, body[n:], widths, head_h)
    return Block(html_, head_h + sum(h for _, h in body) + GAP, split=split, kind="table")


def _highlight(code: str, lexer: str) -> str:
    from nbconvert.filters.highlight import Highlight2HTML

    return Highlight2HTML(pygments_lexer=lexer or "ipython3")(code)


def code_block(src: str, lexer: str = "ipython3", where: str = "") -> Block:
    """A code cell: all of it when it takes at most CODE_ROWS rows, else its first lines and a
    <details> that shows the whole cell over the slide."""
    lines = src.rstrip("\n").split("\n")
    width = CONTENT_W - 2 * 12
    rows = [mono_rows(ln, width, CODE) for ln in lines]

    def make(max_rows: int) -> Block:
        n, used = 0, 0
        while n < len(lines) and used + rows[n] <= max_rows:
            used, n = used + rows[n], n + 1
        if n == len(lines):
            return Block(f'<div class="course-code">{_highlight(src, lexer)}</div>',
                         used * CODE_LH + 2 * CODE_PAD + GAP, kind="code")
        if lines[n - 1].strip() == "" and n > 1:
            n, used = n - 1, used - rows[n - 1]
        more = len(lines) - n
        summary = f"… {more} more line{'s' * (more != 1)}: show the whole cell"
        body = (f'<div class="course-code">{_highlight(chr(10).join(lines[:n]), lexer)}</div>'
                f'<details class="course-more"><summary>{summary}</summary>'
                f'<div class="course-code">{_highlight(src, lexer)}</div></details>')
        note = (f"The code{where} continues for {more} more lines (\"{summary}\" opens the whole cell); "
                "the lesson has it in full.")
        return Block(body, used * CODE_LH + 2 * CODE_PAD + NOTE_LH + 6 + GAP, notes=[note],
                     shrink=lambda avail: make(max(CODE_MIN_ROWS, int((avail - 2 * CODE_PAD - NOTE_LH - 6 - GAP)
                                                                         // CODE_LH))), kind="code")
    block = make(CODE_ROWS)
    if sum(rows) > CODE_ROWS:
        block.least = CODE_MIN_ROWS * CODE_LH + 2 * CODE_PAD + NOTE_LH + 6 + GAP
    return block


def text_block(text: str, stderr: bool = False) -> Block | None:
    """A stream or text/plain output. Aligned columns get a font small enough to keep their lines
    whole (down to OUT_MIN px); longer lines wrap. More than OUT_SLIDES slides of it: the rest is
    behind a <details>."""
    from nbconvert.filters.ansi import ansi2html, strip_ansi

    lines = text.rstrip("\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return None
    width = CONTENT_W - 16
    aligned = [len(strip_ansi(ln)) for ln in lines if re.search(r"\S {2,}\S", ln)]
    size = OUT_MAX
    if aligned and max(aligned) * MONO_EM * OUT_MAX > width * WRAP:
        size = max(OUT_MIN, int(width * WRAP / (max(aligned) * MONO_EM)))
    lh = round(size * 1.3)
    rows = [mono_rows(strip_ansi(ln), width, size) for ln in lines]
    cap = OUT_SLIDES * (BUDGET - LABEL_LH - 8) - 2 * GAP            # rows beyond this hide behind <details>
    shown, used = 0, 0
    while shown < len(lines) and (used + rows[shown]) * lh + 8 + GAP <= cap:
        used, shown = used + rows[shown], shown + 1
    hidden = lines[shown:]
    cls = "course-out course-err" if stderr else "course-out"

    def part(lo: int, hi: int) -> Block:
        body = f'<pre class="{cls}" style="font-size:{size}px;line-height:{lh}px">{ansi2html(chr(10).join(lines[lo:hi]))}</pre>'
        height = sum(rows[lo:hi]) * lh + 8 + GAP
        notes = []
        if hi == shown and hidden:
            summary = f"… {len(hidden)} more lines of output"
            body += (f'<details class="course-more"><summary>{summary}</summary><pre class="{cls}" style="font-size:'
                     f'{size}px;line-height:{lh}px">{ansi2html(chr(10).join(lines))}</pre></details>')
            height += NOTE_LH + 6
            notes = [f"The output continues for {len(hidden)} more lines (\"{summary}\" shows all of it)."]

        def split(avail):
            n, used_ = lo, 8 + GAP
            while n < hi and used_ + rows[n] * lh <= avail:
                used_, n = used_ + rows[n] * lh, n + 1
            if n - lo < 3 or hi - n < 2:
                return None
            blank = [k for k in range(lo + 3, n) if not lines[k].strip()]      # at a blank line, if one is near
            if blank and blank[-1] > lo + (n - lo) // 2 and hi - blank[-1] > 1:
                return part(lo, blank[-1]), part(blank[-1] + 1, hi)
            return part(lo, n), part(n, hi)
        return Block(body, height, notes=notes, split=split, kind="output")
    return part(0, shown)


def figure_block(fig: dict, figures: "Figures") -> Block:
    """A plotly figure at its own height, or, where that does not fit, drawn at its own height and
    width / zoom and zoomed (CSS) to fit: its legend and subplots keep their places."""
    natural = int((fig.get("layout") or {}).get("height") or FIG_DEFAULT)

    def make(avail: float) -> Block:                 # avail: the height the block may take, gap included
        zoom = min(1.0, (avail - GAP - 1) / natural)
        if zoom > 0.995:
            return Block(f'<div class="course-fig">{figures.html(fig, height=natural)}</div>', natural + GAP,
                         shrink=make, kind="figure")
        width = int(CONTENT_W / zoom)
        return Block(f'<div class="course-fig" style="zoom:{zoom:.3f};width:{width}px;height:{natural}px">'
                     f'{figures.html(fig, height=natural, width=width)}</div>', int(natural * zoom) + 1 + GAP,
                     shrink=make, kind="figure")
    block = make(BUDGET - LABEL_LH - 8)
    block.least = max(min(natural, FIG_MIN), 0.65 * natural) + GAP
    return block


def zoom_block(inner: str, height: float, cls: str) -> Block:
    """HTML whose height is only estimated (a static widget): drawn smaller when it does not fit."""
    def make(zoom: float) -> Block:
        style = f' style="zoom:{zoom:.2f}"' if zoom < 0.995 else ""
        return Block(f'<div class="{cls}"{style}>{inner}</div>', height * zoom + GAP,
                     shrink=lambda avail: make(max(0.4, min(1.0, (avail - GAP) / height))), kind="widget")
    block = make(min(1.0, (BUDGET - LABEL_LH - 8 - GAP) / height))
    block.least = min(block.height, 0.6 * height + GAP)
    return block


def _html_height(fragment: str, figures_h: float) -> float:
    """A rough height for HTML that is not ours: its figures, plus its text at NOTE size."""
    text = re.sub(r"<script.*?</script>", "", fragment, flags=re.S)
    text = re.sub(r'<div[^>]*class="plotly-graph-div".*?</div>', "", text, flags=re.S)
    blocks = len(re.findall(r"<(?:div|p|li|tr|pre|br|h\d)\b", text))
    plain = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return figures_h + text_rows(plain, CONTENT_W - 32, NOTE) * NOTE_LH + blocks * 4 + NOTE_LH


def output_blocks(out: dict, state: dict, figures: "Figures", live: dict) -> list[Block]:
    kind, data = out.get("output_type"), out.get("data", {})
    if kind == "stream":
        b = text_block(_text(out.get("text", "")), stderr=out.get("name") == "stderr")
        return [b] if b else []
    if kind == "error":
        b = text_block(f"{out.get('ename', '')}: {out.get('evalue', '')}", stderr=True)
        return [b] if b else []
    if PLOTLY_MIME in data:
        return [figure_block(data[PLOTLY_MIME], figures)]
    if WIDGET_MIME in data:
        start = len(figures.heights)
        inner = widget_html(data[WIDGET_MIME].get("model_id", ""), state, figures, live)
        fragment = f'<div class="note">{WIDGET_NOTE}</div>{inner}'
        return [zoom_block(fragment, _html_height(fragment, sum(figures.heights[start:])) + 16,
                           "course-static-widget")]
    for mime in ("image/png", "image/jpeg", "image/svg+xml"):
        if mime in data:
            src = (f"data:{mime};base64,{_text(data[mime]).strip()}" if mime != "image/svg+xml" else
                   "data:image/svg+xml;charset=utf-8," + url_quote(_text(data[mime])))
            return [Block(f'<img class="course-img" src="{src}" style="max-height:{FIG_DEFAULT}px">',
                          FIG_DEFAULT + GAP, kind="image")]
    if "text/html" in data:
        fragment = _text(data["text/html"])
        return [zoom_block(fragment, _html_height(fragment, 0), "course-html")]
    if "text/markdown" in data:
        fragment = md_html(_text(data["text/markdown"]))
        return [Block(fragment, _html_height(fragment, 0))]
    if "text/plain" in data:
        b = text_block(_text(data["text/plain"]))
        return [b] if b else []
    return []


# ---- static copies of outputs (publish.make_static draws the site's pages with them too)

class Figures:
    """Turns plotly JSON outputs into HTML divs with stable ids (plotly.js is loaded by the page)."""

    def __init__(self, prefix: str, font_size: int | None = None):
        self.prefix, self.font_size, self.count = prefix, font_size, 0
        self.heights: list[int] = []            # of the figures drawn so far

    def html(self, fig_json: dict, height: int | None = None, width: int | None = None) -> str:
        """`height`: drawn that tall (px); `width`: that wide, else as wide as its box."""
        import plotly.io as pio

        fig = copy.deepcopy(fig_json)
        layout = fig.setdefault("layout", {})
        if height:
            layout["height"] = int(height)
            layout.pop("width", None)
            layout["autosize"] = True
        if width:
            layout["width"], layout["autosize"] = int(width), False
        self.heights.append(int(layout.get("height") or FIG_DEFAULT))
        if self.font_size:
            layout.setdefault("font", {})["size"] = self.font_size
            title = layout.get("title")
            if isinstance(title, dict):
                title.setdefault("font", {})["size"] = int(self.font_size * 1.3)
        self.count += 1
        return pio.to_html(fig, include_plotlyjs=False, include_mathjax=False, full_html=False,
                           div_id=f"{self.prefix}-fig{self.count}", validate=False,
                           config={"responsive": not width, "displaylogo": False})

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


def reader_source(src: str) -> str:
    """A code cell as readers see it: nbval's markers are for the test suite."""
    return "\n".join(ln for ln in src.split("\n") if not ln.strip().startswith("# NBVAL_")).strip("\n")


# ---- from a notebook to slides

def lesson_title(nb, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if m:
                return m.group(1).strip()
    return fallback


BREAK, IDEA = "break", "idea"


def deck_items(nb, prefix: str, live: dict | None = None) -> list:
    """The notebook as a stream of blocks and of slide boundaries: (BREAK, "slide" | "subslide", title)
    at a heading, (IDEA, None) where a new slide of the section starts, (IDEA, px) where one starts
    unless the next px of blocks fit on the current slide."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    figures = Figures(prefix, font_size=18)
    items, last, title = [], None, lesson_title(nb, prefix)
    for n, cell in enumerate(nb.cells):
        kind = cell.get("metadata", {}).get("slideshow", {}).get("slide_type", "-")
        if kind == "skip":
            continue
        if kind == "notes":
            text = cell.source if cell.cell_type == "markdown" else f"```\n{cell.source}\n```"
            items.append(Block("", 0, notes=[text], kind="notes"))
            continue
        if cell.cell_type == "markdown":
            blocks = md_blocks(cell.source)
            opens = bool(blocks) and blocks[0][0] == "heading"
            if (kind in ("slide", "subslide") or last == "code") and not opens:
                # the author's new slide, or text after code: a new idea, unless this is only a
                # remark on the results above (a heading later in the cell, or no code cell next):
                # then it stays beside them if it fits
                nxt = next((c for c in nb.cells[n + 1:]
                            if c.get("metadata", {}).get("slideshow", {}).get("slide_type") not in ("skip", "notes")),
                           None)
                remark = (any(b[0] == "heading" for b in blocks) or nxt is None or nxt.cell_type != "code")
                items.append((IDEA, True if remark else None))     # True: its height, filled in below
            start = len(items)
            for blk in blocks:
                if blk[0] == "heading":
                    level = blk[1]
                    if level <= 3:
                        title = blk[2]
                        items.append((BREAK, "slide" if level <= 2 or n == 0 else "subslide", title))
                    items.append(heading_block(level, blk[2]))
                elif blk[0] == "para":
                    items.append(para_block(blk[1]))
                elif blk[0] == "quote":
                    items.append(para_block(blk[1], quote=True))
                elif blk[0] == "list":
                    items.append(list_block(blk[1]))
                elif blk[0] == "table":
                    items.append(table_block(blk[1]))
                elif blk[0] == "fence":
                    items.append(code_block(blk[2], lexer=blk[1] or "text"))
                elif blk[0] == "html":
                    items.append(zoom_block(blk[1], _html_height(blk[1], 0), "course-html"))
            if items[start - 1:start] == [(IDEA, True)]:        # the remark's height, up to a heading
                ahead = []
                for it in items[start:]:
                    if not isinstance(it, Block):
                        break
                    ahead.append(it.height)
                items[start - 1] = (IDEA, sum(ahead))
            last = "markdown"
        elif cell.cell_type == "code":
            src = reader_source(cell.source)
            if kind in ("slide", "subslide"):
                items.append((IDEA, None))
            if src:
                items.append(code_block(src, where=f" of cell {n + 1}"))
            outs = _merge_streams(cell.get("outputs", []))
            for out in outs:
                items.extend(output_blocks(out, state, figures, live or {}))
            last = "code"
        elif cell.cell_type == "raw" and cell.get("metadata", {}).get("raw_mimetype", "").lower() == "text/html":
            items.append(zoom_block(cell.source, _html_height(cell.source, 0), "course-html"))
    return items


def _merge_streams(outputs: list) -> list:
    """Consecutive stream outputs of one name as one (print() and a progress line, say)."""
    merged = []
    for out in outputs:
        if (out.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == out.get("name")):
            merged[-1] = {**merged[-1], "text": _text(merged[-1]["text"]) + _text(out.get("text", ""))}
        else:
            merged.append(dict(out))
    return merged


class Slide:
    def __init__(self, kind: str, title: str, continued: bool):
        self.kind, self.title, self.continued = kind, title, continued
        self.blocks: list[Block] = []
        self.used = LABEL_LH + 8 if continued else 0.0

    @property
    def empty(self) -> bool:
        return not any(b.kind not in ("heading", "notes") for b in self.blocks)


def plan(items: list) -> list[Slide]:
    """Pack the blocks into slides of at most BUDGET px: a block that does not fit in what is left
    is split, drawn smaller, or moved to a continuation sub-slide."""
    slides = [Slide("slide", "", False)]

    def new(kind="subslide", title=None, continued=True):
        cur = slides[-1]
        if all(b.kind == "notes" for b in cur.blocks):        # nothing shown on it yet: it becomes the new one
            if not continued:                                   # a heading: the slide opens a section
                cur.kind = "slide" if "slide" in (kind, "" if cur.continued else cur.kind) else "subslide"
                cur.title, cur.continued, cur.used = title, False, 0.0
            return
        slides.append(Slide(kind, cur.title if title is None else title, continued))

    def add(b: Block):
        slides[-1].blocks.append(b)
        slides[-1].used += b.height

    def place(b: Block, after=None, depth=0):
        cur = slides[-1]
        left = BUDGET - cur.used
        if b.keep_with_next and after is not None and not cur.empty and b.height <= left:
            need = b.height + min(after.height, after.least or 3 * TEXT_LH)
            if need > left:
                new()
                return place(b, after, depth)
        if b.height <= left:
            return add(b)
        if b.shrink and b.least <= left and (cur.empty or left >= 0.45 * BUDGET):
            return add(b.shrink(left))
        if b.split and (cur.empty or left >= 4 * TEXT_LH):
            parts = b.split(left)
            if parts:
                add(parts[0])
                new()
                return place(parts[1], after, depth + 1)
        if not cur.empty and depth < 50:
            new()
            return place(b, after, depth + 1)
        if b.shrink:
            return add(b.shrink(left))
        return add(b)                      # taller than a slide and nothing to do about it: the test says so

    blocks_ahead = [it for it in items if isinstance(it, Block)]
    k = 0
    for it in items:
        if isinstance(it, Block):
            k += 1
            if it.kind == "notes":
                slides[-1].blocks.append(it)
                continue
            place(it, blocks_ahead[k] if k < len(blocks_ahead) else None)
        elif it[0] == BREAK:
            new(it[1], it[2], continued=False)
        elif it[0] == IDEA and not slides[-1].empty and (it[1] is None or it[1] > BUDGET - slides[-1].used):
            new()
    kept = []
    for s in slides:                        # a slide of notes only: they go with the slide before
        if any(b.kind != "notes" for b in s.blocks) or not kept:
            kept.append(s)
        else:
            kept[-1].blocks += s.blocks
    return [s for s in kept if s.blocks]


def slide_cells(slides: list[Slide]) -> list:
    """The planned slides as raw HTML cells with reveal metadata (nbconvert's reveal template makes
    the <section>s): a continuation slide starts with its section's title and k/n."""
    groups, cells = [], []
    for s in slides:
        if s.kind == "slide" or not groups:
            groups.append([])
        groups[-1].append(s)
    for group in groups:
        for k, s in enumerate(group, 1):
            parts = []
            if s.continued:
                count = f' <span class="course-count">{k}/{len(group)}</span>' if len(group) > 1 else ""
                parts.append(f'<div class="course-label">{md_html(s.title, inline=True)}{count}</div>')
            parts += [b.html for b in s.blocks if b.html]
            notes = [n for b in s.blocks for n in b.notes]
            body = f'<div class="course-slide">{"".join(parts)}</div>'
            if notes:
                body += f'<aside class="notes">{"".join(md_html(n) for n in notes)}</aside>'
            cells.append(nbformat.v4.new_raw_cell(body, metadata={"raw_mimetype": "text/html",
                                                                  "slideshow": {"slide_type": s.kind}}))
    return cells


def deck_notebook(nb, prefix: str, live: dict | None = None):
    """The lesson as a notebook of slides (raw HTML cells), ready for the reveal exporter."""
    slides = plan(deck_items(nb, prefix, live))
    deck = nbformat.v4.new_notebook(cells=slide_cells(slides))
    deck.metadata = {k: v for k, v in nb.metadata.items() if k != "widgets"}
    return deck


def slide_css() -> str:
    """The rules the planner's estimates depend on, from the same numbers."""
    heads = "\n".join(f".reveal .course-slide h{lv} {{ font-size: {s}px; line-height: {lh}px; margin: 0 0 {g}px; }}"
                      for lv, (s, lh, g) in HEAD.items())
    return f"""
.reveal .slides {{ text-align: left; }}
.reveal .slides > section, .reveal .slides > section > section {{ height: 100%; padding: 0; }}
.reveal .course-slide {{ box-sizing: border-box; padding: {PAD_TOP}px {PAD_X}px 0; width: {SLIDE_W}px;
  font-family: "Source Sans Pro", Helvetica, sans-serif; font-size: {TEXT}px; line-height: {TEXT_LH}px; color: #222; }}
.reveal .course-slide h1, .reveal .course-slide h2, .reveal .course-slide h3 {{ font-family: "Source Sans Pro",
  Helvetica, sans-serif; font-weight: 600; text-transform: none; letter-spacing: normal; word-wrap: break-word; }}
{heads}
.reveal .course-slide p {{ margin: 0 0 {GAP}px; line-height: {TEXT_LH}px; font-size: {TEXT}px; }}
.reveal .course-slide ul, .reveal .course-slide ol {{ display: block; margin: 0 0 {GAP}px; padding: 0 0 0 {INDENT}px; }}
.reveal .course-slide ul ul, .reveal .course-slide ol ol, .reveal .course-slide ul ol, .reveal .course-slide ol ul
  {{ margin: {LI_GAP}px 0 0; }}
.reveal .course-slide li {{ margin: 0 0 {LI_GAP}px; line-height: {TEXT_LH}px; font-size: {TEXT}px; }}
.reveal .course-slide li p {{ margin: 0; }}
.reveal .course-slide blockquote {{ width: auto; margin: 0 0 {GAP}px; padding: 0 0 0 {INDENT - 4}px;
  border-left: 4px solid #bbb; box-shadow: none; background: none; font-style: normal; }}
.reveal .course-slide code {{ font-size: 0.85em; line-height: 1; padding: 0 3px; background: #f2f2f2;
  border-radius: 3px; overflow-wrap: anywhere; }}
.reveal .course-slide .math {{ font-style: italic; }}
.reveal .course-slide a.anchor-link {{ display: none; }}
.reveal .course-label {{ font-size: {LABEL}px; line-height: {LABEL_LH}px; height: {LABEL_LH}px; margin: 0 0 8px;
  color: #666; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; border-bottom: 1px solid #ddd; }}
.reveal .course-label .course-count {{ float: right; color: #999; }}
.reveal .course-code {{ margin: 0 0 {GAP}px; }}
.reveal .course-code .highlight {{ margin: 0; background: #f6f6f6; border-radius: 4px; }}
.reveal .course-slide pre {{ box-sizing: border-box; width: 100%; margin: 0; box-shadow: none; text-align: left; }}
.reveal .course-code pre {{ font-size: {CODE}px; line-height: {CODE_LH}px; padding: {CODE_PAD}px 12px;
  white-space: pre-wrap; overflow-wrap: anywhere; word-break: normal; }}
.reveal pre.course-out {{ padding: 4px 0 4px 12px; margin: 0 0 {GAP}px; border-left: 3px solid #d0d7de;
  white-space: pre-wrap; overflow-wrap: anywhere; }}
.reveal pre.course-err {{ background: #fff0f0; }}
.reveal details.course-more {{ margin: 0 0 {GAP}px; font-size: {NOTE}px; line-height: {NOTE_LH}px; }}
.reveal details.course-more > summary {{ cursor: pointer; color: #1f5fa8; height: {NOTE_LH}px; margin-top: -{GAP - 6}px; }}
.reveal details.course-more[open] {{ position: absolute; inset: 0; z-index: 30; overflow: auto; margin: 0;
  padding: {PAD_TOP}px {PAD_X}px; background: #fff; }}
.reveal details.course-more[open] > summary::after {{ content: " (click to close)"; }}
.reveal .course-table {{ table-layout: fixed; border-collapse: collapse; margin: 0 0 {GAP}px;
  font-size: {TABLE}px; line-height: {TABLE_LH}px; }}
.reveal .course-slide .course-table th, .reveal .course-slide .course-table td {{ padding: 4px {CELL_PAD}px;
  border-bottom: 1px solid #ccc; vertical-align: top; text-align: left; overflow-wrap: anywhere;
  font-size: {TABLE}px; line-height: {TABLE_LH}px; }}
.reveal .course-fig {{ margin: 0 0 {GAP}px; }}
.reveal .course-static-widget, .reveal .course-html {{ margin: 0 0 {GAP}px; font-size: {NOTE}px; line-height: {NOTE_LH}px; }}
.reveal .course-static-widget {{ border-left: 4px solid #1f77b4; padding: 4px 12px; }}
.reveal .course-static-widget .note {{ color: #555; font-style: italic; }}
.reveal .course-img {{ display: block; margin: 0 0 {GAP}px; max-width: 100%; }}
"""
