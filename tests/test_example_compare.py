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
    for row in ("content", "deepfm", "trivial (previous segment's label)", "last complete label (known at scoring time)", "ceiling (hidden true rate)"):
        assert row in out.stdout
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())
    models = results["worlds"]["mydata"]["models"]
    assert set(models) == {"content", "deepfm"} and all(-1 <= m["tau"]["mean"] <= 1 for m in models.values())
    assert (tmp_path / "cmp" / "report.md").exists() and (tmp_path / "cmp" / "fig4_room_timeline.png").exists()


@pytest.mark.slow
def test_parallel_jobs_and_shared_rows(tmp_path):
    """``jobs=2`` trains in two worker processes; rows that train the same thing share runs
    (``loss:point+L1+align`` is the content model's own loss); a second call reuses every finished
    run and reproduces the results exactly."""
    from kuaihl_rec.apps.compare import CompareBudget, run_compare
    from kuaihl_rec.data.world import generate_world, load_world_config, write_world

    data = tmp_path / "w"
    write_world(generate_world(load_world_config(preset="tiny")), data)
    budget = CompareBudget(epochs=1, seeds=2, lr_grid=(1e-3,))
    models = ["content", "loss:point+L1+align", "deepfm"]
    run_compare([data], tmp_path / "cmp", models=models, budget=budget, progress=False, jobs=2)
    first = json.loads((tmp_path / "cmp" / "results.json").read_text())["worlds"]["w"]
    assert first["shared_runs"] == {"loss:point+L1+align": "content"}
    assert first["models"]["loss:point+L1+align"] == first["models"]["content"]
    assert sorted(p.name for p in (tmp_path / "cmp" / "w" / "runs").iterdir()) == ["content", "deepfm"]
    assert all(len(first["models"][m]["tau"]["values"]) == 2 for m in models)
    run_compare([data], tmp_path / "cmp", models=models, budget=budget, progress=False, jobs=1)
    again = json.loads((tmp_path / "cmp" / "results.json").read_text())["worlds"]["w"]
    assert again["models"] == first["models"]
    refs = first["references"]
    assert refs["last complete label (known at scoring time)"]["tau"] < refs["trivial (previous segment's label)"]["tau"] < refs["ceiling (hidden true rate)"]["tau"]


def test_margin_over_the_best_id_model_by_hand():
    """The cross-world margin: best ID row by mean, Welch standard error, 2-SE significance."""
    import math

    from kuaihl_rec.apps.compare import _margin_section, margin_over_best_id

    def stat(values):
        import numpy as np

        return {"tau": {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)), "values": list(values)}}

    models = {"dcn_m": stat([0.50, 0.51, 0.52]), "deepfm": stat([0.40, 0.41, 0.42]), "content": stat([0.53, 0.54, 0.55])}
    m = margin_over_best_id(models, "content")
    assert m["baseline"] == "dcn_m" and m["delta"] == pytest.approx(0.03)
    assert m["se"] == pytest.approx(math.sqrt(0.01 ** 2 / 3 + 0.01 ** 2 / 3))
    assert m["significant"] is True  # 0.03 >= 2 * 0.00816
    flat = {"dcn_m": stat([0.50, 0.51, 0.52]), "content": stat([0.505, 0.515, 0.525])}
    assert margin_over_best_id(flat, "content")["significant"] is False
    lines = "\n".join(_margin_section({"worlds": {"a": {"models": models}, "b": {"models": flat}}}))
    assert "| content | +0.0300 ± 0.0082 | +0.0050 ± 0.0082 (n.s.) |" in lines
    assert _margin_section({"worlds": {"a": {"models": models}}}) == []
