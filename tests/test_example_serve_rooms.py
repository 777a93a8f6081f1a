"""examples/serve_rooms.py runs as a user would run it, and a restart from its state file continues identically."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
EXAMPLE = str(REPO / "examples" / "serve_rooms.py")


@pytest.fixture(scope="module")
def run_and_world(tmp_path_factory):
    from kuaihl_rec.data.world import generate_world, load_world_config, write_world
    from kuaihl_rec.train.config import train_config
    from kuaihl_rec.train.loop import train

    root = tmp_path_factory.mktemp("serve")
    write_world(generate_world(load_world_config(preset="tiny")), root / "world")
    train(root / "world", root / "run", train_config("tiny", epochs=1, loss="point", model={"overrides": {"use_counters": True}}), progress=False)
    return root / "run", root / "world"


def _example(*args):
    out = subprocess.run([sys.executable, EXAMPLE, *map(str, args)], env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _ticks(stdout):
    return [line for line in stdout.splitlines() if re.match(r"tick \d+:", line)]


@pytest.mark.slow
def test_serve_rooms_straight_and_restarted(run_and_world, tmp_path):
    run, world = run_and_world
    straight = _example("--run", run, "--world", world)
    assert "served" in straight and "0 room(s) still on air" in straight
    assert re.search(r"unknown streamers: [1-9]", straight)
    state = tmp_path / "scorer.pt"
    first = _example("--run", run, "--world", world, "--state", state, "--ticks", 70, "--save-every", 20)
    assert state.exists() and "restored" not in first
    second = _example("--run", run, "--world", world, "--state", state)
    assert "restored" in second and "at tick 70" in second
    assert _ticks(first) + _ticks(second) == _ticks(straight)
    assert len(_ticks(straight)) > 100
