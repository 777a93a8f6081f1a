"""Off-policy estimates of ranking policies on a log: values, intervals, lifts, diagnostics, truth beside them.

:func:`evaluate_log` is what ``kuaihl ope`` runs on a validated log (:mod:`ranking.ope.schema`): for each
policy and reward (``click``: clicks per request; ``watch_s``: seconds watched per request) every estimator
the log supports (:mod:`ranking.ope.estimators`), a session-bootstrap interval and the lift over the logging
policy's on-policy value (:mod:`ranking.ope.intervals`), the weight diagnostics of each weight family, and,
for simulated logs (``log.json`` carries ``truth``), the true value, lift and each estimate's relative error.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from ranking.ope.estimators import ESTIMATORS, Contributions, available, contributions
from ranking.ope.intervals import (
    DiagnosticThresholds,
    SessionBootstrap,
    families,
    family_sessions,
    family_weights,
    weight_diagnostics,
)
from ranking.ope.policy import PolicyProbabilities, RequestArrays, StochasticPolicy, slate_data
from ranking.ope.reward_model import fit_reward_model
from ranking.ope.schema import REWARDS, LoggedData

logger = logging.getLogger(__name__)

__all__ = ["evaluate_log"]



def _truth_for(meta: Mapping[str, Any], name: str, policy: StochasticPolicy) -> Optional[Dict[str, Any]]:
    """The simulator's truth for ``name`` when it was made for the same formula and temperature."""
    entry = (meta.get("truth") or {}).get(name)
    if not entry:
        return None
    same = entry["policy"]["describe"] == policy.formula.describe() and \
        abs(entry["policy"]["temperature"] - policy.temperature) < 1e-12
    if not same:
        logger.warning("ope: the log's truth for %r was simulated for %s (temperature %g), not %s (temperature %g): "
                       "not used", name, entry["policy"]["describe"], entry["policy"]["temperature"],
                       policy.formula.describe(), policy.temperature)
        return None
    return entry


def _reward_block(arrays: RequestArrays, probs: PolicyProbabilities, reward: str, q_hat: np.ndarray,
                  boot: SessionBootstrap, base: Contributions, truth: Optional[Mapping[str, Any]],
                  names: Sequence[str]) -> Dict[str, Any]:
    data = slate_data(arrays, probs, reward, q_hat)
    out: Dict[str, Any] = {"estimates": {}}
    for name in names:
        c = contributions(data, name)
        entry = boot.summary(c)
        entry["lift"] = boot.lift(c, base)
        if truth is not None:
            true = truth[reward]["value"]
            entry["relative_error"] = (entry["value"] - true) / true if true else None
            true_lift = truth["lift"][reward]["value"] if "lift" in truth else None
            entry["lift_error"] = entry["lift"]["value"] - true_lift \
                if entry["lift"]["value"] is not None and true_lift is not None else None
        out["estimates"][name] = entry
    if truth is not None:
        out["truth"] = {**truth[reward], **({"lift": truth["lift"][reward]} if "lift" in truth else {})}
    return out


def _estimator_names(requested: Optional[Sequence[str]], supported: Sequence[str]) -> list:
    """The estimators to run: every supported one, or the requested ones (all known and supported)."""
    if requested is None:
        names = list(supported)
    else:
        unknown = [n for n in requested if n not in ESTIMATORS]
        if unknown:
            raise ValueError(f"unknown estimator(s) {unknown}; known: {sorted(ESTIMATORS)}")
        unsupported = [n for n in requested if n not in supported]
        if unsupported:
            raise ValueError(f"estimator(s) {unsupported} not supported by this log (slate and prefix estimators need "
                             f"the prefix_propensity column, dm and dr a reward model); supported: {list(supported)}")
        names = list(dict.fromkeys(requested))
    if not names:
        raise ValueError(f"no estimators to evaluate (requested {requested!r}, supported {list(supported)})")
    return names


def evaluate_log(data: LoggedData, policies: Mapping[str, StochasticPolicy], rewards: Sequence[str] = REWARDS,
                 n_boot: int = 200, seed: int = 0, thresholds: DiagnosticThresholds = DiagnosticThresholds(),
                 estimators: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Estimates of every policy's value per reward on ``data``; the ``ope.json`` content."""
    arrays = RequestArrays.from_logs(data)
    missing = sorted({t for p in policies.values() for t in p.formula.terms} - set(arrays.terms))
    if missing:
        raise ValueError(f"the policies use term(s) {missing} that the log's candidates table has no column for; "
                         f"its score columns: {sorted(arrays.terms)}")
    boot = SessionBootstrap(arrays.session, n_boot, seed)
    q_hats = {r: fit_reward_model(arrays, data.impressions[r].to_numpy(np.float64), seed=seed) for r in rewards}
    ones = np.ones(len(arrays.session))
    on_policy = {r: Contributions(np.bincount(arrays.row_request, weights=data.impressions[r].to_numpy(np.float64),
                                              minlength=len(ones)), ones) for r in rewards}
    result: Dict[str, Any] = {
        "log": {"path": str(data.path) if data.path else None, "requests": int(len(arrays.session)),
                "impressions": int(len(data.impressions)), "sessions": int(arrays.session.max() + 1),
                "positions": int(arrays.n_positions), "max_candidates": int(arrays.present.shape[1]),
                "has_prefix_propensity": data.has_prefix, "meta": {k: v for k, v in data.meta.items() if k != "truth"}},
        "on_policy": {r: boot.summary(on_policy[r]) for r in rewards},
        "n_boot": n_boot, "seed": seed, "thresholds": thresholds.__dict__, "policies": {},
    }
    if data.meta.get("truth", {}).get("__logging__"):
        result["on_policy_truth"] = {r: data.meta["truth"]["__logging__"][r] for r in rewards}
    for name, policy in policies.items():
        probs = PolicyProbabilities.of(policy, arrays)
        truth = _truth_for(data.meta, name, policy)
        probe = slate_data(arrays, probs, rewards[0], q_hats[rewards[0]])
        names = _estimator_names(estimators, available(probe))
        diagnostics = {f: weight_diagnostics(family_weights(probe, f), thresholds, f, family_sessions(probe, f))
                       for f in families(names)}
        entry: Dict[str, Any] = {"policy": policy.to_dict(), "estimators": names, "diagnostics": diagnostics,
                                 "trustworthy": all(d["trustworthy"] for d in diagnostics.values()), "rewards": {}}
        # "trustworthy": every weight family is; each estimate also carries its own family's verdict
        for reward in rewards:
            block = _reward_block(arrays, probs, reward, q_hats[reward], boot, on_policy[reward], truth, names)
            for est, e in block["estimates"].items():  # an estimate is as trustworthy as the weights it uses
                family = ESTIMATORS[est][1]
                e["weights"] = family
                e["trustworthy"] = diagnostics[family]["trustworthy"] if family in diagnostics else None
            entry["rewards"][reward] = block
        for d in diagnostics.values():
            for warning in d["warnings"]:
                users = ", ".join(n for n in names if ESTIMATORS[n][1] == d["family"])
                logger.warning("ope: policy %s, %s weights: %s; not trustworthy: %s", name, d["family"], warning, users)
        result["policies"][name] = entry
    return result
