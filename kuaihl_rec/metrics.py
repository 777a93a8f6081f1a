r"""Evaluation metrics for segment scoring and highlight detection.

Every public function takes array-likes (lists, NumPy arrays, CPU tensors) and
returns plain Python ``float`` / ``int`` / ``dict`` values, so results can be
written with :func:`json.dumps` directly (a ``nan`` is written as ``NaN``).

Notation
--------
``y`` is the ground truth (``y_true``, shape ``[n]``), ``s`` the model score
(``y_score``, shape ``[n]``), ``p`` a predicted probability in ``[0, 1]``.
For a pair of items ``i < j`` call it *concordant* when
``(s_i - s_j)(y_i - y_j) > 0``, *discordant* when ``< 0``, and tied otherwise.

Rank correlations
-----------------
Kendall tau-b (ContentCTR eq. 15; Kendall 1945)::

    tau_b = (P - Q) / sqrt((P + Q + T_s) (P + Q + T_y))

with ``P`` / ``Q`` the numbers of concordant / discordant pairs, ``T_s`` the
pairs tied in ``s`` only and ``T_y`` the pairs tied in ``y`` only (pairs tied in
both enter neither). Equivalently, with ``n0 = n(n-1)/2``, ``n1`` the pairs tied
in ``s`` and ``n2`` the pairs tied in ``y``: ``tau_b = (P - Q) / sqrt((n0 - n1)(n0 - n2))``.
:func:`kendall_tau_b` is O(n log n) (Knight 1966, via :func:`scipy.stats.kendalltau`).

:func:`tau_at_thresholds` is KuaiHL Table I: tau-b restricted to the items
whose ground truth is strictly greater than ``lambda``, keyed ``"tau@0"``,
``"tau@0.2"``, ... (``f"tau@{lambda:g}"``).

Spearman rho: the Pearson correlation of the average ranks (ties get the mean
of the ranks they span)::

    rho = cov(R(y), R(s)) / (std(R(y)) std(R(s)))

Many-rankings fast path: :func:`kendall_tau_b_matrix` / :func:`spearman_rho_matrix`
take ``[m, n]`` ordinal rankings (e.g. 20 annotators x frames, scores 1..5) and
return the ``[m, m]`` matrix of pairwise coefficients. Tau-b is counted from the
``k x k`` contingency table ``C[u, v] = #{i : x_a[i] = u, x_b[i] = v}`` of the
``k`` distinct values::

    P - Q = sum_{u,v} C[u,v] * ( sum_{u'>u, v'>v} C[u',v'] - sum_{u'>u, v'<v} C[u',v'] )

All ``m^2`` tables come from one ``[m k, n] x [n, m k]`` product of one-hot
indicators (O(m^2 k^2 n) multiply-adds in BLAS, exact integer counts), and each
``P - Q`` from suffix sums of its table (O(k^2)), instead of ``m^2 / 2`` separate
O(n log n) sorts. Ties need no extra work: ``n1`` comes from the diagonal tables. :func:`inter_annotator_agreement`
is the TVSum protocol (Otani et al., CVPR 2019): per annotator the mean coefficient
against every other annotator, then the mean over annotators.

Soft-label classification metrics
---------------------------------
Soft-label AUC (:func:`soft_auc`): every item counts as a positive with weight
``y_i`` and as a negative with weight ``1 - y_i``; the AUC is the weighted
Mann-Whitney statistic over all ordered (positive, negative) pairs of these
weighted copies, ties counted 1/2::

    AUC = sum_{i,j} y_i (1 - y_j) ( [s_i > s_j] + 1/2 [s_i = s_j] )
          / ( sum_i y_i * sum_j (1 - y_j) )

The sum runs over all ``i, j`` *including* ``i = j`` (an item's positive and
negative copies have equal scores: a tie, 1/2). This is exactly the ordinary
ROC AUC of the data set duplicated as ``(label 1, weight y)`` and
``(label 0, weight 1 - y)``; with 0/1 labels it is the usual AUC. Computed in
O(n log n) by grouping equal scores.

Soft-label log loss (:func:`soft_logloss`), mean binary cross-entropy with the
probability clipped to ``[eps, 1 - eps]``, ``eps = 1e-7``::

    logloss = -(1/n) sum_i [ y_i log p_i + (1 - y_i) log(1 - p_i) ]

Mean predicted over mean true (:func:`mean_pred_over_true`, Table 4's "avg. s/y")::

    ratio = mean_i(p_i) / mean_i(y_i)

(1.0 is calibrated on average; > 1 over-predicts).

Highlight metrics
-----------------
Interpolated average precision (:func:`interpolated_ap`), the Video2GIF
evaluation (Gygli et al., CVPR 2016) used by QVHighlights / Moment-DETR. With
the distinct score values as thresholds (a tie group enters at once), precision
``P_t`` and recall ``R_t`` at each threshold, the interpolated precision is
``P*_t = max_{t' : R_t' >= R_t} P_t'`` (a running max from the high-recall end),
and::

    AP = mean over the distinct recall levels r > 0 of P*(r)

A video without positives has AP = 0, one with only positives AP = 1.
:func:`average_precision` is the plain, non-interpolated step-wise AP
``sum_t (R_t - R_{t-1}) P_t`` (what ``sklearn.metrics.average_precision_score``
computes); it gives different numbers and is there so the two are told apart.
HIT@1 (:func:`hit_at_1`): 1 when the top-scored item (the first one on ties) is
positive (for at least one annotator, when labels are ``[n, annotators]``).

Segment evaluation
------------------
:func:`evaluate_segments` reports, for ``n`` scored segments, the pooled tau-b,
its slices ``tau@0.2/0.4/0.6``, Spearman rho, soft AUC, log loss, the ratio, and
``per_room_tau``: the mean over rooms with >= 2 distinct labels of the within-room
tau-b (a room with constant predictions counts 0). The within-room values come
from :func:`grouped_kendall_tau_b`, which counts ties by integer-key sorts and
discordant pairs with one Fenwick tree per room, all rooms advanced together.

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

import logging
import math
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np
from scipy import stats

logger = logging.getLogger(__name__)

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
    "read_tvsum_user_anno",
]

LOGLOSS_EPS = 1e-7
TAU_THRESHOLDS: Tuple[float, ...] = (0.0, 0.2, 0.4, 0.6)
_EVAL_THRESHOLDS: Tuple[float, ...] = (0.2, 0.4, 0.6)
# Above this many distinct values the contingency fast path falls back to scipy.
_MAX_LEVELS = 64
# Rooms larger than this are scored one by one with scipy in grouped_kendall_tau_b.
_MAX_BATCHED_GROUP = 512
_ROOMS_PER_CHUNK = 4096


# --------------------------------------------------------------------------- validation
def _as_1d(x, name: str) -> np.ndarray:
    """Return ``x`` as a finite, non-empty 1-D float64 array, or raise ValueError."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _as_pair(a, b, name_a: str = "y_true", name_b: str = "y_score") -> Tuple[np.ndarray, np.ndarray]:
    """Validate two 1-D arrays of equal length."""
    x, y = _as_1d(a, name_a), _as_1d(b, name_b)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{name_a} and {name_b} differ in length: {x.shape[0]} != {y.shape[0]}")
    return x, y


def _check_unit_interval(x: np.ndarray, name: str) -> None:
    if x.min() < 0.0 or x.max() > 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got range [{x.min()}, {x.max()}]")


def _check_binary(x: np.ndarray, name: str) -> None:
    if not np.all((x == 0.0) | (x == 1.0)):
        raise ValueError(f"{name} must contain only 0 and 1")


def _is_constant(x: np.ndarray) -> bool:
    return bool(x.size == 0 or x.min() == x.max())


# --------------------------------------------------------------------------- rank correlations
def kendall_tau_b(y_true, y_score) -> float:
    """Kendall tau-b, ``(P - Q) / sqrt((P + Q + T_s)(P + Q + T_y))`` (ContentCTR eq. 15).

    O(n log n) (scipy's merge-sort count). Shapes ``[n]``, ``[n]``. Returns ``nan``
    when ``n < 2`` or either input is constant.
    """
    y, s = _as_pair(y_true, y_score)
    return _tau_b_checked(y, s)


def _tau_b_checked(y: np.ndarray, s: np.ndarray) -> float:
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


def _dense_codes(values: np.ndarray) -> Tuple[np.ndarray, int]:
    """Map values to 0..k-1 preserving order; returns (codes, k).

    Integers spanning a small range use a lookup table (O(size)); anything else a sort.
    """
    if values.dtype.kind in "biu" and values.size:
        lo, hi = int(values.min()), int(values.max())
        if -(1 << 62) < lo and hi < (1 << 62) and hi - lo <= 4 * values.size + 1024:
            shifted = (values.astype(np.int64) - lo).ravel()
            present = np.zeros(hi - lo + 1, dtype=bool)
            present[shifted] = True
            table = np.cumsum(present) - 1
            return table[shifted].reshape(values.shape), int(table[-1] + 1)
    uniq, inv = np.unique(values, return_inverse=True)
    return inv.reshape(values.shape), int(uniq.size)


def _as_rankings(rankings) -> np.ndarray:
    arr = np.asarray(rankings)
    if arr.ndim != 2:
        raise ValueError(f"rankings must be 2-D [m, n], got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"rankings is empty: shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"rankings must be numeric, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError("rankings contains NaN or infinite values")
    return arr


def _contingency_tables(codes: np.ndarray, k: int) -> np.ndarray:
    """``C[a, b, u, v] = #{i : codes[a, i] = u, codes[b, i] = v}``, int64 ``[m, m, k, k]``.

    One product of the one-hot ``[m k, n]`` matrix with its transpose. Entries are
    integer counts <= n, exact in float32 for n < 2**24 (float64 beyond).
    """
    m, n = codes.shape
    dtype = np.float32 if n < (1 << 24) else np.float64
    onehot = (codes[:, None, :] == np.arange(k)[None, :, None]).astype(dtype).reshape(m * k, n)
    prod = onehot @ onehot.T
    return np.rint(prod).astype(np.int64).reshape(m, k, m, k).transpose(0, 2, 1, 3)


def _concordance_from_tables(tables: np.ndarray) -> np.ndarray:
    """``P - Q`` for each ``k x k`` table of ``tables[..., k, k]``.

    ``A[u,v] = sum_{u'>u, v'>v} C`` (concordant partners), ``D[u,v] = sum_{u'>u, v'<v} C``
    (discordant partners), both read from the suffix-sum table ``S[u,v] = sum_{u'>=u, v'>=v} C``.
    """
    k = tables.shape[-1]
    padded = np.zeros(tables.shape[:-2] + (k + 1, k + 1), dtype=np.int64)
    padded[..., :k, :k] = tables
    suffix = padded[..., ::-1, ::-1].cumsum(axis=-1).cumsum(axis=-2)[..., ::-1, ::-1]
    concordant = suffix[..., 1:, 1:]
    discordant = suffix[..., 1:, :1] - suffix[..., 1:, :k]
    return (tables * (concordant - discordant)).sum(axis=(-2, -1))


def kendall_tau_b_matrix(rankings, max_levels: int = _MAX_LEVELS) -> np.ndarray:
    """Pairwise Kendall tau-b between the rows of ``rankings`` (``[m, n]`` -> ``[m, m]``).

    For ordinal data with few distinct values ``k`` (over the whole matrix), each
    pair is counted from its ``k x k`` contingency table (see the module docstring;
    memory O(m k n)). With more than ``max_levels`` distinct values it falls back
    to :func:`kendall_tau_b` per pair. Rows that are constant give ``nan`` rows and
    columns (including the diagonal); otherwise the diagonal is 1.
    """
    arr = _as_rankings(rankings)
    m, n = arr.shape
    codes, k = _dense_codes(arr)
    if k > max_levels:
        logger.debug("kendall_tau_b_matrix: %d distinct values > %d, using scipy per pair", k, max_levels)
        return _tau_b_matrix_pairwise(arr.astype(np.float64))
    tables = _contingency_tables(codes, k)
    s = _concordance_from_tables(tables).astype(np.float64)
    counts = tables[np.arange(m), np.arange(m)].diagonal(axis1=-2, axis2=-1)  # [m, k] value counts
    n0 = n * (n - 1) / 2.0
    untied = n0 - (counts * (counts - 1) / 2.0).sum(axis=1)  # n0 - n1 per row
    den = np.sqrt(np.outer(untied, untied))
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(den > 0, s / np.where(den > 0, den, 1.0), np.nan)
    return np.clip(tau, -1.0, 1.0)


def _tau_b_matrix_pairwise(arr: np.ndarray) -> np.ndarray:
    m = arr.shape[0]
    out = np.empty((m, m), dtype=np.float64)
    for a in range(m):
        for b in range(a, m):
            out[a, b] = out[b, a] = _tau_b_checked(arr[a], arr[b])
    return out


def spearman_rho_matrix(rankings) -> np.ndarray:
    """Pairwise Spearman rho between the rows of ``rankings`` (``[m, n]`` -> ``[m, m]``).

    Rows are replaced by their average ranks, centred and scaled to unit norm;
    the matrix is their Gram matrix. Constant rows give ``nan`` rows and columns.
    """
    arr = _as_rankings(rankings).astype(np.float64)
    ranks = stats.rankdata(arr, axis=1)
    ranks -= ranks.mean(axis=1, keepdims=True)
    norms = np.sqrt((ranks * ranks).sum(axis=1))
    ok = norms > 0
    z = np.where(ok[:, None], ranks / np.where(ok, norms, 1.0)[:, None], np.nan)
    return np.clip(z @ z.T, -1.0, 1.0)


def inter_annotator_agreement(rankings) -> Dict[str, float]:
    """Mean pairwise agreement of ``m`` annotators' ratings ``[m, n]`` of one video.

    Protocol of Otani et al. (CVPR 2019) for TVSum: for each annotator the mean
    coefficient against each of the ``m - 1`` others, then the mean over annotators.
    Returns ``{"kendall_tau_b": ..., "spearman_rho": ...}`` (``nan`` if any row is constant).
    """
    arr = _as_rankings(rankings)
    m = arr.shape[0]
    if m < 2:
        raise ValueError("inter_annotator_agreement needs at least 2 annotators")
    off = ~np.eye(m, dtype=bool)
    out = {}
    for name, mat in (("kendall_tau_b", kendall_tau_b_matrix(arr)), ("spearman_rho", spearman_rho_matrix(arr))):
        per_annotator = np.where(off, mat, 0.0).sum(axis=1) / (m - 1)
        out[name] = float(per_annotator.mean())
    return out


# --------------------------------------------------------------------------- grouped tau-b
def _pair_codes(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Dense codes of the pairs ``(a_i, b_i)`` of non-negative int codes < n, in (a, b) order.

    Returns ``(a_of_code, codes, counts, perm)``: ``a`` of each distinct pair, the code
    of each item, the items per code, and the permutation sorting the items by (a, b).
    The sort key ``a * (max(b) + 1) + b`` is < n^2, exact in int64 for n < 3e9.
    """
    radix = np.int64(b.max()) + 1
    keys = a.astype(np.int64) * radix + b
    perm = np.argsort(keys)  # equal keys are interchangeable: no need for a stable sort
    ordered = keys[perm]
    first = np.ones(keys.size, dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    codes = np.empty(keys.size, dtype=np.int64)
    codes[perm] = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, keys.size))
    return ordered[starts] // radix, codes, counts, perm


def _unique_inverse(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` with an O(n) path for small-range integers."""
    if values.dtype.kind in "biu":
        codes, k = _dense_codes(values)
        uniq = np.empty(k, dtype=values.dtype)
        uniq[codes] = values
        return uniq, codes.ravel()
    uniq, inv = np.unique(values, return_inverse=True)
    return uniq, inv.ravel()


def _tie_pairs(groups_of_runs: np.ndarray, counts: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group, ``sum t (t - 1) / 2`` over its runs of equal keys."""
    return np.bincount(groups_of_runs, weights=counts * (counts - 1) / 2.0, minlength=n_groups)


def _fenwick_discordant(padded: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Inversions ``#{i < j : r_i > r_j}`` of each row of ``padded`` (rows sorted by size, ascending).

    Row ``g`` holds ``sizes[g]`` 1-based ranks followed by padding. All rows are
    processed together with one Fenwick (binary indexed) tree per row: step ``t``
    queries ``#{i < t : r_i <= r_t}`` and inserts ``r_t``; only rows longer than ``t``
    (a suffix, as sizes ascend) take part. O(n log L) work, O(L log L) NumPy calls.
    """
    n_rows, width = padded.shape
    nbits = int(width).bit_length()  # a chain of Fenwick indices <= width has <= nbits entries
    sink = width + 1  # updates that run past ``width`` land here; it is never queried
    tree_w = width + 2
    tree = np.zeros(n_rows * tree_w, dtype=np.int64)
    disc = np.zeros(n_rows, dtype=np.int64)
    for t in range(width):
        first = int(np.searchsorted(sizes, t, side="right"))
        if first >= n_rows:
            break
        base = np.arange(first, n_rows, dtype=np.int64) * tree_w
        rank = padded[first:, t]
        idx, seen = rank.copy(), np.zeros(n_rows - first, dtype=np.int64)
        for _ in range(nbits):
            seen += tree[base + idx]  # tree[row, 0] stays 0
            idx &= idx - 1
        disc[first:] += t - seen
        idx = rank.copy()
        for _ in range(nbits):
            tree[base + idx] += 1
            idx += idx & -idx
            np.minimum(idx, sink, out=idx)
    return disc


def _batched_discordant(g_sorted: np.ndarray, rank_sorted: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Discordant pairs per group from items sorted by (group, s, y).

    Groups are numbered ``0..G-1`` by ascending size; ``rank_sorted`` is the 1-based
    dense rank of ``y`` inside its group. With ``(s, y)`` ascending, a discordant pair
    is exactly an inversion ``r_i > r_j, i < j`` (pairs tied in ``s`` are in ``y`` order).
    """
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    pos = np.arange(g_sorted.size) - starts[g_sorted]
    disc = np.zeros(sizes.size, dtype=np.int64)
    for lo in range(0, sizes.size, _ROOMS_PER_CHUNK):
        hi = min(lo + _ROOMS_PER_CHUNK, sizes.size)
        e0, e1 = starts[lo], starts[hi - 1] + sizes[hi - 1]
        padded = np.zeros((hi - lo, int(sizes[hi - 1])), dtype=np.int64)
        padded[g_sorted[e0:e1] - lo, pos[e0:e1]] = rank_sorted[e0:e1]
        disc[lo:hi] = _fenwick_discordant(padded, sizes[lo:hi])
    return disc


def _grouped_tau_b(y: np.ndarray, s: np.ndarray, groups) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(unique_groups, tau_b per group, distinct y values per group)`` for validated y, s.

    Everything is counted with integer-key sorts: ``(g, y)``, ``(g, s)`` and ``(g, s, y)``
    runs give the tie pairs ``n2``, ``n1``, ``n3`` of each group; the ``(g, s, y)`` order
    gives the discordant pairs ``Q`` (batched Fenwick trees); then
    ``tau_b = (n0 - n1 - n2 + n3 - 2 Q) / sqrt((n0 - n1)(n0 - n2))``.
    """
    uniq, g_raw = _unique_inverse(np.asarray(groups))
    sizes = np.bincount(g_raw, minlength=uniq.size)
    # Renumber groups by ascending size so the batched pass sees growing row lengths.
    by_size = np.argsort(sizes, kind="stable")
    new_id = np.empty_like(by_size)
    new_id[by_size] = np.arange(by_size.size)
    g = new_id[g_raw]
    sz = sizes[by_size]
    n_groups = sz.size
    y_code = _dense_codes(y)[0]
    s_code = _dense_codes(s)[0]

    gy_group, gy_code, gy_counts, _ = _pair_codes(g, y_code)
    gs_group, gs_code, gs_counts, _ = _pair_codes(g, s_code)
    gsy_of_gs, _, gsy_counts, gsy_order = _pair_codes(gs_code, y_code)
    ties_y = _tie_pairs(gy_group, gy_counts, n_groups)
    ties_s = _tie_pairs(gs_group, gs_counts, n_groups)
    ties_both = _tie_pairs(gs_group[gsy_of_gs], gsy_counts, n_groups)
    n_levels = np.bincount(gy_group, minlength=n_groups)
    first_gy = np.searchsorted(gy_group, np.arange(n_groups))  # first (g, y) code of each group
    y_rank = gy_code - first_gy[g] + 1

    n_small = int(np.searchsorted(sz, _MAX_BATCHED_GROUP, side="right"))
    disc = np.zeros(n_groups, dtype=np.float64)
    if n_small:
        order = gsy_order[g[gsy_order] < n_small]  # items by (group, s, y)
        disc[:n_small] = _batched_discordant(g[order], y_rank[order], sz[:n_small])
    n0 = sz * (sz - 1) / 2.0
    numer = n0 - ties_s - ties_y + ties_both - 2.0 * disc  # P - Q
    den = (n0 - ties_s) * (n0 - ties_y)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.clip(np.where(den > 0, numer / np.sqrt(np.where(den > 0, den, 1.0)), np.nan), -1.0, 1.0)
    if n_small < n_groups:  # large groups: scipy's O(n log n) each
        big_items = np.flatnonzero(g >= n_small)
        big_items = big_items[np.argsort(g[big_items], kind="stable")]
        for big, members in zip(range(n_small, n_groups), np.split(big_items, np.cumsum(sz[n_small:])[:-1])):
            tau[big] = _tau_b_checked(y[members], s[members])
    return uniq, tau[new_id], n_levels[new_id]


def grouped_kendall_tau_b(y_true, y_score, groups) -> Tuple[np.ndarray, np.ndarray]:
    """Kendall tau-b inside each group (e.g. live room): ``(unique_groups, taus)``.

    ``taus[g]`` equals :func:`kendall_tau_b` on the items of group ``g`` (``nan`` when
    the group has < 2 items or a constant ``y`` or ``s``). Groups of up to 512 items
    are computed together: ties by integer-key sorts, discordant pairs by batched
    Fenwick trees (O(n log n) overall); larger groups go through scipy one by one.
    ``groups`` is ``[n]`` of any sortable keys.
    """
    y, s = _as_pair(y_true, y_score)
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != y.shape[0]:
        raise ValueError(f"groups must be 1-D with {y.shape[0]} entries, got shape {g.shape}")
    uniq, tau, _ = _grouped_tau_b(y, s, g)
    return uniq, tau


# --------------------------------------------------------------------------- soft-label metrics
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


# --------------------------------------------------------------------------- highlight metrics
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


# --------------------------------------------------------------------------- segment evaluation
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


# --------------------------------------------------------------------------- reference data
def read_tvsum_user_anno(mat_path) -> List[np.ndarray]:
    """Read TVSum50's per-video annotations from ``ydata-tvsum50.mat`` (MATLAB v7.3 / HDF5).

    Returns one int array ``[20 annotators, n_frames]`` (importance 1..5) per video,
    in file order. Needs ``h5py`` (a test extra), imported here only.
    """
    import h5py  # noqa: PLC0415 (optional dependency)

    with h5py.File(mat_path, "r") as f:
        group = f["tvsum50"]
        refs = group["user_anno"]
        out = []
        for ref in np.asarray(refs).ravel():
            anno = np.asarray(f[ref])
            out.append(_orient_annotators(anno))
    return out


def _orient_annotators(anno: np.ndarray) -> np.ndarray:
    """MATLAB stores ``frames x 20``; h5py reads it transposed. Return ``[annotators, frames]``."""
    anno = np.rint(anno).astype(np.int64)
    return anno if anno.shape[0] <= anno.shape[1] else anno.T
