"""Bootstrap intervals over sessions and importance-weight diagnostics (docs/OPE.md, "Intervals", "Diagnostics").

Intervals: the sessions (``session_id``, the unit whose requests are correlated) are resampled with
replacement B times (Efron & Tibshirani 1993); each replicate recomputes ``sum num / sum den`` of the
estimator's per-request contributions from per-session sums, ``counts [B, S] @ sums [S]``. The interval is
the percentile one; the standard error the replicates' standard deviation. A lift ``V(pi) / V(pi_0) - 1``
uses the same resampled sessions for both values.

Diagnostics of a weight family (slate, marginal or prefix weights of the logged rows):
Kish's effective sample size ``ESS = (sum w)^2 / sum w^2`` (and its share of n), the largest weight,
the mean weight (1 in expectation under the logging policy when pi_0 covers pi's support: a mean far from 1,
in standard errors, means wrong propensities or missing support) and the share of the total weight held by
the largest 1 % of weights (the mean weight's standard error is clustered by session: the weights of one
list, and of one session's lists, are correlated). :func:`weight_diagnostics` flags estimates as
untrustworthy by :class:`DiagnosticThresholds`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ranking.ope.estimators import ESTIMATORS, Contributions

__all__ = ["DiagnosticThresholds", "SessionBootstrap", "families", "family_sessions", "family_weights",
           "weight_diagnostics"]


class SessionBootstrap:
    """B resamplings of the sessions, shared by every estimator of one log (one seed)."""

    def __init__(self, session: np.ndarray, n_boot: int = 200, seed: int = 0) -> None:
        self.session = np.asarray(session, np.int64)
        self.n_sessions = int(self.session.max()) + 1 if len(self.session) else 0
        rng = np.random.default_rng(seed)
        self.counts = rng.multinomial(self.n_sessions, np.full(self.n_sessions, 1.0 / self.n_sessions),
                                      size=n_boot).astype(np.float64) if n_boot > 0 else np.zeros((0, self.n_sessions))

    def _sums(self, per_request: np.ndarray) -> np.ndarray:
        return np.bincount(self.session, weights=per_request, minlength=self.n_sessions)

    def replicates(self, c: Contributions) -> np.ndarray:
        """``[B]`` estimates on the resampled sessions."""
        num, den = self.counts @ self._sums(c.num), self.counts @ self._sums(c.den)
        return num / np.where(den != 0, den, np.nan)

    def summary(self, c: Contributions, level: float = 0.95) -> Dict[str, Any]:
        """The estimate, its bootstrap standard error and percentile interval."""
        reps = self.replicates(c)
        return {"value": c.value, **_interval(reps, level)}

    def lift(self, c: Contributions, base: Contributions, level: float = 0.95) -> Dict[str, Any]:
        """``V / V_0 - 1`` with its interval (both values on the same resampled sessions); value None when
        ``V_0`` is 0 or not finite (a log without clicks: no lift is defined)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            reps = self.replicates(c) / self.replicates(base) - 1.0
        v, v0 = c.value, base.value
        value = v / v0 - 1.0 if v0 != 0 and np.isfinite(v0) and np.isfinite(v) else None
        return {"value": value, **_interval(reps, level)}


def _interval(reps: np.ndarray, level: float) -> Dict[str, Any]:
    reps = reps[np.isfinite(reps)]
    if len(reps) < 2:
        return {"se": None, "ci": [None, None]}
    alpha = (1.0 - level) / 2
    low, high = np.quantile(reps, [alpha, 1.0 - alpha])
    return {"se": float(reps.std(ddof=1)), "ci": [float(low), float(high)]}


@dataclasses.dataclass(frozen=True)
class DiagnosticThresholds:
    """When weight diagnostics call an estimate untrustworthy."""

    min_ess: float = 100.0
    min_ess_share: float = 0.01
    max_top1pct_share: float = 0.5
    max_mean_weight_z: float = 4.0


def _mean_se(w: np.ndarray, cluster: Optional[np.ndarray]) -> float:
    """Standard error of the mean weight; with ``cluster`` (a session per weight) the cluster-robust one,
    ``sqrt(S / (S - 1) sum_s (W_s - mean n_s)^2) / n`` (weights of one session are correlated)."""
    n = len(w)
    if cluster is None:
        return float(w.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    _, cluster = np.unique(cluster, return_inverse=True)
    s = int(cluster.max()) + 1 if n else 0
    if s < 2:
        return float("nan")
    resid = np.bincount(cluster, weights=w, minlength=s) - w.mean() * np.bincount(cluster, minlength=s)
    return float(np.sqrt(s / (s - 1) * np.square(resid).sum()) / n)


def weight_diagnostics(weights: np.ndarray, thresholds: DiagnosticThresholds = DiagnosticThresholds(),
                       family: str = "", cluster: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """ESS, its share, max and mean weight (standard error clustered by ``cluster`` when given), the top-1 %
    weight share and the warnings they raise."""
    w = np.asarray(weights, np.float64)
    n = len(w)
    total, squares = float(w.sum()), float(np.square(w).sum())
    ess = total * total / squares if squares > 0 else 0.0
    top = max(1, int(np.ceil(0.01 * n)))
    top_share = float(np.sort(w)[-top:].sum() / total) if total > 0 else 1.0
    mean = float(w.mean()) if n else float("nan")
    se = _mean_se(w, cluster)
    # no z test without a finite standard error (fewer than 2 sessions): mean_weight_se is then None
    if not np.isfinite(se):
        z, se = 0.0, None
    else:
        z = abs(mean - 1.0) / se if se > 0 else (0.0 if mean == 1.0 else float("inf"))
    warnings: List[str] = []
    if ess < thresholds.min_ess:
        warnings.append(f"effective sample size {ess:.0f} < {thresholds.min_ess:g}")
    if n and ess / n < thresholds.min_ess_share:
        warnings.append(f"effective sample size is {100 * ess / n:.2f}% of the {n} weights "
                        f"(< {100 * thresholds.min_ess_share:g}%)")
    if top_share > thresholds.max_top1pct_share:
        warnings.append(f"the largest 1% of weights hold {100 * top_share:.0f}% of the total weight")
    if z > thresholds.max_mean_weight_z:
        warnings.append(f"mean weight {mean:.3f} is {z:.1f} standard errors from 1 (wrong propensities or a target "
                        "outside the logging policy's support)")
    return {"family": family, "n": n, "ess": ess, "ess_share": ess / n if n else 0.0, "max_weight": float(w.max()),
            "mean_weight": mean, "mean_weight_se": se, "top1pct_share": top_share, "warnings": warnings,
            "trustworthy": not warnings}


def family_weights(data: Any, family: str) -> Optional[np.ndarray]:
    """The weights of ``family`` of a :class:`ranking.ope.estimators.SlateData` (None for ``none``)."""
    if family == "slate":
        return data.slate_weight
    if family == "marginal":
        return data.marginal_weight
    if family == "prefix":
        return data.prefix_weight
    return None


def family_sessions(data: Any, family: str) -> np.ndarray:
    """The session of each weight of ``family`` (per request for ``slate``, per impression row otherwise)."""
    return data.session if family == "slate" else data.session[data.request]


def families(names: Sequence[str]) -> List[str]:
    """The weight families the estimators ``names`` use, in a fixed order."""
    used = {ESTIMATORS[n][1] for n in names}
    return [f for f in ("slate", "marginal", "prefix") if f in used]
