"""Reader for the public KLive release (MODEL_SPEC section 8) -> a segment table.

Layout of a release directory ``ROOT``::

    ROOT/live_id2aid.txt                          live_id -> author (streamer) id, both int64
    ROOT/train/0_test_score_infer_output.log      shards; any ``*_test_score_infer_output.log``
    ...                                           is read, other files are ignored (logged)
    ROOT/train/7_test_score_infer_output.log
    ROOT/test/0_test_score_infer_output.log ...

Each shard holds one row per 30 s segment with five fields: ``live_id`` (int64),
``timestamp`` (int64 unix seconds), ``lvtr`` (float), ``image_feaure`` and
``text_feaure`` (float lists; the spelling is the release's).

Line encodings
--------------
The release does not document its line encoding, so every shard is detected on its own
from its first non-empty line(s) and every later line must use the same encoding.
Blank lines are skipped; a UTF-8 byte-order mark is ignored.

=============  ==========================================================================
encoding       what a line looks like
=============  ==========================================================================
``json``       ``{"live_id": 1, "timestamp": 1650000000, "lvtr": 0.3,
               "image_feaure": [0.1, 0.2], "text_feaure": [0.5]}`` -- one JSON object per
               line; vectors are JSON lists of numbers; the scalar fields may also be
               numeric strings (``"0.3"``); extra keys are ignored (logged).
``pydict``     the same object written as a Python literal (``{'live_id': 1, ...}``),
               read with :func:`ast.literal_eval` (slow; only when ``json`` fails).
``tsv-header`` a first line naming the five fields separated by tabs (any order; extra
               columns are ignored, logged), then one tab-separated row per line.
``tsv``        no header: five tab-separated fields in the order
               ``live_id  timestamp  lvtr  image_feaure  text_feaure``.
=============  ==========================================================================

In ``tsv-header`` and ``tsv`` each vector field has one of four styles, detected per field
from the first data row and then required on every row:

=================  ===================================
style              example
=================  ===================================
``comma``          ``0.1,0.2,0.3``  (spaces after commas allowed)
``space``          ``0.1 0.2 0.3``  (any whitespace)
``bracket-comma``  ``[0.1, 0.2, 0.3]``  (a Python-literal list)
``bracket-space``  ``[0.1 0.2 0.3]``  (numpy's print style)
=================  ===================================

Integers may be written as integral floats (``1650000000.0``); every number must be
finite. The image and text vector sizes are taken from the first row read and checked on
every later row of every shard. Anything else raises :class:`~kuaihl_rec.data.io.DataError`
whose message names the file, the 1-based line, the field, what was found and what was
expected.

Output
------
:func:`read_klive` returns ``(table, FeatureSizes)`` in the segment-table contract of
:mod:`kuaihl_rec.data.schema`: ``streamer_id, live_id, segment, timestamp, lvtr, visual,
text, split``. Rooms are rebuilt by sorting on (live_id, timestamp); ``segment`` is
``(timestamp - first_timestamp_of_room) // 30``, so missing segments stay visible as gaps
(for the validator to report). ``visual`` is one token of the image width
(``visual_tokens = 1``). The checks that raise ``DataError``: a live_id absent from
``live_id2aid.txt`` (unless ``unknown_streamer="own_id"``, which maps it to streamer
``-live_id`` with a logged warning), a room in more than one split, a duplicate
(live_id, timestamp), timestamps of a room that are not multiples of 30 s apart, and
timestamps that look like milliseconds. No row is ever dropped.

``live_id2aid.txt`` holds two integer columns separated by a tab, a comma, a single space
or any whitespace (detected from the first data line), optionally after one header line.
A live_id listed twice with the same id is accepted; with two different ids it is an error.

Reading streams each shard in chunks of 4096 lines. The numbers of a chunk are converted
in bulk by Arrow compute kernels (``split_pattern`` / ``ascii_split_whitespace`` and a
string -> float32 cast for tsv vectors; Arrow's JSON reader with a fixed schema for
``json`` chunks). Only a chunk that fails those is re-read value by value in Python, to
apply the lenient rules above (integral floats, numeric strings in JSON) or to name the bad
value. ``progress=True`` shows a tqdm bar over the bytes of all shards.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from kuaihl_rec.data.io import DataError, write_segment_table
from kuaihl_rec.data.schema import SEGMENT_SECONDS, SPLITS, FeatureSizes, arrow_schema

__all__ = [
    "KLIVE_FIELDS",
    "SHARD_GLOB",
    "MAPPING_NAME",
    "ShardEncoding",
    "detect_shard_encoding",
    "read_live_id2aid",
    "read_klive",
    "convert_klive",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

KLIVE_FIELDS: Tuple[str, ...] = ("live_id", "timestamp", "lvtr", "image_feaure", "text_feaure")
VECTOR_FIELDS: Tuple[str, ...] = ("image_feaure", "text_feaure")
SHARD_SUFFIX = "_test_score_infer_output.log"
SHARD_GLOB = "*" + SHARD_SUFFIX
MAPPING_NAME = "live_id2aid.txt"
LINE_ENCODINGS: Tuple[str, ...] = ("json", "pydict", "tsv-header", "tsv")
VECTOR_STYLES: Tuple[str, ...] = ("comma", "space", "bracket-comma", "bracket-space")

# Timestamps at or above this are taken for milliseconds (year ~5138 in seconds).
_MAX_SECONDS = 100_000_000_000
_CHUNK_LINES = 4096
_UNKNOWN_STREAMER_MODES = ("error", "own_id")
_JSON_SCHEMA = pa.schema([
    ("live_id", pa.int64()),
    ("timestamp", pa.int64()),
    ("lvtr", pa.float64()),
    ("image_feaure", pa.list_(pa.float32())),
    ("text_feaure", pa.list_(pa.float32())),
])
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MAX_LIST_VALUES = 2**31 - 1  # int32 offsets of list<float32>: a longer column is split into chunks
_F32_MAX = float(np.finfo(np.float32).max)


# ----------------------------------------------------------------------------- errors


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error(path: PathLike, line: Optional[int], field: str, found: str, expected: str) -> DataError:
    where = f"{path}, line {line}" if line is not None else f"{path}"
    return DataError(f"{where}, field {field!r}: found {found}; expected {expected}")


# ----------------------------------------------------------------------------- scalars


def _to_int(value: Any) -> int:
    """An int64 from an int, an integral float, or their text; raises ValueError/TypeError."""
    if type(value) is int:
        out = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            out = int(text)
        except ValueError:
            number = float(text)
            if not number.is_integer():
                raise ValueError(value) from None
            out = int(number)
    elif isinstance(value, float):
        if not value.is_integer():
            raise ValueError(value)
        out = int(value)
    else:
        raise TypeError(type(value).__name__)
    if not _INT64_MIN <= out <= _INT64_MAX:
        raise OverflowError(value)
    return out


def _to_float(value: Any) -> float:
    if isinstance(value, str):
        out = float(value)
    elif type(value) is int or isinstance(value, float):
        out = float(value)
    else:
        raise TypeError(type(value).__name__)
    if not math.isfinite(out):
        raise ValueError(value)
    return out


# ----------------------------------------------------------------------------- encodings


@dataclasses.dataclass
class ShardEncoding:
    """The encoding detected for one shard.

    ``line``: one of :data:`LINE_ENCODINGS`; ``first_line``: the 1-based line it was
    detected from; ``columns``: field name -> column index (tsv encodings);
    ``n_columns``: tab-separated fields per row (tsv encodings); ``vector_styles``: field ->
    one of :data:`VECTOR_STYLES` (tsv encodings, filled from the first data row).
    """

    line: str
    first_line: int
    columns: Dict[str, int] = dataclasses.field(default_factory=dict)
    n_columns: int = 0
    vector_styles: Dict[str, str] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        text = f"encoding {self.line!r} (detected from line {self.first_line})"
        if self.vector_styles:
            styles = ", ".join(f"{k}={v}" for k, v in self.vector_styles.items())
            text = f"{text[:-1]}; vectors {styles})"
        return text


_EXPECTED_ENCODINGS = (
    "one of: a JSON object per line with keys " + ", ".join(KLIVE_FIELDS) + "; "
    "a Python dict literal per line; a tab-separated header naming those five fields; "
    "five tab-separated fields in that order (live_id an integer)"
)


def _detect_line(path: Path, lineno: int, line: str) -> Tuple[ShardEncoding, bool]:
    """Detect the encoding from the first non-empty line; returns (encoding, is_header)."""
    stripped = line.strip()
    if stripped.startswith("{"):
        obj: Any = None
        kind = None
        try:
            obj = json.loads(stripped)
            kind = "json"
        except json.JSONDecodeError:
            try:
                obj = ast.literal_eval(stripped)
                kind = "pydict"
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                pass
        if kind is None or not isinstance(obj, dict):
            raise _error(path, lineno, "(line)", f"{_show(stripped)} (neither a JSON object nor a Python dict)",
                         _EXPECTED_ENCODINGS)
        _check_keys(path, lineno, obj)
        extra = sorted(str(k) for k in obj if k not in KLIVE_FIELDS)
        if extra:
            logger.info("%s: ignoring extra keys %s (seen on line %d)", path, extra, lineno)
        return ShardEncoding(line=kind, first_line=lineno), False
    parts = [p.strip() for p in line.split("\t")]
    named = [p for p in parts if p in KLIVE_FIELDS]
    first_is_int = True
    try:
        _to_int(parts[0])
    except (ValueError, TypeError, OverflowError):
        first_is_int = False
    if named or not first_is_int:
        if not named:
            raise _error(path, lineno, "(line)", _show(line), _EXPECTED_ENCODINGS)
        missing = [f for f in KLIVE_FIELDS if f not in parts]
        if missing:
            raise _error(path, lineno, missing[0],
                         f"a header with columns {parts} (missing {missing})",
                         f"a tab-separated header naming all of {list(KLIVE_FIELDS)}")
        repeated = sorted({p for p in parts if parts.count(p) > 1 and p in KLIVE_FIELDS})
        if repeated:
            raise _error(path, lineno, repeated[0], f"a header naming {repeated[0]!r} twice",
                         "each column named once")
        extra = [p for p in parts if p not in KLIVE_FIELDS]
        if extra:
            logger.info("%s: ignoring extra columns %s", path, extra)
        columns = {f: parts.index(f) for f in KLIVE_FIELDS}
        return ShardEncoding(line="tsv-header", first_line=lineno, columns=columns, n_columns=len(parts)), True
    if len(parts) == len(KLIVE_FIELDS):
        columns = {f: i for i, f in enumerate(KLIVE_FIELDS)}
        return ShardEncoding(line="tsv", first_line=lineno, columns=columns, n_columns=len(parts)), False
    raise _error(path, lineno, "(line)", f"{len(parts)} tab-separated field(s) in {_show(line)}", _EXPECTED_ENCODINGS)


def _check_keys(path: Path, lineno: int, obj: Dict[str, Any]) -> None:
    missing = [f for f in KLIVE_FIELDS if f not in obj]
    if missing:
        raise _error(path, lineno, missing[0], f"an object with keys {sorted(map(str, obj))} (missing {missing})",
                     f"keys {list(KLIVE_FIELDS)}")


def _vector_style(text: str) -> str:
    text = text.strip()
    bracket = text.startswith("[") and text.endswith("]")
    inner = text[1:-1] if bracket else text
    sep = "comma" if "," in inner else "space"
    return f"bracket-{sep}" if bracket else sep


def detect_shard_encoding(path: PathLike, max_lines: int = 1000) -> ShardEncoding:
    """The encoding of a shard, from its first non-empty line(s) (header plus first row)."""
    path = Path(path)
    enc: Optional[ShardEncoding] = None
    with _open_text(path) as handle:
        for lineno, line in enumerate(handle, 1):
            if lineno > max_lines:
                break
            line = line.rstrip("\r\n").lstrip("\ufeff") if lineno == 1 else line.rstrip("\r\n")
            if not line.strip():
                continue
            if enc is None:
                enc, is_header = _detect_line(path, lineno, line)
                if is_header:
                    continue
            if enc.line in ("tsv", "tsv-header"):
                parts = line.split("\t")
                if len(parts) == enc.n_columns:
                    enc.vector_styles = {f: _vector_style(parts[enc.columns[f]]) for f in VECTOR_FIELDS}
            return enc
    if enc is None:
        raise _error(path, None, "(file)", "no non-empty line", "a shard with at least one row")
    return enc


def _open_text(path: Path):
    return open(path, "r", encoding="utf-8", errors="strict", newline=None)


# ----------------------------------------------------------------------------- vectors


def _parse_vectors_text(
    path: Path, linenos: Sequence[int], texts: Sequence[str], field: str, style: str, enc: ShardEncoding,
    dim: Optional[int], ref: str,
) -> np.ndarray:
    """Parse a chunk of vector texts of one style into an (n, dim) float32 array.

    The split into numbers and the string -> float32 conversion run in Arrow compute
    kernels; a chunk that fails is re-read value by value only to name the bad value.
    """
    bracket = style.startswith("bracket-")
    comma = style.endswith("comma")
    texts = [t.strip() for t in texts]
    mismatch = f"a vector in style {style!r} like every row ({enc.describe()})"
    if bracket:
        for i, t in enumerate(texts):
            if not (t[:1] == "[" and t[-1:] == "]"):
                raise _error(path, linenos[i], field, f"{_show(t)} (no surrounding brackets)", mismatch)
        inner = [t[1:-1].strip() for t in texts]
    else:
        for i, t in enumerate(texts):
            if t[:1] == "[" or t[-1:] == "]":
                raise _error(path, linenos[i], field, f"{_show(t)} (with brackets)", mismatch)
        inner = texts
    if not comma:
        for i, t in enumerate(inner):
            if "," in t:
                raise _error(path, linenos[i], field, f"{_show(texts[i])} (comma-separated)", mismatch)
    if dim is None and not inner[0]:
        raise _error(path, linenos[0], field, f"an empty vector {_show(texts[0])}", "at least one value")
    strings = pa.array(inner, type=pa.string())
    if comma:
        parts = pc.split_pattern(strings, ",")
        tokens = pc.utf8_trim_whitespace(parts.flatten())
    else:
        parts = pc.ascii_split_whitespace(strings)
        tokens = parts.flatten()
    counts = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    if dim is None:
        dim = int(counts[0])
    wrong = np.flatnonzero(counts != dim)
    if wrong.size:
        i = int(wrong[0])
        sep_name = "comma-separated" if comma else "whitespace-separated"
        raise _error(path, linenos[i], field, f"{int(counts[i])} {sep_name} values",
                     f"{dim} values (the size detected at {ref})")
    try:
        values = pc.cast(tokens, pa.float32()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = None
    if values is None or not np.isfinite(values).all():
        _locate_bad_number(path, linenos, inner, field, comma)
        raise _error(path, linenos[0], field, "values that could not be read", "finite floats")
    return values.reshape(len(inner), dim)


def _locate_bad_number(path: Path, linenos: Sequence[int], inner: Sequence[str], field: str, comma: bool) -> None:
    """Raise DataError for the first value of a chunk that is not a finite float."""
    for i, s in enumerate(inner):
        tokens = [t.strip() for t in (s.split(",") if comma else s.split())] or [""]
        try:
            ok = np.isfinite(pc.cast(pa.array(tokens, type=pa.string()), pa.float32()).to_numpy(zero_copy_only=False))
            bad = [int(np.flatnonzero(~ok)[0])] if not ok.all() else []
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            bad = []
            for k, tok in enumerate(tokens):
                try:
                    pc.cast(pa.array([tok], type=pa.string()), pa.float32())
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    bad = [k]
                    break
        if bad:
            k = bad[0]
            raise _error(path, linenos[i], field, f"{_show(tokens[k])} at position {k}", "a finite float")


def _parse_vectors_lists(
    path: Path, linenos: Sequence[int], values: Sequence[Any], field: str, dim: Optional[int], ref: str,
) -> np.ndarray:
    """Parse a chunk of JSON / Python lists into an (n, dim) float32 array."""
    for i, v in enumerate(values):
        if type(v) is not list:
            raise _error(path, linenos[i], field, f"{type(v).__name__} {_show(v)}", "a list of numbers")
    if dim is None:
        dim = len(values[0])
        if dim == 0:
            raise _error(path, linenos[0], field, "an empty list", "at least one value")
    for i, v in enumerate(values):
        if len(v) != dim:
            raise _error(path, linenos[i], field, f"a list of {len(v)} values",
                         f"{dim} values (the size detected at {ref})")
    try:
        arr = np.array(values)
    except (ValueError, TypeError, OverflowError):
        arr = None
    if (arr is None or arr.ndim != 2 or arr.dtype.kind not in "fiu"
            or not (np.abs(arr.astype(np.float64)) <= _F32_MAX).all()):
        for i, v in enumerate(values):
            for k, x in enumerate(v):
                numeric = type(x) is int or isinstance(x, float)
                if not (numeric and abs(float(x)) <= _F32_MAX):
                    raise _error(path, linenos[i], field, f"{_show(x)} at position {k}", "a finite float32 number")
        raise _error(path, linenos[0], field, "values numpy could not convert", "lists of finite numbers")
    return arr.astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- chunks


def _scalar_column(path: Path, linenos: Sequence[int], values: Sequence[Any], field: str, convert, dtype, what: str) -> np.ndarray:
    """``values`` converted by ``convert`` into a ``dtype`` array; the first bad value is reported
    with its line (``what`` names the expected kind, e.g. "an int64 integer")."""
    try:
        return np.fromiter((convert(v) for v in values), dtype=dtype, count=len(values))
    except (ValueError, TypeError, OverflowError):
        pass
    for ln, v in zip(linenos, values):
        try:
            convert(v)
        except (ValueError, TypeError, OverflowError):
            raise _error(path, ln, field, _show(v), what) from None
    raise _error(path, linenos[0], field, "values that could not be read", what)


def _int_column(path: Path, linenos: Sequence[int], values: Sequence[Any], field: str) -> np.ndarray:
    return _scalar_column(path, linenos, values, field, _to_int, np.int64, "an int64 integer")


def _float_column(path: Path, linenos: Sequence[int], values: Sequence[Any], field: str) -> np.ndarray:
    return _scalar_column(path, linenos, values, field, _to_float, np.float64, "a finite float")


@dataclasses.dataclass
class _Columns:
    live_id: np.ndarray
    timestamp: np.ndarray
    lvtr: np.ndarray
    image: np.ndarray
    text: np.ndarray


class _KLiveReader:
    """Accumulates the rows of all shards; holds the vector sizes and where they were detected."""

    def __init__(self, bar: Any = None) -> None:
        self.dims: Dict[str, Optional[int]] = {f: None for f in VECTOR_FIELDS}
        self.refs: Dict[str, str] = {}
        self.files: List[Path] = []
        self.parts: List[_Columns] = []
        self.file_idx: List[np.ndarray] = []
        self.line_no: List[np.ndarray] = []
        self.split_code: List[np.ndarray] = []
        self.encodings: Dict[str, str] = {}
        self.bar = bar

    # -- one shard
    def read_shard(self, path: Path, split_code: int) -> int:
        file_index = len(self.files)
        self.files.append(path)
        enc: Optional[ShardEncoding] = None
        linenos: List[int] = []
        lines: List[str] = []
        n_rows = 0

        def flush() -> None:
            nonlocal n_rows
            if not lines:
                return
            cols = self._parse_chunk(path, enc, linenos, lines)
            self.parts.append(cols)
            self.file_idx.append(np.full(len(lines), file_index, dtype=np.int32))
            self.line_no.append(np.asarray(linenos, dtype=np.int64))
            self.split_code.append(np.full(len(lines), split_code, dtype=np.int8))
            n_rows += len(lines)
            if self.bar is not None:
                self.bar.update(sum(len(s) + 1 for s in lines))
            linenos.clear()
            lines.clear()

        lineno = 0
        try:
            with _open_text(path) as handle:
                for lineno, line in enumerate(handle, 1):
                    if lineno == 1:
                        line = line.lstrip("\ufeff")
                    line = line.rstrip("\r\n")
                    if not line.strip():
                        continue
                    if enc is None:
                        enc, is_header = _detect_line(path, lineno, line)
                        logger.info("%s: %s", path, enc.describe())
                        if is_header:
                            continue
                    linenos.append(lineno)
                    lines.append(line)
                    if len(lines) >= _CHUNK_LINES:
                        flush()
                flush()
        except UnicodeDecodeError as exc:
            raise _error(path, lineno + 1, "(line)", f"bytes that are not UTF-8 ({exc.reason})", "UTF-8 text") from exc
        if enc is None:
            logger.warning("%s: no rows (the shard is empty)", path)
        else:
            self.encodings[str(path)] = enc.describe()
        return n_rows

    def _parse_chunk(self, path: Path, enc: ShardEncoding, linenos: List[int], lines: List[str]) -> _Columns:
        cols = self._json_fast(path, linenos, lines) if enc.line == "json" else None
        if cols is None:
            if enc.line in ("json", "pydict"):
                raw = self._objects(path, enc, linenos, lines)
                image = self._lists(path, linenos, raw["image_feaure"], "image_feaure")
                text = self._lists(path, linenos, raw["text_feaure"], "text_feaure")
            else:
                raw = self._tsv_fields(path, enc, linenos, lines)
                image = self._texts(path, linenos, raw["image_feaure"], "image_feaure", enc)
                text = self._texts(path, linenos, raw["text_feaure"], "text_feaure", enc)
            live = _int_column(path, linenos, raw["live_id"], "live_id")
            ts = _int_column(path, linenos, raw["timestamp"], "timestamp")
            with np.errstate(over="ignore"):  # overflow becomes inf, reported below
                lvtr = _float_column(path, linenos, raw["lvtr"], "lvtr").astype(np.float32)
            cols = _Columns(live, ts, lvtr, image, text)
        wild = np.flatnonzero(~np.isfinite(cols.lvtr))
        if wild.size:
            i = int(wild[0])
            raise _error(path, linenos[i], "lvtr", f"a value beyond the float32 range ({lines[i][:80]!r})",
                         "a finite float32")
        big = np.flatnonzero(np.abs(cols.timestamp) >= _MAX_SECONDS)
        if big.size:
            i = int(big[0])
            raise _error(path, linenos[i], "timestamp", f"{int(cols.timestamp[i])} (looks like milliseconds)",
                         "unix seconds")
        return cols

    def _json_fast(self, path: Path, linenos: List[int], lines: List[str]) -> Optional[_Columns]:
        """A chunk of JSON lines through Arrow's JSON reader; None when the strict Python path must decide."""
        data = ("\n".join(lines) + "\n").encode("utf-8")
        try:
            table = pa_json.read_json(
                pa.BufferReader(data),
                read_options=pa_json.ReadOptions(use_threads=False, block_size=len(data) + 1),
                parse_options=pa_json.ParseOptions(explicit_schema=_JSON_SCHEMA, unexpected_field_behavior="ignore"),
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return None
        if table.num_rows != len(lines) or any(c.null_count for c in table.columns):
            return None
        lvtr = table.column("lvtr").to_numpy()
        if not np.isfinite(lvtr).all():
            return None
        vectors = {}
        for field in VECTOR_FIELDS:
            col = table.column(field).combine_chunks()
            counts = pc.list_value_length(col).to_numpy(zero_copy_only=False)
            dim = self.dims[field] if self.dims[field] is not None else int(counts[0])
            if dim == 0:
                return None
            wrong = np.flatnonzero(counts != dim)
            if wrong.size:
                i = int(wrong[0])
                ref = self.refs.get(field, f"{path}, line {linenos[0]}")
                raise _error(path, linenos[i], field, f"a list of {int(counts[i])} values",
                             f"{dim} values (the size detected at {ref})")
            flat = col.flatten()
            if flat.null_count:
                return None
            values = flat.to_numpy(zero_copy_only=False)
            if not np.isfinite(values).all():
                return None
            vectors[field] = values.reshape(len(lines), dim)
        for field in VECTOR_FIELDS:
            self._ref(field, path, linenos[0], vectors[field].shape[1])
        with np.errstate(over="ignore"):  # overflow becomes inf, reported by _parse_chunk
            lvtr32 = lvtr.astype(np.float32)
        return _Columns(table.column("live_id").to_numpy(), table.column("timestamp").to_numpy(),
                        lvtr32, vectors["image_feaure"], vectors["text_feaure"])

    def _objects(self, path: Path, enc: ShardEncoding, linenos: List[int], lines: List[str]) -> Dict[str, List[Any]]:
        objs = []
        for ln, line in zip(linenos, lines):
            text = line.strip()
            try:
                obj = json.loads(text) if enc.line == "json" else ast.literal_eval(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                obj = None
            if not isinstance(obj, dict):
                what = "a JSON object" if enc.line == "json" else "a Python dict literal"
                raise _error(path, ln, "(line)", _show(text), f"{what} like every line ({enc.describe()})")
            if len(obj) != len(KLIVE_FIELDS) or not all(f in obj for f in KLIVE_FIELDS):
                _check_keys(path, ln, obj)
            objs.append(obj)
        return {f: [o[f] for o in objs] for f in KLIVE_FIELDS}

    def _tsv_fields(self, path: Path, enc: ShardEncoding, linenos: List[int], lines: List[str]) -> Dict[str, List[str]]:
        rows = [line.split("\t") for line in lines]
        for i, row in enumerate(rows):
            if len(row) != enc.n_columns:
                raise _error(path, linenos[i], "(line)", f"{len(row)} tab-separated field(s) in {_show(lines[i])}",
                             f"{enc.n_columns} fields like every row ({enc.describe()})")
        raw = {f: [row[enc.columns[f]] for row in rows] for f in KLIVE_FIELDS}
        if not enc.vector_styles:
            enc.vector_styles = {f: _vector_style(raw[f][0]) for f in VECTOR_FIELDS}
            logger.info("%s: %s", path, enc.describe())
        return raw

    def _ref(self, field: str, path: Path, lineno: int, dim: int) -> None:
        if self.dims[field] is None:
            self.dims[field] = dim
            self.refs[field] = f"{path}, line {lineno}"

    def _lists(self, path: Path, linenos: List[int], values: List[Any], field: str) -> np.ndarray:
        ref = self.refs.get(field, f"{path}, line {linenos[0]}")
        arr = _parse_vectors_lists(path, linenos, values, field, self.dims[field], ref)
        self._ref(field, path, linenos[0], arr.shape[1])
        return arr

    def _texts(self, path: Path, linenos: List[int], values: List[str], field: str, enc: ShardEncoding) -> np.ndarray:
        ref = self.refs.get(field, f"{path}, line {linenos[0]}")
        arr = _parse_vectors_text(path, linenos, values, field, enc.vector_styles[field], enc, self.dims[field], ref)
        self._ref(field, path, linenos[0], arr.shape[1])
        return arr

    def where(self, row_file: np.ndarray, row_line: np.ndarray, i: int) -> str:
        return f"{self.files[int(row_file[i])]}, line {int(row_line[i])}"


# ----------------------------------------------------------------------------- live_id2aid


def _mapping_separator(line: str) -> Tuple[Optional[str], str]:
    text = line.strip()
    if "\t" in text:
        return "\t", "tab"
    if "," in text:
        return ",", "comma"
    if len(text.split(" ")) == 2:
        return " ", "space"
    return None, "whitespace"


def read_live_id2aid(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """``live_id2aid.txt`` as (live_ids sorted ascending, streamer ids), both int64.

    The separator (tab, comma, single space or any whitespace) is detected from the first
    data line; the first non-empty line may be a header (its first token not an integer).
    """
    path = Path(path)
    if not path.is_file():
        raise _error(path, None, "(file)", "no such file", f"the live_id -> streamer map {MAPPING_NAME}")
    mapping: Dict[int, Tuple[int, int]] = {}
    sep: Optional[str] = None
    sep_name: Optional[str] = None
    seen_line = False
    repeats = 0
    lineno = 0
    try:
        with _open_text(path) as handle:
            for lineno, line in enumerate(handle, 1):
                if lineno == 1:
                    line = line.lstrip("\ufeff")
                text = line.strip()
                if not text:
                    continue
                if not seen_line:
                    seen_line = True
                    first = re.split(r"[\t, ]+", text)[0]
                    try:
                        _to_int(first)
                    except (ValueError, TypeError, OverflowError):
                        logger.info("%s: line %d is a header: %r", path, lineno, text)
                        continue
                if sep_name is None:
                    sep, sep_name = _mapping_separator(text)
                    logger.info("%s: separator %s (detected from line %d)", path, sep_name, lineno)
                parts = text.split(sep) if sep is not None else text.split()
                if len(parts) != 2:
                    raise _error(path, lineno, "(line)", f"{len(parts)} {sep_name}-separated field(s) in {_show(text)}",
                                 f"2 fields 'live_id{sep or ' '}aid' ({sep_name} detected on the first data line)")
                values = []
                for name, value in zip(("live_id", "aid"), parts):
                    try:
                        values.append(_to_int(value))
                    except (ValueError, TypeError, OverflowError):
                        raise _error(path, lineno, name, _show(value.strip()), "an int64 integer") from None
                live, aid = values
                if live in mapping:
                    old_aid, old_line = mapping[live]
                    if old_aid != aid:
                        raise _error(path, lineno, "aid", f"live_id {live} mapped to {aid} here and to {old_aid} "
                                     f"on line {old_line}", "one streamer per live_id")
                    repeats += 1
                    continue
                mapping[live] = (aid, lineno)
    except UnicodeDecodeError as exc:
        raise _error(path, lineno + 1, "(line)", f"bytes that are not UTF-8 ({exc.reason})", "UTF-8 text") from exc
    if not mapping:
        raise _error(path, None, "(file)", "no data lines", "lines 'live_id<sep>aid'")
    if repeats:
        logger.info("%s: %d repeated (identical) live_id lines", path, repeats)
    lives = np.fromiter(mapping.keys(), dtype=np.int64, count=len(mapping))
    aids = np.fromiter((v[0] for v in mapping.values()), dtype=np.int64, count=len(mapping))
    order = np.argsort(lives, kind="stable")
    return lives[order], aids[order]


# ----------------------------------------------------------------------------- shards


def _shard_key(path: Path) -> Tuple[int, int, str]:
    prefix = path.name[: -len(SHARD_SUFFIX)]
    return (0, int(prefix), path.name) if prefix.isdigit() else (1, 0, path.name)


def _list_shards(split_dir: Path) -> List[Path]:
    if not split_dir.is_dir():
        raise _error(split_dir, None, "(directory)", "no such directory",
                     f"a split directory holding {SHARD_GLOB} shards")
    shards, ignored = [], []
    for entry in split_dir.iterdir():
        if entry.is_file() and entry.name.endswith(SHARD_SUFFIX) and len(entry.name) > len(SHARD_SUFFIX):
            shards.append(entry)
        else:
            ignored.append(entry.name)
    if ignored:
        logger.info("%s: ignoring %d entries that are not %s shards: %s", split_dir, len(ignored), SHARD_GLOB,
                    ", ".join(sorted(ignored)[:10]) + (" ..." if len(ignored) > 10 else ""))
    if not shards:
        raise _error(split_dir, None, "(directory)", "no shard files" + (f" (only {sorted(ignored)[:5]})" if ignored
                                                                           else " (empty directory)"),
                     f"one or more {SHARD_GLOB} files")
    return sorted(shards, key=_shard_key)


# ----------------------------------------------------------------------------- table


def _list_column(values: np.ndarray) -> pa.ChunkedArray:
    """An (n, d) float32 array as list<float32>, in chunks whose int32 offsets cannot overflow."""
    n, d = values.shape
    flat = np.ascontiguousarray(values).reshape(-1)
    rows_per_chunk = max(1, _MAX_LIST_VALUES // max(d, 1))
    chunks = []
    for lo in range(0, n, rows_per_chunk):
        hi = min(n, lo + rows_per_chunk)
        offsets = pa.array(np.arange(0, (hi - lo) * d + 1, d, dtype=np.int32) if d else np.zeros(hi - lo + 1, np.int32))
        chunks.append(pa.ListArray.from_arrays(offsets, pa.array(flat[lo * d: hi * d], type=pa.float32())))
    return pa.chunked_array(chunks, type=pa.list_(pa.float32()))


def read_klive(
    root: PathLike,
    splits: Sequence[str] = ("train", "test"),
    progress: bool = False,
    unknown_streamer: str = "error",
) -> Tuple[pa.Table, FeatureSizes]:
    """Read a KLive release directory into a segment table (see the module docstring).

    ``splits``: the sub-directories to read; each names the ``split`` column of its rows.
    ``unknown_streamer``: ``"error"`` (a live_id missing from ``live_id2aid.txt`` raises
    DataError naming the first few) or ``"own_id"`` (such a room gets streamer ``-live_id``,
    with a logged warning). Returns ``(table sorted by (live_id, segment), FeatureSizes(1,
    image size, text size))``.
    """
    if unknown_streamer not in _UNKNOWN_STREAMER_MODES:
        raise ValueError(f"unknown_streamer must be one of {_UNKNOWN_STREAMER_MODES}, got {unknown_streamer!r}")
    if isinstance(splits, str):
        splits = (splits,)
    splits = tuple(splits)
    if not splits:
        raise ValueError("splits must name at least one split directory")
    bad = [s for s in splits if s not in SPLITS]
    if bad or len(set(splits)) != len(splits):
        raise ValueError(f"splits must be distinct names among {SPLITS}, got {splits}")
    root = Path(root)
    if not root.is_dir():
        raise _error(root, None, "(directory)", "no such directory", f"a KLive release directory with {MAPPING_NAME}")
    map_lives, map_aids = read_live_id2aid(root / MAPPING_NAME)
    shards = {split: _list_shards(root / split) for split in splits}

    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - tqdm is a dependency
            logger.warning("progress=True but tqdm is not installed; reading without a progress bar")
        else:
            total = sum(p.stat().st_size for paths in shards.values() for p in paths)
            bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"reading KLive {root.name}")
    reader = _KLiveReader(bar)
    try:
        for code, split in enumerate(splits):
            n_split = 0
            for path in shards[split]:
                n = reader.read_shard(path, code)
                logger.info("%s: %d rows", path, n)
                n_split += n
            if n_split == 0:
                raise _error(root / split, None, "(directory)", f"{len(shards[split])} shard(s) with no rows",
                             "at least one row per split")
    finally:
        if bar is not None:
            bar.close()

    live = np.concatenate([p.live_id for p in reader.parts])
    ts = np.concatenate([p.timestamp for p in reader.parts])
    lvtr = np.concatenate([p.lvtr for p in reader.parts])
    row_file = np.concatenate(reader.file_idx)
    row_line = np.concatenate(reader.line_no)
    split_code = np.concatenate(reader.split_code)

    order = np.lexsort((ts, live))
    live, ts, lvtr = live[order], ts[order], lvtr[order]
    row_file, row_line, split_code = row_file[order], row_line[order], split_code[order]
    n = len(live)
    room_start = np.r_[True, live[1:] != live[:-1]]
    starts = np.flatnonzero(room_start)
    room_of_row = np.cumsum(room_start) - 1

    # A room belongs to one split.
    lo = np.minimum.reduceat(split_code, starts)
    hi = np.maximum.reduceat(split_code, starts)
    mixed = np.flatnonzero(lo != hi)
    if mixed.size:
        r = int(mixed[0])
        rows = np.arange(starts[r], starts[r + 1] if r + 1 < len(starts) else n)
        a = int(rows[split_code[rows] == lo[r]][0])
        b = int(rows[split_code[rows] == hi[r]][0])
        raise DataError(
            f"{reader.where(row_file, row_line, b)}, field 'live_id': found room {int(live[a])} in split "
            f"{splits[int(hi[r])]!r} and also in {splits[int(lo[r])]!r} ({reader.where(row_file, row_line, a)}); "
            f"expected each room in one split only ({mixed.size} room(s) in several splits)")

    # live_id -> streamer.
    pos = np.searchsorted(map_lives, live)
    pos_c = np.minimum(pos, max(len(map_lives) - 1, 0))
    known = map_lives[pos_c] == live
    streamer = np.where(known, map_aids[pos_c], -live)
    if not known.all():
        unknown_rooms = np.unique(live[~known])
        first_row = int(np.flatnonzero(~known)[0])
        shown = ", ".join(str(int(x)) for x in unknown_rooms[:5]) + (" ..." if unknown_rooms.size > 5 else "")
        if unknown_streamer == "error":
            raise DataError(
                f"{reader.where(row_file, row_line, first_row)}, field 'live_id': found {unknown_rooms.size} "
                f"live_id(s) ({int((~known).sum())} rows) not in {root / MAPPING_NAME}: {shown}; expected every "
                f"live_id to be mapped to a streamer (or unknown_streamer='own_id')")
        logger.warning("%d live_id(s) (%d rows) are not in %s (%s); each gets its own streamer id -live_id",
                       unknown_rooms.size, int((~known).sum()), root / MAPPING_NAME, shown)

    # Duplicate (live_id, timestamp).
    dup = np.flatnonzero(~room_start[1:] & (ts[1:] == ts[:-1]))
    if dup.size:
        i = int(dup[0])
        a, b = sorted((i, i + 1), key=lambda k: (int(row_file[k]), int(row_line[k])))
        raise DataError(
            f"{reader.where(row_file, row_line, b)}, field 'timestamp': found a duplicate of "
            f"{reader.where(row_file, row_line, a)} (live_id {int(live[i])}, timestamp {int(ts[i])}); expected one "
            f"row per (live_id, timestamp) ({dup.size} duplicate(s) in all)")

    # Segments on the 30 s grid of each room.
    offset = ts - ts[starts][room_of_row]
    off_grid = np.flatnonzero(offset % SEGMENT_SECONDS != 0)
    if off_grid.size:
        i = int(off_grid[0])
        first = int(starts[room_of_row[i]])
        n_rooms = np.unique(room_of_row[off_grid]).size
        raise DataError(
            f"{reader.where(row_file, row_line, i)}, field 'timestamp': found timestamp {int(ts[i])} in room "
            f"(live_id) {int(live[i])}, {int(offset[i])} s after its first timestamp {int(ts[first])} "
            f"({reader.where(row_file, row_line, first)}); expected a multiple of {SEGMENT_SECONDS} s "
            f"({n_rooms} room(s) off the grid)")
    segment = offset // SEGMENT_SECONDS
    if segment.size and segment.max() > np.iinfo(np.int32).max:
        i = int(np.argmax(segment))
        raise _error(reader.files[int(row_file[i])], int(row_line[i]), "timestamp",
                     f"segment {int(segment[i])} of room {int(live[i])}", "a segment index that fits int32")

    sizes = FeatureSizes(visual_tokens=1, visual_dim=int(reader.dims["image_feaure"]),
                         text_dim=int(reader.dims["text_feaure"]))
    image = np.concatenate([p.image for p in reader.parts])[order]
    text_vec = np.concatenate([p.text for p in reader.parts])[order]
    reader.parts.clear()
    split_names = np.array(splits, dtype=object)
    columns = {
        "streamer_id": pa.array(streamer, type=pa.int64()),
        "live_id": pa.array(live, type=pa.int64()),
        "segment": pa.array(segment.astype(np.int32), type=pa.int32()),
        "timestamp": pa.array(ts, type=pa.int64()),
        "lvtr": pa.array(lvtr, type=pa.float32()),
        "visual": _list_column(image),
        "text": _list_column(text_vec),
        "split": pa.array(split_names[split_code], type=pa.string()),
    }
    schema = arrow_schema(columns)
    table = pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
    logger.info("KLive %s: %d rows, %d rooms, %d streamers, sizes %s", root, n, len(starts),
                np.unique(streamer).size, sizes)
    return table, sizes


def convert_klive(
    root: PathLike,
    out_dir: PathLike,
    splits: Sequence[str] = ("train", "test"),
    progress: bool = False,
    unknown_streamer: str = "error",
    rows_per_file: int = 250_000,
) -> Path:
    """Read a KLive release with :func:`read_klive` and write it as a segment table in ``out_dir``."""
    table, sizes = read_klive(root, splits=splits, progress=progress, unknown_streamer=unknown_streamer)
    return write_segment_table(table, out_dir, sizes, rows_per_file=rows_per_file,
                               extra={"source": "klive", "root": str(root)})
