"""``kuaihl phd``: usage errors (fast, in process) and the whole command on the tiny world (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kuaihl_rec.apps.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--models", "pr_net,bogus"], r"--models: unknown row\(s\) \['bogus'\]"),
    (["--set", "no_such_knob=1"], "unknown PHD world knob"),
    (["--set", "interests_per_user=99"], "interests_per_user must be in"),
    (["--preset", "huge"], "unknown PHD world preset"),
    (["--set", "preference_signal=0"], "builds the twin itself"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, capsys, argv, message):
    status = main(["phd", "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("kuaihl phd: ")
    assert __import__("re").search(message, err[0]), err[0]
    assert not (tmp_path / "out").exists()


def test_an_used_report_directory_is_refused(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.json").write_text("{}")
    assert main(["phd", "--out", str(tmp_path / "out")]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.slow
def test_the_command_writes_both_worlds_with_every_row(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "phd"
    proc = subprocess.run([sys.executable, "-m", "kuaihl_rec.apps.cli", "phd", "--out", str(out), "--preset", "tiny",
                           "--seeds", "2", "--epochs", "1", "-q"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["synthetic"] is True and set(results["summary"]) == {"personalised", "twin"}
    for world in ("personalised", "twin"):
        rows = results["summary"][world]
        assert "pr_net_meanU+G" in rows and "random" in rows and "position_prior" in rows
        assert all(r["map"]["n"] == 2 for r in rows.values())
        # the references score exactly the same items in both worlds' runs: one AP per test user
        assert all(run["n_users"] == 12 for run in results["runs"][world]["random"])
    report = (out / "report.md").read_text()
    assert "synthetic" in report and "21.89" in report and "18.66" in report and "Video2GIF 14.75" in report
    assert (out / "worlds" / "twin_seed1" / "truth" / "shots.parquet").is_file()


def test_a_preset_without_preference_signal_is_refused(tmp_path, capsys):
    """``--preset generic`` is the preference_signal 0 twin: refused like ``--set preference_signal=0``."""
    status = main(["phd", "--out", str(tmp_path / "out"), "--preset", "generic"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "preference_signal is 0" in err[0], err
    assert not (tmp_path / "out").exists()


def test_results_keep_each_seeds_world(tmp_path, monkeypatch):
    """results.json's worlds hold one entry per seed (not only the last seed's)."""
    from kuaihl_rec.apps import phd_command

    def fake_row(name, data, train, test, seed, epochs):
        return {"map": 1.0 + seed, "hit1": 0.0, "n_users": len(test), "train_loss": [], "seconds": 0.0}

    monkeypatch.setattr(phd_command, "_run_row", fake_row)
    out = tmp_path / "out"
    assert main(["phd", "--out", str(out), "--preset", "tiny", "--seeds", "2", "--models", "random", "-q"]) == 0
    worlds = json.loads((out / "results.json").read_text())["worlds"]
    for world in ("personalised", "twin"):
        assert set(worlds[world]["seeds"]) == {"0", "1"}
        assert [worlds[world]["seeds"][s]["config"]["seed"] for s in ("0", "1")] == [0, 1]
    assert worlds["twin"]["seeds"]["1"]["config"]["preference_signal"] == 0.0
    assert "preference_signal = 0.0" in (out / "report.md").read_text()
