"""`make lab` really serves the course: start it, ask the server's API, stop it."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "jupyter").exists(),
                    reason="make lab needs .venv: run through `make test`, which creates it")
def test_make_lab_serves_the_course():
    port, token = free_port(), "course-test-token"
    args = f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token={token} --ServerApp.port_retries=0"
    proc = subprocess.Popen(["make", "--no-print-directory", "lab", f"LAB_ARGS={args}"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, status, contents = time.time() + 120, None, None
        while time.time() < deadline and status is None:
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2) as r:
                    status = json.load(r)
            except OSError:
                time.sleep(1)
        assert status is not None, "JupyterLab did not answer within 120 s"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents/notebooks?token={token}", timeout=10) as r:
            contents = json.load(r)
        names = {c["name"] for c in contents["content"]}
        assert "00_welcome.ipynb" in names and "01_padding.ipynb" in names
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/kernelspecs?token={token}", timeout=10) as r:
            specs = json.load(r)
        assert "llm-serving-course" in specs["kernelspecs"]
        # the landing page opens the welcome notebook
        opener = urllib.request.build_opener(NoRedirect)
        try:
            opener.open(f"http://127.0.0.1:{port}/?token={token}", timeout=10)
            location = ""
        except urllib.error.HTTPError as e:
            location = e.headers.get("Location", "")
        assert location.endswith("/lab/tree/notebooks/00_welcome.ipynb") or "/lab/tree/notebooks/00_welcome.ipynb?" in location
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
