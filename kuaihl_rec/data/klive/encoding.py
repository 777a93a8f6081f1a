"""Line-encoding detection for KLive shards.

A shard's encoding (``json``, ``pydict``, ``tsv-header`` or ``tsv``) is detected from its
first non-empty line; the vector styles of the tab-separated encodings from its first data
row. :class:`ShardEncoding` records the result and describes it for log and error messages.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, TextIO, Tuple

from kuaihl_rec.data.io import PathLike
from kuaihl_rec.data.klive.errors import data_error, show_value
from kuaihl_rec.data.klive.layout import KLIVE_FIELDS, VECTOR_FIELDS
from kuaihl_rec.data.klive.scalars import CONVERSION_ERRORS, to_int
from kuaihl_rec.data.klive.vectors import vector_style

# The package's logger: every module of the reader logs as "kuaihl_rec.data.klive".
logger = logging.getLogger(__package__)

# What ast.literal_eval (and json.loads) raise for a line that is not a literal.
LITERAL_ERRORS = (ValueError, SyntaxError, TypeError, MemoryError, RecursionError)

_EXPECTED_ENCODINGS = (
    "one of: a JSON object per line with keys " + ", ".join(KLIVE_FIELDS) + "; "
    "a Python dict literal per line; a tab-separated header naming those five fields; "
    "five tab-separated fields in that order (live_id an integer)"
)


@dataclasses.dataclass
class ShardEncoding:
    """The encoding detected for one shard.

    ``line``: one of :data:`~kuaihl_rec.data.klive.layout.LINE_ENCODINGS`; ``first_line``:
    the 1-based line it was detected from; ``columns``: field name -> column index (tsv
    encodings); ``n_columns``: tab-separated fields per row (tsv encodings);
    ``vector_styles``: field -> one of :data:`~kuaihl_rec.data.klive.layout.VECTOR_STYLES`
    (tsv encodings, filled from the first data row).
    """

    line: str
    first_line: int
    columns: Dict[str, int] = dataclasses.field(default_factory=dict)
    n_columns: int = 0
    vector_styles: Dict[str, str] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        """E.g. ``encoding 'tsv' (detected from line 1; vectors image_feaure=comma, text_feaure=comma)``."""
        text = f"encoding {self.line!r} (detected from line {self.first_line})"
        if self.vector_styles:
            styles = ", ".join(f"{field}={style}" for field, style in self.vector_styles.items())
            text = f"{text[:-1]}; vectors {styles})"
        return text


def open_text(path: Path) -> TextIO:
    """``path`` opened for reading as strict UTF-8 text with universal newlines."""
    return open(path, "r", encoding="utf-8", errors="strict", newline=None)


def numbered_lines(handle: TextIO) -> Iterator[Tuple[int, str]]:
    """``(line number from 1, line)`` of an open text file, the UTF-8 byte-order mark dropped from line 1."""
    for line_number, line in enumerate(handle, 1):
        yield line_number, (line.lstrip("\ufeff") if line_number == 1 else line)


def check_keys(path: Path, line_number: int, obj: Dict[str, Any]) -> None:
    """Raise DataError if the row object ``obj`` (at ``line_number``) lacks one of the five fields."""
    missing = [field for field in KLIVE_FIELDS if field not in obj]
    if missing:
        raise data_error(path, line_number, missing[0],
                         f"an object with keys {sorted(map(str, obj))} (missing {missing})",
                         f"keys {list(KLIVE_FIELDS)}")


def _detect_object_line(path: Path, line_number: int, stripped: str) -> ShardEncoding:
    """The ``json`` or ``pydict`` encoding of a first line that starts with ``{``; logs extra keys.

    Raises DataError if the line is neither a JSON object nor a Python dict with the five fields.
    """
    obj: Any = None
    kind = None
    try:
        obj = json.loads(stripped)
        kind = "json"
    except json.JSONDecodeError:
        try:
            obj = ast.literal_eval(stripped)
            kind = "pydict"
        except LITERAL_ERRORS:
            pass
    if kind is None or not isinstance(obj, dict):
        raise data_error(path, line_number, "(line)",
                         f"{show_value(stripped)} (neither a JSON object nor a Python dict)", _EXPECTED_ENCODINGS)
    check_keys(path, line_number, obj)
    extra = sorted(str(key) for key in obj if key not in KLIVE_FIELDS)
    if extra:
        logger.info("%s: ignoring extra keys %s (seen on line %d)", path, extra, line_number)
    return ShardEncoding(line=kind, first_line=line_number)


def _detect_header(path: Path, line_number: int, line: str, parts: List[str]) -> ShardEncoding:
    """The ``tsv-header`` encoding of a first line whose tab-separated ``parts`` name the fields.

    Raises DataError if a field is missing or named twice, or no part names a field; logs
    extra columns.
    """
    named = [part for part in parts if part in KLIVE_FIELDS]
    if not named:
        raise data_error(path, line_number, "(line)", show_value(line), _EXPECTED_ENCODINGS)
    missing = [field for field in KLIVE_FIELDS if field not in parts]
    if missing:
        raise data_error(path, line_number, missing[0],
                         f"a header with columns {parts} (missing {missing})",
                         f"a tab-separated header naming all of {list(KLIVE_FIELDS)}")
    repeated = sorted({part for part in parts if parts.count(part) > 1 and part in KLIVE_FIELDS})
    if repeated:
        raise data_error(path, line_number, repeated[0], f"a header naming {repeated[0]!r} twice",
                         "each column named once")
    extra = [part for part in parts if part not in KLIVE_FIELDS]
    if extra:
        logger.info("%s: ignoring extra columns %s", path, extra)
    columns = {field: parts.index(field) for field in KLIVE_FIELDS}
    return ShardEncoding(line="tsv-header", first_line=line_number, columns=columns, n_columns=len(parts))


def detect_line(path: Path, line_number: int, line: str) -> Tuple[ShardEncoding, bool]:
    """The encoding of a shard from its first non-empty ``line``; returns (encoding, is_header).

    ``is_header`` is True when the line is a ``tsv-header`` header (not a data row). Raises
    DataError if the line fits no encoding.
    """
    stripped = line.strip()
    if stripped.startswith("{"):
        return _detect_object_line(path, line_number, stripped), False
    parts = [part.strip() for part in line.split("\t")]
    names_a_field = any(part in KLIVE_FIELDS for part in parts)
    try:
        to_int(parts[0])
        first_is_int = True
    except CONVERSION_ERRORS:
        first_is_int = False
    if names_a_field or not first_is_int:
        return _detect_header(path, line_number, line, parts), True
    if len(parts) == len(KLIVE_FIELDS):
        columns = {field: index for index, field in enumerate(KLIVE_FIELDS)}
        return ShardEncoding(line="tsv", first_line=line_number, columns=columns, n_columns=len(parts)), False
    raise data_error(path, line_number, "(line)", f"{len(parts)} tab-separated field(s) in {show_value(line)}",
                     _EXPECTED_ENCODINGS)


def detect_shard_encoding(path: PathLike, max_lines: int = 1000) -> ShardEncoding:
    """The encoding of a shard, from its first non-empty line(s) (header plus first row).

    Reads at most ``max_lines`` lines of ``path``; for the tsv encodings the vector styles
    come from the first data row (left empty if there is none in reach, or it has the wrong
    number of fields). Raises DataError for a shard without a non-empty line in reach.
    """
    path = Path(path)
    encoding: Optional[ShardEncoding] = None
    with open_text(path) as handle:
        for line_number, line in numbered_lines(handle):
            if line_number > max_lines:
                break
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if encoding is None:
                encoding, is_header = detect_line(path, line_number, line)
                if is_header:
                    continue
            if encoding.line in ("tsv", "tsv-header"):
                parts = line.split("\t")
                if len(parts) == encoding.n_columns:
                    encoding.vector_styles = {field: vector_style(parts[encoding.columns[field]])
                                              for field in VECTOR_FIELDS}
            return encoding
    if encoding is None:
        raise data_error(path, None, "(file)", "no non-empty line", "a shard with at least one row")
    return encoding
