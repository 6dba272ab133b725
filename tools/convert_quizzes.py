"""Move the lessons' knowledge checks out of the notebooks and into course_lib.quizzes.

    python tools/convert_quizzes.py rewrite notebooks/*.ipynb      # rewrite the quiz cells in place
    python tools/convert_quizzes.py rewrite --check notebooks/*.ipynb   # say what would change, write nothing
    python tools/convert_quizzes.py extract notebooks/*.ipynb --out DIR  # one-off: quiz(...) cells -> data modules

`extract` parses every old-style cell `quiz("question", [Choice(text, correct, why), ...])` with `ast` and
writes one module per lesson (`lessonNN.py`, `QUIZZES = {"NN.1": Question(...), ...}`) with the text, options
and feedback verbatim. It was run once to create course_lib/quizzes/; those modules have been edited since
(new questions, fuller distractors), so it refuses to overwrite an existing file.

`rewrite` (source only, through nbformat; outputs are left alone) replaces each old quiz cell, in order, by
`quiz("NN.k")`, matching the cell to its question in course_lib.quizzes by the question text; then, after the
lesson's last quiz cell, it adds one cell with the lesson's questions that had no cell (`quiz("NN.5")`, ...),
one cell per numeric question of NUMERIC_CELLS (the lesson passes the value it computed), and the summary cell
`quiz_summary("NN")`. A notebook already converted is left as it is (running it twice changes nothing).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import textwrap
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IGNORE = "# NBVAL_IGNORE_OUTPUT"
IMPORT_LINE = "from course_lib.quiz import quiz, quiz_number, quiz_summary"

# The numeric checks: each computes its expected value with the lesson's own tools, then asks.
NUMERIC_CELLS = {
    "01": ['from course_lib.padding import padding_stats',
           '',
           'quiz_lengths = [5, 9, 12, 30]',
           'quiz_number("01.pad_share", expected=100 * padding_stats(quiz_lengths).token_waste,',
           '            lengths=", ".join(map(str, quiz_lengths)))'],
    "02": ['from course_lib.kv.sizing import tinylm_shape',
           '',
           'cfg = model.config',
           'quiz_number("02.kv_bytes", expected=tinylm_shape(cfg).bytes_per_token, layers=cfg.num_hidden_layers,',
           '            kv_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim)'],
    "04": ['from course_lib.kv.paged import PagedKVStore',
           '',
           'quiz_store = PagedKVStore.for_model(model, num_blocks=8, block_size=16)',
           'quiz_store.add(0, list(range(50)), 50)                                  # a 50-token prompt',
           'quiz_number("04.empty_slots", expected=len(quiz_store.block_table(0)) * quiz_store.block_size - 50,',
           '            tokens=50, block_size=quiz_store.block_size)'],
}


# ---------------------------------------------------------------- parsing old cells

# Values a quiz cell's f-strings quote from the lesson, by the expression's source: the bank names them.
FACT_NAMES = {"lo[rates[0]]": "wait_rate_005", "lo[rates[1]]": "wait_rate_02",
              "len(paradox)": "paradox_refusals", "len(bad_a.refusals)": "refusals",
              "len(recomputing)": "recomputing_steps", "len(b_stalls)": "stall_steps"}


def _template(node, facts: dict) -> str:
    """A string literal, or an f-string turned into a str.format template whose fields name FACT_NAMES."""
    if isinstance(node, ast.JoinedStr):
        out = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                out.append(v.value.replace("{", "{{").replace("}", "}}"))
                continue
            src = ast.unparse(v.value)
            name = FACT_NAMES.get(src) or f"fact{len(facts) + 1}"
            facts[name] = src
            spec = ":" + "".join(x.value for x in v.format_spec.values) if v.format_spec else ""
            out.append("{" + name + spec + "}")
        return "".join(out)
    return ast.literal_eval(node)


def old_quiz_calls(source: str, with_facts: bool = False) -> list:
    """Every `quiz("q", [Choice(text, correct, why), ...])` call in a cell's source, as plain data:
    (question, [(text, correct, why), ...]), plus {fact name: expression source} when `with_facts`."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "quiz"
                and len(node.args) == 2 and isinstance(node.args[1], ast.List)):
            facts: dict = {}
            question = _template(node.args[0], facts)
            choices = []
            for c in node.args[1].elts:
                if not (isinstance(c, ast.Call) and getattr(c.func, "id", None) == "Choice"):
                    raise ValueError(f"quiz {question[:40]!r}: an option is not a Choice(...) call")
                args = [_template(a, facts) if i != 1 else ast.literal_eval(a) for i, a in enumerate(c.args)]
                kw = {k.arg: _template(k.value, facts) for k in c.keywords}
                text, correct, why = (args + [kw.get("text"), kw.get("correct"), kw.get("why")][len(args):])[:3]
                choices.append((text, correct, why))
            found.append((question, choices, facts) if with_facts else (question, choices))
    return found


def other_statements(source: str) -> list[str]:
    """A cell's top-level statements other than its quiz(...) calls and quiz imports, as source."""
    tree = ast.parse(source)
    keep = []
    for st in tree.body:
        if isinstance(st, ast.Expr) and isinstance(st.value, ast.Call) and getattr(st.value.func, "id", "") == "quiz":
            continue
        if isinstance(st, ast.ImportFrom) and st.module == "course_lib.quiz":
            continue
        keep.append(ast.get_source_segment(source, st))
    return keep


def lesson_of(path: Path) -> str:
    m = re.match(r"(\d\d)_", path.name)
    if not m:
        raise ValueError(f"notebook: {path.name!r} does not start with a two-digit lesson number")
    return m.group(1)


# ---------------------------------------------------------------- extract

def _lit(s: str, indent: int, width: int = 118) -> str:
    """A string literal, split into implicit concatenation that fits `width` columns."""
    pad = " " * indent
    room = max(40, width - indent - 2)
    parts = textwrap.wrap(s, room, drop_whitespace=False, break_on_hyphens=False) or [""]
    return ("\n" + pad).join(repr(p) for p in parts)


def module_text(lesson: str, questions: list) -> str:
    out = [f'"""Lesson {lesson}\'s knowledge checks: the answer key lives here, not in the notebook."""', "",
           "from course_lib.quiz import Choice, Question", "", "QUIZZES = {"]
    for k, (q, choices) in enumerate(questions, 1):
        out.append(f'    "{lesson}.{k}": Question(')
        out.append(f"        {_lit(q, 8)},")
        out.append("        [")
        for text, correct, why in choices:
            out.append(f"            Choice({_lit(text, 19)},")
            out.append(f"                   {correct},")
            out.append(f"                   {_lit(why, 19)}),")
        out.append("        ]),")
    out.append("}")
    return "\n".join(out) + "\n"


def extract(paths: list[Path], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        qs = [q for c in nb.cells if c.cell_type == "code" for q in old_quiz_calls(c.source)]
        if not qs:
            continue
        target = out / f"lesson{lesson_of(path)}.py"
        if target.exists():
            raise SystemExit(f"{target}: exists; extract writes new files only")
        target.write_text(module_text(lesson_of(path), qs))
        print(f"{path.name}: {len(qs)} questions -> {target}")


# ---------------------------------------------------------------- rewrite

def rewrite_notebook(nb, lesson: str) -> list[str]:
    """Rewrite `nb` in place; returns what changed, one line each (empty: nothing to do)."""
    from course_lib.quizzes import LESSONS, lesson_questions

    if lesson not in LESSONS:
        return []                                  # lesson 00 has no knowledge check
    bank = lesson_questions(lesson)
    by_text = {q.text: qid for qid, q in bank.items() if not q.numeric}
    if any(c.cell_type == "code" and "quiz_summary(" in c.source for c in nb.cells):
        return []                                  # already converted
    changes, used, last = [], [], None
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        calls = old_quiz_calls(cell.source)
        if not calls:
            continue
        ids, calls_src = [], []
        for question, choices, facts in old_quiz_calls(cell.source, with_facts=True):
            if question not in by_text:
                raise ValueError(f"{lesson}: the quiz {question[:60]!r}... has no question with this text in "
                                 f"course_lib/quizzes/lesson{lesson}.py")
            qid = by_text[question]
            ids.append(qid)
            drift = [k for k, (c, b) in enumerate(zip(choices, bank[qid].choices))
                     if (c[1], c[2]) != (b.correct, b.why)]
            if drift or len(choices) != len(bank[qid].choices):
                changes.append(f"WARNING {qid}: the notebook's feedback of option(s) {drift} differs from the bank's; "
                               f"check course_lib/quizzes/lesson{lesson}.py")
            args = "".join(f", {k}={v}" for k, v in facts.items())
            calls_src.append(f'quiz("{qid}"{args})')
        lines = [IGNORE]
        if "from course_lib.quiz import" in cell.source:
            lines.append(IMPORT_LINE)
            lines.append("")
        lines += other_statements(cell.source) + calls_src
        cell.source = "\n".join(lines)
        used += ids
        last = i
        changes.append(f"cell {i}: quiz({', '.join(ids)})")
    if last is None:
        return changes
    new = []
    missing = [qid for qid, q in bank.items() if not q.numeric and qid not in used]
    if missing:
        new.append("\n".join([IGNORE] + [f'quiz("{qid}")' for qid in missing]))
        changes.append(f"new cell: quiz({', '.join(missing)})")
    if lesson in NUMERIC_CELLS:
        new.append("\n".join([IGNORE] + NUMERIC_CELLS[lesson]))
        changes.append(f"new cell: numeric check of lesson {lesson}")
    new.append(f'{IGNORE}\nquiz_summary("{lesson}")')
    changes.append(f'new cell: quiz_summary("{lesson}")')
    if not any("from course_lib.quiz import" in nb.cells[j].source for j in range(last + 1)):
        first = next(j for j, c in enumerate(nb.cells) if c.cell_type == "code" and 'quiz("' in c.source)
        nb.cells[first].source = nb.cells[first].source.replace(
            IGNORE + "\n", IGNORE + "\n" + IMPORT_LINE + "\n\n", 1)
    for k, src in enumerate(new):
        nb.cells.insert(last + 1 + k, nbformat.v4.new_code_cell(src))
    return changes


def rewrite(paths: list[Path], check: bool) -> None:
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        changes = rewrite_notebook(nb, lesson_of(path))
        if not changes:
            print(f"{path}: nothing to convert")
            continue
        for line in changes:
            print(f"{path}: {line}")
        if not check:
            nbformat.write(nb, path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("extract")
    ex.add_argument("notebooks", nargs="+", type=Path)
    ex.add_argument("--out", type=Path, required=True)
    rw = sub.add_parser("rewrite")
    rw.add_argument("notebooks", nargs="+", type=Path)
    rw.add_argument("--check", action="store_true", help="print the changes, write nothing")
    args = ap.parse_args(argv)
    if args.cmd == "extract":
        extract(args.notebooks, args.out)
    else:
        rewrite(args.notebooks, args.check)


if __name__ == "__main__":
    main()
