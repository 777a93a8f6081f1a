"""bench/gpu_check.sh dry-runs its whole code path on the CPU (the GPU figures themselves need a
CUDA machine; README says whether they were measured)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # subprocesses that import torch


def test_gpu_check_dry_run_on_cpu_prints_every_figure():
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), "--device", "cpu", "--steps", "1", "--warmup", "0",
         "--batch", "4", "--rooms", "20", "--peak-tflops", "1"],
        env=env, capture_output=True, text=True, timeout=400, cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert re.search(r"features 3 x 512 visual \+ 768 text", out)
    assert re.search(r"data path: [\d,]+ windows/s built on the host", out)
    assert re.search(r"train: paper preset \(20\.\d M parameters.*[\d.]+ samples/s", out)
    flops = float(re.search(r"model FLOPs per step \(forward \+ backward\): ([\d.]+) GFLOP", out).group(1))
    assert flops > 1.0  # a 20M-parameter model on 4 windows of 20 segments
    assert re.search(r"MFU [\d.]+ % of 1 TFLOP/s", out) and "peak memory:" in out


def test_gpu_check_refuses_without_cuda_and_points_to_the_dry_run():
    if subprocess.run([sys.executable, "-c", "import torch,sys; sys.exit(torch.cuda.is_available())"]).returncode:
        pytest.skip("a CUDA device is present")
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh")], env=env, capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 2 and "--device cpu --steps 3" in done.stderr
