"""The GPU path, checked without a GPU: `make gpu-check` refuses cleanly, the wheelhouse it installs
from is built from the course's pins (never torch), the banner names a GPU, and the size profile
keeps the CPU sizes the lessons are written with."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from course_lib import device as D

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import build_wheelhouse  # noqa: E402
import gpu_check  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: make gpu-check would really run")
def test_gpu_check_without_a_gpu_says_so_in_one_line():
    proc = subprocess.run([sys.executable, "tools/gpu_check.py"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: ") and "GPU" in lines[0], proc.stdout
    assert not proc.stderr.strip()


def test_wheelhouse_is_the_course_pins_and_never_torch(capsys):
    assert build_wheelhouse.main(["--dry-run"]) == 0
    cmd = capsys.readouterr().out
    pins = build_wheelhouse.course_pins()
    for name in build_wheelhouse.PINNED:
        assert pins[name] in cmd
    assert "--only-binary=:all:" in cmd and "--python-version 3.12" in cmd and "manylinux" in cmd
    assert not any(word.split("==")[0] in ("torch", "triton") for word in cmd.split())
    assert set(gpu_check.WHEELHOUSE_HAS) >= {m for m in gpu_check.NEEDED
                                             if m not in ("hypothesis", "safetensors", "transformers", "triton")}


def test_gpu_check_reads_pytest_summaries():
    out = "....\nFAILED tests/test_a.py::test_x - assert 0\n==== 1 failed, 40 passed, 2 skipped in 12.3s ====\n"
    assert gpu_check.pytest_summary(out) == "1 failed, 40 passed, 2 skipped in 12.3s"
    assert gpu_check.failures(out) == ["FAILED tests/test_a.py::test_x - assert 0"]


def test_the_banner_names_the_gpu(monkeypatch):
    props = SimpleNamespace(name="NVIDIA H200", total_memory=141 * 2**30, major=9, minor=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    assert D.device_name(torch.device("cuda")) == "NVIDIA H200 (141 GiB, compute capability 9.0)"
    assert D.device_name(torch.device("cpu")).startswith("CPU (")          # the CPU banner is unchanged


def test_the_size_profile_follows_the_device(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    cpu = D.profile("cpu")
    assert cpu is D.CPU_PROFILE and cpu.name == "cpu"
    # the CPU sizes are the lessons' own numbers (01, 03, 04, 05, 06)
    assert (cpu.padding_sequences, cpu.bucketing_sequences, cpu.bucketing_batch) == (32, 64, 8)
    assert (cpu.batching_requests, cpu.stream_requests) == (24, 20)
    assert (cpu.decode_batch, cpu.decode_context, cpu.decode_heads, cpu.timing_repeat) == (32, 1024, (4, 2, 32), 15)
    assert (cpu.prefix_requests, cpu.eviction_requests, cpu.documents) == (12, 60, (16, 4))
    gpu = D.GPU_PROFILE
    assert all(getattr(gpu, f) >= getattr(cpu, f) for f in ("padding_sequences", "batching_requests",
                                                             "decode_batch", "decode_context", "prefix_requests"))
    monkeypatch.setenv("COURSE_PROFILE", "gpu")
    assert D.profile("cpu") is gpu
    monkeypatch.setenv("COURSE_PROFILE", "huge")
    with pytest.raises(ValueError, match="COURSE_PROFILE: must be one of cpu, gpu"):
        D.profile()
