"""examples/offline_ab.py end to end on a tiny written world, and run_ab's outputs (ab.json, report.md, figures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kuaihl_rec.data.io import segment_files
from kuaihl_rec.data.world import generate_world, load_world_config, write_world

ROOT = Path(__file__).resolve().parent.parent
WORLD_KW = dict(n_streamers=60, n_rooms=240, segments_per_room=80, n_days=1, test_fraction=0.5, visual_dim=8, text_dim=8)


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ab") / "world"
    write_world(generate_world(load_world_config("tiny", **WORLD_KW)), out, figure=False)
    return out


def test_example_runs_and_prints_lifts(world_dir, tmp_path):
    out = tmp_path / "ab_example"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "offline_ab.py"), "--world", str(world_dir), "--out", str(out), "--users", "8000", "--quiet"],
        capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert "randomised design" in text and "paired design" in text
    assert "treatment ctr" in " ".join(text.split())
    assert f"ab.json: {out / 'ab.json'}" in text
    result = json.loads((out / "ab.json").read_text())
    for arm in ("control", "treatment", "aa", "placebo", "oracle"):
        assert arm in result["randomised"]["arms"] and arm in result["paired"]["arms"]
    m = result["randomised"]["arms"]["treatment"]["metrics"]
    for metric in ("ctr", "long_view_rate", "play_duration_per_user", "clicks_per_user", "impressions_per_user",
                   "sessions_per_user", "short_views_per_user"):
        lf = m[metric]
        assert {"control", "treatment", "lift", "ci", "p_value", "p_holm", "bootstrap", "cuped"} <= set(lf)
        assert lf["ci"][0] <= lf["lift"] <= lf["ci"][1]
    assert result["randomised"]["srm"]["p_value"] > 1e-3
    assert result["terms"]["content"]["calibration"]["kind"] == "platt"
    miss = result["terms"]["content"]["missing"]  # segment 0 has no past: the team's table has no score for it
    assert miss["n_first_segment"] == miss["n_prior"] == result["world"]["feed"]["rooms"]
    assert miss["n_rows"] == result["world"]["feed"]["segments"]
    assert len(result["sweep"]["points"]) == 5 and result["sweep"]["existing_points"] and result["sweep"]["oracle_points"]
    assert result["randomised"]["daily"]["treatment"]["ctr"]
    report = (out / "report.md").read_text()
    assert "synthetic world" in report and "Weight sweep" in report
    for fig in ("lifts", "daily", "sweep", "positions"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000
        assert f"figures/{fig}.png" in report


def test_run_ab_default_config_and_yaml(world_dir, tmp_path):
    from ranking.experiment import run_ab

    # no content term: control (built-in room counters) and the A/A arm only, no sweep
    res = run_ab(world_dir, tmp_path / "plain", None, n_users=3000, days="auto", seed=1, progress=False, figures=False)
    assert set(res["randomised"]["arms"]) == {"control", "aa"}
    assert "sweep" not in res
    assert res["terms"]["ctr"]["source"] == "observable cum_ctr"
    assert res["terms"]["ctr"]["missing"]["n_first_segment"] == res["world"]["feed"]["rooms"]
    # a YAML config with a product formula and a planted arm
    cfg = tmp_path / "arms.yaml"
    cfg.write_text(
        "terms:\n  ctr: prev_ctr\n  lvtr: {source: prev_lvtr, calibrate: isotonic}\n"
        "arms:\n  control: {ctr: 1.0, lvtr: 1.0}\n"
        "  product: {product: {ctr: [0.0, 1.0], lvtr: [0.05, 2.0]}}\n"
        "  boosted: {ctr: 1.0, lvtr: 1.0, planted: {play_multiplier: 1.2}}\n"
        "sanity: {aa: false}\nn_boot: 50\n"
    )
    res = run_ab(world_dir, tmp_path / "yaml", cfg, n_users=3000, days=None, seed=2, progress=False)
    assert set(res["randomised"]["arms"]) == {"control", "product", "boosted"}
    assert res["arms"]["product"]["formula"].startswith("(ctr+0)^1")
    assert res["terms"]["lvtr"]["calibration"]["kind"] == "isotonic"
    assert res["paired"]["arms"]["boosted"]["metrics"]["play_duration_per_user"]["lift"] == pytest.approx(0.2, rel=1e-6)
    assert (tmp_path / "yaml" / "report.md").exists()
    with pytest.raises(ValueError, match="unknown key"):
        run_ab(world_dir, tmp_path / "bad", {"armz": {}}, n_users=100, progress=False)


def test_run_directory_terms_are_scored_by_the_callers_function(world_dir, tmp_path):
    """ranking never imports the trainer: a run directory is scored by the ``score_run`` the caller passes."""
    from ranking.experiment import run_ab

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"")  # its presence marks a finished run; the stand-in scorer never reads it
    arms = {"terms": {"content": {"source": str(run), "calibrate": "auto"}},
            "sanity": {"placebo": False, "oracle": False}}
    quick = dict(n_users=2000, progress=False, figures=False, sweep=False, paired=False)
    with pytest.raises(ValueError, match=r"term 'content' is the run directory .* needs a scoring function") as err:
        run_ab(world_dir, tmp_path / "no_scorer", arms, **quick)
    assert "score_run=" in str(err.value) and "\n" not in str(err.value)
    calls = []

    def score_run(run_dir, data_dir, split, predictions_out):
        """A stand-in for kuaihl eval --predictions: the LVTR of segment u - 1 as the score of target u."""
        calls.append((Path(run_dir), Path(data_dir), split))
        cols = ["live_id", "segment", "split", "lvtr"]
        table = pa.concat_tables([pq.read_table(f, columns=cols) for f in segment_files(data_dir)]).to_pandas()
        rows = table[table["split"] == split].sort_values(["live_id", "segment"])
        score = rows.groupby("live_id")["lvtr"].shift(1)
        ok = score.notna()
        pq.write_table(pa.table({"live_id": rows["live_id"][ok].to_numpy(), "segment": rows["segment"][ok].to_numpy(),
                                 "label": rows["lvtr"][ok].to_numpy(), "score": score[ok].to_numpy()}), predictions_out)

    res = run_ab(world_dir, tmp_path / "scored", arms, score_run=score_run, **quick)
    assert calls == [(run, world_dir, "test"), (run, world_dir, "val")]
    assert res["terms"]["content"]["source"] == f"run {run}"
    assert res["terms"]["content"]["calibration"]["kind"] == "platt"
    assert (tmp_path / "scored" / "scores" / "content_test.parquet").exists()
    # predictions already in OUT/scores are reused: no scoring function needed, the same numbers
    again = run_ab(world_dir, tmp_path / "scored", arms, **quick)
    assert len(calls) == 2
    assert again["randomised"]["arms"]["treatment"]["metrics"] == res["randomised"]["arms"]["treatment"]["metrics"]
