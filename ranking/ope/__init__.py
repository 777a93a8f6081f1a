"""Offline A/B on logged data: off-policy estimates of a ranking policy's value (docs/OPE.md).

- :mod:`ranking.ope.schema`         the log format (impressions, candidates, log.json) and its validation
- :mod:`ranking.ope.plackett_luce`  stochastic rankings: sampling, prefix and exact position-marginal probabilities
- :mod:`ranking.ope.policy`         a blended formula + temperature as a policy on a log's requests
- :mod:`ranking.ope.estimators`     DM, IPS, SNIPS, DR and the position-aware IIPS / RIPS
- :mod:`ranking.ope.reward_model`   the cross-fitted reward model of DM and DR
- :mod:`ranking.ope.intervals`      bootstrap over sessions, effective sample size and weight diagnostics
- :mod:`ranking.ope.evaluate`       every estimator for every policy on a log (``ope.json``)
- :mod:`ranking.ope.logsim`         the simulator's logs and the online truth beside them
- :mod:`ranking.ope.run`            the stages of ``kuaihl ope``; :mod:`ranking.ope.report` its report
- :mod:`ranking.ope.obd`            the Open Bandit Dataset check (Bernoulli TS from uniform-random logs)
"""

from kuaihl_rec.lazy import lazy_exports

_EXPORTS = {
    "LoggedData": "schema",
    "read_logs": "schema",
    "write_logs": "schema",
    "SlateData": "estimators",
    "estimate": "estimators",
    "StochasticPolicy": "policy",
    "evaluate_log": "evaluate",
    "OpeSimConfig": "logsim",
    "simulate_log": "logsim",
    "run_ope": "run",
    "write_simulated_logs": "run",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
