"""Parsing a chunk of KLive shard lines into columns.

A chunk is up to :data:`~kuaihl_rec.data.klive.layout.CHUNK_LINES` data lines of one shard,
all in the shard's encoding. ``json`` chunks go through Arrow's JSON reader with a fixed
schema first; a chunk that fails it (and every ``pydict`` / tsv chunk) is parsed line by line
in Python, with the lenient rules of the package docstring and errors that name the bad value.
:class:`VectorSizes` carries the image / text vector sizes from the first row read to every
later chunk of every shard.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from kuaihl_rec.data.klive.encoding import LITERAL_ERRORS, ShardEncoding, check_keys
from kuaihl_rec.data.klive.errors import data_error, show_value
from kuaihl_rec.data.klive.layout import KLIVE_FIELDS, MAX_SECONDS, VECTOR_FIELDS
from kuaihl_rec.data.klive.scalars import float_column, int_column
from kuaihl_rec.data.klive.vectors import (
    parse_vector_lists,
    parse_vector_texts,
    vector_style,
)

# The package's logger: every module of the reader logs as "kuaihl_rec.data.klive".
logger = logging.getLogger(__package__)

_JSON_SCHEMA = pa.schema([
    ("live_id", pa.int64()),
    ("timestamp", pa.int64()),
    ("lvtr", pa.float64()),
    ("image_feaure", pa.list_(pa.float32())),
    ("text_feaure", pa.list_(pa.float32())),
])


@dataclasses.dataclass
class ChunkColumns:
    """The parsed rows of one chunk: int64 ``live_id`` / ``timestamp``, float32 ``lvtr`` and
    float32 (n, dim) ``image`` / ``text`` vectors."""

    live_id: np.ndarray
    timestamp: np.ndarray
    lvtr: np.ndarray
    image: np.ndarray
    text: np.ndarray


class VectorSizes:
    """The size of each vector field, taken from the first row read, and where it was detected."""

    def __init__(self) -> None:
        self.dims: Dict[str, Optional[int]] = {field: None for field in VECTOR_FIELDS}
        self.references: Dict[str, str] = {}

    def reference(self, field: str, path: Path, first_line: int) -> str:
        """Where the size of ``field`` was detected; before that, the chunk at ``path``/``first_line``."""
        return self.references.get(field, f"{path}, line {first_line}")

    def record(self, field: str, path: Path, line_number: int, dim: int) -> None:
        """Take ``dim`` as the size of ``field`` (detected at ``path``, ``line_number``) unless one is known."""
        if self.dims[field] is None:
            self.dims[field] = dim
            self.references[field] = f"{path}, line {line_number}"


def parse_chunk(
    path: Path, encoding: ShardEncoding, line_numbers: List[int], lines: List[str], sizes: VectorSizes,
) -> ChunkColumns:
    """The columns of a chunk of data ``lines`` (at 1-based ``line_numbers``) of the shard ``path``.

    Reads and updates ``sizes`` (and, for a tsv chunk, the vector styles of ``encoding``);
    raises DataError for any value that breaks the format, an lvtr beyond the float32 range
    or a timestamp that looks like milliseconds.
    """
    columns = _read_json_chunk(path, line_numbers, lines, sizes) if encoding.line == "json" else None
    if columns is None:
        columns = _parse_chunk_in_python(path, encoding, line_numbers, lines, sizes)
    _check_ranges(path, line_numbers, lines, columns)
    return columns


def _parse_chunk_in_python(
    path: Path, encoding: ShardEncoding, line_numbers: List[int], lines: List[str], sizes: VectorSizes,
) -> ChunkColumns:
    """The columns of a chunk parsed line by line in Python (the lenient, error-naming path)."""
    if encoding.line in ("json", "pydict"):
        raw = _split_object_lines(path, encoding, line_numbers, lines)
        image = _vector_lists_column(path, line_numbers, raw["image_feaure"], "image_feaure", sizes)
        text = _vector_lists_column(path, line_numbers, raw["text_feaure"], "text_feaure", sizes)
    else:
        raw = _split_tsv_lines(path, encoding, line_numbers, lines)
        image = _vector_texts_column(path, line_numbers, raw["image_feaure"], "image_feaure", encoding, sizes)
        text = _vector_texts_column(path, line_numbers, raw["text_feaure"], "text_feaure", encoding, sizes)
    live_id = int_column(path, line_numbers, raw["live_id"], "live_id")
    timestamp = int_column(path, line_numbers, raw["timestamp"], "timestamp")
    with np.errstate(over="ignore"):  # overflow becomes inf, reported by _check_ranges
        lvtr = float_column(path, line_numbers, raw["lvtr"], "lvtr").astype(np.float32)
    return ChunkColumns(live_id, timestamp, lvtr, image, text)


def _check_ranges(path: Path, line_numbers: List[int], lines: List[str], columns: ChunkColumns) -> None:
    """Raise DataError for the first lvtr beyond float32 or timestamp that looks like milliseconds."""
    beyond_float32 = np.flatnonzero(~np.isfinite(columns.lvtr))
    if beyond_float32.size:
        row = int(beyond_float32[0])
        raise data_error(path, line_numbers[row], "lvtr", f"a value beyond the float32 range ({lines[row][:80]!r})",
                         "a finite float32")
    milliseconds = np.flatnonzero(np.abs(columns.timestamp) >= MAX_SECONDS)
    if milliseconds.size:
        row = int(milliseconds[0])
        raise data_error(path, line_numbers[row], "timestamp",
                         f"{int(columns.timestamp[row])} (looks like milliseconds)", "unix seconds")


def _read_json_chunk(
    path: Path, line_numbers: List[int], lines: List[str], sizes: VectorSizes,
) -> Optional[ChunkColumns]:
    """A chunk of JSON lines through Arrow's JSON reader; None when the strict Python path must decide.

    Raises DataError only for a vector of the wrong size; records the vector sizes in ``sizes``
    when the whole chunk is read.
    """
    data = ("\n".join(lines) + "\n").encode("utf-8")
    try:
        table = pa_json.read_json(
            pa.BufferReader(data),
            read_options=pa_json.ReadOptions(use_threads=False, block_size=len(data) + 1),
            parse_options=pa_json.ParseOptions(explicit_schema=_JSON_SCHEMA, unexpected_field_behavior="ignore"),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    if table.num_rows != len(lines) or any(column.null_count for column in table.columns):
        return None
    lvtr = table.column("lvtr").to_numpy()
    if not np.isfinite(lvtr).all():
        return None
    vectors = {}
    for field in VECTOR_FIELDS:
        vectors[field] = _json_vector_column(path, line_numbers, table, field, sizes)
        if vectors[field] is None:
            return None
    for field in VECTOR_FIELDS:
        sizes.record(field, path, line_numbers[0], vectors[field].shape[1])
    with np.errstate(over="ignore"):  # overflow becomes inf, reported by _check_ranges
        lvtr32 = lvtr.astype(np.float32)
    return ChunkColumns(table.column("live_id").to_numpy(), table.column("timestamp").to_numpy(),
                        lvtr32, vectors["image_feaure"], vectors["text_feaure"])


def _json_vector_column(
    path: Path, line_numbers: List[int], table: pa.Table, field: str, sizes: VectorSizes,
) -> Optional[np.ndarray]:
    """The list column ``field`` of an Arrow-read JSON chunk as an (n, dim) float32 array.

    None when the Python path must decide (empty vectors, nulls, non-finite values); raises
    DataError for a list whose size differs from the known (or the chunk's first) size.
    """
    column = table.column(field).combine_chunks()
    counts = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    dim = sizes.dims[field] if sizes.dims[field] is not None else int(counts[0])
    if dim == 0:
        return None
    wrong = np.flatnonzero(counts != dim)
    if wrong.size:
        row = int(wrong[0])
        raise data_error(path, line_numbers[row], field, f"a list of {int(counts[row])} values",
                         f"{dim} values (the size detected at {sizes.reference(field, path, line_numbers[0])})")
    flat = column.flatten()
    if flat.null_count:
        return None
    values = flat.to_numpy(zero_copy_only=False)
    if not np.isfinite(values).all():
        return None
    return values.reshape(table.num_rows, dim)


def _split_object_lines(
    path: Path, encoding: ShardEncoding, line_numbers: List[int], lines: List[str],
) -> Dict[str, List[Any]]:
    """Field name -> the values of that field on each JSON / Python-dict line of a chunk.

    Raises DataError for a line that is not an object of the shard's kind or lacks a field.
    """
    objects = []
    for line_number, line in zip(line_numbers, lines):
        text = line.strip()
        try:
            obj = json.loads(text) if encoding.line == "json" else ast.literal_eval(text)
        except LITERAL_ERRORS:
            obj = None
        if not isinstance(obj, dict):
            kind = "a JSON object" if encoding.line == "json" else "a Python dict literal"
            raise data_error(path, line_number, "(line)", show_value(text),
                             f"{kind} like every line ({encoding.describe()})")
        if len(obj) != len(KLIVE_FIELDS) or not all(field in obj for field in KLIVE_FIELDS):
            check_keys(path, line_number, obj)
        objects.append(obj)
    return {field: [obj[field] for obj in objects] for field in KLIVE_FIELDS}


def _split_tsv_lines(
    path: Path, encoding: ShardEncoding, line_numbers: List[int], lines: List[str],
) -> Dict[str, List[str]]:
    """Field name -> the text of that field on each tab-separated line of a chunk.

    Detects the vector styles of ``encoding`` from the first row if they are not known yet
    (and logs them); raises DataError for a line with the wrong number of fields.
    """
    rows = [line.split("\t") for line in lines]
    for index, row in enumerate(rows):
        if len(row) != encoding.n_columns:
            raise data_error(path, line_numbers[index], "(line)",
                             f"{len(row)} tab-separated field(s) in {show_value(lines[index])}",
                             f"{encoding.n_columns} fields like every row ({encoding.describe()})")
    raw = {field: [row[encoding.columns[field]] for row in rows] for field in KLIVE_FIELDS}
    if not encoding.vector_styles:
        encoding.vector_styles = {field: vector_style(raw[field][0]) for field in VECTOR_FIELDS}
        logger.info("%s: %s", path, encoding.describe())
    return raw


def _vector_lists_column(
    path: Path, line_numbers: List[int], values: List[Any], field: str, sizes: VectorSizes,
) -> np.ndarray:
    """The JSON / Python lists of ``field`` as an (n, dim) float32 array; records its size."""
    reference = sizes.reference(field, path, line_numbers[0])
    array = parse_vector_lists(path, line_numbers, values, field, sizes.dims[field], reference)
    sizes.record(field, path, line_numbers[0], array.shape[1])
    return array


def _vector_texts_column(
    path: Path, line_numbers: List[int], values: List[str], field: str, encoding: ShardEncoding,
    sizes: VectorSizes,
) -> np.ndarray:
    """The vector texts of ``field`` (in the style ``encoding`` detected) as an (n, dim) float32
    array; records its size."""
    reference = sizes.reference(field, path, line_numbers[0])
    array = parse_vector_texts(path, line_numbers, values, field, encoding.vector_styles[field],
                               encoding.describe(), sizes.dims[field], reference)
    sizes.record(field, path, line_numbers[0], array.shape[1])
    return array
