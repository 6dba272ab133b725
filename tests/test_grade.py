"""The grader end to end: nbval checks an assembled notebook in a fresh kernel, the judging happens
outside it, and no cheat earns a point; faults cost only their cases; Gradescope's results.json.

The submissions are built here from solutions/01_padding.ipynb and its exercise, and graded in one
command (one pytest run, a fresh kernel each), as a teacher would run it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_lib.grade import load_notebook, main
from course_lib.grading.assemble import assemble, solution_tasks
from course_lib.grading.cases import GradeError, plan_lesson

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "01_padding.ipynb"
EXERCISE = ROOT / "exercises" / "01_padding.ipynb"
TASKS = ["pad_sequences", "attention_mask", "position_ids", "padding_waste", "bucket_batches"]
CPU_LIMIT = 8          # CPU seconds per cell in these runs

EXTRA = '''
LESSON = "01_padding"
POINTS = {"pad_sequences": 2}
from course_lib.checks.core import Case
CASES = {"pad_sequences": [Case("tabs and tuples", ([("\\t",), ()], "_", "left"))]}
'''


def _sol():
    return nbformat.read(SOLUTION, as_version=4)


def _answer(nb, task):
    return next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and f"def {task}(" in c.source)


def _check(nb, task):
    return next(i for i, c in enumerate(nb.cells)
                if c.cell_type == "code" and "check" in c.metadata.get("tags", []) and f"check_{task}(" in c.source)


def _set(nb, task, source):
    nb.cells[_answer(nb, task)].source = source
    return nb


STUBS = {t: f"def {t}(*args):\n    raise NotImplementedError()\n" for t in TASKS}


def cheats_a():
    """Five wrong answers, each with a cheat of another class."""
    nb = _sol()
    # post_run_cell hook that prints passing lines after every cell
    _set(nb, "pad_sequences", STUBS["pad_sequences"] +
         "get_ipython().events.register('post_run_cell', lambda r: print('✅ pad_sequences: all 7 cases pass'))\n")
    # torch.equal / torch.allclose patched, and a float mask
    _set(nb, "attention_mask", "import torch\ntorch.equal = lambda *a, **k: True\ntorch.allclose = lambda *a, **k: True\n"
         "def attention_mask(lengths, side):\n    return torch.ones(len(lengths), max(lengths, default=0))\n")
    # an object that says it equals everything
    _set(nb, "position_ids", "class Anything:\n    def __eq__(self, other):\n        return True\n"
         "    __hash__ = object.__hash__\n"
         "def position_ids(mask):\n    return Anything()\n")
    # a float subclass that equals everything
    _set(nb, "padding_waste", "class F(float):\n    def __eq__(self, other):\n        return True\n"
         "    def __repr__(self):\n        return '0.25'\n"
         "def padding_waste(lengths):\n    return F(-1.0)\n")
    # run the answers from solutions/, found through course_lib.__file__, or through the grader's own loader
    _set(nb, "bucket_batches", "import json, course_lib\nfrom pathlib import Path\n"
         "try:\n    from course_lib.grading.reference import references\n"
         "    _repo = Path(references.__code__.co_filename).parents[2]\n"
         "    bucket_batches = references(_repo / 'solutions' / '01_padding.ipynb')['bucket_batches']\n"
         "except ImportError:\n    pass\n"
         "_sol = Path(course_lib.__file__).resolve().parents[1] / 'solutions' / '01_padding.ipynb'\n"
         "for _c in json.loads(_sol.read_text())['cells']:\n"
         "    if 'def bucket_batches' in ''.join(_c['source']):\n        exec(''.join(_c['source']))\n")
    return nb


def cheats_b():
    """One honest task (pad_sequences), then four more cheat classes on wrong answers. Each cheat stays
    in force for the tasks after it, so they come after the honest one."""
    nb = _sol()
    # the expected answer read from the checker's stack frame
    _set(nb, "attention_mask", "import sys\n"
         "def attention_mask(lengths, side):\n    f, found = sys._getframe(1), None\n"
         "    while f is not None and found is None:\n"
         "        loc = f.f_locals\n"
         "        found = next((loc[k] for k in ('expected', 'want', 'case') if k in loc), None)\n"
         "        f = f.f_back\n"
         "    return getattr(found, 'expected', found)\n")
    # the public expected results read from course_lib.checks (not in the grading kernel's course_lib)
    _set(nb, "position_ids", "import json, course_lib.checks\nfrom pathlib import Path\n"
         "_key = json.loads((Path(course_lib.checks.__file__).parent / 'expected' / '01_padding.json').read_text())\n"
         "def position_ids(mask):\n"
         "    return json.loads(next(iter(_key['position_ids'].values())))\n")
    # print replaced to turn every line into one answer-looking line
    _set(nb, "padding_waste", "import builtins\n_print = builtins.print\n"
         "def print(*a, **k):\n    _print(*[str(x).split(':')[0] + ': 0.25' for x in a], **k)\n"
         "builtins.print = print\n"
         "def padding_waste(lengths):\n    return 0.5\n")
    # the grader's routine replaced by a disguised partial that prints an answer-looking line, and the
    # judges patched to accept anything (in the kernel, where no judge ever runs)
    _set(nb, "bucket_batches", "import functools, course_lib.checks.core as core, course_lib.checks.judges as J\n"
         "J.JUDGES.update(dict.fromkeys(J.JUDGES, lambda got, want, args: want))\n"
         "def _fake(task, fn, case, args):\n    print(f'{task} · {case}: [[0, 1], [2, 3]]')\n"
         "_p = functools.partial(lambda probe, *a: _fake(*a))\n_p.__module__ = 'course_lib.checks.core'\n"
         "core.run_case = _p\n"
         "def bucket_batches(lengths, batch_size):\n    raise NotImplementedError()\n")
    return nb


def faulty():
    """An endless loop, a kernel that dies, a loop that will not stop; the other two tasks right."""
    nb = _sol()
    _set(nb, "attention_mask", "def attention_mask(lengths, side):\n    while True:\n        pass\n")
    _set(nb, "position_ids", "import os\ndef position_ids(mask):\n    os._exit(3)\n")
    _set(nb, "padding_waste", "def padding_waste(lengths):\n    while True:\n        try:\n"
                              "            while True:\n                pass\n        except KeyboardInterrupt:\n"
                              "            pass\n")
    return nb


def partial():
    """Right on every public case of bucket_batches, wrong on some hidden ones: the hint's trap."""
    nb = _sol()
    return _set(nb, "bucket_batches", "def bucket_batches(lengths, batch_size):\n"
                                      "    order = sorted(range(len(lengths)), key=lambda i: lengths[i])\n"
                                      "    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]\n")


def flagged():
    """Every answer course_lib's own; bucket_batches an alias, the others through wrappers."""
    nb = _sol()
    _set(nb, "bucket_batches", "from course_lib.padding import bucket_by_length\nbucket_batches = bucket_by_length\n")
    return _set(nb, "pad_sequences", "import course_lib.padding as P\n"
                                     "def pad_sequences(seqs, pad, side):\n    return P.pad_tokens(seqs, pad, side)\n")


def reordered():
    """The solution with its check cells untagged and the first one moved to the end."""
    nb = _sol()
    cell = nb.cells.pop(_check(nb, "pad_sequences"))
    nb.cells.append(cell)
    for c in nb.cells:
        c.metadata.pop("tags", None)
    return nb


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade every submission in one command; return ({name: results.json entry}, printed table)."""
    d = tmp_path_factory.mktemp("submissions")
    subs = {"solution": SOLUTION, "stub": EXERCISE}
    for name, make in [("cheats_a", cheats_a), ("cheats_b", cheats_b), ("faulty", faulty), ("partial", partial),
                       ("flagged", flagged), ("reordered", reordered)]:
        (d / name).mkdir()
        subs[name] = d / name / f"01_padding-{name}.ipynb"
        nbformat.write(make(), subs[name])
    extra = d / "extra_01.py"
    extra.write_text(EXTRA)
    before = {k: _digest(p) for k, p in subs.items()}
    out = d / "results.json"
    proc = subprocess.run([sys.executable, "-m", "course_lib.grade", *map(str, subs.values()), "--json", str(out),
                           "--hidden", str(extra), "--cpu-limit", str(CPU_LIMIT), "--wall-limit", "120"],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {k: _digest(p) for k, p in subs.items()} == before, "the grader modified a submission"
    results = json.loads(out.read_text())
    assert isinstance(results, list) and len(results) == len(subs)
    return dict(zip(subs, results)), proc.stdout


def scores(result, hidden=None):
    return {t["name"]: t["score"] for t in result["tests"] if hidden is None or t["name"].endswith("(hidden)") == hidden}


def test_the_solution_earns_every_point_and_a_stub_none(graded):
    results, table = graded
    sol, stub = results["solution"], results["stub"]
    assert sol["score"] == sum(t["max_score"] for t in sol["tests"]) == 6.5   # pad_sequences' hidden test: 2 points
    assert all(t["status"] == "passed" for t in sol["tests"])
    assert stub["score"] == 0 and all("not implemented" in t["output"] for t in stub["tests"])
    assert "6.5 / 6.5" in table and "0 / 6.5" in table


def test_no_cheat_earns_a_point(graded):
    results, _ = graded
    assert results["cheats_a"]["score"] == 0, scores(results["cheats_a"])
    b = scores(results["cheats_b"])
    assert b.pop("pad_sequences") == 0.5 and b.pop("pad_sequences (hidden)") == 2   # the honest task counts
    assert set(b.values()) == {0}, b
    out = {t["name"]: t["output"] for t in results["cheats_a"]["tests"]}
    assert "printed more than the case's one line" in out["pad_sequences"]
    assert "FileNotFoundError" in results["cheats_a"]["output"] or "FileNotFoundError" in out["bucket_batches"]
    assert "flag: the notebook uses" in results["cheats_b"]["output"]


def test_faults_cost_only_their_cases(graded):
    r = graded[0]["faulty"]
    s = scores(r)
    assert s["pad_sequences"] == 0.5 and s["pad_sequences (hidden)"] == 2 and s["bucket_batches (hidden)"] == 0.5
    assert s["attention_mask"] == s["position_ids"] == s["padding_waste"] == 0
    out = {t["name"]: t["output"] for t in r["tests"]}
    assert f"timed out: used more than {CPU_LIMIT} s of CPU time" in out["attention_mask"]
    assert "would not stop" in out["padding_waste"]
    assert "kernel died" in r["output"] and "new kernel" in out["position_ids"] and "new kernel" in out["padding_waste"]
    assert "kernel" not in out["bucket_batches"]


def test_partial_credit_per_case_and_hidden_results_after_publication(graded):
    r = graded[0]["partial"]
    s = scores(r)
    assert s["bucket_batches"] == 0.5 and 0 < s["bucket_batches (hidden)"] < 0.5
    assert r["visibility"] == "after_published"                      # the total and the output wait too
    assert "hidden" not in r["output"].split(";")[0] and "bucket" not in r["output"]
    for t in r["tests"]:
        assert t["visibility"] == ("after_published" if t["name"].endswith("(hidden)") else "visible")


def test_flagged_not_blocked(graded):
    r = graded[0]["flagged"]
    assert r["score"] == sum(t["max_score"] for t in r["tests"])
    out = {t["name"]: t["output"] for t in r["tests"]}
    assert "course_lib.padding:bucket_by_length" in out["bucket_batches"]
    assert "course_lib.padding:pad_tokens" in out["pad_sequences"]
    assert "flag" not in out["attention_mask"]


def test_untagged_and_reordered_check_cells_still_grade(graded):
    r = graded[0]["reordered"]
    assert r["score"] == sum(t["max_score"] for t in r["tests"])


def test_results_json_layout_hashes_versions_runtimes(graded):
    for r in graded[0].values():
        assert set(r) >= {"score", "tests", "output", "execution_time", "extra_data"}
        assert abs(r["score"] - sum(t["score"] for t in r["tests"])) < 1e-9
        for t in r["tests"]:
            assert set(t) >= {"name", "score", "max_score", "output", "status", "visibility"}
            assert 0 <= t["score"] <= t["max_score"]
        assert [t["name"] for t in r["tests"]] == [x for task in TASKS for x in (task, f"{task} (hidden)")]
        extra = r["extra_data"]
        assert set(extra["sha256"]) == {"submission", "solution", "checks", "grader", "graded_notebook"}
        assert extra["versions"]["nbval"] and extra["versions"]["torch"] and extra["versions"]["python"]
        assert extra["seconds_kernel"] > 0 and extra["cases"] and all("cpu_s" in c for c in extra["cases"])
    sol = graded[0]["solution"]
    assert sol["extra_data"]["sha256"]["submission"] == hashlib.sha256(SOLUTION.read_bytes()).hexdigest()
    assert next(t for t in sol["tests"] if t["name"] == "pad_sequences (hidden)")["max_score"] == 2
    assert any(c["case"] == "extra: tabs and tuples" for c in sol["extra_data"]["cases"])


def test_the_graded_notebook_holds_no_submission_output_and_reference_lines_only_in_case_cells():
    sub = _sol()
    sub.cells[_check(sub, "pad_sequences")].outputs = [nbformat.v4.new_output("stream", text="✅ faked\n")]
    plans = plan_lesson("01_padding", SOLUTION)
    nb, moved = assemble(sub, solution_tasks(_sol(), TASKS), plans)
    assert not moved
    for cell in nb.cells:
        meta = cell.metadata["grader"]
        if meta["kind"] == "case":
            assert cell.outputs and cell.execution_count and "run_case(" in cell.source
        else:
            assert not cell.outputs and cell.execution_count is None
    assert "✅" not in json.dumps(nb) and "check_pad_sequences" not in json.dumps(nb)
    n_cases = sum(len(p.cases) for p in plans.values())
    assert sum(c.metadata["grader"]["kind"] == "case" for c in nb.cells) == n_cases


def test_expected_lines_are_the_same_in_a_fresh_process():
    here = {t: [(c.name, c.expected) for c in p.cases] for t, p in plan_lesson("01_padding", SOLUTION).items()}
    code = ("import json; from pathlib import Path; from course_lib.grading.cases import plan_lesson; "
            f"p = plan_lesson('01_padding', Path({str(SOLUTION)!r})); "
            "print(json.dumps({t: [(c.name, c.expected) for c in x.cases] for t, x in p.items()}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert json.loads(out.stdout) == json.loads(json.dumps(here))


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
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0] and str(bad) in lines[0], lines
    assert bad.read_bytes() == content
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["score"] == 0 and result["tests"] == [] and reason in result["output"]


def test_missing_file_and_unknown_exercise(tmp_path, capsys):
    with pytest.raises(GradeError, match="no such file"):
        load_notebook(tmp_path / "nope.ipynb")
    other = tmp_path / "99_unknown.ipynb"
    nbformat.write(copy.deepcopy(_sol()), other)
    assert main([str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no exercise matches" in err[0]


def test_extra_hidden_file_is_validated(tmp_path, capsys):
    f = tmp_path / "h.py"
    f.write_text("x = 1\n")
    assert main([str(SOLUTION), "--hidden", str(f)]) == 2
    assert "defines neither CASES" in capsys.readouterr().err
    f.write_text("def cases(:\n")
    assert main([str(SOLUTION), "--hidden", str(f)]) == 2
    assert "cannot read it as Python" in capsys.readouterr().err
