"""The offline A/B test of a ranking change: ``run_ab`` (what ``kuaihl ab`` calls).

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

Layout: :mod:`ranking.arms` (arms, assignment, the arms config), :mod:`ranking.design` (the
:class:`Experiment` of both designs, weight sweeps), :mod:`ranking.lifts` (metrics and lifts);
:func:`run_ab` runs its stages *resolve* (config, world, terms, arms), *run* (population,
randomised and paired experiments), *sweep* (content weight, oracle, existing terms) and *write*
(sanity verdicts, ``ab.json``, ``report.md``).

A ``kuaihl train`` run directory named as a term is scored by the ``score_run`` function the caller
passes (:class:`ranking.score_source.RunScorer`; ``kuaihl ab`` passes
``kuaihl_rec.train.evaluate.evaluate_run``): ``ranking`` never imports the trainer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np

from kuaihl_rec.data.io import atomic_write_bytes, atomic_write_json
from ranking.arms import (
    DEFAULT_CONFIG,
    ORACLE_SUFFIX,
    PLACEBO_SUFFIX,
    Arm,
    assign_arms,
    build_arms,
    load_arms_config,
    used_terms,
)
from ranking.blend import Term, TermValues, resolve_term
from ranking.design import Experiment, ExperimentResult
from ranking.lifts import METRICS, compare_arms
from ranking.population import Population, make_population
from ranking.random_numbers import stable_hash
from ranking.report import write_report
from ranking.score_source import RunScorer
from ranking.sim_config import SimConfig
from ranking.sim_world import SimWorld, load_sim_world

logger = logging.getLogger(__name__)

__all__ = [
    "Arm",
    "DEFAULT_CONFIG",
    "Experiment",
    "ExperimentResult",
    "METRICS",
    "RunScorer",
    "assign_arms",
    "build_arms",
    "compare_arms",
    "load_arms_config",
    "resolve_all",
    "run_ab",
    "sanity_checks",
]

#: The metrics the sanity verdicts look at.
SANITY_METRICS = ("ctr", "play_duration_per_user")


def resolve_all(world: SimWorld, terms: Mapping[str, Term], derived: Mapping[str, Term], seed: int,
                cache_dir: Optional[Path] = None, progress: bool = False,
                score_run: Optional[RunScorer] = None) -> Dict[str, TermValues]:
    """Resolve every term on the world's base rows; placebo terms are seeded permutations of their term.

    ``score_run`` scores the terms that are run directories (:class:`ranking.score_source.RunScorer`).
    """
    ctx = world.context(cache_dir=cache_dir, progress=progress, score_run=score_run)
    out: Dict[str, TermValues] = {}
    for name, term in terms.items():
        out[name] = resolve_term(term, ctx)
    for name, term in derived.items():
        if name.endswith(PLACEBO_SUFFIX):
            original = out[name[: -len(PLACEBO_SUFFIX)]]
            rng = np.random.default_rng(stable_hash("placebo", seed, name) % (2**32))
            perm = rng.permutation(len(original.values))
            out[name] = dataclasses.replace(
                original, name=name, values=original.values[perm], raw=original.raw[perm],
                source=f"{original.source}, values shuffled across all simulated segments (placebo)")
        else:
            base = out.get(name.split("~", 1)[0])
            kind = base.calibrator.kind if base is not None else "none"
            term = dataclasses.replace(term, calibrate=kind if kind in ("zscore", "rank") else "none")
            out[name] = resolve_term(term, ctx)
    return out


# ------------------------------------------------------------------------------------------------
# run_ab and its stages
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Setup:
    """What the resolve stage hands the others: the config, the world, the arms and the term values."""

    cfg: Dict[str, Any]
    sim_cfg: SimConfig
    n_boot: int
    world: SimWorld
    feed_stats: Dict[str, Any]
    arms: List[Arm]
    values: Dict[str, TermValues]

    @property
    def control(self) -> str:
        return self.cfg["control"]

    @property
    def content_term(self) -> Optional[str]:
        return self.cfg.get("content_term")


def _resolve(world_dir: Union[str, Path], out_dir: Path, cfg: Dict[str, Any], days: Union[int, str, None], seed: int,
             progress: bool, n_boot: Optional[int], score_run: Optional[RunScorer]) -> _Setup:
    """Resolve stage: the simulator config, the world on its time line, the used terms, the arms."""
    sim_cfg = SimConfig().replace(**(cfg.get("simulator") or {}))
    n_boot = int(cfg.get("n_boot", 200) if n_boot is None else n_boot)
    world = load_sim_world(world_dir, split=cfg.get("split", "test"), days=days, seed=seed)
    feed_stats = world.feed_stats()
    if feed_stats["mean_rooms_on_air"] < 2.0:
        logger.warning("thin feed: %.2f rooms on air on average when sessions start (%.0f%% of starts see >= 2); "
                       "fold the world's days with days=... or use a world with more test rooms",
                       feed_stats["mean_rooms_on_air"], 100 * feed_stats["share_ge2"])
    used = used_terms(cfg)
    terms = {name: Term.from_config(name, spec) for name, spec in cfg["terms"].items() if name in used}
    arms, derived = build_arms(cfg, terms)
    values = resolve_all(world, terms, derived, seed, cache_dir=out_dir / "scores", progress=progress,
                         score_run=score_run)
    return _Setup(cfg, sim_cfg, n_boot, world, feed_stats, arms, values)


def _header(setup: _Setup, world_dir: Union[str, Path], n_users: int, days: Union[int, str, None], seed: int,
            randomised: ExperimentResult) -> Dict[str, Any]:
    """The ``ab.json`` entries that describe the world, the design, the terms and the arms."""
    world, cfg = setup.world, setup.cfg
    return {
        "world": {"dir": str(world_dir), **world.meta, "days_requested": days, "feed": setup.feed_stats},
        "design": {
            "n_users": n_users, "seed": seed,
            "users_observed": int(sum(len(v) for v in randomised.users.values())),
            "randomisation": "arm = splitmix64(user_id ^ hash(salt)) against cumulative shares; stable across days",
            "salt": seed, "shares": cfg.get("shares") or "equal", "split": world.split,
            "out_of_sample": "held-out rooms only: no model trained on them",
            "pre_period": "same users under the control formula, fresh random numbers, same world days "
                          "(CUPED covariate)",
            "simulator": setup.sim_cfg.to_dict(), "n_boot": setup.n_boot,
        },
        "terms": {k: v.summary() for k, v in setup.values.items()},
        "arms": {a.name: {"role": a.role, "formula": a.formula.describe(),
                          **({"planted": a.planted_dict} if a.planted else {})} for a in setup.arms},
    }


def _run_experiments(setup: _Setup, exp: Experiment, pop: Population, paired: bool,
                     timings: Dict[str, float]) -> Dict[str, Any]:
    """Run stage: the randomised experiment (and the paired one); ``{"randomised": ..., "paired": ...}``."""
    started = time.perf_counter()
    randomised = exp.run(setup.arms, pop, "randomised", setup.control, shares=setup.cfg.get("shares"),
                         n_boot=setup.n_boot)
    timings["randomised"] = time.perf_counter() - started
    logger.info("ab: randomised experiment simulated in %.1f s", timings["randomised"])
    designs: Dict[str, Any] = {"randomised": randomised}
    if paired:
        started = time.perf_counter()
        designs["paired"] = exp.run(setup.arms, pop, "paired", setup.control, cuped=False, n_boot=0, daily=True)
        timings["paired"] = time.perf_counter() - started
    return designs


def _run_sweeps(setup: _Setup, exp: Experiment, pop: Population, progress: bool) -> Dict[str, Any]:
    """Sweep stage: the content term's weight (and the oracle's) and re-weightings of the existing terms."""
    content = setup.content_term
    control_formula = next(a.formula for a in setup.arms if a.name == setup.control)
    treatment = next(a for a in setup.arms if a.role == "treatment")
    spec = setup.cfg.get("sweep") or {}
    weights = spec.get("weights", DEFAULT_CONFIG["sweep"]["weights"])
    out: Dict[str, Any] = {"term": content, "weights": list(weights),
                           "points": exp.sweep(pop, treatment.formula, content, weights, control_formula,
                                               progress=progress, label=f"sweep {content}")}
    oracle = f"{content}{ORACLE_SUFFIX}"
    if spec.get("oracle", True) and oracle in setup.values:
        out["oracle_points"] = exp.sweep(pop, treatment.formula, content, weights, control_formula,
                                         replace_term=oracle, progress=progress, label="sweep oracle")
    grid = spec.get("existing", DEFAULT_CONFIG["sweep"]["existing"])
    if grid:
        out["existing_points"] = exp.sweep_existing(pop, control_formula, grid, progress=progress)
    return out


def _config_reference(arms_config: Union[Mapping[str, Any], str, Path, None], out_dir: Path) -> str:
    """Where the arms config can be found again: its file, or a copy saved next to the results."""
    if isinstance(arms_config, (str, Path)):
        return str(arms_config)
    try:  # a mapping of plain values (paths, built-in names) is saved next to the results
        text = json.dumps(dict(arms_config or {}), indent=2)
    except TypeError:
        return "<in-memory arms config with score tables: see the calling script>"
    atomic_write_bytes(out_dir / "arms_config.json", text.encode())
    return str(out_dir / "arms_config.json")


def _throughput(result: Mapping[str, Any]) -> Dict[str, Any]:
    impressions, seconds = 0, 0.0
    for design in ("randomised", "paired"):
        if design in result:
            arms = result[design]["arms"].values()
            impressions += sum(a["impressions"] for a in arms)
            seconds += sum(a["simulation_s"] for a in arms)
    return {"impressions_simulated": int(impressions), "simulation_s": round(seconds, 2),
            "impressions_per_minute": float(60.0 * impressions / seconds) if seconds > 0 else None}


def _write(result: Dict[str, Any], out_dir: Path, figures: bool) -> None:
    """Write stage: ``ab.json`` and ``report.md`` (with figures)."""
    atomic_write_json(out_dir / "ab.json", result)
    write_report(result, out_dir, figures=figures)
    logger.info("ab: wrote %s and %s", out_dir / "ab.json", out_dir / "report.md")


def run_ab(world_dir: Union[str, Path], out_dir: Union[str, Path],
           arms_config: Union[Mapping[str, Any], str, Path, None] = None, n_users: int = 200_000,
           days: Union[int, str, None] = "auto", seed: int = 0, progress: bool = True, *, sweep: bool = True,
           paired: bool = True, n_boot: Optional[int] = None, figures: bool = True,
           score_run: Optional[RunScorer] = None) -> Dict[str, Any]:
    """The offline A/B test of a ranking change; writes ``OUT/ab.json``, ``OUT/report.md`` and ``OUT/figures/``.

    ``world_dir``: a world written by ``kuaihl world`` (its ``test`` split is simulated: rooms no model
    trained on). ``arms_config``: a mapping or a YAML/JSON file (see :data:`DEFAULT_CONFIG`)::

        terms:                      # merged over the built-in ctr: cum_ctr, lvtr: cum_lvtr
          content: runs/content     # a run dir (scored by score_run on test and val), a predictions
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
    an int D folds (D < the world's days) or replays (D > the world's days) them; None keeps the world's
    span; ``n_users``: simulated users (each assigned to one arm by a hash of its id in the randomised
    design; all of them in every arm in the paired design). ``score_run``: scores the terms that are
    ``kuaihl train`` run directories (:class:`ranking.score_source.RunScorer`, e.g.
    ``functools.partial(kuaihl_rec.train.evaluate.evaluate_run, progress=False)``); without it such a
    term is an error (unless this run's predictions on this world are already cached in ``OUT/scores``: each
    cached file carries the key of the run, world and split it was scored from, :mod:`ranking.score_cache`).
    Returns the ``ab.json`` content.
    """
    t_start = time.perf_counter()
    timings: Dict[str, float] = {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = load_arms_config(arms_config)

    started = time.perf_counter()
    setup = _resolve(world_dir, out_dir, cfg, days, seed, progress, n_boot, score_run)
    timings["load_and_score"] = time.perf_counter() - started
    logger.info("ab: %d arms (%s); %d simulated segments of %d rooms over %d day(s)", len(setup.arms),
                ", ".join(a.name for a in setup.arms), setup.world.n_rows, setup.feed_stats["rooms"], setup.world.days)

    exp = Experiment(setup.world, {k: v.values for k, v in setup.values.items()}, setup.sim_cfg, seed=seed)
    started = time.perf_counter()
    pop = make_population(setup.world, n_users, seed, setup.sim_cfg)
    timings["population"] = time.perf_counter() - started
    designs = _run_experiments(setup, exp, pop, paired, timings)
    result = _header(setup, world_dir, n_users, days, seed, designs["randomised"])
    result.update({design: experiment.to_dict() for design, experiment in designs.items()})

    has_treatment = any(a.role == "treatment" for a in setup.arms)
    if sweep and has_treatment and setup.content_term in setup.values:
        started = time.perf_counter()
        result["sweep"] = _run_sweeps(setup, exp, pop, progress)
        timings["sweep"] = time.perf_counter() - started
    result["sanity"] = sanity_checks(result)
    result["call"] = {"world_dir": str(world_dir), "out_dir": str(out_dir),
                      "arms_config": _config_reference(arms_config, out_dir), "n_users": n_users, "days": days,
                      "seed": seed}
    throughput = _throughput(result)
    timings["total"] = time.perf_counter() - t_start
    result["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    result["throughput"] = throughput
    _write(result, out_dir, figures)
    return result


def sanity_checks(result: Mapping[str, Any]) -> Dict[str, Any]:
    """The sanity arms' verdicts (A/A and placebo not significant, oracle >= treatment) for the report."""
    arms = result["randomised"]["arms"]
    out: Dict[str, Any] = {}
    if "aa" in arms and "metrics" in arms["aa"]:
        metrics = arms["aa"]["metrics"]
        out["aa_significant_metrics"] = [k for k, v in metrics.items() if v.get("p_value", 1) < 0.05]
        out["aa_ok"] = all(metrics[k]["p_value"] >= 0.05 for k in SANITY_METRICS if k in metrics)
    if "placebo" in arms and "metrics" in arms["placebo"]:
        metrics = arms["placebo"]["metrics"]
        out["placebo"] = {k: {"lift": metrics[k]["lift"], "ci": metrics[k]["ci"], "p_value": metrics[k]["p_value"]}
                          for k in SANITY_METRICS if k in metrics}
        out["placebo_no_significant_gain"] = all(not (metrics[k]["p_value"] < 0.05 and metrics[k]["lift"] > 0)
                                                 for k in SANITY_METRICS if k in metrics)
    source = result.get("paired", result["randomised"])["arms"]
    treatment = next((a for a, v in source.items() if v.get("role") == "treatment"), None)
    if "oracle" in source and treatment and "metrics" in source["oracle"] and "metrics" in source[treatment]:
        out["oracle_vs_treatment"] = {k: {"oracle": source["oracle"]["metrics"][k]["lift"],
                                          "treatment": source[treatment]["metrics"][k]["lift"]}
                                      for k in SANITY_METRICS}
        out["oracle_bounds_treatment"] = all(v["oracle"] >= v["treatment"] for v in out["oracle_vs_treatment"].values())
    if result["randomised"].get("srm"):
        out["srm_ok"] = not result["randomised"]["srm"]["mismatch"]
    return out
