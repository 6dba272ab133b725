"""Every lesson, run in a real browser the way a learner runs it.

JupyterLab (of the Python running the tests: .venv under `make test`) serves a copy of notebooks/ on a free local port
with a token; headless Chromium (Debian's /usr/bin/chromium, driven by Python
Playwright; never `playwright install`) opens each lesson in a 1024-px wide window (the file browser
folded away), clears its stored outputs, runs all cells and checks what a learner would see:

* no cell raised (read from the kernel's own messages on the page's websocket),
* every widget output renders as widgets (`.widget-*` elements), none as an error,
* every plotly figure renders (`.js-plotly-plot` with an SVG), with no request leaving
  this machine (plotly.js comes from the jupyterlab-plotly extension in the plotly wheel),
* no JavaScript error in the console,
* every widget is driven through the page (PANELS below) with good values, one bad value and a
  good value again: a good value redraws the figure; the bad one gives a one-line red message
  naming the parameter while the figures are greyed out and the numbers gone; the good value
  again clears the message and brings the figures back; lesson 00's storyteller too,
* a knowledge check is answered (a letter, then Check) and its feedback read, with the lesson's
  summary line counting it; lesson 02's numeric check is answered with a word, then the right number,
* no element of any output ends past the notebook column, and no quiz option overlaps the next.

Every update is timed in the page, from the change to the redrawn panel (two animation frames after
the kernel's answer); each widget's median and worst are printed (pytest -s, or the last test's
summary) and written to test-artifacts/widget-times.json. They are reported, not asserted: tests
check behaviour, not wall-clock time (each wait is bounded, generously, by RENDER).

A screenshot of each lesson goes to test-artifacts/. The server and the browser are
stopped at the end. Skipped (with a message) only where /usr/bin/chromium is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
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
VIEWPORT = {"width": 1024, "height": 900}          # a laptop's window: the notebook column is about 840 px
TIMES: dict[str, list[dict]] = {}                  # widget -> its updates: {"step", "ms", "kernel_ms"}

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
            viewport=VIEWPORT)
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
    """Open a lesson, fold the file browser away, clear its outputs, run all cells; wait (bounded)
    until it is done and drawn."""
    page.goto(f"{lab}/lab/tree/notebooks/{lesson.name}?token={TOKEN}&reset")
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=KERNEL_START * 1000)
    page.wait_for_function(KERNEL_IDLE, timeout=KERNEL_START * 1000)
    open_tab = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if open_tab.count():
        open_tab.first.click()                                         # the notebook gets the window's width
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


# ---- driving the widgets through the page --------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    """One change a learner makes: `label` is the control's description as the page shows it."""

    label: str
    value: str | tuple[str, ...]
    kind: str = "text"        # text: type, then Enter; select: pick the option; key: press on a slider's handle


@dataclass(frozen=True)
class Drive:
    """How the browser test drives one panel: good values (each must redraw the figure), a bad value
    (a red line naming `names`, the figures greyed, the numbers gone), and `again`, a good value once
    more (the message gone, the figures back: the same figures as after the good values when `same`,
    else titled `title`). `note`: whether the panel's red note shows before and after the good values."""

    name: str
    anchor: str               # a control's label that finds the panel (the `nth` such panel of the lesson)
    good: tuple[Change, ...]
    bad: Change
    names: str
    again: Change
    same: bool = True
    title: str | None = None
    note: tuple[bool, bool] | None = None
    nth: int = 0


TRACE = {"contention": "documents while 16 streams decode (cost-model clock)",
         "starvation": "two classes: a high-priority stream (step clock)",
         "documents": "chat + long documents (cost-model clock)"}
PANELS: dict[str, list[Drive]] = {
    "00": [Drive("padding (lesson 00)", "pad side", (Change("pad side", "right", "select"),),
                 Change("lengths", "0, 7, 2"), "lengths", Change("lengths", "4, 7, 2"), same=False,
                 title="3 sequences padded on the right to 7 slots")],
    "01": [Drive("padding", "pad side", (Change("pad side", "right", "select"),),
                 Change("sequences", "ArrowRight", "key"), "lengths", Change("lengths", "4, 7, 2, 9"), same=False,
                 title="4 sequences padded on the right to 9 slots")],
    "02": [Drive("fragmentation", "arena slots", (Change("reservation", "oracle", "select"), Change("arena slots", "16384")),
                 Change("rate (req/s)", "0"), "rate", Change("rate (req/s)", "5"), note=(True, False))],
    "03": [Drive("batching", "batch slots", (Change("policy", "decode-first", "select"), Change("tokens per step", "5")),
                 Change("batch slots", "0"), "batch slots", Change("batch slots", "4"))],
    "04": [Drive("paging", "pool blocks", (Change("block size", "32", "select"), Change("lengths", "37, 5, 64, 9")),
                 Change("pool blocks", "0"), "pool blocks", Change("pool blocks", "24"))],
    "05": [Drive("prefix sharing", "shared prefix", (Change("block size", "16", "select"), Change("shared prefix", "End", "key")),
                 Change("block size", "1", "select"), "requests", Change("block size", "16", "select"))],
    "06": [Drive("scheduling", "tokens per step",
                 (Change("batching", "prefill-first", "select"), Change("trace", TRACE["contention"], "select"),
                  Change("batch slots", "16"), Change("tokens per step", "128"), Change("batching", "decode-first", "select"),
                  Change("trace", TRACE["starvation"], "select")),
                 Change("tokens per step", "0"), "tokens per step", Change("tokens per step", "128"))],
    "07": [Drive("incident b", "KV store",
                 (Change("policy", "prefill-first", "select"), Change("policy", "decode-first", "select"),
                  Change("prefix caching", "click", "check"), Change("batch slots", "8")),
                 Change("block size", "7"), "block", Change("block size", "16")),
           Drive("incident c", "KV store",
                 (Change("policy", "chunked", "select"), Change("tokens per step", "64")),
                 Change("batch slots", "0"), "batch slots", Change("batch slots", "8"), nth=1)],
}

MESSAGE = """p => { const m = p.querySelector('.course-msg');
  return m ? {seq: +m.dataset.seq, state: m.dataset.state, kernelMs: +(m.dataset.kernelMs || -1), text: m.innerText,
              error: (p.querySelector('.course-msg .course-error') || {}).innerText || null,
              info: !!p.querySelector('.course-msg .course-info'),
              note: !!p.querySelector('.course-note')} : null; }"""
FIGURES = """p => { const box = p.querySelector('.course-figures');
  const plots = [...box.querySelectorAll('.js-plotly-plot')];
  const paths = [...box.querySelectorAll('svg path')].map(e => e.getAttribute('d') || '').join('|');
  let h = 0; for (let i = 0; i < paths.length; i++) h = (h * 31 + paths.charCodeAt(i)) | 0;
  const titles = [...box.querySelectorAll('.gtitle, .course-table-title')].map(e => e.textContent);
  return {plots: plots.length, drawn: plots.filter(e => e.querySelector('svg.main-svg')).length,
          tables: box.querySelectorAll('.course-table').length, titles,
          greyed: box.classList.contains('course-stale'), busy: box.classList.contains('course-busy'),
          opacity: +getComputedStyle(box).opacity, sig: box.innerText + '#' + paths.length + '#' + h}; }"""
DONE = """([p, n]) => { const m = p.querySelector('.course-msg');
  return m && +m.dataset.seq > n && m.dataset.state !== 'busy'; }"""
FRAMES = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(performance.now() - window.__t0))))"


def control(page, panel, label: str):
    by_label = page.locator(".widget-label, .widget-label-basic", has_text=re.compile(f"^{re.escape(label)}$"))
    return panel.locator(".widget-inline-hbox", has=by_label).first


def apply(page, panel, change: Change) -> None:
    c = control(page, panel, change.label)
    if change.kind == "text":
        box = c.locator("input, textarea").first
        box.fill(str(change.value))
        box.press("Enter")
    elif change.kind == "select":
        c.locator("select").select_option(label=str(change.value))
    elif change.kind == "key":
        handle = c.locator(".noUi-handle").first
        handle.focus()
        for key in (change.value,) if isinstance(change.value, str) else change.value:
            handle.press(key)
    elif change.kind == "check":
        c.locator("input[type=checkbox]").click()
    else:
        raise ValueError(f"kind: {change.kind!r}")


def settle(page) -> None:
    """Let the kernel finish what the last answer started (a figure's view sends its computed defaults
    back, the kernel files them) before the next change, as a learner's next change would find it."""
    page.wait_for_timeout(300)
    page.wait_for_function(KERNEL_IDLE, timeout=RENDER * 1000)


def timed(page, panel, widget: str, step: str, change: Change) -> dict:
    """Make the change and wait for the panel's answer; record the update's time (the page's clock,
    from the change to two frames after the answer) and return the panel's message."""
    before = panel.evaluate(MESSAGE)["seq"]
    settle(page)
    page.evaluate("() => { window.__t0 = performance.now(); }")
    apply(page, panel, change)
    page.wait_for_function(DONE, arg=[panel.element_handle(), before], polling="raf", timeout=RENDER * 1000)
    ms = page.evaluate(FRAMES)
    msg = panel.evaluate(MESSAGE)
    TIMES.setdefault(widget, []).append({"step": f"{step}: {change.label} = {change.value}", "ms": round(ms),
                                         "kernel_ms": msg["kernelMs"]})
    return msg


def wait_figures(page, panel, test: str, what: str) -> dict:
    """The panel's figures once `test` (a JS expression of `f`, FIGURES' answer) holds; bounded."""
    try:
        page.wait_for_function(f"p => {{ const f = ({FIGURES})(p); return {test}; }}", arg=panel.element_handle(),
                               timeout=RENDER * 1000, polling=100)
    except Exception:
        pass  # the assertion below says what was seen
    figs = panel.evaluate(FIGURES)
    assert page.evaluate(f"([p]) => {{ const f = ({FIGURES})(p); return {test}; }}", [panel.element_handle()]), \
        f"{what}: {figs['titles']}, greyed={figs['greyed']}, opacity={figs['opacity']}, {figs['drawn']}/{figs['plots']} drawn"
    return figs


def fresh(page, panel, widget: str, what: str, msg: dict) -> dict:
    """The panel answered a good value: no red line, its numbers shown, figures drawn and not greyed."""
    assert msg["state"] == "ok" and msg["error"] is None, f"{widget}, {what}: {msg['text']}"
    return wait_figures(page, panel, "!f.greyed && !f.busy && f.opacity === 1 && f.plots === f.drawn && "
                                     "f.plots + f.tables > 0", f"{widget}, {what}")


def drive_panel(page, spec: Drive) -> None:
    anchor = page.locator(".widget-label", has_text=re.compile(f"^{re.escape(spec.anchor)}$"))
    panel = page.locator(".jp-OutputArea-output:has(.course-panel)").filter(has=anchor).nth(spec.nth)
    panel.scroll_into_view_if_needed()
    start = panel.evaluate(MESSAGE)
    assert start and start["state"] == "ok", f"{spec.name}: the panel did not draw: {start}"
    if spec.note:
        assert start["note"] == spec.note[0], f"{spec.name}: note shown {start['note']}, expected {spec.note[0]}"
    figs = panel.evaluate(FIGURES)
    for change in spec.good:
        msg = timed(page, panel, spec.name, "good", change)
        old = figs["sig"]
        figs = fresh(page, panel, spec.name, f"{change.label} = {change.value}", msg)
        if figs["sig"] == old:
            figs = wait_figures(page, panel, f"f.sig !== {json.dumps(old)}", f"{spec.name}: the figure did not change")
    good = figs
    if spec.note:
        assert panel.evaluate(MESSAGE)["note"] == spec.note[1], f"{spec.name}: a note that lost its cause is still shown"
    msg = timed(page, panel, spec.name, "bad", spec.bad)
    assert msg["state"] == "error" and msg["error"], f"{spec.name}: no red line for {spec.bad}: {msg['text']}"
    assert spec.names in msg["error"] and "\n" not in msg["error"].strip(), \
        f"{spec.name}: the message does not name {spec.names!r} on one line: {msg['error']!r}"
    assert not msg["info"] and not msg["note"], f"{spec.name}: the old numbers are still shown under a bad value"
    wait_figures(page, panel, "f.plots + f.tables === 0 || (f.greyed && f.opacity < 0.5)",
                 f"{spec.name}: the stale figures are not greyed out under a bad value")
    msg = timed(page, panel, spec.name, "again", spec.again)
    figs = fresh(page, panel, spec.name, f"{spec.again.label} = {spec.again.value} again", msg)
    if spec.same:
        wait_figures(page, panel, f"f.sig === {json.dumps(good['sig'])}", f"{spec.name}: the figure did not come back")
    if spec.title:
        wait_figures(page, panel, f"f.titles.includes({json.dumps(spec.title)})", f"{spec.name}: not titled {spec.title!r}")


def drive_storyteller(page) -> None:
    """Lesson 00's storyteller: a 10-token budget, an empty opening (a red line naming it, the story
    cleared), a new opening (a story again): timed to the first token and to the end."""
    opening = page.locator(".widget-textarea", has=page.locator(".widget-label", has_text=re.compile("^opening$")))
    panel = page.locator(".jp-OutputArea-output", has=opening).first
    panel.scroll_into_view_if_needed()
    handle = control(page, panel, "max tokens").locator(".noUi-handle").first
    handle.focus()
    handle.press("Home")
    for _ in range(9):
        handle.press("ArrowRight")
    story = "p => (p.querySelector('div[style*=Georgia]') || {}).innerText || ''"
    error = "p => (p.querySelector('.course-error') || {}).innerText || ''"
    info = "p => (p.querySelector('.course-info') || {}).innerText || ''"
    assert panel.evaluate(story), "the storyteller shows no story after its cell ran"

    def tell(text: str) -> None:             # a new opening, then Continue, with the page's clock started
        opening.locator("textarea").fill(text)
        settle(page)
        page.evaluate("() => { window.__t0 = performance.now(); }")
        panel.get_by_role("button", name="Continue").click()

    tell("")
    page.wait_for_function(f"p => ({error})(p)", arg=panel.element_handle(), timeout=RENDER * 1000, polling="raf")
    TIMES.setdefault("storyteller", []).append({"step": "bad: opening = ''", "ms": round(page.evaluate(FRAMES)),
                                                "kernel_ms": -1})
    assert "opening" in panel.evaluate(error) and not panel.evaluate(story).strip(), \
        "the storyteller keeps a story under a bad opening"
    tell("Once upon a time, there was a cat named Tom. ")
    page.wait_for_function(f"p => ({story})(p).length > 'Once upon a time, there was a cat named Tom. '.length",
                           arg=panel.element_handle(), timeout=RENDER * 1000, polling="raf")
    first = page.evaluate("() => performance.now() - window.__t0")
    page.wait_for_function(f"p => /tokens in/.test(({info})(p))", arg=panel.element_handle(), timeout=RENDER * 1000,
                           polling="raf")
    TIMES["storyteller"].append({"step": "good: first token of a new opening", "ms": round(first), "kernel_ms": -1})
    TIMES["storyteller (whole story)"] = [{"step": "a story of up to 10 tokens, streamed to its end",
                                           "ms": round(page.evaluate(FRAMES)), "kernel_ms": -1}]
    assert not panel.evaluate(error) and re.search(r"\d+ tokens in", panel.evaluate(info))


def answer_quiz(page, lesson: str) -> str:
    """Answer the lesson's first knowledge check: click a letter, then Check; read the feedback and
    the summary line. Returns the feedback's first line."""
    quiz = page.locator(".jp-OutputArea-output", has=page.get_by_role("button", name="Check")).filter(
        has=page.get_by_role("button", name="A", exact=True)).first
    quiz.scroll_into_view_if_needed()
    rows = quiz.evaluate("""q => [...q.querySelectorAll('.widget-hbox')].filter(r => r.querySelector('button'))
        .map(r => { const b = r.querySelector('button').getBoundingClientRect(), t = r.querySelector('.widget-html')
                    .getBoundingClientRect(); return {button: [b.left, b.right, b.top, b.bottom], text: [t.left, t.right, t.top, t.bottom]}; })""")
    assert len(rows) >= 2, f"lesson {lesson}: the quiz shows {len(rows)} options"
    for a, b in zip(rows, rows[1:]):
        assert a["text"][0] >= a["button"][1] - 1, f"lesson {lesson}: an option's text runs under its letter"
        assert b["button"][2] >= max(a["button"][3], a["text"][3]) - 1, f"lesson {lesson}: an option overlaps the next"
    summary = page.locator(".jp-OutputArea-output", has_text=re.compile(rf"Lesson {lesson}: \d+ of \d+ right")).last
    waiting = lambda: int((re.search(r"(\d+) not answered yet", summary.inner_text()) or [0, 0])[1])  # noqa: E731
    before = waiting()
    quiz.get_by_role("button", name="B", exact=True).click()
    quiz.get_by_role("button", name="Check").click()
    feedback = quiz.locator("text=/^B: (Correct|Not quite): /").first
    feedback.wait_for(timeout=RENDER * 1000)
    text = quiz.inner_text()
    assert "attempt 1 (first try)" in text, f"lesson {lesson}: no attempt line in the feedback"
    page.wait_for_function("([s, n]) => !new RegExp(n + ' not answered yet').test(s.innerText)",
                           arg=[summary.element_handle(), before], timeout=RENDER * 1000)
    assert waiting() == before - 1, f"lesson {lesson}: the summary did not count the answer"
    return feedback.inner_text().split("\n")[0]


def answer_numeric_quiz(page) -> list[str]:
    """Lesson 02's numeric check: a word (a one-line refusal naming the answer), then the right number."""
    quiz = page.locator(".jp-OutputArea-output", has=page.get_by_placeholder("your answer")).filter(
        has_text="bytes of KV cache").first
    quiz.scroll_into_view_if_needed()
    layers, heads, dim = map(int, re.search(r"has (\d+) layers and (\d+) key/value heads of (\d+) dimensions",
                                            quiz.inner_text()).groups())
    said = []
    for answer, expect in (("lots", "answer: must be a number"), (str(2 * layers * heads * dim * 4), "Correct")):
        quiz.get_by_placeholder("your answer").fill(answer)
        quiz.get_by_role("button", name="Check").click()
        quiz.locator(f"text=/{expect}/").first.wait_for(timeout=RENDER * 1000)
        said.append(quiz.locator(f"text=/{expect}/").first.inner_text().split("\n")[0])
    return said


OVERFLOW = """() => {
  const out = [];
  const notebook = document.querySelector('.jp-NotebookPanel-notebook');
  const column = notebook.querySelector('.jp-Cell').getBoundingClientRect();
  for (const area of notebook.querySelectorAll('.jp-OutputArea-output')) {
    const box = area.getBoundingClientRect();
    if (box.width === 0) continue;
    const right = Math.min(box.right, column.right) + 1;
    for (const e of [area, ...area.querySelectorAll('*')]) {
      const r = e.getBoundingClientRect();
      if (r.width > 0 && r.height > 0 && r.right > right) {
        const cls = typeof e.className === 'string' ? e.className : (e.className.baseVal || '');
        out.push(`${e.tagName.toLowerCase()}.${cls.split(' ').slice(-2).join('.')} ends ${Math.round(r.right - right)} px `
                 + `past the column: "${(e.innerText || e.textContent || '').trim().slice(0, 60)}"`);
        break;
      }
    }
  }
  return {column: Math.round(column.width), outputs: Math.round(notebook.querySelector('.jp-OutputArea-output').getBoundingClientRect().width), wide: out};
}"""


def report_times() -> dict[str, str]:
    """Each widget's line (its updates' median and worst), by widget; writes them all to
    test-artifacts/widget-times.json."""
    lines = {}
    for widget, runs in TIMES.items():
        ms = [r["ms"] for r in runs]
        kernel = [r["kernel_ms"] for r in runs if r["kernel_ms"] >= 0]
        worst = max(runs, key=lambda r: r["ms"])
        k = f"; in the kernel median {statistics.median(kernel):.0f} ms" if kernel else ""
        lines[widget] = (f"{widget:<22} {len(ms):>2} updates: median {statistics.median(ms):>5.0f} ms, "
                         f"worst {max(ms):>5} ms ({worst['step']}){k}")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "widget-times.json").write_text(json.dumps(
        {"viewport": VIEWPORT, "load_average": os.getloadavg(), "cpus": os.cpu_count(), "widgets": TIMES}, indent=1))
    return lines


@pytest.mark.slow
@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_runs_and_renders_in_chromium(lab, browser, lesson):
    page = browser.new_page()
    console, watch = [], KernelWatch(page)
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    offsite_before = len(OFFSITE)
    key = lesson.stem[:2]
    try:
        r = run_lesson(page, lab, lesson)
        print(f"{lesson.name}: ran all cells in {r['seconds']:.1f} s; {r['widgetOutputs']} widget outputs, "
              f"{r['drawn']}/{r['plots']} figures drawn")
        ran = not watch.errors and all(re.fullmatch(r"\[\d+\]:", p) for p in r["prompts"])
        if ran:                                      # drive the widgets only where every cell ran
            if key == "00":
                drive_storyteller(page)
            for spec in PANELS.get(key, []):
                drive_panel(page, spec)
            if page.get_by_role("button", name="A", exact=True).count():       # the lesson has knowledge checks
                print(f"{lesson.name}: quiz feedback '{answer_quiz(page, key)[:90]}'")
            if key == "02":
                print(f"{lesson.name}: numeric quiz said {answer_numeric_quiz(page)}")
            page.wait_for_timeout(500)
            fit = page.evaluate(OVERFLOW)
            print(f"{lesson.name}: notebook column {fit['column']} px, outputs {fit['outputs']} px wide")
            names = [s.name for s in PANELS.get(key, [])] + (["storyteller", "storyteller (whole story)"]
                                                              if key == "00" else [])
            for widget, line in report_times().items():
                if widget in names:
                    print(f"{lesson.name}: {line}")
        else:
            fit = {"wide": []}
        for shown in (".course-panel", ".jp-RenderedPlotly, .jupyter-widgets"):   # the panel, as driven
            first = page.locator(shown).first
            if first.count():
                first.scroll_into_view_if_needed()
                break
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
    assert not fit["wide"], f"{lesson.name}: outputs wider than the notebook column: {fit['wide'][:5]}"
    assert not console, f"{lesson.name}: JavaScript console errors: {console[:5]}"
    assert OFFSITE[offsite_before:] == [], f"{lesson.name}: requests left this machine"


@pytest.mark.slow
def test_widget_update_times_are_reported(capsys):
    """Each widget's update times, measured in the page by the lesson tests above (reported, not asserted)."""
    if not TIMES:
        pytest.skip("no lesson ran in this session (select the lessons too)")
    with capsys.disabled():
        print(f"\nwidget update times in Chromium ({os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f}); test-artifacts/widget-times.json has every update")
        for line in report_times().values():
            print("  " + line)
