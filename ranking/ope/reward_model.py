"""The reward model ``q(x, a, k)`` of the direct method and doubly robust estimators (docs/OPE.md).

A ridge regression per position on the candidate's standardised term scores,
``q(a, k) = beta_k0 + beta_k . z_a`` (z: the terms, standardised over all candidates), fitted on the
logged rows ``(z_{a_ik}, k, r_ik)``; the normal equations ``(X'X + lambda I) beta = X'y`` of the
block design ``onehot(k) (x) [1, z_a]``. Cross-fitted: the sessions are split in ``folds`` by a hash of
their index and each fold is predicted by the model fitted on the others (Chernozhukov et al. 2018),
so a request's own reward never enters its own prediction. It is deliberately simple: DR stays unbiased
under the cascade whatever q is; the direct method is only as good as q.
"""

from __future__ import annotations

import numpy as np

from ranking.ope.policy import RequestArrays
from ranking.random_numbers import splitmix64

__all__ = ["fit_reward_model"]


def _features(arrays: RequestArrays) -> np.ndarray:
    """``[R, N, 1 + T]``: 1 and the standardised terms (0 for padding)."""
    names = sorted(arrays.terms)
    z = np.zeros(arrays.present.shape + (1 + len(names),))
    z[..., 0] = 1.0
    for i, name in enumerate(names):
        values = arrays.terms[name]
        present = values[arrays.present]
        mean, sd = float(present.mean()), float(present.std()) or 1.0
        z[..., 1 + i] = np.where(arrays.present, (values - mean) / sd, 0.0)
    return z


def _solve(x: np.ndarray, k: np.ndarray, y: np.ndarray, n_positions: int, ridge: float) -> np.ndarray:
    """``beta [K, 1 + T]`` of the block design (one ridge system per position; the intercept is not shrunk)."""
    d = x.shape[1]
    beta = np.zeros((n_positions, d))
    penalty = ridge * np.eye(d)
    penalty[0, 0] = 0.0
    pooled = np.linalg.lstsq(x.T @ x + penalty + 1e-9 * np.eye(d), x.T @ y, rcond=None)[0] if len(y) else beta[0]
    for j in range(n_positions):
        rows = k == j
        if rows.sum() <= d:  # too few rows at this position: the pooled fit
            beta[j] = pooled
            continue
        xj = x[rows]
        beta[j] = np.linalg.solve(xj.T @ xj + penalty + 1e-9 * np.eye(d), xj.T @ y[rows])
    return beta


def fit_reward_model(arrays: RequestArrays, reward: np.ndarray, folds: int = 2, ridge: float = 1.0,
                     seed: int = 0) -> np.ndarray:
    """``q [R, N, K]``: the cross-fitted prediction for every candidate at every position (0 on padding).

    ``reward [n_rows]``: the logged reward of each impression row (in ``arrays``' row order).
    """
    z = _features(arrays)
    r, k = arrays.row_request, arrays.row_position
    x_rows = z[r, arrays.row_slot]
    fold_of_session = (splitmix64(np.arange(arrays.session.max() + 1, dtype=np.uint64) ^ np.uint64(seed))
                       % np.uint64(max(folds, 1))).astype(np.int64)
    fold = fold_of_session[arrays.session]  # [R]
    q = np.zeros(arrays.present.shape + (arrays.n_positions,))
    for f in range(max(folds, 1)):
        train = fold[r] != f if folds > 1 else np.ones(len(r), dtype=bool)
        if folds > 1 and not train.any():
            train = np.ones(len(r), dtype=bool)
        beta = _solve(x_rows[train], k[train], np.asarray(reward, np.float64)[train], arrays.n_positions, ridge)
        target = fold == f
        q[target] = np.einsum("rnd,kd->rnk", z[target], beta)
    return np.where(arrays.present[..., None], q, 0.0)
