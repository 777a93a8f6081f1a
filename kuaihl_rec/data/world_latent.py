"""The hidden side of the synthetic world: streamer parameters, content chain, attractiveness, true rates.

Streamer parameters (``docs/WORLD.md`` section 5, ``latent`` stream, in this order): appeal
b_s = ``appeal_sigma`` z_s; talent g_{s,k} = exp(``talent_sigma`` z) with g_{s,idle} = 1; popularity
pi_s = exp(``popularity_sigma`` z'_s - ``popularity_sigma``^2 / 2), z'_s = rho z_s + sqrt(1 - rho^2) z'';
CTR cover term c_s = ``ctr_cover_sigma`` z; the quality read-out direction w, a random unit vector.

Content chain (section 4, ``chain`` stream), per category c, regular state i, leave = 1 / ``state_dwell``,
p_h = min(h_c[i] ``highlight_rate``, 0.5)::

    P[i, highlight] = p_h
    P[i, i]         = (1 - p_h) (1 - leave)
    P[i, j]         = (1 - p_h) leave w_c[j] / sum_{j' != i, regular} w_c[j']
    P[highlight, highlight] = 1 - 1 / highlight_mean_length, else return ~ (0.2, 1, 1, 1) * w_c

(a burst of ``highlight_max_length`` segments is forced to return), beside two AR(1) processes::

    q_t = quality_ar q_{t-1} + sqrt(1 - quality_ar^2) eps_t,                q_0 ~ N(0, I)
    r_t = trend_ar r_{t-1} + trend_sigma sqrt(1 - trend_ar^2) eps_t,        r_0 ~ N(0, trend_sigma^2)

Attractiveness and true rates (section 5)::

    d_t        = e[state_t] g_{s,state_t} + b_s + quality_sigma <w, q_t>
                 + taste_amplitude cos(2 pi (h_t - peak_c) / 24) + r_t
    attract_t  = lvtr_base_logit + d_t,            p_t = sigmoid(attract_t)
    c_t        = sigmoid(ctr_base_logit + ctr_attract_coef d_t + c_s + ctr_noise_sigma eps_t)
    rho_t      = sigmoid(retention_base_logit + retention_attract_coef d_t)
"""

from __future__ import annotations

import dataclasses
from typing import List, Tuple

import numpy as np

from kuaihl_rec.data.world_config import STATE_NAMES, WorldConfig
from kuaihl_rec.data.world_layout import SegmentLayout, progress_bar, rooms_by_length
from kuaihl_rec.data.world_profiles import (
    CATEGORY_PROFILES,
    HIGHLIGHT,
    HIGHLIGHT_RETURN_WEIGHTS,
    IDLE,
    INITIAL_STATE_PROBS,
    N_REGULAR_STATES,
    N_STATES,
)
from kuaihl_rec.data.world_structure import WorldStructure

__all__ = [
    "HiddenContent",
    "StreamerParams",
    "cumulative",
    "draw_streamer_params",
    "generate_latent",
    "sigmoid",
    "simulate_chain",
    "transition_matrices",
]


def transition_matrices(cfg: WorldConfig) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Per-category transition matrices of the hidden state chain.

    Returns ``(P, exit, categories)``: ``P[c, i, j]`` = Pr(state j at t+1 | state i at t)
    for category ``categories[c]``, and ``exit[c, j]`` the distribution a highlight burst
    returns to when it is forced to end at ``highlight_max_length``.
    """
    categories = [name for name, _ in cfg.category_weights]
    regular = N_REGULAR_STATES
    transition = np.zeros((len(categories), N_STATES, N_STATES))
    highlight_exit = np.zeros((len(categories), N_STATES))
    leave = 1.0 / cfg.state_dwell
    highlight_stay = 1.0 - 1.0 / cfg.highlight_mean_length
    for c, name in enumerate(categories):
        profile = CATEGORY_PROFILES[name]
        occupancy = np.asarray(profile.occupancy, dtype=float)
        for i in range(regular):
            p_highlight = min(profile.highlight_entry[i] * cfg.highlight_rate, 0.5)
            others = occupancy.copy()
            others[i] = 0.0
            transition[c, i, :regular] = (1.0 - p_highlight) * leave * others / others.sum()
            transition[c, i, i] = (1.0 - p_highlight) * (1.0 - leave)
            transition[c, i, HIGHLIGHT] = p_highlight
        returns = HIGHLIGHT_RETURN_WEIGHTS * occupancy
        highlight_exit[c, :regular] = returns / returns.sum()
        transition[c, HIGHLIGHT, :regular] = (1.0 - highlight_stay) * highlight_exit[c, :regular]
        transition[c, HIGHLIGHT, HIGHLIGHT] = highlight_stay
    return transition, highlight_exit, categories


def cumulative(p: np.ndarray) -> np.ndarray:
    """Cumulative sums of distributions ``p`` [..., K] along the last axis, the last one past 1."""
    cum = np.cumsum(p, axis=-1)
    cum[..., -1] = 1.0 + 1e-9  # u in [0, 1) never falls past the last state
    return cum


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclasses.dataclass
class StreamerParams:
    """Hidden per-streamer parameters (S streamers; float64).

    appeal:             [S] b_s
    talent:             [S, N_STATES] g_{s,k}, 1 for idle
    popularity:         [S] pi_s, mean 1
    ctr_cover:          [S] c_s
    quality_direction:  [quality_dim] w, a unit vector
    """

    appeal: np.ndarray
    talent: np.ndarray
    popularity: np.ndarray
    ctr_cover: np.ndarray
    quality_direction: np.ndarray


def draw_streamer_params(cfg: WorldConfig, rng: np.random.Generator) -> StreamerParams:
    """:class:`StreamerParams` from the ``latent`` stream ``rng``."""
    n_streamers = cfg.n_streamers
    z_appeal = rng.standard_normal(n_streamers)
    appeal = cfg.appeal_sigma * z_appeal
    talent = np.exp(cfg.talent_sigma * rng.standard_normal((n_streamers, N_STATES)))
    talent[:, IDLE] = 1.0
    rho = cfg.popularity_appeal_corr
    z_popularity = rho * z_appeal + np.sqrt(1.0 - rho**2) * rng.standard_normal(n_streamers)
    popularity = np.exp(cfg.popularity_sigma * z_popularity - 0.5 * cfg.popularity_sigma**2)
    ctr_cover = cfg.ctr_cover_sigma * rng.standard_normal(n_streamers)
    quality_direction = rng.standard_normal(cfg.quality_dim)
    quality_direction /= np.linalg.norm(quality_direction)
    return StreamerParams(appeal, talent, popularity, ctr_cover, quality_direction)


def simulate_chain(
    cfg: WorldConfig, structure: WorldStructure, rng: np.random.Generator, offsets: np.ndarray, progress: bool
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(state [N] int8, quality [N, quality_dim] float32, trend [N] float32)`` of every segment row.

    All rooms step in parallel along time, from the ``chain`` stream ``rng``; ``offsets`` [R] are the
    rooms' first rows.
    """
    n_rooms = len(structure.room_length)
    n_segments = int(structure.room_length.sum())
    quality_dim = cfg.quality_dim
    transition, highlight_exit, _ = transition_matrices(cfg)
    transition_cum = cumulative(transition)
    exit_cum = cumulative(highlight_exit)
    steps = rooms_by_length(structure.room_length, offsets)
    category = structure.streamer_category[structure.room_streamer][steps.order]
    state = np.empty(n_segments, dtype=np.int8)
    quality = np.empty((n_segments, quality_dim), dtype=np.float32)
    trend = np.empty(n_segments, dtype=np.float32)

    current = (rng.random(n_rooms)[:, None] >= cumulative(INITIAL_STATE_PROBS)[None, :]).sum(1)
    run_length = np.ones(n_rooms, dtype=np.int64)
    room_quality = rng.standard_normal((n_rooms, quality_dim))
    room_trend = cfg.trend_sigma * rng.standard_normal(n_rooms)
    quality_keep, quality_innovation = cfg.quality_ar, np.sqrt(1.0 - cfg.quality_ar**2)
    trend_keep, trend_innovation = cfg.trend_ar, cfg.trend_sigma * np.sqrt(1.0 - cfg.trend_ar**2)
    bar = progress_bar(steps.n_steps, "world: hidden chain", progress)
    for t in range(steps.n_steps):
        n = int(steps.n_active[t])
        if t > 0:
            previous = current[:n]
            u = rng.random(n)
            following = (u[:, None] >= transition_cum[category[:n], previous]).sum(1)
            forced = (previous == HIGHLIGHT) & (run_length[:n] >= cfg.highlight_max_length)
            if forced.any():
                following[forced] = (u[forced][:, None] >= exit_cum[category[:n][forced]]).sum(1)
            run_length[:n] = np.where(following == previous, run_length[:n] + 1, 1)
            current[:n] = following
            innovation = rng.standard_normal((n, quality_dim))
            room_quality[:n] = quality_keep * room_quality[:n] + quality_innovation * innovation
            room_trend[:n] = trend_keep * room_trend[:n] + trend_innovation * rng.standard_normal(n)
        rows = steps.first_rows[:n] + t
        state[rows] = current[:n]
        quality[rows] = room_quality[:n]
        trend[rows] = room_trend[:n]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return state, quality, trend


@dataclasses.dataclass
class HiddenContent:
    """Hidden per-segment content and true rates (N segment rows).

    state:          [N] int8 content state code
    quality:        [N, quality_dim] float32 q_t
    trend:          [N] float32 r_t
    state_term:     [N] float64 e[state_t] g_{s,state_t}
    quality_term:   [N] float64 quality_sigma <w, q_t>
    taste_term:     [N] float64 taste by hour and category
    deviation:      [N] float64 d_t, the attractiveness logit minus ``lvtr_base_logit``
    attract_logit:  [N] float64
    true_lvtr:      [N] float64 p_t
    true_ctr:       [N] float64 c_t
    true_retention: [N] float64 rho_t
    """

    state: np.ndarray
    quality: np.ndarray
    trend: np.ndarray
    state_term: np.ndarray
    quality_term: np.ndarray
    taste_term: np.ndarray
    deviation: np.ndarray
    attract_logit: np.ndarray
    true_lvtr: np.ndarray
    true_ctr: np.ndarray
    true_retention: np.ndarray


def generate_latent(
    cfg: WorldConfig,
    structure: WorldStructure,
    layout: SegmentLayout,
    latent_rng: np.random.Generator,
    chain_rng: np.random.Generator,
    progress: bool = False,
) -> Tuple[StreamerParams, HiddenContent]:
    """Latent stage: streamer parameters, the hidden chain, attractiveness and the true rates."""
    params = draw_streamer_params(cfg, latent_rng)
    state, quality, trend = simulate_chain(cfg, structure, chain_rng, layout.offsets, progress)
    streamer = layout.streamer
    effects = np.array([dict(cfg.state_effects)[name] for name in STATE_NAMES])
    state_term = effects[state] * params.talent[streamer, state]
    quality_term = cfg.quality_sigma * (quality @ params.quality_direction.astype(np.float32)).astype(np.float64)
    peaks = np.array([CATEGORY_PROFILES[name].taste_peak_hour for name in structure.categories])
    taste_term = cfg.taste_amplitude * np.cos(2.0 * np.pi * (layout.local_hour - peaks[layout.category]) / 24.0)
    deviation = state_term + params.appeal[streamer] + quality_term + taste_term + trend
    attract_logit = cfg.lvtr_base_logit + deviation
    ctr_noise = cfg.ctr_noise_sigma * chain_rng.standard_normal(layout.n_segments)
    true_ctr = sigmoid(cfg.ctr_base_logit + cfg.ctr_attract_coef * deviation + params.ctr_cover[streamer] + ctr_noise)
    hidden = HiddenContent(
        state=state,
        quality=quality,
        trend=trend,
        state_term=state_term,
        quality_term=quality_term,
        taste_term=taste_term,
        deviation=deviation,
        attract_logit=attract_logit,
        true_lvtr=sigmoid(attract_logit),
        true_ctr=true_ctr,
        true_retention=sigmoid(cfg.retention_base_logit + cfg.retention_attract_coef * deviation),
    )
    return params, hidden
