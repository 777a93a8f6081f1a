"""The comparison report's Figure 5 view (loss terms during training; kuaihl_rec/apps/compare_figures.py)."""

from __future__ import annotations

import json

import numpy as np

from kuaihl_rec.apps.compare_figures import _loss_terms, _moving_average, figure5


def test_trailing_mean_by_brute_force():
    x = np.random.default_rng(0).normal(size=37)
    for k in (1, 4, 25, 50):
        ref = np.array([x[max(0, t - k + 1): t + 1].mean() for t in range(len(x))])
        assert np.allclose(_moving_average(x, k), ref)


def _run(path, pair_scale):
    path.mkdir(parents=True)
    lines = [json.dumps({"step": s, "epoch": 0, "loss": 1.0, "point": 0.7 - s / 1e3, "pair": pair_scale / s})
             for s in range(1, 41)]
    (path / "steps.jsonl").write_text("\n".join(lines + ["{\"step\": 41, \"epoch\": 0, \"val_tau\": 0.3}"]) + "\n")
    return str(path)


def test_figure5_reads_each_rows_seed0_log_and_needs_two_rows(tmp_path):
    runs = {"loss:point+L0": [_run(tmp_path / "a", 1.0)], "loss:point+L1@sum": [_run(tmp_path / "b", 90.0)]}
    step, point, pair = _loss_terms(tmp_path / "b")
    assert len(step) == 40 and point[0] == 0.7 - 1e-3 and pair[-1] == 90.0 / 40  # the val line is skipped
    assert figure5({"runs": runs}, tmp_path / "f.png") and (tmp_path / "f.png").stat().st_size > 1000
    one = {"runs": {"loss:point+L0": runs["loss:point+L0"], "content": ["/nowhere"]}}
    assert not figure5(one, tmp_path / "g.png") and not (tmp_path / "g.png").exists()
