"""The exercise pipeline: solutions/ is the source; exercises/ is generated from it and ships clean
(no stored output at all); the public expected results are up to date; every check of a fresh
exercise fails; the student release holds no solution, no answer key and no grader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_lib.exercises import BEGIN, END, generate, is_check_cell, make_exercise, strip_solutions
from course_lib.grading.lessons import LESSONS, lesson

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


def test_strip_keeps_indentation_and_everything_else():
    src = "def f(x):\n    '''doc'''\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n\nprint(f)"
    out, found = strip_solutions(src)
    assert found
    assert out == "def f(x):\n    '''doc'''\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\nprint(f)"
    assert strip_solutions("x = 1", "code") == ("x = 1", False)
    assert strip_solutions("### BEGIN SOLUTION\nThe answer\n### END SOLUTION", "markdown")[0] == "YOUR ANSWER HERE"


@pytest.mark.parametrize("bad", ["### BEGIN SOLUTION\nx", "### END SOLUTION", "### BEGIN SOLUTION\n### BEGIN SOLUTION"])
def test_malformed_markers_are_errors(bad):
    with pytest.raises(ValueError):
        strip_solutions(bad)


def test_every_exercise_has_a_solution_and_a_checks_module():
    assert [p.stem for p in SOLUTIONS] == sorted(LESSONS)
    assert sorted(p.name for p in (ROOT / "exercises").glob("*.ipynb")) == [p.name for p in SOLUTIONS]


def test_exercises_are_exactly_what_the_generator_makes():
    assert generate(ROOT / "solutions", ROOT / "exercises", check=True, expected=False) == []


def test_the_public_expected_results_are_up_to_date():
    stale = generate(ROOT / "solutions", ROOT / "exercises", check=True)
    assert stale == [], f"{stale}: run `make exercises`"


@pytest.mark.parametrize("path", sorted((ROOT / "exercises").glob("*.ipynb")), ids=lambda p: p.name)
def test_exercises_ship_with_no_stored_output(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, cell["source"][:80]
    assert "widgets" not in nb["metadata"]
    assert BEGIN not in path.read_text() and "NotImplementedError" in path.read_text()


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_each_check_cell_of_a_solution_prints_exactly_one_passing_line(path):
    nb = nbformat.read(path, as_version=4)
    checks = [c for c in nb.cells if c.cell_type == "code" and is_check_cell(c)]
    assert len(checks) >= 3, "each exercise has at least 3 graded tasks"
    assert len(checks) == len(lesson(path.stem).tasks)
    for c in checks:
        assert [o.output_type for o in c.outputs] == ["stream"], "one stdout line, no Out: value"
        text = c.outputs[0].text
        assert text.startswith("✅") and text.count("\n") == 1, f"one passing line: {text!r}"
    assert "widgets" not in nb.metadata
    assert END not in json.dumps(make_exercise(nb))


@pytest.mark.parametrize("name", sorted(LESSONS))
def test_every_check_of_a_fresh_exercise_fails(capsys, name):
    les = lesson(name)
    for task in les.tasks:
        getattr(les.checks, f"check_{task}")(lambda *a, **k: (_ for _ in ()).throw(NotImplementedError()))
        out = capsys.readouterr().out.strip().splitlines()
        assert len(out) == 1 and out[0].startswith("❌") and "not implemented yet" in out[0], out


def test_one_command_checks_a_learners_work():
    proc = subprocess.run([sys.executable, "-m", "course_lib.checks", "exercises/01_padding.ipynb"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 1 and lines[-1].strip() == "0 of 5 checks pass", proc.stdout + proc.stderr
    assert sum("not implemented yet" in ln for ln in lines) == 5


def test_the_student_release_has_no_answers(tmp_path):
    from course_lib.grading.release import release
    out = release(tmp_path / "release")
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert any(n.startswith("notebooks/") for n in names) and any(n.startswith("exercises/") for n in names)
    assert "course_lib/checks/expected/01_padding.json" in names
    for banned in ("solutions/", "tests/", "course_lib/grading/", "course_lib/grade.py", "course_lib/exercises.py"):
        assert not any(n.startswith(banned) for n in names), banned
    text = "\n".join(p.read_text(encoding="utf-8", errors="ignore") for p in out.rglob("*")
                     if p.is_file() and p.suffix in (".py", ".ipynb", ".json", ".md"))
    for key in (BEGIN, "REFERENCE_FIXES", "reference_schedule_step", "reference_admit", "_cow_reference",
                "measured_handover_bytes", "incidents_telemetry", "hidden:"):
        assert key not in text, key
    # course_lib's own modules implement much of what the exercises ask (the lessons use them; calling one is
    # flagged); the checks and the exercises must not hold a solution's answer
    keys = "\n".join(p.read_text(encoding="utf-8") for p in [*(out / "course_lib" / "checks").rglob("*"),
                                                             *(out / "exercises").glob("*.ipynb")] if p.is_file())
    answers = [s for sol in SOLUTIONS for s in _answers(sol)]
    assert answers and not [a for a in answers if a in keys], "a solution's answer is in the checks or exercises"


def _answers(path):
    """The distinctive lines between the solution markers (longer than 40 characters)."""
    out = []
    for cell in nbformat.read(path, as_version=4).cells:
        inside = False
        for line in cell.source.splitlines():
            if line.strip() == BEGIN:
                inside = True
            elif line.strip() == END:
                inside = False
            elif inside and len(line.strip()) > 40 and not line.strip().startswith("#"):
                out.append(line.strip())
    return out
