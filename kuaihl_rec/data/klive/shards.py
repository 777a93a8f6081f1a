"""Reading KLive shards line by line into chunks of parsed rows.

:class:`ShardRows` streams each shard, detects its encoding from the first non-empty line,
parses its data lines in chunks (:func:`~kuaihl_rec.data.klive.chunks.parse_chunk`) and keeps,
for every row, the shard file, the 1-based line and the split it came from.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, List, Optional

import numpy as np

from kuaihl_rec.data.klive.chunks import ChunkColumns, VectorSizes, parse_chunk
from kuaihl_rec.data.klive.encoding import (
    ShardEncoding,
    detect_line,
    numbered_lines,
    open_text,
)
from kuaihl_rec.data.klive.errors import data_error
from kuaihl_rec.data.klive.layout import CHUNK_LINES

# The package's logger: every module of the reader logs as "kuaihl_rec.data.klive".
logger = logging.getLogger(__package__)


class ShardRows:
    """The rows of every shard read so far, chunk by chunk, with where each row came from.

    ``chunks[k]`` holds the columns of the k-th chunk; ``file_index[k]`` (into ``files``),
    ``line_number[k]`` and ``split_code[k]`` are arrays with one entry per row of that chunk.
    ``sizes`` holds the vector sizes shared by all shards. ``progress_bar`` (a tqdm bar or
    None) is advanced by the characters of each chunk read.
    """

    def __init__(self, progress_bar: Any = None) -> None:
        self.sizes = VectorSizes()
        self.files: List[Path] = []
        self.chunks: List[ChunkColumns] = []
        self.file_index: List[np.ndarray] = []
        self.line_number: List[np.ndarray] = []
        self.split_code: List[np.ndarray] = []
        self.progress_bar = progress_bar

    def read_shard(self, path: Path, split_code: int) -> int:
        """Read every data line of the shard ``path`` as rows of split ``split_code``; returns the row count.

        Blank lines and a UTF-8 byte-order mark are skipped; the encoding is detected from
        the first non-empty line (and logged). Raises DataError for a line that breaks the
        shard's encoding or bytes that are not UTF-8; logs a warning for an empty shard.
        """
        file_index = len(self.files)
        self.files.append(path)
        encoding: Optional[ShardEncoding] = None
        line_numbers: List[int] = []
        lines: List[str] = []
        n_rows = 0
        line_number = 0
        try:
            with open_text(path) as handle:
                for line_number, line in numbered_lines(handle):
                    line = line.rstrip("\r\n")
                    if not line.strip():
                        continue
                    if encoding is None:
                        encoding, is_header = detect_line(path, line_number, line)
                        logger.info("%s: %s", path, encoding.describe())
                        if is_header:
                            continue
                    line_numbers.append(line_number)
                    lines.append(line)
                    if len(lines) >= CHUNK_LINES:
                        n_rows += self._add_chunk(path, encoding, file_index, split_code, line_numbers, lines)
                        line_numbers, lines = [], []
                n_rows += self._add_chunk(path, encoding, file_index, split_code, line_numbers, lines)
        except UnicodeDecodeError as exc:
            raise data_error(path, line_number + 1, "(line)", f"bytes that are not UTF-8 ({exc.reason})",
                             "UTF-8 text") from exc
        if encoding is None:
            logger.warning("%s: no rows (the shard is empty)", path)
        return n_rows

    def _add_chunk(
        self, path: Path, encoding: Optional[ShardEncoding], file_index: int, split_code: int,
        line_numbers: List[int], lines: List[str],
    ) -> int:
        """Parse ``lines`` (at ``line_numbers``; none when the shard had no data line) and keep the
        rows with their origin; returns the number of rows added."""
        if not lines:
            return 0
        self.chunks.append(parse_chunk(path, encoding, line_numbers, lines, self.sizes))
        self.file_index.append(np.full(len(lines), file_index, dtype=np.int32))
        self.line_number.append(np.asarray(line_numbers, dtype=np.int64))
        self.split_code.append(np.full(len(lines), split_code, dtype=np.int8))
        if self.progress_bar is not None:
            self.progress_bar.update(sum(len(line) + 1 for line in lines))
        return len(lines)
