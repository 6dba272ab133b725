"""The grader's pytest plugin for nbval (`pytest --nbval -p course_lib.grading.plugin NOTEBOOK`).

nbval runs the assembled notebook (course_lib.grading.assemble) in a fresh kernel and
compares each case cell's output with the reference line stored in it. This plugin,
in the pytest process, outside the learner's kernel:

* judges: before nbval compares a case cell, the task's judge (course_lib.checks.judges)
  reads the kernel's line as data and, when it is an equally good answer (a float
  within tolerance, another optimal grouping, another fix that meets every target),
  replaces it with the reference line; anything else is compared as printed;
* hides the expected lines: the notebook file is deleted once pytest has read it,
  before any kernel starts (keep it with --grader-keep-notebook);
* limits CPU time: a cell that uses more than --grader-cpu-limit seconds of the
  kernel's CPU time is interrupted (killed if it does not stop), so a busy machine
  slows grading down but never fails an answer; nbval's --nbval-cell-timeout stays
  the wall-clock backstop (a cell that sleeps);
* gives each notebook's kernel its own copy of the students' course_lib, made just
  before it starts (PYTHONPATH; this process keeps the grader's own);
* survives a dying kernel: the next cell gets a new kernel, which first re-runs the
  answer cells that ran before;
* writes what happened to every cell to --grader-results (JSON).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from queue import Empty

import pytest

from course_lib.checks.core import SEP, decode, judge_of

STATE = {"items": {}, "order": [], "kernels": set(), "files": {}}


def _file(item) -> dict:
    """Per notebook: the answer cells run so far (to replay), restarts, its kernel's course_lib."""
    return STATE["files"].setdefault(str(item.fspath), {"answers": [], "restarts": 0, "replay_failed": False,
                                                        "lib": None, "broken": {}})


def pytest_addoption(parser):
    group = parser.getgroup("grader", "course_lib grader")
    group.addoption("--grader-results", default=None, help="write what happened to each cell here (JSON)")
    group.addoption("--grader-cpu-limit", type=float, default=60.0, help="CPU seconds a cell may use")
    group.addoption("--grader-keep-notebook", action="store_true", help="do not delete the notebook once read")


def pytest_configure(config):
    # Import every judge now, before any kernel runs: nothing a kernel writes to disk can change them.
    import importlib

    from course_lib.checks import judges  # noqa: F401
    from course_lib.grading.lessons import LESSONS
    for checks, _ in LESSONS.values():
        importlib.import_module(checks)


def _grader(item) -> dict | None:
    cell = getattr(item, "cell", None)
    return None if cell is None else cell.get("metadata", {}).get("grader")


def pytest_collection_modifyitems(session, config, items):
    files = set()
    for item in items:
        meta = _grader(item)
        if meta is None:
            continue
        STATE["order"].append(item.nodeid)
        STATE["items"][item.nodeid] = {"file": str(item.fspath), **{k: meta.get(k) for k in
                                       ("kind", "task", "case", "group", "cell", "defines")}}
        if meta.get("kind") == "case":
            item.compare_outputs = _judged(item, item.compare_outputs, meta)
        files.add(str(item.fspath))
    if not config.getoption("--grader-keep-notebook"):
        for f in files:
            Path(f).unlink(missing_ok=True)


def _stdout(outputs) -> str:
    return "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stdout")


def _judged(item, compare, meta):
    """nbval's compare_outputs, after the task's judge has read the kernel's line."""
    record = STATE["items"][item.nodeid]

    def compare_outputs(test, ref, skip_compare=None):
        want_line = _stdout(ref).rstrip("\n")
        head = f"{meta['task']}{SEP}{meta['case']}: "
        want = want_line[len(head):]
        record["expected"] = want
        text = _stdout(test)
        record["shown"] = text.rstrip("\n")
        only_stdout = all(o.get("output_type") == "stream" and o.get("name") == "stdout" for o in test)
        lines = text.splitlines()
        if only_stdout and len(lines) == 1 and lines[0].startswith(head):
            try:
                data = json.loads(lines[0][len(head):])
                args = decode(json.loads(meta["args"])["args"])
                shown = judge_of(meta["judge"])(data, want, args)
            except Exception as exc:                     # data the judge cannot read is not an answer
                record["judge_error"] = f"{type(exc).__name__}: {exc}"
            else:
                record["shown"] = shown
                out = type(test[0])(output_type="stream", name="stdout", text=head + shown + "\n")
                test = [out]
        elif not only_stdout or len(lines) != 1:
            record["extra_output"] = True
        ok = compare(test, ref, skip_compare)
        record["same"] = bool(ok)
        return ok

    return compare_outputs


# ---- kernels: CPU-time limits, deaths, restarts ------------------------------------------------------------
def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        try:
            import psutil
            t = psutil.Process(pid).cpu_times()
            return t.user + t.system
        except Exception:
            return 0.0


def _pid(kernel) -> int | None:
    try:
        return kernel.km.provisioner.pid
    except Exception:
        return None


class Watchdog(threading.Thread):
    """Interrupts the kernel when the cell has used `limit` CPU seconds; kills it if it does not stop."""

    def __init__(self, kernel, limit: float, grace: float = 5.0):
        super().__init__(daemon=True)
        self.kernel, self.limit, self.grace = kernel, limit, grace
        self.pid = _pid(kernel)
        self.start_cpu = _cpu_seconds(self.pid) if self.pid else 0.0
        self.stopped = threading.Event()
        self.interrupted_at = None
        self.killed = False

    def used(self) -> float:
        if self.pid:
            self.last = max(getattr(self, "last", 0.0), _cpu_seconds(self.pid) - self.start_cpu)
        return getattr(self, "last", 0.0)

    def run(self):
        while not self.stopped.wait(0.05):
            if self.interrupted_at is None and self.used() > self.limit:
                self.interrupted_at = time.monotonic()
                try:
                    self.kernel.km.interrupt_kernel()
                except Exception:
                    pass
            elif self.interrupted_at is not None and time.monotonic() - self.interrupted_at > self.grace:
                self.killed = True
                try:
                    os.kill(self.pid, 9)
                except OSError:
                    pass
                return

    def stop(self):
        self.stopped.set()


def _guard(kernel, watchdog_ref: dict) -> None:
    """Make nbval's waits on this kernel give up as soon as the watchdog has killed it."""
    if id(kernel) in STATE["kernels"]:
        return
    STATE["kernels"].add(id(kernel))
    original = kernel.get_message

    def get_message(stream, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            w = watchdog_ref.get("current")
            if (w is not None and w.killed) or not kernel.is_alive():
                raise Empty
            step = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
            try:
                return original(stream, timeout=step)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    kernel.get_message = get_message


WATCH: dict = {}

# Run by IPython as each kernel starts: an editable install's finder would resolve course_lib.grading (and the
# grader's other modules) from the repository even though course_lib itself comes from the students' copy.
KERNEL_STARTUP = """import sys
sys.meta_path[:] = [f for f in sys.meta_path if not str(getattr(f, "__module__", "")).startswith("__editable__")]
for _name in [m for m in sys.modules if m.startswith("__editable__")]:
    del sys.modules[_name]
del _name
"""


def _restart(item) -> None:
    from nbval.kernel import CURRENT_ENV_KERNEL_NAME, RunningKernel
    parent = item.parent
    try:
        parent.kernel.stop()
    except Exception:
        pass
    parent.kernel = RunningKernel(CURRENT_ENV_KERNEL_NAME, cwd=str(parent.fspath.dirname),
                                  startup_timeout=item.config.option.nbval_kernel_startup_timeout)
    state = _file(item)
    state["restarts"] += 1
    limit = item.config.getoption("--grader-cpu-limit")
    for source in state["answers"]:
        w = Watchdog(parent.kernel, limit)
        WATCH["current"] = w
        _guard(parent.kernel, WATCH)
        w.start()
        try:
            msg_id = parent.kernel.execute_cell_input(source, allow_stdin=False)
            parent.kernel.await_reply(msg_id, timeout=item.config.option.nbval_cell_timeout)
        except Exception:
            w.stop()
            state["replay_failed"] = True
            parent.kernel.stop()
            parent.kernel = RunningKernel(CURRENT_ENV_KERNEL_NAME, cwd=str(parent.fspath.dirname),
                                          startup_timeout=item.config.option.nbval_kernel_startup_timeout)
            break
        w.stop()
    WATCH["current"] = None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if _grader(item) is None:
        return
    parent = item.parent
    state = _file(item)
    if state["lib"] is None:                     # this notebook's kernel is about to start: its course_lib
        from course_lib.grading.release import copy_package
        lib = Path(str(item.fspath)).parent / f".{Path(str(item.fspath)).stem}-course_lib"
        state["lib"] = str(copy_package(lib / "course_lib", expected=False).parent)
        startup = lib / "ipython" / "profile_default" / "startup"
        startup.mkdir(parents=True, exist_ok=True)
        (startup / "00-grader.py").write_text(KERNEL_STARTUP, encoding="utf-8")
        os.environ["PYTHONPATH"] = state["lib"]  # kernels import the students' course_lib; this process keeps its own
        os.environ["IPYTHONDIR"] = str(lib / "ipython")
    parent.timed_out = False                     # one cell's timeout never fails the cells after it
    meta = _grader(item)
    why = state["broken"].get(meta.get("task")) if meta.get("kind") == "case" else None
    if why:                                      # one fault costs its task once, not once per case
        STATE["items"][item.nodeid].update(timeout=why[0], error=why[1], skipped=True)
        pytest.skip(why[1])
    if parent.kernel is not None and not parent.kernel.is_alive():
        _restart(item)
        STATE["items"][item.nodeid]["after_restart"] = True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    meta = _grader(item)
    if meta is None:
        yield
        return
    kernel = item.parent.kernel
    w = Watchdog(kernel, item.config.getoption("--grader-cpu-limit"))
    WATCH["current"] = w
    _guard(kernel, WATCH)
    t0 = time.perf_counter()
    w.start()
    try:
        yield
    finally:
        w.stop()
        rec = STATE["items"][item.nodeid]
        rec["cpu"] = round(w.used(), 3)
        rec["wall"] = round(time.perf_counter() - t0, 3)
        if w.killed:
            rec["timeout"] = "killed"
        elif w.interrupted_at is not None:
            rec["timeout"] = "cpu"
        if not kernel.is_alive() and not w.killed:
            rec["died"] = True
        WATCH["current"] = None
        if meta.get("kind") == "answer" and not w.killed:
            _file(item)["answers"].append(item.cell.source)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    rec = STATE["items"].get(item.nodeid)
    if rec is None or (rep.when == "setup" and rep.passed) or rep.when == "teardown":
        return
    rec["outcome"] = rep.outcome
    outs = getattr(item, "test_outputs", None) or []
    if rec.get("kind") in ("describe", "answer"):
        rec["stdout"] = _stdout(outs)[-4000:]
    err = next((o for o in outs if o.get("output_type") == "error"), None)
    if err is not None:
        rec["error"] = f"{err.get('ename', 'Error')}: {err.get('evalue', '')}"[:500]
    elif rep.failed and rec.get("same") is None:
        text = str(rep.longrepr)
        rec["error"] = ("Timeout" if "Timeout" in text else "the cell failed") + (
            f" ({text.splitlines()[1][:200]})" if len(text.splitlines()) > 1 and "Timeout" in text else "")
        if "Timeout" in text and "timeout" not in rec and not rec.get("died"):
            rec["timeout"] = "wall"
    if rep.when == "call" and rec.get("kind") == "case" and (rec.get("timeout") or rec.get("died")):
        what = {"cpu": "timed out", "killed": "timed out and would not stop", "wall": "ran past the wall-clock limit",
                None: "killed the kernel"}[rec.get("timeout")]
        _file(item)["broken"][rec["task"]] = (rec.get("timeout"), f"not run: an earlier case {what}")


def pytest_sessionfinish(session, exitstatus):
    path = session.config.getoption("--grader-results")
    if path:
        out = {}
        for nodeid in STATE["order"]:
            rec = STATE["items"][nodeid]
            f = rec.pop("file")
            state = STATE["files"].get(f, {})
            entry = out.setdefault(f, {"items": [], "restarts": state.get("restarts", 0),
                                       "replay_failed": state.get("replay_failed", False)})
            entry["items"].append(rec)
        Path(path).write_text(json.dumps(out, indent=1), encoding="utf-8")
