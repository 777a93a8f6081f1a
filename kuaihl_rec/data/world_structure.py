"""Structure of the synthetic world: streamers, rooms, room lengths, schedules and splits.

Implements ``docs/WORLD.md`` section 3, drawing from the ``structure`` stream only, in this order:

- streamer category c_s ~ Categorical(``category_weights``), activity a_s = exp(``activity_sigma`` z);
- rooms per streamer r_s = 1 + Multinomial(``n_rooms`` - ``n_streamers``, a / sum a);
- cold-start streamers: fewest rooms first (random tie-break) until their rooms total
  n_cold = round(``cold_start_fraction`` n_test) exactly, the last one trimmed and its surplus rooms
  moved to warm streamers (drawn with weights a);
- room length T ~ round(LogNormal(mu, sigma)) clipped to [``min_segments_per_room``,
  ``max_segments_per_room``], mu = ln(``segments_per_room``) - sigma^2 / 2, optionally rescaled to
  exactly ``total_segments``;
- preferred local start hour H_s = (start hour of c_s + 2 z) mod 24; the k-th of r_s rooms starts on day
  floor((k + U) ``n_days`` / r_s) at local hour H_s + ``schedule_jitter_hours`` z, on the 30 s grid,
  at least 10 minutes after the streamer's previous room ends;
- splits by room: cold rooms -> test; each warm streamer keeps one random room in train; the warm
  test and val rooms are drawn from the other warm rooms.

Rooms are finally put in live_id order: the chronological order of their starts.
"""

from __future__ import annotations

import dataclasses
from typing import List, Tuple

import numpy as np

from kuaihl_rec.data.schema import SEGMENT_SECONDS
from kuaihl_rec.data.world_config import WorldConfig, WorldConfigError
from kuaihl_rec.data.world_profiles import CATEGORY_PROFILES

__all__ = ["WorldStructure", "build_structure", "room_lengths"]

#: At least 20 segments (10 minutes) between two rooms of one streamer.
MIN_GAP_SECONDS = 20 * SEGMENT_SECONDS
SPLIT_TRAIN, SPLIT_VAL, SPLIT_TEST = 0, 1, 2  # codes into schema.SPLITS


@dataclasses.dataclass
class WorldStructure:
    """Streamers and rooms of a world (S streamers, R rooms; room arrays in live_id order).

    categories:         category names, in ``cfg.category_weights`` order
    streamer_category:  [S] int, index into ``categories``
    preferred_hour:     [S] float, preferred local start hour
    rooms_per_streamer: [S] int
    cold_streamer:      [S] bool, all the streamer's rooms are in test
    room_streamer:      [R] int, streamer index of each room
    room_length:        [R] int64, segments per room
    room_start:         [R] int64, unix seconds on the 30 s grid
    room_split:         [R] int8, code into ``schema.SPLITS`` (0 train, 1 val, 2 test)
    """

    categories: List[str]
    streamer_category: np.ndarray
    preferred_hour: np.ndarray
    rooms_per_streamer: np.ndarray
    cold_streamer: np.ndarray
    room_streamer: np.ndarray
    room_length: np.ndarray
    room_start: np.ndarray
    room_split: np.ndarray


def room_lengths(cfg: WorldConfig, rng: np.random.Generator) -> np.ndarray:
    """[R] int64 room lengths in segments: clipped, rounded lognormals (exactly ``total_segments`` when set)."""
    n_rooms = cfg.n_rooms
    sigma = cfg.room_length_sigma
    mu = np.log(cfg.segments_per_room) - 0.5 * sigma**2
    raw = np.exp(mu + sigma * rng.standard_normal(n_rooms))
    shortest, longest = cfg.min_segments_per_room, cfg.max_segments_per_room
    if cfg.total_segments is not None:
        raw *= cfg.total_segments / raw.sum()
    lengths = np.clip(np.rint(raw), shortest, longest).astype(np.int64)
    if cfg.total_segments is not None:
        # Spread the rounding/clipping residual over random rooms that have room to move.
        order = rng.permutation(n_rooms)
        residual = cfg.total_segments - int(lengths.sum())
        while residual != 0:
            step = 1 if residual > 0 else -1
            movable = order[(lengths[order] < longest) if step > 0 else (lengths[order] > shortest)]
            if len(movable) == 0:  # pragma: no cover - the validated bounds make this unreachable
                raise WorldConfigError(f"world config key 'total_segments': cannot reach {cfg.total_segments}")
            take = movable[: min(abs(residual), len(movable))]
            lengths[take] += step
            residual -= step * len(take)
    return lengths


def _draw_streamers(cfg: WorldConfig, rng: np.random.Generator) -> Tuple[List[str], np.ndarray, np.ndarray, np.ndarray]:
    """``(categories, streamer_category [S], activity [S], rooms_per_streamer [S])``."""
    n_streamers = cfg.n_streamers
    categories = [name for name, _ in cfg.category_weights]
    weights = np.array([weight for _, weight in cfg.category_weights], dtype=float)
    streamer_category = rng.choice(len(categories), size=n_streamers, p=weights / weights.sum())
    activity = np.exp(cfg.activity_sigma * rng.standard_normal(n_streamers))
    rooms_per_streamer = 1 + rng.multinomial(cfg.n_rooms - n_streamers, activity / activity.sum())
    return categories, streamer_category, activity, rooms_per_streamer


def _split_sizes(cfg: WorldConfig) -> Tuple[int, int, int]:
    """``(n_test, n_val, n_cold)`` rooms; n_cold >= 1 whenever ``cold_start_fraction`` > 0 and n_test > 0."""
    n_test = int(round(cfg.test_fraction * cfg.n_rooms))
    n_val = int(round(cfg.val_fraction * cfg.n_rooms))
    n_cold = int(round(cfg.cold_start_fraction * n_test))
    if cfg.cold_start_fraction > 0 and n_test > 0:
        n_cold = max(n_cold, 1)
    return n_test, n_val, n_cold


def _choose_cold_streamers(
    rooms_per_streamer: np.ndarray, activity: np.ndarray, n_cold: int, rng: np.random.Generator
) -> np.ndarray:
    """[S] bool cold-start streamers whose rooms total ``n_cold``; updates ``rooms_per_streamer`` in place.

    Streamers are taken fewest rooms first (random tie-break); the last one is trimmed to the exact
    count and its other rooms go to warm streamers, drawn with weights ``activity``.
    """
    n_streamers = len(rooms_per_streamer)
    cold = np.zeros(n_streamers, dtype=bool)
    remaining = n_cold
    tie_break = rng.random(n_streamers)
    for s in np.lexsort((tie_break, rooms_per_streamer)):
        if remaining == 0:
            break
        if rooms_per_streamer[s] > remaining:
            surplus = int(rooms_per_streamer[s] - remaining)
            rooms_per_streamer[s] = remaining
            cold[s] = True
            warm = np.flatnonzero(~cold)
            if len(warm) == 0:
                raise WorldConfigError("world config key 'cold_start_fraction': leaves no warm streamer")
            receivers = rng.choice(warm, size=surplus, p=activity[warm] / activity[warm].sum())
            np.add.at(rooms_per_streamer, receivers, 1)
            remaining = 0
        else:
            cold[s] = True
            remaining -= int(rooms_per_streamer[s])
    return cold


def _schedule(
    cfg: WorldConfig,
    start_hours: np.ndarray,
    rooms_per_streamer: np.ndarray,
    room_streamer: np.ndarray,
    rank: np.ndarray,
    room_length: np.ndarray,
    rng: np.random.Generator,
) -> Tuple[np.ndarray, np.ndarray]:
    """``(preferred_hour [S], room_start [R] int64)``, rooms grouped by streamer, ``rank`` = k within it.

    ``start_hours`` [S] is the mean start hour of each streamer's category. The k-th of a streamer's
    r rooms goes live on a day of the k-th of r equal strata of the ``n_days`` days.
    """
    preferred_hour = (start_hours + 2.0 * rng.standard_normal(len(start_hours))) % 24.0
    n_rooms_of_streamer = rooms_per_streamer[room_streamer].astype(float)
    n_rooms = len(room_streamer)
    day = np.floor((rank + rng.random(n_rooms)) * cfg.n_days / n_rooms_of_streamer)
    hour = preferred_hour[room_streamer] + cfg.schedule_jitter_hours * rng.standard_normal(n_rooms)
    start = cfg.start_time + day * 86400.0 + (hour - cfg.utc_offset_hours) * 3600.0
    start = (np.rint(start / SEGMENT_SECONDS) * SEGMENT_SECONDS).astype(np.int64)
    for k in range(1, int(rooms_per_streamer.max())):
        idx = np.flatnonzero(rank == k)
        previous_end = start[idx - 1] + SEGMENT_SECONDS * room_length[idx - 1]
        start[idx] = np.maximum(start[idx], previous_end + MIN_GAP_SECONDS)
    return preferred_hour, start


def _assign_splits(
    cfg: WorldConfig,
    cold: np.ndarray,
    rooms_per_streamer: np.ndarray,
    room_streamer: np.ndarray,
    first_room: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """[R] int8 split codes of rooms grouped by streamer (``first_room`` [R]: the streamer's first room).

    Cold streamers' rooms -> test; every warm streamer keeps one random room in train; the other warm
    rooms are drawn for test and val.
    """
    n_streamers, n_rooms = len(rooms_per_streamer), len(room_streamer)
    n_test, n_val, _ = _split_sizes(cfg)
    split = np.full(n_rooms, SPLIT_TRAIN, dtype=np.int8)
    room_cold = cold[room_streamer]
    split[room_cold] = SPLIT_TEST
    keep = np.zeros(n_rooms, dtype=bool)
    keep_rank = np.floor(rng.random(n_streamers) * rooms_per_streamer).astype(np.int64)
    keep[first_room + keep_rank[room_streamer] == np.arange(n_rooms)] = True
    candidates = np.flatnonzero(~room_cold & ~keep)
    n_test_warm = max(n_test - int(room_cold.sum()), 0)
    if n_test_warm + n_val > len(candidates):
        raise WorldConfigError(
            f"world config: {n_rooms} rooms for {n_streamers} streamers leave {len(candidates)} rooms to draw "
            f"{n_test_warm} warm test and {n_val} val rooms from; raise n_rooms or lower test_fraction/val_fraction"
        )
    drawn = rng.permutation(candidates)
    split[drawn[:n_test_warm]] = SPLIT_TEST
    split[drawn[n_test_warm : n_test_warm + n_val]] = SPLIT_VAL
    return split


def build_structure(cfg: WorldConfig, rng: np.random.Generator) -> WorldStructure:
    """Streamers, rooms, schedules and splits of a world, from the ``structure`` stream ``rng``."""
    categories, streamer_category, activity, rooms_per_streamer = _draw_streamers(cfg, rng)
    _, _, n_cold = _split_sizes(cfg)
    cold = _choose_cold_streamers(rooms_per_streamer, activity, n_cold, rng)
    if (~cold).sum() == 0 and cfg.n_rooms > n_cold:  # pragma: no cover
        raise WorldConfigError("world config key 'cold_start_fraction': leaves no warm streamer")

    n_rooms = cfg.n_rooms
    room_streamer = np.repeat(np.arange(cfg.n_streamers), rooms_per_streamer)  # grouped by streamer
    first_room = np.repeat(np.cumsum(rooms_per_streamer) - rooms_per_streamer, rooms_per_streamer)
    rank = np.arange(n_rooms) - first_room  # 0.. r_s - 1 within the streamer, chronological
    room_length = room_lengths(cfg, rng)
    category_start_hour = np.array([CATEGORY_PROFILES[name].start_hour for name in categories])
    preferred_hour, start = _schedule(
        cfg, category_start_hour[streamer_category], rooms_per_streamer, room_streamer, rank, room_length, rng
    )
    split = _assign_splits(cfg, cold, rooms_per_streamer, room_streamer, first_room, rng)

    # live_id order = chronological order of the room starts.
    order = np.lexsort((room_streamer, start))
    return WorldStructure(
        categories=categories,
        streamer_category=streamer_category,
        preferred_hour=preferred_hour,
        rooms_per_streamer=rooms_per_streamer,
        cold_streamer=cold,
        room_streamer=room_streamer[order],
        room_length=room_length[order],
        room_start=start[order],
        room_split=split[order],
    )
