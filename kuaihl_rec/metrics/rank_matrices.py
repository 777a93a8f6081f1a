"""Many rankings at once: ``[m, m]`` tau-b / rho matrices and inter-annotator agreement.

:func:`kendall_tau_b_matrix` / :func:`spearman_rho_matrix` take ``[m, n]`` ordinal rankings
(e.g. 20 annotators x frames, scores 1..5) and return the ``[m, m]`` matrix of pairwise
coefficients. Tau-b (ContentCTR eq. 15) is counted from the ``k x k`` contingency table
``C[u, v] = #{i : x_a[i] = u, x_b[i] = v}`` of the ``k`` distinct values::

    P - Q = sum_{u,v} C[u,v] * ( sum_{u'>u, v'>v} C[u',v'] - sum_{u'>u, v'<v} C[u',v'] )
    tau_b = (P - Q) / sqrt((n0 - n1_a)(n0 - n1_b)),   n1_x = sum_u c_x(u) (c_x(u) - 1) / 2

All ``m^2`` tables come from one ``[m k, n] x [n, m k]`` product of one-hot indicators
(O(m^2 k^2 n) multiply-adds in BLAS, exact integer counts), and each ``P - Q`` from suffix sums
of its table (O(k^2)), instead of ``m^2 / 2`` separate O(n log n) sorts. Ties need no extra
work: the value counts ``c_x`` come from the diagonal tables. Spearman rho is the Gram matrix of
the centred, unit-norm average-rank rows.

:func:`inter_annotator_agreement` is the TVSum protocol (Otani et al., CVPR 2019): per annotator
the mean coefficient against every other annotator, then the mean over annotators.
"""

from __future__ import annotations

import logging
from typing import Dict

import numpy as np
from scipy import stats

from kuaihl_rec.metrics.dense_codes import _dense_codes
from kuaihl_rec.metrics.rank_correlation import _tau_b_checked

logger = logging.getLogger(__name__)

__all__ = ["kendall_tau_b_matrix", "spearman_rho_matrix", "inter_annotator_agreement"]

# Above this many distinct values the contingency fast path falls back to scipy.
_MAX_LEVELS = 64


def _as_rankings(rankings) -> np.ndarray:
    """Validate ``rankings`` as a non-empty, numeric, finite ``[m, n]`` array (dtype kept)."""
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
    """``[m, n] -> [m, m]`` tau-b by :func:`_tau_b_checked` per pair (the fallback path)."""
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
