"""Stochastic rankings: Plackett-Luce over blended scores with a temperature (docs/OPE.md, "Policies").

A deterministic formula ``s = sum_k w_k s_k`` (:class:`ranking.blend.Formula`) becomes a policy by
drawing the list position by position without replacement, item ``a`` among the items ``R`` not yet
placed with probability

    pi(a | R) = exp(s_a / tau) / sum_{b in R} exp(s_b / tau)                                 (PL)

(Plackett 1975, Luce 1959). ``tau -> 0`` is the sorted feed, ``tau -> inf`` a uniform shuffle. What
the estimators need from a policy, for one request with N candidates and a list of length K:

- the probability of a logged prefix ``(a_0, ..., a_k)``: ``prod_{j<=k} pi(a_j | R_j)``
  (:func:`prefix_probabilities`);
- the *marginal* probability that item a is shown at position k, ``P(a at k)``, summed over every
  list: :func:`position_marginals`, exact, by a recursion over the *sets* of items placed above k
  (``g(S)``: probability that the first |S| draws are the set S, in any order)::

      g({}) = 1,   g(S + a) += g(S) * w_a / (W - w(S))   for a not in S,
      P(a at k) = sum_{|S| = k, a not in S} g(S) * w_a / (W - w(S)),     w_a = exp(s_a / tau)

  which costs ``sum_{j<K} C(N, j) (N - j)`` terms per request, instead of the ``N! / (N - K)!`` lists.

Sampling uses the Gumbel-max trick: sorting ``s_a / tau + G_a`` (G_a standard Gumbel) gives a PL
draw (Yellott 1977).
"""

from __future__ import annotations

import functools
import math
from typing import List, Tuple

import numpy as np
import scipy.sparse as sp

__all__ = ["gumbel_top_k", "log_weights", "normalised_weights", "position_marginals", "prefix_probabilities"]

#: Requests scored together by :func:`position_marginals`, and the most (request, pair) terms held at once.
_CHUNK = 1024
_MAX_TERMS = 4_000_000
#: The most (set, item) terms ``sum_{j<K} C(N, j) (N - j)`` of the exact marginals of one request size: past it
#: (N ~ 50 candidates at K = 5) the subset tables take minutes and gigabytes.
MAX_MARGINAL_TERMS = 10_000_000


def marginal_terms(n: int, k: int) -> int:
    """``sum_{j<min(k, n)} C(n, j) (n - j)``: the terms :func:`position_marginals` needs for n candidates."""
    return sum(math.comb(n, j) * (n - j) for j in range(min(k, n)))


def log_weights(scores: np.ndarray, temperature: float) -> np.ndarray:
    """``s / tau`` with -inf where the score is NaN (padding: not a candidate); any shape."""
    if not temperature > 0:
        raise ValueError(f"a Plackett-Luce temperature must be > 0, got {temperature}")
    s = np.asarray(scores, np.float64) / float(temperature)
    return np.where(np.isnan(s), -np.inf, s)


def gumbel_top_k(logw: np.ndarray, k: int, uniforms: np.ndarray) -> np.ndarray:
    """Indices ``[R, k]`` of a Plackett-Luce draw of k items per row of ``logw [R, N]`` (-inf = absent),
    from ``uniforms [R, N]`` in (0, 1): ``argsort(-(logw + G))``, ``G = -log(-log u)``."""
    gumbel = -np.log(-np.log(np.clip(uniforms, 1e-300, 1.0 - 1e-16)))
    keys = np.where(np.isfinite(logw), logw + gumbel, -np.inf)
    return np.argsort(-keys, axis=1, kind="stable")[:, :k]


def normalised_weights(logw: np.ndarray) -> np.ndarray:
    """``exp(logw - max)`` per row (0 for absent items)."""
    top = np.max(np.where(np.isfinite(logw), logw, -np.inf), axis=1, keepdims=True)
    return np.exp(logw - np.where(np.isfinite(top), top, 0.0))


def prefix_probabilities(logw: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """``[R, K]``: probability of the prefix ``chosen[:, :k+1]`` (item indices into ``logw [R, N]``);
    ``chosen`` may end early with -1 (a shorter list): those entries are NaN."""
    w = normalised_weights(logw)
    valid = chosen >= 0
    picked = np.take_along_axis(w, np.where(valid, chosen, 0), axis=1) * valid
    remaining = w.sum(axis=1, keepdims=True) - np.concatenate(
        [np.zeros((len(w), 1)), np.cumsum(picked, axis=1)[:, :-1]], axis=1)
    conditional = picked / np.where(remaining > 0, remaining, 1.0)
    out = np.cumprod(np.where(valid, conditional, 1.0), axis=1)
    return np.where(valid, out, np.nan)


@functools.lru_cache(maxsize=8)  # entries hold [N, C(N, j)] matrices: up to hundreds of MB each
def _subset_levels(n: int, k: int) -> List[Tuple[np.ndarray, np.ndarray, sp.csr_matrix, sp.csr_matrix]]:
    """Per level j < k: the member matrix of the sets of size j ``[N, n_j]`` and, over the pairs
    (set S of size j, item a not in S): the set index, the item, the item <- pair matrix ``[N, P]``
    and the child set (S + a) <- pair matrix ``[n_{j+1}, P]`` (sparse)."""
    levels = []
    sets = [0]  # bitmasks of level j
    for j in range(k):
        index = {mask: i for i, mask in enumerate(sets)}
        set_idx, items, children, child_index = [], [], [], {}
        for mask in sets:
            for a in range(n):
                if not mask >> a & 1:
                    child = mask | 1 << a
                    set_idx.append(index[mask])
                    items.append(a)
                    children.append(child_index.setdefault(child, len(child_index)))
        set_idx_arr, items_arr = np.asarray(set_idx, np.int64), np.asarray(items, np.int64)
        members = np.array([[mask >> a & 1 for mask in sets] for a in range(n)], np.float64).reshape(n, len(sets))
        n_pairs = len(items)
        to_item = sp.csr_matrix((np.ones(n_pairs), (items_arr, np.arange(n_pairs))), shape=(n, n_pairs))
        to_child = sp.csr_matrix((np.ones(n_pairs), (children, np.arange(n_pairs))), shape=(len(child_index), n_pairs))
        levels.append((members, np.stack([set_idx_arr, items_arr]), to_item, to_child))
        sets = sorted(child_index, key=child_index.get)
    return levels


def _marginals_full(w: np.ndarray, k: int) -> np.ndarray:
    """:func:`position_marginals` of rows with all N items present (``w [R, N]`` > 0)."""
    r, n = w.shape
    out = np.zeros((r, n, k))
    total = w.sum(axis=1, keepdims=True)
    g = np.ones((r, 1))
    for j, (members, pairs, to_item, to_child) in enumerate(_subset_levels(n, k)):
        placed = w @ members  # [R, n_j] weight of each set
        contrib = g[:, pairs[0]] * w[:, pairs[1]] / (total - placed[:, pairs[0]])  # [R, P]
        out[:, :, j] = np.asarray(to_item @ contrib.T).T
        if j + 1 < k:
            g = np.asarray(to_child @ contrib.T).T
    return out


def position_marginals(logw: np.ndarray, k: int) -> np.ndarray:
    """``[R, N, k]``: exact probability that candidate a is shown at position j under PL (see the module
    docstring); rows of ``logw [R, N]`` may pad absent candidates with -inf (their entries are 0). A row
    with n < k candidates fills positions ``0..n-1`` only."""
    logw = np.asarray(logw, np.float64)
    r, n = logw.shape
    out = np.zeros((r, n, k))
    present = np.isfinite(logw)
    counts = present.sum(axis=1)
    largest = int(counts.max()) if r else 0
    terms = marginal_terms(largest, k)
    if terms > MAX_MARGINAL_TERMS:
        raise ValueError(f"position_marginals: a request has N = {largest} candidates for lists of K = {k}: the exact "
                         f"marginals need {terms:,} terms (sum over j < K of C(N, j) (N - j)), more than the limit "
                         f"{MAX_MARGINAL_TERMS:,}; use fewer candidates per request or shorter lists")
    for m in np.unique(counts):
        if m == 0:
            continue
        rows = np.flatnonzero(counts == m)
        # the present candidates first, in their order (stable)
        cols = np.argsort(~present[rows], axis=1, kind="stable")[:, :m]
        sub = np.take_along_axis(logw[rows], cols, axis=1)
        kk = min(k, int(m))
        n_pairs = max(level[1].shape[1] for level in _subset_levels(int(m), kk))
        chunk = max(1, min(_CHUNK, _MAX_TERMS // n_pairs))
        for first in range(0, len(rows), chunk):
            part = slice(first, first + chunk)
            marg = _marginals_full(normalised_weights(sub[part]), kk)
            block = np.zeros((len(marg), n, k))
            np.put_along_axis(block[:, :, :kk], cols[part][:, :, None].repeat(kk, axis=2), marg, axis=1)
            out[rows[part]] = block
    return out
