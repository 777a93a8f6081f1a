"""The scalar fields of KLive rows: lenient int64 / float conversion, one value or a column.

Integers may be written as integral floats (``1650000000.0``) or as text; floats may be
text and must be finite. A column is converted in one pass; only when that fails is it
walked again to name the first bad value and its line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from kuaihl_rec.data.klive.errors import data_error, show_value

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# What the converters raise for a value they reject.
CONVERSION_ERRORS = (ValueError, TypeError, OverflowError)


def to_int(value: Any) -> int:
    """An int64 from an int, an integral float, or their text; raises ValueError/TypeError/OverflowError."""
    if type(value) is int:
        number = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)
        except ValueError:
            as_float = float(text)
            if not as_float.is_integer():
                raise ValueError(value) from None
            number = int(as_float)
    elif isinstance(value, float):
        if not value.is_integer():
            raise ValueError(value)
        number = int(value)
    else:
        raise TypeError(type(value).__name__)
    if not INT64_MIN <= number <= INT64_MAX:
        raise OverflowError(value)
    return number


def to_float(value: Any) -> float:
    """A finite float from an int, a float or their text; raises ValueError/TypeError/OverflowError."""
    if isinstance(value, str):
        number = float(value)
    elif type(value) is int or isinstance(value, float):
        number = float(value)
    else:
        raise TypeError(type(value).__name__)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def scalar_column(
    path: Path, line_numbers: Sequence[int], values: Sequence[Any], field: str,
    convert: Callable[[Any], Any], dtype: Any, expected: str,
) -> np.ndarray:
    """``values`` (the ``field`` of the rows at ``line_numbers``) converted by ``convert`` into a
    ``dtype`` array; raises DataError naming the first bad value and its line (``expected``
    names the expected kind, e.g. "an int64 integer")."""
    try:
        return np.fromiter((convert(value) for value in values), dtype=dtype, count=len(values))
    except CONVERSION_ERRORS:
        pass
    for line_number, value in zip(line_numbers, values):
        try:
            convert(value)
        except CONVERSION_ERRORS:
            raise data_error(path, line_number, field, show_value(value), expected) from None
    raise data_error(path, line_numbers[0], field, "values that could not be read", expected)


def int_column(path: Path, line_numbers: Sequence[int], values: Sequence[Any], field: str) -> np.ndarray:
    """``values`` as an int64 array (see :func:`to_int`); raises DataError at the first bad one."""
    return scalar_column(path, line_numbers, values, field, to_int, np.int64, "an int64 integer")


def float_column(path: Path, line_numbers: Sequence[int], values: Sequence[Any], field: str) -> np.ndarray:
    """``values`` as a float64 array (see :func:`to_float`); raises DataError at the first bad one."""
    return scalar_column(path, line_numbers, values, field, to_float, np.float64, "a finite float")
