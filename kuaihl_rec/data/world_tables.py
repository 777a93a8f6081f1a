"""Arrow tables of the synthetic world: the segment table models see and the ground-truth sidecar.

Implements ``docs/WORLD.md`` section 1:

- ``live_id = 1_000_000 + rank of the room's start``, ``streamer_id = 10_000 + streamer index``;
- ``lvtr = n_long_viewers / n_viewers`` and ``ctr = n_clicks / n_exposures`` (float32; both
  denominators are floored at 1 by the audience);
- ``visual`` / ``text`` are ``list<float32>`` columns; the columns and their order come from
  ``kuaihl_rec.data.schema.arrow_schema``;
- the truth sidecar holds the per-segment hidden state and rates (row-aligned with the segment
  table), the hidden streamer parameters and the room schedules.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, Optional, Tuple

import numpy as np
import pyarrow as pa

from kuaihl_rec.data.schema import COUNTER_COLUMNS, SEGMENT_SECONDS, SPLITS, FeatureSizes, arrow_schema
from kuaihl_rec.data.world_audience import Audience
from kuaihl_rec.data.world_config import STATE_NAMES, WorldConfig
from kuaihl_rec.data.world_features import TextFeatures
from kuaihl_rec.data.world_latent import HiddenContent, StreamerParams
from kuaihl_rec.data.world_layout import SegmentLayout
from kuaihl_rec.data.world_structure import WorldStructure

__all__ = [
    "LIVE_ID_BASE",
    "STREAMER_ID_BASE",
    "World",
    "list_column",
    "room_table",
    "segment_table",
    "streamer_table",
    "truth_sidecar",
    "truth_table",
]

STREAMER_ID_BASE = 10_000
LIVE_ID_BASE = 1_000_000
LIST_CHUNK_ROWS = 1 << 20  # rows per chunk of a list column (int32 offsets stay small)
ATTRACT_LOGIT_FORMULA = b"lvtr_base_logit + state_term + appeal(streamer) + quality_term + taste_term + trend"


@dataclasses.dataclass
class World:
    """A generated world.

    segments:  the segment table models see (``kuaihl_rec.data.schema`` columns, sorted by live_id, segment)
    truth:     hidden per-segment ground truth, row-aligned with ``segments``
    streamers: hidden per-streamer parameters
    rooms:     per-room schedule (start / end, split, cold start)
    sizes:     feature sizes of ``visual`` / ``text``
    config:    the resolved :class:`WorldConfig`
    media:     the raw media (``world_media.WorldMedia``) when ``config.raw_media``, else None
    """

    segments: pa.Table
    truth: pa.Table
    streamers: pa.Table
    rooms: pa.Table
    sizes: FeatureSizes
    config: WorldConfig
    timings: Dict[str, float] = dataclasses.field(default_factory=dict)
    media: Optional[Any] = None  # a world_media.WorldMedia when config.raw_media (frames are written by write_world)


def list_column(flat: np.ndarray) -> pa.ChunkedArray:
    """A ``list<float32>`` column from an [N, D] float32 buffer, without Python lists."""
    n_rows, dim = flat.shape
    chunks = []
    for lo in range(0, max(n_rows, 1), LIST_CHUNK_ROWS):
        part = flat[lo : lo + LIST_CHUNK_ROWS]
        offsets = pa.array(np.arange(0, (len(part) + 1) * dim, dim, dtype=np.int32))
        chunks.append(pa.ListArray.from_arrays(offsets, pa.array(part.reshape(-1), type=pa.float32())))
    return pa.chunked_array(chunks, type=pa.list_(pa.float32()))


def _split_names() -> pa.Array:
    return pa.array(list(SPLITS), type=pa.string())


def _live_ids(n_rooms: int) -> np.ndarray:
    return LIVE_ID_BASE + np.arange(n_rooms, dtype=np.int64)


def _streamer_ids(n_streamers: int) -> np.ndarray:
    return STREAMER_ID_BASE + np.arange(n_streamers, dtype=np.int64)


def segment_table(
    structure: WorldStructure,
    layout: SegmentLayout,
    audience: Audience,
    visual: np.ndarray,
    text: np.ndarray,
) -> pa.Table:
    """The segment table (N rows, ``arrow_schema`` columns); ``visual`` [N, Dv], ``text`` [N, Dt] float32."""
    live_ids = _live_ids(len(structure.room_length))
    streamer_ids = _streamer_ids(len(structure.streamer_category))
    room = layout.room
    columns = {
        "streamer_id": pa.array(streamer_ids[layout.streamer]),
        "live_id": pa.array(live_ids[room]),
        "segment": pa.array(layout.segment),
        "timestamp": pa.array(layout.timestamp.astype(np.int64)),
        "lvtr": pa.array((audience.long_viewers / audience.viewers).astype(np.float32)),
        "visual": list_column(visual),
        "text": list_column(text),
        "ctr": pa.array((audience.clicks / audience.exposures).astype(np.float32)),
        # counter n_x is Audience.x (viewers and exits are int64 already)
        **{name: pa.array(np.asarray(getattr(audience, name[2:]), dtype=np.int64)) for name in COUNTER_COLUMNS},
        "split": _split_names().take(pa.array(structure.room_split[room].astype(np.int32))),
    }
    schema = arrow_schema(columns)
    return pa.Table.from_arrays([columns[field.name] for field in schema], schema=schema)


# float32 columns of the truth sidecar, in their column order (attributes of HiddenContent)
_TRUTH_FLOAT_COLUMNS = (
    "attract_logit", "true_lvtr", "true_ctr", "true_retention", "state_term", "quality_term", "taste_term",
)


def truth_table(layout: SegmentLayout, hidden: HiddenContent, text: TextFeatures) -> pa.Table:
    """Hidden per-segment ground truth, row-aligned with the segment table (N rows)."""
    live_ids = _live_ids(len(layout.offsets))
    metadata = {b"state_names": json.dumps(list(STATE_NAMES)).encode(), b"attract_logit": ATTRACT_LOGIT_FORMULA}
    return pa.table(
        {
            "live_id": pa.array(live_ids[layout.room]),
            "segment": pa.array(layout.segment),
            "state": pa.array(hidden.state),
            **{name: pa.array(getattr(hidden, name).astype(np.float32)) for name in _TRUTH_FLOAT_COLUMNS},
            "trend": pa.array(hidden.trend),
            "text_shift": pa.array(text.shift),
            "text_nonseq": pa.array(text.nonsequential),
        }
    ).replace_schema_metadata(metadata)


def streamer_table(structure: WorldStructure, params: StreamerParams) -> pa.Table:
    """Hidden per-streamer parameters (S rows)."""
    talent = {
        f"talent_{name}": pa.array(params.talent[:, k].astype(np.float32)) for k, name in enumerate(STATE_NAMES)
    }
    categories = structure.categories
    return pa.table(
        {
            "streamer_id": pa.array(_streamer_ids(len(structure.streamer_category))),
            "category": pa.array([categories[c] for c in structure.streamer_category], type=pa.string()),
            "appeal": pa.array(params.appeal.astype(np.float32)),
            **talent,
            "popularity": pa.array(params.popularity.astype(np.float32)),
            "ctr_cover": pa.array(params.ctr_cover.astype(np.float32)),
            "preferred_start_hour": pa.array(structure.preferred_hour.astype(np.float32)),
            "n_rooms": pa.array(structure.rooms_per_streamer.astype(np.int64)),
            "cold_start": pa.array(structure.cold_streamer),
        }
    )


def room_table(structure: WorldStructure) -> pa.Table:
    """Per-room schedule, split and cold start (R rows, live_id order)."""
    room_streamer = structure.room_streamer
    lengths = structure.room_length
    category_names = [structure.categories[structure.streamer_category[s]] for s in room_streamer]
    return pa.table(
        {
            "live_id": pa.array(_live_ids(len(lengths))),
            "streamer_id": pa.array(_streamer_ids(len(structure.streamer_category))[room_streamer]),
            "category": pa.array(category_names, type=pa.string()),
            "start_timestamp": pa.array(structure.room_start),
            "end_timestamp": pa.array(structure.room_start + SEGMENT_SECONDS * lengths),
            "n_segments": pa.array(lengths.astype(np.int64)),
            "split": _split_names().take(pa.array(structure.room_split.astype(np.int32))),
            "cold_start": pa.array(structure.cold_streamer[room_streamer]),
        }
    )


def truth_sidecar(
    structure: WorldStructure,
    layout: SegmentLayout,
    params: StreamerParams,
    hidden: HiddenContent,
    text: TextFeatures,
) -> Tuple[pa.Table, pa.Table, pa.Table]:
    """The ground-truth sidecar: ``(truth [N rows], streamers [S rows], rooms [R rows])``."""
    return truth_table(layout, hidden, text), streamer_table(structure, params), room_table(structure)
