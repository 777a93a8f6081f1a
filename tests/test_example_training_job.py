"""examples/torchrec_training_job.py runs as a user would run it: alone and on 2 torchrun ranks."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
EXAMPLE = str(REPO / "examples" / "torchrec_training_job.py")


def _losses(stdout: str):
    return [float(x) for x in re.findall(r"loss ([0-9.]+)", stdout)]


def test_example_single_process():
    out = subprocess.run([sys.executable, EXAMPLE, "--steps", "6"], env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "table_wise table on 1 rank(s)" in out.stdout
    assert len(_losses(out.stdout)) == 2


@pytest.mark.slow
def test_example_two_ranks_row_wise():
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", EXAMPLE, "--steps", "6"]
    out = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "row_wise table on 2 rank(s)" in out.stdout
