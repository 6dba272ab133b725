"""Generate exercises/ from solutions/: the solutions are the single source of truth.

In a solution notebook, answers sit between marker lines (the nbgrader convention):

    def pad_sequences(seqs, pad, side):
        ### BEGIN SOLUTION
        ...the answer...
        ### END SOLUTION

The generated exercise keeps everything else and replaces each marked region with

        # YOUR CODE HERE
        raise NotImplementedError()

(in a markdown cell: "YOUR ANSWER HERE"). Exercises ship clean: no cell keeps a stored
output or an execution count, so a fresh exercise shows nothing passed and nbval
never compares a learner's run with stored lines (grading does not use them either:
course_lib.grade).

The same run writes what the check cells compare with while a learner works:
course_lib/checks/expected/<exercise>.json, the public cases' expected results from
the solutions' reference answers (and, for exercise 07, the public diagnosis cases'
telemetry, <exercise>.inputs.json); and for the grader, the hidden diagnosis cases'
telemetry (course_lib/grading/hidden/incidents_telemetry.json: each run takes seconds).

    python -m course_lib.exercises solutions exercises          # write
    python -m course_lib.exercises solutions exercises --check  # fail if out of date
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import re
import sys
from pathlib import Path

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CODE_STUB = ["# YOUR CODE HERE", "raise NotImplementedError()"]
MARKDOWN_STUB = ["YOUR ANSWER HERE"]
EXPECTED = Path(__file__).with_name("checks") / "expected"


def strip_solutions(source: str, cell_type: str = "code") -> tuple[str, bool]:
    """Replace every BEGIN/END SOLUTION region; return (new source, whether any was found)."""
    lines, out, inside, found = source.split("\n"), [], False, False
    for n, line in enumerate(lines, 1):
        if line.strip() == BEGIN:
            if inside:
                raise ValueError(f"line {n}: nested {BEGIN}")
            inside, found = True, True
            indent = re.match(r"\s*", line).group(0)
            stub = CODE_STUB if cell_type == "code" else MARKDOWN_STUB
            out.extend(indent + s for s in stub)
        elif line.strip() == END:
            if not inside:
                raise ValueError(f"line {n}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN} is never closed")
    return "\n".join(out), found


def is_check_cell(cell) -> bool:
    return "check" in cell.get("metadata", {}).get("tags", [])


def make_exercise(solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of the solution notebook with every answer replaced by a stub and no stored output."""
    nb = copy.deepcopy(solution)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.source = strip_solutions(cell.source, cell.cell_type)[0]
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
    return nb


def render(data) -> str:
    """Deterministic JSON text (what gets written to disk)."""
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def expected_files(src: Path, inputs: bool = True) -> dict[Path, str]:
    """The public expected results (and exercise 07's public inputs) the solutions give, as file texts.
    inputs=False keeps the shipped inputs of exercise 07 (computing them runs the incidents)."""
    from course_lib.grading.cases import public_expected
    from course_lib.grading.lessons import LESSONS
    from course_lib.grading.reference import references
    out = {}
    for name in LESSONS:
        sol = src / f"{name}.ipynb"
        if not sol.is_file():
            continue
        if name == "07_capstone_incident":
            import course_lib.checks.incidents as inc
            from course_lib.grading.hidden.incidents import RUNS_FILE, public_inputs, telemetry
            if inputs or not RUNS_FILE.is_file():
                out[RUNS_FILE] = render(telemetry(references(sol)))
            if inputs or not inc.INPUTS.is_file():
                text = render(public_inputs(references(sol)))
                out[inc.INPUTS] = text
                if not inc.INPUTS.is_file() or inc.INPUTS.read_text(encoding="utf-8") != text:
                    inc.INPUTS.parent.mkdir(parents=True, exist_ok=True)
                    inc.INPUTS.write_text(text, encoding="utf-8")      # the public cases are built from it
                    importlib.reload(inc)
        out[EXPECTED / f"{name}.json"] = render(public_expected(name, sol))
    return out


def generate(src: Path, dst: Path, check: bool = False, expected: bool = True) -> list[str]:
    """Write (or, with check=True, compare) one exercise per solution and the public expected results.
    Returns the names that were out of date."""
    stale = []
    dst.mkdir(parents=True, exist_ok=True)
    for sol in sorted(src.glob("*.ipynb")):
        text = render(make_exercise(nbformat.read(sol, as_version=4)))
        target = dst / sol.name
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            stale.append(sol.name)
            if not check:
                target.write_text(text, encoding="utf-8")
    if expected:
        for path, text in expected_files(src, inputs=not check).items():
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path.relative_to(EXPECTED.parents[2])))
                if not check:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(text, encoding="utf-8")
    return stale


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("solutions", type=Path)
    parser.add_argument("exercises", type=Path)
    parser.add_argument("--check", action="store_true", help="only report what is out of date")
    args = parser.parse_args(argv)
    stale = generate(args.solutions, args.exercises, check=args.check)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)} (run `make exercises`)")
        return 1
    n = len(list(args.solutions.glob("*.ipynb")))
    print(f"{'checked' if args.check else 'wrote'} exercises and public expected results for {n} solution notebook(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
