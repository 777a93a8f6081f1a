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
from scipy import stats as _st

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
    return float(_st.norm.isf(alpha / 2.0))


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


def _var(a: np.ndarray) -> float:
    return float(a.var(ddof=1)) if len(a) > 1 else float("nan")


def log_ratio_se(x, y) -> float:
    """Delta-method standard error of ``log(sum x / sum y)`` for iid users."""
    _, phi = linearize(x, y)
    return math.sqrt(_var(phi) / len(phi)) if len(phi) > 1 else float("nan")


def _finish(metric, rc, rt, L, se, nc, nt, paired, alpha) -> Lift:
    z = _z(alpha)
    if not (np.isfinite(L) and np.isfinite(se)):
        return Lift(metric, rc, rt, float("nan"), float("nan"), float("nan"), (float("nan"), float("nan")), float("nan"), nc, nt, paired)
    if se == 0.0:
        p = 1.0 if L == 0.0 else 0.0
    else:
        p = float(2.0 * _st.norm.sf(abs(L) / se))
    return Lift(
        metric=metric,
        control=rc,
        treatment=rt,
        lift=float(math.expm1(L)),
        log_lift=float(L),
        se=float(se),
        ci=(float(math.expm1(L - z * se)), float(math.expm1(L + z * se))),
        p_value=p,
        n_control=nc,
        n_treatment=nt,
        paired=paired,
    )


def ratio_lift(x_t, y_t, x_c, y_c, metric: str = "metric", paired: bool = False, alpha: float = 0.05) -> Lift:
    """Relative lift of ``sum x / sum y`` in arm t over arm c, delta method on the log scale.

    Independent arms: the per-user arrays of t and c are different users. ``paired=True``: row i of
    every array is the same user (both arms simulated with common random numbers).
    """
    x_t, y_t, x_c, y_c = map(_as_float, (x_t, y_t, x_c, y_c))
    Lt, phi_t = linearize(x_t, y_t)
    Lc, phi_c = linearize(x_c, y_c)
    rt = float(x_t.sum() / y_t.sum()) if y_t.sum() > 0 else float("nan")
    rc = float(x_c.sum() / y_c.sum()) if y_c.sum() > 0 else float("nan")
    if paired:
        if len(x_t) != len(x_c):
            raise ValueError("paired=True needs the same users (rows) in both arms")
        n = len(x_t)
        se = math.sqrt(_var(phi_t - phi_c) / n) if n > 1 else float("nan")
    else:
        se = math.sqrt(_var(phi_t) / len(x_t) + _var(phi_c) / len(x_c)) if min(len(x_t), len(x_c)) > 1 else float("nan")
    return _finish(metric, rc, rt, Lt - Lc, se, len(x_c), len(x_t), paired, alpha)


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
    pre = list(map(_as_float, (pre_x_t, pre_y_t, pre_x_c, pre_y_c)))
    Lt, phi_t = linearize(x_t, y_t)
    Lc, phi_c = linearize(x_c, y_c)
    px = np.concatenate([pre[0], pre[2]])
    py = np.concatenate([pre[1], pre[3]])
    pxb, pyb = px.mean(), py.mean()
    if pxb <= 0 or pyb <= 0:
        z_t, z_c = np.zeros_like(phi_t), np.zeros_like(phi_c)
    else:
        z_t = pre[0] / pxb - pre[1] / pyb
        z_c = pre[2] / pxb - pre[3] / pyb
    zt_c, zc_c = z_t - z_t.mean(), z_c - z_c.mean()
    var_z = float(np.dot(zt_c, zt_c) + np.dot(zc_c, zc_c))
    theta = float((np.dot(phi_t, zt_c) + np.dot(phi_c, zc_c)) / var_z) if var_z > 0 else 0.0
    L = (Lt - Lc) - theta * (z_t.mean() - z_c.mean())
    adj_t, adj_c = phi_t - theta * z_t, phi_c - theta * z_c
    se = math.sqrt(_var(adj_t) / len(adj_t) + _var(adj_c) / len(adj_c))
    plain = math.sqrt(_var(phi_t) / len(phi_t) + _var(phi_c) / len(phi_c))
    rt = float(x_t.sum() / y_t.sum()) if y_t.sum() > 0 else float("nan")
    rc = float(x_c.sum() / y_c.sum()) if y_c.sum() > 0 else float("nan")
    lift = _finish(metric, rc, rt, L, se, len(x_c), len(x_t), False, alpha)
    vr = 1.0 - (se / plain) ** 2 if plain > 0 else 0.0
    return lift, {"theta": theta, "variance_reduction": float(vr)}


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
    out = np.empty((n_boot, num_t.shape[1]))
    mt = np.concatenate([num_t, den_t], axis=1)
    mc = np.concatenate([num_c, den_c], axis=1)
    M = num_t.shape[1]
    for lo in range(0, n_boot, chunk):
        b = min(chunk, n_boot - lo)
        wt = rng.poisson(1.0, size=(b, len(mt))).astype(np.float64)
        wc = wt if paired else rng.poisson(1.0, size=(b, len(mc))).astype(np.float64)
        st, sc = wt @ mt, wc @ mc
        with np.errstate(divide="ignore", invalid="ignore"):
            out[lo : lo + b] = np.log(st[:, :M] / st[:, M:]) - np.log(sc[:, :M] / sc[:, M:])
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
    obs = np.asarray(counts, dtype=np.float64)
    k = len(obs)
    shares = np.full(k, 1.0 / k) if expected_shares is None else np.asarray(expected_shares, dtype=np.float64)
    if len(shares) != k or np.any(shares <= 0):
        raise ValueError("expected_shares must give one positive share per arm")
    exp = obs.sum() * shares / shares.sum()
    chi2 = float(((obs - exp) ** 2 / exp).sum()) if obs.sum() > 0 else 0.0
    p = float(_st.chi2.sf(chi2, k - 1)) if k > 1 else 1.0
    return {"counts": [int(c) for c in obs], "expected": [float(e) for e in exp], "chi2": chi2, "dof": k - 1, "p_value": p, "mismatch": bool(p < 1e-3)}


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
