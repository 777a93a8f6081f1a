"""Tests for the KLive release reader (kuaihl_rec.data.klive) on small fixture directories."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pyarrow as pa
import pytest

from kuaihl_rec.data.io import DataError, read_manifest, segment_files
from kuaihl_rec.data.klive import (
    MAPPING_NAME,
    convert_klive,
    detect_shard_encoding,
    read_klive,
    read_live_id2aid,
)
from kuaihl_rec.data.schema import REQUIRED_TYPES, FeatureSizes
from kuaihl_rec.data.validate import validate_path

IMAGE_DIM = 4
TEXT_DIM = 3
T0 = 1_650_000_000  # a multiple of 30


# ----------------------------------------------------------------------------- fixtures


def make_rows(live_ids: Sequence[int], n_segments: int = 3, seed: int = 0, gap: Optional[int] = None) -> List[Dict]:
    """Rows with float32-exact values; ``gap`` skips that segment index in every room."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, live in enumerate(live_ids):
        start = T0 + 30 * 7 * k
        for s in range(n_segments + (gap is not None)):
            if s == gap:
                continue
            rows.append({
                "live_id": live,
                "timestamp": start + 30 * s,
                "lvtr": float(np.float32(rng.random())),
                "image_feaure": [float(x) for x in rng.standard_normal(IMAGE_DIM).astype(np.float32)],
                "text_feaure": [float(x) for x in rng.standard_normal(TEXT_DIM).astype(np.float32)],
            })
    return rows


def fmt_vector(values: Sequence[float], style: str) -> str:
    if style == "comma":
        return ",".join(repr(v) for v in values)
    if style == "space":
        return " ".join(repr(v) for v in values)
    if style == "bracket-comma":
        return "[" + ", ".join(repr(v) for v in values) + "]"
    if style == "bracket-space":
        return "[" + " ".join(repr(v) for v in values) + "]"
    raise AssertionError(style)


FIELDS = ("live_id", "timestamp", "lvtr", "image_feaure", "text_feaure")


def fmt_line(row: Dict, encoding: str, style: str = "comma", columns: Sequence[str] = FIELDS) -> str:
    if encoding == "json":
        return json.dumps(row)
    if encoding == "pydict":
        return repr(row)
    cells = []
    for c in columns:
        v = row.get(c, "x")
        cells.append(fmt_vector(v, style) if c in ("image_feaure", "text_feaure") else
                     (repr(v) if isinstance(v, float) else str(v)))
    return "\t".join(cells)


def write_shard(path: Path, rows: Sequence[Dict], encoding: str, style: str = "comma",
                columns: Sequence[str] = FIELDS, shuffle_seed: Optional[int] = None) -> None:
    rows = list(rows)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(rows)
    lines = []
    if encoding == "tsv-header":
        lines.append("\t".join(columns))
    lines += [fmt_line(r, encoding, style, columns) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def write_mapping(root: Path, mapping: Dict[int, int], sep: str = "\t", header: Optional[str] = None) -> None:
    root.mkdir(parents=True, exist_ok=True)
    lines = [header] if header else []
    lines += [f"{k}{sep}{v}" for k, v in mapping.items()]
    (root / MAPPING_NAME).write_text("\n".join(lines) + "\n")


def shard(root: Path, split: str, i: int = 0) -> Path:
    return root / split / f"{i}_test_score_infer_output.log"


def make_release(root: Path, encoding: str = "tsv", style: str = "comma", n_shards: int = 2,
                 train_ids=(101, 102, 103), test_ids=(201, 202), columns: Sequence[str] = FIELDS) -> List[Dict]:
    """A release with rooms spread over shards (lines shuffled); returns all rows with their split."""
    all_rows = []
    mapping = {}
    for split, ids in (("train", train_ids), ("test", test_ids)):
        rows = make_rows(ids, seed=len(split))
        for r in rows:
            mapping[r["live_id"]] = 9000 + r["live_id"] % 7
        for i in range(n_shards):
            part = rows[i::n_shards]
            write_shard(shard(root, split, i), part, encoding, style, columns, shuffle_seed=i)
        all_rows += [dict(r, split=split) for r in rows]
    write_mapping(root, mapping)
    return all_rows


def assert_matches(table: pa.Table, rows: List[Dict], streamer: Dict[int, int]) -> None:
    expected = sorted(rows, key=lambda r: (r["live_id"], r["timestamp"]))
    d = table.to_pydict()
    assert d["live_id"] == [r["live_id"] for r in expected]
    assert d["timestamp"] == [r["timestamp"] for r in expected]
    assert d["split"] == [r["split"] for r in expected]
    assert d["streamer_id"] == [streamer[r["live_id"]] for r in expected]
    np.testing.assert_array_equal(np.array(d["lvtr"], np.float32), np.array([r["lvtr"] for r in expected], np.float32))
    np.testing.assert_array_equal(np.array(d["visual"], np.float32),
                                  np.array([r["image_feaure"] for r in expected], np.float32))
    np.testing.assert_array_equal(np.array(d["text"], np.float32),
                                  np.array([r["text_feaure"] for r in expected], np.float32))


def assert_error(exc: pytest.ExceptionInfo, path: Path, line: Optional[int], field: str) -> str:
    msg = str(exc.value)
    assert str(path) in msg, msg
    if line is not None:
        assert f"line {line}" in msg, msg
    assert repr(field) in msg, msg
    assert "expected" in msg and "found" in msg, msg
    return msg


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
