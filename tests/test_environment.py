"""pyproject.toml and environment.yml name the same packages with the same pins."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pyproject_pins() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = data["project"]["dependencies"] + data["project"]["optional-dependencies"]["dev"]
    return dict(_split(r) for r in reqs)


def environment_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"\s*-\s+([A-Za-z0-9_.\-]+==[^\s;]+\s*(;.*)?)$", line)
        if m:
            name, version = _split(m.group(1))
            pins[name] = version
    return pins


def _split(req: str) -> tuple[str, str]:
    """'name==version' -> (name, version); an environment marker stays with the version
    ('triton==3.7.1; platform_system == "Linux"' -> ('triton', '3.7.1; platform_system == "Linux"'))."""
    req, _, marker = req.partition(";")
    name, _, version = req.partition("==")
    assert version, f"{req!r} is not pinned with =="
    return name.strip().lower(), version.strip() + (f"; {marker.strip()}" if marker.strip() else "")


def test_same_packages_same_pins():
    assert pyproject_pins() == environment_pins()


def test_key_pins():
    pins = pyproject_pins()
    assert pins["torch"] == "2.13.0"          # the local CPU wheel; unpinned pulls a multi-GB CUDA build
    assert "numpy" in pins and "anywidget" in pins   # torch does not pull numpy; FigureWidget needs anywidget
    for pkg in ("jupyterlab", "ipywidgets", "plotly", "nbval", "ipykernel"):
        assert pkg in pins


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme and "make lab" in readme
