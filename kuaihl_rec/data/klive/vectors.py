"""The vector fields of KLive rows: style detection and bulk parsing into float32 arrays.

In the tab-separated encodings a vector is text in one of four styles (see
:data:`~kuaihl_rec.data.klive.layout.VECTOR_STYLES`); in the JSON / Python-dict encodings it
is a list of numbers. A chunk of vectors is converted at once (Arrow compute kernels for
text, numpy for lists); only a chunk that fails is walked value by value to name the bad
value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kuaihl_rec.data.klive.errors import data_error, show_value

F32_MAX = float(np.finfo(np.float32).max)
# What pc.cast raises for text that is not a number.
_ARROW_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError)


def vector_style(text: str) -> str:
    """The style of one vector text: ``comma``, ``space``, ``bracket-comma`` or ``bracket-space``."""
    text = text.strip()
    bracket = text.startswith("[") and text.endswith("]")
    inner = text[1:-1] if bracket else text
    separator = "comma" if "," in inner else "space"
    return f"bracket-{separator}" if bracket else separator


def _vector_bodies(
    path: Path, line_numbers: Sequence[int], texts: Sequence[str], field: str, style: str, mismatch: str,
) -> List[str]:
    """The numbers part of each (stripped) vector text: brackets removed for a ``bracket-*``
    style; raises DataError (expecting ``mismatch``) at the first text not in ``style``."""
    if style.startswith("bracket-"):
        for index, text in enumerate(texts):
            if not (text[:1] == "[" and text[-1:] == "]"):
                raise data_error(path, line_numbers[index], field, f"{show_value(text)} (no surrounding brackets)",
                                 mismatch)
        bodies = [text[1:-1].strip() for text in texts]
    else:
        for index, text in enumerate(texts):
            if text[:1] == "[" or text[-1:] == "]":
                raise data_error(path, line_numbers[index], field, f"{show_value(text)} (with brackets)", mismatch)
        bodies = list(texts)
    if not style.endswith("comma"):
        for index, body in enumerate(bodies):
            if "," in body:
                raise data_error(path, line_numbers[index], field, f"{show_value(texts[index])} (comma-separated)",
                                 mismatch)
    return bodies


def parse_vector_texts(
    path: Path, line_numbers: Sequence[int], texts: Sequence[str], field: str, style: str,
    encoding_description: str, dim: Optional[int], size_reference: str,
) -> np.ndarray:
    """A chunk of vector texts of one ``style`` (``field`` of the rows at ``line_numbers``) as an
    (n, dim) float32 array.

    ``dim`` is the size every vector must have, or None to take it from the first text;
    ``size_reference`` says where that size was detected and ``encoding_description`` how
    the shard is encoded (both for error messages). The split into numbers and the string
    -> float32 conversion run in Arrow compute kernels; a chunk that fails is re-read value
    by value only to name the bad value. Raises DataError.
    """
    comma = style.endswith("comma")
    texts = [text.strip() for text in texts]
    mismatch = f"a vector in style {style!r} like every row ({encoding_description})"
    bodies = _vector_bodies(path, line_numbers, texts, field, style, mismatch)
    if dim is None and not bodies[0]:
        raise data_error(path, line_numbers[0], field, f"an empty vector {show_value(texts[0])}", "at least one value")
    strings = pa.array(bodies, type=pa.string())
    if comma:
        per_row = pc.split_pattern(strings, ",")
        tokens = pc.utf8_trim_whitespace(per_row.flatten())
    else:
        per_row = pc.ascii_split_whitespace(strings)
        tokens = per_row.flatten()
    counts = pc.list_value_length(per_row).to_numpy(zero_copy_only=False)
    if dim is None:
        dim = int(counts[0])
    wrong = np.flatnonzero(counts != dim)
    if wrong.size:
        row = int(wrong[0])
        separated = "comma-separated" if comma else "whitespace-separated"
        raise data_error(path, line_numbers[row], field, f"{int(counts[row])} {separated} values",
                         f"{dim} values (the size detected at {size_reference})")
    try:
        values = pc.cast(tokens, pa.float32()).to_numpy(zero_copy_only=False)
    except _ARROW_CAST_ERRORS:
        values = None
    if values is None or not np.isfinite(values).all():
        _raise_at_bad_number(path, line_numbers, bodies, field, comma)
        raise data_error(path, line_numbers[0], field, "values that could not be read", "finite floats")
    return values.reshape(len(bodies), dim)


def _first_bad_token(tokens: List[str]) -> Optional[int]:
    """The position of the first token that is not a finite float32, or None if all are."""
    try:
        finite = np.isfinite(pc.cast(pa.array(tokens, type=pa.string()), pa.float32()).to_numpy(zero_copy_only=False))
    except _ARROW_CAST_ERRORS:
        for position, token in enumerate(tokens):
            try:
                pc.cast(pa.array([token], type=pa.string()), pa.float32())
            except _ARROW_CAST_ERRORS:
                return position
        return None
    return int(np.flatnonzero(~finite)[0]) if not finite.all() else None


def _raise_at_bad_number(path: Path, line_numbers: Sequence[int], bodies: Sequence[str], field: str,
                         comma: bool) -> None:
    """Raise DataError for the first value of a chunk of vector bodies that is not a finite float.

    Returns (without raising) only if every value reads, which the caller treats as an error.
    """
    for index, body in enumerate(bodies):
        tokens = [token.strip() for token in (body.split(",") if comma else body.split())] or [""]
        position = _first_bad_token(tokens)
        if position is not None:
            raise data_error(path, line_numbers[index], field, f"{show_value(tokens[position])} at position {position}",
                             "a finite float")


def parse_vector_lists(
    path: Path, line_numbers: Sequence[int], values: Sequence[Any], field: str, dim: Optional[int],
    size_reference: str,
) -> np.ndarray:
    """A chunk of JSON / Python lists (``field`` of the rows at ``line_numbers``) as an (n, dim)
    float32 array; ``dim`` None takes the size from the first list. Raises DataError."""
    for index, value in enumerate(values):
        if type(value) is not list:
            raise data_error(path, line_numbers[index], field, f"{type(value).__name__} {show_value(value)}",
                             "a list of numbers")
    if dim is None:
        dim = len(values[0])
        if dim == 0:
            raise data_error(path, line_numbers[0], field, "an empty list", "at least one value")
    for index, value in enumerate(values):
        if len(value) != dim:
            raise data_error(path, line_numbers[index], field, f"a list of {len(value)} values",
                             f"{dim} values (the size detected at {size_reference})")
    try:
        array = np.array(values)
    except (ValueError, TypeError, OverflowError):
        array = None
    if (array is None or array.ndim != 2 or array.dtype.kind not in "fiu"
            or not (np.abs(array.astype(np.float64)) <= F32_MAX).all()):
        for index, value in enumerate(values):
            for position, number in enumerate(value):
                numeric = type(number) is int or isinstance(number, float)
                if not (numeric and abs(float(number)) <= F32_MAX):
                    raise data_error(path, line_numbers[index], field, f"{show_value(number)} at position {position}",
                                     "a finite float32 number")
        raise data_error(path, line_numbers[0], field, "values numpy could not convert", "lists of finite numbers")
    return array.astype(np.float32, copy=False)
