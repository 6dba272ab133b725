"""Build wheelhouse/: the wheels `make gpu-check` installs on a GPU machine that has torch but no
Jupyter stack (and perhaps no internet).

    python tools/build_wheelhouse.py                 # on a machine with PyPI access
    python tools/build_wheelhouse.py --dry-run       # print the pip command only

Downloads, for CPython 3.12 on manylinux x86_64 (change with --python-version / --platform),
binary wheels only, with their dependencies:

    the course's pins (pyproject.toml) of nbclient, nbformat, ipykernel, nbval, plotly,
    ipywidgets, anywidget; pytest-xdist (gpu-check runs the suite on several workers);
    numpy, pytest, tqdm unpinned (the GPU machine's own copies are kept when it has them)

never torch, triton or CUDA libraries (the GPU machine brings its own). It writes
wheelhouse/requirements.txt (what gpu-check installs, with `pip install --no-index
--find-links wheelhouse -r wheelhouse/requirements.txt`) and refuses a wheelhouse over
MAX_MIB (the device tool carries at most 64 MiB). wheelhouse/ is in .gitignore.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PINNED = ("nbclient", "nbformat", "ipykernel", "nbval", "plotly", "ipywidgets", "anywidget")
EXTRA = ("pytest-xdist==3.8.0",)                 # not a course dependency: only gpu-check uses it
UNPINNED = ("numpy", "pytest", "tqdm")           # kept from the GPU machine when it has them
FORBIDDEN = ("torch", "triton", "nvidia")        # never in the wheelhouse
MAX_MIB = 60


def course_pins() -> dict[str, str]:
    """name -> 'name==version' from pyproject.toml (dependencies and the dev extra)."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    reqs = data["project"]["dependencies"] + data["project"]["optional-dependencies"]["dev"]
    return {r.split("==")[0].strip().lower(): r.split(";")[0].strip() for r in reqs}


def requirements() -> list[str]:
    pins = course_pins()
    missing = [n for n in PINNED if n not in pins]
    if missing:
        raise SystemExit(f"build_wheelhouse: pyproject.toml no longer pins {', '.join(missing)}")
    return [pins[n] for n in PINNED] + list(EXTRA) + list(UNPINNED)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dest", default=str(ROOT / "wheelhouse"))
    ap.add_argument("--python-version", default="3.12")
    ap.add_argument("--platform", action="append", default=None,
                    help="pip --platform tags (default: manylinux2014/2_17/2_28 x86_64)")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    platforms = args.platform or ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64"]
    abi = "cp" + args.python_version.replace(".", "")
    dest = Path(args.dest)
    reqs = requirements()
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--python-version", args.python_version,
           "--implementation", "cp", "--abi", abi, *[x for p in platforms for x in ("--platform", p)],
           "-d", str(dest), *reqs]
    print(" ".join(cmd))
    if args.dry_run:
        return 0
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob("*.whl"))
    bad = [w.name for w in wheels if w.name.lower().startswith(FORBIDDEN)]
    if bad:
        raise SystemExit(f"build_wheelhouse: refusing wheels the GPU machine brings itself: {', '.join(bad)}")
    (dest / "requirements.txt").write_text("\n".join(reqs) + "\n", encoding="utf-8")
    mib = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"build_wheelhouse: {len(wheels)} wheels, {mib:.1f} MiB in {dest}")
    if mib > MAX_MIB:
        raise SystemExit(f"build_wheelhouse: {mib:.1f} MiB is over {MAX_MIB} MiB (the device tool carries 64 MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
