"""The segment-data contract: every validation error on a crafted bad file, windowing, left shift, LiveBatch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from helpers import make_table
from kuaihl_rec.data import (
    DataError,
    FeatureSizes,
    LiveBatch,
    SegmentArrays,
    WindowConfig,
    WindowedSplit,
    build_windows,
    hash_split,
    load_segments,
    validate_path,
    window_splits,
    write_segment_table,
)
from kuaihl_rec.data.io import atomic_write_parquet
from kuaihl_rec.data.windows import IdVocab

SIZES = FeatureSizes(visual_tokens=1, visual_dim=4, text_dim=3)


def _replace(table: pa.Table, name: str, values) -> pa.Table:
    idx = table.column_names.index(name)
    return table.set_column(idx, table.schema.field(name).with_type(values.type) if isinstance(values, pa.Array) else name, values)


def _write(tmp_path, table, sizes=SIZES, name="data"):
    return write_segment_table(table, tmp_path / name, sizes)


def _errors(path, **kw):
    report = validate_path(path, **kw)
    return report, {k: p for k, p in report.errors.items()}


# ----------------------------------------------------------------------------------- validation


def test_good_table_is_valid_and_counts_rejections(tmp_path):
    viewers = np.full(63, 200)
    viewers[[5, 6, 40]] = 10  # three low-viewer segments, all targets
    path = _write(tmp_path, make_table(viewers=viewers))
    report = validate_path(path)
    assert report.ok, report.format()
    assert report.n_rows == 63 and report.n_rooms == 3 and report.n_streamers == 2
    assert report.rejections["targets_below_60_viewers"] == 3
    assert "OK" in report.format()


def _set_value(table, column, row, value):
    vals = table.column(column).to_pylist()
    vals[row] = value
    return table.set_column(table.column_names.index(column), column, pa.array(vals, table.schema.field(column).type))


@pytest.mark.parametrize(
    "column,row,value,kind,needle",
    [
        ("lvtr", 4, 1.5, "label_range", "outside [0, 1]"),
        ("ctr", 7, -0.1, "label_range", "outside [0, 1]"),
        ("lvtr", 9, float("nan"), "non_finite", "nan"),
        ("n_gifts", 11, -3, "negative_count", "is negative"),
        ("n_long_viewers", 12, 10_000, "long_gt_viewers", "exceeds n_viewers"),
        ("n_clicks", 13, 10_000, "clicks_gt_exposures", "exceeds n_exposures"),
        ("split", 14, "holdout", "bad_split", "expected one of"),
        ("streamer_id", 15, 999, "streamer_changes", "streamer_id"),
        ("timestamp", 16, 0, "timestamp_order", "timestamp"),
    ],
)
def test_each_row_error_names_file_row_and_field(tmp_path, column, row, value, kind, needle):
    table = _set_value(make_table(), column, row, value)
    path = _write(tmp_path, table)
    report, errors = _errors(path)
    assert not report.ok
    assert kind in errors, report.format()
    example = errors[kind].examples[0]
    assert "part-00000.parquet" in example and f"row {row}, field '{column}'" in example
    assert needle in example


def test_nan_and_inf_in_feature_vectors(tmp_path):
    table = make_table()
    vis = np.array(table.column("visual").to_pylist(), dtype=np.float32)
    vis[3, 2] = np.inf
    txt = np.array(table.column("text").to_pylist(), dtype=np.float32)
    txt[8, 1] = np.nan
    table = table.set_column(table.column_names.index("visual"), "visual", pa.array(list(vis), pa.list_(pa.float32())))
    table = table.set_column(table.column_names.index("text"), "text", pa.array(list(txt), pa.list_(pa.float32())))
    report, errors = _errors(_write(tmp_path, table))
    examples = errors["non_finite"].examples
    assert errors["non_finite"].count == 2
    assert any("row 3, field 'visual'" in e and "inf" in e for e in examples)
    assert any("row 8, field 'text'" in e and "nan" in e for e in examples)


def test_wrong_vector_length(tmp_path):
    table = make_table()
    vis = table.column("visual").to_pylist()
    vis[10] = vis[10][:3]
    table = table.set_column(table.column_names.index("visual"), "visual", pa.array(vis, pa.list_(pa.float32())))
    report, errors = _errors(_write(tmp_path, table))
    assert "row 10, field 'visual': vector has 3 values, expected 4" in errors["wrong_length"].examples[0]


def test_missing_and_mistyped_columns(tmp_path):
    table = make_table().drop(["lvtr"])
    report, errors = _errors(_write(tmp_path, table, name="missing"))
    assert "field 'lvtr': required column is missing" in errors["missing_column"].examples[0]
    table = make_table()
    table = table.set_column(table.column_names.index("lvtr"), "lvtr", pa.array([str(x) for x in table.column("lvtr").to_pylist()]))
    report, errors = _errors(_write(tmp_path, table, name="mistyped"))
    assert "field 'lvtr': type is string, expected float" in errors["wrong_type"].examples[0]


def test_duplicate_out_of_order_and_gap(tmp_path):
    base = make_table(room_lengths=(10, 10))
    order = list(range(20))
    dup = base.take(pa.array(order[:5] + [4] + order[5:]))  # row 5 repeats segment 4
    report, errors = _errors(_write(tmp_path, dup, name="dup"))
    assert "live_id 100 segment 4 appears again" in errors["duplicate_segment"].examples[0]
    swapped = base.take(pa.array(order[:3] + [4, 3] + order[5:]))
    report, errors = _errors(_write(tmp_path, swapped, name="swap"))
    assert "out_of_order" in errors and "segment 3 comes after segment 4" in errors["out_of_order"].examples[0]
    gap = base.take(pa.array(order[:6] + order[8:]))
    report, errors = _errors(_write(tmp_path, gap, name="gap"))
    assert "segment 8 follows segment 5: 2 segment(s) missing" in errors["segment_gap"].examples[0]
    interleaved = base.take(pa.array(order[:5] + order[10:15] + order[5:10] + order[15:]))
    report, errors = _errors(_write(tmp_path, interleaved, name="inter"))
    assert any("reappears after other rooms" in e for e in errors["out_of_order"].examples)


def test_room_split_across_files_and_missing_manifest_file(tmp_path):
    table = make_table(room_lengths=(10, 10))
    d = tmp_path / "multi"
    atomic_write_parquet(d / "a.parquet", table.slice(0, 15))
    atomic_write_parquet(d / "b.parquet", table.slice(15))
    report, errors = _errors(d)
    assert "room 101 also has rows in" in errors["room_split_files"].examples[0]
    path = _write(tmp_path, table, name="gone")
    (path / "segments" / "part-00000.parquet").unlink()
    with pytest.raises(DataError, match="lists files that do not exist"):
        validate_path(path)
    with pytest.raises(DataError, match="no such file"):
        validate_path(tmp_path / "nowhere")


def test_partitioned_files_never_split_a_room(tmp_path):
    table = make_table(room_lengths=(30, 8, 25, 12, 40))
    path = write_segment_table(table, tmp_path / "parts", SIZES, rows_per_file=20)
    manifest = json.loads((path / "dataset.json").read_text())
    assert len(manifest["files"]) > 2
    seen = set()
    for f in manifest["files"]:
        rooms = set(pq.read_table(path / f).column("live_id").to_pylist())
        assert not rooms & seen
        seen |= rooms
    loaded, sizes, report = load_segments(path)
    assert report.ok and loaded.num_rows == table.num_rows and sizes == SIZES


def test_load_segments_raises_with_the_report(tmp_path):
    path = _write(tmp_path, _set_value(make_table(), "lvtr", 2, 3.0))
    with pytest.raises(DataError, match="label_range"):
        load_segments(path)


def test_validate_cli_exit_codes(tmp_path):
    good = _write(tmp_path, make_table(), name="good")
    bad = _write(tmp_path, _set_value(make_table(), "n_viewers", 3, -1), name="bad")
    run = lambda p: subprocess.run([sys.executable, "-m", "kuaihl_rec.apps.cli", "validate", str(p)], capture_output=True, text=True)
    ok, fail = run(good), run(bad)
    assert ok.returncode == 0, ok.stderr
    assert fail.returncode == 1 and "negative_count" in fail.stdout and "row 3, field 'n_viewers'" in fail.stdout


# ----------------------------------------------------------------------------------- windowing


def _arrays(table, cfg):
    return SegmentArrays.from_table(table, SIZES, cfg)


def test_left_shift_positions_hold_segment_content_and_next_label():
    table = make_table(room_lengths=(30, 8, 25))
    cfg = WindowConfig(window=10, stride=3)
    arr = _arrays(table, cfg)
    split = window_splits(arr, cfg, {"train": "train"})["train"]
    batch = split.batch(np.arange(len(split)))
    lvtr = {(int(l), int(s)): float(v) for l, s, v in zip(arr.live_id, arr.segment, arr.label)}
    for w in range(batch.batch_size):
        for i in range(batch.window):
            if not batch.valid[w, i]:
                continue
            live, seg = int(batch.live_raw[w]), int(batch.segment[w, i])
            # content of segment s+i: the fixture writes (live_id, segment) into the features
            assert batch.visual[w, i, 0, 0].item() == live and batch.visual[w, i, 0, 1].item() == seg
            assert batch.text[w, i, 0].item() == seg
            # label of segment s+i+1
            assert batch.labels[w, i].item() == pytest.approx(lvtr[(live, seg + 1)])
            assert (live, seg + 1) in lvtr


@pytest.mark.parametrize("label, delay, expected_lag", [("lvtr", None, 2), ("ctr", None, 0), ("lvtr", 0, 0), ("lvtr", 4, 4)])
def test_observed_is_the_freshest_complete_label(label, delay, expected_lag):
    """``observed`` at content segment t = label of segment t - label_delay of the same room
    (LVTR: 2 segments, its 60 s outcome), -1 before the room has one and on padding."""
    table = make_table(room_lengths=(30, 8, 25))
    cfg = WindowConfig(window=10, stride=3, label=label, label_delay=delay)
    assert cfg.observed_delay == expected_lag
    arr = _arrays(table, cfg)
    split = window_splits(arr, cfg, {"train": "train"})["train"]
    batch = split.batch(np.arange(len(split)))
    labels = {(int(l), int(s)): float(v) for l, s, v in zip(arr.live_id, arr.segment, arr.label)}
    checked = 0
    for w in range(batch.batch_size):
        for i in range(batch.window):
            got = batch.observed[w, i].item()
            if not batch.valid[w, i]:
                assert got == -1.0
                continue
            live, seg = int(batch.live_raw[w]), int(batch.segment[w, i])
            want = labels.get((live, seg - expected_lag), -1.0)
            assert got == pytest.approx(want), (live, seg)
            checked += want >= 0
    assert checked > 0
    with pytest.raises(ValueError, match="label_delay"):
        WindowConfig(label_delay=-1)


def test_no_label_of_a_later_segment_reaches_earlier_inputs():
    """Perturb the label and features of segment t+1: the inputs at positions holding segments <= t
    are unchanged, and the label of segment t+1 appears only as the target of position t."""
    table = make_table(room_lengths=(40,))
    cfg = WindowConfig(window=10, stride=1)
    base = _arrays(table, cfg)
    t = 17
    bumped = _arrays(_set_value(_set_value(table, "lvtr", t + 1, 0.987), "n_comments", t + 1, 12345), cfg)
    bumped.visual = bumped.visual.copy()
    bumped.text = bumped.text.copy()
    bumped.visual[t + 1] += 100.0
    bumped.text[t + 1] += 100.0
    sa = window_splits(base, cfg, {"train": "train"})["train"]
    sb = WindowedSplit(bumped, sa.index, cfg, sa.streamer_vocab, sa.live_vocab, "train")
    a, b = sa.batch(np.arange(len(sa))), sb.batch(np.arange(len(sa)))
    seg = a.segment
    earlier = seg <= t
    for name in ("visual", "text", "counters", "observed"):
        xa, xb = getattr(a, name), getattr(b, name)
        assert torch.equal(xa[earlier], xb[earlier]), name
    # with label_delay 0 the label of t+1 is observed at the position holding segment t+1 only
    cfg0 = WindowConfig(window=10, stride=1, label_delay=0)
    a0 = WindowedSplit(base, sa.index, cfg0, sa.streamer_vocab, sa.live_vocab, "train").batch(np.arange(len(sa)))
    b0 = WindowedSplit(bumped, sa.index, cfg0, sa.streamer_vocab, sa.live_vocab, "train").batch(np.arange(len(sa)))
    assert torch.equal(a0.observed[earlier], b0.observed[earlier]) and not torch.equal(a0.observed, b0.observed)
    changed_labels = (a.labels != b.labels)
    assert changed_labels.any()
    assert torch.all(seg[changed_labels] == t)  # only positions whose content is segment t carry label t+1


def test_eval_windows_score_every_target_exactly_once():
    table = make_table(room_lengths=(30, 8, 25, 21, 22), viewers=np.r_[np.full(50, 200), np.full(56, 30)])
    cfg = WindowConfig(window=10, min_viewers=60)
    arr = _arrays(table, cfg)
    split = window_splits(arr, cfg, {"train": "eval"})["train"]
    batch = split.batch(np.arange(len(split)))
    scored = [(int(batch.live_raw[w]), int(batch.segment[w, i]) + 1) for w, i in zip(*np.nonzero(batch.score_mask.numpy()))]
    assert len(scored) == len(set(scored))
    viewers = {(int(l), int(s)): v for l, s, v in zip(arr.live_id, arr.segment, arr.viewers)}
    expected = {k for k, v in viewers.items() if k[1] >= 1 and v >= 60}
    assert set(scored) == expected
    assert split.stats.n_scored_targets == len(expected)
    assert split.stats.targets_below_min_viewers == sum(1 for k, v in viewers.items() if k[1] >= 1 and v < 60)
    # each scored target is scored with the longest available history: position = min(target-1, n-1)
    for w, i in zip(*np.nonzero(batch.score_mask.numpy())):
        target = int(batch.segment[w, i]) + 1
        assert i == min(target - 1, cfg.window - 1)


def test_train_windows_viewer_filter_drops_and_masks():
    viewers = np.full(40, 200)
    viewers[30] = 5  # the last target of the window starting at 20 (n = 10)
    viewers[25] = 5  # a target inside several windows: masked, not dropped
    table = make_table(room_lengths=(40,), viewers=viewers)
    cfg = WindowConfig(window=10, stride=1, min_viewers=60)
    arr = _arrays(table, cfg)
    split = window_splits(arr, cfg, {"train": "train"})["train"]
    stats = split.stats
    assert stats.windows_dropped_low_viewers == 2  # windows ending on targets 25 and 30
    assert stats.n_windows == (40 - 1 - 10 + 1) - 2
    batch = split.batch(np.arange(len(split)))
    masked = (~batch.label_mask) & batch.valid
    assert set((batch.segment[masked] + 1).tolist()) == {25, 30}


def test_short_rooms_are_right_padded():
    table = make_table(room_lengths=(5,))
    cfg = WindowConfig(window=10)
    arr = _arrays(table, cfg)
    split = window_splits(arr, cfg, {"train": "train"})["train"]
    batch = split.batch(np.array([0]))
    assert batch.valid[0].tolist() == [True] * 4 + [False] * 6
    assert torch.all(batch.visual[0, 4:] == 0) and torch.all(batch.segment[0, 4:] == -1)
    assert not batch.label_mask[0, 4:].any()


def test_split_by_room_hash_is_deterministic_and_room_level():
    live = np.repeat(np.arange(1000, 3000), 3)
    s1, s2 = hash_split(live), hash_split(live[::-1])[::-1]
    assert np.array_equal(s1, s2)
    per_room = s1.reshape(-1, 3)
    assert np.all(per_room[:, 0] == per_room[:, 1])
    frac = {k: np.mean(per_room[:, 0] == k) for k in ("train", "val", "test")}
    assert abs(frac["train"] - 0.8) < 0.04 and abs(frac["test"] - 0.1) < 0.03
    with pytest.raises(ValueError, match="summing to 1"):
        hash_split(live, (0.5, 0.5, 0.5))


def test_vocab_maps_unknown_ids_to_row_zero():
    vocab = IdVocab.fit(np.array([42, 7, 42, 1000]))
    assert vocab.num_rows == 4
    assert vocab.lookup(np.array([7, 42, 1000, 5, 5000])).tolist() == [1, 2, 3, 0, 0]


def test_cold_start_streamers_get_row_zero():
    table = make_table(room_lengths=(20, 20, 20), splits=("train", "test", "test"))
    cfg = WindowConfig(window=10)
    arr = _arrays(table, cfg)
    splits = window_splits(arr, cfg, {"train": "train", "test": "eval"})
    test_batch = splits["test"].batch(np.arange(len(splits["test"])))
    rows = test_batch.streamer_ids()
    seen_streamer = test_batch.streamer_raw == 7  # streamer 7 has the train room 100
    assert torch.all(rows[seen_streamer] == 1) and torch.all(rows[~seen_streamer] == 0)
    assert torch.all(test_batch.sparse_features["live_id"].values() == 0)  # test rooms never in training


# ----------------------------------------------------------------------------------- LiveBatch


def test_livebatch_is_pipelineable_and_selectable():
    table = make_table()
    cfg = WindowConfig(window=10)
    split = window_splits(_arrays(table, cfg), cfg, {"train": "train"})["train"]
    batch = split.batch(np.arange(4))
    moved = batch.to(torch.device("cpu"))
    assert isinstance(moved, LiveBatch) and torch.equal(moved.visual, batch.visual)
    sub = batch.select(torch.tensor([2, 0]))
    assert torch.equal(sub.labels, batch.labels[[2, 0]])
    assert sub.streamer_ids().tolist() == batch.streamer_ids()[[2, 0]].tolist()
    from torchrec.streamable import Pipelineable

    assert isinstance(batch, Pipelineable)


def test_rank_shards_partition_each_global_batch():
    table = make_table(room_lengths=(30, 30, 30))
    cfg = WindowConfig(window=10)
    split = window_splits(_arrays(table, cfg), cfg, {"train": "train"})["train"]
    single = [b.segment for b in split.iter_batches(8, shuffle=True, seed=3)]
    ranks = [list(split.iter_batches(4, shuffle=True, seed=3, rank=r, world_size=2)) for r in range(2)]
    for k, whole in enumerate(single):
        parts = [ranks[r][k].segment for r in range(2) if k < len(ranks[r])]
        assert torch.equal(torch.cat(parts), whole)
