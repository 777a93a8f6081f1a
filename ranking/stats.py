"""Statistics of an online (or simulated) A/B test, at the level of the randomisation unit: the user.

Every metric is a ratio of two per-user sums, ``R = sum_i x_i / sum_i y_i`` (a per-user mean is the
case ``y_i = 1``): CTR = clicks / impressions, long-view rate = long views / clicks, play duration
per user = seconds / 1. The relative lift of arm t over control c is estimated on the log scale,

    L = log(R_t) - log(R_c),           lift = exp(L) - 1,           95% CI = exp(L -/+ 1.96 se) - 1,

with ``se`` from the delta method. Linearising ``log(xbar / ybar)`` at the arm means gives the
per-user influence value (Deng, Knoblich & Lu, KDD 2018, "Applying the delta method in metric
analytics")

    phi_i = x_i / xbar - y_i / ybar,       Var(log R) ~= Var(phi) / n,

so independent arms give ``Var(L) = Var(phi_t)/n_t + Var(phi_c)/n_c`` and a paired design (every user
in both arms, common random numbers) gives ``Var(L) = Var(phi_t - phi_c) / n``.

Also here: a user-level (Poisson) bootstrap of ``L`` as a check of the delta method; CUPED
(Deng, Xu, Kohavi & Walker, WSDM 2013) with a pre-period covariate linearised the same way; the
sample-ratio-mismatch chi-square test; Holm's step-down correction across metrics.

Example::

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y_c, y_t = rng.poisson(20, 5000), rng.poisson(20, 5000)
    >>> x_c, x_t = rng.binomial(y_c, 0.10), rng.binomial(y_t, 0.11)
    >>> r = ratio_lift(x_t, y_t, x_c, y_c, metric="ctr")
    >>> bool(r.ci[0] < 0.10 < r.ci[1])
    True
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import stats as scipy_stats

__all__ = [
    "Lift",
    "bootstrap_log_lifts",
    "cuped_log_lift",
    "holm",
    "linearize",
    "log_ratio_se",
    "ratio_lift",
    "srm_test",
]


def _z(alpha: float) -> float:
    return float(scipy_stats.norm.isf(alpha / 2.0))


@dataclasses.dataclass
class Lift:
    """The comparison of one metric between an arm and control.

    ``control`` / ``treatment``: the arms' metric values (ratio of sums); ``lift`` = exp(L) - 1 with
    ``L = log_lift``; ``ci`` the (1 - alpha) interval of the relative lift; ``p_value`` two-sided.
    ``bootstrap``: the user-bootstrap check (``se``, ``ci``), ``cuped``: the CUPED-adjusted result,
    ``p_holm``: Holm-adjusted p-value across the metrics of the same arm (filled by the caller).
    """

    metric: str
    control: float
    treatment: float
    lift: float
    log_lift: float
    se: float
    ci: Tuple[float, float]
    p_value: float
    n_control: int
    n_treatment: int
    paired: bool = False
    bootstrap: Optional[Dict[str, object]] = None
    cuped: Optional[Dict[str, object]] = None
    p_holm: Optional[float] = None

    @property
    def significant(self) -> bool:
        return bool(self.p_value < 0.05)

    def covers(self, true_lift: float) -> bool:
        return bool(self.ci[0] <= true_lift <= self.ci[1])

    def to_dict(self) -> Dict[str, object]:
        d = dataclasses.asdict(self)
        d["ci"] = [float(self.ci[0]), float(self.ci[1])]
        return {k: v for k, v in d.items() if v is not None}


# ------------------------------------------------------------------------------------------------
# Delta method
# ------------------------------------------------------------------------------------------------


def _as_float(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def linearize(x, y) -> Tuple[float, np.ndarray]:
    """``(log(xbar / ybar), phi)`` with ``phi_i = x_i / xbar - y_i / ybar`` (mean 0).

    ``Var(log R) ~= Var(phi) / n``. NaN log ratio when either mean is 0.
    """
    x, y = _as_float(x), _as_float(y)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-d arrays of one length, got {x.shape} and {y.shape}")
    xb, yb = (x.mean(), y.mean()) if len(x) else (0.0, 0.0)
    if xb <= 0 or yb <= 0:
        return float("nan"), np.zeros_like(x)
    return float(math.log(xb / yb)), x / xb - y / yb


def _ratio(x: np.ndarray, y: np.ndarray) -> float:
    """``sum x / sum y`` (NaN when ``sum y`` is not positive)."""
    return float(x.sum() / y.sum()) if y.sum() > 0 else float("nan")


def _var(a: np.ndarray) -> float:
    return float(a.var(ddof=1)) if len(a) > 1 else float("nan")


def log_ratio_se(x, y) -> float:
    """Delta-method standard error of ``log(sum x / sum y)`` for iid users."""
    _, phi = linearize(x, y)
    return math.sqrt(_var(phi) / len(phi)) if len(phi) > 1 else float("nan")


def _finish(metric, ratio_c, ratio_t, L, se, n_c, n_t, paired, alpha) -> Lift:
    """The :class:`Lift` of log lift ``L`` with standard error ``se`` (NaN throughout when either is not finite)."""
    z = _z(alpha)
    if not (np.isfinite(L) and np.isfinite(se)):
        nan = float("nan")
        return Lift(metric, ratio_c, ratio_t, nan, nan, nan, (nan, nan), nan, n_c, n_t, paired)
    if se == 0.0:
        p = 1.0 if L == 0.0 else 0.0
    else:
        p = float(2.0 * scipy_stats.norm.sf(abs(L) / se))
    return Lift(
        metric=metric,
        control=ratio_c,
        treatment=ratio_t,
        lift=float(math.expm1(L)),
        log_lift=float(L),
        se=float(se),
        ci=(float(math.expm1(L - z * se)), float(math.expm1(L + z * se))),
        p_value=p,
        n_control=n_c,
        n_treatment=n_t,
        paired=paired,
    )


def ratio_lift(x_t, y_t, x_c, y_c, metric: str = "metric", paired: bool = False, alpha: float = 0.05) -> Lift:
    """Relative lift of ``sum x / sum y`` in arm t over arm c, delta method on the log scale.

    Independent arms: the per-user arrays of t and c are different users. ``paired=True``: row i of
    every array is the same user (both arms simulated with common random numbers).
    """
    x_t, y_t, x_c, y_c = map(_as_float, (x_t, y_t, x_c, y_c))
    log_ratio_t, phi_t = linearize(x_t, y_t)
    log_ratio_c, phi_c = linearize(x_c, y_c)
    if paired:
        if len(x_t) != len(x_c):
            raise ValueError("paired=True needs the same users (rows) in both arms")
        n = len(x_t)
        se = math.sqrt(_var(phi_t - phi_c) / n) if n > 1 else float("nan")
    else:
        independent = min(len(x_t), len(x_c)) > 1
        se = math.sqrt(_var(phi_t) / len(x_t) + _var(phi_c) / len(x_c)) if independent else float("nan")
    return _finish(metric, _ratio(x_c, y_c), _ratio(x_t, y_t), log_ratio_t - log_ratio_c, se, len(x_c), len(x_t),
                   paired, alpha)


# ------------------------------------------------------------------------------------------------
# CUPED
# ------------------------------------------------------------------------------------------------


def cuped_log_lift(
    x_t, y_t, x_c, y_c, pre_x_t, pre_y_t, pre_x_c, pre_y_c, metric: str = "metric", alpha: float = 0.05
) -> Tuple[Lift, Dict[str, float]]:
    """CUPED-adjusted log lift for independent arms, the covariate being the same metric in a pre-period.

    The pre-period ratio is linearised at the *pooled* pre-period means (so the covariate does not
    depend on the assignment): ``z_i = px_i / pxbar - py_i / pybar``. With ``phi`` the in-period
    influence values, ``theta = cov(phi, z) / var(z)`` (within-arm, pooled) and

        L_cuped = L - theta (zbar_t - zbar_c),   Var = Var_t(phi - theta z)/n_t + Var_c(phi - theta z)/n_c.

    The pre-period is independent of the assignment, so ``E[zbar_t - zbar_c] = 0``: the estimator is
    unbiased and its variance is ``(1 - rho^2)`` times the plain one. Returns ``(Lift, info)`` with
    ``info = {"theta", "variance_reduction"}``.
    """
    x_t, y_t, x_c, y_c = map(_as_float, (x_t, y_t, x_c, y_c))
    pre_x_t, pre_y_t, pre_x_c, pre_y_c = map(_as_float, (pre_x_t, pre_y_t, pre_x_c, pre_y_c))
    log_ratio_t, phi_t = linearize(x_t, y_t)
    log_ratio_c, phi_c = linearize(x_c, y_c)
    pre_x_mean = np.concatenate([pre_x_t, pre_x_c]).mean()
    pre_y_mean = np.concatenate([pre_y_t, pre_y_c]).mean()
    if pre_x_mean <= 0 or pre_y_mean <= 0:
        z_t, z_c = np.zeros_like(phi_t), np.zeros_like(phi_c)
    else:
        z_t = pre_x_t / pre_x_mean - pre_y_t / pre_y_mean
        z_c = pre_x_c / pre_x_mean - pre_y_c / pre_y_mean
    z_t_centred, z_c_centred = z_t - z_t.mean(), z_c - z_c.mean()
    var_z = float(np.dot(z_t_centred, z_t_centred) + np.dot(z_c_centred, z_c_centred))
    cov_phi_z = np.dot(phi_t, z_t_centred) + np.dot(phi_c, z_c_centred)
    theta = float(cov_phi_z / var_z) if var_z > 0 else 0.0
    L = (log_ratio_t - log_ratio_c) - theta * (z_t.mean() - z_c.mean())
    adj_t, adj_c = phi_t - theta * z_t, phi_c - theta * z_c
    se = math.sqrt(_var(adj_t) / len(adj_t) + _var(adj_c) / len(adj_c))
    plain = math.sqrt(_var(phi_t) / len(phi_t) + _var(phi_c) / len(phi_c))
    lift = _finish(metric, _ratio(x_c, y_c), _ratio(x_t, y_t), L, se, len(x_c), len(x_t), False, alpha)
    reduction = 1.0 - (se / plain) ** 2 if plain > 0 else 0.0
    return lift, {"theta": theta, "variance_reduction": float(reduction)}


# ------------------------------------------------------------------------------------------------
# Bootstrap
# ------------------------------------------------------------------------------------------------


def bootstrap_log_lifts(
    num_t: np.ndarray,
    den_t: np.ndarray,
    num_c: np.ndarray,
    den_c: np.ndarray,
    paired: bool = False,
    n_boot: int = 200,
    seed: int = 0,
    chunk: int = 50,
) -> np.ndarray:
    """User-level Poisson bootstrap of the log lifts of M metrics at once: ``[n_boot, M]``.

    ``num_*`` / ``den_*`` are ``[n_users, M]`` per-user sums. Each replicate gives every user a
    Poisson(1) weight (Hanley & MacGibbon 2006; the same weight in both arms when ``paired``), then
    ``L* = log(sum w x_t / sum w y_t) - log(sum w x_c / sum w y_c)``.
    """
    num_t, den_t, num_c, den_c = (np.atleast_2d(_as_float(a).T).T for a in (num_t, den_t, num_c, den_c))
    rng = np.random.default_rng(seed)
    chunk = max(1, min(chunk, int(2e7 // max(len(num_t), len(num_c), 1))))  # bounded memory for millions of users
    n_metrics = num_t.shape[1]
    out = np.empty((n_boot, n_metrics))
    users_t = np.concatenate([num_t, den_t], axis=1)  # [n_t, 2M]: numerators, then denominators
    users_c = np.concatenate([num_c, den_c], axis=1)
    for lo in range(0, n_boot, chunk):
        n_draws = min(chunk, n_boot - lo)
        weights_t = rng.poisson(1.0, size=(n_draws, len(users_t))).astype(np.float64)
        weights_c = weights_t if paired else rng.poisson(1.0, size=(n_draws, len(users_c))).astype(np.float64)
        sums_t, sums_c = weights_t @ users_t, weights_c @ users_c
        with np.errstate(divide="ignore", invalid="ignore"):
            log_ratio_t = np.log(sums_t[:, :n_metrics] / sums_t[:, n_metrics:])
            out[lo : lo + n_draws] = log_ratio_t - np.log(sums_c[:, :n_metrics] / sums_c[:, n_metrics:])
    return out


def bootstrap_summary(draws: np.ndarray, alpha: float = 0.05) -> Dict[str, object]:
    """``{"se", "ci", "n_boot"}`` of log-lift replicates (percentile interval on the relative scale)."""
    d = draws[np.isfinite(draws)]
    if len(d) < 10:
        return {"se": float("nan"), "ci": [float("nan"), float("nan")], "n_boot": int(len(d))}
    lo, hi = np.quantile(d, [alpha / 2.0, 1.0 - alpha / 2.0])
    return {"se": float(d.std(ddof=1)), "ci": [float(math.expm1(lo)), float(math.expm1(hi))], "n_boot": int(len(d))}


# ------------------------------------------------------------------------------------------------
# Sample ratio mismatch and multiple testing
# ------------------------------------------------------------------------------------------------


def srm_test(counts: Sequence[int], expected_shares: Optional[Sequence[float]] = None) -> Dict[str, object]:
    """Pearson chi-square goodness-of-fit of the arms' user counts against the designed shares.

    Returns ``{"counts", "expected", "chi2", "dof", "p_value", "mismatch"}``; ``mismatch`` is
    ``p < 0.001`` (the usual SRM alarm threshold: a mismatch means the assignment or the logging is
    broken and no lift of the experiment should be trusted).
    """
    observed = np.asarray(counts, dtype=np.float64)
    k = len(observed)
    shares = np.full(k, 1.0 / k) if expected_shares is None else np.asarray(expected_shares, dtype=np.float64)
    if len(shares) != k or np.any(shares <= 0):
        raise ValueError("expected_shares must give one positive share per arm")
    expected = observed.sum() * shares / shares.sum()
    chi2 = float(((observed - expected) ** 2 / expected).sum()) if observed.sum() > 0 else 0.0
    p = float(scipy_stats.chi2.sf(chi2, k - 1)) if k > 1 else 1.0
    return {"counts": [int(c) for c in observed], "expected": [float(e) for e in expected], "chi2": chi2, "dof": k - 1,
            "p_value": p, "mismatch": bool(p < 1e-3)}


def holm(p_values: Iterable[float]) -> List[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order.

    Sorted ascending, ``p_(j) * (m - j)`` (j = 0..m-1), made monotone by a running maximum and capped
    at 1. NaN p-values are left out of the family and stay NaN.
    """
    p = np.asarray(list(p_values), dtype=np.float64)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out.tolist()
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adj
    return out.tolist()


def apply_holm(lifts: Mapping[str, Lift]) -> None:
    """Fill ``p_holm`` of every :class:`Lift` in ``lifts`` (one family)."""
    names = list(lifts)
    for name, q in zip(names, holm(lifts[n].p_value for n in names)):
        lifts[name].p_holm = float(q)
