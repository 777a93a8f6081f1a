"""The synthetic live-streaming world: a documented generative model of a platform.

Streamers (category, talent per content state, appeal, popularity, schedule) broadcast
rooms over several simulated days. Every 30 s segment of a room has a *hidden* content
state (a category-specific Markov chain over idle / talk / performance / pk / highlight)
and a hidden attractiveness logit; the audience reacts to it (exposures, clicks, viewers,
long viewers, comments, ...), and visual / text features are generated from the hidden
state through fixed random maps plus noise, the text misaligned in time. The equations,
and every knob of :class:`~kuaihl_rec.data.world_config.WorldConfig`, are in
``docs/WORLD.md``.

What models see is the segment table (``kuaihl_rec.data.schema``). The hidden states and
true rates go to a separate ground-truth sidecar (``OUT/truth/``), for the A/B simulator
and for plots only.

Random streams (``np.random.SeedSequence(seed).spawn``), each used in a fixed order:

- ``structure``: categories, room counts, lengths, schedules, splits;
- ``latent``:    streamer talents, appeal, popularity, CTR cover term;
- ``chain``:     content-state chain, quality and trend processes, CTR noise;
- ``audience``:  exposures, clicks, viewers, counters;
- ``visual`` / ``text``: the fixed random maps, styles, text shifts, lyrics and noise.

``chain_seed`` (when set) re-seeds ``latent``, ``chain`` and ``audience`` only. With
``content_signal = 0`` the features are a function of the ``visual`` / ``text`` streams
and of the room structure only, so they are independent of attractiveness by construction.

Example::

    >>> from kuaihl_rec.data.world import generate_world, load_world_config
    >>> world = generate_world(load_world_config("tiny"))
    >>> world.segments.num_rows == world.truth.num_rows
    True
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import pyarrow as pa

from kuaihl_rec.data.io import atomic_write_bytes, atomic_write_json, atomic_write_parquet, write_segment_table
from kuaihl_rec.data.schema import SEGMENT_SECONDS, SPLITS, FeatureSizes, arrow_schema
from kuaihl_rec.data.world_config import (
    CATEGORY_NAMES,
    STATE_NAMES,
    WORLD_PRESETS,
    WorldConfig,
    WorldConfigError,
    config_to_yaml,
    load_world_config,
)

__all__ = [
    "CATEGORY_PROFILES",
    "STATE_NAMES",
    "WORLD_PRESETS",
    "World",
    "WorldConfig",
    "WorldConfigError",
    "generate_world",
    "load_world_config",
    "plot_room_timeline",
    "summarize_world",
    "transition_matrices",
    "write_world",
]

logger = logging.getLogger(__name__)

IDLE, TALK, PERFORMANCE, PK, HIGHLIGHT = range(5)
N_STATES = len(STATE_NAMES)
STREAMER_ID_BASE = 10_000
LIVE_ID_BASE = 1_000_000
N_LYRIC_CODES = 16
SONG_SEGMENTS = 4  # a lyric code (one song) lasts this many segments
_CHUNK = 65_536
_LIST_CHUNK_ROWS = 1 << 20

# Reaction elasticities (multiplied by reaction_coef) and lag weights of the counters.
_COMMENT_LAGS = (0.6, 0.4)  # weights of d_{t-1}, d_{t-2}
_GIFT_LAGS = (0.5, 0.5)
_GIFT_ELASTICITY = 1.5
_FOLLOW_ELASTICITY = 1.2


@dataclasses.dataclass(frozen=True)
class CategoryProfile:
    """Built-in behaviour of a streamer category (documented in docs/WORLD.md).

    occupancy:       relative weight of jumping into idle / talk / performance / pk
    highlight_entry: per-segment probability of a highlight burst from idle / talk / performance / pk
    taste_peak_hour: local hour at which the audience likes this category most
    start_hour:      mean local hour at which its streamers go live
    """

    occupancy: Tuple[float, float, float, float]
    highlight_entry: Tuple[float, float, float, float]
    taste_peak_hour: float
    start_hour: float


CATEGORY_PROFILES: Dict[str, CategoryProfile] = {
    "dance": CategoryProfile((0.15, 0.25, 0.50, 0.10), (0.0, 0.010, 0.045, 0.050), 22.0, 20.0),
    "singing": CategoryProfile((0.15, 0.30, 0.50, 0.05), (0.0, 0.010, 0.050, 0.040), 21.0, 20.0),
    "gaming": CategoryProfile((0.20, 0.20, 0.55, 0.05), (0.0, 0.005, 0.055, 0.040), 23.0, 21.0),
    "chat": CategoryProfile((0.25, 0.60, 0.10, 0.05), (0.0, 0.015, 0.030, 0.040), 15.0, 14.0),
    "pk": CategoryProfile((0.10, 0.25, 0.15, 0.50), (0.0, 0.010, 0.030, 0.060), 21.0, 19.0),
    "shopping": CategoryProfile((0.15, 0.60, 0.20, 0.05), (0.0, 0.010, 0.030, 0.030), 19.0, 18.0),
}
assert tuple(sorted(CATEGORY_PROFILES)) == tuple(sorted(CATEGORY_NAMES))
_INITIAL_STATE = np.array([0.6, 0.4, 0.0, 0.0, 0.0])
# Where a highlight burst returns to, before multiplying by the category occupancy.
_HIGHLIGHT_RETURN = np.array([0.2, 1.0, 1.0, 1.0])


@dataclasses.dataclass
class World:
    """A generated world.

    segments:  the segment table models see (``kuaihl_rec.data.schema`` columns, sorted by live_id, segment)
    truth:     hidden per-segment ground truth, row-aligned with ``segments``
    streamers: hidden per-streamer parameters
    rooms:     per-room schedule (start / end, split, cold start)
    sizes:     feature sizes of ``visual`` / ``text``
    config:    the resolved :class:`WorldConfig`
    """

    segments: pa.Table
    truth: pa.Table
    streamers: pa.Table
    rooms: pa.Table
    sizes: FeatureSizes
    config: WorldConfig
    timings: Dict[str, float] = dataclasses.field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# Hidden chain
# ------------------------------------------------------------------------------------------------


def transition_matrices(cfg: WorldConfig) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Per-category transition matrices of the hidden state chain.

    Returns ``(P, exit, categories)``: ``P[c, i, j]`` = Pr(state j at t+1 | state i at t)
    for category ``categories[c]``, and ``exit[c, j]`` the distribution a highlight burst
    returns to when it is forced to end at ``highlight_max_length``.
    """
    cats = [name for name, _ in cfg.category_weights]
    P = np.zeros((len(cats), N_STATES, N_STATES))
    exits = np.zeros((len(cats), N_STATES))
    leave = 1.0 / cfg.state_dwell
    hl_stay = 1.0 - 1.0 / cfg.highlight_mean_length
    for c, name in enumerate(cats):
        prof = CATEGORY_PROFILES[name]
        occ = np.asarray(prof.occupancy, dtype=float)
        for i in range(4):
            p_hl = min(prof.highlight_entry[i] * cfg.highlight_rate, 0.5)
            others = occ.copy()
            others[i] = 0.0
            P[c, i, :4] = (1.0 - p_hl) * leave * others / others.sum()
            P[c, i, i] = (1.0 - p_hl) * (1.0 - leave)
            P[c, i, HIGHLIGHT] = p_hl
        ret = _HIGHLIGHT_RETURN * occ
        exits[c, :4] = ret / ret.sum()
        P[c, HIGHLIGHT, :4] = (1.0 - hl_stay) * exits[c, :4]
        P[c, HIGHLIGHT, HIGHLIGHT] = hl_stay
    return P, exits, cats


def _cumulative(p: np.ndarray) -> np.ndarray:
    cum = np.cumsum(p, axis=-1)
    cum[..., -1] = 1.0 + 1e-9  # u in [0, 1) never falls past the last state
    return cum


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# ------------------------------------------------------------------------------------------------
# Structure: streamers, rooms, schedules, splits
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Structure:
    cats: List[str]
    streamer_cat: np.ndarray  # [S] index into cats
    pref_hour: np.ndarray  # [S] local hour
    counts: np.ndarray  # [S] rooms per streamer
    cold: np.ndarray  # [S] bool: all rooms in test
    room_streamer: np.ndarray  # [R] in live_id order
    room_len: np.ndarray  # [R]
    room_start: np.ndarray  # [R] unix seconds
    room_split: np.ndarray  # [R] code into SPLITS


def _room_lengths(cfg: WorldConfig, rng: np.random.Generator) -> np.ndarray:
    R = cfg.n_rooms
    sigma = cfg.room_length_sigma
    mu = np.log(cfg.segments_per_room) - 0.5 * sigma**2
    raw = np.exp(mu + sigma * rng.standard_normal(R))
    lo, hi = cfg.min_segments_per_room, cfg.max_segments_per_room
    if cfg.total_segments is not None:
        raw *= cfg.total_segments / raw.sum()
    lengths = np.clip(np.rint(raw), lo, hi).astype(np.int64)
    if cfg.total_segments is not None:
        # Spread the rounding/clipping residual over random rooms that have room to move.
        order = rng.permutation(R)
        diff = cfg.total_segments - int(lengths.sum())
        while diff != 0:
            step = 1 if diff > 0 else -1
            movable = order[(lengths[order] < hi) if step > 0 else (lengths[order] > lo)]
            if len(movable) == 0:  # pragma: no cover - the validated bounds make this unreachable
                raise WorldConfigError(f"world config key 'total_segments': cannot reach {cfg.total_segments}")
            take = movable[: min(abs(diff), len(movable))]
            lengths[take] += step
            diff -= step * len(take)
    return lengths


def _structure(cfg: WorldConfig, rng: np.random.Generator) -> _Structure:
    S, R = cfg.n_streamers, cfg.n_rooms
    cats = [name for name, _ in cfg.category_weights]
    w = np.array([wt for _, wt in cfg.category_weights], dtype=float)
    streamer_cat = rng.choice(len(cats), size=S, p=w / w.sum())
    activity = np.exp(cfg.activity_sigma * rng.standard_normal(S))
    counts = 1 + rng.multinomial(R - S, activity / activity.sum())

    n_test = int(round(cfg.test_fraction * R))
    n_val = int(round(cfg.val_fraction * R))
    n_cold = int(round(cfg.cold_start_fraction * n_test))
    if cfg.cold_start_fraction > 0 and n_test > 0:
        n_cold = max(n_cold, 1)
    # Cold-start streamers: fewest rooms first; the last one is trimmed to the exact count
    # and its other rooms go to warm streamers.
    cold = np.zeros(S, dtype=bool)
    remaining = n_cold
    tie = rng.random(S)
    for s in np.lexsort((tie, counts)):
        if remaining == 0:
            break
        if counts[s] > remaining:
            extra = int(counts[s] - remaining)
            counts[s] = remaining
            cold[s] = True
            warm = np.flatnonzero(~cold)
            if len(warm) == 0:
                raise WorldConfigError("world config key 'cold_start_fraction': leaves no warm streamer")
            receivers = rng.choice(warm, size=extra, p=activity[warm] / activity[warm].sum())
            np.add.at(counts, receivers, 1)
            remaining = 0
        else:
            cold[s] = True
            remaining -= int(counts[s])
    if (~cold).sum() == 0 and R > n_cold:  # pragma: no cover
        raise WorldConfigError("world config key 'cold_start_fraction': leaves no warm streamer")

    room_streamer = np.repeat(np.arange(S), counts)  # grouped by streamer
    first = np.repeat(np.cumsum(counts) - counts, counts)
    rank = np.arange(R) - first  # 0.. counts-1 within the streamer, chronological
    room_len = _room_lengths(cfg, rng)

    # Schedules: a preferred local start hour per streamer; the k-th of a streamer's r rooms
    # goes live on a day of the k-th of r equal strata of the n_days days.
    start_hours = np.array([CATEGORY_PROFILES[c].start_hour for c in cats])
    pref_hour = (start_hours[streamer_cat] + 2.0 * rng.standard_normal(S)) % 24.0
    r = counts[room_streamer].astype(float)
    day = np.floor((rank + rng.random(R)) * cfg.n_days / r)
    hour = pref_hour[room_streamer] + cfg.schedule_jitter_hours * rng.standard_normal(R)
    start = cfg.start_time + day * 86400.0 + (hour - cfg.utc_offset_hours) * 3600.0
    start = (np.rint(start / SEGMENT_SECONDS) * SEGMENT_SECONDS).astype(np.int64)
    gap = 20 * SEGMENT_SECONDS  # at least 10 minutes between two rooms of one streamer
    for k in range(1, int(counts.max())):
        idx = np.flatnonzero(rank == k)
        start[idx] = np.maximum(start[idx], start[idx - 1] + SEGMENT_SECONDS * room_len[idx - 1] + gap)

    # Splits, by room: cold streamers' rooms -> test; every warm streamer keeps one random
    # room in train; the other warm rooms are drawn for test and val.
    split = np.zeros(R, dtype=np.int8)  # 0 train, 1 val, 2 test
    room_cold = cold[room_streamer]
    split[room_cold] = 2
    keep = np.zeros(R, dtype=bool)
    keep_rank = np.floor(rng.random(S) * counts).astype(np.int64)
    keep[first + keep_rank[room_streamer] == np.arange(R)] = True
    candidates = np.flatnonzero(~room_cold & ~keep)
    n_test_warm = max(n_test - int(room_cold.sum()), 0)
    if n_test_warm + n_val > len(candidates):
        raise WorldConfigError(
            f"world config: {R} rooms for {S} streamers leave {len(candidates)} rooms to draw "
            f"{n_test_warm} warm test and {n_val} val rooms from; raise n_rooms or lower test_fraction/val_fraction"
        )
    drawn = rng.permutation(candidates)
    split[drawn[:n_test_warm]] = 2
    split[drawn[n_test_warm : n_test_warm + n_val]] = 1

    # live_id order = chronological order of the room starts.
    order = np.lexsort((room_streamer, start))
    return _Structure(
        cats=cats,
        streamer_cat=streamer_cat,
        pref_hour=pref_hour,
        counts=counts,
        cold=cold,
        room_streamer=room_streamer[order],
        room_len=room_len[order],
        room_start=start[order],
        room_split=split[order],
    )


# ------------------------------------------------------------------------------------------------
# Generation
# ------------------------------------------------------------------------------------------------


def _streams(cfg: WorldConfig) -> Dict[str, np.random.Generator]:
    names = ("structure", "latent", "chain", "audience", "visual", "text")
    children = np.random.SeedSequence(cfg.seed).spawn(len(names))
    streams = {n: np.random.Generator(np.random.PCG64(s)) for n, s in zip(names, children)}
    if cfg.chain_seed is not None:
        hidden = np.random.SeedSequence([cfg.chain_seed, 0x6B75616968]).spawn(3)
        for n, s in zip(("latent", "chain", "audience"), hidden):
            streams[n] = np.random.Generator(np.random.PCG64(s))
    return streams


def _tqdm(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, desc=desc, unit="step", leave=False)


def _simulate_chain(cfg, st: _Structure, rng, offsets, progress) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """States, quality vectors and trend of every segment, all rooms in parallel along time."""
    R = len(st.room_len)
    N = int(st.room_len.sum())
    m = cfg.quality_dim
    P, exits, _ = transition_matrices(cfg)
    Pcum = _cumulative(P)
    exit_cum = _cumulative(exits)
    order = np.argsort(-st.room_len, kind="stable")  # longest first: the active rooms are a prefix
    lens = st.room_len[order]
    cat = st.streamer_cat[st.room_streamer][order]
    base_rows = offsets[order]
    state = np.empty(N, dtype=np.int8)
    quality = np.empty((N, m), dtype=np.float32)
    trend = np.empty(N, dtype=np.float32)

    cur = (rng.random(R)[:, None] >= _cumulative(_INITIAL_STATE)[None, :]).sum(1)
    run = np.ones(R, dtype=np.int64)
    q = rng.standard_normal((R, m))
    tr = cfg.trend_sigma * rng.standard_normal(R)
    q_a, q_b = cfg.quality_ar, np.sqrt(1.0 - cfg.quality_ar**2)
    t_a, t_b = cfg.trend_ar, cfg.trend_sigma * np.sqrt(1.0 - cfg.trend_ar**2)
    T = int(lens.max()) if R else 0
    n_active = np.searchsorted(-lens, -np.arange(T), side="left")  # rooms with length > t
    bar = _tqdm(T, "world: hidden chain", progress)
    for t in range(T):
        n = int(n_active[t])
        if t > 0:
            prev = cur[:n]
            u = rng.random(n)
            nxt = (u[:, None] >= Pcum[cat[:n], prev]).sum(1)
            forced = (prev == HIGHLIGHT) & (run[:n] >= cfg.highlight_max_length)
            if forced.any():
                nxt[forced] = (u[forced][:, None] >= exit_cum[cat[:n][forced]]).sum(1)
            run[:n] = np.where(nxt == prev, run[:n] + 1, 1)
            cur[:n] = nxt
            q[:n] = q_a * q[:n] + q_b * rng.standard_normal((n, m))
            tr[:n] = t_a * tr[:n] + t_b * rng.standard_normal(n)
        rows = base_rows[:n] + t
        state[rows] = cur[:n]
        quality[rows] = q[:n]
        trend[rows] = tr[:n]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return state, quality, trend


def _lagged(x: np.ndarray, seg: np.ndarray, lag: int, fill: float = 0.0) -> np.ndarray:
    """x at t - lag within the same room (``fill`` before the room's start)."""
    if lag == 0:
        return x.copy()
    out = np.full_like(x, fill)
    if lag < len(x):
        ok = seg[lag:] >= lag
        out[lag:][ok] = x[:-lag][ok]
    return out


def _random_map(rng: np.random.Generator, d_in: int, hidden: int, d_out: int):
    """A fixed random two-layer map ``tanh(x W1 + b1) W2`` (float32)."""
    w1 = (1.5 / np.sqrt(d_in)) * rng.standard_normal((d_in, hidden))
    b1 = 0.5 * rng.standard_normal(hidden)
    w2 = (1.6 / np.sqrt(hidden)) * rng.standard_normal((hidden, d_out))
    return w1.astype(np.float32), b1.astype(np.float32), w2.astype(np.float32)


def _apply_map(maps, x: np.ndarray) -> np.ndarray:
    w1, b1, w2 = maps
    return np.tanh(x @ w1 + b1) @ w2


def _latent(state: np.ndarray, extra: np.ndarray) -> np.ndarray:
    out = np.zeros((len(state), N_STATES + extra.shape[1]), dtype=np.float32)
    out[np.arange(len(state)), state] = 1.0
    out[:, N_STATES:] = extra
    return out


def _list_column(flat: np.ndarray) -> pa.ChunkedArray:
    """A ``list<float32>`` column from an [N, D] float32 buffer, without Python lists."""
    n, d = flat.shape
    chunks = []
    for lo in range(0, max(n, 1), _LIST_CHUNK_ROWS):
        part = flat[lo : lo + _LIST_CHUNK_ROWS]
        offs = pa.array(np.arange(0, (len(part) + 1) * d, d, dtype=np.int32))
        chunks.append(pa.ListArray.from_arrays(offs, pa.array(part.reshape(-1), type=pa.float32())))
    return pa.chunked_array(chunks, type=pa.list_(pa.float32()))


def generate_world(cfg: Optional[WorldConfig] = None, progress: bool = False) -> World:
    """Generate the world described by ``cfg`` (default: the ``default`` preset).

    Deterministic: the same config gives identical tables. Vectorised over rooms; the only
    Python loops run over time steps (all rooms at once) and over streamers.
    """
    cfg = cfg if cfg is not None else WORLD_PRESETS["default"]
    timings: Dict[str, float] = {}
    clock = time.perf_counter()

    def tick(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now

    rngs = _streams(cfg)
    st = _structure(cfg, rngs["structure"])
    S, R = cfg.n_streamers, len(st.room_len)
    lengths = st.room_len
    N = int(lengths.sum())
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    room = np.repeat(np.arange(R), lengths)
    seg = (np.arange(N) - np.repeat(offsets, lengths)).astype(np.int32)
    s_row = st.room_streamer[room]
    cat_row = st.streamer_cat[s_row]
    ts = np.repeat(st.room_start, lengths) + SEGMENT_SECONDS * seg.astype(np.int64)
    hour = ((ts + cfg.utc_offset_hours * 3600.0) % 86400.0) / 3600.0
    tick("structure")
    logger.info("world: %d streamers, %d rooms, %d segments", S, R, N)

    # --- latent streamer parameters -----------------------------------------------------------
    lat = rngs["latent"]
    z_appeal = lat.standard_normal(S)
    appeal = cfg.appeal_sigma * z_appeal
    talent = np.exp(cfg.talent_sigma * lat.standard_normal((S, N_STATES)))
    talent[:, IDLE] = 1.0
    rho = cfg.popularity_appeal_corr
    z_pop = rho * z_appeal + np.sqrt(1.0 - rho**2) * lat.standard_normal(S)
    popularity = np.exp(cfg.popularity_sigma * z_pop - 0.5 * cfg.popularity_sigma**2)
    cover = cfg.ctr_cover_sigma * lat.standard_normal(S)
    w_quality = lat.standard_normal(cfg.quality_dim)
    w_quality /= np.linalg.norm(w_quality)

    # --- hidden chain and attractiveness --------------------------------------------------------
    state, quality, trend = _simulate_chain(cfg, st, rngs["chain"], offsets, progress)
    effects = np.array([dict(cfg.state_effects)[name] for name in STATE_NAMES])
    state_term = effects[state] * talent[s_row, state]
    quality_term = cfg.quality_sigma * (quality @ w_quality.astype(np.float32)).astype(np.float64)
    peaks = np.array([CATEGORY_PROFILES[c].taste_peak_hour for c in st.cats])
    taste = cfg.taste_amplitude * np.cos(2.0 * np.pi * (hour - peaks[cat_row]) / 24.0)
    d = state_term + appeal[s_row] + quality_term + taste + trend  # deviation from the base logit
    attract = cfg.lvtr_base_logit + d
    true_lvtr = _sigmoid(attract)
    ctr_noise = cfg.ctr_noise_sigma * rngs["chain"].standard_normal(N)
    true_ctr = _sigmoid(cfg.ctr_base_logit + cfg.ctr_attract_coef * d + cover[s_row] + ctr_noise)
    retention = _sigmoid(cfg.retention_base_logit + cfg.retention_attract_coef * d)
    tick("chain")

    # --- audience --------------------------------------------------------------------------------
    aud = rngs["audience"]
    d1 = _lagged(d, seg, 1)
    d2 = _lagged(d, seg, 2)
    A = cfg.traffic_amplitude
    traffic = np.exp(A * np.cos(2.0 * np.pi * (hour - cfg.traffic_peak_hour) / 24.0)) / np.i0(A)
    pop_row = popularity[s_row]
    exposures = np.maximum(aud.poisson(cfg.exposures_per_segment * pop_row * traffic * np.exp(cfg.exposure_feedback * d1)), 1)
    clicks = aud.binomial(exposures, true_ctr)
    organic = aud.poisson(cfg.organic_per_segment * pop_row * traffic)
    entries = clicks + organic
    viewers = np.empty(N, dtype=np.int64)
    exits = np.zeros(N, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    lens = lengths[order]
    base_rows = offsets[order]
    T = int(lens.max()) if R else 0
    n_active = np.searchsorted(-lens, -np.arange(T), side="left")
    bar = _tqdm(T, "world: audience", progress)
    for t in range(T):
        n = int(n_active[t])
        rows = base_rows[:n] + t
        if t == 0:
            v = entries[rows]
        else:
            prev_v = viewers[rows - 1]
            kept = aud.binomial(prev_v, retention[rows - 1])
            exits[rows] = prev_v - kept
            v = kept + entries[rows]
        viewers[rows] = np.maximum(v, 1)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    long_viewers = aud.binomial(viewers, true_lvtr)
    rc = cfg.reaction_coef
    comments = aud.poisson(cfg.comment_rate * viewers * np.exp(rc * (_COMMENT_LAGS[0] * d1 + _COMMENT_LAGS[1] * d2)))
    likes = aud.poisson(cfg.like_rate * viewers * np.exp(rc * d1))
    gifts = aud.poisson(cfg.gift_rate * viewers * np.exp(_GIFT_ELASTICITY * rc * (_GIFT_LAGS[0] * d1 + _GIFT_LAGS[1] * d2)))
    follows = np.minimum(aud.poisson(cfg.follow_rate * viewers * np.exp(_FOLLOW_ELASTICITY * rc * d1)), viewers)
    tick("audience")

    # --- features --------------------------------------------------------------------------------
    cs = float(cfg.content_signal)
    sizes = cfg.sizes
    m = cfg.quality_dim
    vrng = rngs["visual"]
    v_maps = _random_map(vrng, N_STATES + m, cfg.map_hidden, sizes.visual_len)
    v_style = (cfg.streamer_style_sigma * vrng.standard_normal((S, sizes.visual_len))).astype(np.float32)
    v_room = (cfg.room_style_sigma * vrng.standard_normal((R, sizes.visual_len))).astype(np.float32)
    visual = vrng.standard_normal((N, sizes.visual_len), dtype=np.float32)
    for lo in range(0, N, _CHUNK):
        sl = slice(lo, min(lo + _CHUNK, N))
        block = visual[sl]
        block *= np.float32(cfg.visual_noise)
        block += v_room[room[sl]]
        if cs != 0.0:
            content = _apply_map(v_maps, _latent(state[sl], quality[sl])) + v_style[s_row[sl]]
            block += np.float32(cs) * content
    tick("visual")

    trng = rngs["text"]
    a_maps = _random_map(trng, N_STATES + m, cfg.map_hidden, sizes.text_dim)
    c_maps = _random_map(trng, N_STATES + 1, cfg.map_hidden, sizes.text_dim)
    lyric_codes = (1.2 * trng.standard_normal((N_LYRIC_CODES, sizes.text_dim))).astype(np.float32)
    t_style = (cfg.streamer_style_sigma * trng.standard_normal((S, sizes.text_dim))).astype(np.float32)
    t_room = (cfg.room_style_sigma * trng.standard_normal((R, sizes.text_dim))).astype(np.float32)
    song0 = trng.integers(0, N_LYRIC_CODES, size=R)
    shifts_k = np.array([k for k, _ in cfg.text_lag], dtype=np.int64)
    shifts_p = np.array([p for _, p in cfg.text_lag])
    drawn_shift = shifts_k[trng.choice(len(shifts_k), size=N, p=shifts_p / shifts_p.sum())]
    lyric_u = trng.random(N)
    text = trng.standard_normal((N, sizes.text_dim), dtype=np.float32)
    room_len_row = lengths[room]
    src = np.repeat(offsets, lengths) + np.clip(seg + drawn_shift, 0, room_len_row - 1)
    text_shift = (src - np.arange(N)).astype(np.int8)
    lyrics = (lyric_u < cfg.lyrics_rate) & (state == PERFORMANCE)
    song = ((song0[room] + seg // SONG_SEGMENTS) % N_LYRIC_CODES).astype(np.int64)
    csrc = np.repeat(offsets, lengths) + np.maximum(seg - cfg.comment_lag, 0)
    excitement = np.tanh(d).astype(np.float32)
    for lo in range(0, N, _CHUNK):
        sl = slice(lo, min(lo + _CHUNK, N))
        block = text[sl]
        block *= np.float32(cfg.text_noise)
        block += t_room[room[sl]]
        if cs != 0.0:
            s_src, c_src = src[sl], csrc[sl]
            asr = _apply_map(a_maps, _latent(state[s_src], quality[s_src]))
            lyr = lyrics[sl]
            asr[lyr] = lyric_codes[song[sl][lyr]]
            com = _apply_map(c_maps, _latent(state[c_src], excitement[c_src][:, None]))
            block += np.float32(cs) * (asr + np.float32(cfg.comment_weight) * com + t_style[s_row[sl]])
    tick("text")

    # --- tables ------------------------------------------------------------------------------------
    split_names = pa.array(list(SPLITS), type=pa.string())
    live_ids = LIVE_ID_BASE + np.arange(R, dtype=np.int64)
    streamer_ids = STREAMER_ID_BASE + np.arange(S, dtype=np.int64)
    lvtr = (long_viewers / viewers).astype(np.float32)
    ctr = (clicks / exposures).astype(np.float32)
    columns = {
        "streamer_id": pa.array(streamer_ids[s_row]),
        "live_id": pa.array(live_ids[room]),
        "segment": pa.array(seg),
        "timestamp": pa.array(ts.astype(np.int64)),
        "lvtr": pa.array(lvtr),
        "visual": _list_column(visual),
        "text": _list_column(text),
        "ctr": pa.array(ctr),
        "n_exposures": pa.array(exposures.astype(np.int64)),
        "n_viewers": pa.array(viewers),
        "n_long_viewers": pa.array(long_viewers.astype(np.int64)),
        "n_comments": pa.array(comments.astype(np.int64)),
        "n_gifts": pa.array(gifts.astype(np.int64)),
        "n_clicks": pa.array(clicks.astype(np.int64)),
        "n_likes": pa.array(likes.astype(np.int64)),
        "n_follows": pa.array(follows.astype(np.int64)),
        "n_entries": pa.array(entries.astype(np.int64)),
        "n_exits": pa.array(exits),
        "split": split_names.take(pa.array(st.room_split[room].astype(np.int32))),
    }
    schema = arrow_schema(columns)
    segments = pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
    del visual, text

    meta = {
        b"state_names": json.dumps(list(STATE_NAMES)).encode(),
        b"attract_logit": b"lvtr_base_logit + state_term + appeal(streamer) + quality_term + taste_term + trend",
    }
    truth = pa.table(
        {
            "live_id": pa.array(live_ids[room]),
            "segment": pa.array(seg),
            "state": pa.array(state),
            "attract_logit": pa.array(attract.astype(np.float32)),
            "true_lvtr": pa.array(true_lvtr.astype(np.float32)),
            "true_ctr": pa.array(true_ctr.astype(np.float32)),
            "true_retention": pa.array(retention.astype(np.float32)),
            "state_term": pa.array(state_term.astype(np.float32)),
            "quality_term": pa.array(quality_term.astype(np.float32)),
            "taste_term": pa.array(taste.astype(np.float32)),
            "trend": pa.array(trend),
            "text_shift": pa.array(text_shift),
            "text_nonseq": pa.array(lyrics),
        }
    ).replace_schema_metadata(meta)
    talent_cols = {f"talent_{name}": pa.array(talent[:, k].astype(np.float32)) for k, name in enumerate(STATE_NAMES)}
    streamers = pa.table(
        {
            "streamer_id": pa.array(streamer_ids),
            "category": pa.array([st.cats[c] for c in st.streamer_cat], type=pa.string()),
            "appeal": pa.array(appeal.astype(np.float32)),
            **talent_cols,
            "popularity": pa.array(popularity.astype(np.float32)),
            "ctr_cover": pa.array(cover.astype(np.float32)),
            "preferred_start_hour": pa.array(st.pref_hour.astype(np.float32)),
            "n_rooms": pa.array(st.counts.astype(np.int64)),
            "cold_start": pa.array(st.cold),
        }
    )
    rooms = pa.table(
        {
            "live_id": pa.array(live_ids),
            "streamer_id": pa.array(streamer_ids[st.room_streamer]),
            "category": pa.array([st.cats[st.streamer_cat[s]] for s in st.room_streamer], type=pa.string()),
            "start_timestamp": pa.array(st.room_start),
            "end_timestamp": pa.array(st.room_start + SEGMENT_SECONDS * lengths),
            "n_segments": pa.array(lengths.astype(np.int64)),
            "split": split_names.take(pa.array(st.room_split.astype(np.int32))),
            "cold_start": pa.array(st.cold[st.room_streamer]),
        }
    )
    tick("tables")
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in timings.items())
    logger.info("world: generated in %.2f s (%s)", sum(timings.values()), stages)
    return World(segments=segments, truth=truth, streamers=streamers, rooms=rooms, sizes=sizes, config=cfg, timings=timings)


# ------------------------------------------------------------------------------------------------
# Summary, figure, writing
# ------------------------------------------------------------------------------------------------


def _quantiles(x: np.ndarray, qs=(0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)) -> Dict[str, float]:
    if len(x) == 0:
        return {}
    vals = np.quantile(x, qs)
    return {f"q{int(round(q * 100)):02d}": round(float(v), 4) for q, v in zip(qs, vals)}


def _runs(flag: np.ndarray, live: np.ndarray) -> np.ndarray:
    """Lengths of runs of True in ``flag``, runs broken at room boundaries."""
    if len(flag) == 0:
        return np.zeros(0, dtype=np.int64)
    new_room = np.r_[True, live[1:] != live[:-1]]
    starts = flag & (new_room | ~np.r_[False, flag[:-1]])
    ends = flag & (np.r_[new_room[1:], True] | ~np.r_[flag[1:], False])
    return np.flatnonzero(ends) - np.flatnonzero(starts) + 1


def summarize_world(world: World) -> Dict[str, Any]:
    """Label statistics of a world, to compare with KLive's (written as ``world_summary.json``)."""
    cfg = world.config
    seg = world.segments
    lvtr = seg.column("lvtr").to_numpy()
    ctr = seg.column("ctr").to_numpy()
    viewers = seg.column("n_viewers").to_numpy()
    live = seg.column("live_id").to_numpy()
    state = world.truth.column("state").to_numpy()
    eligible = viewers >= cfg.min_viewers
    rooms = world.rooms
    lengths = rooms.column("n_segments").to_numpy()
    split = np.asarray(rooms.column("split").to_pylist())
    cold = rooms.column("cold_start").to_numpy(zero_copy_only=False)
    runs = _runs(state == HIGHLIGHT, live)
    burst_hist = {str(k): int(v) for k, v in zip(*np.unique(runs, return_counts=True))}
    shift = world.truth.column("text_shift").to_numpy()
    start = rooms.column("start_timestamp").to_numpy()
    end = rooms.column("end_timestamp").to_numpy()
    events = np.concatenate([np.stack([start, np.ones_like(start)], 1), np.stack([end, -np.ones_like(end)], 1)])
    events = events[np.lexsort((events[:, 1], events[:, 0]))]
    on_air = np.cumsum(events[:, 1]) if len(events) else np.zeros(1)

    def label_stats(x: np.ndarray) -> Dict[str, Any]:
        return {
            "mean": round(float(x.mean()), 4) if len(x) else None,
            "quantiles": _quantiles(x),
            "share_in_0.2_0.9": round(float(((x >= 0.2) & (x <= 0.9)).mean()), 4) if len(x) else None,
            "share_above": {str(th): round(float((x > th).mean()), 4) if len(x) else None for th in (0.2, 0.4, 0.6)},
            "count_above": {str(th): int((x > th).sum()) for th in (0.2, 0.4, 0.6)},
        }

    n_test = int((split == "test").sum())
    return {
        "preset": cfg.preset,
        "seed": cfg.seed,
        "content_signal": cfg.content_signal,
        "n_segments": int(seg.num_rows),
        "n_rooms": int(rooms.num_rows),
        "n_streamers": int(world.streamers.num_rows),
        "lvtr": label_stats(lvtr),
        "lvtr_eligible": {"min_viewers": cfg.min_viewers, **label_stats(lvtr[eligible])},
        "true_lvtr": label_stats(world.truth.column("true_lvtr").to_numpy()),
        "ctr": {"mean": round(float(ctr.mean()), 4), "quantiles": _quantiles(ctr)},
        "viewers": {"mean": round(float(viewers.mean()), 1), "quantiles": _quantiles(viewers)},
        "share_below_min_viewers": round(float((~eligible).mean()), 4),
        "state_share": {name: round(float((state == k).mean()), 4) for k, name in enumerate(STATE_NAMES)},
        "highlight_bursts": {
            "count": int(len(runs)),
            "mean_length": round(float(runs.mean()), 3) if len(runs) else None,
            "length_hist": burst_hist,
        },
        "text_shift_share": {
            str(int(k)): round(float(v) / len(shift), 4) for k, v in zip(*np.unique(shift, return_counts=True))
        },
        "text_nonseq_share": round(float(world.truth.column("text_nonseq").to_numpy(zero_copy_only=False).mean()), 4),
        "rooms_per_split": {s: int((split == s).sum()) for s in SPLITS},
        "segments_per_split": {s: int(np.isin(live, rooms.column("live_id").to_numpy()[split == s]).sum()) for s in SPLITS},
        "cold_start_rooms": int((cold & (split == "test")).sum()),
        "cold_start_share_of_test": round(float((cold & (split == "test")).sum() / n_test), 4) if n_test else None,
        "cold_start_streamers": int(world.streamers.column("cold_start").to_numpy(zero_copy_only=False).sum()),
        "room_length_segments": {"mean": round(float(lengths.mean()), 2), "quantiles": _quantiles(lengths)},
        "room_length_hours_mean": round(float(lengths.mean()) * SEGMENT_SECONDS / 3600.0, 3),
        "days_spanned": round(float(end.max() - start.min()) / 86400.0, 2) if len(start) else 0.0,
        "max_rooms_on_air": int(on_air.max()),
    }


def _pick_room(world: World) -> int:
    """A representative room for the figure: ~1 h, with a highlight, mostly above min_viewers."""
    seg = world.segments
    live = seg.column("live_id").to_numpy()
    viewers = seg.column("n_viewers").to_numpy()
    state = world.truth.column("state").to_numpy()
    ids, first, counts = np.unique(live, return_index=True, return_counts=True)
    has_hl = np.add.reduceat((state == HIGHLIGHT).astype(np.int64), first) > 0
    ok_viewers = np.add.reduceat((viewers >= world.config.min_viewers).astype(np.int64), first) >= 0.8 * counts
    log_v = np.log(viewers.astype(np.float64))
    typical = np.abs(np.add.reduceat(log_v, first) / counts - np.median(log_v))  # audience of a typical size
    score = np.abs(counts - 120) + 40.0 * typical + 1000 * ~has_hl + 500 * ~ok_viewers
    return int(ids[np.argmin(score)])


def plot_room_timeline(world: World, live_id: Optional[int] = None) -> bytes:
    """PNG of one room's timeline: hidden state band, attractiveness, LVTR, viewers, comments."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    live_id = _pick_room(world) if live_id is None else int(live_id)
    seg = world.segments
    live = seg.column("live_id").to_numpy()
    rows = np.flatnonzero(live == live_id)
    if len(rows) == 0:
        raise ValueError(f"live_id {live_id} is not in this world")
    lo, hi = int(rows[0]), int(rows[-1]) + 1

    def col(table, name):
        return table.column(name).slice(lo, hi - lo).to_numpy()

    t = col(seg, "segment")
    state = col(world.truth, "state")
    colours = ["#d9d9d9", "#9ecae1", "#a1d99b", "#fdae6b", "#e34a33"]
    fig, axes = plt.subplots(3, 1, figsize=(11, 7.5), sharex=True, constrained_layout=True)
    for ax in axes:
        for k in range(N_STATES):
            runs_start = np.flatnonzero((state == k) & np.r_[True, state[1:] != state[:-1]])
            for s0 in runs_start:
                s1 = s0
                while s1 + 1 < len(state) and state[s1 + 1] == k:
                    s1 += 1
                ax.axvspan(t[s0] - 0.5, t[s1] + 0.5, color=colours[k], alpha=0.35, lw=0)
    ax = axes[0]
    ax.plot(t, col(world.truth, "attract_logit"), color="k", lw=1.4, label="hidden attractiveness (logit)")
    ax.set_ylabel("logit")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"room {live_id} (streamer {int(col(seg, 'streamer_id')[0])}): hidden state band, labels and audience")
    ax = axes[1]
    viewers = col(seg, "n_viewers")
    lv = col(seg, "lvtr")
    low = viewers < world.config.min_viewers
    ax.plot(t, col(world.truth, "true_lvtr"), color="k", lw=1.4, label="true LVTR p_t")
    ax.scatter(t[~low], lv[~low], s=12, color="tab:blue", label="LVTR label")
    low_label = f"LVTR label (< {world.config.min_viewers} viewers)"
    ax.scatter(t[low], lv[low], s=12, facecolors="none", edgecolors="tab:blue", label=low_label)
    ax.set_ylim(0, 1)
    ax.set_ylabel("LVTR")
    ax.legend(loc="lower right", fontsize=8)
    ax = axes[2]
    ax.plot(t, viewers, color="tab:green", lw=1.4, label="viewers")
    ax.axhline(world.config.min_viewers, color="tab:green", ls=":", lw=1, label="min_viewers")
    ax.set_ylabel("viewers")
    ax.set_xlabel("segment (30 s)")
    ax2 = ax.twinx()
    ax2.plot(t, col(seg, "n_comments"), color="tab:purple", lw=1.0, label="comments")
    ax2.set_ylabel("comments")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
    patches = [Patch(color=colours[k], alpha=0.35, label=STATE_NAMES[k]) for k in range(N_STATES)]
    fig.legend(handles=patches, loc="outside lower center", ncol=N_STATES, fontsize=8, title="hidden state", title_fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def write_world(world: World, out_dir: Union[str, Path], figure: bool = True) -> Dict[str, Path]:
    """Write a world under ``out_dir``; returns ``{name: path}`` of everything written.

    ``out_dir/dataset.json`` + ``segments/``      the segment table (what models read)
    ``out_dir/truth/segments_truth.parquet``      hidden states and true rates, row-aligned
    ``out_dir/truth/streamers.parquet``           hidden streamer parameters
    ``out_dir/truth/rooms.parquet``               room schedules, splits, cold start
    ``out_dir/world_config.yaml``                 the resolved config (loadable again)
    ``out_dir/world_summary.json``                label statistics (:func:`summarize_world`)
    ``out_dir/figures/room_timeline.png``         one room's timeline (:func:`plot_room_timeline`)
    """
    out = Path(out_dir)
    cfg = world.config
    paths: Dict[str, Path] = {}
    extra = {"source": "synthetic world", "preset": cfg.preset, "seed": cfg.seed, "min_viewers": cfg.min_viewers}
    write_segment_table(world.segments, out, world.sizes, extra=extra)
    paths["dataset"] = out / "dataset.json"
    paths["segments"] = out / "segments"
    for name, table in (("segments_truth", world.truth), ("streamers", world.streamers), ("rooms", world.rooms)):
        p = out / "truth" / f"{name}.parquet"
        atomic_write_parquet(p, table, compression="zstd", row_group_size=262_144)
        paths[f"truth_{name}" if name != "segments_truth" else "truth"] = p
    p = out / "world_config.yaml"
    atomic_write_bytes(p, config_to_yaml(cfg).encode())
    paths["config"] = p
    p = out / "world_summary.json"
    atomic_write_json(p, summarize_world(world))
    paths["summary"] = p
    if figure:
        p = out / "figures" / "room_timeline.png"
        atomic_write_bytes(p, plot_room_timeline(world))
        paths["figure"] = p
    logger.info("world: wrote %s", out)
    return paths
