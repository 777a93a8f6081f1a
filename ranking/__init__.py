"""Blended ranking and the offline A/B simulator.

Scores and formulas
- :mod:`ranking.score_source` what a score source is given and answers; :class:`RunScorer`, the scoring
                              function of run directories the caller hands over (``ranking`` never
                              imports the trainer)
- :mod:`ranking.scores`       score tables, run directories, callables, truth terms; explicit
                              missing-score fills; :func:`load_scores`
- :mod:`ranking.score_cache`  keys of cached run-directory scores (run, world, split): a cache is
                              reused only for the run it was scored from
- :mod:`ranking.observable`   built-in observable terms and the causality check
- :mod:`ranking.blend`        per-term calibration (Platt, isotonic, z-score, rank) and formulas
                              (weighted sum, product of powers)

The simulator
- :mod:`ranking.simulator`    users scrolling a cascading live-stream feed on the synthetic world's hidden
                              truth: feeds and the cascade (:func:`simulate`)
- :mod:`ranking.sim_world`    the world's simulated split on the simulated time line
- :mod:`ranking.population`   users and sessions
- :mod:`ranking.outcomes`     the outcome columns (:class:`Outcome`)
- :mod:`ranking.sim_config`   the clock and :class:`SimConfig`
- :mod:`ranking.random_numbers` counter-based random numbers and stable hashes

The experiment
- :mod:`ranking.arms`         arms, hashed randomisation, the arms config
- :mod:`ranking.design`       the randomised and paired (common random numbers) designs, weight sweeps
- :mod:`ranking.lifts`        metrics and arm-vs-control lifts
- :mod:`ranking.experiment`   :func:`run_ab` (what ``kuaihl ab`` calls)
- :mod:`ranking.stats`        delta-method lifts on the log scale, user bootstrap, CUPED, SRM, Holm
- :mod:`ranking.report`       ``report.md`` and figures

Heavy submodules are imported lazily (PEP 562).
"""

from kuaihl_rec.lazy import lazy_exports

_EXPORTS = {
    "run_ab": "experiment",
    "Arm": "arms",
    "Experiment": "design",
    "assign_arms": "arms",
    "load_arms_config": "arms",
    "Formula": "blend",
    "Term": "blend",
    "Calibrator": "blend",
    "parse_formula": "blend",
    "resolve_term": "blend",
    "load_scores": "scores",
    "ScoreTable": "scores",
    "LeakageError": "score_source",
    "RunScorer": "score_source",
    "check_causal": "observable",
    "Outcome": "outcomes",
    "SimConfig": "sim_config",
    "SimWorld": "sim_world",
    "load_sim_world": "sim_world",
    "make_population": "population",
    "simulate": "simulator",
    "ratio_lift": "stats",
    "srm_test": "stats",
    "holm": "stats",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
