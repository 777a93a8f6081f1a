"""The simulator writes logs: a stochastic logging arm's impressions with exact propensities, and the
target arms run online on the same requests for the true values (docs/OPE.md, "Simulated logs").

A *request* is the first feed opening of each simulated session (:mod:`ranking.population`: session
starts are exogenous, so the requests' contexts do not depend on the policy and a value per request is
well defined). Its candidates are the rooms on air at that tick (:mod:`ranking.sim_world`); a policy
(:class:`ranking.ope.policy.StochasticPolicy`) draws a list of ``min(slate_size, N)`` of them by
Plackett-Luce (Gumbel-max on counter-based uniforms: the same draws for the same session in every run of
one seed), and the user reacts by the simulator's own model (:mod:`ranking.simulator`, ``_scan`` and
``_watch``): ``click_model="cascade"`` scans the list down and clicks at most once (the simulator's
feed); ``"pbm"`` examines every position independently with probability ``(1 + k)^-position_decay``
(a position-based click model: an item's click depends on its own position only), and each click's
watch is drawn independently. The whole list is logged (every position is an impression; click 0
where the user did not click, whether or not they looked), with the logging policy's exact marginal
and prefix propensities (:mod:`ranking.ope.plackett_luce`).

Truth: each target policy (and the logging one) is simulated online on the same requests ``replicates``
times with fresh random numbers (replicate m shares its random numbers across policies, so the true
lifts are paired); its value is the mean reward per request, its standard error the spread of the
replicate means (the randomness left once the requests are fixed).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import pandas as pd

from ranking.ope.plackett_luce import gumbel_top_k, position_marginals, prefix_probabilities
from ranking.ope.policy import StochasticPolicy
from ranking.ope.schema import REWARDS
from ranking.outcomes import N_OUTCOMES, Outcome
from ranking.population import Population
from ranking.random_numbers import UINT64_MASK, splitmix64, stable_hash, stream_salt, uniform_from_hash
from ranking.sim_config import SimConfig
from ranking.simulator import SimWorld, build_feed

# the simulator's own user model (same package): a click scan and a watch, one visit round
from ranking.simulator import _Active, _Cascade, _scan, _Visit, _watch  # noqa: I001

__all__ = ["CLICK_MODELS", "OpeSimConfig", "Requests", "SimulatedLog", "simulate_log"]

CLICK_MODELS = ("cascade", "pbm")
#: Random streams of the list draws (the simulator's own streams are 1..6).
_STREAM_LIST = 21
_STREAM_PBM_CLICK = 22


@dataclasses.dataclass(frozen=True)
class OpeSimConfig:
    """How simulated logs are made: the logging temperature, the list length, the click model, the truth runs."""

    temperature: float = 0.2
    target_temperature: Optional[float] = None  # None: the logging temperature
    slate_size: int = 5
    click_model: str = "cascade"
    truth_replicates: int = 8

    def __post_init__(self) -> None:
        if self.click_model not in CLICK_MODELS:
            raise ValueError(f"click_model must be one of {CLICK_MODELS}, got {self.click_model!r}")
        if self.slate_size < 1 or self.truth_replicates < 2:
            raise ValueError("slate_size must be >= 1 and truth_replicates >= 2")
        if not self.temperature > 0 or (self.target_temperature is not None and not self.target_temperature > 0):
            raise ValueError("temperatures must be > 0")

    @property
    def eval_temperature(self) -> float:
        return self.temperature if self.target_temperature is None else self.target_temperature


@dataclasses.dataclass
class Requests:
    """The requests (first feed opening of each session with rooms on air) and their candidates."""

    session: np.ndarray  # [R] index into pop.sessions
    rows: np.ndarray  # [R, N] sim rows of the candidates
    present: np.ndarray  # [R, N]
    terms: Dict[str, np.ndarray]  # name -> [R, N] (NaN on padding)
    sessions_without_rooms: int

    @classmethod
    def of(cls, world: SimWorld, pop: Population, values: Mapping[str, np.ndarray]) -> "Requests":
        feed = build_feed(world, np.zeros(len(world.live_id)))
        tick = pop.sessions.tick
        on_air = np.where(tick < world.n_ticks, world.count[np.minimum(tick, world.n_ticks - 1)], 0)
        keep = np.flatnonzero(on_air > 0)
        slots = np.arange(max(int(on_air.max()), 1))
        ptr = feed.ptr[np.minimum(tick[keep], world.n_ticks - 1)]
        rows = feed.order[np.minimum(ptr[:, None] + slots, world.n_rows - 1)]
        present = slots < on_air[keep][:, None]
        terms = {k: np.where(present, np.asarray(v, np.float64)[world.base_row[rows]], np.nan)
                 for k, v in values.items()}
        return cls(keep, rows, present, terms, int(len(tick) - len(keep)))


@dataclasses.dataclass
class SimulatedLog:
    impressions: pd.DataFrame
    candidates: pd.DataFrame
    truth: Dict[str, Any]
    meta: Dict[str, Any]


def _draw_lists(policy: StochasticPolicy, req: Requests, key: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(chosen [R, k] candidate slots, -1 past the list; logw [R, N])``."""
    logw = policy.log_weights(req.terms, req.present)
    u = uniform_from_hash(splitmix64(key[:, None] ^ stream_salt(0, _STREAM_LIST, np.arange(logw.shape[1]))))
    chosen = gumbel_top_k(logw, min(k, logw.shape[1]), u)
    chosen = np.where(np.arange(chosen.shape[1]) < req.present.sum(axis=1, keepdims=True), chosen, -1)
    return chosen, logw


def _react(world: SimWorld, pop: Population, sim_cfg: SimConfig, click_model: str, req: Requests,
           chosen: np.ndarray, seed_mix: np.uint64) -> Tuple[np.ndarray, np.ndarray]:
    """The users' clicks and watch seconds ``[R, K]`` on the lists ``chosen``."""
    k = chosen.shape[1]
    sessions = pop.sessions.subset(req.session)
    rows = np.take_along_axis(req.rows, np.maximum(chosen, 0), axis=1)
    decay = (1.0 + np.arange(k)) ** (-sim_cfg.position_decay)
    cascade = _Cascade(world, None, pop, sim_cfg, k, np.arange(k + 1), decay, 1.0, 1.0, seed_mix)
    active = _Active.start(sessions, np.arange(len(sessions)), seed_mix)
    visit = _Visit(rows, chosen >= 0, (chosen >= 0).sum(axis=1))
    if click_model == "cascade":
        _, clicked = _scan(cascade, active, visit, 0)
    else:
        u = uniform_from_hash(splitmix64(active.hash[:, None] ^ stream_salt(0, _STREAM_PBM_CLICK, np.arange(k))))
        logit = (world.ctr_logit[rows] + pop.taste[active.user[:, None], world.room_cat[world.room[rows]]]
                 + pop.bias[active.user][:, None])
        clicked = (u < cascade.decay / (1.0 + np.exp(-logit))) & visit.valid
    watch = np.zeros(clicked.shape)
    for j in range(k) if click_model == "pbm" else (None,):
        which = clicked[:, j] if j is not None else clicked.any(axis=1)
        watchers = np.flatnonzero(which)
        if not len(watchers):
            continue
        position = np.full(len(watchers), j) if j is not None else clicked[watchers].argmax(axis=1)
        fresh = _Active(*(np.copy(getattr(active, f.name)) for f in dataclasses.fields(active)))
        values = np.zeros((len(active), N_OUTCOMES))
        _watch(cascade, fresh, watchers, rows[watchers, position], j or 0, values)
        watch[watchers, position] = values[watchers, Outcome.PLAY_S]
    return clicked.astype(np.float64), watch


def _session_key(pop: Population, req: Requests, seed_mix: np.uint64) -> np.ndarray:
    return splitmix64(pop.sessions.uid[req.session] ^ seed_mix)


def _online_truth(policy: StochasticPolicy, world: SimWorld, pop: Population, sim_cfg: SimConfig,
                  cfg: OpeSimConfig, req: Requests, seed: int) -> Dict[str, np.ndarray]:
    """Replicate means ``[M]`` per reward of ``policy`` run online on the requests; replicate m uses the same
    random numbers for every policy (common random numbers: the true lifts are paired)."""
    out = {r: np.zeros(cfg.truth_replicates) for r in REWARDS}
    for m in range(cfg.truth_replicates):
        mix = np.uint64(stable_hash("ope-truth", seed, m) & UINT64_MASK)
        chosen, _ = _draw_lists(policy, req, _session_key(pop, req, mix), cfg.slate_size)
        click, watch = _react(world, pop, sim_cfg, cfg.click_model, req, chosen, mix)
        out["click"][m], out["watch_s"][m] = click.sum(axis=1).mean(), watch.sum(axis=1).mean()
    return out


def _summary(reps: np.ndarray) -> Dict[str, float]:
    return {"value": float(reps.mean()), "se": float(reps.std(ddof=1) / np.sqrt(len(reps)))}


def _log_tables(req: Requests, pop: Population, chosen: np.ndarray, logw: np.ndarray, click: np.ndarray,
                watch: np.ndarray) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """The impressions and candidates tables of the logged lists (see :mod:`ranking.ope.schema`)."""
    marginals = position_marginals(logw, chosen.shape[1])
    prefix = prefix_probabilities(logw, chosen)
    r, k = np.nonzero(chosen >= 0)
    slot = chosen[r, k]
    impressions = pd.DataFrame({
        "request_id": req.session[r].astype(np.int64), "session_id": pop.sessions.user[req.session[r]].astype(np.int64),
        "position": k.astype(np.int32), "item_id": req.rows[r, slot].astype(np.int64),
        "propensity": marginals[r, slot, k], "click": click[r, k].astype(np.int8), "watch_s": watch[r, k],
        "prefix_propensity": prefix[r, k]})
    cr, cn = np.nonzero(req.present)
    candidates = pd.DataFrame({"request_id": req.session[cr].astype(np.int64),
                               "item_id": req.rows[cr, cn].astype(np.int64),
                               **{name: v[cr, cn] for name, v in sorted(req.terms.items())}})
    # impressions come out sorted by (request, position); candidates are sorted by (request, item) here
    return impressions, candidates.sort_values(["request_id", "item_id"], kind="stable", ignore_index=True)


def simulate_log(world: SimWorld, values: Mapping[str, np.ndarray], logging_policy: StochasticPolicy,
                 targets: Mapping[str, StochasticPolicy], pop: Population, sim_cfg: SimConfig = SimConfig(),
                 cfg: OpeSimConfig = OpeSimConfig(), seed: int = 0) -> SimulatedLog:
    """One log of ``logging_policy`` on ``pop``'s requests, and the online truth of it and of ``targets``.

    ``values``: term name -> calibrated values on the world's base rows (:func:`ranking.blend.resolve_term`).
    """
    req = Requests.of(world, pop, values)
    mix = np.uint64(stable_hash("ope-log", seed) & UINT64_MASK)
    chosen, logw = _draw_lists(logging_policy, req, _session_key(pop, req, mix), cfg.slate_size)
    click, watch = _react(world, pop, sim_cfg, cfg.click_model, req, chosen, mix)
    impressions, candidates = _log_tables(req, pop, chosen, logw, click, watch)
    truth: Dict[str, Any] = {}
    logging_reps = _online_truth(logging_policy, world, pop, sim_cfg, cfg, req, seed)
    truth["__logging__"] = {"policy": logging_policy.to_dict(), **{r: _summary(v) for r, v in logging_reps.items()}}
    for name, policy in targets.items():
        reps = _online_truth(policy, world, pop, sim_cfg, cfg, req, seed)
        truth[name] = {"policy": policy.to_dict(), **{r: _summary(v) for r, v in reps.items()},
                       "lift": {r: _summary(reps[r] / logging_reps[r] - 1.0) for r in REWARDS}}
    meta = {"source": "simulator", "logging": logging_policy.to_dict(), "slate_size": cfg.slate_size,
            "click_model": cfg.click_model, "seed": seed, "n_users": pop.n_users, "requests": len(req.session),
            "sessions_without_rooms": req.sessions_without_rooms, "truth_replicates": cfg.truth_replicates,
            "simulator": sim_cfg.to_dict(), "rewards": {"click": "clicks per request (request CTR)",
                                                        "watch_s": "seconds watched per request"}}
    return SimulatedLog(impressions, candidates, truth, meta)
