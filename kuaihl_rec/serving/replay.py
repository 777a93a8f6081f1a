"""``kuaihl replay``: stream a segment table's rooms through the streaming scorer, tick by tick.

The rooms of one split (default: the test rooms) are replayed in time order, as a live platform
would see them: segment t of a room closes at ``timestamp_t + 30 s``; a tick gathers every segment
that closes in the same 30 s interval of the clock (``tick = ceil((timestamp + 30) / 30)``), so
rooms start and end at their own times and a tick holds one closed segment per room on air. After
a room's last segment the room is ended (evicted). Each tick is one
:meth:`StreamingScorer.tick`, i.e. one batch.

Output (``OUT/``):

* ``predictions.parquet``: one row per (live id, target segment) that exists in the table, in the
  format ``kuaihl eval --predictions`` writes (``live_id, streamer_id, segment, label, score``; the
  segment is the *target* t + 1 scored after segment t closed) plus ``label_mask`` (the target
  passes the viewer filter ``min_viewers``: the rows ``kuaihl eval`` scores) and
  ``known_streamer``. ``kuaihl ab`` accepts it as a term source. The score after a room's last
  segment predicts a segment that never comes and is not written (counted).
* ``replay.json``: ticks, rooms per tick, rooms scored per second, per-tick latency percentiles,
  the scorer's counters and where the output went.

Interruption: ``stop_after_ticks=K`` saves the scorer state and the rows so far into
``OUT/replay_state.pt`` after K ticks and returns; ``resume=True`` continues from it (in a new
process as well) and writes exactly the predictions of an uninterrupted replay. The state names
its run, data and split; a different one is refused.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pyarrow as pa

from kuaihl_rec.data.io import DataError, atomic_write_json, atomic_write_parquet
from kuaihl_rec.data.schema import SEGMENT_SECONDS, SPLITS
from kuaihl_rec.data.validate import load_segments
from kuaihl_rec.data.windows import SegmentArrays
from kuaihl_rec.serving.inference import load_inference
from kuaihl_rec.serving.inputs import ClosedSegments
from kuaihl_rec.serving.stream import StreamingScorer

logger = logging.getLogger(__name__)

STATE_NAME = "replay_state.pt"
PREDICTION_COLUMNS = ("live_id", "streamer_id", "segment", "label", "score", "label_mask", "known_streamer")


@dataclasses.dataclass
class ReplayPlan:
    """The split's rows in tick order: ``order[bounds[k]:bounds[k+1]]`` are the rows closing at tick k."""

    arr: SegmentArrays
    rows: np.ndarray  # table rows of the split, sorted by (tick, live_id)
    bounds: np.ndarray  # [ticks + 1]
    tick_time: np.ndarray  # [ticks] unix seconds at which the tick's segments have closed
    last_row: np.ndarray  # bool per table row: the room's last segment
    observed: np.ndarray  # float32 per table row: label of segment t - label_delay, -1 when none
    target_row: np.ndarray  # int64 per table row: the row of segment t + 1 of the same room, -1 when none

    @property
    def n_ticks(self) -> int:
        return len(self.tick_time)


def plan_replay(data_dir: Path, window_config: Any, split: str, label_delay: int) -> ReplayPlan:
    """Read the table and order the ``split`` rooms' segments into ticks."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    table, sizes, _ = load_segments(data_dir, min_viewers=window_config.min_viewers)
    arr = SegmentArrays.from_table(table, sizes, window_config)  # sorted by (live_id, segment)
    n_rows = len(arr.live_id)
    same_next = np.r_[arr.live_id[1:] == arr.live_id[:-1], False]
    target_row = np.where(same_next, np.arange(n_rows) + 1, -1)
    back = np.arange(n_rows) - label_delay
    ok = back >= 0
    backc = np.maximum(back, 0)
    ok &= (arr.live_id[backc] == arr.live_id) & (arr.segment - arr.segment[backc] == label_delay)
    observed = np.where(ok, arr.label[backc], -1.0).astype(np.float32)
    rows = np.flatnonzero(arr.split == split)
    if len(rows) == 0:
        raise DataError(f"{data_dir}: split {split!r} has no rows to replay")
    close = arr.timestamp[rows] + SEGMENT_SECONDS
    tick = -(-close // SEGMENT_SECONDS)
    order = np.lexsort((arr.live_id[rows], tick))
    rows, tick = rows[order], tick[order]
    starts = np.flatnonzero(np.r_[True, tick[1:] != tick[:-1]])
    bounds = np.r_[starts, len(rows)]
    return ReplayPlan(arr=arr, rows=rows, bounds=bounds, tick_time=tick[starts] * SEGMENT_SECONDS, last_row=~same_next,
                      observed=observed, target_row=target_row)


def tick_records(plan: ReplayPlan, k: int) -> ClosedSegments:
    """The segments that close at tick ``k`` as the scorer's input."""
    a = plan.arr
    r = plan.rows[plan.bounds[k] : plan.bounds[k + 1]]
    return ClosedSegments(
        live_id=a.live_id[r], streamer_id=a.streamer_id[r], segment=a.segment[r], timestamp=a.timestamp[r],
        visual=a.visual[r], text=a.text[r], counters=a.counters[r], observed=plan.observed[r],
    )


def _percentiles(values: List[float]) -> Dict[str, float]:
    if not values:
        return {}
    v = np.asarray(values) * 1000.0
    return {f"p{q}": float(np.percentile(v, q)) for q in (50, 90, 99)} | {
        "max": float(v.max()),
        "mean": float(v.mean()),
    }


def replay(
    run_dir: Path,
    data_dir: Path,
    out_dir: Path,
    split: str = "test",
    max_batch: Optional[int] = None,
    stop_after_ticks: Optional[int] = None,
    resume: bool = False,
    progress: bool = True,
) -> Dict[str, Any]:
    """Replay ``split`` of ``data_dir`` through the streaming scorer of ``run_dir`` (module docstring)."""
    from tqdm.auto import tqdm

    run_dir, data_dir, out_dir = Path(run_dir), Path(data_dir), Path(out_dir)
    model = load_inference(run_dir)
    wcfg = model.window_config
    plan = plan_replay(data_dir, wcfg, split, model.label_delay)
    scorer = StreamingScorer(model, max_batch=max_batch)
    identity = {
        "run": str(run_dir.resolve()),
        "data": str(data_dir.resolve()),
        "split": split,
        "model_fingerprint": scorer.fingerprint,
    }
    state_path = out_dir / STATE_NAME
    parts: List[Dict[str, np.ndarray]] = []
    latencies: List[float] = []
    first = 0
    if resume:
        extra = scorer.restore(state_path)
        if extra.get("identity") != identity:
            raise DataError(
                f"{state_path}: the saved replay is of {extra.get('identity')}, not of {identity}; use another --out"
            )
        first, parts, latencies = int(extra["next_tick"]), list(extra["parts"]), list(extra["latencies"])
    elif (out_dir / "replay.json").exists() or state_path.exists():
        raise DataError(
            f"{out_dir}: holds an earlier replay (replay.json or {STATE_NAME}); "
            "use another --out, or --resume to continue an interrupted one"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    last = plan.n_ticks if stop_after_ticks is None else min(plan.n_ticks, first + int(stop_after_ticks))
    a = plan.arr
    dropped_no_target = 0
    bar = tqdm(range(first, last), desc="replay", unit="tick", disable=not progress, leave=False)
    for k in bar:
        rows = plan.rows[plan.bounds[k] : plan.bounds[k + 1]]
        t0 = time.perf_counter()
        scores = scorer.tick(tick_records(plan, k))
        latencies.append(time.perf_counter() - t0)
        target = plan.target_row[rows]
        has = target >= 0
        dropped_no_target += int((~has).sum())
        tr = target[has]
        viewers_ok = (a.viewers[tr] >= wcfg.min_viewers) if a.viewers is not None else np.ones(len(tr), bool)
        parts.append({
            "live_id": scores.live_id[has], "streamer_id": scores.streamer_id[has], "segment": scores.segment[has],
            "label": a.label[tr], "score": scores.score[has], "label_mask": viewers_ok,
            "known_streamer": scores.known_streamer[has],
        })
        ended = a.live_id[rows[plan.last_row[rows]]]
        if len(ended):
            scorer.end_rooms(ended)
    bar.close()
    if last < plan.n_ticks:
        scorer.save(state_path, extra={"identity": identity, "next_tick": last, "parts": parts, "latencies": latencies})
        logger.info("replay stopped after tick %d of %d; state: %s", last, plan.n_ticks, state_path)
        return {"stopped_at_tick": last, "n_ticks": plan.n_ticks, "state": str(state_path)}
    return _finish(plan, scorer, parts, latencies, out_dir, identity, state_path)


def _finish(
    plan: ReplayPlan,
    scorer: StreamingScorer,
    parts: List[Dict[str, np.ndarray]],
    latencies: List[float],
    out_dir: Path,
    identity: Dict[str, Any],
    state_path: Path,
) -> Dict[str, Any]:
    cols = {c: np.concatenate([p[c] for p in parts]) if parts else np.zeros(0) for c in PREDICTION_COLUMNS}
    order = np.lexsort((cols["segment"], cols["live_id"]))
    table = pa.table({
        "live_id": pa.array(cols["live_id"][order], pa.int64()),
        "streamer_id": pa.array(cols["streamer_id"][order], pa.int64()),
        "segment": pa.array(cols["segment"][order], pa.int32()),
        "label": pa.array(cols["label"][order], pa.float32()),
        "score": pa.array(cols["score"][order], pa.float64()),
        "label_mask": pa.array(cols["label_mask"][order].astype(bool), pa.bool_()),
        "known_streamer": pa.array(cols["known_streamer"][order].astype(bool), pa.bool_()),
    })
    predictions = out_dir / "predictions.parquet"
    atomic_write_parquet(predictions, table)
    sizes = np.diff(plan.bounds)
    total = float(np.sum(latencies))
    stats = dict(scorer.stats)
    summary = {
        **identity,
        "n_ticks": plan.n_ticks,
        "rooms_per_tick": {"mean": float(sizes.mean()), "max": int(sizes.max()), "min": int(sizes.min())},
        "segments_scored": int(sizes.sum()),
        "rows_written": int(table.num_rows),
        "rows_without_target": int(sizes.sum()) - int(table.num_rows),
        "rooms_scored_per_second": float(sizes.sum() / total) if total > 0 else None,
        "tick_latency_ms": _percentiles(latencies),
        "bytes_per_room": scorer.bytes_per_room,
        "scorer": stats,
        "predictions": str(predictions),
    }
    atomic_write_json(out_dir / "replay.json", summary)
    if state_path.exists():
        state_path.unlink()
    return summary
