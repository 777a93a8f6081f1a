"""Experiments over one simulated world: arms under the randomised or the paired design, and weight sweeps.

``randomised``
    every user is assigned to one arm by a hash of (user id, salt) (:func:`ranking.arms.assign_arms`);
    arms are compared as independent samples of users: the realistic precision of an online test.
``paired``
    every user is simulated in every arm with common random numbers, and arms are compared user by
    user: far tighter intervals for the same users, used for weight sweeps.

Users enter the analysis when they had at least one session in the period (what logs would see).
CUPED uses a *simulated pre-period*: the same users under the control formula with fresh random
numbers, before assignment, so the covariate cannot depend on the arm.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ranking.arms import Arm, assign_arms
from ranking.blend import Formula
from ranking.lifts import METRICS, arm_values, compare_arms, daily_lifts
from ranking.population import Population
from ranking.random_numbers import stable_hash
from ranking.sim_config import SimConfig
from ranking.simulator import Feed, SessionOutcomes, SimWorld, build_feed, simulate
from ranking.stats import Lift, srm_test

__all__ = ["DESIGNS", "Experiment", "ExperimentResult", "SWEEP_METRICS"]

DESIGNS = ("randomised", "paired")
#: Metrics of the weight sweeps' points.
SWEEP_METRICS = ("ctr", "play_duration_per_user", "long_view_rate", "clicks_per_user")


@dataclasses.dataclass
class ExperimentResult:
    """Per-user totals and comparisons of one experiment."""

    design: str
    arms: List[Arm]
    control: str
    users: Dict[str, np.ndarray]  # arm -> observed users' indices into the population
    totals: Dict[str, np.ndarray]  # arm -> [n_users_arm, N_OUTCOMES] per-user totals over the period
    lifts: Dict[str, Dict[str, Lift]]
    daily: Dict[str, Dict[str, List[Dict[str, Any]]]]
    srm: Optional[Dict[str, Any]]
    impressions: Dict[str, int]
    sim_seconds: Dict[str, float]
    position: Dict[str, Dict[str, List[int]]]

    def lift(self, arm: str, metric: str) -> Lift:
        return self.lifts[arm][metric]

    def to_dict(self) -> Dict[str, Any]:
        arms = {}
        for arm in self.arms:
            totals = self.totals[arm.name]
            entry: Dict[str, Any] = {
                "role": arm.role,
                "formula": arm.formula.describe(),
                "users": int(len(totals)),
                "impressions": int(self.impressions.get(arm.name, 0)),
                "simulation_s": round(self.sim_seconds.get(arm.name, 0.0), 3),
                "values": arm_values(totals),
                "position": self.position.get(arm.name),
            }
            if arm.planted:
                entry["planted"] = arm.planted_dict
            if arm.name in self.lifts:
                entry["metrics"] = {m: lift.to_dict() for m, lift in self.lifts[arm.name].items()}
            arms[arm.name] = entry
        return {"design": self.design, "control": self.control, "srm": self.srm, "arms": arms, "daily": self.daily}


def _check_arms(arms: Sequence[Arm], design: str, control: str) -> None:
    if design not in DESIGNS:
        raise ValueError(f"design must be 'randomised' or 'paired', got {design!r}")
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be unique: {names}")
    if control not in names:
        raise ValueError(f"control arm {control!r} is not among the arms {names}")


def _active_users(pop: Population) -> np.ndarray:
    """Users with at least one session in the period (what logs would see)."""
    return np.flatnonzero(np.bincount(pop.sessions.user, minlength=pop.n_users) > 0)


def _lift_summary(lifts: Mapping[str, Lift], metrics: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    return {m: {"lift": lifts[m].lift, "ci": list(lifts[m].ci), "p_value": lifts[m].p_value} for m in metrics}


def _progress(items: Iterable, enabled: bool, desc: str):
    if not enabled:
        return items
    try:  # lazy: a progress bar only when one is shown
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return items
    return tqdm(items, desc=desc, leave=False)


def _reweightings(control: Formula, grid: Sequence[float]) -> List[Tuple[float, ...]]:
    """Every combination of ``grid`` values for the control formula's terms, once per ranking (a linear
    formula ranks the same under any positive rescaling), the all-zero one left out."""
    combos, seen = [], set()
    for combo in itertools.product(grid, repeat=len(control.terms)):
        if not any(x != 0 for x in combo):
            continue
        key = tuple(round(x / max(abs(v) for v in combo), 9) for x in combo) if control.kind == "linear" else combo
        if key not in seen:
            seen.add(key)
            combos.append(combo)
    return combos


class Experiment:
    """Simulate arms over one world with resolved term values.

    ``values``: term name -> calibrated, filled values per base row of ``world`` (see
    :func:`ranking.blend.resolve_term`). Feeds are cached per formula.
    """

    def __init__(self, world: SimWorld, values: Mapping[str, np.ndarray], sim: SimConfig = SimConfig(),
                 seed: int = 0) -> None:
        self.world = world
        self.values = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
        self.sim = sim
        self.seed = seed
        self._feeds: Dict[Formula, Feed] = {}
        self._control_cache: Dict[str, Any] = {}

    def feed(self, formula: Formula) -> Feed:
        if formula not in self._feeds:
            self._feeds[formula] = build_feed(self.world, formula.score(self.values))
        return self._feeds[formula]

    def simulate_arm(self, arm: Arm, pop: Population, users: Optional[np.ndarray] = None, pre: bool = False,
                     log: bool = False) -> Tuple[np.ndarray, SessionOutcomes]:
        """Per-user per-day totals ``[len(users), days, N_OUTCOMES]`` of ``users`` (default all) under
        ``arm``, and the outcomes."""
        sessions = pop.pre_sessions if pre else pop.sessions
        if sessions is None:
            raise ValueError("the population has no pre-period sessions")
        out_rows = None
        n_users = pop.n_users
        if users is not None:
            selected = np.zeros(pop.n_users, dtype=bool)
            selected[users] = True
            sessions = sessions.subset(np.flatnonzero(selected[sessions.user]))
            row_of_user = np.full(pop.n_users, -1, dtype=np.int64)
            row_of_user[users] = np.arange(len(users))
            out_rows = row_of_user[sessions.user]
            n_users = len(users)
        out = simulate(self.world, self.feed(arm.formula), pop, sessions, self.sim, seed=self.seed,
                       planted=arm.planted_dict, log=log, n_users=n_users, per_session=log, out_rows=out_rows)
        return out.user_days, out

    # --------------------------------------------------------------------------------------------
    # One experiment
    # --------------------------------------------------------------------------------------------

    def _assign(self, arms: Sequence[Arm], pop: Population, design: str, shares: Optional[Sequence[float]],
                salt: Union[int, str]) -> Tuple[Dict[str, np.ndarray], Optional[Dict[str, Any]]]:
        """The observed users of every arm, and the sample-ratio check (randomised design)."""
        active = _active_users(pop)
        if design == "paired":
            return {a.name: active for a in arms}, None
        arm_of_user = assign_arms(pop.user_id, len(arms), shares, salt)
        users = {a.name: active[arm_of_user[active] == i] for i, a in enumerate(arms)}
        srm = srm_test([len(users[a.name]) for a in arms], shares)
        srm["arms"] = [a.name for a in arms]
        return users, srm

    def _pre_period_totals(self, arms: Sequence[Arm], pop: Population, control: str) -> np.ndarray:
        """Every user's totals in the simulated pre-period, under the control formula (CUPED covariate)."""
        control_arm = next(a for a in arms if a.name == control)
        pre_days, _ = self.simulate_arm(Arm("pre", control_arm.formula, "pre"), pop, None, pre=True)
        return pre_days.sum(axis=1, dtype=np.float64)

    def _simulate_into(self, result: ExperimentResult, arm: Arm, pop: Population) -> np.ndarray:
        """Simulate ``arm`` for its users; its totals, impressions, time and position counts go into
        ``result``; returns the per-day totals."""
        started = time.perf_counter()
        days_totals, out = self.simulate_arm(arm, pop, result.users[arm.name])
        result.sim_seconds[arm.name] = time.perf_counter() - started
        result.totals[arm.name] = days_totals.sum(axis=1, dtype=np.float64)
        result.impressions[arm.name] = out.impressions
        result.position[arm.name] = {"impressions": out.position_impressions.tolist(),
                                     "clicks": out.position_clicks.tolist()}
        return days_totals

    def run(self, arms: Sequence[Arm], pop: Population, design: str = "randomised", control: str = "control",
            shares: Optional[Sequence[float]] = None, salt: Union[int, str, None] = None, cuped: bool = True,
            n_boot: int = 0, daily: bool = True, metrics: Sequence[str] = tuple(METRICS),
            compare: bool = True) -> ExperimentResult:
        """Simulate ``arms`` under ``design`` ("randomised" or "paired") and compare each with ``control``."""
        _check_arms(arms, design, control)
        paired = design == "paired"
        users, srm = self._assign(arms, pop, design, shares, pop.seed if salt is None else salt)
        pre_totals = None
        if cuped and not paired and pop.pre_sessions is not None:
            pre_totals = self._pre_period_totals(arms, pop, control)
        result = ExperimentResult(design, list(arms), control, users, {}, {}, {}, srm, {}, {}, {})
        # control first: its per-day totals are kept while the other arms are compared with it
        control_days = None
        for arm in sorted(arms, key=lambda a: a.name != control):
            days_totals = self._simulate_into(result, arm, pop)
            if arm.name == control:
                control_days = days_totals
                continue
            if not compare:
                continue
            pre_t = pre_c = None
            if pre_totals is not None:
                pre_t, pre_c = pre_totals[users[arm.name]], pre_totals[users[control]]
            result.lifts[arm.name] = compare_arms(result.totals[arm.name], result.totals[control], paired, metrics,
                                                  pre_t, pre_c, n_boot=n_boot,
                                                  seed=stable_hash(self.seed, arm.name) % (2**32))
            if daily:
                result.daily[arm.name] = daily_lifts(days_totals, control_days, paired, metrics)
        return result

    # --------------------------------------------------------------------------------------------
    # Weight sweeps (paired)
    # --------------------------------------------------------------------------------------------

    def _paired_control(self, pop: Population, control: Formula) -> Tuple[np.ndarray, np.ndarray]:
        """Active users and their per-user totals under ``control`` (cached per population)."""
        active = _active_users(pop)
        cache = self._control_cache
        if not (cache and cache["formula"] == control and cache["pop"] is pop):  # identity: a live population
            totals, _ = self.simulate_arm(Arm("control", control, "control"), pop, active)
            cache = {"formula": control, "pop": pop, "totals": totals.sum(axis=1, dtype=np.float64)}
            self._control_cache = cache
        return active, cache["totals"]

    def _paired_lifts(self, formula: Formula, arm_name: str, pop: Population, active: np.ndarray,
                      control_totals: np.ndarray, metrics: Sequence[str]) -> Tuple[Dict[str, Lift], int]:
        totals, out = self.simulate_arm(Arm(arm_name, formula), pop, active)
        return compare_arms(totals.sum(axis=1, dtype=np.float64), control_totals, True, metrics), out.impressions

    def sweep(self, pop: Population, base: Formula, term: str, weights: Sequence[float], control: Formula,
              metrics: Sequence[str] = SWEEP_METRICS, replace_term: Optional[str] = None, progress: bool = False,
              label: str = "sweep") -> List[Dict[str, Any]]:
        """Paired lifts over control of ``base`` with ``term``'s weight set to each of ``weights``.

        ``replace_term`` swaps the term for another (e.g. the oracle) before setting its weight.
        """
        active, control_totals = self._paired_control(pop, control)
        swept = base.rename({term: replace_term}) if replace_term else base
        swept_term = replace_term or term
        points = []
        for weight in _progress(weights, progress, label):
            formula = swept.with_weight(swept_term, float(weight))
            lifts, impressions = self._paired_lifts(formula, f"{swept_term}={weight:g}", pop, active, control_totals,
                                                    metrics)
            points.append({"weight": float(weight), "formula": formula.describe(), "impressions": impressions,
                           **_lift_summary(lifts, metrics)})
        return points

    def sweep_existing(self, pop: Population, control: Formula, grid: Sequence[float],
                       metrics: Sequence[str] = SWEEP_METRICS, progress: bool = False) -> List[Dict[str, Any]]:
        """Paired lifts of every re-weighting of the control formula's own terms over ``grid`` (per term)."""
        active, control_totals = self._paired_control(pop, control)
        terms = list(control.terms)
        points = []
        for combo in _progress(_reweightings(control, grid), progress, "re-weight existing"):
            formula = control
            for term, weight in zip(terms, combo):
                formula = formula.with_weight(term, float(weight) * (control.weight(term) or 1.0))
            lifts, _ = self._paired_lifts(formula, "existing", pop, active, control_totals, metrics)
            points.append({"weights": {t: float(w) for t, w in zip(terms, combo)}, "formula": formula.describe(),
                           **_lift_summary(lifts, metrics)})
        return points
