"""Simulated users (:class:`Population`) and their sessions (:class:`Sessions`), drawn once per seed.

Traits (see :class:`ranking.sim_config.SimConfig`): a session rate (Gamma), a click-logit taste per
category (Normal), a click bias, a scanning patience and a return-to-feed probability (Beta), a
session budget (lognormal per user and per session) and a stickiness (lognormal). Session starts
are drawn over the simulated days with the world's traffic curve, at ticks when a room is on air.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from ranking.sim_config import TICKS_PER_DAY, SimConfig
from ranking.sim_world import SimWorld

__all__ = ["Population", "Sessions", "make_population"]

#: Seed-sequence tags of the generators of traits, sessions and pre-period sessions ("user", "sess", "pre").
_TRAITS_TAG, _SESSIONS_TAG, _PRE_SESSIONS_TAG = 0x75736572, 0x73657373, 0x70726500
#: Bits of a session id: user id << 20 | pre-period flag << 19 | the user's session number (< 2^19).
_SESSION_NUMBER_BITS = 19


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


def _generator(seed: int, tag: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, tag])))


def _draw_sessions(world: SimWorld, activity: np.ndarray, budget_median: np.ndarray, cfg: SimConfig,
                   rng: np.random.Generator, user_id: np.ndarray, pre: bool) -> Sessions:
    counts = rng.poisson(activity * world.days)
    n_sessions = int(counts.sum())
    user = np.repeat(np.arange(len(activity)), counts).astype(np.int64)
    cdf = np.cumsum(world.start_weight)
    tick = np.searchsorted(cdf, rng.random(n_sessions) * cdf[-1], side="right").astype(np.int64)
    tick = np.minimum(tick, len(cdf) - 1)
    budget = budget_median[user] * np.exp(cfg.budget_session_sigma * rng.standard_normal(n_sessions))
    number = np.arange(n_sessions) - np.repeat(np.cumsum(counts) - counts, counts)
    if np.any(number >= (1 << _SESSION_NUMBER_BITS)):
        raise ValueError("more than 2^19 sessions for one user")
    uid = ((user_id[user].astype(np.uint64) << np.uint64(_SESSION_NUMBER_BITS + 1))
           | (np.uint64(1 if pre else 0) << np.uint64(_SESSION_NUMBER_BITS)) | number.astype(np.uint64))
    return Sessions(user, tick, budget, uid, (tick // TICKS_PER_DAY).astype(np.int64))


def make_population(world: SimWorld, n_users: int, seed: int = 0, cfg: SimConfig = SimConfig(), pre_period: bool = True,
                    first_user_id: int = 1) -> Population:
    """Draw ``n_users`` users (ids ``first_user_id ..``) and their sessions; deterministic in ``seed``."""
    if n_users < 1:
        raise ValueError("n_users must be >= 1")
    rng = _generator(seed, _TRAITS_TAG)
    n_categories = len(world.categories)
    user_id = np.arange(first_user_id, first_user_id + n_users, dtype=np.int64)
    activity = rng.gamma(cfg.activity_shape, cfg.sessions_per_day / cfg.activity_shape, n_users)
    taste = cfg.taste_sigma * rng.standard_normal((n_users, n_categories))
    bias = cfg.click_bias_sigma * rng.standard_normal(n_users)
    alpha = cfg.patience_mean * cfg.patience_concentration
    patience = rng.beta(alpha, cfg.patience_concentration - alpha, n_users)
    alpha = cfg.return_mean * cfg.return_concentration
    return_prob = rng.beta(alpha, cfg.return_concentration - alpha, n_users)
    budget_median = cfg.budget_median_s * np.exp(cfg.budget_user_sigma * rng.standard_normal(n_users))
    stickiness = np.exp(cfg.stickiness_sigma * rng.standard_normal(n_users))
    sessions = _draw_sessions(world, activity, budget_median, cfg, _generator(seed, _SESSIONS_TAG), user_id, pre=False)
    pre = None
    if pre_period:
        pre_rng = _generator(seed, _PRE_SESSIONS_TAG)
        pre = _draw_sessions(world, activity, budget_median, cfg, pre_rng, user_id, pre=True)
    return Population(user_id, activity, taste, bias, patience, return_prob, stickiness, sessions, pre, seed,
                      world.days)
