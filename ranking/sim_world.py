"""The world as the simulator sees it: the simulated split's rooms laid out on a simulated time line.

:func:`load_sim_world` reads a world (a directory written by ``kuaihl world`` or an in-memory
``World``) and places every room of the simulated split at its local time of day on one of the
simulated days (:class:`SimWorld`). The stages: read the tables, keep the split's rows, check the
room layout, choose the number of days, place room copies, lay out the sim rows, then attach the
hidden truth, the tie-break keys and the traffic curve.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from kuaihl_rec.data.io import segment_files
from kuaihl_rec.data.world_config import load_world_config
from ranking.random_numbers import UINT64_MASK, splitmix64, stable_hash, uniform_from_hash
from ranking.score_source import OBSERVABLE_COLUMNS, RunScorer, ScoreContext
from ranking.sim_config import SEGMENT_SECONDS, TICKS_PER_DAY

__all__ = ["AUTO_MIN_ROOMS_ON_AIR", "SimWorld", "choose_days", "load_sim_world"]

#: ``days="auto"`` folds the world's days until this many rooms are on air on average at session starts.
AUTO_MIN_ROOMS_ON_AIR = 5.0
#: Hidden-truth columns the simulator reads.
TRUTH_COLUMNS = ["live_id", "segment", "state", "attract_logit", "true_lvtr", "true_ctr", "true_retention"]


@dataclasses.dataclass
class SimWorld:
    """The simulated split of a world, laid out for the simulator.

    *Base rows* are the unique (live_id, segment) of the split's rooms, sorted; scores are resolved
    on them (:meth:`context`). *Sim rows* are base rows placed on the simulated time line (a room
    appears once per replayed cycle), contiguous per room copy in segment order.
    """

    # base rows (unique keys)
    live_id: np.ndarray
    segment: np.ndarray
    obs: pd.DataFrame
    truth: pd.DataFrame
    val_obs: Optional[pd.DataFrame]
    # sim rows
    base_row: np.ndarray
    tick: np.ndarray
    room: np.ndarray  # room copy index of each sim row
    room_last_row: np.ndarray  # [n_room_copies] last sim row of the copy
    room_cat: np.ndarray  # [n_room_copies] category code
    ctr_logit: np.ndarray  # sim rows
    true_lvtr: np.ndarray
    hazard_cum: np.ndarray  # cumulative -log(retention) over sim rows
    tiebreak: np.ndarray  # hashed per sim row
    count: np.ndarray  # rooms on air per tick
    start_weight: np.ndarray  # session-start weight per tick (traffic x on air), length days * TICKS_PER_DAY
    categories: List[str]
    days: int
    world_days: int
    split: str
    world_dir: Optional[Path]
    meta: Dict[str, Any]

    @property
    def n_rows(self) -> int:
        return len(self.tick)

    @property
    def n_ticks(self) -> int:
        return len(self.count)

    def context(self, cache_dir: Optional[Path] = None, progress: bool = False,
                score_run: Optional[RunScorer] = None) -> ScoreContext:
        """The scoring context of the base rows; ``score_run`` scores run directories (see
        :class:`ranking.score_source.RunScorer`)."""
        return ScoreContext(
            live_id=self.live_id, segment=self.segment, obs=self.obs, truth=self.truth, val_obs=self.val_obs,
            world_dir=self.world_dir, split=self.split, cache_dir=cache_dir, progress=progress, score_run=score_run,
        )

    def feed_stats(self) -> Dict[str, float]:
        """How full the feed is: rooms on air at session-start ticks (weighted as sessions start)."""
        weight = self.start_weight
        on_air = self.count[: len(weight)].astype(np.float64)
        total = weight.sum()
        if total <= 0:
            return {"mean_rooms_on_air": 0.0, "share_ge2": 0.0, "share_ge5": 0.0, "max_rooms_on_air": 0}
        return {
            "mean_rooms_on_air": float((weight * on_air).sum() / total),
            "share_ge2": float(weight[on_air >= 2].sum() / total),
            "share_ge5": float(weight[on_air >= 5].sum() / total),
            "max_rooms_on_air": int(self.count.max()),
            "rooms": int(len(np.unique(self.live_id))),
            "room_copies": int(len(self.room_last_row)),
            "segments": int(self.n_rows),
        }


# ------------------------------------------------------------------------------------------------
# Reading the world
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _WorldTables:
    """All rooms, the hidden truth and the observable segment table of a world, and its config."""

    rooms: pd.DataFrame
    truth: pd.DataFrame
    segments: pd.DataFrame
    config: Any


def _segment_columns(available: set) -> List[str]:
    return ["live_id", "segment", "split"] + [c for c in OBSERVABLE_COLUMNS if c in available]


def _read_world_dir(world_dir: Path) -> _WorldTables:
    truth_dir = world_dir / "truth"
    for name in ("rooms.parquet", "segments_truth.parquet"):
        if not (truth_dir / name).exists():
            raise FileNotFoundError(
                f"{truth_dir / name}: the simulator needs a synthetic world's truth sidecar (kuaihl world --out DIR)")
    rooms = pq.read_table(truth_dir / "rooms.parquet").to_pandas()
    truth = pq.read_table(truth_dir / "segments_truth.parquet", columns=TRUTH_COLUMNS).to_pandas()
    files = segment_files(world_dir)
    columns = _segment_columns(set(pq.read_schema(files[0]).names))
    segments = pd.concat([pq.read_table(f, columns=columns).to_pandas() for f in files], ignore_index=True)
    config = None
    if (world_dir / "world_config.yaml").exists():
        config = load_world_config(path=world_dir / "world_config.yaml")
    return _WorldTables(rooms, truth, segments, config)


def _read_world_object(world: Any) -> _WorldTables:
    columns = _segment_columns(set(world.segments.column_names))
    return _WorldTables(world.rooms.to_pandas(), world.truth.select(TRUTH_COLUMNS).to_pandas(),
                        world.segments.select(columns).to_pandas(), world.config)


@dataclasses.dataclass(frozen=True)
class _Clock:
    """The world's clock and traffic curve (from its config; defaults where it has none)."""

    start_time: float
    utc_offset_hours: float
    traffic_amplitude: float
    traffic_peak_hour: float

    @classmethod
    def of(cls, config: Any, rooms: pd.DataFrame) -> "_Clock":
        return cls(float(getattr(config, "start_time", rooms["start_timestamp"].min())),
                   float(getattr(config, "utc_offset_hours", 0.0)),
                   float(getattr(config, "traffic_amplitude", 0.6)),
                   float(getattr(config, "traffic_peak_hour", 21.0)))

    def traffic(self, hours: np.ndarray) -> np.ndarray:
        return _traffic(hours, self.traffic_amplitude, self.traffic_peak_hour)

    def room_start_slots(self, split_rooms: pd.DataFrame, all_rooms: pd.DataFrame) -> Tuple[np.ndarray, np.ndarray]:
        """Local day (0 = the world's first day) and tick of the day of each room's start."""
        utc_offset_s = self.utc_offset_hours * 3600.0
        local = split_rooms["start_timestamp"].to_numpy(np.float64) - self.start_time + utc_offset_s
        all_local = all_rooms["start_timestamp"].to_numpy(np.float64) - self.start_time + utc_offset_s
        first_day = math.floor(all_local.min() / 86400.0)
        day = np.floor(local / 86400.0).astype(np.int64) - first_day
        tick_in_day = np.floor((local - np.floor(local / 86400.0) * 86400.0) / SEGMENT_SECONDS).astype(np.int64)
        return day, tick_in_day


def _traffic(hours: np.ndarray, amp: float, peak: float) -> np.ndarray:
    return np.exp(amp * np.cos(2 * np.pi * (hours - peak) / 24.0))


@dataclasses.dataclass
class _SplitRows:
    """The simulated split's rooms and base rows (sorted by live_id, segment) and the calibration rows."""

    rooms: pd.DataFrame
    obs: pd.DataFrame
    truth: pd.DataFrame
    val_obs: Optional[pd.DataFrame]


def _split_rows(tables: _WorldTables, split: str, cal_split: str) -> _SplitRows:
    segments = tables.segments.sort_values(["live_id", "segment"], kind="stable").reset_index(drop=True)
    truth = tables.truth.sort_values(["live_id", "segment"], kind="stable").reset_index(drop=True)
    if len(segments) != len(truth) or not np.array_equal(
        segments["live_id"].to_numpy(), truth["live_id"].to_numpy()
    ) or not np.array_equal(segments["segment"].to_numpy(), truth["segment"].to_numpy()):
        raise ValueError("the segment table and the truth sidecar do not hold the same (live_id, segment) rows")
    rooms = tables.rooms
    split_rooms = rooms[rooms["split"] == split].sort_values("live_id").reset_index(drop=True)
    if len(split_rooms) == 0:
        raise ValueError(f"the world has no rooms in split {split!r}")
    in_split = segments["split"].to_numpy() == split
    obs = segments[in_split].drop(columns=["split"]).reset_index(drop=True)
    split_truth = truth[in_split].reset_index(drop=True)
    in_cal = segments["split"].to_numpy() == cal_split
    val_obs = segments[in_cal].drop(columns=["split"]).reset_index(drop=True) if in_cal.any() else None
    return _SplitRows(split_rooms, obs, split_truth, val_obs)


def _room_layout(live_id: np.ndarray, segment: np.ndarray, split_rooms: pd.DataFrame,
                 split: str) -> Tuple[np.ndarray, np.ndarray]:
    """First base row and length of every room; checks that each room holds segments 0..T-1 in order."""
    first = np.flatnonzero(np.r_[True, live_id[1:] != live_id[:-1]])
    lengths = np.diff(np.r_[first, len(live_id)])
    if not np.array_equal(live_id[first], split_rooms["live_id"].to_numpy(np.int64)):
        raise ValueError(f"rooms.parquet and the segment table disagree on the rooms of split {split!r}")
    if not np.array_equal(segment, np.concatenate([np.arange(n) for n in lengths])):
        raise ValueError("segments of a room must be consecutive from 0")
    return first, lengths


# ------------------------------------------------------------------------------------------------
# The simulated time line
# ------------------------------------------------------------------------------------------------


def choose_days(day: np.ndarray, tick_in_day: np.ndarray, lengths: np.ndarray, target: float, amp: float,
                peak: float) -> int:
    """The most simulated days (<= the world's) whose folded feed has >= ``target`` rooms on air on
    average at (traffic-weighted) session starts; 1 when even a single day has fewer."""
    world_days = int(day.max()) + 1
    for n_days in range(world_days, 0, -1):
        start = (day % n_days) * TICKS_PER_DAY + tick_in_day
        n = int((start + lengths).max()) + 1
        diff = np.zeros(n + 1)
        np.add.at(diff, start, 1.0)
        np.add.at(diff, start + lengths, -1.0)
        on_air = np.cumsum(diff)[: n_days * TICKS_PER_DAY]
        hours = (np.arange(len(on_air)) % TICKS_PER_DAY) * SEGMENT_SECONDS / 3600.0
        weight = _traffic(hours, amp, peak) * (on_air >= 1)
        if weight.sum() > 0 and (weight * on_air).sum() / weight.sum() >= target:
            return n_days
    return 1


def _room_copies(day: np.ndarray, world_days: int, n_days: int) -> Tuple[np.ndarray, np.ndarray]:
    """Room and simulated day of every room copy: folded (mod ``n_days``) or replayed cyclically."""
    n_rooms = len(day)
    if n_days <= world_days:
        return np.arange(n_rooms), day % n_days
    cycles = -(-n_days // world_days)
    copy_room = np.tile(np.arange(n_rooms), cycles)
    copy_day = np.tile(day, cycles) + np.repeat(np.arange(cycles), n_rooms) * world_days
    keep = copy_day < n_days
    return copy_room[keep], copy_day[keep]


@dataclasses.dataclass
class _SimRows:
    """Base rows placed on the time line: one run of rows per room copy, in segment order."""

    base_row: np.ndarray
    tick: np.ndarray
    room: np.ndarray
    room_last_row: np.ndarray
    offset_in_room: np.ndarray


def _sim_rows(first_row: np.ndarray, lengths: np.ndarray, copy_room: np.ndarray, copy_start: np.ndarray) -> _SimRows:
    copy_len = lengths[copy_room]
    room = np.repeat(np.arange(len(copy_room)), copy_len)
    copy_offset = np.r_[0, np.cumsum(copy_len)[:-1]]
    offset_in_room = np.arange(int(copy_len.sum())) - np.repeat(copy_offset, copy_len)
    return _SimRows(
        base_row=first_row[copy_room][room] + offset_in_room,
        tick=copy_start[room] + offset_in_room,
        room=room,
        room_last_row=copy_offset + copy_len - 1,
        offset_in_room=offset_in_room,
    )


def _tiebreak(live_id: np.ndarray, rows: _SimRows, seed: int) -> np.ndarray:
    """A hashed uniform per sim row, shared by all arms: breaks ties between equal scores."""
    salt = np.uint64(stable_hash("tiebreak", seed) & UINT64_MASK)
    copy_id = np.arange(len(rows.room_last_row), dtype=np.uint64)[rows.room]
    room_hash = splitmix64(live_id[rows.base_row].astype(np.uint64) ^ salt)
    return uniform_from_hash(splitmix64(room_hash ^ (copy_id << np.uint64(20)) ^ rows.offset_in_room.astype(np.uint64)))


def _truth_of_rows(truth: pd.DataFrame, base_row: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CTR logit, true LVTR and cumulative hazard (-log retention) of every sim row."""
    ctr = np.clip(truth["true_ctr"].to_numpy(np.float64), 1e-6, 1 - 1e-6)
    ctr_logit = np.log(ctr / (1 - ctr))[base_row]
    true_lvtr = truth["true_lvtr"].to_numpy(np.float64)[base_row]
    retention = np.clip(truth["true_retention"].to_numpy(np.float64), 1e-6, 1 - 1e-9)[base_row]
    return ctr_logit, true_lvtr, np.cumsum(-np.log(retention))


def _on_air_and_start_weight(tick: np.ndarray, n_days: int, clock: _Clock) -> Tuple[np.ndarray, np.ndarray]:
    """Rooms on air per tick and the session-start weight per simulated tick (traffic x anything on air)."""
    sim_ticks = n_days * TICKS_PER_DAY
    count = np.bincount(tick, minlength=int(max(tick.max() + 1, sim_ticks))).astype(np.int64)
    hours = (np.arange(sim_ticks) % TICKS_PER_DAY) * SEGMENT_SECONDS / 3600.0
    start_weight = clock.traffic(hours) * (count[:sim_ticks] >= 1)
    if start_weight.sum() <= 0:
        raise ValueError("no room of the simulated split is on air during the simulated days")
    return count, start_weight


def _simulated_days(days: Union[int, str, None], day: np.ndarray, tick_in_day: np.ndarray, lengths: np.ndarray,
                    clock: _Clock) -> int:
    if days == "auto":
        n_days = choose_days(day, tick_in_day, lengths, AUTO_MIN_ROOMS_ON_AIR, clock.traffic_amplitude,
                             clock.traffic_peak_hour)
    else:
        n_days = int(days) if days else int(day.max()) + 1
    if n_days < 1:
        raise ValueError("days must be >= 1")
    return n_days


def load_sim_world(world: Union[str, Path, Any], split: str = "test", days: Union[int, str, None] = None,
                   seed: int = 0, cal_split: str = "val") -> SimWorld:
    """Lay out ``split`` of a world (a directory written by ``kuaihl world`` or an in-memory
    :class:`kuaihl_rec.data.world.World`) on a simulated time line of ``days`` days.

    ``days``: None = the world's own span; an int D < the world's span folds its days onto D days
    (room r goes to day ``day_r mod D`` at its own time of day, so more rooms are on air at once);
    D > the span replays the world's days cyclically; ``"auto"`` picks the most days whose feed has
    :data:`AUTO_MIN_ROOMS_ON_AIR` rooms on air on average when sessions start (:func:`choose_days`)."""
    world_dir = Path(world) if isinstance(world, (str, Path)) else None
    tables = _read_world_dir(world_dir) if world_dir is not None else _read_world_object(world)
    clock = _Clock.of(tables.config, tables.rooms)
    split_rows = _split_rows(tables, split, cal_split)
    live_id = split_rows.obs["live_id"].to_numpy(np.int64)
    segment = split_rows.obs["segment"].to_numpy(np.int64)
    first_row, lengths = _room_layout(live_id, segment, split_rows.rooms, split)

    day, tick_in_day = clock.room_start_slots(split_rows.rooms, tables.rooms)
    world_days = int(day.max()) + 1
    n_days = _simulated_days(days, day, tick_in_day, lengths, clock)
    copy_room, copy_day = _room_copies(day, world_days, n_days)
    rows = _sim_rows(first_row, lengths, copy_room, copy_day * TICKS_PER_DAY + tick_in_day[copy_room])

    categories = sorted(tables.rooms["category"].unique().tolist())
    code = {c: i for i, c in enumerate(categories)}
    room_cat = np.array([code[c] for c in split_rows.rooms["category"]], dtype=np.int64)[copy_room]
    ctr_logit, true_lvtr, hazard_cum = _truth_of_rows(split_rows.truth, rows.base_row)
    count, start_weight = _on_air_and_start_weight(rows.tick, n_days, clock)
    config = tables.config
    meta = {"split": split, "days": n_days, "world_days": world_days, "folded": n_days < world_days,
            "replayed": n_days > world_days, "start_time": clock.start_time, "utc_offset_hours": clock.utc_offset_hours,
            "traffic_amplitude": clock.traffic_amplitude, "traffic_peak_hour": clock.traffic_peak_hour,
            "world_preset": getattr(config, "preset", None), "content_signal": getattr(config, "content_signal", None)}
    return SimWorld(
        live_id=live_id, segment=segment, obs=split_rows.obs, truth=split_rows.truth, val_obs=split_rows.val_obs,
        base_row=rows.base_row, tick=rows.tick, room=rows.room, room_last_row=rows.room_last_row, room_cat=room_cat,
        ctr_logit=ctr_logit, true_lvtr=true_lvtr, hazard_cum=hazard_cum, tiebreak=_tiebreak(live_id, rows, seed),
        count=count, start_weight=start_weight, categories=categories, days=n_days, world_days=world_days,
        split=split, world_dir=world_dir, meta=meta,
    )
