"""Kendall tau-b inside each group (live room), all groups counted together.

Per group with ``n`` items, ``n0 = n(n-1)/2``, ``n1`` / ``n2`` the pairs tied in ``s`` / ``y``,
``n3`` the pairs tied in both and ``Q`` the discordant pairs (ContentCTR eq. 15)::

    tau_b = (n0 - n1 - n2 + n3 - 2 Q) / sqrt((n0 - n1)(n0 - n2))

The ties come from runs of integer-key sorts by ``(group, y)``, ``(group, s)`` and
``(group, s, y)``. In ``(group, s, y)`` order a discordant pair is exactly an inversion of the
within-group rank of ``y``, counted with one Fenwick tree per group, all groups advanced
together (O(n log n) overall). Groups larger than ``_MAX_BATCHED_GROUP`` go through scipy.

Shapes: ``y_true``, ``y_score``, ``groups`` ``[n]``; results ``[G]`` per distinct group.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from kuaihl_rec.metrics.dense_codes import _dense_codes, _pair_codes, _unique_inverse
from kuaihl_rec.metrics.rank_correlation import _tau_b_checked
from kuaihl_rec.metrics.validation import _as_pair

__all__ = ["grouped_kendall_tau_b"]

# Rooms larger than this are scored one by one with scipy in grouped_kendall_tau_b.
_MAX_BATCHED_GROUP = 512
_ROOMS_PER_CHUNK = 4096


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
