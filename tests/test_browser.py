"""Every lesson, run in a real browser the way a learner runs it.

JupyterLab (of the Python running the tests: .venv under `make test`) serves a copy of notebooks/ on a free local port
with a token; headless Chromium (Debian's /usr/bin/chromium, driven by Python
Playwright; never `playwright install`) opens each lesson, clears its stored outputs,
runs all cells and checks what a learner would see:

* no cell raised (read from the kernel's own messages on the page's websocket),
* every widget output renders as widgets (`.widget-*` elements), none as an error,
* every plotly figure renders (`.js-plotly-plot` with an SVG), with no request leaving
  this machine (plotly.js comes from the jupyterlab-plotly extension in the plotly wheel),
* no JavaScript error in the console,
* in lesson 01, moving the "sequences" slider and typing new lengths redraws the
  panel's figure through the kernel.

A screenshot of each lesson goes to test-artifacts/. The server and the browser are
stopped at the end. Skipped (with a message) only where /usr/bin/chromium is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
LESSONS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TOKEN = "course-browser-test"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Bounded waits, generous for 2 shared cores: (seconds)
SERVER_START, KERNEL_START, RUN_ALL, RENDER = 120, 120, 420, 60
OFFSITE: list[str] = []   # requests that tried to leave this machine (blocked)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="the real-browser test needs Chromium at /usr/bin/chromium: `apt-get install -y chromium` "
           "(.ci/run installs it)")

# JupyterLab settings for the test: every cell attached to the DOM (so every figure is
# counted), no autosave (the served notebooks stay as they are), no news fetched.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                       "checkForUpdates": False},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base: str, path: str, method: str = "GET"):
    req = urllib.request.Request(f"{base}{path}?token={TOKEN}", method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
    return json.loads(body) if body else None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server of this Python on a free port, serving a copy of the course."""
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "course"
    root.mkdir()
    shutil.copytree(ROOT / "notebooks", root / "notebooks")          # autosave is off; a copy all the same
    for entry in ROOT.iterdir():                                      # what a lesson may read beside it
        if entry.name not in ("notebooks", ".git", ".venv") and not entry.name.startswith("."):
            (root / entry.name).symlink_to(entry)
    for rel, value in LAB_SETTINGS.items():
        f = tmp / "settings" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(value))
    spec = tmp / "data" / "kernels" / "llm-serving-course"            # the course kernel, of this Python
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "LLM serving course", "language": "python"}))
    port = free_port()
    env = dict(os.environ, JUPYTER_PATH=str(tmp / "data"), JUPYTER_DATA_DIR=str(tmp / "data"),
               JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
               IPYTHONDIR=str(tmp / "ipython"), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    log = open(tmp / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
         f"--LabApp.user_settings_dir={tmp / 'settings'}", f"--LabApp.workspaces_dir={tmp / 'workspaces'}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START
        while True:
            assert proc.poll() is None, (tmp / "jupyterlab.log").read_text()[-3000:]
            try:
                api(base, "/api/status")
                break
            except OSError:
                assert time.monotonic() < deadline, f"JupyterLab did not answer within {SERVER_START} s"
                time.sleep(1)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
    assert proc.returncode is not None, "the JupyterLab server was not stopped"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with a fresh profile; every request off this machine is blocked and recorded."""
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(RENDER * 1000)

        def local_only(route):
            url = route.request.url
            if re.match(r"(https?|wss?)://(127\.0\.0\.1|localhost)[:/]", url) or url.startswith(("blob:", "data:")):
                route.continue_()
            else:
                OFFSITE.append(url)
                route.abort()

        context.route("**/*", local_only)
        try:
            yield context
        finally:
            context.close()


class KernelWatch:
    """Reads the kernel's messages off the page's websocket: errors raised by cells."""

    def __init__(self, page):
        self.errors: list[str] = []
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _frame(self, payload):
        msg = _decode(payload)
        if msg and msg[0] == "iopub" and msg[1].get("msg_type") == "error":
            content = msg[2]
            self.errors.append(f"{content.get('ename')}: {content.get('evalue')}")


def _decode(payload):
    """(channel, header, content) of a Jupyter websocket message (v1 binary or JSON); None otherwise."""
    try:
        if isinstance(payload, (bytes, bytearray)):
            n = int.from_bytes(payload[:8], "little")
            offsets = [int.from_bytes(payload[8 * (i + 1): 8 * (i + 2)], "little") for i in range(n)]
            parts = [payload[offsets[i]: offsets[i + 1]] for i in range(n - 1)]
            channel = parts[0].decode()
            header, content = json.loads(parts[1]), json.loads(parts[4])
            return channel, header, content
        msg = json.loads(payload)
        return msg.get("channel"), msg.get("header", {}), msg.get("content", {})
    except (ValueError, IndexError, UnicodeDecodeError, TypeError):
        return None


def stored_plots(path: Path) -> int:
    """How many plotly figures the lesson shows at top level (outside widgets) when run."""
    nb = nbformat.read(path, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    return sum("application/vnd.plotly.v1+json" in o.get("data", {}) for o in outputs)


PROMPTS = "[...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')].map(e => e.textContent.trim())"
KERNEL_IDLE = ("() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]"
               ".some(e => /^(?!No Kernel).+ \\| Idle$/.test(e.textContent.trim()))")
RENDERED = """() => {
  const top = '.jp-Cell-outputArea > .jp-OutputArea-child > .jp-OutputArea-output';
  const outs = [...document.querySelectorAll(top)];
  const plots = [...document.querySelectorAll('.jp-Notebook .js-plotly-plot')];   // mime outputs and FigureWidgets
  return {
    widgetOutputs: outs.filter(o => o.querySelector('.jupyter-widgets')).length,
    widgetElements: document.querySelectorAll('.jp-Notebook [class*="widget-"]').length,
    plotOutputs: outs.filter(o => o.classList.contains('jp-RenderedPlotly')).length,
    plots: plots.length,
    drawn: plots.filter(p => p.querySelector('svg.main-svg')).length,
    widgetTrouble: (document.querySelector('.jp-Notebook').innerText.match(
        /Error displaying widget[^\\n]*|Failed to load model class[^\\n]*|Loading widget\\.\\.\\.|No renderer could be found[^\\n]*/g) || [])
      .concat(outs.filter(o => o.getAttribute('data-mime-type') === 'text/plain'
                          && /^[A-Z]\\w*\\((children|value|layout|description|options)=/.test(o.textContent.trim()))
                  .map(o => 'a widget shown as text: ' + o.textContent.trim().slice(0, 80))),
  };
}"""


def menu(page, top: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{top}$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{re.escape(item)}$")).click()


def run_lesson(page, lab: str, lesson: Path) -> dict:
    """Open a lesson, clear its outputs, run all cells; wait (bounded) until it is done and drawn."""
    page.goto(f"{lab}/lab/tree/notebooks/{lesson.name}?token={TOKEN}&reset")
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=KERNEL_START * 1000)
    page.wait_for_function(KERNEL_IDLE, timeout=KERNEL_START * 1000)
    menu(page, "Edit", "Clear Outputs of All Cells")
    page.wait_for_function(f"() => {PROMPTS}.every(t => t === '[ ]:')")
    start = time.monotonic()
    menu(page, "Run", "Run All Cells")
    page.wait_for_function(f"() => {PROMPTS}.some(t => t !== '[ ]:')")
    page.wait_for_function(f"() => !{PROMPTS}.includes('[*]:')", timeout=RUN_ALL * 1000, polling=500)
    page.wait_for_function(KERNEL_IDLE, timeout=RENDER * 1000)
    seconds = time.monotonic() - start
    prompts = page.evaluate(f"() => {PROMPTS}")
    # figures and widgets render asynchronously: wait until every figure has its SVG
    try:
        page.wait_for_function(f"() => {{ const r = ({RENDERED})(); return r.plots === r.drawn; }}",
                               timeout=RENDER * 1000, polling=500)
    except Exception:
        pass  # reported by the assertions below
    return {"prompts": prompts, "seconds": seconds, **page.evaluate(f"({RENDERED})()")}


def shut_down_kernels(lab: str) -> None:
    for session in api(lab, "/api/sessions") or []:
        api(lab, f"/api/sessions/{session['id']}", method="DELETE")


def exercise_padding_panel(page) -> list[str]:
    """Lesson 01's panel: move the slider, type lengths; the figure must follow (through the kernel).
    Returns the figure titles seen: before, after."""
    slider = page.locator(".widget-slider", has=page.locator(".widget-label", has_text="sequences")).first
    panel = page.locator(".jp-OutputArea-output", has=slider).last
    title_of = "panel => (panel.querySelector('.js-plotly-plot .gtitle') || {}).textContent || ''"
    page.wait_for_function(f"panel => ({title_of})(panel).includes('sequences')", arg=panel.element_handle())
    before = panel.evaluate(title_of)
    slider.scroll_into_view_if_needed()
    handle = slider.locator(".noUi-handle").first
    handle.focus()
    handle.press("ArrowRight")                                     # 3 -> 4 sequences
    # 4 sequences but 3 lengths: the kernel answers with a red one-line message, no traceback
    panel.locator("text=/lengths: give exactly 4 values/").wait_for(timeout=RENDER * 1000)
    box = panel.locator(".widget-text input").first
    box.fill("4, 7, 2, 9")
    box.press("Enter")
    page.wait_for_function(f"panel => /^4 sequences .* to 9 slots/.test(({title_of})(panel))",
                           arg=panel.element_handle(), timeout=RENDER * 1000, polling=250)
    after = panel.evaluate(title_of)
    panel.scroll_into_view_if_needed()
    return [before, after]


@pytest.mark.slow
@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_runs_and_renders_in_chromium(lab, browser, lesson):
    page = browser.new_page()
    console, watch = [], KernelWatch(page)
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    offsite_before = len(OFFSITE)
    try:
        r = run_lesson(page, lab, lesson)
        print(f"{lesson.name}: ran all cells in {r['seconds']:.1f} s; {r['widgetOutputs']} widget outputs, "
              f"{r['drawn']}/{r['plots']} figures drawn")
        titles = exercise_padding_panel(page) if lesson.stem.startswith("01_") else None
        if titles:
            print(f"{lesson.name}: panel figure '{titles[0]}' -> '{titles[1]}'")
        else:
            first = page.locator(".jp-RenderedPlotly, .jupyter-widgets").first
            if first.count():
                first.scroll_into_view_if_needed()
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{lesson.stem}.png"))
        page.close()
        shut_down_kernels(lab)

    plots = stored_plots(lesson)
    assert not watch.errors, f"{lesson.name}: cells raised {watch.errors}"
    assert all(re.fullmatch(r"\[\d+\]:", p) for p in r["prompts"]), \
        f"{lesson.name}: not every cell ran (an error stops Run All): {r['prompts']}"
    # every lesson has a panel or a knowledge check; a widget that closes itself (a finished
    # tqdm bar) leaves an empty output, so the stored count is not a lower bound
    assert r["widgetElements"] > 0 and r["widgetOutputs"] >= 1, f"{lesson.name}: no widget rendered"
    assert not r["widgetTrouble"], f"{lesson.name}: {r['widgetTrouble']}"
    assert r["plots"] >= max(1, plots) and r["drawn"] == r["plots"], \
        f"{lesson.name}: {r['drawn']} of {r['plots']} plotly figures drawn; the lesson shows {plots} at top level"
    assert r["plotOutputs"] >= plots
    assert not console, f"{lesson.name}: JavaScript console errors: {console[:5]}"
    assert OFFSITE[offsite_before:] == [], f"{lesson.name}: requests left this machine"
    if titles:
        assert titles[0] != titles[1] and titles[1].startswith("4 sequences")
