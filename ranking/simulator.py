"""The offline A/B simulator: users scrolling a live-stream feed of the synthetic world's rooms.

It runs on the world's **hidden truth** (``OUT/truth/``), which no model sees, and on held-out rooms
only (the ``test`` split by default: no model trained on them). Models and formulas only decide the
*order* of the feed; what users do is decided by the truth.

Time and feed
    Simulated time runs in 30 s ticks. A room of the simulated split is on air from its start tick;
    at tick ``t`` it broadcasts segment ``u = t - start``. The feed at tick t lists the rooms on air,
    sorted by the arm's blended score of ``(live_id, u)`` (a score computed from content < u; the
    simulator never looks a score up at any other tick), ties broken by a hashed random key shared by
    all arms. ``days`` folds the world's days onto fewer simulated days (each room keeps its local
    time of day, so more rooms are on air at once) or replays them cyclically for more days.

Users (:class:`SimConfig`, drawn once per seed; the same user ids in every arm)
    a session rate (sessions per day, Gamma), a click-logit taste per category (Normal), a click
    bias, a scanning patience (Beta: probability to look at the next position), a return-to-feed
    probability (Beta), a session budget in seconds (lognormal per user and per session) and a
    stickiness (lognormal hazard multiplier). Session starts are drawn over the simulated days with
    the world's hour-of-day traffic curve, at ticks when at least one room is on air.

A session (a cascade; vectorised over all sessions at once, one Python step per *visit* round)
    1. the user opens the feed at tick t (minus the room just left) and looks at position k = 0, 1, ...
    2. an impression at position k is clicked with probability
       ``decay(k) * sigmoid(logit(true_ctr_u) + taste[user, category] + bias[user])``,
       ``decay(k) = (1 + k)^-position_decay`` (hidden), ``true_ctr_u`` the room's true CTR at the
       segment on air (a function of its *current* hidden attractiveness);
    3. not clicked: the user looks at the next position with probability ``patience`` (else leaves);
    4. clicked: an immediate exit (a short view, < 3 s) with probability
       ``short_view_scale * (1 - true_lvtr_u)``; otherwise the user stays through the following
       segments u+1, u+2, ... while per-segment survival draws succeed, the survival into segment
       j being the room's true retention at j raised to the user's stickiness (so the watch depends
       on the room's **future** segments), capped by the room's end and the session budget:
       duration = 30 m + 3 + 27 U seconds after m further segments (a long view is > 60 s);
    5. after the watch the user returns to the feed at the next tick with probability
       ``return_to_feed`` (and budget left), else the session ends.

Session starts are exogenous (they do not depend on the feed), so sessions per user can differ
between arms only through the random split of users: in the results it serves as a balance check.

Common random numbers: every uniform is a counter-based hash of (seed, session id, visit round,
position, stream), so in the paired mode every arm sees the same draws for the same user, visit and
position, and a randomised experiment is the paired one restricted to each user's own arm.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import pandas as pd

from ranking.scores import OBSERVABLE_COLUMNS, ScoreContext, stable_hash

logger = logging.getLogger(__name__)

__all__ = [
    "Feed",
    "OUTCOME_FIELDS",
    "Population",
    "SessionOutcomes",
    "Sessions",
    "SimConfig",
    "SimWorld",
    "aggregate_users",
    "build_feed",
    "load_sim_world",
    "make_population",
    "simulate",
]

SEGMENT_SECONDS = 30
TICKS_PER_DAY = 86400 // SEGMENT_SECONDS
LONG_VIEW_S = 60.0
SHORT_VIEW_S = 3.0
#: Per-session (and per-user) outcome counters, in this order.
OUTCOME_FIELDS: Tuple[str, ...] = ("impressions", "clicks", "long_views", "short_views", "play_s", "sessions", "visits")


# ------------------------------------------------------------------------------------------------
# Counter-based random numbers (splitmix64)
# ------------------------------------------------------------------------------------------------

_G = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (a bijection with good avalanche)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _G
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
        return z ^ (z >> _S31)


def _uniform(h: np.ndarray) -> np.ndarray:
    """uint64 hashes -> uniforms in (0, 1)."""
    return ((h >> _S11).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)


def _salt(round_: int, stream: int, positions: Optional[np.ndarray] = None) -> np.ndarray:
    base = (np.uint64(round_) << np.uint64(24)) | (np.uint64(stream) << np.uint64(16))
    if positions is None:
        return splitmix64(np.array([base], dtype=np.uint64))
    return splitmix64(base | positions.astype(np.uint64))


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """Hidden user and platform behaviour of the simulator (documented in the module docstring)."""

    # users
    sessions_per_day: float = 1.0
    activity_shape: float = 1.5
    taste_sigma: float = 0.5
    click_bias_sigma: float = 0.3
    patience_mean: float = 0.8
    patience_concentration: float = 12.0
    return_mean: float = 0.65
    return_concentration: float = 10.0
    budget_median_s: float = 900.0
    budget_user_sigma: float = 0.6
    budget_session_sigma: float = 0.5
    stickiness_sigma: float = 0.3
    # platform
    max_positions: int = 20
    position_decay: float = 0.7
    short_view_scale: float = 0.35
    max_rounds: int = 1000
    chunk_sessions: int = 65536

    def replace(self, **kw: Any) -> "SimConfig":
        unknown = set(kw) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown simulator setting(s) {sorted(unknown)}; known: {[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------
# The world as the simulator sees it
# ------------------------------------------------------------------------------------------------


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

    def context(self, cache_dir: Optional[Path] = None, progress: bool = False) -> ScoreContext:
        return ScoreContext(
            live_id=self.live_id, segment=self.segment, obs=self.obs, truth=self.truth, val_obs=self.val_obs,
            world_dir=self.world_dir, split=self.split, cache_dir=cache_dir, progress=progress,
        )

    def feed_stats(self) -> Dict[str, float]:
        """How full the feed is: rooms on air at session-start ticks (weighted as sessions start)."""
        w = self.start_weight
        c = self.count[: len(w)].astype(np.float64)
        tot = w.sum()
        if tot <= 0:
            return {"mean_rooms_on_air": 0.0, "share_ge2": 0.0, "share_ge5": 0.0, "max_rooms_on_air": 0}
        return {
            "mean_rooms_on_air": float((w * c).sum() / tot),
            "share_ge2": float(w[c >= 2].sum() / tot),
            "share_ge5": float(w[c >= 5].sum() / tot),
            "max_rooms_on_air": int(self.count.max()),
            "rooms": int(len(np.unique(self.live_id))),
            "room_copies": int(len(self.room_last_row)),
            "segments": int(self.n_rows),
        }


def _read_world_dir(world_dir: Path):
    import pyarrow.parquet as pq

    from kuaihl_rec.data.io import segment_files

    truth_dir = world_dir / "truth"
    for name in ("rooms.parquet", "segments_truth.parquet"):
        if not (truth_dir / name).exists():
            raise FileNotFoundError(f"{truth_dir / name}: the simulator needs a synthetic world's truth sidecar (kuaihl world --out DIR)")
    rooms = pq.read_table(truth_dir / "rooms.parquet").to_pandas()
    truth = pq.read_table(truth_dir / "segments_truth.parquet", columns=["live_id", "segment", "state", "attract_logit", "true_lvtr", "true_ctr", "true_retention"]).to_pandas()
    files = segment_files(world_dir)
    schema_names = set(pq.read_schema(files[0]).names)
    cols = ["live_id", "segment", "split"] + [c for c in OBSERVABLE_COLUMNS if c in schema_names]
    segs = pd.concat([pq.read_table(f, columns=cols).to_pandas() for f in files], ignore_index=True)
    cfg = None
    if (world_dir / "world_config.yaml").exists():
        from kuaihl_rec.data.world_config import load_world_config

        cfg = load_world_config(path=world_dir / "world_config.yaml")
    return rooms, truth, segs, cfg


#: ``days="auto"`` folds the world's days until this many rooms are on air on average at session starts.
AUTO_MIN_ROOMS_ON_AIR = 5.0


def _traffic(hours: np.ndarray, amp: float, peak: float) -> np.ndarray:
    return np.exp(amp * np.cos(2 * np.pi * (hours - peak) / 24.0))


def choose_days(day: np.ndarray, tick_in_day: np.ndarray, lengths: np.ndarray, target: float, amp: float, peak: float) -> int:
    """The most simulated days (<= the world's) whose folded feed has >= ``target`` rooms on air on
    average at (traffic-weighted) session starts; 1 when even a single day has fewer."""
    world_days = int(day.max()) + 1
    for D in range(world_days, 0, -1):
        start = (day % D) * TICKS_PER_DAY + tick_in_day
        n = int((start + lengths).max()) + 1
        diff = np.zeros(n + 1)
        np.add.at(diff, start, 1.0)
        np.add.at(diff, start + lengths, -1.0)
        count = np.cumsum(diff)[: D * TICKS_PER_DAY]
        w = _traffic((np.arange(len(count)) % TICKS_PER_DAY) * SEGMENT_SECONDS / 3600.0, amp, peak) * (count >= 1)
        if w.sum() > 0 and (w * count).sum() / w.sum() >= target:
            return D
    return 1


def load_sim_world(world: Union[str, Path, Any], split: str = "test", days: Union[int, str, None] = None, seed: int = 0,
                   cal_split: str = "val") -> SimWorld:
    """Lay out ``split`` of a world (a directory written by ``kuaihl world`` or an in-memory
    :class:`kuaihl_rec.data.world.World`) on a simulated time line of ``days`` days.

    ``days``: None = the world's own span; an int D < the world's span folds its days onto D days
    (room r goes to day ``day_r mod D`` at its own time of day, so more rooms are on air at once);
    D > the span replays the world's days cyclically; ``"auto"`` picks the most days whose feed has
    :data:`AUTO_MIN_ROOMS_ON_AIR` rooms on air on average when sessions start (:func:`choose_days`)."""
    world_dir: Optional[Path] = None
    if isinstance(world, (str, Path)):
        world_dir = Path(world)
        rooms, truth, segs, cfg = _read_world_dir(world_dir)
    else:
        rooms = world.rooms.to_pandas()
        truth = world.truth.select(["live_id", "segment", "state", "attract_logit", "true_lvtr", "true_ctr", "true_retention"]).to_pandas()
        names = set(world.segments.column_names)
        cols = ["live_id", "segment", "split"] + [c for c in OBSERVABLE_COLUMNS if c in names]
        segs = world.segments.select(cols).to_pandas()
        cfg = world.config
    start_time = float(getattr(cfg, "start_time", rooms["start_timestamp"].min()))
    utc = float(getattr(cfg, "utc_offset_hours", 0.0))
    amp = float(getattr(cfg, "traffic_amplitude", 0.6))
    peak = float(getattr(cfg, "traffic_peak_hour", 21.0))

    segs = segs.sort_values(["live_id", "segment"], kind="stable").reset_index(drop=True)
    truth = truth.sort_values(["live_id", "segment"], kind="stable").reset_index(drop=True)
    if len(segs) != len(truth) or not np.array_equal(segs["live_id"].to_numpy(), truth["live_id"].to_numpy()) or not np.array_equal(
        segs["segment"].to_numpy(), truth["segment"].to_numpy()
    ):
        raise ValueError("the segment table and the truth sidecar do not hold the same (live_id, segment) rows")

    sel_rooms = rooms[rooms["split"] == split].sort_values("live_id").reset_index(drop=True)
    if len(sel_rooms) == 0:
        raise ValueError(f"the world has no rooms in split {split!r}")
    mask = segs["split"].to_numpy() == split
    obs = segs[mask].drop(columns=["split"]).reset_index(drop=True)
    tr = truth[mask].reset_index(drop=True)
    val_mask = segs["split"].to_numpy() == cal_split
    val_obs = segs[val_mask].drop(columns=["split"]).reset_index(drop=True) if val_mask.any() else None

    live_id = obs["live_id"].to_numpy(np.int64)
    segment = obs["segment"].to_numpy(np.int64)
    # base rows per room: contiguous, segments 0..T-1
    first = np.flatnonzero(np.r_[True, live_id[1:] != live_id[:-1]])
    lengths = np.diff(np.r_[first, len(live_id)])
    room_ids = live_id[first]
    if not np.array_equal(room_ids, sel_rooms["live_id"].to_numpy(np.int64)):
        raise ValueError(f"rooms.parquet and the segment table disagree on the rooms of split {split!r}")
    if not np.array_equal(segment, np.concatenate([np.arange(n) for n in lengths])):
        raise ValueError("segments of a room must be consecutive from 0")

    # local day and time of day of each room's start
    start = sel_rooms["start_timestamp"].to_numpy(np.float64)
    local = start - start_time + utc * 3600.0
    all_local = rooms["start_timestamp"].to_numpy(np.float64) - start_time + utc * 3600.0
    day0 = math.floor(all_local.min() / 86400.0)
    day = np.floor(local / 86400.0).astype(np.int64) - day0
    tick_in_day = np.floor((local - np.floor(local / 86400.0) * 86400.0) / SEGMENT_SECONDS).astype(np.int64)
    world_days = int(day.max()) + 1
    if days == "auto":
        D = choose_days(day, tick_in_day, lengths, AUTO_MIN_ROOMS_ON_AIR, amp, peak)
    else:
        D = int(days) if days else world_days
    if D < 1:
        raise ValueError("days must be >= 1")
    if D <= world_days:
        copy_room = np.arange(len(room_ids))
        copy_day = day % D
    else:
        cycles = -(-D // world_days)
        copy_room = np.tile(np.arange(len(room_ids)), cycles)
        copy_day = (np.tile(day, cycles) + np.repeat(np.arange(cycles), len(room_ids)) * world_days)
        keep = copy_day < D
        copy_room, copy_day = copy_room[keep], copy_day[keep]
    copy_start = copy_day * TICKS_PER_DAY + tick_in_day[copy_room]
    copy_len = lengths[copy_room]
    n_sim = int(copy_len.sum())
    room_of = np.repeat(np.arange(len(copy_room)), copy_len)
    offs = np.r_[0, np.cumsum(copy_len)[:-1]]
    seg_in = np.arange(n_sim) - np.repeat(offs, copy_len)
    base_row = first[copy_room][room_of] + seg_in
    tick = copy_start[room_of] + seg_in
    room_last_row = offs + copy_len - 1

    cats = sorted(rooms["category"].unique().tolist())
    cat_code = {c: i for i, c in enumerate(cats)}
    room_cat = np.array([cat_code[c] for c in sel_rooms["category"]], dtype=np.int64)[copy_room]

    ctr = np.clip(tr["true_ctr"].to_numpy(np.float64), 1e-6, 1 - 1e-6)
    ctr_logit = np.log(ctr / (1 - ctr))[base_row]
    true_lvtr = tr["true_lvtr"].to_numpy(np.float64)[base_row]
    ret = np.clip(tr["true_retention"].to_numpy(np.float64), 1e-6, 1 - 1e-9)[base_row]
    hazard_cum = np.cumsum(-np.log(ret))
    salt = np.uint64(stable_hash("tiebreak", seed) & 0xFFFFFFFFFFFFFFFF)
    copy_id = np.arange(len(copy_room), dtype=np.uint64)[room_of]
    tiebreak = _uniform(splitmix64(splitmix64(live_id[base_row].astype(np.uint64) ^ salt) ^ (copy_id << np.uint64(20)) ^ seg_in.astype(np.uint64)))

    n_ticks = int(max(tick.max() + 1, D * TICKS_PER_DAY))
    count = np.bincount(tick, minlength=n_ticks).astype(np.int64)
    hours = (np.arange(D * TICKS_PER_DAY) % TICKS_PER_DAY) * SEGMENT_SECONDS / 3600.0
    traffic = _traffic(hours, amp, peak)
    start_weight = traffic * (count[: D * TICKS_PER_DAY] >= 1)
    if start_weight.sum() <= 0:
        raise ValueError("no room of the simulated split is on air during the simulated days")

    meta = {"split": split, "days": D, "world_days": world_days, "folded": D < world_days, "replayed": D > world_days,
            "start_time": start_time, "utc_offset_hours": utc, "traffic_amplitude": amp, "traffic_peak_hour": peak,
            "world_preset": getattr(cfg, "preset", None), "content_signal": getattr(cfg, "content_signal", None)}
    return SimWorld(
        live_id=live_id, segment=segment, obs=obs, truth=tr, val_obs=val_obs,
        base_row=base_row, tick=tick, room=room_of, room_last_row=room_last_row, room_cat=room_cat,
        ctr_logit=ctr_logit, true_lvtr=true_lvtr, hazard_cum=hazard_cum, tiebreak=tiebreak,
        count=count, start_weight=start_weight, categories=cats, days=D, world_days=world_days,
        split=split, world_dir=world_dir, meta=meta,
    )


# ------------------------------------------------------------------------------------------------
# Users and sessions
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Sessions:
    """Sessions of a population (one row each): user index, start tick, budget (s), id, day."""

    user: np.ndarray
    tick: np.ndarray
    budget: np.ndarray
    uid: np.ndarray
    day: np.ndarray

    def __len__(self) -> int:
        return len(self.user)

    def subset(self, idx: np.ndarray) -> "Sessions":
        return Sessions(self.user[idx], self.tick[idx], self.budget[idx], self.uid[idx], self.day[idx])


@dataclasses.dataclass
class Population:
    """Simulated users (traits) and their sessions in the experiment (and pre-) period."""

    user_id: np.ndarray
    activity: np.ndarray
    taste: np.ndarray  # [U, n_categories] click-logit taste
    bias: np.ndarray
    patience: np.ndarray
    return_prob: np.ndarray
    stickiness: np.ndarray
    sessions: Sessions
    pre_sessions: Optional[Sessions]
    seed: int
    days: int

    @property
    def n_users(self) -> int:
        return len(self.user_id)


def _draw_sessions(world: SimWorld, activity: np.ndarray, budget_med: np.ndarray, cfg: SimConfig, rng: np.random.Generator,
                   user_id: np.ndarray, pre: bool) -> Sessions:
    D = world.days
    counts = rng.poisson(activity * D)
    S = int(counts.sum())
    user = np.repeat(np.arange(len(activity)), counts).astype(np.int64)
    cdf = np.cumsum(world.start_weight)
    tick = np.searchsorted(cdf, rng.random(S) * cdf[-1], side="right").astype(np.int64)
    tick = np.minimum(tick, len(cdf) - 1)
    budget = budget_med[user] * np.exp(cfg.budget_session_sigma * rng.standard_normal(S))
    k = np.arange(S) - np.repeat(np.cumsum(counts) - counts, counts)
    if np.any(k >= (1 << 19)):
        raise ValueError("more than 2^19 sessions for one user")
    uid = (user_id[user].astype(np.uint64) << np.uint64(20)) | (np.uint64(1 if pre else 0) << np.uint64(19)) | k.astype(np.uint64)
    return Sessions(user, tick, budget, uid, (tick // TICKS_PER_DAY).astype(np.int64))


def make_population(world: SimWorld, n_users: int, seed: int = 0, cfg: SimConfig = SimConfig(), pre_period: bool = True,
                    first_user_id: int = 1) -> Population:
    """Draw ``n_users`` users (ids ``first_user_id ..``) and their sessions; deterministic in ``seed``."""
    if n_users < 1:
        raise ValueError("n_users must be >= 1")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0x75736572])))
    U, C = n_users, len(world.categories)
    user_id = np.arange(first_user_id, first_user_id + U, dtype=np.int64)
    activity = rng.gamma(cfg.activity_shape, cfg.sessions_per_day / cfg.activity_shape, U)
    taste = cfg.taste_sigma * rng.standard_normal((U, C))
    bias = cfg.click_bias_sigma * rng.standard_normal(U)
    a = cfg.patience_mean * cfg.patience_concentration
    patience = rng.beta(a, cfg.patience_concentration - a, U)
    a = cfg.return_mean * cfg.return_concentration
    return_prob = rng.beta(a, cfg.return_concentration - a, U)
    budget_med = cfg.budget_median_s * np.exp(cfg.budget_user_sigma * rng.standard_normal(U))
    stick = np.exp(cfg.stickiness_sigma * rng.standard_normal(U))
    srng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0x73657373])))
    sessions = _draw_sessions(world, activity, budget_med, cfg, srng, user_id, pre=False)
    pre = None
    if pre_period:
        prng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0x70726500])))
        pre = _draw_sessions(world, activity, budget_med, cfg, prng, user_id, pre=True)
    return Population(user_id, activity, taste, bias, patience, return_prob, stick, sessions, pre, seed, world.days)


# ------------------------------------------------------------------------------------------------
# Feeds
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Feed:
    """One arm's feed: sim rows sorted by (tick, -score, tiebreak); tick t's feed is ``order[ptr[t]:ptr[t]+count[t]]``."""

    order: np.ndarray
    ptr: np.ndarray
    count: np.ndarray
    score: np.ndarray  # per sim row


def build_feed(world: SimWorld, base_scores: np.ndarray) -> Feed:
    """Sort every tick's rooms on air by the blended score of the segment they broadcast."""
    base_scores = np.asarray(base_scores, dtype=np.float64)
    if base_scores.shape != world.live_id.shape:
        raise ValueError(f"expected one score per base row ({len(world.live_id)}), got {base_scores.shape}")
    if not np.isfinite(base_scores).all():
        raise ValueError("blended scores must be finite (fill missing term scores first)")
    score = base_scores[world.base_row]
    order = np.lexsort((world.tiebreak, -score, world.tick))
    ptr = np.r_[0, np.cumsum(world.count)].astype(np.int64)
    return Feed(order=order, ptr=ptr, count=world.count, score=score)


# ------------------------------------------------------------------------------------------------
# The cascade
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SessionOutcomes:
    """Outcome counters (:data:`OUTCOME_FIELDS`): per session ``values[S, F]`` (when asked for) and/or
    per user and day ``user_days[n_users, days, F]`` (float32), per-position totals, an optional log."""

    values: Optional[np.ndarray]
    position_impressions: np.ndarray
    position_clicks: np.ndarray
    rounds: int
    empty_visits: int
    log: Optional[Dict[str, np.ndarray]] = None
    user_days: Optional[np.ndarray] = None
    n_impressions: int = 0

    @property
    def impressions(self) -> int:
        return int(self.n_impressions)


_STREAM_CLICK, _STREAM_SCAN, _STREAM_SHORT, _STREAM_EXIT, _STREAM_SURV, _STREAM_RETURN = range(1, 7)


def simulate(world: SimWorld, feed: Feed, pop: Population, sessions: Sessions, cfg: SimConfig = SimConfig(), seed: int = 0,
             planted: Optional[Mapping[str, float]] = None, log: bool = False, n_users: Optional[int] = None,
             per_session: bool = True, out_rows: Optional[np.ndarray] = None) -> SessionOutcomes:
    """Run ``sessions`` of ``pop`` through ``feed``; vectorised over sessions, one step per visit round.

    ``planted`` (for calibration tests): ``click_multiplier`` scales every click probability (a
    behavioural effect), ``play_multiplier`` scales the *recorded* play seconds (an exact effect of
    known size on play duration). ``log=True`` also returns every impression
    (session, round, tick, position, row, clicked). ``n_users``: also sum the outcomes per user and
    day into ``user_days[n_users, days, F]`` as the chunks finish, session i going to row
    ``out_rows[i]`` (default ``sessions.user``), which must be non-decreasing (sessions are sorted by
    user, as :func:`make_population` and :meth:`Sessions.subset` leave them); ``per_session=False``
    keeps only those sums (memory for millions of sessions).
    """
    planted = dict(planted or {})
    unknown = set(planted) - {"click_multiplier", "play_multiplier"}
    if unknown:
        raise ValueError(f"unknown planted effect(s) {sorted(unknown)}")
    click_mult = float(planted.get("click_multiplier", 1.0))
    play_mult = float(planted.get("play_multiplier", 1.0))
    K = int(min(cfg.max_positions, max(int(world.count.max()), 1)))
    kk = np.arange(K + 1)
    decay = (1.0 + np.arange(K)) ** (-cfg.position_decay)
    S = len(sessions)
    F = len(OUTCOME_FIELDS)
    values = np.zeros((S, F)) if per_session else None
    user_days = None
    if n_users is not None:
        out_rows = sessions.user if out_rows is None else np.asarray(out_rows, dtype=np.int64)
        if len(out_rows) != S or (S and (np.any(np.diff(out_rows) < 0) or out_rows[0] < 0 or out_rows[-1] >= n_users)):
            raise ValueError("out_rows must give every session a row in [0, n_users), non-decreasing")
        user_days = np.zeros((n_users * pop.days, F), dtype=np.float32)
    n_imp_total = 0
    pos_imp = np.zeros(K, dtype=np.int64)
    pos_clk = np.zeros(K, dtype=np.int64)
    seed_mix = np.uint64(stable_hash("sessions", seed) & 0xFFFFFFFFFFFFFFFF)
    n_ticks, N = world.n_ticks, world.n_rows
    logs: Dict[str, List[np.ndarray]] = {k: [] for k in ("session", "round", "tick", "position", "row", "clicked")} if log else {}
    max_round = 0
    empty = 0
    for lo in range(0, S, cfg.chunk_sessions):
        idx = np.arange(lo, min(lo + cfg.chunk_sessions, S))
        vals = np.zeros((len(idx), F))
        vals[:, 5] = 1.0
        chunk_idx = idx
        user = sessions.user[idx]
        tick = sessions.tick[idx].copy()
        budget = sessions.budget[idx].copy()
        last_room = np.full(len(idx), -1, dtype=np.int64)
        hs = splitmix64(sessions.uid[idx] ^ seed_mix)
        r = 0
        while len(idx) and r < cfg.max_rounds:
            m = len(idx)
            t = np.minimum(tick, n_ticks - 1)
            cnt = np.where(tick < n_ticks, feed.count[t], 0)
            cand = feed.order[np.minimum(feed.ptr[t][:, None] + kk, N - 1)]
            cvalid = kk < cnt[:, None]
            excl = cvalid & (world.room[cand] == last_room[:, None])
            has_ex = excl.any(axis=1)
            pex = np.where(has_ex, excl.argmax(axis=1), K + 1)
            src = kk[:K] + (kk[:K] >= pex[:, None])
            rows = np.take_along_axis(cand, src, axis=1)
            n_feed = cnt - has_ex
            valid = kk[:K] < n_feed[:, None]
            empty += int(np.sum(n_feed <= 0))
            # click and scan draws per (session, round, position)
            u_click = _uniform(splitmix64(hs[:, None] ^ _salt(r, _STREAM_CLICK, kk[:K])))
            u_scan = _uniform(splitmix64(hs[:, None] ^ _salt(r, _STREAM_SCAN, kk[:K])))
            logit = world.ctr_logit[rows] + pop.taste[user[:, None], world.room_cat[world.room[rows]]] + pop.bias[user][:, None]
            p = decay * (1.0 / (1.0 + np.exp(-logit)))
            if click_mult != 1.0:
                p = np.minimum(1.0, p * click_mult)
            clk = (u_click < p) & valid
            go_on = ~clk & (u_scan < pop.patience[user][:, None])
            reached = valid.copy()
            if K > 1:
                reached[:, 1:] &= np.cumprod(go_on[:, :-1], axis=1, dtype=bool)
            cm = reached & clk
            clicked = cm.any(axis=1)
            kpos = cm.argmax(axis=1)
            n_imp = reached.sum(axis=1)
            vals[idx - lo, 0] += n_imp
            vals[idx - lo, 6] += n_feed > 0
            pos_imp += reached.sum(axis=0)
            if log:
                si, pi = np.nonzero(reached)
                logs["session"].append(idx[si])
                logs["round"].append(np.full(len(si), r))
                logs["tick"].append(tick[si])
                logs["position"].append(pi)
                logs["row"].append(rows[si, pi])
                logs["clicked"].append(cm[si, pi])
            # watches
            ci = np.flatnonzero(clicked)
            cont = np.zeros(m, dtype=bool)
            if len(ci):
                np.add.at(pos_clk, kpos[ci], 1)
                row_c = rows[ci, kpos[ci]]
                hci = hs[ci]
                u_short = _uniform(splitmix64(hci ^ _salt(r, _STREAM_SHORT)))
                u_exit = _uniform(splitmix64(hci ^ _salt(r, _STREAM_EXIT)))
                u_surv = _uniform(splitmix64(hci ^ _salt(r, _STREAM_SURV)))
                u_ret = _uniform(splitmix64(hci ^ _salt(r, _STREAM_RETURN)))
                short = u_short < cfg.short_view_scale * (1.0 - world.true_lvtr[row_c])
                E = -np.log(u_surv) / pop.stickiness[user[ci]]
                last = np.searchsorted(world.hazard_cum, world.hazard_cum[row_c] + E, side="right") - 1
                room_end = world.room_last_row[world.room[row_c]]
                further = np.clip(np.minimum(last, room_end) - row_c, 0, None)
                dur = np.where(short, SHORT_VIEW_S * u_exit, SEGMENT_SECONDS * further + 3.0 + 27.0 * u_exit)
                b = budget[ci]
                capped = dur >= b
                dur = np.minimum(dur, b)
                budget[ci] = b - dur
                rc = idx[ci] - lo
                vals[rc, 1] += 1
                vals[rc, 2] += dur > LONG_VIEW_S
                vals[rc, 3] += dur < SHORT_VIEW_S
                vals[rc, 4] += dur * play_mult
                tick[ci] += np.where(short, 1, further + 1)
                last_room[ci] = world.room[row_c]
                cont[ci] = (~capped) & (u_ret < pop.return_prob[user[ci]]) & (tick[ci] < n_ticks)
            keep = np.flatnonzero(cont)
            idx, user, tick, budget, last_room, hs = idx[keep], user[keep], tick[keep], budget[keep], last_room[keep], hs[keep]
            r += 1
        max_round = max(max_round, r)
        n_imp_total += int(vals[:, 0].sum())
        if values is not None:
            values[chunk_idx] = vals
        if user_days is not None and len(chunk_idx):
            # the chunk's sessions cover a contiguous range of users: a bincount over that range only
            key = out_rows[chunk_idx] * pop.days + np.minimum(sessions.day[chunk_idx], pop.days - 1)
            k0, k1 = int(out_rows[chunk_idx[0]]) * pop.days, (int(out_rows[chunk_idx[-1]]) + 1) * pop.days
            for f in range(F):
                user_days[k0:k1, f] += np.bincount(key - k0, weights=vals[:, f], minlength=k1 - k0).astype(np.float32)
    out_log = {k: (np.concatenate(v) if v else np.zeros(0, dtype=np.int64)) for k, v in logs.items()} if log else None
    ud = user_days.reshape(n_users, pop.days, F) if user_days is not None else None
    return SessionOutcomes(values, pos_imp, pos_clk, max_round, empty, out_log, ud, n_imp_total)


def aggregate_users(sessions: Sessions, outcomes: SessionOutcomes, n_users: int, days: int) -> np.ndarray:
    """Per-user per-day sums ``[n_users, days, len(OUTCOME_FIELDS)]`` (float32; sessions counted on their start day)
    of per-session outcomes (``simulate(..., per_session=True)``)."""
    if outcomes.values is None:
        raise ValueError("these outcomes were simulated without per-session values")
    key = sessions.user * days + np.minimum(sessions.day, days - 1)
    out = np.zeros((n_users * days, len(OUTCOME_FIELDS)))
    for f in range(len(OUTCOME_FIELDS)):
        out[:, f] = np.bincount(key, weights=outcomes.values[:, f], minlength=n_users * days)
    return out.reshape(n_users, days, len(OUTCOME_FIELDS)).astype(np.float32)
