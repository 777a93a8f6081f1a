"""The segment-scoring evaluation suite: every metric of one scored set in one JSON-ready dict.

:func:`evaluate_segments` reports, for ``n`` scored segments, the pooled Kendall tau-b
(ContentCTR eq. 15), its slices ``tau@0.2/0.4/0.6`` (KuaiHL Table I: items with ``y > lambda``),
Spearman rho, soft AUC, log loss, the mean-prediction ratio (ContentCTR Table 4), and
``per_room_tau``::

    per_room_tau = mean over rooms r with >= 2 distinct labels of tau_b(y_r, p_r)

where a room with constant predictions counts 0. The within-room values come from
:mod:`kuaihl_rec.metrics.grouped_kendall`.

Shapes: ``labels``, ``probs``, ``room_ids`` ``[n]``.
"""

from __future__ import annotations

import logging
import math
from typing import Dict, Tuple

import numpy as np

from kuaihl_rec.metrics.grouped_kendall import _grouped_tau_b
from kuaihl_rec.metrics.rank_correlation import (
    _tau_b_checked,
    spearman_rho,
    tau_at_thresholds,
)
from kuaihl_rec.metrics.soft_label import mean_pred_over_true, soft_auc, soft_logloss
from kuaihl_rec.metrics.validation import _as_pair, _check_unit_interval

logger = logging.getLogger(__name__)

__all__ = ["REPORTED_METRICS", "evaluate_segments"]

# The metrics every report shows, in this order (``kuaihl eval``, ``kuaihl compare``).
REPORTED_METRICS = (
    "tau", "tau@0.2", "tau@0.4", "tau@0.6", "spearman", "auc", "logloss", "mean_pred_over_true", "per_room_tau",
)

_EVAL_THRESHOLDS: Tuple[float, ...] = (0.2, 0.4, 0.6)


def _per_room_tau(y: np.ndarray, p: np.ndarray, room_ids: np.ndarray) -> Tuple[float, int]:
    """Mean within-room tau-b over rooms with >= 2 distinct labels, and the number of such rooms.

    A room whose predictions are constant has an undefined tau-b; it counts as 0
    (no ranking skill) rather than being dropped, so a degenerate model cannot
    choose the rooms it is judged on.
    """
    _, taus, n_levels = _grouped_tau_b(y, p, room_ids)
    eligible = n_levels >= 2
    n_rooms = int(eligible.sum())
    if n_rooms == 0:
        return math.nan, 0
    vals = taus[eligible]
    n_const = int(np.isnan(vals).sum())
    if n_const:
        logger.info("per_room_tau: %d of %d rooms have constant predictions, counted as 0", n_const, n_rooms)
    return float(np.nan_to_num(vals, nan=0.0).mean()), n_rooms


def evaluate_segments(labels, probs, room_ids=None) -> Dict[str, float]:
    """All segment-scoring metrics in one JSON-ready dict.

    ``labels`` (ground truth, e.g. LVTR) and ``probs`` are ``[n]`` in ``[0, 1]``;
    ``room_ids`` is an optional ``[n]`` array of room keys (any sortable type).
    Keys: ``n_segments`` (int), ``tau`` (tau-b over all pooled segments),
    ``tau@0.2``, ``tau@0.4``, ``tau@0.6`` (slices with label > lambda), ``spearman``,
    ``auc`` (soft-label), ``logloss`` (soft-label, clipped), ``mean_pred_over_true``,
    ``per_room_tau`` (mean within-room tau-b over rooms with >= 2 distinct labels,
    constant-prediction rooms counted as 0; ``nan`` without ``room_ids``) and
    ``n_rooms_per_room_tau`` (int, the rooms in that mean).
    """
    y, p = _as_pair(labels, probs, "labels", "probs")
    _check_unit_interval(y, "labels")
    _check_unit_interval(p, "probs")
    out: Dict[str, float] = {"n_segments": int(y.size), "tau": _tau_b_checked(y, p)}
    out.update(tau_at_thresholds(y, p, _EVAL_THRESHOLDS))
    out["spearman"] = spearman_rho(y, p)
    out["auc"] = soft_auc(y, p)
    out["logloss"] = soft_logloss(y, p)
    out["mean_pred_over_true"] = mean_pred_over_true(y, p)
    if room_ids is None:
        out["per_room_tau"], out["n_rooms_per_room_tau"] = math.nan, 0
    else:
        rooms = np.asarray(room_ids)
        if rooms.shape != y.shape:
            raise ValueError(f"room_ids must have shape {y.shape}, got {rooms.shape}")
        out["per_room_tau"], out["n_rooms_per_room_tau"] = _per_room_tau(y, p, rooms)
    return out
