"""The PHD data contract and the PHD-GIFs CSV reader, on small hand-written files (good and bad)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from kuaihl_rec.data.io import DataError
from kuaihl_rec.data.phd.contract import PHDData, PHDLabels, PHDVideo, check_data, read_phd, write_phd
from kuaihl_rec.data.phd.examples import (UserExample, clip_range, leave_one_out_examples, make_batch, segment_labels,
                                          user_examples)
from kuaihl_rec.data.phd.gifs import read_phd_gifs
from kuaihl_rec.metrics.phd import frame_labels

HEADER = "youtubeId,start,duration,user_id,video_duration,is_last\n"


def _small() -> PHDData:
    rng = np.random.default_rng(0)
    videos = {v: PHDVideo(rng.normal(size=(n, 4)).astype(np.float32), rng.normal(size=(n, 3)).astype(np.float32))
              for v, n in (("a", 10), ("b", 6), ("c", 8))}
    sel = pd.DataFrame([("u1", "a", 2.0, 3.0, "target"), ("u1", "a", 7.5, 1.0, "target"),
                        ("u1", "b", 1.0, 2.0, "history"), ("u2", "c", 0.0, 4.0, "target"),
                        ("u2", "a", 0.5, 2.0, "history"), ("u2", "b", 3.0, 3.0, "history")],
                       columns=["user_id", "video_id", "start", "duration", "role"])
    users = pd.DataFrame([("u1", "train"), ("u2", "test")], columns=["user_id", "split"])
    return PHDData(1.0, videos, PHDLabels(sel, users, {}))


def _with_sel(data: PHDData, row: int, **values) -> PHDData:
    sel = data.labels.selections.copy()
    for k, v in values.items():
        sel.loc[row, k] = v
    return dataclasses.replace(data, labels=dataclasses.replace(data.labels, selections=sel))


def test_round_trip(tmp_path):
    data = _small()
    back = read_phd(write_phd(tmp_path / "d", data))
    assert back.segment_seconds == 1.0 and set(back.videos) == {"a", "b", "c"}
    for v in data.videos:
        assert np.array_equal(back.videos[v].visual, data.videos[v].visual)
        assert np.array_equal(back.videos[v].text, data.videos[v].text)
    pd.testing.assert_frame_equal(back.labels.selections, data.labels.selections, check_dtype=False)
    ex = {e.user_id: e for e in user_examples(back, "train") + user_examples(back, "test")}
    assert ex["u1"].video_id == "a" and ex["u1"].selections == ((2.0, 3.0), (7.5, 1.0))
    assert ex["u2"].history == (("a", 0.5, 2.0), ("b", 3.0, 3.0))


@pytest.mark.parametrize("row, values, message", [
    (0, {"start": -1.0}, r"row 0: start: expected a finite number of seconds >= 0"),
    (1, {"duration": 0.0}, r"row 1: duration: expected a finite number of seconds > 0"),
    (2, {"role": "past"}, r"row 2: role: expected one of \['history', 'target'\]"),
    (2, {"video_id": "a"}, r"row 2: video_id: history clip of user 'u1' on that user's target video 'a'"),
    (1, {"video_id": "b"}, r"video_id: user 'u1' has target selections on 2 videos"),
    (3, {"user_id": "u9"}, r"row 3: user_id: user 'u9' is not in"),
    (4, {"video_id": "zz"}, r"row 4: video_id: video 'zz' has no segments"),
    (5, {"duration": 3.5}, r"row 5: duration: selection ends at 6.5 s, after the last segment of video 'b' \(6 s\)"),
])
def test_contract_refuses_bad_selections(row, values, message):
    with pytest.raises(DataError, match=message):
        check_data(_with_sel(_small(), row, **values))


def test_contract_refuses_bad_users_and_segments(tmp_path):
    data = _small()
    users = pd.DataFrame([("u1", "train"), ("u2", "later")], columns=["user_id", "split"])
    with pytest.raises(DataError, match=r"row 1: split: expected one of"):
        check_data(dataclasses.replace(data, labels=dataclasses.replace(data.labels, users=users)))
    users = pd.DataFrame([("u1", "train"), ("u2", "test"), ("u1", "test")], columns=["user_id", "split"])
    with pytest.raises(DataError, match=r"row 2: user_id: user 'u1' is listed twice"):
        check_data(dataclasses.replace(data, labels=dataclasses.replace(data.labels, users=users)))
    users = pd.DataFrame([("u1", "train"), ("u2", "test"), ("u3", "test")], columns=["user_id", "split"])
    with pytest.raises(DataError, match=r"user 'u3': no target selection"):
        check_data(dataclasses.replace(data, labels=dataclasses.replace(data.labels, users=users)))
    path = write_phd(tmp_path / "d", data)
    seg = pd.read_parquet(path / "segments.parquet")
    seg.loc[3, "segment"] = 7  # video a: 0 1 2 7 4 ... -> a gap and a duplicate
    seg.to_parquet(path / "segments.parquet")
    with pytest.raises(DataError, match=r"segments.parquet: row \d+: segment: video 'a': segments must be 0 .. 9"):
        read_phd(path)
    seg = pd.read_parquet(write_phd(tmp_path / "e", data) / "segments.parquet")
    seg.at[4, "visual"] = [1.0, 2.0]
    seg.to_parquet(tmp_path / "e" / "segments.parquet")
    with pytest.raises(DataError, match=r"row 4: visual: expected 4 numbers"):
        read_phd(tmp_path / "e")
    (tmp_path / "e" / "users.parquet").unlink()
    with pytest.raises(FileNotFoundError):
        read_phd(tmp_path / "e")


def test_segment_labels_match_frames_and_clips():
    sel = [(2.5, 1.0), (7.0, 0.4)]
    got = segment_labels(sel, 10, 1.0)
    frames = frame_labels(sel, 300)
    assert np.allclose(got, [frames[30 * i:30 * i + 30].mean() for i in range(10)])
    assert got[2] == 0.5 and got[3] == 0.5 and got[7] == pytest.approx(12 / 30) and got[0] == 0
    assert clip_range(2.5, 1.0, 1.0, 10, 8) == (2, 4) and clip_range(1.0, 9.0, 1.0, 10, 3) == (1, 4)
    data = _small()
    batch = make_batch(data, user_examples(data, "train"))
    # 7.5-8.5 s covers half of segments 7 and 8: both positives (>= 0.5)
    assert batch.labels.shape == (1, 10) and batch.positive[0].tolist() == [i in (2, 3, 4, 7, 8) for i in range(10)]
    assert batch.hist_valid[0, 0].tolist() == [True, True] + [False] * 6  # clip (1, 2) s of video b


def test_leave_one_out_examples_hold_each_selection_out_once():
    e = UserExample("u", "t", ((1.0, 2.0), (5.0, 1.0)), (("a", 0.0, 2.0), ("b", 3.0, 2.0), ("c", 1.0, 3.0)))
    out = leave_one_out_examples([e])
    assert out[0] == e and len(out) == 1 + len(e.history)
    every = {("t", 1.0, 2.0), ("t", 5.0, 1.0), *e.history}
    for x, (vid, start, dur) in zip(out[1:], e.history):
        assert x.user_id == "u" and x.video_id == vid and x.selections == ((start, dur),)
        assert (vid, start, dur) not in x.history  # the held-out selection never reaches the input
        assert set(x.history) | {(vid, start, dur)} == every and len(x.history) == len(every) - 1


# ------------------------------------------------------------------------------ PHD-GIFs CSV release
def _csv(tmp_path, name, body):
    p = tmp_path / name
    p.write_text(HEADER + body)
    return p


GOOD_TRAIN = ("vidA,10.0,3.0,101,120.5,0\n"
              "vidB,5.0,2.0,101,-1,0\n"
              "vidC,30.0,4.0,101,200,1\n"
              "vidC,50.0,2.0,101,200,False\n"
              "vidA,1.0,2.0,102,120.5,TRUE\n"
              "vidC,0.0,5.0,102,-1,0\n")
GOOD_TEST = "vidD,3.0,3.0,201,60,1\nvidA,4.0,2.0,201,120.5,0\n"


def test_gifs_reader_builds_the_label_side(tmp_path):
    labels = read_phd_gifs({"train": _csv(tmp_path, "train.csv", GOOD_TRAIN),
                            "test": _csv(tmp_path, "test.csv", GOOD_TEST)})
    sel = labels.selections
    assert list(sel["role"]) == ["history", "history", "target", "target", "target", "history", "target", "history"]
    assert list(labels.users.itertuples(index=False, name=None)) == [("101", "train"), ("102", "train"),
                                                                      ("201", "test")]
    assert labels.video_durations["vidA"] == 120.5 and labels.video_durations["vidC"] == 200
    assert math.isnan(labels.video_durations["vidB"])
    assert sel.loc[3, "start"] == 50.0  # is_last = False on the target video: still a target selection


@pytest.mark.parametrize("body, message", [
    ("vidA,abc,3.0,1,100,1\n", r"train.csv: line 2: start: expected a number of seconds, got 'abc'"),
    ("vidA,1.0,3.0,1,100,1\nvidB,1.0,0,1,100,0\n", r"line 3: duration: expected seconds > 0"),
    ("vidA,1.0,3.0,1,100,yes\n", r"line 2: is_last: expected 0/1 or true/false, got 'yes'"),
    ("vidA,1.0,3.0,1,-2,1\n", r"line 2: video_duration: expected seconds > 0 or -1"),
    ("vidA,1.0,3.0,1,100,0\n", r"line 2: is_last: user '1' has no row with is_last = 1"),
    ("vidA,1.0,3.0,1,100,1\nvidB,1.0,3.0,1,100,1\n", r"line 3: is_last: user '1' has is_last rows on 2 videos"),
    ("vidA,99.0,3.0,1,100,1\n", r"line 2: duration: GIF ends at 102 s, after the end of video 'vidA' \(100 s\)"),
    ("vidA,1.0,3.0,1,100,1\nvidA,1.0,3.0,2,150,1\n", r"line 3: video_duration: video 'vidA' is 150 s here"),
    (",1.0,3.0,1,100,1\n", r"line 2: youtubeId: expected a video id"),
])
def test_gifs_reader_refuses_bad_rows(tmp_path, body, message):
    with pytest.raises(DataError, match=message):
        read_phd_gifs({"train": _csv(tmp_path, "train.csv", body)})


def test_gifs_reader_refuses_bad_files(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("youtubeId,start,duration,user_id\nvidA,1,2,3\n")
    with pytest.raises(DataError, match=r"bad.csv: missing column\(s\) \['video_duration', 'is_last'\]"):
        read_phd_gifs({"train": p})
    both = _csv(tmp_path, "a.csv", "vidA,1.0,3.0,1,100,1\n")
    other = _csv(tmp_path, "b.csv", "vidB,1.0,3.0,1,100,1\n")
    with pytest.raises(DataError, match=r"b.csv: line 2: user_id: user '1' is also in .*a.csv"):
        read_phd_gifs({"train": both, "test": other})
    with pytest.raises(FileNotFoundError):
        read_phd_gifs({"train": tmp_path / "missing.csv"})
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty file"):
        read_phd_gifs({"train": tmp_path / "empty.csv"})


def test_gifs_labels_join_features(tmp_path):
    labels = read_phd_gifs({"train": _csv(tmp_path, "t.csv", "vidA,1.0,3.0,1,10,1\nvidB,2.0,2.0,1,-1,0\n")})
    feats = {v: PHDVideo(np.zeros((n, 2), np.float32), np.zeros((n, 2), np.float32)) for v, n in (("vidA", 10),
                                                                                                   ("vidB", 3))}
    with pytest.raises(DataError, match=r"row 1: duration: selection ends at 4 s, after the last segment of video"):
        check_data(PHDData(1.0, feats, labels))
    feats["vidB"] = PHDVideo(np.zeros((5, 2), np.float32), np.zeros((5, 2), np.float32))
    check_data(PHDData(1.0, feats, labels))


def test_segment_seconds_must_cover_whole_frames(tmp_path):
    """0.25 s = 7.5 frames at 30 fps: the segment labels and the evaluation's frames would drift apart."""
    data = dataclasses.replace(_small(), segment_seconds=0.25)
    with pytest.raises(DataError, match=r"phd.json: segment_seconds: expected a whole number of 30 fps frames"):
        check_data(data)
    with pytest.raises(ValueError, match="whole number of 30 fps frames"):
        segment_labels([(0.0, 1.0)], 4, 0.25)
    path = write_phd(tmp_path / "d", _small())
    manifest = json.loads((path / "phd.json").read_text())
    (path / "phd.json").write_text(json.dumps({**manifest, "segment_seconds": 0.25}))
    with pytest.raises(DataError, match=r"phd.json: segment_seconds: expected a whole number of 30 fps frames"):
        read_phd(path)
    (path / "phd.json").write_text(json.dumps({**manifest, "segment_seconds": 2.0}))
    assert read_phd(path).segment_seconds == 2.0  # 60 frames: fine


def test_read_phd_refuses_an_unknown_manifest_version(tmp_path):
    path = write_phd(tmp_path / "d", _small())
    manifest = json.loads((path / "phd.json").read_text())
    (path / "phd.json").write_text(json.dumps({**manifest, "version": 2}))
    with pytest.raises(DataError, match=r"phd.json: version: expected 1, got 2$"):
        read_phd(path)
    (path / "phd.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "version"}))
    with pytest.raises(DataError, match=r"phd.json: version: expected 1, got None$"):
        read_phd(path)


@pytest.mark.parametrize("durations", [(100.0, 100.4, 100.8), (100.8, 100.4, 100.0), (100.4, 100.0, 100.8)])
def test_gifs_duration_check_does_not_depend_on_row_order(tmp_path, durations):
    """Durations 100 / 100.4 / 100.8 s span 0.8 s > the 0.5 s tolerance in any row order."""
    body = "".join(f"vidA,1.0,3.0,{u},{d},1\n" for u, d in zip((1, 2, 3), durations))
    with pytest.raises(DataError, match=r"train.csv: line \d: video_duration: video 'vidA' is [\d.]+ s here but "
                                        r"[\d.]+ s at .*train.csv line \d"):
        read_phd_gifs({"train": _csv(tmp_path, "train.csv", body)})
