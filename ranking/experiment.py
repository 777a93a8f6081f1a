"""Arms, randomisation, experiments, weight sweeps and ``run_ab`` (what ``kuaihl ab`` calls).

An *arm* is a ranking formula over named terms (:mod:`ranking.blend`). An experiment simulates a
population of users (:mod:`ranking.simulator`) under its arms in one of two designs:

``randomised``
    every user is assigned to one arm by a hash of (user id, salt): ``bucket = splitmix64(id ^ salt)``
    against the arms' cumulative shares. The assignment depends on nothing else, so a user keeps
    their arm on every simulated day (and in a longer or shorter run). Arms are compared as
    independent samples of users: the realistic precision of an online test.
``paired``
    every user is simulated in every arm with common random numbers (the same uniforms for the same
    session, visit and position), and arms are compared user by user: far tighter intervals for the
    same users, used for weight sweeps.

Users enter the analysis when they had at least one session in the period (what logs would see);
the per-day analysis uses the users active that day. CUPED uses a *simulated pre-period*: the same
users under the control formula with fresh random numbers (the world's days replayed), before
assignment, so the covariate cannot depend on the arm.

Sanity arms (added by :func:`run_ab` when the config has a content term):
``aa`` (the control formula again), ``placebo`` (the treatment formula with the content term's
values shuffled across all simulated segments: same distribution, no information), ``oracle``
(the treatment formula with the content term replaced by the hidden true LVTR of the segment on
air, calibrated the same way: what a perfect content model would reach).

Default (production-like) control terms, used when the config names no ID-baseline runs:
``cum_ctr`` and ``cum_lvtr``, the room's running CTR over its segments < u and LVTR over its
*complete* segments <= u - 3 (an LVTR waits 60 s for its outcome), smoothed, from the observable
counters only, Platt-calibrated on the validation split to CTR and LVTR. They know how good a room
has been so far (much like an ID model knows a streamer), not what it shows now. ``prev_ctr`` (CTR
of segment u - 1) is a stronger, real-time control; ``prev_lvtr`` is the last complete LVTR
(segment u - 3).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ranking.blend import Formula, Term, TermValues, parse_formula, resolve_term
from ranking.scores import TruthTerm, stable_hash
from ranking.simulator import (
    OUTCOME_FIELDS,
    Feed,
    Population,
    SimConfig,
    SimWorld,
    build_feed,
    load_sim_world,
    make_population,
    simulate,
    splitmix64,
)
from ranking.stats import Lift, apply_holm, bootstrap_log_lifts, bootstrap_summary, cuped_log_lift, ratio_lift, srm_test

logger = logging.getLogger(__name__)

__all__ = [
    "Arm",
    "DEFAULT_CONFIG",
    "Experiment",
    "ExperimentResult",
    "METRICS",
    "assign_arms",
    "run_ab",
]

#: metric -> (numerator field, denominator field or None for a per-user mean)
METRICS: Dict[str, Tuple[str, Optional[str]]] = {
    "ctr": ("clicks", "impressions"),
    "long_view_rate": ("long_views", "clicks"),
    "play_duration_per_user": ("play_s", None),
    "clicks_per_user": ("clicks", None),
    "impressions_per_user": ("impressions", None),
    "sessions_per_user": ("sessions", None),
    "short_views_per_user": ("short_views", None),
    "short_view_rate": ("short_views", "clicks"),
}
_F = {name: i for i, name in enumerate(OUTCOME_FIELDS)}

DEFAULT_CONFIG: Dict[str, Any] = {
    "terms": {
        "ctr": {"source": "cum_ctr", "calibrate": "auto", "missing": "carry"},
        "lvtr": {"source": "cum_lvtr", "calibrate": "auto", "missing": "carry"},
    },
    "arms": {"control": {"ctr": 1.0, "lvtr": 1.0}},
    "control": "control",
    "treatment": "treatment",
    "content_term": "content",
    "treatment_weight": 1.0,
    "sanity": {"aa": True, "placebo": True, "oracle": True},
    "sweep": {"weights": [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0], "existing": [0.0, 0.25, 0.5, 1.0, 2.0, 4.0], "oracle": True},
    "shares": None,
    "simulator": {},
    "split": "test",
    "n_boot": 200,
}


@dataclasses.dataclass(frozen=True)
class Arm:
    """A named ranking formula; ``role`` says what it is for (control, treatment, aa, placebo, oracle, arm)."""

    name: str
    formula: Formula
    role: str = "arm"
    planted: Tuple[Tuple[str, float], ...] = ()

    @property
    def planted_dict(self) -> Dict[str, float]:
        return dict(self.planted)


def assign_arms(user_id: np.ndarray, n_arms: int, shares: Optional[Sequence[float]] = None, salt: Union[int, str] = 0) -> np.ndarray:
    """Arm index of every user: ``splitmix64(user_id ^ hash(salt))`` mapped onto the cumulative shares.

    Depends only on (user id, salt): stable across days, runs, population sizes and machines.
    """
    shares = np.full(n_arms, 1.0 / n_arms) if shares is None else np.asarray(shares, dtype=np.float64)
    if len(shares) != n_arms or np.any(shares <= 0):
        raise ValueError("shares must give one positive share per arm")
    s = np.uint64(stable_hash("assign", salt) & 0xFFFFFFFFFFFFFFFF)
    h = splitmix64(np.asarray(user_id, dtype=np.int64).astype(np.uint64) ^ s)
    u = (h >> np.uint64(11)).astype(np.float64) / 9007199254740992.0
    edges = np.cumsum(shares / shares.sum())
    return np.minimum(np.searchsorted(edges, u, side="right"), n_arms - 1)


def _num_den(tot: np.ndarray, metrics: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """``[n, M]`` numerators and denominators of ``metrics`` from per-user totals ``[n, F]``."""
    num = np.stack([tot[:, _F[METRICS[m][0]]] for m in metrics], axis=1)
    den = np.stack([tot[:, _F[METRICS[m][1]]] if METRICS[m][1] else np.ones(len(tot)) for m in metrics], axis=1)
    return num, den


def compare_arms(tot_t: np.ndarray, tot_c: np.ndarray, paired: bool, metrics: Sequence[str] = tuple(METRICS),
                 pre_t: Optional[np.ndarray] = None, pre_c: Optional[np.ndarray] = None, n_boot: int = 0, seed: int = 0,
                 alpha: float = 0.05) -> Dict[str, Lift]:
    """Lift of every metric of arm t over control from per-user totals ``[n_users, F]``.

    Delta method on the log scale; plus the user bootstrap (``n_boot`` > 0), CUPED (independent arms
    with pre-period totals) and Holm across the metrics.
    """
    nt, dt = _num_den(tot_t, metrics)
    nc, dc = _num_den(tot_c, metrics)
    out: Dict[str, Lift] = {}
    for j, m in enumerate(metrics):
        out[m] = ratio_lift(nt[:, j], dt[:, j], nc[:, j], dc[:, j], metric=m, paired=paired, alpha=alpha)
    if n_boot > 0 and len(tot_t) > 1 and len(tot_c) > 1:
        draws = bootstrap_log_lifts(nt, dt, nc, dc, paired=paired, n_boot=n_boot, seed=seed)
        for j, m in enumerate(metrics):
            b = bootstrap_summary(draws[:, j], alpha)
            b["se_ratio_to_delta"] = float(b["se"] / out[m].se) if out[m].se and np.isfinite(out[m].se) and out[m].se > 0 else float("nan")
            out[m].bootstrap = b
    if pre_t is not None and pre_c is not None and not paired:
        pnt, pdt = _num_den(pre_t, metrics)
        pnc, pdc = _num_den(pre_c, metrics)
        for j, m in enumerate(metrics):
            lift, info = cuped_log_lift(nt[:, j], dt[:, j], nc[:, j], dc[:, j], pnt[:, j], pdt[:, j], pnc[:, j], pdc[:, j], metric=m, alpha=alpha)
            out[m].cuped = {"lift": lift.lift, "ci": list(lift.ci), "p_value": lift.p_value, "se": lift.se, **info}
    apply_holm(out)
    return out


@dataclasses.dataclass
class ExperimentResult:
    """Per-user totals and comparisons of one experiment."""

    design: str
    arms: List[Arm]
    control: str
    users: Dict[str, np.ndarray]  # arm -> observed users' indices into the population
    totals: Dict[str, np.ndarray]  # arm -> [n_users_arm, F] per-user totals over the period
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
            tot = self.totals[arm.name]
            n = len(tot)
            entry: Dict[str, Any] = {
                "role": arm.role,
                "formula": arm.formula.describe(),
                "users": int(n),
                "impressions": int(self.impressions.get(arm.name, 0)),
                "simulation_s": round(self.sim_seconds.get(arm.name, 0.0), 3),
                "values": _values(tot),
                "position": self.position.get(arm.name),
            }
            if arm.planted:
                entry["planted"] = arm.planted_dict
            if arm.name in self.lifts:
                entry["metrics"] = {m: lf.to_dict() for m, lf in self.lifts[arm.name].items()}
            arms[arm.name] = entry
        return {"design": self.design, "control": self.control, "srm": self.srm, "arms": arms, "daily": self.daily}


def _values(tot: np.ndarray) -> Dict[str, float]:
    out = {}
    for m, (num, den) in METRICS.items():
        x = tot[:, _F[num]].sum()
        y = tot[:, _F[den]].sum() if den else len(tot)
        out[m] = float(x / y) if y > 0 else float("nan")
    return out


class Experiment:
    """Simulate arms over one world with resolved term values.

    ``values``: term name -> calibrated, filled values per base row of ``world`` (see
    :func:`ranking.blend.resolve_term`). Feeds are cached per formula.
    """

    def __init__(self, world: SimWorld, values: Mapping[str, np.ndarray], sim: SimConfig = SimConfig(), seed: int = 0) -> None:
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

    def simulate_arm(self, arm: Arm, pop: Population, users: Optional[np.ndarray] = None, pre: bool = False, log: bool = False):
        """Per-user per-day totals ``[len(users), days, F]`` of ``users`` (default all) under ``arm``, and the outcomes."""
        sessions = pop.pre_sessions if pre else pop.sessions
        if sessions is None:
            raise ValueError("the population has no pre-period sessions")
        if users is None:
            sub = sessions
            n = pop.n_users
            remap = None
        else:
            mask = np.zeros(pop.n_users, dtype=bool)
            mask[users] = True
            sel = np.flatnonzero(mask[sessions.user])
            sub = sessions.subset(sel)
            remap = np.full(pop.n_users, -1, dtype=np.int64)
            remap[users] = np.arange(len(users))
            n = len(users)
        out = simulate(self.world, self.feed(arm.formula), pop, sub, self.sim, seed=self.seed, planted=arm.planted_dict, log=log,
                       n_users=n, per_session=log, out_rows=None if remap is None else remap[sub.user])
        return out.user_days, out

    def run(self, arms: Sequence[Arm], pop: Population, design: str = "randomised", control: str = "control",
            shares: Optional[Sequence[float]] = None, salt: Union[int, str, None] = None, cuped: bool = True, n_boot: int = 0,
            daily: bool = True, metrics: Sequence[str] = tuple(METRICS), compare: bool = True) -> ExperimentResult:
        """Simulate ``arms`` under ``design`` ("randomised" or "paired") and compare each with ``control``."""
        if design not in ("randomised", "paired"):
            raise ValueError(f"design must be 'randomised' or 'paired', got {design!r}")
        names = [a.name for a in arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique: {names}")
        if control not in names:
            raise ValueError(f"control arm {control!r} is not among the arms {names}")
        salt = pop.seed if salt is None else salt
        active = np.flatnonzero(np.bincount(pop.sessions.user, minlength=pop.n_users) > 0)
        users: Dict[str, np.ndarray] = {}
        srm = None
        if design == "randomised":
            idx = assign_arms(pop.user_id, len(arms), shares, salt)
            for i, a in enumerate(arms):
                users[a.name] = active[idx[active] == i]
            srm = srm_test([len(users[a.name]) for a in arms], shares)
            srm["arms"] = names
        else:
            for a in arms:
                users[a.name] = active
        totals: Dict[str, np.ndarray] = {}
        impressions: Dict[str, int] = {}
        secs: Dict[str, float] = {}
        position: Dict[str, Dict[str, List[int]]] = {}
        pre_tot = None
        if cuped and design == "randomised" and pop.pre_sessions is not None:
            ctrl = next(a for a in arms if a.name == control)
            pre_all, _ = self.simulate_arm(Arm("pre", ctrl.formula, "pre"), pop, None, pre=True)
            pre_tot = pre_all.sum(axis=1, dtype=np.float64)
            del pre_all
        lifts: Dict[str, Dict[str, Lift]] = {}
        per_day: Dict[str, Dict[str, List[Dict[str, Any]]]] = {}
        # control first: its per-day totals are kept while the other arms are compared with it
        ordered = sorted(arms, key=lambda a: a.name != control)
        ctrl_days = None
        for a in ordered:
            t0 = time.perf_counter()
            days_tot, out = self.simulate_arm(a, pop, users[a.name])
            secs[a.name] = time.perf_counter() - t0
            totals[a.name] = days_tot.sum(axis=1, dtype=np.float64)
            impressions[a.name] = out.impressions
            position[a.name] = {"impressions": out.position_impressions.tolist(), "clicks": out.position_clicks.tolist()}
            if a.name == control:
                ctrl_days = days_tot
                continue
            if not compare:
                continue
            pt = pc = None
            if pre_tot is not None:
                pt, pc = pre_tot[users[a.name]], pre_tot[users[control]]
            lifts[a.name] = compare_arms(totals[a.name], totals[control], design == "paired", metrics, pt, pc, n_boot=n_boot,
                                         seed=stable_hash(self.seed, a.name) % (2**32))
            if daily:
                per_day[a.name] = self._daily(days_tot, ctrl_days, design == "paired", metrics)
        return ExperimentResult(design, list(arms), control, users, totals, lifts, per_day, srm, impressions, secs, position)

    def _daily(self, tot_t: np.ndarray, tot_c: np.ndarray, paired: bool, metrics: Sequence[str]) -> Dict[str, List[Dict[str, Any]]]:
        out: Dict[str, List[Dict[str, Any]]] = {m: [] for m in metrics}
        s = _F["sessions"]
        for d in range(tot_t.shape[1]):
            if paired:
                act = tot_c[:, d, s] > 0
                a_t, a_c = tot_t[act, d], tot_c[act, d]
            else:
                a_t, a_c = tot_t[tot_t[:, d, s] > 0, d], tot_c[tot_c[:, d, s] > 0, d]
            if len(a_t) < 2 or len(a_c) < 2:
                continue
            nt, dt = _num_den(a_t, metrics)
            nc, dc = _num_den(a_c, metrics)
            for j, m in enumerate(metrics):
                lf = ratio_lift(nt[:, j], dt[:, j], nc[:, j], dc[:, j], metric=m, paired=paired)
                out[m].append({"day": d, "lift": lf.lift, "ci": list(lf.ci), "p_value": lf.p_value, "users": int(len(a_t) if not paired else len(a_c))})
        return out

    def _paired_control(self, pop: Population, control: Formula) -> Tuple[np.ndarray, np.ndarray]:
        """Active users and their per-user totals under ``control`` (cached per population)."""
        active = np.flatnonzero(np.bincount(pop.sessions.user, minlength=pop.n_users) > 0)
        c = self._control_cache
        if not (c and c["formula"] == control and c["pop"] is pop):  # identity: a live population object
            tot, _ = self.simulate_arm(Arm("control", control, "control"), pop, active)
            self._control_cache = c = {"formula": control, "pop": pop, "totals": tot.sum(axis=1, dtype=np.float64)}
        return active, c["totals"]

    def sweep(self, pop: Population, base: Formula, term: str, weights: Sequence[float], control: Formula,
              metrics: Sequence[str] = ("ctr", "play_duration_per_user", "long_view_rate", "clicks_per_user"),
              replace_term: Optional[str] = None, progress: bool = False, label: str = "sweep") -> List[Dict[str, Any]]:
        """Paired lifts over control of ``base`` with ``term``'s weight set to each of ``weights``.

        ``replace_term`` swaps the term for another (e.g. the oracle) before setting its weight.
        """
        active, tc = self._paired_control(pop, control)
        points = []
        f0 = base.rename({term: replace_term}) if replace_term else base
        t_name = replace_term or term
        for w in _progress(weights, progress, label):
            f = f0.with_weight(t_name, float(w))
            tot, out = self.simulate_arm(Arm(f"{t_name}={w:g}", f), pop, active)
            lifts = compare_arms(tot.sum(axis=1, dtype=np.float64), tc, True, metrics)
            points.append({"weight": float(w), "formula": f.describe(), "impressions": out.impressions,
                           **{m: {"lift": lifts[m].lift, "ci": list(lifts[m].ci), "p_value": lifts[m].p_value} for m in metrics}})
        return points

    def sweep_existing(self, pop: Population, control: Formula, grid: Sequence[float],
                       metrics: Sequence[str] = ("ctr", "play_duration_per_user", "long_view_rate", "clicks_per_user"),
                       progress: bool = False) -> List[Dict[str, Any]]:
        """Paired lifts of every re-weighting of the control formula's own terms over ``grid`` (per term)."""
        import itertools

        active, tc = self._paired_control(pop, control)
        terms = list(control.terms)
        combos, seen = [], set()
        for c in itertools.product(grid, repeat=len(terms)):
            if not any(x != 0 for x in c):
                continue
            key = tuple(round(x / max(abs(v) for v in c), 9) for x in c) if control.kind == "linear" else c
            if key not in seen:  # a linear formula ranks the same under any positive rescaling
                seen.add(key)
                combos.append(c)
        points = []
        for combo in _progress(combos, progress, "re-weight existing"):
            f = control
            for t, w in zip(terms, combo):
                f = f.with_weight(t, float(w) * (control.weight(t) or 1.0))
            tot, out = self.simulate_arm(Arm("existing", f), pop, active)
            lifts = compare_arms(tot.sum(axis=1, dtype=np.float64), tc, True, metrics)
            points.append({"weights": {t: float(w) for t, w in zip(terms, combo)}, "formula": f.describe(),
                           **{m: {"lift": lifts[m].lift, "ci": list(lifts[m].ci), "p_value": lifts[m].p_value} for m in metrics}})
        return points


def _progress(items, enabled: bool, desc: str):
    if not enabled:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return items
    return tqdm(items, desc=desc, leave=False)


# ------------------------------------------------------------------------------------------------
# Configuration and run_ab
# ------------------------------------------------------------------------------------------------


def load_arms_config(spec: Union[Mapping[str, Any], str, Path, None]) -> Dict[str, Any]:
    """The arms config as a dict (a mapping, or a YAML / JSON file), merged over :data:`DEFAULT_CONFIG`."""
    if spec is None:
        raw: Dict[str, Any] = {}
    elif isinstance(spec, (str, Path)):
        path = Path(spec)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such arms config")
        text = path.read_text()
        if path.suffix == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text) or {}
        base = path.parent
        raw = _resolve_paths(raw, base)
    else:
        raw = dict(spec)
    unknown = set(raw) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"arms config: unknown key(s) {sorted(unknown)}; known: {sorted(DEFAULT_CONFIG)}")
    cfg = json.loads(json.dumps({k: v for k, v in DEFAULT_CONFIG.items() if k not in ("terms", "arms")}))
    # terms and arms are merged over the defaults (the built-in control terms stay available; terms no
    # arm uses are not resolved); other mappings are merged key by key
    cfg["terms"] = {**DEFAULT_CONFIG["terms"], **dict(raw.get("terms") or {})}
    cfg["arms"] = {**DEFAULT_CONFIG["arms"], **dict(raw.get("arms") or {})}
    for k, v in raw.items():
        if k in ("terms", "arms"):
            continue
        if isinstance(v, Mapping) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


def _resolve_paths(raw: Dict[str, Any], base: Path) -> Dict[str, Any]:
    """Relative score paths in a config file are relative to the file (when they exist there)."""
    terms = raw.get("terms")
    if isinstance(terms, Mapping):
        out = {}
        for name, spec in terms.items():
            src = spec.get("source") if isinstance(spec, Mapping) else spec
            if isinstance(src, str) and not Path(src).is_absolute() and not Path(src).exists() and (base / src).exists():
                src = str(base / src)
                spec = {**spec, "source": src} if isinstance(spec, Mapping) else src
            out[name] = spec
        raw = {**raw, "terms": out}
    return raw


def build_arms(cfg: Mapping[str, Any], terms: Mapping[str, Term]) -> Tuple[List[Arm], Dict[str, Term]]:
    """The arms of a config (control, treatment, user arms, then sanity arms) and any derived terms."""
    control = cfg["control"]
    treatment = cfg["treatment"]
    content = cfg.get("content_term")
    formulas: Dict[str, Formula] = {}
    roles: Dict[str, str] = {}
    planted: Dict[str, Tuple[Tuple[str, float], ...]] = {}
    for name, spec in cfg["arms"].items():
        spec = dict(spec)
        pl = spec.pop("planted", None)
        formulas[name] = parse_formula(spec)
        roles[name] = "control" if name == control else ("treatment" if name == treatment else "arm")
        if pl:
            planted[name] = tuple(sorted((str(k), float(v)) for k, v in pl.items()))
    if control not in formulas:
        raise ValueError(f"arms config: no control arm {control!r} among {sorted(formulas)}")
    derived: Dict[str, Term] = {}
    has_content = content in terms
    if treatment not in formulas and has_content:
        formulas[treatment] = formulas[control].with_weight(content, float(cfg.get("treatment_weight", 1.0)))
        roles[treatment] = "treatment"
    for name, f in formulas.items():
        unknown = [t for t in f.terms if t not in terms]
        if unknown:
            raise ValueError(f"arm {name!r} uses unknown term(s) {unknown}; terms: {sorted(terms)}")
    sanity = cfg.get("sanity") or {}
    arms = [Arm(n, f, roles[n], planted.get(n, ())) for n, f in formulas.items()]
    if sanity.get("aa", True):
        arms.append(Arm("aa", formulas[control], "aa"))
    if has_content and treatment in formulas:
        t_f = formulas[treatment]
        ct = terms[content]
        if sanity.get("placebo", True):
            derived[f"{content}~placebo"] = Term(f"{content}~placebo", ct.source, ct.calibrate, ct.missing)
            arms.append(Arm("placebo", t_f.rename({content: f"{content}~placebo"}), "placebo"))
        if sanity.get("oracle", True):
            # calibrated like the content term once that is resolved (resolve_all): a probability stays as is
            derived[f"{content}~oracle"] = Term(f"{content}~oracle", TruthTerm("true_lvtr"), "none", "prior")
            arms.append(Arm("oracle", t_f.rename({content: f"{content}~oracle"}), "oracle"))
    return arms, derived


def resolve_all(world: SimWorld, terms: Mapping[str, Term], derived: Mapping[str, Term], seed: int, cache_dir: Optional[Path] = None,
                progress: bool = False) -> Dict[str, TermValues]:
    """Resolve every term on the world's base rows; placebo terms are seeded permutations of their term."""
    ctx = world.context(cache_dir=cache_dir, progress=progress)
    out: Dict[str, TermValues] = {}
    for name, t in terms.items():
        out[name] = resolve_term(t, ctx)
    for name, t in derived.items():
        if name.endswith("~placebo"):
            src = out[name[: -len("~placebo")]]
            rng = np.random.default_rng(stable_hash("placebo", seed, name) % (2**32))
            perm = rng.permutation(len(src.values))
            out[name] = dataclasses.replace(src, name=name, values=src.values[perm], raw=src.raw[perm],
                                            source=f"{src.source}, values shuffled across all simulated segments (placebo)")
        else:
            base = out.get(name.split("~", 1)[0])
            kind = base.calibrator.kind if base is not None else "none"
            t = dataclasses.replace(t, calibrate=kind if kind in ("zscore", "rank") else "none")
            out[name] = resolve_term(t, ctx)
    return out


def run_ab(world_dir: Union[str, Path], out_dir: Union[str, Path], arms_config: Union[Mapping[str, Any], str, Path, None] = None,
           n_users: int = 200_000, days: Union[int, str, None] = "auto", seed: int = 0, progress: bool = True, *,
           sweep: bool = True, paired: bool = True, n_boot: Optional[int] = None, figures: bool = True) -> Dict[str, Any]:
    """The offline A/B test of a ranking change; writes ``OUT/ab.json``, ``OUT/report.md`` and ``OUT/figures/``.

    ``world_dir``: a world written by ``kuaihl world`` (its ``test`` split is simulated: rooms no model
    trained on). ``arms_config``: a mapping or a YAML/JSON file (see :data:`DEFAULT_CONFIG`)::

        terms:                      # merged over the built-in ctr: cum_ctr, lvtr: cum_lvtr
          content: runs/content     # a run dir (scored with kuaihl eval on test and val), a predictions
                                    # .parquet ({source, val, column, label}), a built-in name, truth:<col>
          ctr: {source: runs/dcn_m, calibrate: platt, missing: carry}    # ID-baseline runs, if any
        arms:                       # formulas: {term: weight} or {product: {term: [alpha, beta]}}
          control: {ctr: 1, lvtr: 1}                # treatment = control + treatment_weight x content
        treatment_weight: 1.0
        sanity:  {aa: true, placebo: true, oracle: true}
        sweep:   {weights: [0, 0.25, 0.5, 1, 2, 4, 8], existing: [0, 0.25, 0.5, 1, 2, 4], oracle: true}
        shares:  null               # randomised shares per arm (default equal)
        simulator: {position_decay: 0.7, ...}      # SimConfig overrides
        n_boot: 200                 # user-bootstrap replicates (randomised design)

    ``days``: simulated days: ``"auto"`` (default) folds the world's days together until about five
    rooms are on air when sessions start (the default world's 140 test rooms over 14 days leave ~1.4);
    an int D folds (D < the world's days) or replays (D > the world's days) them; None keeps the world's span;
    ``n_users``: simulated users (each assigned to one arm by a hash of its id in the randomised
    design; all of them in every arm in the paired design). Returns the ``ab.json`` content.
    """
    t_start = time.perf_counter()
    timings: Dict[str, float] = {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = load_arms_config(arms_config)
    sim_cfg = SimConfig().replace(**(cfg.get("simulator") or {}))
    n_boot = int(cfg.get("n_boot", 200) if n_boot is None else n_boot)

    t0 = time.perf_counter()
    world = load_sim_world(world_dir, split=cfg.get("split", "test"), days=days, seed=seed)
    feed_stats = world.feed_stats()
    if feed_stats["mean_rooms_on_air"] < 2.0:
        logger.warning("thin feed: %.2f rooms on air on average when sessions start (%.0f%% of starts see >= 2); "
                       "fold the world's days with days=... or use a world with more test rooms", feed_stats["mean_rooms_on_air"], 100 * feed_stats["share_ge2"])
    used = {t for spec in cfg["arms"].values() for t in parse_formula({k: v for k, v in dict(spec).items() if k != "planted"}).terms}
    used.add(cfg.get("content_term"))
    terms = {name: Term.from_config(name, spec) for name, spec in cfg["terms"].items() if name in used}
    arms, derived = build_arms(cfg, terms)
    values = resolve_all(world, terms, derived, seed, cache_dir=out_dir / "scores", progress=progress)
    timings["load_and_score"] = time.perf_counter() - t0
    logger.info("ab: %d arms (%s); %d simulated segments of %d rooms over %d day(s)", len(arms), ", ".join(a.name for a in arms),
                world.n_rows, feed_stats["rooms"], world.days)

    exp = Experiment(world, {k: v.values for k, v in values.items()}, sim_cfg, seed=seed)
    t0 = time.perf_counter()
    pop = make_population(world, n_users, seed, sim_cfg)
    timings["population"] = time.perf_counter() - t0
    control = cfg["control"]

    t0 = time.perf_counter()
    rand = exp.run(arms, pop, "randomised", control, shares=cfg.get("shares"), n_boot=n_boot)
    timings["randomised"] = time.perf_counter() - t0
    logger.info("ab: randomised experiment simulated in %.1f s", timings["randomised"])
    result: Dict[str, Any] = {
        "world": {"dir": str(world_dir), **world.meta, "days_requested": days, "feed": feed_stats},
        "design": {
            "n_users": n_users, "seed": seed, "users_observed": int(sum(len(v) for v in rand.users.values())),
            "randomisation": "arm = splitmix64(user_id ^ hash(salt)) against cumulative shares; stable across days",
            "salt": seed, "shares": cfg.get("shares") or "equal", "split": world.split,
            "out_of_sample": "held-out rooms only: no model trained on them",
            "pre_period": "same users under the control formula, fresh random numbers, same world days (CUPED covariate)",
            "simulator": sim_cfg.to_dict(), "n_boot": n_boot,
        },
        "terms": {k: v.summary() for k, v in values.items()},
        "arms": {a.name: {"role": a.role, "formula": a.formula.describe(), **({"planted": a.planted_dict} if a.planted else {})} for a in arms},
        "randomised": rand.to_dict(),
    }
    if paired:
        t0 = time.perf_counter()
        pr = exp.run(arms, pop, "paired", control, cuped=False, n_boot=0, daily=True)
        timings["paired"] = time.perf_counter() - t0
        result["paired"] = pr.to_dict()
    content = cfg.get("content_term")
    ctrl_formula = next(a.formula for a in arms if a.name == control)
    treat = next((a for a in arms if a.role == "treatment"), None)
    if sweep and treat is not None and content in values:
        t0 = time.perf_counter()
        sw = cfg.get("sweep") or {}
        weights = sw.get("weights", DEFAULT_CONFIG["sweep"]["weights"])
        result["sweep"] = {"term": content, "weights": list(weights),
                           "points": exp.sweep(pop, treat.formula, content, weights, ctrl_formula, progress=progress, label=f"sweep {content}")}
        if sw.get("oracle", True) and f"{content}~oracle" in values:
            result["sweep"]["oracle_points"] = exp.sweep(pop, treat.formula, content, weights, ctrl_formula, replace_term=f"{content}~oracle",
                                                         progress=progress, label="sweep oracle")
        grid = sw.get("existing", DEFAULT_CONFIG["sweep"]["existing"])
        if grid:
            result["sweep"]["existing_points"] = exp.sweep_existing(pop, ctrl_formula, grid, progress=progress)
        timings["sweep"] = time.perf_counter() - t0
    result["sanity"] = sanity_checks(result)
    if isinstance(arms_config, (str, Path)):
        cfg_ref = str(arms_config)
    else:
        try:  # a mapping of plain values (paths, built-in names) is saved next to the results
            from kuaihl_rec.data.io import atomic_write_bytes

            atomic_write_bytes(out_dir / "arms_config.json", json.dumps(dict(arms_config or {}), indent=2).encode())
            cfg_ref = str(out_dir / "arms_config.json")
        except TypeError:
            cfg_ref = "<in-memory arms config with score tables: see the calling script>"
    result["call"] = {"world_dir": str(world_dir), "out_dir": str(out_dir), "arms_config": cfg_ref, "n_users": n_users, "days": days, "seed": seed}
    total_imp = sum(result["randomised"]["arms"][a]["impressions"] for a in result["randomised"]["arms"])
    sim_s = sum(result["randomised"]["arms"][a]["simulation_s"] for a in result["randomised"]["arms"])
    if "paired" in result:
        total_imp += sum(result["paired"]["arms"][a]["impressions"] for a in result["paired"]["arms"])
        sim_s += sum(result["paired"]["arms"][a]["simulation_s"] for a in result["paired"]["arms"])
    timings["total"] = time.perf_counter() - t_start
    result["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    result["throughput"] = {"impressions_simulated": int(total_imp), "simulation_s": round(sim_s, 2),
                            "impressions_per_minute": float(60.0 * total_imp / sim_s) if sim_s > 0 else None}
    from kuaihl_rec.data.io import atomic_write_json

    from ranking.report import write_report

    atomic_write_json(out_dir / "ab.json", result)
    write_report(result, out_dir, figures=figures)
    logger.info("ab: wrote %s and %s", out_dir / "ab.json", out_dir / "report.md")
    return result


def sanity_checks(result: Mapping[str, Any]) -> Dict[str, Any]:
    """The sanity arms' verdicts (A/A and placebo not significant, oracle >= treatment) for the report."""
    arms = result["randomised"]["arms"]
    out: Dict[str, Any] = {}
    key = ("ctr", "play_duration_per_user")
    if "aa" in arms and "metrics" in arms["aa"]:
        m = arms["aa"]["metrics"]
        out["aa_significant_metrics"] = [k for k, v in m.items() if v.get("p_value", 1) < 0.05]
        out["aa_ok"] = all(m[k]["p_value"] >= 0.05 for k in key if k in m)
    if "placebo" in arms and "metrics" in arms["placebo"]:
        m = arms["placebo"]["metrics"]
        out["placebo"] = {k: {"lift": m[k]["lift"], "ci": m[k]["ci"], "p_value": m[k]["p_value"]} for k in key if k in m}
        out["placebo_no_significant_gain"] = all(not (m[k]["p_value"] < 0.05 and m[k]["lift"] > 0) for k in key if k in m)
    src = result.get("paired", result["randomised"])["arms"]
    treat = next((a for a, v in src.items() if v.get("role") == "treatment"), None)
    if "oracle" in src and treat and "metrics" in src["oracle"] and "metrics" in src[treat]:
        out["oracle_vs_treatment"] = {k: {"oracle": src["oracle"]["metrics"][k]["lift"], "treatment": src[treat]["metrics"][k]["lift"]} for k in key}
        out["oracle_bounds_treatment"] = all(v["oracle"] >= v["treatment"] for v in out["oracle_vs_treatment"].values())
    if result["randomised"].get("srm"):
        out["srm_ok"] = not result["randomised"]["srm"]["mismatch"]
    return out
