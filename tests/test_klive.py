"""Tests for the KLive release reader (kuaihl_rec.data.klive): round trips on small fixture directories
(the refusals are in tests/test_klive_errors.py)."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pytest
from klive_fixtures import (
    IMAGE_DIM,
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

from kuaihl_rec.data.io import DataError, read_manifest, segment_files
from kuaihl_rec.data.klive import (
    MAPPING_NAME,
    convert_klive,
    detect_shard_encoding,
    read_klive,
    read_live_id2aid,
)
from kuaihl_rec.data.schema import REQUIRED_TYPES, FeatureSizes

# ----------------------------------------------------------------------------- round trips


ENCODINGS = [
    ("json", "comma"),
    ("pydict", "comma"),
    ("tsv", "comma"),
    ("tsv", "space"),
    ("tsv", "bracket-comma"),
    ("tsv", "bracket-space"),
    ("tsv-header", "comma"),
    ("tsv-header", "bracket-comma"),
]


@pytest.mark.parametrize("encoding,style", ENCODINGS)
def test_round_trip_each_encoding(tmp_path, encoding, style):
    rows = make_release(tmp_path, encoding, style)
    table, sizes = read_klive(tmp_path)
    assert sizes == FeatureSizes(visual_tokens=1, visual_dim=IMAGE_DIM, text_dim=TEXT_DIM)
    for name, typ in REQUIRED_TYPES.items():
        assert table.schema.field(name).type == typ, name
    assert table.schema.field("split").type == pa.string()
    assert table.column_names == ["streamer_id", "live_id", "segment", "timestamp", "lvtr", "visual", "text", "split"]
    assert_matches(table, rows, {r["live_id"]: 9000 + r["live_id"] % 7 for r in rows})
    enc = detect_shard_encoding(shard(tmp_path, "train", 0))
    assert enc.line == encoding
    if encoding.startswith("tsv"):
        assert enc.vector_styles == {"image_feaure": style, "text_feaure": style}


def test_header_in_any_order_with_extra_column(tmp_path):
    cols = ("text_feaure", "lvtr", "extra", "live_id", "image_feaure", "timestamp")
    rows = make_release(tmp_path, "tsv-header", "space", columns=cols)
    table, sizes = read_klive(tmp_path)
    assert sizes.visual_dim == IMAGE_DIM and sizes.text_dim == TEXT_DIM
    assert_matches(table, rows, {r["live_id"]: 9000 + r["live_id"] % 7 for r in rows})


def test_shards_may_differ_in_encoding_and_blank_lines_crlf_bom(tmp_path):
    rows = make_release(tmp_path, "tsv", "comma")
    # Rewrite one shard as JSON with CRLF, a BOM and blank lines.
    train0 = shard(tmp_path, "train", 0)
    lines = [fmt_line({k: v for k, v in r.items() if k != "split"}, "json") for r in rows
             if r["split"] == "train"][0::2]
    train0.write_bytes(("\ufeff\r\n" + "\r\n\r\n".join(lines) + "\r\n").encode())
    table, _ = read_klive(tmp_path)
    assert_matches(table, rows, {r["live_id"]: 9000 + r["live_id"] % 7 for r in rows})
    assert detect_shard_encoding(train0).line == "json"


def test_segments_numbered_from_shuffled_lines_with_gaps(tmp_path):
    rows = make_rows([7, 3], n_segments=4, gap=2)  # timestamps start+0,30,60(skipped)->90,120
    for r in rows:
        r["split"] = "train"
    write_shard(shard(tmp_path, "train", 3), rows[::2], "tsv", shuffle_seed=1)
    write_shard(shard(tmp_path, "train", 0), rows[1::2], "tsv", shuffle_seed=2)
    write_mapping(tmp_path, {7: 70, 3: 30})
    table, _ = read_klive(tmp_path, splits=("train",))
    d = table.to_pydict()
    assert d["live_id"] == [3] * 4 + [7] * 4
    assert d["segment"] == [0, 1, 3, 4] * 2
    assert d["streamer_id"] == [30] * 4 + [70] * 4
    assert d["timestamp"] == sorted(d["timestamp"][:4]) + sorted(d["timestamp"][4:])
    assert set(d["split"]) == {"train"}
    assert_matches(table, rows, {7: 70, 3: 30})


def test_split_column_and_subset_of_splits(tmp_path):
    make_release(tmp_path)
    table, _ = read_klive(tmp_path)
    d = table.to_pydict()
    assert {l: s for l, s in zip(d["live_id"], d["split"])} == {
        101: "train", 102: "train", 103: "train", 201: "test", 202: "test"}
    only_test, _ = read_klive(tmp_path, splits=("test",))
    assert set(only_test.column("live_id").to_pylist()) == {201, 202}
    assert set(only_test.column("split").to_pylist()) == {"test"}


@pytest.mark.parametrize("sep,header", [("\t", None), (",", "live_id,aid"), (" ", None), ("   ", "live_id aid"),
                                        ("\t", "live_id\tauthor_id")])
def test_live_id2aid_separators_and_header(tmp_path, sep, header):
    write_mapping(tmp_path, {5: 50, -1: 2**40, 3: 30}, sep=sep, header=header)
    lives, aids = read_live_id2aid(tmp_path / MAPPING_NAME)
    assert lives.dtype == np.int64 and aids.dtype == np.int64
    assert lives.tolist() == [-1, 3, 5] and aids.tolist() == [2**40, 30, 50]


def test_live_id2aid_repeated_identical_line_ok_conflict_fails(tmp_path):
    (tmp_path / MAPPING_NAME).write_text("1\t10\n2\t20\n1\t10\n")
    assert read_live_id2aid(tmp_path / MAPPING_NAME)[1].tolist() == [10, 20]
    (tmp_path / MAPPING_NAME).write_text("1\t10\n2\t20\n1\t11\n")
    with pytest.raises(DataError) as exc:
        read_live_id2aid(tmp_path / MAPPING_NAME)
    assert_error(exc, tmp_path / MAPPING_NAME, 3, "aid")
    (tmp_path / MAPPING_NAME).write_text("1\t10\n2\tabc\n")
    with pytest.raises(DataError) as exc:
        read_live_id2aid(tmp_path / MAPPING_NAME)
    assert_error(exc, tmp_path / MAPPING_NAME, 2, "aid")
    (tmp_path / MAPPING_NAME).write_text("1\t10\n2\t20\t5\n")
    with pytest.raises(DataError) as exc:
        read_live_id2aid(tmp_path / MAPPING_NAME)
    assert_error(exc, tmp_path / MAPPING_NAME, 2, "(line)")


def test_other_files_ignored_with_note(tmp_path, caplog):
    rows = make_release(tmp_path)
    (tmp_path / "train" / "README.txt").write_text("hello")
    (tmp_path / "train" / "0_test_score_infer_output.log.bak").write_text("garbage")
    with caplog.at_level(logging.INFO, logger="kuaihl_rec.data.klive"):
        table, _ = read_klive(tmp_path)
    assert "README.txt" in caplog.text and "ignoring" in caplog.text
    assert table.num_rows == len(rows)


def test_unknown_streamer_own_id(tmp_path, caplog):
    rows = make_release(tmp_path)
    write_mapping(tmp_path, {101: 1, 102: 2, 103: 3, 201: 4})  # 202 unmapped
    with caplog.at_level(logging.WARNING, logger="kuaihl_rec.data.klive"):
        table, _ = read_klive(tmp_path, unknown_streamer="own_id")
    assert "1 live_id(s)" in caplog.text and "202" in caplog.text
    assert_matches(table, rows, {101: 1, 102: 2, 103: 3, 201: 4, 202: -202})
    with pytest.raises(ValueError):
        read_klive(tmp_path, unknown_streamer="drop")


def test_convert_klive_writes_segment_table(tmp_path):
    rows = make_release(tmp_path / "klive", "json")
    out = convert_klive(tmp_path / "klive", tmp_path / "out", progress=True)
    manifest = read_manifest(out)
    assert manifest["source"] == "klive" and manifest["root"] == str(tmp_path / "klive")
    assert manifest["feature_sizes"] == {"visual_tokens": 1, "visual_dim": IMAGE_DIM, "text_dim": TEXT_DIM}
    assert manifest["n_rows"] == len(rows) and manifest["n_rooms"] == 5
    table = pa.concat_tables([pa.parquet.read_table(f) for f in segment_files(out)])
    assert_matches(table, rows, {r["live_id"]: 9000 + r["live_id"] % 7 for r in rows})


def test_many_rows_cross_chunks(tmp_path):
    """More rows than one parsing chunk, so chunked parsing and size checks span chunks."""
    ids = list(range(1, 1201))
    rows = make_rows(ids, n_segments=4)
    for r in rows:
        r["split"] = "train"
    write_shard(shard(tmp_path, "train", 0), rows, "tsv", "bracket-comma", shuffle_seed=5)
    write_mapping(tmp_path, {i: i // 10 for i in ids})
    table, _ = read_klive(tmp_path, splits=("train",))
    assert_matches(table, rows, {i: i // 10 for i in ids})
    # A wrong size deep in the file (in a later chunk) is still caught, with its line.
    lines = shard(tmp_path, "train", 0).read_text().splitlines()
    lines[4500] = lines[4500].replace("]", ", 0.5]", 1)
    shard(tmp_path, "train", 0).write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as exc:
        read_klive(tmp_path, splits=("train",))
    msg = assert_error(exc, shard(tmp_path, "train", 0), 4501, "image_feaure")
    assert f"{IMAGE_DIM + 1} comma-separated values" in msg
