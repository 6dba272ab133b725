"""Run a command while a competing busy process keeps one CPU core at 100 %.

    python tools/with_load.py COMMAND [ARGS...]

The lessons state their interpretations as checked claims (course_lib/claims.py).
A claim must hold on a busy machine too, so `make test-under-load` runs every
lesson under nbval with this load beside it. The busy process is started
before the command and always stopped after it; the exit code is the command's.
"""

from __future__ import annotations

import subprocess
import sys

BUSY = "while True: pass"


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python tools/with_load.py COMMAND [ARGS...]", file=sys.stderr)
        return 2
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        print(f"with_load: a busy process (pid {busy.pid}) keeps one core loaded", flush=True)
        return subprocess.call(argv)
    finally:
        busy.kill()
        busy.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
