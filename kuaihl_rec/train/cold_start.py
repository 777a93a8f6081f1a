"""Warm and cold-start slices of a scored set (docs/MODEL.md, "Unseen streamers").

A scored segment is *cold-start* when its streamer had no room in the training data, so the model
meets the streamer for the first time (the content model's Perceiver query is then the unknown row
of the streamer table, the ID baselines' streamer embedding an empty bag). Which segments are
cold-start is read, in order of preference, from

* ``DATA/truth/rooms.parquet`` (a synthetic world's sidecar): its per-room ``cold_start`` flag
  (``source = "truth"``);
* otherwise the run's streamer vocabulary: a streamer outside it is cold (``source = "vocabulary"``;
  on a world with truth the two agree, as every warm streamer keeps a training room);
* neither, when ids are hashed (``stream.id_hash_buckets > 0``) and there is no sidecar: a hashed
  vocabulary maps every id to a trained row, so it cannot tell a new streamer apart. The slices are
  then unavailable (``source = "none"``: both taus NaN, both counts 0), not "everything warm".

The slices are the pooled Kendall tau-b (ContentCTR eq. 15) of each part::

    tau_warm = tau_b(y[~cold], p[~cold])      tau_cold = tau_b(y[cold], p[cold])

(NaN for a part with fewer than 2 segments or a constant side), with the segment counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import pyarrow.parquet as pq

from kuaihl_rec.data.catalog import HashedVocab, Vocab
from kuaihl_rec.data.io import DataError
from kuaihl_rec.metrics.rank_correlation import _tau_b_checked

__all__ = ["SLICE_METRICS", "cold_start_mask", "slice_metrics"]

# The slice keys every report shows next to REPORTED_METRICS (``kuaihl eval``, ``kuaihl compare``).
SLICE_METRICS = ("tau_warm", "tau_cold")


def _truth_flags(data_dir: Path, live_id: np.ndarray) -> Optional[np.ndarray]:
    """The ``cold_start`` flag of each room in ``live_id`` from the truth sidecar, or None without one."""
    path = Path(data_dir) / "truth" / "rooms.parquet"
    if not path.exists():
        return None
    table = pq.read_table(path)
    missing = [c for c in ("live_id", "cold_start") if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected live_id and cold_start per room")
    rooms = table.column("live_id").to_numpy().astype(np.int64)
    flags = table.column("cold_start").to_numpy(zero_copy_only=False).astype(bool)
    order = np.argsort(rooms, kind="stable")
    rooms, flags = rooms[order], flags[order]
    live = np.asarray(live_id, dtype=np.int64)
    pos = np.minimum(np.searchsorted(rooms, live), max(len(rooms) - 1, 0))
    found = (rooms[pos] == live) if len(rooms) else np.zeros(len(live), dtype=bool)
    if not found.all():
        first = int(live[~found][0])
        raise DataError(f"{path}: room live_id={first} (and {int((~found).sum()) - 1} more scored) has no row")
    return flags[pos]


def cold_start_mask(
    data_dir: Path, vocab: Vocab, live_id: np.ndarray, streamer_id: np.ndarray
) -> Tuple[np.ndarray, str]:
    """``(cold [n] bool, source)``: which scored segments are cold-start, and where that came from
    (``"truth"``, ``"vocabulary"`` or ``"none"``: unknown, all False; see the module docstring)."""
    flags = _truth_flags(data_dir, live_id)
    if flags is not None:
        return flags, "truth"
    if isinstance(vocab, HashedVocab):
        return np.zeros(len(np.asarray(streamer_id)), dtype=bool), "none"
    return vocab.lookup(np.asarray(streamer_id, dtype=np.int64)) == 0, "vocabulary"


def slice_metrics(labels: np.ndarray, scores: np.ndarray, cold: np.ndarray, source: str) -> Dict[str, Any]:
    """``{"tau_warm", "tau_cold", "n_segments_warm", "n_segments_cold", "cold_start_source"}``."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(scores, dtype=np.float64)
    cold = np.asarray(cold, dtype=bool)
    if not (y.shape == p.shape == cold.shape):
        raise ValueError(f"labels {y.shape}, scores {p.shape} and cold {cold.shape} must have one shape")
    if source == "none":  # which segments are cold is unknown: neither slice can be reported
        return {"tau_warm": float("nan"), "tau_cold": float("nan"), "n_segments_warm": 0, "n_segments_cold": 0,
                "cold_start_source": source}
    return {
        "tau_warm": _tau_b_checked(y[~cold], p[~cold]),
        "tau_cold": _tau_b_checked(y[cold], p[cold]),
        "n_segments_warm": int((~cold).sum()),
        "n_segments_cold": int(cold.sum()),
        "cold_start_source": source,
    }
