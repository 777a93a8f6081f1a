"""Soft-label classification metrics: AUC, log loss, mean predicted over mean true.

Soft-label AUC (:func:`soft_auc`): every item counts as a positive with weight ``y_i`` and as a
negative with weight ``1 - y_i``; the AUC is the weighted Mann-Whitney statistic over all
ordered (positive, negative) pairs of these weighted copies, ties counted 1/2::

    AUC = sum_{i,j} y_i (1 - y_j) ( [s_i > s_j] + 1/2 [s_i = s_j] )
          / ( sum_i y_i * sum_j (1 - y_j) )

The sum runs over all ``i, j`` *including* ``i = j`` (an item's positive and negative copies
have equal scores: a tie, 1/2). This is exactly the ordinary ROC AUC of the data set duplicated
as ``(label 1, weight y)`` and ``(label 0, weight 1 - y)``; with 0/1 labels it is the usual AUC.
Computed in O(n log n) by grouping equal scores. No positive or no negative weight: ``nan``.

Soft-label log loss (:func:`soft_logloss`), mean binary cross-entropy with the probability
clipped to ``[eps, 1 - eps]``, ``eps = 1e-7``::

    logloss = -(1/n) sum_i [ y_i log p_i + (1 - y_i) log(1 - p_i) ]

Mean predicted over mean true (:func:`mean_pred_over_true`, ContentCTR Table 4's "avg. s/y")::

    ratio = mean_i(p_i) / mean_i(y_i)

(1.0 is calibrated on average; > 1 over-predicts; ``nan`` when ``mean(y) = 0``).

Shapes: ``y_true``, ``y_score`` / ``p_score`` ``[n]``; labels and probabilities in ``[0, 1]``.
"""

from __future__ import annotations

import math

import numpy as np

from kuaihl_rec.metrics.validation import _as_pair, _check_unit_interval

__all__ = ["LOGLOSS_EPS", "soft_auc", "soft_logloss", "mean_pred_over_true"]

LOGLOSS_EPS = 1e-7


def soft_auc(y_true, y_score) -> float:
    """Soft-label AUC (weighted Mann-Whitney, ties 1/2, self-pairs included; module docstring).

    ``AUC = sum_{i,j} y_i (1 - y_j) ([s_i > s_j] + [s_i = s_j] / 2) / (sum y * sum (1 - y))``.
    ``y_true`` in ``[0, 1]``. ``nan`` when ``sum y = 0`` or ``sum (1 - y) = 0``.
    """
    y, s = _as_pair(y_true, y_score)
    _check_unit_interval(y, "y_true")
    _, level = np.unique(s, return_inverse=True)
    w_pos = np.bincount(level.ravel(), weights=y)
    w_neg = np.bincount(level.ravel(), weights=1.0 - y)
    den = float(w_pos.sum()) * float(w_neg.sum())
    if den <= 0.0:
        return math.nan
    neg_below = np.cumsum(w_neg) - w_neg
    return float(np.dot(w_pos, neg_below + 0.5 * w_neg) / den)


def soft_logloss(y_true, p_score, eps: float = LOGLOSS_EPS) -> float:
    """Mean soft-label BCE ``-mean(y log p + (1 - y) log(1 - p))``, ``p`` clipped to ``[eps, 1-eps]``.

    Both inputs in ``[0, 1]`` (a logit passed by mistake raises instead of being clipped).
    """
    y, p = _as_pair(y_true, p_score, "y_true", "p_score")
    _check_unit_interval(y, "y_true")
    _check_unit_interval(p, "p_score")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def mean_pred_over_true(y_true, p_score) -> float:
    """``mean(p) / mean(y)`` (Table 4's "avg. s/y"); ``nan`` when ``mean(y) = 0``."""
    y, p = _as_pair(y_true, p_score, "y_true", "p_score")
    mean_y = float(y.mean())
    return float(p.mean()) / mean_y if mean_y != 0.0 else math.nan
