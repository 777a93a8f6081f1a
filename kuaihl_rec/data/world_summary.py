"""Label statistics of a synthetic world (``world_summary.json``), to compare with KLive's.

The statistics are those of ``docs/WORLD.md`` section 8: LVTR quantiles and shares (all segments and
those with at least ``min_viewers`` viewers), CTR and viewer quantiles, state shares, highlight burst
lengths (runs of the highlight state within a room), text shift shares, rooms and segments per split,
cold-start counts, room lengths, the days the schedules span and the most rooms on air at once.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np
import pyarrow as pa

from kuaihl_rec.data.schema import SEGMENT_SECONDS, SPLITS
from kuaihl_rec.data.world_config import STATE_NAMES
from kuaihl_rec.data.world_profiles import HIGHLIGHT
from kuaihl_rec.data.world_tables import World

__all__ = ["highlight_runs", "summarize_world"]

QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
LABEL_THRESHOLDS = (0.2, 0.4, 0.6)


def _quantiles(x: np.ndarray, qs=QUANTILES) -> Dict[str, float]:
    """``{"q05": value, ...}`` of ``x`` [n] (empty for n = 0)."""
    if len(x) == 0:
        return {}
    vals = np.quantile(x, qs)
    return {f"q{int(round(q * 100)):02d}": round(float(v), 4) for q, v in zip(qs, vals)}


def _rounded_mean(x: np.ndarray, digits: int = 4) -> Optional[float]:
    return round(float(x.mean()), digits) if len(x) else None


def highlight_runs(flag: np.ndarray, live: np.ndarray) -> np.ndarray:
    """Lengths of runs of True in ``flag`` [N], runs broken at room boundaries (``live`` [N] live ids)."""
    if len(flag) == 0:
        return np.zeros(0, dtype=np.int64)
    new_room = np.r_[True, live[1:] != live[:-1]]
    starts = flag & (new_room | ~np.r_[False, flag[:-1]])
    ends = flag & (np.r_[new_room[1:], True] | ~np.r_[flag[1:], False])
    return np.flatnonzero(ends) - np.flatnonzero(starts) + 1


def _label_stats(x: np.ndarray) -> Dict[str, Any]:
    """Mean, quantiles and threshold shares of a label ``x`` [n] in [0, 1]."""
    return {
        "mean": _rounded_mean(x),
        "quantiles": _quantiles(x),
        "share_in_0.2_0.9": _rounded_mean((x >= 0.2) & (x <= 0.9)),
        "share_above": {str(th): _rounded_mean(x > th) for th in LABEL_THRESHOLDS},
        "count_above": {str(th): int((x > th).sum()) for th in LABEL_THRESHOLDS},
    }


def _label_summary(world: World) -> Dict[str, Any]:
    """LVTR, true LVTR, CTR and viewer statistics."""
    seg = world.segments
    min_viewers = world.config.min_viewers
    lvtr = seg.column("lvtr").to_numpy()
    ctr = seg.column("ctr").to_numpy()
    viewers = seg.column("n_viewers").to_numpy()
    eligible = viewers >= min_viewers
    return {
        "lvtr": _label_stats(lvtr),
        "lvtr_eligible": {"min_viewers": min_viewers, **_label_stats(lvtr[eligible])},
        "true_lvtr": _label_stats(world.truth.column("true_lvtr").to_numpy()),
        "ctr": {"mean": round(float(ctr.mean()), 4), "quantiles": _quantiles(ctr)},
        "viewers": {"mean": round(float(viewers.mean()), 1), "quantiles": _quantiles(viewers)},
        "share_below_min_viewers": round(float((~eligible).mean()), 4),
    }


def _content_summary(world: World) -> Dict[str, Any]:
    """State shares, highlight bursts and text alignment shares."""
    truth = world.truth
    live = world.segments.column("live_id").to_numpy()
    state = truth.column("state").to_numpy()
    runs = highlight_runs(state == HIGHLIGHT, live)
    shift = truth.column("text_shift").to_numpy()
    shift_values, shift_counts = np.unique(shift, return_counts=True)
    return {
        "state_share": {name: round(float((state == k).mean()), 4) for k, name in enumerate(STATE_NAMES)},
        "highlight_bursts": {
            "count": int(len(runs)),
            "mean_length": round(float(runs.mean()), 3) if len(runs) else None,
            "length_hist": {str(k): int(v) for k, v in zip(*np.unique(runs, return_counts=True))},
        },
        "text_shift_share": {str(int(k)): round(float(v) / len(shift), 4) for k, v in zip(shift_values, shift_counts)},
        "text_nonseq_share": round(float(truth.column("text_nonseq").to_numpy(zero_copy_only=False).mean()), 4),
    }


def _split_summary(world: World) -> Dict[str, Any]:
    """Rooms and segments per split, cold-start rooms and streamers."""
    rooms = world.rooms
    live = world.segments.column("live_id").to_numpy()
    split = np.asarray(rooms.column("split").to_pylist())
    cold = rooms.column("cold_start").to_numpy(zero_copy_only=False)
    room_ids = rooms.column("live_id").to_numpy()
    n_test = int((split == "test").sum())
    cold_test = int((cold & (split == "test")).sum())
    return {
        "rooms_per_split": {s: int((split == s).sum()) for s in SPLITS},
        "segments_per_split": {s: int(np.isin(live, room_ids[split == s]).sum()) for s in SPLITS},
        "cold_start_rooms": cold_test,
        "cold_start_share_of_test": round(float(cold_test / n_test), 4) if n_test else None,
        "cold_start_streamers": int(world.streamers.column("cold_start").to_numpy(zero_copy_only=False).sum()),
    }


def _max_on_air(start: np.ndarray, end: np.ndarray) -> int:
    """Most rooms on air at once, from room starts and ends [R] (an end at a start's time is counted first)."""
    events = np.concatenate([np.stack([start, np.ones_like(start)], 1), np.stack([end, -np.ones_like(end)], 1)])
    events = events[np.lexsort((events[:, 1], events[:, 0]))]
    on_air = np.cumsum(events[:, 1]) if len(events) else np.zeros(1)
    return int(on_air.max())


def _schedule_summary(rooms: pa.Table) -> Dict[str, Any]:
    """Room lengths, days spanned and the most rooms on air at once."""
    lengths = rooms.column("n_segments").to_numpy()
    start = rooms.column("start_timestamp").to_numpy()
    end = rooms.column("end_timestamp").to_numpy()
    return {
        "room_length_segments": {"mean": round(float(lengths.mean()), 2), "quantiles": _quantiles(lengths)},
        "room_length_hours_mean": round(float(lengths.mean()) * SEGMENT_SECONDS / 3600.0, 3),
        "days_spanned": round(float(end.max() - start.min()) / 86400.0, 2) if len(start) else 0.0,
        "max_rooms_on_air": _max_on_air(start, end),
    }


def summarize_world(world: World) -> Dict[str, Any]:
    """Label statistics of a world, to compare with KLive's (written as ``world_summary.json``)."""
    cfg = world.config
    return {
        "preset": cfg.preset,
        "seed": cfg.seed,
        "content_signal": cfg.content_signal,
        "n_segments": int(world.segments.num_rows),
        "n_rooms": int(world.rooms.num_rows),
        "n_streamers": int(world.streamers.num_rows),
        **_label_summary(world),
        **_content_summary(world),
        **_split_summary(world),
        **_schedule_summary(world.rooms),
    }
