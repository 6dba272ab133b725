"""The exercise pipeline: solutions/ is the source; exercises/ is generated from it;
every check of a fresh exercise fails, every check of a solution passes."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from course_lib.exercises import generate, is_check_cell, make_exercise, strip_solutions

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


def test_there_are_solutions():
    assert SOLUTIONS, "solutions/ holds the graded exercises"


def test_exercises_are_exactly_what_the_generator_makes(tmp_path):
    assert generate(ROOT / "solutions", ROOT / "exercises", check=True) == []
    assert sorted(p.name for p in (ROOT / "exercises").glob("*.ipynb")) == [p.name for p in SOLUTIONS]


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_solution_has_graded_tasks_with_passing_verdicts(path):
    nb = nbformat.read(path, as_version=4)
    checks = [c for c in nb.cells if c.cell_type == "code" and is_check_cell(c)]
    assert len(checks) >= 3, "each exercise has at least 3 graded tasks"
    for c in checks:
        text = "".join(o.get("text", "") for o in c.outputs if o.output_type == "stream")
        assert text.startswith("✅") and text.count("\n") == 1, f"stored verdict must be one passing line: {text!r}"
    assert "widgets" not in nb.metadata, "widget state (embedded plotly.js) must be stripped"
    ex = make_exercise(nb)
    assert "### BEGIN SOLUTION" not in json.dumps(ex) and "NotImplementedError" in json.dumps(ex)


@pytest.mark.slow
@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_every_check_of_a_fresh_exercise_fails(path):
    nb = nbformat.read(ROOT / "exercises" / path.name, as_version=4)
    stored = {i: json.dumps(c.outputs) for i, c in enumerate(nb.cells) if c.cell_type == "code" and is_check_cell(c)}
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(ROOT / "exercises")}}).execute()
    for i, before in stored.items():
        after = nb.cells[i].outputs
        assert json.dumps(after) != before, f"check cell {i} reproduced the passing verdict on a stub"
        text = "".join(o.get("text", "") for o in after if o.output_type == "stream")
        assert "✅" not in text
