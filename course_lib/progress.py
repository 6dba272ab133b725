"""Progress bars for the long runs a lesson starts (the engine, a trace replay): tqdm's.

    bar = progress_bar(total=300, desc="requests finished")   # bar.update(n), bar.close()

Turned off when the environment sets TQDM_DISABLE (to anything but '' or '0'): tools/run_notebooks.py
does, so the notebooks it stores hold no bar (a stored bar would show its first frame, "0%", in
the static notebook, the site and the slides). tqdm's own TQDM_DISABLE does not reach its notebook
bar, which sets `disable` itself, so the variable is read here.
"""

from __future__ import annotations

import os

OFF_ENV = "TQDM_DISABLE"


def progress_off() -> bool:
    """Whether the environment turns progress bars off."""
    return os.environ.get(OFF_ENV, "") not in ("", "0")


def progress_bar(total: int, desc: str, unit: str = "it"):
    """A tqdm bar (a widget in a notebook, text elsewhere) that goes away when closed."""
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=progress_off())
