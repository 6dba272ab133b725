"""`make release`: the bundle students get: the lessons, the exercises, course_lib; no answers.

    python -m course_lib.grading.release release/      # writes release/ (replacing it)

Left out: solutions/, tests/ (they hold reference and wrong answers), the grader
(course_lib/grade.py, course_lib/grading/), the exercise generator, tools/ and
benchmarks/. course_lib/checks/ keeps the public cases and, in checks/expected/,
the public cases' expected results, so each check cell prints its verdict; the
hidden cases and the reference answers stay with the grader. Self-paced learners
keep the whole repository instead.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "course_lib"
NOT_SHIPPED = {"grading", "grade.py", "exercises.py", "__pycache__"}
FILES = ["pyproject.toml", "environment.yml", "LICENSE"]

README = """# How LLM inference servers manage memory and batch work: the student bundle

    make lab          # set up .venv, then open the course in JupyterLab
    make check EXERCISE=exercises/01_padding.ipynb    # check your work, one line per task

`notebooks/` are the lessons, `exercises/` the graded exercises: write each function, run the
notebook top to bottom; each check cell prints one line, ✅ when all its public cases pass or ❌
with the first failing case. Your teacher grades with more cases than the public ones (the
classes of mistakes the task text warns about, inputs drawn at random), so make your functions
right for every input the task describes, not only for the cases shown.
"""

MAKEFILE = """PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
export OMP_NUM_THREADS ?= 2
export HF_HUB_OFFLINE := 1
.PHONY: lab check

$(VENV)/.installed: pyproject.toml
\ttest -x $(PY) || $(PYTHON) -m venv $(VENV)
\t$(PY) -m pip install --quiet --upgrade pip
\t$(PY) -m pip install --quiet -e .
\t$(PY) -m ipykernel install --sys-prefix --name llm-serving-course --display-name "LLM serving course" > /dev/null
\ttouch $@

lab: $(VENV)/.installed
\t$(VENV)/bin/jupyter lab $(ROOT_FLAG) --LabApp.default_url=/lab/tree/notebooks/00_welcome.ipynb $(LAB_ARGS)

check: $(VENV)/.installed
\t$(PY) -m course_lib.checks $(EXERCISE)
"""


def _ignore(expected: bool):
    def ignore(folder, names):
        out = {n for n in names if n in NOT_SHIPPED or n.endswith((".pyc", ".so", ".o"))}
        if not expected and Path(folder).name == "checks":
            out.add("expected")
        return out
    return ignore


def copy_package(dst: Path, expected: bool = True) -> Path:
    """course_lib without the grader (and, expected=False, without the public expected results)."""
    if Path(dst).exists():
        shutil.rmtree(dst)
    shutil.copytree(PACKAGE, dst, ignore=_ignore(expected))
    return dst


def release(out: Path) -> Path:
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    copy_package(out / "course_lib")
    for folder in ("notebooks", "exercises"):
        shutil.copytree(ROOT / folder, out / folder, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for name in FILES:
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, out / name)
    (out / "README.md").write_text(README, encoding="utf-8")
    (out / "Makefile").write_text(MAKEFILE, encoding="utf-8")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, nargs="?", default=ROOT / "release")
    args = parser.parse_args(argv)
    out = release(args.out)
    files = sum(1 for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({files} files): lessons, exercises, course_lib; no solutions, no grader")
    return 0


if __name__ == "__main__":
    sys.exit(main())
