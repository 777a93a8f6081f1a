"""Blended ranking and the offline A/B simulator.

- :mod:`ranking.scores`     the scoring interface: score tables, run directories, callables, built-in
                            observable terms; causality checks; explicit missing-score fills
- :mod:`ranking.blend`      per-term calibration (Platt, isotonic, z-score, rank) and formulas
                            (weighted sum, product of powers)
- :mod:`ranking.simulator`  users scrolling a cascading live-stream feed on the synthetic world's hidden truth
- :mod:`ranking.experiment` arms, hashed randomisation, paired (common random numbers) design, weight sweeps,
                            :func:`run_ab` (what ``kuaihl ab`` calls)
- :mod:`ranking.stats`      delta-method lifts on the log scale, user bootstrap, CUPED, SRM, Holm
- :mod:`ranking.report`     ``report.md`` and figures

Heavy submodules are imported lazily (PEP 562).
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "run_ab": "experiment",
    "Arm": "experiment",
    "Experiment": "experiment",
    "assign_arms": "experiment",
    "load_arms_config": "experiment",
    "Formula": "blend",
    "Term": "blend",
    "Calibrator": "blend",
    "parse_formula": "blend",
    "resolve_term": "blend",
    "load_scores": "scores",
    "ScoreTable": "scores",
    "LeakageError": "scores",
    "check_causal": "scores",
    "SimConfig": "simulator",
    "SimWorld": "simulator",
    "load_sim_world": "simulator",
    "make_population": "simulator",
    "simulate": "simulator",
    "ratio_lift": "stats",
    "srm_test": "stats",
    "holm": "stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"ranking.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'ranking' has no attribute {name!r}")
