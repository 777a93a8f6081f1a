"""The audience of the synthetic world: exposures, clicks, viewers, labels and reaction counters.

Implements ``docs/WORLD.md`` section 6 from the ``audience`` stream, drawn in this order. Traffic by
local hour tau(h) = exp(A cos(2 pi (h - ``traffic_peak_hour``) / 24)) / I0(A), A = ``traffic_amplitude``;
d_{t-1}, d_{t-2} = 0 before the room's start; k = ``reaction_coef``, V_t = n_viewers_t::

    n_exposures_t    = max(1, Poisson(exposures_per_segment pi_s tau(h_t) exp(exposure_feedback d_{t-1})))
    n_clicks_t       ~ Binomial(n_exposures_t, c_t)
    organic_t        ~ Poisson(organic_per_segment pi_s tau(h_t))
    n_entries_t      = n_clicks_t + organic_t
    kept_t           ~ Binomial(n_viewers_{t-1}, rho_{t-1})                   (kept_0 = 0)
    n_exits_t        = n_viewers_{t-1} - kept_t
    n_viewers_t      = max(1, kept_t + n_entries_t)
    n_long_viewers_t ~ Binomial(V_t, p_t)
    n_comments_t     ~ Poisson(comment_rate V_t exp(k (0.6 d_{t-1} + 0.4 d_{t-2})))
    n_likes_t        ~ Poisson(like_rate V_t exp(k d_{t-1}))
    n_gifts_t        ~ Poisson(gift_rate V_t exp(1.5 k (0.5 d_{t-1} + 0.5 d_{t-2})))
    n_follows_t      = min(V_t, Poisson(follow_rate V_t exp(1.2 k d_{t-1})))
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import numpy as np

from kuaihl_rec.data.world_config import WorldConfig
from kuaihl_rec.data.world_latent import HiddenContent, StreamerParams
from kuaihl_rec.data.world_layout import SegmentLayout, progress_bar, rooms_by_length

__all__ = ["Audience", "generate_audience", "lagged"]

# Reaction elasticities (multiplied by reaction_coef) and lag weights of the counters.
COMMENT_LAGS = (0.6, 0.4)  # weights of d_{t-1}, d_{t-2}
GIFT_LAGS = (0.5, 0.5)
GIFT_ELASTICITY = 1.5
FOLLOW_ELASTICITY = 1.2


def lagged(x: np.ndarray, segment: np.ndarray, lag: int, fill: float = 0.0) -> np.ndarray:
    """[N] x at t - lag within the same room (``fill`` before the room's start); ``segment`` [N] positions."""
    if lag == 0:
        return x.copy()
    out = np.full_like(x, fill)
    if lag < len(x):
        ok = segment[lag:] >= lag
        out[lag:][ok] = x[:-lag][ok]
    return out


@dataclasses.dataclass
class Audience:
    """Per-segment audience counts (N segment rows, int64).

    exposures, clicks, entries, viewers, exits, long_viewers, comments, likes, gifts, follows: [N]
    """

    exposures: np.ndarray
    clicks: np.ndarray
    entries: np.ndarray
    viewers: np.ndarray
    exits: np.ndarray
    long_viewers: np.ndarray
    comments: np.ndarray
    likes: np.ndarray
    gifts: np.ndarray
    follows: np.ndarray


def _traffic(cfg: WorldConfig, local_hour: np.ndarray) -> np.ndarray:
    """[N] platform traffic tau(h) by local hour, mean 1 over the day."""
    amplitude = cfg.traffic_amplitude
    return np.exp(amplitude * np.cos(2.0 * np.pi * (local_hour - cfg.traffic_peak_hour) / 24.0)) / np.i0(amplitude)


def _simulate_viewers(
    lengths: np.ndarray,
    offsets: np.ndarray,
    entries: np.ndarray,
    retention: np.ndarray,
    rng: np.random.Generator,
    progress: bool,
) -> Tuple[np.ndarray, np.ndarray]:
    """``(viewers [N], exits [N])``: each step keeps Binomial(viewers_{t-1}, retention_{t-1}) viewers.

    ``lengths`` / ``offsets`` [R] are the rooms' lengths and first rows; ``entries`` [N] the arrivals.
    """
    n_segments = len(entries)
    viewers = np.empty(n_segments, dtype=np.int64)
    exits = np.zeros(n_segments, dtype=np.int64)
    steps = rooms_by_length(lengths, offsets)
    bar = progress_bar(steps.n_steps, "world: audience", progress)
    for t in range(steps.n_steps):
        n = int(steps.n_active[t])
        rows = steps.first_rows[:n] + t
        if t == 0:
            on_air = entries[rows]
        else:
            previous_viewers = viewers[rows - 1]
            kept = rng.binomial(previous_viewers, retention[rows - 1])
            exits[rows] = previous_viewers - kept
            on_air = kept + entries[rows]
        viewers[rows] = np.maximum(on_air, 1)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return viewers, exits


def generate_audience(
    cfg: WorldConfig,
    room_length: np.ndarray,
    layout: SegmentLayout,
    params: StreamerParams,
    hidden: HiddenContent,
    rng: np.random.Generator,
    progress: bool = False,
) -> Audience:
    """Audience stage: arrivals, viewers, long viewers and reaction counters from the ``audience`` stream."""
    deviation_lag1 = lagged(hidden.deviation, layout.segment, 1)
    deviation_lag2 = lagged(hidden.deviation, layout.segment, 2)
    traffic = _traffic(cfg, layout.local_hour)
    popularity = params.popularity[layout.streamer]
    exposure_rate = cfg.exposures_per_segment * popularity * traffic * np.exp(cfg.exposure_feedback * deviation_lag1)
    exposures = np.maximum(rng.poisson(exposure_rate), 1)
    clicks = rng.binomial(exposures, hidden.true_ctr)
    organic = rng.poisson(cfg.organic_per_segment * popularity * traffic)
    entries = clicks + organic
    viewers, exits = _simulate_viewers(room_length, layout.offsets, entries, hidden.true_retention, rng, progress)
    long_viewers = rng.binomial(viewers, hidden.true_lvtr)

    reaction = cfg.reaction_coef
    comment_drive = COMMENT_LAGS[0] * deviation_lag1 + COMMENT_LAGS[1] * deviation_lag2
    comments = rng.poisson(cfg.comment_rate * viewers * np.exp(reaction * comment_drive))
    likes = rng.poisson(cfg.like_rate * viewers * np.exp(reaction * deviation_lag1))
    gift_drive = GIFT_LAGS[0] * deviation_lag1 + GIFT_LAGS[1] * deviation_lag2
    gifts = rng.poisson(cfg.gift_rate * viewers * np.exp(GIFT_ELASTICITY * reaction * gift_drive))
    follow_rate = cfg.follow_rate * viewers * np.exp(FOLLOW_ELASTICITY * reaction * deviation_lag1)
    follows = np.minimum(rng.poisson(follow_rate), viewers)
    return Audience(
        exposures=exposures,
        clicks=clicks,
        entries=entries,
        viewers=viewers,
        exits=exits,
        long_viewers=long_viewers,
        comments=comments,
        likes=likes,
        gifts=gifts,
        follows=follows,
    )
