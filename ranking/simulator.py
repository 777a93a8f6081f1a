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

Modules: :mod:`ranking.sim_config` (clock, :class:`SimConfig`), :mod:`ranking.sim_world` (the world
on the time line), :mod:`ranking.population` (users and sessions), :mod:`ranking.outcomes` (the
outcome columns), :mod:`ranking.random_numbers` (the counter-based draws); this module holds the
feeds and the cascade (:func:`simulate`): per chunk of sessions, visit rounds of *open the feed*,
*scan it* and *watch the clicked room* until every session has ended.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from ranking.outcomes import N_OUTCOMES, OUTCOME_FIELDS, Outcome, SessionOutcomes, aggregate_users
from ranking.population import Population, Sessions, make_population
from ranking.random_numbers import UINT64_MASK, splitmix64, stable_hash, stream_salt, uniform_from_hash
from ranking.sim_config import LONG_VIEW_S, SEGMENT_SECONDS, SHORT_VIEW_S, TICKS_PER_DAY, SimConfig
from ranking.sim_world import AUTO_MIN_ROOMS_ON_AIR, SimWorld, choose_days, load_sim_world

logger = logging.getLogger(__name__)

__all__ = [
    "AUTO_MIN_ROOMS_ON_AIR",
    "Feed",
    "LONG_VIEW_S",
    "N_OUTCOMES",
    "OUTCOME_FIELDS",
    "Outcome",
    "Population",
    "SEGMENT_SECONDS",
    "SHORT_VIEW_S",
    "SessionOutcomes",
    "Sessions",
    "SimConfig",
    "SimWorld",
    "TICKS_PER_DAY",
    "aggregate_users",
    "build_feed",
    "choose_days",
    "load_sim_world",
    "make_population",
    "simulate",
    "splitmix64",
]

#: Random streams of a visit round (one uniform per session, or per session and position, each).
_STREAM_CLICK, _STREAM_SCAN, _STREAM_SHORT, _STREAM_EXIT, _STREAM_SURVIVAL, _STREAM_RETURN = range(1, 7)
#: The columns of the impression log (``simulate(..., log=True)``).
LOG_FIELDS = ("session", "round", "tick", "position", "row", "clicked")
PLANTED_EFFECTS = ("click_multiplier", "play_multiplier")


# ------------------------------------------------------------------------------------------------
# Feeds
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Feed:
    """One arm's feed: sim rows sorted by (tick, -score, tiebreak); tick t's feed is
    ``order[ptr[t]:ptr[t]+count[t]]``."""

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
class _Cascade:
    """What stays fixed while sessions run through one feed."""

    world: SimWorld
    feed: Feed
    pop: Population
    cfg: SimConfig
    n_positions: int
    slots: np.ndarray  # 0 .. n_positions: the feed's positions and one more (the room just left is skipped)
    decay: np.ndarray  # [n_positions] position factor of the click probability
    click_multiplier: float
    play_multiplier: float
    seed_mix: np.uint64

    @classmethod
    def prepare(cls, world: SimWorld, feed: Feed, pop: Population, cfg: SimConfig, seed: int,
                planted: Optional[Mapping[str, float]]) -> "_Cascade":
        planted = dict(planted or {})
        unknown = set(planted) - set(PLANTED_EFFECTS)
        if unknown:
            raise ValueError(f"unknown planted effect(s) {sorted(unknown)}")
        n_positions = int(min(cfg.max_positions, max(int(world.count.max()), 1)))
        return cls(world, feed, pop, cfg, n_positions, slots=np.arange(n_positions + 1),
                   decay=(1.0 + np.arange(n_positions)) ** (-cfg.position_decay),
                   click_multiplier=float(planted.get("click_multiplier", 1.0)),
                   play_multiplier=float(planted.get("play_multiplier", 1.0)),
                   seed_mix=np.uint64(stable_hash("sessions", seed) & UINT64_MASK))

    @property
    def positions(self) -> np.ndarray:
        return self.slots[: self.n_positions]


@dataclasses.dataclass
class _Active:
    """The sessions of a chunk still in the feed, one entry each."""

    session: np.ndarray  # index into the simulated sessions
    local: np.ndarray  # row of the chunk's outcome array (the chunk is a contiguous run of sessions)
    user: np.ndarray
    tick: np.ndarray
    budget: np.ndarray  # seconds left
    last_room: np.ndarray  # room copy watched last (-1: none yet)
    hash: np.ndarray  # the session's random key

    @classmethod
    def start(cls, sessions: Sessions, chunk: np.ndarray, seed_mix: np.uint64) -> "_Active":
        return cls(chunk, np.arange(len(chunk)), sessions.user[chunk], sessions.tick[chunk].copy(),
                   sessions.budget[chunk].copy(), np.full(len(chunk), -1, dtype=np.int64),
                   splitmix64(sessions.uid[chunk] ^ seed_mix))

    def __len__(self) -> int:
        return len(self.session)

    def keep(self, which: np.ndarray) -> "_Active":
        return _Active(*(getattr(self, f.name)[which] for f in dataclasses.fields(self)))


@dataclasses.dataclass
class _Visit:
    """The feed each active session sees in this round."""

    rows: np.ndarray  # [m, n_positions] sim row at each position
    valid: np.ndarray  # [m, n_positions] the position holds a room
    n_feed: np.ndarray  # [m] rooms in the feed


def _open_feed(cascade: _Cascade, active: _Active) -> _Visit:
    """The feed at each session's tick, without the room the session has just left."""
    world, feed, slots = cascade.world, cascade.feed, cascade.slots
    tick = np.minimum(active.tick, world.n_ticks - 1)
    on_air = np.where(active.tick < world.n_ticks, feed.count[tick], 0)
    candidates = feed.order[np.minimum(feed.ptr[tick][:, None] + slots, world.n_rows - 1)]
    is_left_room = (slots < on_air[:, None]) & (world.room[candidates] == active.last_room[:, None])
    has_left_room = is_left_room.any(axis=1)
    left_position = np.where(has_left_room, is_left_room.argmax(axis=1), cascade.n_positions + 1)
    positions = cascade.positions
    rows = np.take_along_axis(candidates, positions + (positions >= left_position[:, None]), axis=1)
    n_feed = on_air - has_left_room
    return _Visit(rows, positions < n_feed[:, None], n_feed)


def _scan(cascade: _Cascade, active: _Active, visit: _Visit, round_: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(reached, clicked)`` ``[m, n_positions]``: the positions each session looked at, and its click
    (at most one: a session scans down the feed until it clicks or loses patience)."""
    world, pop, user, rows = cascade.world, cascade.pop, active.user, visit.rows
    session_key = active.hash[:, None]
    u_click = uniform_from_hash(splitmix64(session_key ^ stream_salt(round_, _STREAM_CLICK, cascade.positions)))
    u_scan = uniform_from_hash(splitmix64(session_key ^ stream_salt(round_, _STREAM_SCAN, cascade.positions)))
    logit = world.ctr_logit[rows] + pop.taste[user[:, None], world.room_cat[world.room[rows]]] + pop.bias[user][:, None]
    p_click = cascade.decay * (1.0 / (1.0 + np.exp(-logit)))
    if cascade.click_multiplier != 1.0:
        p_click = np.minimum(1.0, p_click * cascade.click_multiplier)
    clicks = (u_click < p_click) & visit.valid
    goes_on = ~clicks & (u_scan < pop.patience[user][:, None])
    reached = visit.valid.copy()
    if cascade.n_positions > 1:
        reached[:, 1:] &= np.cumprod(goes_on[:, :-1], axis=1, dtype=bool)
    return reached, reached & clicks


def _watch(cascade: _Cascade, active: _Active, watchers: np.ndarray, row: np.ndarray, round_: int,
           values: np.ndarray) -> np.ndarray:
    """Watch the clicked room (sim ``row``) for the active sessions ``watchers``: a short view or a stay
    through the room's following segments, capped by its end and the budget. Counts the watch into
    ``values``, moves the sessions' clocks on and returns which of them go back to the feed."""
    world, pop, cfg = cascade.world, cascade.pop, cascade.cfg
    key = active.hash[watchers]
    u_short = uniform_from_hash(splitmix64(key ^ stream_salt(round_, _STREAM_SHORT)))
    u_exit = uniform_from_hash(splitmix64(key ^ stream_salt(round_, _STREAM_EXIT)))
    u_survival = uniform_from_hash(splitmix64(key ^ stream_salt(round_, _STREAM_SURVIVAL)))
    u_return = uniform_from_hash(splitmix64(key ^ stream_salt(round_, _STREAM_RETURN)))
    user = active.user[watchers]
    short = u_short < cfg.short_view_scale * (1.0 - world.true_lvtr[row])
    survivable_hazard = -np.log(u_survival) / pop.stickiness[user]
    last_survived = np.searchsorted(world.hazard_cum, world.hazard_cum[row] + survivable_hazard, side="right") - 1
    room_end = world.room_last_row[world.room[row]]
    further = np.clip(np.minimum(last_survived, room_end) - row, 0, None)
    duration = np.where(short, SHORT_VIEW_S * u_exit,
                        SEGMENT_SECONDS * further + SHORT_VIEW_S + (SEGMENT_SECONDS - SHORT_VIEW_S) * u_exit)
    budget = active.budget[watchers]
    out_of_budget = duration >= budget
    duration = np.minimum(duration, budget)
    active.budget[watchers] = budget - duration
    local = active.local[watchers]
    values[local, Outcome.CLICKS] += 1
    values[local, Outcome.LONG_VIEWS] += duration > LONG_VIEW_S
    values[local, Outcome.SHORT_VIEWS] += duration < SHORT_VIEW_S
    values[local, Outcome.PLAY_S] += duration * cascade.play_multiplier
    active.tick[watchers] += np.where(short, 1, further + 1)
    active.last_room[watchers] = world.room[row]
    return (~out_of_budget) & (u_return < pop.return_prob[user]) & (active.tick[watchers] < world.n_ticks)


class _Recorder:
    """Everything :func:`simulate` returns, filled round by round and chunk by chunk."""

    def __init__(self, sessions: Sessions, days: int, n_positions: int, n_users: Optional[int], per_session: bool,
                 out_rows: Optional[np.ndarray], log: bool) -> None:
        self.sessions = sessions
        self.days = days
        self.values = np.zeros((len(sessions), N_OUTCOMES)) if per_session else None
        self.n_users = n_users
        self.user_days: Optional[np.ndarray] = None
        self.out_rows: Optional[np.ndarray] = None
        if n_users is not None:
            rows = sessions.user if out_rows is None else np.asarray(out_rows, dtype=np.int64)
            n_sessions = len(sessions)
            if len(rows) != n_sessions or (n_sessions and (np.any(np.diff(rows) < 0) or rows[0] < 0
                                                           or rows[-1] >= n_users)):
                raise ValueError("out_rows must give every session a row in [0, n_users), non-decreasing")
            self.out_rows = rows
            self.user_days = np.zeros((n_users * days, N_OUTCOMES), dtype=np.float32)
        self.position_impressions = np.zeros(n_positions, dtype=np.int64)
        self.position_clicks = np.zeros(n_positions, dtype=np.int64)
        self.impressions = 0
        self.rounds = 0
        self.empty_visits = 0
        self.log: Optional[Dict[str, List[np.ndarray]]] = {k: [] for k in LOG_FIELDS} if log else None

    def impressions_seen(self, active: _Active, round_: int, visit: _Visit, reached: np.ndarray,
                         clicked: np.ndarray, values: np.ndarray) -> None:
        self.empty_visits += int(np.sum(visit.n_feed <= 0))
        values[active.local, Outcome.IMPRESSIONS] += reached.sum(axis=1)
        values[active.local, Outcome.VISITS] += visit.n_feed > 0
        self.position_impressions += reached.sum(axis=0)
        if self.log is not None:
            session, position = np.nonzero(reached)
            for name, column in zip(LOG_FIELDS, (active.session[session], np.full(len(session), round_),
                                                 active.tick[session], position, visit.rows[session, position],
                                                 clicked[session, position])):
                self.log[name].append(column)

    def chunk_done(self, chunk: np.ndarray, values: np.ndarray, rounds: int) -> None:
        self.rounds = max(self.rounds, rounds)
        self.impressions += int(values[:, Outcome.IMPRESSIONS].sum())
        if self.values is not None:
            self.values[chunk] = values
        if self.user_days is not None and len(chunk):
            # the chunk's sessions cover a contiguous range of users: a bincount over that range only
            days, rows = self.days, self.out_rows
            key = rows[chunk] * days + np.minimum(self.sessions.day[chunk], days - 1)
            lo, hi = int(rows[chunk[0]]) * days, (int(rows[chunk[-1]]) + 1) * days
            for column in Outcome:
                sums = np.bincount(key - lo, weights=values[:, column], minlength=hi - lo)
                self.user_days[lo:hi, column] += sums.astype(np.float32)

    def outcomes(self) -> SessionOutcomes:
        log = None
        if self.log is not None:
            log = {k: (np.concatenate(v) if v else np.zeros(0, dtype=np.int64)) for k, v in self.log.items()}
        user_days = None
        if self.user_days is not None:
            user_days = self.user_days.reshape(self.n_users, self.days, N_OUTCOMES)
        return SessionOutcomes(self.values, self.position_impressions, self.position_clicks, self.rounds,
                               self.empty_visits, log, user_days, self.impressions)


def _visit_round(cascade: _Cascade, active: _Active, round_: int, values: np.ndarray,
                 recorder: _Recorder) -> _Active:
    """One visit of every active session: open the feed, scan it, watch the clicked room; the
    sessions that go back to the feed."""
    visit = _open_feed(cascade, active)
    reached, clicked = _scan(cascade, active, visit, round_)
    recorder.impressions_seen(active, round_, visit, reached, clicked, values)
    click_position = clicked.argmax(axis=1)
    watchers = np.flatnonzero(clicked.any(axis=1))
    back_to_feed = np.zeros(len(active), dtype=bool)
    if len(watchers):
        np.add.at(recorder.position_clicks, click_position[watchers], 1)
        row = visit.rows[watchers, click_position[watchers]]
        back_to_feed[watchers] = _watch(cascade, active, watchers, row, round_, values)
    return active.keep(np.flatnonzero(back_to_feed))


def _run_chunk(cascade: _Cascade, sessions: Sessions, chunk: np.ndarray, recorder: _Recorder) -> None:
    values = np.zeros((len(chunk), N_OUTCOMES))
    values[:, Outcome.SESSIONS] = 1.0
    active = _Active.start(sessions, chunk, cascade.seed_mix)
    round_ = 0
    while len(active) and round_ < cascade.cfg.max_rounds:
        active = _visit_round(cascade, active, round_, values, recorder)
        round_ += 1
    recorder.chunk_done(chunk, values, round_)


def simulate(world: SimWorld, feed: Feed, pop: Population, sessions: Sessions, cfg: SimConfig = SimConfig(),
             seed: int = 0, planted: Optional[Mapping[str, float]] = None, log: bool = False,
             n_users: Optional[int] = None, per_session: bool = True,
             out_rows: Optional[np.ndarray] = None) -> SessionOutcomes:
    """Run ``sessions`` of ``pop`` through ``feed``; vectorised over sessions, one step per visit round.

    ``planted`` (for calibration tests): ``click_multiplier`` scales every click probability (a
    behavioural effect), ``play_multiplier`` scales the *recorded* play seconds (an exact effect of
    known size on play duration). ``log=True`` also returns every impression
    (session, round, tick, position, row, clicked). ``n_users``: also sum the outcomes per user and
    day into ``user_days[n_users, days, F]`` as the chunks finish, session i going to row
    ``out_rows[i]`` (default ``sessions.user``), which must be non-decreasing (sessions are sorted by
    user, as :func:`make_population` and :meth:`Sessions.subset` leave them); ``per_session=False``
    keeps only those sums (memory for millions of sessions). Outcome columns: :class:`Outcome`.
    """
    cascade = _Cascade.prepare(world, feed, pop, cfg, seed, planted)
    recorder = _Recorder(sessions, pop.days, cascade.n_positions, n_users, per_session, out_rows, log)
    n_sessions = len(sessions)
    for first in range(0, n_sessions, cfg.chunk_sessions):
        _run_chunk(cascade, sessions, np.arange(first, min(first + cfg.chunk_sessions, n_sessions)), recorder)
    return recorder.outcomes()
