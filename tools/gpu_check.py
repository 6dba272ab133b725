"""`make gpu-check`: verify the course on one CUDA GPU in one command (at most about 8 minutes).

    make gpu-check                          # or: python3 tools/gpu_check.py
    make gpu-check GPU_CHECK_ARGS="--logs /some/dir --stages kernel,bench"

Stages, in order (each with its own time limit, all within --budget seconds):

    env      the Jupyter stack the tests and lessons need (nbclient, ipykernel, nbval, plotly,
             ipywidgets, anywidget, pytest-xdist): used as installed when this Python has it;
             otherwise installed from wheelhouse/ (tools/build_wheelhouse.py, carried along)
             into .gpu-env, a venv that sees this Python's own packages (torch, triton, ...)
    kernel   the GPU-specific tests first: the Triton kernel compiled on the GPU against the
             reference, the paged store and engine on CUDA (tests/test_paged_triton.py, ...)
    bench    benchmarks/gpu_decode.py --sweep: the Triton kernel / contiguous SDPA time and its
             share of the copy bandwidth at 32/8 heads, head_dim 128, batch 64, contexts 1k-8k,
             float16/bfloat16/float32 (targets reported, never failing the check)
    lessons  every lesson in notebooks/ under nbval (lax: every cell must run; every checked
             claim must hold: COURSE_STRICT_CLAIMS=1) with COURSE_DEVICE=cuda
    suite    the rest of the pytest suite with COURSE_DEVICE=cuda (on several workers), less the
             classroom-delivery tests that need Chromium or Sphinx (test_browser, test_publish)

Without a CUDA GPU it stops at once with a one-line message. Each stage's full output goes to
--logs (default results/gpu-check/); the summary lines name what failed. Exit status 0 only
when every stage that ran passed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("env", "kernel", "bench", "lessons", "suite")   # the device-independent rest of the suite last
NEEDED = ("nbclient", "nbformat", "ipykernel", "nbval", "plotly", "ipywidgets", "anywidget", "tqdm", "numpy",
          "hypothesis", "safetensors", "transformers", "triton", "pytest")
OPTIONAL = ("xdist",)        # without pytest-xdist the suite and lessons run on one worker
WHEELHOUSE_HAS = {"nbclient", "nbformat", "ipykernel", "nbval", "plotly", "ipywidgets", "anywidget", "tqdm",
                  "numpy", "pytest", "xdist"}
KERNEL_TESTS = ("tests/test_paged_triton.py", "tests/test_paged_attention.py", "tests/test_paged_engine.py",
                "tests/test_attention.py")
NOT_DEVICE_TESTS = ("tests/test_browser.py", "tests/test_publish.py")   # Chromium / Sphinx: classroom delivery
LIMITS = {"env": 120, "kernel": 150, "bench": 150, "lessons": 240, "suite": 300}   # seconds, each at most


def say(msg: str) -> None:
    print(f"gpu-check: {msg}", flush=True)


def cuda_line(python: str) -> tuple[bool, str]:
    """(is a CUDA GPU usable from `python`, one line saying what it is or why not)."""
    code = ("import sys\ntry:\n import torch\nexcept ImportError:\n print('torch is not installed for ' + sys.executable)"
            "; sys.exit(1)\nif not torch.cuda.is_available():\n print(f'no CUDA GPU visible (torch {torch.__version__}, "
            "torch.cuda.is_available() is False)'); sys.exit(1)\n"
            "sys.path.insert(0, '.')\nfrom course_lib.device import banner\n"
            "try:\n import triton; version = triton.__version__\nexcept ImportError:\n version = 'not installed'\n"
            "print(banner(torch.device('cuda')) + f' | triton {version}')")
    proc = subprocess.run([python, "-c", code], cwd=ROOT, capture_output=True, text=True)
    lines = (proc.stdout.strip() or proc.stderr.strip() or "?").splitlines()
    return proc.returncode == 0, lines[-1]


def missing_modules(python: str, env: dict, modules=NEEDED) -> list[str]:
    code = (f"import importlib.util; print(' '.join(m for m in {tuple(modules)!r} "
            f"if importlib.util.find_spec(m) is None))")
    proc = subprocess.run([python, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    return proc.stdout.split() if proc.returncode == 0 else list(modules)


def setup_env(python: str, wheelhouse: Path, env: dict, log) -> tuple[str, dict, str]:
    """The Python (and environment) the other stages use, with the Jupyter stack importable."""
    missing = missing_modules(python, env)
    if not missing:
        return python, env, "everything needed is installed"
    venv_py = ROOT / ".gpu-env" / "bin" / "python"
    if venv_py.exists() and not missing_modules(str(venv_py), env):
        return str(venv_py), env, "using .gpu-env (installed by an earlier run)"
    not_in_wheelhouse = [m for m in missing if m not in WHEELHOUSE_HAS]
    if not_in_wheelhouse:
        raise RuntimeError(f"missing {', '.join(not_in_wheelhouse)}, which wheelhouse/ does not provide")
    reqs = wheelhouse / "requirements.txt"
    if not reqs.exists():
        raise RuntimeError(f"missing {', '.join(missing)} and no {reqs.relative_to(ROOT)}: build it with "
                           f"`python tools/build_wheelhouse.py` where PyPI is reachable, and carry wheelhouse/ along")
    install = ["install", "--no-index", "--find-links", str(wheelhouse), "-r", str(reqs), "--quiet",
               "--disable-pip-version-check"]
    # first choice: a venv that sees this Python's packages (torch, triton stay the machine's own)
    shutil.rmtree(ROOT / ".gpu-env", ignore_errors=True)
    made = subprocess.run([python, "-m", "venv", "--system-site-packages", "--without-pip", str(ROOT / ".gpu-env")],
                          cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if made.returncode == 0:
        # A venv's --system-site-packages means its BASE interpreter's packages: when this Python is
        # itself a venv (or conda), its own site-packages (torch!) must be added by a .pth file.
        ask = "import site, sys; print('\\n'.join(site.getsitepackages() + [site.getusersitepackages()]))"
        theirs = subprocess.run([python, "-c", ask], capture_output=True, text=True).stdout.split("\n")
        ours = subprocess.run([str(venv_py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True).stdout.strip()
        if ours:
            Path(ours).mkdir(parents=True, exist_ok=True)
            (Path(ours) / "gpu_check_parent.pth").write_text(
                "\n".join(p for p in theirs if p.strip() and Path(p).is_dir()) + "\n", encoding="utf-8")
        done = subprocess.run([python, "-m", "pip", "--python", str(venv_py), *install], cwd=ROOT,
                              stdout=log, stderr=subprocess.STDOUT, env=env)
        if done.returncode == 0 and not missing_modules(str(venv_py), env):
            return str(venv_py), env, f"installed {', '.join(missing)} from wheelhouse/ into .gpu-env"
    # second choice: a folder on PYTHONPATH
    target = ROOT / ".gpu-env" / "site"
    shutil.rmtree(ROOT / ".gpu-env", ignore_errors=True)
    done = subprocess.run([python, "-m", "pip", *install, "--target", str(target)], cwd=ROOT,
                          stdout=log, stderr=subprocess.STDOUT, env=env)
    env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH", "")])))
    still = missing_modules(python, env)
    if done.returncode != 0 or still:
        raise RuntimeError(f"could not install {', '.join(still or missing)} from wheelhouse/ (see the env log)")
    return python, env, f"installed {', '.join(missing)} from wheelhouse/ into .gpu-env/site (PYTHONPATH)"


def run_stage(cmd: list[str], env: dict, log_path: Path, limit: float) -> tuple[int | None, str]:
    """Run `cmd` (its output to log_path) for at most `limit` seconds: (exit code or None on timeout, output)."""
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=max(1.0, limit))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    return code, log_path.read_text(encoding="utf-8", errors="replace")


def pytest_summary(output: str) -> str:
    """pytest's last summary line ('3 failed, 120 passed, 4 skipped in 80.1s'), or ''."""
    lines = [ln.strip("= ") for ln in output.splitlines() if re.search(r"\d+ (passed|failed|error)", ln)]
    return lines[-1] if lines else ""


def failures(output: str, n: int = 25) -> list[str]:
    return [ln for ln in output.splitlines() if ln.startswith(("FAILED ", "ERROR "))][:n]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tools/gpu_check.py", description=__doc__.split("\n")[0])
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, from {', '.join(STAGES)}")
    ap.add_argument("--budget", type=float, default=470.0, help="seconds for every stage together (default 470)")
    ap.add_argument("--workers", type=int, default=None, help="pytest-xdist workers (default: CPU cores // 2, <= 8)")
    ap.add_argument("--logs", default=str(ROOT / "results" / "gpu-check"))
    ap.add_argument("--wheelhouse", default=str(ROOT / "wheelhouse"))
    ap.add_argument("--no-gpu-ok", action="store_true", help=argparse.SUPPRESS)   # tests of the env stage only
    args = ap.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        ap.error(f"--stages: must be among {', '.join(STAGES)}; got {', '.join(unknown)}")
    t0 = time.monotonic()
    python = sys.executable
    ok, line = cuda_line(python)
    if not ok and not args.no_gpu_ok:
        say(f"{line}: run it on a machine with an NVIDIA GPU (nothing was checked)")
        return 2
    say(line)
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, COURSE_DEVICE="cuda", COURSE_STRICT_CLAIMS="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"),
               PYTHONDONTWRITEBYTECODE="1",     # course_lib importable from every kernel, not installed there:
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])))
    if args.no_gpu_ok:
        env.pop("COURSE_DEVICE")
    workers = args.workers or max(1, min(8, (os.cpu_count() or 2) // 2))
    results: dict[str, str] = {}
    remaining = lambda: args.budget - (time.monotonic() - t0)   # noqa: E731

    if "env" in stages or any(s in stages for s in ("kernel", "suite", "lessons")):
        start = time.monotonic()
        try:
            with open(logs / "env.log", "w", encoding="utf-8") as log:
                python, env, how = setup_env(python, Path(args.wheelhouse), env, log)
        except RuntimeError as exc:
            say(f"env: FAILED ({exc}; {time.monotonic() - start:.0f} s)")
            return 1
        say(f"env: {how} ({time.monotonic() - start:.0f} s)")
    xdist = not missing_modules(python, env, OPTIONAL)
    if not xdist:
        say("pytest-xdist is not installed: the suite and the lessons run on one worker (slower)")
    parallel = ["-n", str(workers), "--dist", "loadfile"] if xdist and workers > 1 else []
    pytest = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    commands = {
        "kernel": pytest + list(KERNEL_TESTS),
        "bench": [python, "-m", "benchmarks.gpu_decode", "--sweep", "--json", str(logs / "gpu_decode.json")],
        "suite": pytest + parallel + ["tests", *[f"--ignore={t}" for t in KERNEL_TESTS + NOT_DEVICE_TESTS]],
        "lessons": pytest + parallel + ["--nbval-lax", "--nbval-current-env", "notebooks"],
    }
    failed = []
    for stage in (s for s in STAGES[1:] if s in stages):
        limit = min(LIMITS[stage], remaining())
        if limit < 20:
            say(f"{stage}: SKIPPED (the {args.budget:.0f} s budget is spent)")
            failed.append(stage)
            continue
        start = time.monotonic()
        code, output = run_stage(commands[stage], env, logs / f"{stage}.log", limit)
        took = time.monotonic() - start
        status = "passed" if code == 0 else ("TIMED OUT" if code is None else f"FAILED (exit {code})")
        summary = pytest_summary(output) if stage != "bench" else ""
        say(f"{stage}: {status} in {took:.0f} s" + (f" ({summary})" if summary else "")
            + f"; log {logs / (stage + '.log')}")
        if stage == "bench":
            for ln in output.splitlines()[1:]:
                print("    " + ln)
        for ln in failures(output):
            print("    " + ln)
        if code != 0:
            failed.append(stage)
            if stage != "bench" and not failures(output):
                for ln in output.strip().splitlines()[-15:]:
                    print("    " + ln)
        results[stage] = status
    total = time.monotonic() - t0
    say(("all stages passed" if not failed else f"failed: {', '.join(failed)}") + f" ({total:.0f} s in all)")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
