"""Check your work: run an exercise notebook top to bottom in a fresh kernel and print its verdicts.

    python -m course_lib.checks exercises/01_padding.ipynb [MORE.ipynb ...]

One line per check cell (✅ or ❌ with the first failing public case), then a count.
The notebook file is not changed. Exit status 0 when every check passes, 1 otherwise.
This runs the public cases only; grading (course_lib.grade, your teacher's) runs more.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from course_lib.checks.core import FAIL, PASS


def verdicts(path: Path, timeout: int = 600) -> list[str]:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(Path(path).resolve().parent)}})
    client.execute()
    lines = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "check" not in cell.metadata.get("tags", []):
            continue
        text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
        shown = [ln for ln in text.splitlines() if ln.startswith((PASS, FAIL))]
        err = next((o for o in cell.outputs if o.get("output_type") == "error"), None)
        if err is not None:
            lines.append(f"{FAIL} check cell {i} raised {err.get('ename')}: {err.get('evalue', '')[:160]}")
        else:
            lines.append(shown[-1] if shown else f"{FAIL} check cell {i} printed no verdict")
    return lines


def main(argv=None) -> int:
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        print(__doc__.strip().splitlines()[2].strip())
        return 2
    ok = True
    for path in paths:
        if not path.is_file():
            print(f"{path}: no such file")
            ok = False
            continue
        lines = verdicts(path)
        print(f"{path}:")
        for line in lines:
            print(f"  {line}")
        passed = sum(line.startswith(PASS) for line in lines)
        print(f"  {passed} of {len(lines)} checks pass")
        ok = ok and passed == len(lines)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
