"""Integer coding of values and of value pairs, the basis of the counting fast paths.

* :func:`_dense_codes`: ``values -> codes`` in ``0..k-1`` with ``codes_i < codes_j`` iff
  ``values_i < values_j`` (order preserving; O(size) for small-range integers).
* :func:`_unique_inverse`: ``np.unique(values, return_inverse=True)`` on the same fast path.
* :func:`_pair_codes`: dense codes of pairs ``(a_i, b_i)`` in lexicographic order, via the key
  ``a * (max(b) + 1) + b``; runs of equal codes count tied pairs, ``sum_runs t (t - 1) / 2``.

Shapes: ``values`` any shape (codes keep it); ``a``, ``b`` ``[n]``.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np


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


def _unique_inverse(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` with an O(n) path for small-range integers."""
    if values.dtype.kind in "biu":
        codes, k = _dense_codes(values)
        uniq = np.empty(k, dtype=values.dtype)
        uniq[codes] = values
        return uniq, codes.ravel()
    uniq, inv = np.unique(values, return_inverse=True)
    return uniq, inv.ravel()


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
