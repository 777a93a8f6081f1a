r"""Rank correlations of one ranking against the truth: Kendall tau-b, its slices, Spearman rho.

Notation: ``y`` the ground truth ``[n]``, ``s`` the score ``[n]``. A pair ``i < j`` is
*concordant* when ``(s_i - s_j)(y_i - y_j) > 0``, *discordant* when ``< 0``, tied otherwise.

Kendall tau-b (ContentCTR eq. 15; Kendall 1945)::

    tau_b = (P - Q) / sqrt((P + Q + T_s) (P + Q + T_y))

with ``P`` / ``Q`` the numbers of concordant / discordant pairs, ``T_s`` the pairs tied in ``s``
only and ``T_y`` the pairs tied in ``y`` only (pairs tied in both enter neither). Equivalently,
with ``n0 = n(n-1)/2``, ``n1`` the pairs tied in ``s`` and ``n2`` the pairs tied in ``y``:
``tau_b = (P - Q) / sqrt((n0 - n1)(n0 - n2))``. :func:`kendall_tau_b` is O(n log n)
(Knight 1966, via :func:`scipy.stats.kendalltau`).

:func:`tau_at_thresholds` is KuaiHL Table I: tau-b restricted to the items whose ground truth is
strictly greater than ``lambda``, keyed ``"tau@0"``, ``"tau@0.2"``, ... (``f"tau@{lambda:g}"``).

Spearman rho: the Pearson correlation of the average ranks (ties get the mean of the ranks they
span)::

    rho = cov(R(y), R(s)) / (std(R(y)) std(R(s)))

A correlation with fewer than 2 items, or a constant ``y`` or ``s``, is undefined: ``nan``.
"""

from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

import numpy as np
from scipy import stats

from kuaihl_rec.metrics.validation import _as_pair, _is_constant

__all__ = ["TAU_THRESHOLDS", "kendall_tau_b", "spearman_rho", "tau_at_thresholds"]

TAU_THRESHOLDS: Tuple[float, ...] = (0.0, 0.2, 0.4, 0.6)


def kendall_tau_b(y_true, y_score) -> float:
    """Kendall tau-b, ``(P - Q) / sqrt((P + Q + T_s)(P + Q + T_y))`` (ContentCTR eq. 15).

    O(n log n) (scipy's merge-sort count). Shapes ``[n]``, ``[n]``. Returns ``nan``
    when ``n < 2`` or either input is constant.
    """
    y, s = _as_pair(y_true, y_score)
    return _tau_b_checked(y, s)


def _tau_b_checked(y: np.ndarray, s: np.ndarray) -> float:
    """Tau-b of validated ``y``, ``s`` ``[n]``; ``nan`` when ``n < 2`` or either is constant."""
    if y.size < 2 or _is_constant(y) or _is_constant(s):
        return math.nan
    return float(stats.kendalltau(y, s, variant="b")[0])


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation ``sum(a~ b~) / sqrt(sum(a~^2) sum(b~^2))`` of centred copies."""
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    if den == 0.0:
        return math.nan
    return float(np.clip(np.dot(a, b) / den, -1.0, 1.0))


def spearman_rho(y_true, y_score) -> float:
    """Spearman rho: Pearson correlation of the average ranks ``R(y)``, ``R(s)``.

    Shapes ``[n]``, ``[n]``; ``nan`` when ``n < 2`` or either input is constant.
    """
    y, s = _as_pair(y_true, y_score)
    if y.size < 2 or _is_constant(y) or _is_constant(s):
        return math.nan
    return _pearson(stats.rankdata(y), stats.rankdata(s))


def _tau_key(lam: float) -> str:
    """The result key of a tau-b slice: ``f"tau@{lam:g}"`` (``"tau@0"``, ``"tau@0.2"``, ...)."""
    return f"tau@{float(lam):g}"


def tau_at_thresholds(
    y_true, y_score, thresholds: Sequence[float] = TAU_THRESHOLDS
) -> Dict[str, float]:
    """KuaiHL Table I slices: ``{"tau@<lambda>": tau_b over items with y > lambda}``.

    Keys are ``f"tau@{lambda:g}"`` ("tau@0", "tau@0.2", ...). A slice with fewer
    than 2 items, or a constant slice, is ``nan``.
    """
    y, s = _as_pair(y_true, y_score)
    out: Dict[str, float] = {}
    for lam in thresholds:
        keep = y > lam
        out[_tau_key(lam)] = _tau_b_checked(y[keep], s[keep])
    return out
