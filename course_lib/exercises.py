"""Generate exercises/ from solutions/: the solutions are the single source of truth.

In a solution notebook, answers sit between marker lines (the nbgrader convention):

    def pad_sequences(seqs, pad, side):
        ### BEGIN SOLUTION
        ...the answer...
        ### END SOLUTION

The generated exercise keeps everything else and replaces each marked region with

        # YOUR CODE HERE
        raise NotImplementedError()

(in a markdown cell: "YOUR ANSWER HERE"). A cell that held an answer loses its
stored outputs; check cells (tagged "check") keep theirs: the passing verdict,
which a stub cannot reproduce, so nbval fails every check of a fresh exercise.

    python -m course_lib.exercises solutions exercises          # write
    python -m course_lib.exercises solutions exercises --check  # fail if out of date
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CODE_STUB = ["# YOUR CODE HERE", "raise NotImplementedError()"]
MARKDOWN_STUB = ["YOUR ANSWER HERE"]


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
    """A copy of the solution notebook with every answer replaced by a stub."""
    nb = copy.deepcopy(solution)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        new_source, found = strip_solutions(cell.source, cell.cell_type)
        if not found:
            continue
        cell.source = new_source
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    """Deterministic JSON text for a notebook (what gets written to disk)."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def generate(src: Path, dst: Path, check: bool = False) -> list[str]:
    """Write (or, with check=True, compare) one exercise per solution. Returns the stale names."""
    stale = []
    dst.mkdir(parents=True, exist_ok=True)
    for sol in sorted(src.glob("*.ipynb")):
        text = render(make_exercise(nbformat.read(sol, as_version=4)))
        target = dst / sol.name
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            stale.append(sol.name)
            if not check:
                target.write_text(text, encoding="utf-8")
    return stale


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("solutions", type=Path)
    parser.add_argument("exercises", type=Path)
    parser.add_argument("--check", action="store_true", help="only report exercises that are out of date")
    args = parser.parse_args(argv)
    stale = generate(args.solutions, args.exercises, check=args.check)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)} (run `make exercises`)")
        return 1
    print(f"{'checked' if args.check else 'wrote'} exercises for {len(list(args.solutions.glob('*.ipynb')))} solution notebook(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
