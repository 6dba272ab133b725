"""Execute notebooks in place so they ship with their outputs, and time them.

    python tools/run_notebooks.py notebooks/01_padding.ipynb solutions/01_padding.ipynb

Each notebook runs top to bottom in a fresh kernel of this environment; its
outputs are stored, widget state (which would embed plotly.js) is dropped,
and the kernelspec is set to the course kernel. Prints the run time of each.
Progress bars are off in these runs (TQDM_DISABLE=1 in the kernel's environment): a stored
bar would show its first frame, "0%", in the static notebook, the site and the slides.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from course_lib.exercises import render  # noqa: E402

KERNELSPEC = {"name": "llm-serving-course", "display_name": "LLM serving course", "language": "python"}


def run(path: Path, timeout: int = 600) -> float:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata.setdefault("language_info", {"name": "python"})
    path.write_text(render(nb), encoding="utf-8")
    return seconds


if __name__ == "__main__":
    os.environ["TQDM_DISABLE"] = "1"          # the kernel inherits it: no progress bars in stored outputs
    for arg in sys.argv[1:]:
        print(f"{arg}: {run(Path(arg)):.1f} s", flush=True)
