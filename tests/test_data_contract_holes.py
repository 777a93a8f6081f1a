"""Bad inputs the segment-data contract refuses: manifests that lie, paths that leave the table,
feature widths of 0 or that differ between files, segment numbers that do not start at 0, timestamps
off the 30 s step, and the mode of the files the atomic writers leave behind."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pyarrow as pa
import pytest

from helpers import make_table
from kuaihl_rec.data import DataError, FeatureSizes, load_segments, validate_path, write_segment_table
from kuaihl_rec.data.io import atomic_write_bytes, atomic_write_json, atomic_write_parquet, read_manifest

SIZES = FeatureSizes(visual_tokens=1, visual_dim=4, text_dim=3)


def _table_dir(tmp_path, table=None, name="data", **kw):
    return write_segment_table(make_table() if table is None else table, tmp_path / name, SIZES, **kw)


def _edit_manifest(path, **changes):
    manifest = json.loads((path / "dataset.json").read_text())
    manifest.update(changes)
    (path / "dataset.json").write_text(json.dumps(manifest))
    return manifest


def _refusal(path) -> str:
    """The DataError message of both validate_path and load_segments for ``path`` (they must agree)."""
    with pytest.raises(DataError) as first:
        validate_path(path)
    with pytest.raises(DataError) as second:
        load_segments(path)
    assert str(first.value) == str(second.value)
    return str(first.value)


def _problem(path, kind):
    report = validate_path(path)
    assert not report.ok and kind in report.errors, report.format()
    with pytest.raises(DataError, match=kind):
        load_segments(path)
    return report.errors[kind].examples


def _with_column(table: pa.Table, name: str, values) -> pa.Table:
    field = table.schema.field(name)
    return table.set_column(table.column_names.index(name), field, pa.array(values, field.type))


# ----------------------------------------------------------------------------------- manifest


def test_manifest_listing_a_file_twice_is_refused(tmp_path):
    path = _table_dir(tmp_path)
    _edit_manifest(path, files=["segments/part-00000.parquet", "segments/part-00000.parquet"])
    msg = _refusal(path)
    assert str(path / "dataset.json") in msg and "field 'files'[1]" in msg
    assert "same file as field 'files'[0]" in msg and "expected each file listed once" in msg
    # The same file under another spelling is the same file.
    _edit_manifest(path, files=["segments/part-00000.parquet", "segments/../segments/./part-00000.parquet"])
    assert "same file as field 'files'[0]" in _refusal(path)


def test_manifest_total_row_count_must_match(tmp_path):
    path = _table_dir(tmp_path)
    _edit_manifest(path, n_rows=70)
    examples = _problem(path, "manifest_rows")
    assert any(str(path / "dataset.json") in e and "field 'n_rows': manifest says 70 rows, expected 63" in e
               for e in examples), examples


def test_manifest_per_file_row_counts_must_match(tmp_path):
    table = make_table(room_lengths=(30, 8, 25, 12, 40))
    path = _table_dir(tmp_path, table, rows_per_file=20)
    manifest = read_manifest(path)
    assert sum(manifest["file_rows"]) == manifest["n_rows"] == table.num_rows
    assert validate_path(path).ok
    wrong = list(manifest["file_rows"])
    wrong[1] += 5
    _edit_manifest(path, file_rows=wrong)
    examples = _problem(path, "manifest_rows")
    assert any("field 'file_rows'[1]" in e and manifest["files"][1].split("/")[-1] in e
               and f"expected {manifest['file_rows'][1]}" in e for e in examples), examples


def test_manifest_that_drops_a_file_is_caught_by_its_counts(tmp_path):
    path = _table_dir(tmp_path, make_table(room_lengths=(30, 8, 25, 12, 40)), rows_per_file=20)
    manifest = read_manifest(path)
    _edit_manifest(path, files=manifest["files"][:-1])
    examples = _problem(path, "manifest_rows")
    assert any("field 'n_rows'" in e for e in examples) and any("field 'file_rows'" in e for e in examples)


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_manifest_paths_must_stay_inside_the_dataset(tmp_path, how):
    path = _table_dir(tmp_path)
    outside = tmp_path / "x.parquet"
    atomic_write_parquet(outside, make_table())
    if how == "dotdot":
        entry = "../x.parquet"
    elif how == "absolute":
        entry = str(outside)
    else:
        entry = "segments/link.parquet"
        os.symlink(outside, path / entry)
    _edit_manifest(path, files=[entry])
    msg = _refusal(path)
    assert str(path / "dataset.json") in msg and "field 'files'[0]" in msg and repr(entry) in msg
    assert ("absolute path" in msg) if how == "absolute" else ("outside the dataset directory" in msg)


@pytest.mark.parametrize("key,value", [("visual_dim", -4), ("text_dim", 0), ("visual_tokens", 0),
                                       ("visual_dim", 4.0), ("text_dim", True), ("text_dim", "3")])
def test_manifest_feature_sizes_must_be_positive_integers(tmp_path, key, value):
    path = _table_dir(tmp_path)
    manifest = read_manifest(path)
    _edit_manifest(path, feature_sizes={**manifest["feature_sizes"], key: value})
    msg = _refusal(path)
    assert str(path / "dataset.json") in msg and f"field 'feature_sizes.{key}' is {value!r}" in msg
    assert "expected an integer >= 1" in msg


def test_manifest_feature_sizes_with_missing_key(tmp_path):
    path = _table_dir(tmp_path)
    _edit_manifest(path, feature_sizes={"visual_tokens": 1, "visual_dim": 4})
    assert "field 'feature_sizes'" in _refusal(path)


# ----------------------------------------------------------------------------------- widths without a manifest


def test_zero_width_vectors_without_manifest(tmp_path):
    table = make_table(room_lengths=(5, 4))
    table = _with_column(table, "text", [[] for _ in range(table.num_rows)])
    atomic_write_parquet(tmp_path / "one.parquet", table)
    examples = _problem(tmp_path / "one.parquet", "empty_vector")
    assert f"{tmp_path / 'one.parquet'}: row 0, field 'text': vector has 0 values" in examples[0]
    assert "expected at least 1" in examples[0]


def test_vector_widths_must_agree_across_files_without_manifest(tmp_path):
    wide = FeatureSizes(visual_tokens=1, visual_dim=4, text_dim=5)
    first = make_table(room_lengths=(6, 5))
    second = make_table(room_lengths=(7,), sizes=wide)
    second = _with_column(second, "live_id", np.full(7, 900))  # a room of its own
    atomic_write_parquet(tmp_path / "dir" / "a.parquet", first)
    atomic_write_parquet(tmp_path / "dir" / "b.parquet", second)
    examples = _problem(tmp_path / "dir", "wrong_length")
    assert examples[0].startswith(f"{tmp_path / 'dir' / 'b.parquet'}: row 0, field 'text'")
    assert f"vector has 5 values, expected 3 (from row 0 of {tmp_path / 'dir' / 'a.parquet'})" in examples[0]


# ----------------------------------------------------------------------------------- segment numbers and time


def test_room_not_starting_at_segment_zero(tmp_path):
    table = make_table(room_lengths=(6, 5, 4))
    seg = table.column("segment").to_numpy().copy()
    ts = table.column("timestamp").to_numpy().copy()
    seg[6:11] += 3  # room 101 numbered 3..7 (timestamps still 30 s apart)
    table = _with_column(_with_column(table, "segment", seg), "timestamp", ts)
    examples = _problem(_table_dir(tmp_path, table), "segment_start")
    assert "part-00000.parquet: row 6, field 'segment': live_id 101: the room's first row has segment 3" in examples[0]
    assert "expected 0" in examples[0]


def test_negative_segment_numbers(tmp_path):
    table = make_table(room_lengths=(6, 5))
    seg = table.column("segment").to_numpy().copy()
    seg[6:] -= 2  # room 101 numbered -2..2
    path = _table_dir(tmp_path, _with_column(table, "segment", seg))
    negative = _problem(path, "negative_segment")
    assert "row 6, field 'segment': live_id 101: segment -2 is negative" in negative[0]
    assert "row 7, field 'segment'" in negative[1]
    assert "row 6, field 'segment'" in validate_path(path).errors["segment_start"].examples[0]


def test_timestamps_must_advance_30_s_per_segment(tmp_path):
    table = make_table(room_lengths=(10, 5))
    ts = table.column("timestamp").to_numpy().copy()
    ts[4:10] += 600  # a ten-minute pause hidden behind consecutive segment numbers
    examples = _problem(_table_dir(tmp_path, _with_column(table, "timestamp", ts)), "timestamp_step")
    assert "part-00000.parquet: row 4, field 'timestamp': live_id 100: segment 4 starts 630 s after segment 3" in (
        examples[0])
    assert "expected 30 s" in examples[0]
    assert len(examples) == 1


def test_synthetic_style_table_still_valid(tmp_path):
    """The hand-made table (segments 0.., 30 s apart, as the world writes them) passes every new check."""
    report = validate_path(_table_dir(tmp_path, make_table(room_lengths=(30, 8, 25, 1))))
    assert report.ok, report.format()


# ----------------------------------------------------------------------------------- file modes


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_writers_apply_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        atomic_write_json(tmp_path / "b.json", {"a": 1})
        atomic_write_parquet(tmp_path / "c.parquet", make_table(room_lengths=(2,)))
        out = write_segment_table(make_table(room_lengths=(3,)), tmp_path / "table", SIZES)
    finally:
        os.umask(previous)
    written = [tmp_path / "a.bin", tmp_path / "b.json", tmp_path / "c.parquet", out / "dataset.json",
               out / "segments" / "part-00000.parquet"]
    for f in written:
        assert stat.S_IMODE(f.stat().st_mode) == mode, f
    assert not list(tmp_path.rglob("*.tmp"))


def test_manifest_extra_cannot_overwrite_the_counts(tmp_path):
    out = write_segment_table(make_table(), tmp_path / "t", SIZES, extra={"n_rows": 1, "files": [], "source": "x"})
    manifest = read_manifest(out)
    assert manifest["n_rows"] == 63 and manifest["files"] == ["segments/part-00000.parquet"]
    assert manifest["source"] == "x" and validate_path(out).ok
