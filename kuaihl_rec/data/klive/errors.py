"""How the KLive reader words its errors.

Every problem in a release becomes a :class:`~kuaihl_rec.data.io.DataError` whose message
names the file, the 1-based line (when there is one), the field, what was found and what
was expected.
"""

from __future__ import annotations

from typing import Any, Optional

from kuaihl_rec.data.io import DataError, PathLike


def show_value(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (ending in ``...``) for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def data_error(path: PathLike, line: Optional[int], field: str, found: str, expected: str) -> DataError:
    """The DataError for ``field`` of ``path`` (at 1-based ``line`` unless None): "found ...; expected ..."."""
    where = f"{path}, line {line}" if line is not None else f"{path}"
    return DataError(f"{where}, field {field!r}: found {found}; expected {expected}")
