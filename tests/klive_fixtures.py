"""Small KLive releases written by hand for the reader tests (tests/test_klive.py, tests/test_klive_errors.py):
rows, line encodings, vector styles, shards, the live_id -> streamer mapping, and assertion helpers."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pyarrow as pa
import pytest

from kuaihl_rec.data.klive import (
    MAPPING_NAME,
)

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
