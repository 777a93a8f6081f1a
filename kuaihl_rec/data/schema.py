"""The segment-data contract: one row per (live room, 30 s segment).

A *segment table* is a directory::

    DIR/
      dataset.json                 manifest: format, version, feature sizes, files, row counts
      segments/part-00000.parquet  one or more Parquet files (row groups of rooms)

or a single ``.parquet`` file (or a directory of them without manifest) whose sizes are read from
row 0 of the first file; every file of a table then has those widths.

Manifest (``dataset.json``): ``format`` = "kuaihl-segments", ``version`` = 1, ``feature_sizes``
= {visual_tokens, visual_dim, text_dim}, each an integer >= 1, ``files``: paths relative to DIR,
each inside DIR (no ``..``, no absolute path, no symlink out) and listed once; ``n_rows`` (total),
``file_rows`` (per file, in the order of ``files``) and ``n_rooms``, when present, equal what the
files hold. Other keys are provenance (``source``, ...).

Columns (name: Arrow type, meaning). Required:

    streamer_id : int64   the streamer (author) of the room
    live_id     : int64   the live room (one broadcast); rooms never share a live_id
    segment     : int32   0-based index of the 30 s segment inside the room (consecutive): every
                          room starts at 0 and counts up by 1; a room's rows are contiguous, in order
    timestamp   : int64   unix seconds at the start of the segment: the room's first timestamp
                          + 30 * segment (strictly 30 s per segment, no hidden pause)
    lvtr        : float32 long-view-through rate of the segment, in [0, 1]
    visual      : list<float32>  k_v * d_v visual features (k_v tokens of width d_v, row-major)
    text        : list<float32>  d_t text features (ASR ; comments)

Optional (validated when present):

    ctr             : float32 click-through rate of the segment, in [0, 1]
    n_exposures, n_viewers, n_long_viewers, n_comments, n_gifts, n_clicks,
    n_likes, n_follows, n_entries, n_exits : int64 counters, >= 0;
                      n_long_viewers <= n_viewers, n_clicks <= n_exposures
    split           : string, one of "train", "val", "test" (a split by live room)
    frame_paths     : list<string> raw frames of the segment (for ``kuaihl extract``)
    asr_text, comment_text : string raw text of the segment (for ``kuaihl extract``)

Everything hidden in a synthetic world (content states, true rates) lives in a
separate ground-truth sidecar and is never a column of this table.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import pyarrow as pa

FORMAT_NAME = "kuaihl-segments"
FORMAT_VERSION = 1
MANIFEST_NAME = "dataset.json"
SEGMENTS_DIR = "segments"
SEGMENT_SECONDS = 30

ID_COLUMNS: Tuple[str, ...] = ("streamer_id", "live_id", "segment", "timestamp")
LABEL_COLUMNS: Tuple[str, ...] = ("lvtr", "ctr")
FEATURE_COLUMNS: Tuple[str, ...] = ("visual", "text")
COUNTER_COLUMNS: Tuple[str, ...] = (
    "n_exposures",
    "n_viewers",
    "n_long_viewers",
    "n_comments",
    "n_gifts",
    "n_clicks",
    "n_likes",
    "n_follows",
    "n_entries",
    "n_exits",
)
# A long view lasts more than LONG_VIEW_SECONDS, so a segment's LVTR (and n_long_viewers) is
# complete only that long after the segment ends: LABEL_DELAY_SEGMENTS["lvtr"] = ceil(60 / 30) = 2
# segments; a click is known at once. See WindowConfig.label_delay and ranking.scores.
LONG_VIEW_SECONDS = 60
LABEL_DELAY_SEGMENTS = {"lvtr": -(-LONG_VIEW_SECONDS // SEGMENT_SECONDS), "ctr": 0}

# The eight counters of ContentCTR 4.3.2 (what the ID baselines read, and the content model's
# engagement token): known when the segment ends. Not n_viewers / n_long_viewers: their ratio is
# the segment's LVTR, whose 60 s outcome is complete only two segments later.
PAPER_COUNTER_COLUMNS: Tuple[str, ...] = tuple(c for c in COUNTER_COLUMNS if c not in ("n_viewers", "n_long_viewers"))
RAW_MEDIA_COLUMNS: Tuple[str, ...] = ("frame_paths", "asr_text", "comment_text")
SPLITS: Tuple[str, ...] = ("train", "val", "test")

REQUIRED_TYPES: Dict[str, pa.DataType] = {
    "streamer_id": pa.int64(),
    "live_id": pa.int64(),
    "segment": pa.int32(),
    "timestamp": pa.int64(),
    "lvtr": pa.float32(),
    "visual": pa.list_(pa.float32()),
    "text": pa.list_(pa.float32()),
}
OPTIONAL_TYPES: Dict[str, pa.DataType] = {
    "ctr": pa.float32(),
    **{name: pa.int64() for name in COUNTER_COLUMNS},
    "split": pa.string(),
    "frame_paths": pa.list_(pa.string()),
    "asr_text": pa.string(),
    "comment_text": pa.string(),
}
ALL_TYPES: Dict[str, pa.DataType] = {**REQUIRED_TYPES, **OPTIONAL_TYPES}


@dataclasses.dataclass(frozen=True)
class FeatureSizes:
    """Widths of the feature columns: ``visual`` holds ``visual_tokens * visual_dim`` floats."""

    visual_tokens: int
    visual_dim: int
    text_dim: int

    @property
    def visual_len(self) -> int:
        return self.visual_tokens * self.visual_dim


def arrow_schema(columns) -> pa.Schema:
    """The Arrow schema for the given column names, in contract order."""
    order = [c for c in ALL_TYPES if c in set(columns)]
    return pa.schema([pa.field(c, ALL_TYPES[c]) for c in order])
