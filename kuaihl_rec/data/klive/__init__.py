"""Reader for the public KLive release (docs/MODEL.md section 8) -> a segment table.

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
``(timestamp - first_timestamp_of_room) // 30``, so missing segments stay visible as gaps:
the reader logs a warning naming the shard and line of the first gap, and the segment-table
validator refuses the converted table (``segment_gap``, naming file, row and field) -- the
reader never renumbers rows over a gap, which would silently make a "next" segment minutes
later. ``visual`` is one token of the image width
(``visual_tokens = 1``). The checks that raise ``DataError``: an ``lvtr`` outside [0, 1]
(a rate; the first such line in reading order is named), a live_id absent from
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

Modules
-------
``layout`` field / file names and limits; ``errors`` the wording of DataError messages;
``scalars`` int / float fields; ``vectors`` vector styles and parsing; ``encoding`` line-encoding
detection; ``chunks`` a chunk of lines -> columns; ``shards`` a shard -> chunks; ``mapping``
``live_id2aid.txt``; ``release`` the files of a release directory; ``rooms`` sorting and
checking the rows; ``table`` the Arrow segment table. This module holds the entry points.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
import pyarrow as pa

# DataError, LINE_ENCODINGS, SHARD_SUFFIX, VECTOR_FIELDS and VECTOR_STYLES are unused here but stay
# importable from this module, as they were before it became a package.
from kuaihl_rec.data.io import DataError, PathLike, write_segment_table  # noqa: F401
from kuaihl_rec.data.klive.encoding import ShardEncoding, detect_shard_encoding
from kuaihl_rec.data.klive.layout import (  # noqa: F401
    KLIVE_FIELDS,
    LINE_ENCODINGS,
    MAPPING_NAME,
    SHARD_GLOB,
    SHARD_SUFFIX,
    VECTOR_FIELDS,
    VECTOR_STYLES,
)
from kuaihl_rec.data.klive.mapping import read_live_id2aid
from kuaihl_rec.data.klive.release import discover_release, read_release_rows
from kuaihl_rec.data.klive.rooms import (
    UNKNOWN_STREAMER_MODES,
    check_lvtr_range,
    check_one_split_per_room,
    check_unique_timestamps,
    log_segment_gaps,
    map_streamers,
    segment_indices,
    sort_rows,
)
from kuaihl_rec.data.klive.table import (
    MAX_LIST_VALUES,
    assemble_table,
    feature_sizes,
    take_sorted_vectors,
)
from kuaihl_rec.data.schema import SPLITS, FeatureSizes

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

# Floats per chunk of a vector column; read by read_klive at call time, so it can be lowered
# here (tests do, to exercise the chunking).
_MAX_LIST_VALUES = MAX_LIST_VALUES


def _checked_splits(splits: Sequence[str], unknown_streamer: str) -> Tuple[str, ...]:
    """``splits`` as a tuple (a single name allowed); raises ValueError for a bad argument of read_klive."""
    if unknown_streamer not in UNKNOWN_STREAMER_MODES:
        raise ValueError(f"unknown_streamer must be one of {UNKNOWN_STREAMER_MODES}, got {unknown_streamer!r}")
    if isinstance(splits, str):
        splits = (splits,)
    splits = tuple(splits)
    if not splits:
        raise ValueError("splits must name at least one split directory")
    unknown_splits = [split for split in splits if split not in SPLITS]
    if unknown_splits or len(set(splits)) != len(splits):
        raise ValueError(f"splits must be distinct names among {SPLITS}, got {splits}")
    return splits


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
    image size, text size))``. Raises ValueError for bad arguments, DataError for a bad release.
    """
    splits = _checked_splits(splits, unknown_streamer)
    root = Path(root)
    release = discover_release(root, splits)
    shard_rows = read_release_rows(release, progress)
    rows = sort_rows(shard_rows)
    check_lvtr_range(rows)
    check_one_split_per_room(rows, splits)
    streamer = map_streamers(rows, release, unknown_streamer)
    check_unique_timestamps(rows)
    segment = segment_indices(rows)
    log_segment_gaps(rows, segment)
    sizes = feature_sizes(shard_rows)
    image, text = take_sorted_vectors(shard_rows, rows.order)
    table = assemble_table(rows, streamer, segment, image, text, splits, max_list_values=_MAX_LIST_VALUES)
    logger.info("KLive %s: %d rows, %d rooms, %d streamers, sizes %s", root, len(rows.live_id),
                len(rows.room_starts), np.unique(streamer).size, sizes)
    return table, sizes


def convert_klive(
    root: PathLike,
    out_dir: PathLike,
    splits: Sequence[str] = ("train", "test"),
    progress: bool = False,
    unknown_streamer: str = "error",
    rows_per_file: int = 250_000,
) -> Path:
    """Read a KLive release with :func:`read_klive` and write it as a segment table in ``out_dir``.

    Returns the path :func:`~kuaihl_rec.data.io.write_segment_table` wrote to.
    """
    table, sizes = read_klive(root, splits=splits, progress=progress, unknown_streamer=unknown_streamer)
    return write_segment_table(table, out_dir, sizes, rows_per_file=rows_per_file,
                               extra={"source": "klive", "root": str(root)})
