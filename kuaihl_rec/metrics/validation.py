"""Input checks shared by the metrics: finite non-empty 1-D arrays, label ranges, constant inputs.

Every public metric takes array-likes (lists, NumPy arrays, CPU tensors) of shape ``[n]``;
these helpers turn them into float64 arrays or raise ``ValueError`` (empty input, mismatched
lengths, NaN or infinite values, wrong dimensionality, labels outside ``[0, 1]`` or not 0/1).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np


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
    """Raise ``ValueError`` unless every entry of ``x`` (any shape) lies in ``[0, 1]``."""
    if x.min() < 0.0 or x.max() > 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got range [{x.min()}, {x.max()}]")


def _check_binary(x: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` unless every entry of ``x`` (any shape) is 0 or 1."""
    if not np.all((x == 0.0) | (x == 1.0)):
        raise ValueError(f"{name} must contain only 0 and 1")


def _is_constant(x: np.ndarray) -> bool:
    """Whether ``x`` (any shape) is empty or holds one value only."""
    return bool(x.size == 0 or x.min() == x.max())
