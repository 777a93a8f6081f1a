"""`kuaihl demo` end to end on the tiny world (the README's first command runs it on the default)."""

import json

import pytest


def test_quick_demo_writes_a_report(tmp_path):
    from kuaihl_rec.apps.demo import run_demo

    report = run_demo(tmp_path, preset="tiny", progress=False, quick=True)
    text = report.read_text()
    assert "synthetic data" in text and "OK: the table satisfies the segment-data contract" in text
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    assert summary["windows"]["test"]["n_scored_targets"] > 0
    assert (tmp_path / "world" / "figures" / "room_timeline.png").exists()


@pytest.mark.slow
def test_full_demo_chain_on_the_tiny_world(tmp_path):
    from kuaihl_rec.apps.demo import DEMO_MODELS, run_demo

    report = run_demo(tmp_path, preset="tiny", progress=False, n_users=5_000)
    text = report.read_text()
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    assert set(summary["compare"]) == set(DEMO_MODELS)
    assert "ceiling (hidden true rate)" in summary["references"]
    assert (tmp_path / "ab" / "ab.json").exists() and (tmp_path / "compare" / "results.json").exists()
    assert "Offline A/B" in text and "Content models vs ID baseline" in text
