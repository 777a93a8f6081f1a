"""The KLive reader's refusals: every bad release names its file, line and field (kuaihl_rec.data.klive)."""

from __future__ import annotations

import json
import logging

import pyarrow as pa
import pytest
from klive_fixtures import (
    FIELDS,
    IMAGE_DIM,
    T0,
    TEXT_DIM,
    assert_error,
    assert_matches,
    fmt_line,
    make_release,
    make_rows,
    shard,
    write_mapping,
    write_shard,
)

from kuaihl_rec.data.io import DataError
from kuaihl_rec.data.klive import (
    MAPPING_NAME,
    convert_klive,
    read_klive,
)
from kuaihl_rec.data.validate import validate_path

# ----------------------------------------------------------------------------- failures


def test_unknown_encoding(tmp_path):
    make_release(tmp_path)
    path = shard(tmp_path, "test", 1)
    path.write_text("101,1650000000,0.5,0.1;0.2,0.3\n")
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path)
    assert_error(exc, path, 1, "(line)")
    path.write_text("\n\n{not json at all\n")
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path)
    assert_error(exc, path, 3, "(line)")


def test_encoding_changes_within_shard(tmp_path):
    rows = make_rows([1], n_segments=3)
    path = shard(tmp_path, "train", 0)
    path.parent.mkdir(parents=True)
    path.write_text("\n".join([fmt_line(rows[0], "tsv"), fmt_line(rows[1], "tsv"), fmt_line(rows[2], "json")]) + "\n")
    write_mapping(tmp_path, {1: 1})
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path, splits=("train",))
    assert_error(exc, path, 3, "(line)")
    # Vector style changes (brackets appear) within a tsv shard.
    path.write_text("\n".join([fmt_line(rows[0], "tsv", "comma"), fmt_line(rows[1], "tsv", "bracket-comma")]) + "\n")
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path, splits=("train",))
    assert_error(exc, path, 2, "image_feaure")
    # JSON shard with a tsv line.
    path.write_text("\n".join([fmt_line(rows[0], "json"), fmt_line(rows[1], "tsv")]) + "\n")
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path, splits=("train",))
    assert_error(exc, path, 2, "(line)")


@pytest.mark.parametrize("encoding", ["tsv", "json"])
def test_inconsistent_vector_length_within_shard(tmp_path, encoding):
    rows = make_rows([1], n_segments=3)
    rows[2]["text_feaure"] = rows[2]["text_feaure"][:-1]
    write_shard(shard(tmp_path, "train", 0), rows, encoding)
    write_mapping(tmp_path, {1: 1})
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path, splits=("train",))
    msg = assert_error(exc, shard(tmp_path, "train", 0), 3, "text_feaure")
    assert f"{TEXT_DIM} values" in msg and "line 1" in msg  # where the size was detected


def test_inconsistent_vector_length_across_shards(tmp_path):
    make_release(tmp_path)
    rows = make_rows([201, 202], seed=4)
    for r in rows:
        r["image_feaure"] = r["image_feaure"] + [1.0]
    path = shard(tmp_path, "test", 1)
    write_shard(path, rows, "tsv", "space")
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path)
    msg = assert_error(exc, path, 1, "image_feaure")
    assert str(shard(tmp_path, "train", 0)) in msg  # the reference shard


@pytest.mark.parametrize("field,bad", [("image_feaure", "0.1,abc,0.3,0.4"), ("text_feaure", "0.1,nan,0.2"),
                                       ("lvtr", "high"), ("timestamp", "1650000030.5"), ("live_id", "x12"),
                                       ("lvtr", "inf")])
def test_non_numeric_value_tsv(tmp_path, field, bad):
    rows = make_rows([1], n_segments=3)
    path = shard(tmp_path, "train", 0)
    write_shard(path, rows, "tsv")
    lines = path.read_text().splitlines()
    cells = lines[1].split("\t")
    cells[FIELDS.index(field)] = bad
    lines[1] = "\t".join(cells)
    path.write_text("\n".join(lines) + "\n")
    write_mapping(tmp_path, {1: 1})
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path, splits=("train",))
    assert_error(exc, path, 2, field)


@pytest.mark.parametrize("field,bad", [("image_feaure", [0.1, "abc", 0.3, 0.4]), ("text_feaure", "0.1,0.2,0.3"),
                                       ("lvtr", "0.5"), ("live_id", 1.5), ("timestamp", None),
                                       ("image_feaure", [0.1, None, 0.3, 0.4])])
def test_non_numeric_value_json(tmp_path, field, bad):
    rows = make_rows([1], n_segments=3)
    rows[1][field] = bad
    path = shard(tmp_path, "train", 0)
    write_shard(path, rows, "json")
    write_mapping(tmp_path, {1: 1})
    if field == "lvtr":  # a numeric string is read as a number; a word is not
        read_klive(tmp_path, splits=("train",))
        rows[1][field] = "abc"
        write_shard(path, rows, "json")
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path, splits=("train",))
    assert_error(exc, path, 2, field)


def test_timestamps_in_milliseconds(tmp_path):
    rows = make_rows([1], n_segments=2)
    for r in rows:
        r["timestamp"] *= 1000
    write_shard(shard(tmp_path, "train", 0), rows, "tsv")
    write_mapping(tmp_path, {1: 1})
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path, splits=("train",))
    assert "milliseconds" in assert_error(exc, shard(tmp_path, "train", 0), 1, "timestamp")


def test_missing_columns(tmp_path):
    rows = make_rows([1], n_segments=2)
    path = shard(tmp_path, "train", 0)
    write_shard(path, rows, "tsv-header", columns=("live_id", "timestamp", "lvtr", "image_feaure"))
    write_mapping(tmp_path, {1: 1})
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path, splits=("train",))
    assert_error(exc, path, 1, "text_feaure")
    # JSON: the second row lacks a key.
    del rows[1]["lvtr"]
    write_shard(path, rows, "json")
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path, splits=("train",))
    assert_error(exc, path, 2, "lvtr")
    # tsv without header: a row with four fields.
    rows = make_rows([1], n_segments=2)
    write_shard(path, rows, "tsv")
    lines = path.read_text().splitlines()
    lines[1] = "\t".join(lines[1].split("\t")[:4])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path, splits=("train",))
    assert_error(exc, path, 2, "(line)")


def test_unknown_live_id(tmp_path):
    make_release(tmp_path, n_shards=1)
    write_mapping(tmp_path, {101: 1, 103: 3, 201: 4})  # 102 and 202 unmapped
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path)
    msg = assert_error(exc, shard(tmp_path, "train", 0), None, "live_id")
    assert "found 2 live_id(s)" in msg and "102, 202" in msg and str(tmp_path / MAPPING_NAME) in msg
    assert "line " in msg


def test_room_in_both_splits(tmp_path):
    make_release(tmp_path, train_ids=(101, 102), test_ids=(201, 102), n_shards=1)
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path)
    msg = assert_error(exc, shard(tmp_path, "test", 0), None, "live_id")
    assert "102" in msg and str(shard(tmp_path, "train", 0)) in msg and "line " in msg


def test_duplicate_timestamp(tmp_path):
    make_release(tmp_path, n_shards=2)
    rows = make_rows([102], n_segments=1, seed=9)  # same (live_id, timestamp) as a row in another shard
    rows[0]["timestamp"] = T0 + 30 * 7 * 1
    path = shard(tmp_path, "train", 5)
    write_shard(path, rows, "tsv")
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path)
    msg = assert_error(exc, path, 1, "timestamp")
    assert "duplicate" in msg and msg.count("line ") >= 2


def test_off_grid_timestamps(tmp_path):
    rows = make_rows([1, 2], n_segments=3)
    rows[4]["timestamp"] += 7  # room 2, third row
    path = shard(tmp_path, "train", 0)
    write_shard(path, rows, "tsv")
    write_mapping(tmp_path, {1: 1, 2: 2})
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path, splits=("train",))
    msg = assert_error(exc, path, 5, "timestamp")
    assert "room (live_id) 2" in msg and "multiple of 30" in msg


def test_empty_directory_and_missing_mapping(tmp_path):
    make_release(tmp_path)
    (tmp_path / MAPPING_NAME).unlink()
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path)
    assert_error(exc, tmp_path / MAPPING_NAME, None, "(file)")

    make_release(tmp_path)
    for p in (tmp_path / "test").iterdir():
        p.unlink()
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path)
    assert "empty directory" in assert_error(exc, tmp_path / "test", None, "(directory)")

    (tmp_path / "test").rmdir()
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path)
    assert_error(exc, tmp_path / "test", None, "(directory)")

    (tmp_path / "test").mkdir()
    shard(tmp_path, "test", 0).write_text("\n\n")  # shards with no rows at all
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path)
    assert_error(exc, tmp_path / "test", None, "(directory)")

    with pytest.raises(DataError) as exc:
        read_klive(tmp_path / "nowhere")
    assert_error(exc, tmp_path / "nowhere", None, "(directory)")


def test_empty_mapping_file(tmp_path):
    make_release(tmp_path)
    (tmp_path / MAPPING_NAME).write_text("live_id\taid\n\n")
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path)
    assert_error(exc, tmp_path / MAPPING_NAME, None, "(file)")


def test_list_columns_split_into_chunks_when_offsets_would_overflow(tmp_path, monkeypatch):
    import kuaihl_rec.data.klive as klive

    rows = make_release(tmp_path)
    monkeypatch.setattr(klive, "_MAX_LIST_VALUES", 2 * IMAGE_DIM + 1)  # 2 rows of visual per chunk
    table, _ = read_klive(tmp_path)
    assert table.column("visual").num_chunks == (len(rows) + 1) // 2
    assert table.column("visual").type == pa.list_(pa.float32())
    assert_matches(table, rows, {r["live_id"]: 9000 + r["live_id"] % 7 for r in rows})


@pytest.mark.parametrize("encoding", ["json", "tsv"])
def test_values_beyond_float32_range(tmp_path, encoding):
    rows = make_rows([1], n_segments=3)
    rows[2]["image_feaure"][1] = 1e300
    path = shard(tmp_path, "train", 0)
    write_shard(path, rows, encoding)
    write_mapping(tmp_path, {1: 1})
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path, splits=("train",))
    assert "position 1" in assert_error(exc, path, 3, "image_feaure")
    rows = make_rows([1], n_segments=3)
    rows[1]["lvtr"] = 1e300
    write_shard(path, rows, encoding)
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path, splits=("train",))
    assert_error(exc, path, 2, "lvtr")


def test_integral_floats_and_numeric_strings_accepted(tmp_path):
    rows = make_rows([1], n_segments=3)
    path = shard(tmp_path, "train", 0)
    lines = []
    for r in rows:
        obj = dict(r, timestamp=float(r["timestamp"]), live_id=str(r["live_id"]), lvtr=str(r["lvtr"]))
        lines.append(json.dumps(obj))
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n")
    write_mapping(tmp_path, {1: 1})
    table, _ = read_klive(tmp_path, splits=("train",))
    assert_matches(table, [dict(r, split="train") for r in rows], {1: 1})


@pytest.mark.parametrize("bad", [1.5, -0.25])
def test_lvtr_outside_unit_interval(tmp_path, bad):
    rows = make_rows([1, 2], n_segments=3)
    rows[4]["lvtr"] = bad  # room 2, second row: line 5
    path = shard(tmp_path, "train", 0)
    write_shard(path, rows, "tsv")
    write_mapping(tmp_path, {1: 1, 2: 2})
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path, splits=("train",))
    msg = assert_error(exc, path, 5, "lvtr")
    assert repr(bad) in msg and "in [0, 1]" in msg and "live_id 2" in msg


def test_lvtr_outside_unit_interval_names_first_line_in_reading_order(tmp_path):
    rows = make_rows([1, 2], n_segments=3)
    for r in (rows[1], rows[5]):
        r["lvtr"] = 2.0
    path = shard(tmp_path, "train", 0)
    write_shard(path, rows[3:] + rows[:3], "json")  # room 2 first in the file: rows[5] is on line 3
    write_mapping(tmp_path, {1: 1, 2: 2})
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path, splits=("train",))
    assert "2 row(s) outside" in assert_error(exc, path, 3, "lvtr")


def test_gap_kept_visible_logged_and_refused_by_validation(tmp_path, caplog):
    """A room whose timestamps jump 60 s (one 30 s segment missing): the reader keeps the gap in
    ``segment`` and logs it with shard and line; validating the converted table refuses it."""
    rows = make_rows([5], n_segments=4, gap=2)  # timestamps +0, +30, +90, +120
    for r in rows:
        r["split"] = "train"
    path = shard(tmp_path / "klive", "train", 0)
    write_shard(path, rows, "tsv")
    write_mapping(tmp_path / "klive", {5: 50})
    with caplog.at_level(logging.WARNING, logger="kuaihl_rec.data.klive"):
        out = convert_klive(tmp_path / "klive", tmp_path / "out", splits=("train",))
    assert f"{path}, line 3, field 'timestamp'" in caplog.text and "1 segment(s) missing" in caplog.text
    report = validate_path(out)
    assert not report.ok and "segment_gap" in report.errors, report.format()
    example = report.errors["segment_gap"].examples[0]
    assert "part-00000.parquet: row 2, field 'segment': live_id 5: segment 3 follows segment 1" in example
    assert "timestamp_step" not in report.errors  # the timestamps agree with the visible gap
