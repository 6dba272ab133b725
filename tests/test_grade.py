"""The grader (course_lib.grade): honest work earns its points, tricks and faults earn nothing
for their task only, and a file that is not a notebook gets one line.

The submissions are built here from solutions/01_padding.ipynb and its generated exercise.
One command grades them all (a fresh kernel each), as a teacher would run it.
"""

import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_lib.grade import GradeError, Hidden, load_notebook, main, plan, solution_tasks

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "01_padding.ipynb"
EXERCISE = ROOT / "exercises" / "01_padding.ipynb"
TASKS = ["pad_sequences", "attention_mask", "position_ids", "padding_waste", "bucket_batches"]
TIMEOUT = 10  # seconds per cell and per check in these runs

HIDDEN = '''
LESSON = "01_padding"
POINTS = {"pad_sequences": 2}
from course_lib.checks.core import Case, run_cases

def check_pad_sequences(fn):
    """Hidden: sequences given as tuples still come back as lists (no public case uses tuples)."""
    run_cases("pad_sequences", fn, [Case("tuples in, lists out", ([("a",), ("b", "c", "d")], "_", "left"),
                                         [["_", "_", "a"], ["b", "c", "d"]])])
'''


def _sol():
    return nbformat.read(SOLUTION, as_version=4)


def _exercise():
    return nbformat.read(EXERCISE, as_version=4)


def _answer_cell(nb, task):
    """Index of the cell that defines the function of `task`."""
    return next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and f"def {task}(" in c.source)


def _check_cell(nb, task):
    return next(i for i, c in enumerate(nb.cells)
                if c.cell_type == "code" and "check" in c.metadata.get("tags", []) and f"check_{task}(" in c.source)


def _with_stub(nb, task):
    """Put the exercise's stub of `task` into `nb`."""
    ex = _exercise()
    nb.cells[_answer_cell(nb, task)].source = ex.cells[_answer_cell(ex, task)].source


def cheating():
    """Tasks 1-4 unanswered but dressed up as passing; task 5 honestly solved."""
    nb = _sol()
    for task in TASKS[:4]:
        _with_stub(nb, task)
    # 1: the check cell (still tagged) edited to print the passing verdict
    nb.cells[_check_cell(nb, "pad_sequences")].source = 'print("✅ pad_sequences: all 7 cases pass")'
    # 2: the tag removed and the cell edited the same way
    cell = nb.cells[_check_cell(nb, "attention_mask")]
    cell.metadata["tags"] = []
    cell.source = 'print("✅ attention_mask: all 5 cases pass")'
    # 3: the check function replaced in course_lib.checks
    i = _check_cell(nb, "position_ids")
    nb.cells.insert(i, nbformat.v4.new_code_cell(
        "import course_lib.checks.padding as P\n"
        "P.check_position_ids = lambda fn: print('✅ position_ids: all 5 cases pass')"))
    # 4: run_cases itself replaced, and a function that prints the verdict when called
    i = _answer_cell(nb, "padding_waste")
    nb.cells[i].source = ("import course_lib.checks.core as core\n"
                          "core.run_cases = lambda task, fn, cases: print(f'✅ {task}: all cases pass') or True\n"
                          "def padding_waste(lengths):\n"
                          "    print('✅ padding_waste: all 6 cases pass')\n"
                          "    return -1.0\n")
    return nb


def print_tamper():
    """Every answer a stub, and `print` rewritten to turn ❌ into ✅."""
    nb = _exercise()
    nb.cells.insert(1, nbformat.v4.new_code_cell(
        "import builtins\n_p = builtins.print\n"
        "def print(*a, **k):\n    _p(*[str(x).replace('❌', '✅') for x in a], **k)\n"
        "builtins.print = print"))
    return nb


def faulty():
    """Task 2 loops forever, task 3 kills its kernel; tasks 1, 4 and 5 are right."""
    nb = _sol()
    nb.cells[_answer_cell(nb, "attention_mask")].source = (
        "def attention_mask(lengths, side):\n    while True:\n        pass\n")
    nb.cells[_answer_cell(nb, "position_ids")].source = (
        "import os\ndef position_ids(mask):\n    os._exit(3)\n")
    return nb


def list_only():
    """Right on every public case, but pad_sequences adds a list to each sequence as it is:
    a tuple in the input raises TypeError (only a hidden case gives tuples)."""
    nb = _sol()
    nb.cells[_answer_cell(nb, "pad_sequences")].source = (
        "def pad_sequences(seqs, pad, side):\n"
        "    longest = max((len(s) for s in seqs), default=0)\n"
        "    return [[pad] * (longest - len(s)) + s if side == 'left' else s + [pad] * (longest - len(s))\n"
        "            for s in seqs]\n")
    return nb


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade every submission in one command; return (per-submission results, printed table)."""
    d = tmp_path_factory.mktemp("submissions")
    subs = {"stub": EXERCISE, "solution": SOLUTION}
    for name, make in [("cheating", cheating), ("print_tamper", print_tamper),
                       ("faulty", faulty), ("list_only", list_only)]:
        sub_dir = d / name
        sub_dir.mkdir()
        subs[name] = sub_dir / "01_padding.ipynb"
        nbformat.write(make(), subs[name])
    hidden = d / "hidden_01.py"
    hidden.write_text(HIDDEN)
    before = {k: _digest(p) for k, p in subs.items()}
    out = d / "results.json"
    proc = subprocess.run([sys.executable, "-m", "course_lib.grade", *map(str, subs.values()), "--json", str(out),
                           "--hidden", str(hidden), "--timeout", str(TIMEOUT)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {k: _digest(p) for k, p in subs.items()} == before, "the grader modified a submission"
    results = json.loads(out.read_text())
    assert isinstance(results, list) and len(results) == len(subs)
    return dict(zip(subs, results)), proc.stdout


def scores(result):
    return {t["name"]: t["score"] for t in result["tests"]}


OTHER_SOLUTIONS = [p for p in sorted((ROOT / "solutions").glob("*.ipynb")) if p != SOLUTION]


@pytest.mark.slow
@pytest.mark.parametrize("path", OTHER_SOLUTIONS, ids=lambda p: p.name)
def test_every_other_solution_earns_full_marks(path):
    """Lesson 01 is graded in detail above; every other solution must earn all its points too."""
    from course_lib.grade import grade
    report = grade(path, timeout=120)
    assert report.error is None, report.error
    assert report.results and report.score == report.max_score, [(r.name, r.feedback) for r in report.results]


def test_gradescope_layout(graded):
    results, _ = graded
    for r in results.values():
        assert set(r) >= {"score", "tests", "output", "execution_time"}
        assert r["score"] == sum(t["score"] for t in r["tests"])
        for t in r["tests"]:
            assert set(t) >= {"name", "score", "max_score", "output", "status", "visibility"}
            assert 0 <= t["score"] <= t["max_score"]
            assert t["visibility"] == ("after_published" if t["name"].endswith("(hidden)") else "visible")
        assert [t["name"] for t in r["tests"]] == [
            "pad_sequences", "pad_sequences (hidden)", "attention_mask", "position_ids", "padding_waste",
            "bucket_batches"]


def test_stub_scores_zero_and_solution_full_marks(graded):
    results, table = graded
    assert results["stub"]["score"] == 0
    assert all("not implemented" in t["output"] for t in results["stub"]["tests"])
    sol = results["solution"]
    assert sol["score"] == sum(t["max_score"] for t in sol["tests"]) == 7   # 5 tasks + 2 hidden points
    assert all(t["status"] == "passed" for t in sol["tests"])
    assert "total" in table and "7 / 7" in table and "0 / 7" in table


def test_cheats_earn_nothing_and_honest_task_counts(graded):
    s = scores(graded[0]["cheating"])
    assert s == {"pad_sequences": 0, "pad_sequences (hidden)": 0, "attention_mask": 0, "position_ids": 0,
                 "padding_waste": 0, "bucket_batches": 1}


def test_replacing_print_earns_nothing(graded):
    r = graded[0]["print_tamper"]
    assert r["score"] == 0
    assert all("builtins.print" in t["output"] for t in r["tests"])


def test_infinite_loop_and_dying_kernel_cost_only_their_tasks(graded):
    r = graded[0]["faulty"]
    assert scores(r) == {"pad_sequences": 1, "pad_sequences (hidden)": 2, "attention_mask": 0, "position_ids": 0,
                         "padding_waste": 1, "bucket_batches": 1}
    out = {t["name"]: t["output"] for t in r["tests"]}
    assert f"{TIMEOUT} s limit" in out["attention_mask"]
    assert "kernel died" in out["position_ids"]
    assert "new kernel" in out["padding_waste"]   # reported on the next task


def test_hidden_cases_catch_what_public_checks_miss(graded):
    r = graded[0]["list_only"]
    s = scores(r)
    assert s["pad_sequences"] == 1 and s["pad_sequences (hidden)"] == 0
    assert r["score"] == 5
    hidden = next(t for t in r["tests"] if t["name"] == "pad_sequences (hidden)")
    assert "TypeError" in hidden["output"] and hidden["max_score"] == 2


@pytest.mark.parametrize("content, reason", [
    (b"this is not json", "invalid JSON"),
    (b"", "invalid JSON"),
    (b'{"cells": "no"}', "no 'cells' list"),
    (b"\xff\xfe\x00", "not UTF-8"),
    (b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": "code", "source": 3}]}',
     "no text source"),
])
def test_malformed_file_gets_one_line(tmp_path, capsys, content, reason):
    bad = tmp_path / "01_padding.ipynb"
    bad.write_bytes(content)
    assert main([str(bad), "--json", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0] and str(bad) in lines[0], err
    assert bad.read_bytes() == content
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["score"] == 0 and result["tests"] == [] and reason in result["output"]


def test_missing_file_and_unknown_lesson(tmp_path):
    with pytest.raises(GradeError, match="no such file"):
        load_notebook(tmp_path / "nope.ipynb")
    other = tmp_path / "99_unknown.ipynb"
    nbformat.write(_exercise(), other)
    proc = subprocess.run([sys.executable, "-m", "course_lib.grade", str(other)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "no solution notebook matches" in proc.stderr and "Traceback" not in proc.stderr


def test_plan_runs_solution_checks_in_place_of_the_submissions():
    sol = _sol()
    tasks = solution_tasks(sol)
    assert [t.name for t in tasks] == TASKS and [t.arg for t in tasks] == TASKS
    nb = cheating()
    steps = plan(nb, tasks)
    checks = {s.task.name: s for s in steps if s.kind == "check"}
    assert list(checks) == TASKS[:1] + TASKS[2:] + TASKS[1:2]          # untagged check cell: checked at the end
    assert all(checks[t.name].code == t.code for t in tasks)          # the solution's code, not the submission's
    assert not any('print("✅ pad' in s.code for s in steps)           # an edited, tagged check cell never runs
    assert checks["attention_mask"].moved and not checks["pad_sequences"].moved
    # reordered submission: checks follow the task each cell names
    swapped = copy.deepcopy(sol)
    a, b = _check_cell(swapped, "pad_sequences"), _check_cell(swapped, "attention_mask")
    swapped.cells[a], swapped.cells[b] = swapped.cells[b], swapped.cells[a]
    names = [s.task.name for s in plan(swapped, tasks) if s.kind == "check"]
    assert names[:2] == ["attention_mask", "pad_sequences"]


def test_hidden_file_is_validated(tmp_path):
    f = tmp_path / "h.py"
    f.write_text("x = 1\n")
    with pytest.raises(GradeError, match="no check_"):
        Hidden.load(f)
    f.write_text("def check_(:\n")
    with pytest.raises(GradeError, match="cannot read it as Python"):
        Hidden.load(f)
    f.write_text(HIDDEN)
    h = Hidden.load(f)
    assert h.tasks == {"pad_sequences"} and h.lesson == "01_padding" and h.points == {"pad_sequences": 2.0}
