"""Highlight-detection metrics: interpolated AP, plain AP, their means, HIT@1.

Interpolated average precision (:func:`interpolated_ap`), the Video2GIF evaluation (Gygli et
al., CVPR 2016) used by QVHighlights / Moment-DETR. With the distinct score values as thresholds
(a tie group enters at once), precision ``P_t`` and recall ``R_t`` at each threshold, the
interpolated precision is ``P*_t = max_{t' : R_t' >= R_t} P_t'`` (a running max from the
high-recall end), and::

    AP = mean over the distinct recall levels r > 0 of P*(r)

A video without positives has AP = 0, one with only positives AP = 1. :func:`average_precision`
is the plain, non-interpolated step-wise AP ``sum_t (R_t - R_{t-1}) P_t`` (what
``sklearn.metrics.average_precision_score`` computes); it gives different numbers and is there
so the two are told apart. HIT@1 (:func:`hit_at_1`): 1 when the top-scored item (the first one
on ties) is positive (for at least one annotator, when labels are ``[n, annotators]``).

Shapes: ``labels`` ``[n]`` or ``[n, annotators]`` of 0/1, ``scores`` ``[n]``.
"""

from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

import numpy as np

from kuaihl_rec.metrics.validation import _as_1d, _as_pair, _check_binary

__all__ = [
    "interpolated_ap",
    "average_precision",
    "mean_average_precision",
    "hit_at_1",
    "mean_hit_at_1",
]


def _pr_at_thresholds(labels: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Cumulative (tp, predicted positives) at each distinct score, from the highest down."""
    order = np.argsort(-scores, kind="stable")
    ls, ss = labels[order], scores[order]
    last_of_tie = np.append(ss[1:] != ss[:-1], True)
    tp = np.cumsum(ls)[last_of_tie]
    predicted = (np.flatnonzero(last_of_tie) + 1).astype(np.float64)
    return tp, predicted


def interpolated_ap(labels01, scores) -> float:
    """Video2GIF interpolated AP: mean over distinct recall levels of the interpolated precision.

    ``P*_t = max_{t': R_t' >= R_t} P_t'`` over the distinct score thresholds (ties enter
    together); ``AP = mean_{r > 0 distinct} P*(r)``. No positives: 0; all positives: 1.
    Shapes ``[n]``, ``[n]``; labels 0/1.
    """
    y, s = _as_pair(labels01, scores, "labels01", "scores")
    _check_binary(y, "labels01")
    if y.sum() == 0:
        return 0.0
    tp, predicted = _pr_at_thresholds(y, s)
    precision = tp / predicted
    interp = np.maximum.accumulate(precision[::-1])[::-1]
    new_recall = np.diff(tp, prepend=0.0) > 0
    return float(interp[new_recall].mean())


def average_precision(labels01, scores) -> float:
    """Plain (non-interpolated) AP ``sum_t (R_t - R_{t-1}) P_t`` over distinct score thresholds.

    Equal to ``sklearn.metrics.average_precision_score``; no positives: 0. Not the
    highlight-benchmark metric (use :func:`interpolated_ap`).
    """
    y, s = _as_pair(labels01, scores, "labels01", "scores")
    _check_binary(y, "labels01")
    n_pos = y.sum()
    if n_pos == 0:
        return 0.0
    tp, predicted = _pr_at_thresholds(y, s)
    return float(np.dot(np.diff(tp, prepend=0.0), tp / predicted) / n_pos)


def _label_columns(labels, n_scores: int) -> np.ndarray:
    """Labels ``[n]`` or ``[n, annotators]`` as a float64 ``[n, annotators]`` array, checked against ``n_scores``."""
    arr = np.asarray(labels, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"labels must be [n] or [n, annotators], got shape {arr.shape}")
    if arr.shape[0] != n_scores:
        raise ValueError(f"labels and scores differ in length: {arr.shape[0]} != {n_scores}")
    return arr


def mean_average_precision(
    videos: Iterable[Tuple[Sequence, Sequence]], interpolated: bool = True
) -> float:
    """Mean AP over ``(labels, scores)`` pairs (in ``[0, 1]``, not percent).

    ``labels`` is ``[n]`` or ``[n, annotators]``; each annotator column is one AP
    item (the QVHighlights protocol averages over all (query, annotator) pairs).
    ``interpolated=False`` uses :func:`average_precision` instead.
    """
    ap_fn = interpolated_ap if interpolated else average_precision
    aps: List[float] = []
    for labels, scores in videos:
        s = _as_1d(scores, "scores")
        cols = _label_columns(labels, s.size)
        aps.extend(ap_fn(cols[:, w], s) for w in range(cols.shape[1]))
    if not aps:
        raise ValueError("mean_average_precision got no videos")
    return float(np.mean(aps))


def hit_at_1(labels, scores) -> float:
    """1.0 when the top-scored item (first on ties) is positive for any annotator, else 0.0.

    ``labels`` is ``[n]`` or ``[n, annotators]`` of 0/1; ``scores`` is ``[n]``.
    """
    s = _as_1d(scores, "scores")
    cols = _label_columns(labels, s.size)
    if not np.all(np.isfinite(cols)):
        raise ValueError("labels contains NaN or infinite values")
    _check_binary(cols.ravel(), "labels")
    return float(cols[int(np.argmax(s))].max() > 0)


def mean_hit_at_1(videos: Iterable[Tuple[Sequence, Sequence]]) -> float:
    """Mean of :func:`hit_at_1` over ``(labels, scores)`` pairs (in ``[0, 1]``)."""
    hits = [hit_at_1(labels, scores) for labels, scores in videos]
    if not hits:
        raise ValueError("mean_hit_at_1 got no videos")
    return float(np.mean(hits))
