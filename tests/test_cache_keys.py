"""Nothing lost, nothing silently wrong: cached run scores are keyed by the run, pair keys never collide,
and evaluating on streamers the run never saw is warned about."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from kuaihl_rec.data.io import segment_files
from kuaihl_rec.data.windows import IdVocab
from kuaihl_rec.data.world import generate_world, load_world_config, write_world
from kuaihl_rec.train.config import train_config
from kuaihl_rec.train.evaluate import evaluate_run, lagged_label_scores, pair_positions, unknown_streamer_share
from kuaihl_rec.train.loop import train
from ranking.experiment import run_ab
from ranking.score_cache import cache_key, key_path, read_key
from ranking.score_source import PairIndex, ScoreContext
from ranking.scores import RunDirScores, ScoreTable

BIG = 2**62
FAR = 2**58  # live_id * 2^20 (or * 10^6) wraps around int64 for ids this far apart: the old keys collided
TOP = np.iinfo(np.int64).max


# ------------------------------------------------------------------------------------------------
# Pair keys
# ------------------------------------------------------------------------------------------------


def _dict_lookup(live, seg, value, want_live, want_seg):
    """The reference: a Python dict keyed by (live_id, segment) tuples, first row wins."""
    table = {}
    for key, v in zip(zip(live.tolist(), seg.tolist()), value.tolist()):
        table.setdefault(key, v)
    return np.array([table.get(k, np.nan) for k in zip(want_live.tolist(), want_seg.tolist())], dtype=np.float64)


def test_score_table_keeps_rooms_2_58_apart_and_ids_near_int64_max_apart():
    live = np.array([BIG, BIG + FAR, 7, 7 + FAR, TOP, TOP - 1, -TOP - 1], dtype=np.int64)
    seg = np.array([1, 1, 2, 2, 3, 3, 1], dtype=np.int64)
    score = np.arange(len(live), dtype=np.float64) / 10
    table = ScoreTable({"live_id": live, "segment": seg, "score": score})  # no "pairs are not unique" error
    assert table.lookup(live, seg).tolist() == score.tolist()
    want_live = np.array([BIG + 2 * FAR, TOP, TOP, 7 + FAR, -TOP - 1], dtype=np.int64)
    want_seg = np.array([1, 4, 3, 1, 1], dtype=np.int64)
    got = table.lookup(want_live, want_seg)
    np.testing.assert_array_equal(got, _dict_lookup(live, seg, score, want_live, want_seg))
    with pytest.raises(ValueError, match="not unique"):
        ScoreTable({"live_id": [TOP, TOP], "segment": [2, 2], "score": [0.1, 0.2]})


def test_pair_lookups_match_a_dict_on_normal_ids():
    rng = np.random.default_rng(0)
    live = rng.integers(1_000_000, 1_000_400, 5000)
    seg = rng.integers(0, 300, 5000)
    value = rng.random(5000)
    want_live, want_seg = rng.integers(999_990, 1_000_410, 3000), rng.integers(-2, 305, 3000)
    expected = _dict_lookup(live, seg, value, want_live, want_seg)
    rows = PairIndex(live, seg).positions(want_live, want_seg)
    np.testing.assert_array_equal(np.where(rows >= 0, value[rows], np.nan), expected)
    rows = pair_positions(live, seg, want_live, want_seg)
    np.testing.assert_array_equal(np.where(rows >= 0, value[rows], np.nan), expected)
    assert (PairIndex([], []).positions([1], [1]) == -1).all() and (pair_positions([], [], [1], [1]) == -1).all()


def _old_lagged_label_scores(live_id, segment, label, target_live, target_segment, lag):
    """lagged_label_scores as it was (live_id * 1_000_000 + segment keys): the reference on normal ids."""
    key = live_id.astype(np.int64) * 1_000_000 + segment.astype(np.int64)
    order = np.argsort(key, kind="stable")
    want = target_live.astype(np.int64) * 1_000_000 + target_segment.astype(np.int64) - lag
    pos = np.clip(np.searchsorted(key, want, sorter=order), 0, len(key) - 1)
    found = key[order[pos]] == want
    scores = np.where(found, label[order[pos]], np.nan).astype(np.float64)
    if not found.all():
        scores[~found] = float(np.nanmean(scores)) if found.any() else 0.5
    return scores


def _rooms(first_ids, n_segments=6):
    live = np.repeat(np.asarray(first_ids, dtype=np.int64), n_segments)
    seg = np.tile(np.arange(n_segments, dtype=np.int64), len(first_ids))
    return live, seg


def test_lagged_label_scores_are_unchanged_on_normal_ids():
    live, seg = _rooms(1_000_000 + np.arange(30))
    label = np.random.default_rng(1).random(len(live))
    shuffled = np.random.default_rng(2).permutation(len(live))
    for lag in (1, 3):
        new = lagged_label_scores(live[shuffled], seg[shuffled], label[shuffled], live, seg, lag)
        old = _old_lagged_label_scores(live[shuffled], seg[shuffled], label[shuffled], live, seg, lag)
        np.testing.assert_array_equal(new, old)


@pytest.mark.parametrize("ids", [[BIG, BIG + FAR, BIG + 2 * FAR], [TOP - 2, TOP - 1, TOP], [-TOP - 1, 0, TOP]])
def test_lagged_label_scores_never_mix_rooms_with_huge_or_far_apart_ids(ids):
    live, seg = _rooms(ids)
    label = np.arange(len(live), dtype=np.float64)  # every segment its own label: a mixed-up room shows
    got = lagged_label_scores(live, seg, label, live, seg, 1)
    has_prev = seg >= 1
    np.testing.assert_array_equal(got[has_prev], label[np.flatnonzero(has_prev) - 1])
    assert np.allclose(got[~has_prev], np.mean(label[np.flatnonzero(has_prev) - 1]))


# ------------------------------------------------------------------------------------------------
# Run-directory score caches
# ------------------------------------------------------------------------------------------------


def _fake_run(path: Path, offset: float) -> Path:
    """A stand-in for a finished `kuaihl train` run: its config says which scores it gives."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"offset": offset}))
    (path / "model.pt").write_bytes(f"weights {offset}".encode())
    return path


class FakeScorer:
    """A score_run that writes ``config.json``'s offset + segment / 100 as every target's score."""

    def __init__(self) -> None:
        self.calls = []

    def __call__(self, run_dir, world_dir, split, predictions_out):
        self.calls.append((Path(run_dir).name, split))
        offset = json.loads((Path(run_dir) / "config.json").read_text())["offset"]
        seg = np.arange(1, 5, dtype=np.int64)
        pq.write_table(pa.table({"live_id": np.full(4, 1_000_000, np.int64), "segment": seg,
                                 "label": np.full(4, 0.5), "score": offset + seg / 100}), predictions_out)


def _ctx(world: Path, out: Path, scorer=None) -> ScoreContext:
    return ScoreContext(live_id=np.full(3, 1_000_000, np.int64), segment=np.array([1, 2, 3]), world_dir=world,
                        cache_dir=out / "scores", score_run=scorer)


@pytest.fixture
def world(tmp_path):
    world = tmp_path / "world"
    world.mkdir()
    (world / "dataset.json").write_text("{}")
    return world


def test_two_runs_under_one_term_name_in_one_out_get_their_own_scores(world, tmp_path):
    out, scorer = tmp_path / "OUT", FakeScorer()
    run_a, run_b = _fake_run(tmp_path / "a", 1.0), _fake_run(tmp_path / "b", 2.0)
    assert RunDirScores(run_a, name="content").values(_ctx(world, out, scorer)).tolist() == [1.01, 1.02, 1.03]
    cached = out / "scores" / "content_test.parquet"
    assert read_key(cached) == cache_key(run_a, world, "test")["key"]
    assert json.loads(key_path(cached).read_text())["run"]["model"]["sha256"]
    assert RunDirScores(run_b, name="content").values(_ctx(world, out, scorer)).tolist() == [2.01, 2.02, 2.03]
    assert scorer.calls == [("a", "test"), ("b", "test")]
    # the same run again: reused, even without a scoring function
    assert RunDirScores(run_b, name="content").values(_ctx(world, out)).tolist() == [2.01, 2.02, 2.03]
    assert len(scorer.calls) == 2
    # a cache of another run and nothing to score with: an error, never the wrong scores
    with pytest.raises(ValueError, match="scored from another run"):
        RunDirScores(run_a, name="content").values(_ctx(world, out))


def test_a_retrained_model_another_world_or_split_is_scored_again(world, tmp_path):
    out, scorer = tmp_path / "OUT", FakeScorer()
    run = _fake_run(tmp_path / "a", 1.0)
    source = RunDirScores(run, name="content")
    source.values(_ctx(world, out, scorer))
    source.calibration_pairs(_ctx(world, out, scorer))  # the calibration split has its own file and key
    assert scorer.calls == [("a", "test"), ("a", "val")]
    source.values(_ctx(world, out, scorer))
    assert len(scorer.calls) == 2  # remembered
    (run / "config.json").write_text(json.dumps({"offset": 5.0}))  # retrained: another config and model
    (run / "model.pt").write_bytes(b"new weights")
    assert source.values(_ctx(world, out, scorer)).tolist() == [5.01, 5.02, 5.03]
    other = tmp_path / "world2"
    other.mkdir()
    RunDirScores(run, name="content").values(_ctx(other, out, scorer))
    assert scorer.calls[2:] == [("a", "test"), ("a", "test")]


def test_a_cache_without_a_key_is_rescored_or_used_with_a_warning(world, tmp_path, caplog):
    out, scorer = tmp_path / "OUT", FakeScorer()
    run = _fake_run(tmp_path / "a", 1.0)
    RunDirScores(run, name="content").values(_ctx(world, out, scorer))
    cached = out / "scores" / "content_test.parquet"
    key_path(cached).unlink()  # as an older version left it
    with caplog.at_level(logging.WARNING, logger="ranking.scores"):
        assert RunDirScores(run, name="content").values(_ctx(world, out)).tolist() == [1.01, 1.02, 1.03]
    assert "has no key file" in caplog.text
    RunDirScores(run, name="content").values(_ctx(world, out, scorer))
    assert len(scorer.calls) == 2 and read_key(cached) == cache_key(run, world, "test")["key"]


@pytest.fixture(scope="module")
def ab_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("ab") / "world"
    kw = dict(n_streamers=30, n_rooms=120, segments_per_room=60, n_days=1, test_fraction=0.5, visual_dim=8, text_dim=8)
    write_world(generate_world(load_world_config("tiny", **kw)), out, figure=False)
    return out


def _lvtr_scorer(run_dir, data_dir, split, predictions_out):
    """kuaihl eval's stand-in: the LVTR of segment u - 1 times config.json's sign as the score of u."""
    sign = json.loads((Path(run_dir) / "config.json").read_text())["offset"]
    cols = ["live_id", "segment", "split", "lvtr"]
    table = pa.concat_tables([pq.read_table(f, columns=cols) for f in segment_files(data_dir)]).to_pandas()
    rows = table[table["split"] == split].sort_values(["live_id", "segment"])
    score = rows.groupby("live_id")["lvtr"].shift(1)
    ok = score.notna()
    pq.write_table(pa.table({"live_id": rows["live_id"][ok].to_numpy(), "segment": rows["segment"][ok].to_numpy(),
                             "label": rows["lvtr"][ok].to_numpy(), "score": sign * score[ok].to_numpy()}),
                   predictions_out)


def test_run_ab_into_a_used_out_directory_scores_the_new_run(ab_world, tmp_path):
    quick = dict(n_users=2000, progress=False, figures=False, sweep=False, paired=False, score_run=_lvtr_scorer)
    runs = {"good": _fake_run(tmp_path / "good", 1.0), "reversed": _fake_run(tmp_path / "reversed", -1.0)}
    results = {}
    for name, run in runs.items():
        arms = {"terms": {"content": {"source": str(run), "calibrate": "none"}},
                "sanity": {"placebo": False, "oracle": False}}
        results[name] = run_ab(ab_world, tmp_path / "OUT", arms, **quick)
        results[f"{name}_fresh"] = run_ab(ab_world, tmp_path / f"fresh_{name}", arms, **quick)
    for name, run in runs.items():
        assert results[name]["terms"]["content"]["source"] == f"run {run}"
        metrics = results[name]["randomised"]["arms"]["treatment"]["metrics"]
        assert metrics == results[f"{name}_fresh"]["randomised"]["arms"]["treatment"]["metrics"], name
    good, bad = (results[n]["randomised"]["arms"]["treatment"]["metrics"]["ctr"]["lift"] for n in runs)
    assert good != bad


# ------------------------------------------------------------------------------------------------
# Unseen streamers at evaluation
# ------------------------------------------------------------------------------------------------


def test_unknown_streamer_share_is_warned_about(caplog):
    vocab = IdVocab.fit(np.array([10_000, 10_001, 10_002]))
    with caplog.at_level(logging.INFO, logger="kuaihl_rec.train.evaluate"):
        assert unknown_streamer_share(vocab, np.array([10_000, 10_001]), "w") == 0.0
        assert not caplog.records
        assert unknown_streamer_share(vocab, np.array([10_000, 10_001, 7, 8]), "w") == 0.5
        assert "50.0% of scored segments" in caplog.text and "EVERY" not in caplog.text
        assert all(r.levelno == logging.INFO for r in caplog.records)  # cold starts: information
        assert unknown_streamer_share(vocab, np.array([7, 8, TOP]), "w") == 1.0
    assert "EVERY scored segment's streamer is unknown" in caplog.text
    assert caplog.records[-1].levelno == logging.WARNING
    assert unknown_streamer_share(vocab, np.array([], dtype=np.int64), "w") == 0.0


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    world = tmp_path_factory.mktemp("eval") / "world"
    write_world(generate_world(load_world_config(preset="tiny")), world, figure=False)
    run = world.parent / "run"
    train(world, run, train_config("tiny", checkpoint_every=10), progress=False)
    return world, run


def test_evaluate_run_reports_and_warns_about_streamers_the_run_never_saw(trained_run, tmp_path, caplog):
    world, run = trained_run
    with caplog.at_level(logging.WARNING, logger="kuaihl_rec.train.evaluate"):
        same = evaluate_run(run, world, "test", progress=False)
    assert 0.0 <= same["unknown_streamer_share"] < 1.0 and "EVERY" not in caplog.text
    renamed = tmp_path / "renamed"  # the same world with every streamer id moved: none is in the run's vocabulary
    shutil.copytree(world, renamed)
    for path in segment_files(renamed):
        table = pq.read_table(path)
        i = table.schema.get_field_index("streamer_id")
        moved = pc.add(table["streamer_id"], pa.scalar(10**9, table["streamer_id"].type))
        pq.write_table(table.set_column(i, table.schema.field(i), moved), path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kuaihl_rec.train.evaluate"):
        result = evaluate_run(run, renamed, "test", progress=False)
    assert result["unknown_streamer_share"] == 1.0
    assert "EVERY scored segment's streamer is unknown" in caplog.text and "(100%)" in caplog.text
