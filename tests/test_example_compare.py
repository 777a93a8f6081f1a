"""examples/compare_id_baselines.py on a tiny world: a user's view of `kuaihl compare`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_compare_example_on_a_tiny_world(tmp_path):
    from kuaihl_rec.data.world import generate_world, load_world_config, write_world

    data = tmp_path / "mydata"
    write_world(generate_world(load_world_config(preset="tiny")), data)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "examples" / "compare_id_baselines.py"), "--data", str(data), "--out", str(tmp_path / "cmp"),
           "--models", "content,deepfm", "--epochs", "1"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    for row in ("content", "deepfm", "trivial (previous segment's label)", "ceiling (hidden true rate)"):
        assert row in out.stdout
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())
    models = results["worlds"]["mydata"]["models"]
    assert set(models) == {"content", "deepfm"} and all(-1 <= m["tau"]["mean"] <= 1 for m in models.values())
    assert (tmp_path / "cmp" / "report.md").exists() and (tmp_path / "cmp" / "fig4_room_timeline.png").exists()
