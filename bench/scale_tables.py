"""Cheap synthetic segment tables for bench/bench_scale.py (labelled synthetic: random content).

A table of N segments is written file by file (``rows_per_file`` rows each, Parquet row groups of
``row_group`` rows), so writing 5 M segments needs one file's rows in memory, not the table. It
obeys the segment-data contract (kuaihl_rec/data/schema.py): rooms of lognormal length (mean about 120
segments, clipped to [10, 720], like the synthetic world), numbered from 0, 30 s apart, one
streamer per room, a split column by room (80 / 10 / 10), LVTR in [0, 1], counters with
``n_long_viewers <= n_viewers`` and ``n_clicks <= n_exposures``. Features are random values on a
grid of 1/8 (so zstd packs them to about 4 bits each): the bench measures memory and speed, not
learning.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pyarrow as pa

from kuaihl_rec.data.io import atomic_write_json, atomic_write_parquet
from kuaihl_rec.data.schema import COUNTER_COLUMNS, FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, FeatureSizes
from kuaihl_rec.data.windows import hash_split

SMALL_SIZES = FeatureSizes(visual_tokens=1, visual_dim=64, text_dim=64)  # the default world's (the small preset)
PAPER_SIZES = FeatureSizes(visual_tokens=3, visual_dim=512, text_dim=768)  # 3 x 512 visual + 768 text


def room_lengths(n_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Room lengths summing to exactly ``n_segments`` (the last room absorbs the remainder, >= 10)."""
    lengths: List[np.ndarray] = []
    total = 0
    while total < n_segments:
        draw = np.clip(np.rint(rng.lognormal(np.log(120) - 0.18, 0.6, size=4096)), 10, 720).astype(np.int64)
        lengths.append(draw)
        total += int(draw.sum())
    out = np.concatenate(lengths)
    out = out[np.cumsum(out) <= n_segments]
    rest = n_segments - int(out.sum())
    if rest:
        if rest < 10 and len(out):
            out[-1] += rest
        else:
            out = np.r_[out, rest]
    return out


def _vectors(rng: np.random.Generator, n: int, width: int) -> pa.Array:
    values = (rng.integers(-8, 8, size=n * width, dtype=np.int8).astype(np.float32) / 8.0)
    offsets = np.arange(0, n * width + 1, width, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def _file_table(lengths: np.ndarray, first_room: int, sizes: FeatureSizes, rng: np.random.Generator) -> pa.Table:
    n = int(lengths.sum())
    live = np.repeat(np.arange(first_room, first_room + len(lengths), dtype=np.int64) + 10_000_000, lengths)
    streamer = np.repeat(rng.integers(0, max(len(lengths) // 3, 1) + 50_000, size=len(lengths)), lengths)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    segment = (np.arange(n) - np.repeat(starts, lengths)).astype(np.int32)
    t0 = np.repeat(1_700_000_000 + rng.integers(0, 10_000_000, size=len(lengths)), lengths)
    viewers = rng.integers(30, 600, size=n)
    lvtr = rng.beta(2.0, 5.0, size=n).astype(np.float32)
    exposures = rng.integers(100, 5000, size=n)
    counters = {
        "n_exposures": exposures, "n_viewers": viewers, "n_long_viewers": np.floor(lvtr * viewers).astype(np.int64),
        "n_clicks": rng.integers(0, 100, size=n),
    }
    for name in COUNTER_COLUMNS:
        counters.setdefault(name, rng.integers(0, 50, size=n))
    room_split = hash_split(np.arange(first_room, first_room + len(lengths), dtype=np.int64) + 10_000_000)
    return pa.table({
        "streamer_id": pa.array(streamer.astype(np.int64)),
        "live_id": pa.array(live),
        "segment": pa.array(segment, pa.int32()),
        "timestamp": pa.array((t0 + 30 * segment).astype(np.int64)),
        "lvtr": pa.array(lvtr, pa.float32()),
        "visual": _vectors(rng, n, sizes.visual_len),
        "text": _vectors(rng, n, sizes.text_dim),
        **{name: pa.array(counters[name].astype(np.int64)) for name in COUNTER_COLUMNS},
        "split": pa.array(np.repeat(room_split, lengths).astype(str)),
    })


def write_table(out: Path, n_segments: int, sizes: FeatureSizes, seed: int = 0, rows_per_file: int = 250_000,
                row_group: int = 16_384) -> Tuple[int, int]:
    """Write a contract table of ``n_segments`` segments into ``out``; returns (rows, rooms)."""
    rng = np.random.default_rng(seed)
    lengths = room_lengths(n_segments, rng)
    cut = np.cumsum(lengths) // rows_per_file  # a file ends at a room boundary
    files, file_rows = [], []
    first_room = 0
    for i, part in enumerate(np.unique(cut)):
        mine = lengths[cut == part]
        table = _file_table(mine, first_room, sizes, rng)
        name = f"segments/part-{i:05d}.parquet"
        atomic_write_parquet(out / name, table, compression="zstd", row_group_size=row_group)
        files.append(name)
        file_rows.append(table.num_rows)
        first_room += len(mine)
    atomic_write_json(out / MANIFEST_NAME, {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "feature_sizes": dataclasses.asdict(sizes),
        "files": files, "file_rows": file_rows, "n_rows": int(sum(file_rows)), "n_rooms": int(len(lengths)),
        "source": "bench/scale_tables.py (synthetic, random content)",
    })
    return int(sum(file_rows)), int(len(lengths))
