"""Small hand-made segment tables for tests (no synthetic world needed)."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import pyarrow as pa

from kuaihl_rec.data.schema import COUNTER_COLUMNS, FeatureSizes, arrow_schema


def make_table(
    room_lengths: Sequence[int] = (30, 8, 25),
    sizes: FeatureSizes = FeatureSizes(visual_tokens=1, visual_dim=4, text_dim=3),
    splits: Optional[Sequence[str]] = None,
    seed: int = 0,
    viewers: Optional[np.ndarray] = None,
) -> pa.Table:
    """Rooms with live_id 100+r, streamer 7+r%2, features encoding (live_id, segment) so tests can
    tell which row landed where: visual[0] = live_id, visual[1] = segment, text[0] = segment."""
    rng = np.random.default_rng(seed)
    cols: Dict[str, list] = {k: [] for k in ("streamer_id", "live_id", "segment", "timestamp", "lvtr", "ctr", "split")}
    vis, txt = [], []
    for r, length in enumerate(room_lengths):
        seg = np.arange(length)
        cols["streamer_id"].append(np.full(length, 7 + r % 2))
        cols["live_id"].append(np.full(length, 100 + r))
        cols["segment"].append(seg)
        cols["timestamp"].append(1_700_000_000 + 3600 * r + 30 * seg)
        cols["lvtr"].append(rng.uniform(0.1, 0.9, length))
        cols["ctr"].append(rng.uniform(0.0, 0.2, length))
        cols["split"].append(np.full(length, (splits[r] if splits else "train"), dtype=object))
        v = rng.normal(size=(length, sizes.visual_len)).astype(np.float32)
        v[:, 0], v[:, 1] = 100 + r, seg
        t = rng.normal(size=(length, sizes.text_dim)).astype(np.float32)
        t[:, 0] = seg
        vis.append(v)
        txt.append(t)
    n = int(sum(room_lengths))
    data = {k: np.concatenate(v) for k, v in cols.items()}
    vis_flat, txt_flat = np.concatenate(vis).ravel(), np.concatenate(txt).ravel()
    counters = {c: rng.integers(0, 50, n) for c in COUNTER_COLUMNS}
    counters["n_exposures"] = rng.integers(500, 1000, n)
    counters["n_viewers"] = viewers if viewers is not None else rng.integers(100, 400, n)
    counters["n_long_viewers"] = (counters["n_viewers"] * data["lvtr"]).astype(np.int64)
    counters["n_clicks"] = (counters["n_exposures"] * data["ctr"]).astype(np.int64)
    arrays = {
        "streamer_id": pa.array(data["streamer_id"], pa.int64()),
        "live_id": pa.array(data["live_id"], pa.int64()),
        "segment": pa.array(data["segment"], pa.int32()),
        "timestamp": pa.array(data["timestamp"], pa.int64()),
        "lvtr": pa.array(data["lvtr"], pa.float32()),
        "visual": pa.ListArray.from_arrays(pa.array(np.arange(n + 1) * sizes.visual_len, pa.int32()), pa.array(vis_flat, pa.float32())),
        "text": pa.ListArray.from_arrays(pa.array(np.arange(n + 1) * sizes.text_dim, pa.int32()), pa.array(txt_flat, pa.float32())),
        "ctr": pa.array(data["ctr"], pa.float32()),
        **{c: pa.array(counters[c], pa.int64()) for c in COUNTER_COLUMNS},
        "split": pa.array(list(data["split"]), pa.string()),
    }
    schema = arrow_schema(arrays)
    return pa.table({f.name: arrays[f.name] for f in schema}, schema=schema)
