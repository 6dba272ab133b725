"""Run `pytest --nbval` on an assembled notebook, in a fresh process, and read what happened.

Each notebook's kernel gets a private working folder and imports course_lib from a
copy of the students' bundle, made right before it starts (the plugin; course_lib.
grading.release: no grader, no solutions next to it, no shipped expected results), so
`Path(course_lib.__file__).parents[1] / "solutions"` does not exist there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat


INI = "[pytest]\naddopts =\ncache_dir = .pytest_cache\n"


def run_notebooks(nbs: list[nbformat.NotebookNode], cpu_limit: float, wall_limit: float,
                  keep: list[Path | None] | None = None) -> list[dict]:
    """The plugin's results for every cell of each notebook, one fresh kernel per notebook, in one pytest run."""
    if not nbs:
        return []
    with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
        work = Path(tmp)
        paths = []
        for i, nb in enumerate(nbs):
            folder = work / f"s{i:03d}"
            (folder / "nb").mkdir(parents=True)
            paths.append(folder / "nb" / "graded.ipynb")
            nbformat.write(nb, paths[-1])
            if keep and keep[i] is not None:
                keep[i].parent.mkdir(parents=True, exist_ok=True)
                nbformat.write(nb, keep[i])
        (work / "pytest.ini").write_text(INI, encoding="utf-8")
        results = work / "results.json"
        env = dict(os.environ)
        env.update(OMP_NUM_THREADS="1", PYTHONHASHSEED="0", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])   # this process's course_lib, the grader's
        env.pop("COURSE_STRICT_CLAIMS", None)
        cmd = [sys.executable, "-m", "pytest", "-c", str(work / "pytest.ini"), "--rootdir", str(work),
               "-p", "course_lib.grading.plugin", "-p", "no:cacheprovider", "-q", "--no-header", "-rN",
               "--nbval", "--nbval-current-env", f"--nbval-cell-timeout={wall_limit:g}",
               "--nbval-kernel-startup-timeout=120", f"--grader-cpu-limit={cpu_limit:g}",
               f"--grader-results={results}", *map(str, paths)]
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        if not results.is_file():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-8:]
            raise RuntimeError("pytest --nbval did not run: " + " | ".join(tail))
        out = json.loads(results.read_text(encoding="utf-8"))
        return [out.get(str(p), {"items": [], "restarts": 0, "error": "not run"}) for p in paths]
