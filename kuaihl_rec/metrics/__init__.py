"""Evaluation metrics for segment scoring and highlight detection.

Every public function takes array-likes (lists, NumPy arrays, CPU tensors) and
returns plain Python ``float`` / ``int`` / ``dict`` values, so results can be
written with :func:`json.dumps` directly (a ``nan`` is written as ``NaN``).

Notation
--------
``y`` is the ground truth (``y_true``, shape ``[n]``), ``s`` the model score
(``y_score``, shape ``[n]``), ``p`` a predicted probability in ``[0, 1]``.
For a pair of items ``i < j`` call it *concordant* when
``(s_i - s_j)(y_i - y_j) > 0``, *discordant* when ``< 0``, and tied otherwise.

Modules (each docstring carries its equations)
----------------------------------------------
* :mod:`~kuaihl_rec.metrics.rank_correlation`: Kendall tau-b (ContentCTR eq. 15),
  its ``tau@lambda`` slices (KuaiHL Table I), Spearman rho.
* :mod:`~kuaihl_rec.metrics.rank_matrices`: ``[m, m]`` tau-b / rho matrices of many
  rankings (contingency-table fast path), inter-annotator agreement (TVSum protocol).
* :mod:`~kuaihl_rec.metrics.grouped_kendall`: tau-b inside each room, all rooms together.
* :mod:`~kuaihl_rec.metrics.soft_label`: soft-label AUC, log loss, mean-prediction ratio.
* :mod:`~kuaihl_rec.metrics.highlight`: interpolated AP (Video2GIF), plain AP, mAP, HIT@1.
* :mod:`~kuaihl_rec.metrics.segments`: :func:`evaluate_segments`, the whole suite in one dict.
* :mod:`~kuaihl_rec.metrics.tvsum`: the TVSum50 annotation reader (needs ``h5py``).
* :mod:`~kuaihl_rec.metrics.validation`, :mod:`~kuaihl_rec.metrics.dense_codes`: input
  checks and the integer coding the counting paths share.

Edge cases
----------
* Empty input, mismatched lengths, NaN or infinite values, wrong dimensionality:
  ``ValueError``. Labels outside ``[0, 1]`` (AUC, log loss, evaluate) or not 0/1
  (AP, HIT@1): ``ValueError``; probabilities outside ``[0, 1]``: ``ValueError``.
* A rank correlation with fewer than 2 items, or a constant ``y`` or constant
  ``s``, is undefined: ``nan`` (no warning). A tau-b slice with fewer than 2
  items is ``nan``.
* AUC with no positive or no negative weight: ``nan``. ``mean_pred_over_true``
  with ``mean(y) = 0``: ``nan``.
"""

from __future__ import annotations

from kuaihl_rec.metrics.dense_codes import _dense_codes as _dense_codes
from kuaihl_rec.metrics.dense_codes import _pair_codes as _pair_codes
from kuaihl_rec.metrics.dense_codes import _unique_inverse as _unique_inverse
from kuaihl_rec.metrics.grouped_kendall import _MAX_BATCHED_GROUP as _MAX_BATCHED_GROUP
from kuaihl_rec.metrics.grouped_kendall import _ROOMS_PER_CHUNK as _ROOMS_PER_CHUNK
from kuaihl_rec.metrics.grouped_kendall import (
    _batched_discordant as _batched_discordant,
)
from kuaihl_rec.metrics.grouped_kendall import (
    _fenwick_discordant as _fenwick_discordant,
)
from kuaihl_rec.metrics.grouped_kendall import _grouped_tau_b as _grouped_tau_b
from kuaihl_rec.metrics.grouped_kendall import _tie_pairs as _tie_pairs
from kuaihl_rec.metrics.grouped_kendall import grouped_kendall_tau_b
from kuaihl_rec.metrics.highlight import _label_columns as _label_columns
from kuaihl_rec.metrics.highlight import _pr_at_thresholds as _pr_at_thresholds
from kuaihl_rec.metrics.highlight import (
    average_precision,
    hit_at_1,
    interpolated_ap,
    mean_average_precision,
    mean_hit_at_1,
)
from kuaihl_rec.metrics.rank_correlation import (
    TAU_THRESHOLDS,
    kendall_tau_b,
    spearman_rho,
    tau_at_thresholds,
)
from kuaihl_rec.metrics.rank_correlation import _pearson as _pearson
from kuaihl_rec.metrics.rank_correlation import _tau_b_checked as _tau_b_checked
from kuaihl_rec.metrics.rank_correlation import _tau_key as _tau_key
from kuaihl_rec.metrics.rank_matrices import _MAX_LEVELS as _MAX_LEVELS
from kuaihl_rec.metrics.rank_matrices import _as_rankings as _as_rankings
from kuaihl_rec.metrics.rank_matrices import (
    _concordance_from_tables as _concordance_from_tables,
)
from kuaihl_rec.metrics.rank_matrices import _contingency_tables as _contingency_tables
from kuaihl_rec.metrics.rank_matrices import (
    _tau_b_matrix_pairwise as _tau_b_matrix_pairwise,
)
from kuaihl_rec.metrics.rank_matrices import (
    inter_annotator_agreement,
    kendall_tau_b_matrix,
    spearman_rho_matrix,
)
from kuaihl_rec.metrics.segments import _EVAL_THRESHOLDS as _EVAL_THRESHOLDS
from kuaihl_rec.metrics.segments import REPORTED_METRICS, evaluate_segments
from kuaihl_rec.metrics.segments import _per_room_tau as _per_room_tau
from kuaihl_rec.metrics.soft_label import (
    LOGLOSS_EPS,
    mean_pred_over_true,
    soft_auc,
    soft_logloss,
)
from kuaihl_rec.metrics.tvsum import _orient_annotators as _orient_annotators
from kuaihl_rec.metrics.tvsum import read_tvsum_user_anno
from kuaihl_rec.metrics.validation import _as_1d as _as_1d
from kuaihl_rec.metrics.validation import _as_pair as _as_pair
from kuaihl_rec.metrics.validation import _check_binary as _check_binary
from kuaihl_rec.metrics.validation import _check_unit_interval as _check_unit_interval
from kuaihl_rec.metrics.validation import _is_constant as _is_constant

__all__ = [
    "LOGLOSS_EPS",
    "TAU_THRESHOLDS",
    "kendall_tau_b",
    "spearman_rho",
    "tau_at_thresholds",
    "kendall_tau_b_matrix",
    "spearman_rho_matrix",
    "inter_annotator_agreement",
    "grouped_kendall_tau_b",
    "soft_auc",
    "soft_logloss",
    "mean_pred_over_true",
    "interpolated_ap",
    "average_precision",
    "mean_average_precision",
    "hit_at_1",
    "mean_hit_at_1",
    "evaluate_segments",
    "REPORTED_METRICS",
    "read_tvsum_user_anno",
]
