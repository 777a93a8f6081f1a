"""Reading ``live_id2aid.txt``, the live_id -> author (streamer) id map of a KLive release.

Two integer columns separated by a tab, a comma, a single space or any whitespace (detected
from the first data line), optionally after one header line. A live_id listed twice with
the same id is accepted; with two different ids it is an error.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from kuaihl_rec.data.io import PathLike
from kuaihl_rec.data.klive.encoding import numbered_lines, open_text
from kuaihl_rec.data.klive.errors import data_error, show_value
from kuaihl_rec.data.klive.layout import MAPPING_NAME
from kuaihl_rec.data.klive.scalars import CONVERSION_ERRORS, to_int

# The package's logger: every module of the reader logs as "kuaihl_rec.data.klive".
logger = logging.getLogger(__package__)


def _mapping_separator(line: str) -> Tuple[Optional[str], str]:
    """The separator of a mapping data line and its name; (None, "whitespace") means any whitespace."""
    text = line.strip()
    if "\t" in text:
        return "\t", "tab"
    if "," in text:
        return ",", "comma"
    if len(text.split(" ")) == 2:
        return " ", "space"
    return None, "whitespace"


def _is_header(text: str) -> bool:
    """Whether the first non-empty mapping line is a header: its first token is not an integer."""
    first_token = re.split(r"[\t, ]+", text)[0]
    try:
        to_int(first_token)
    except CONVERSION_ERRORS:
        return True
    return False


def _parse_mapping_line(
    path: Path, line_number: int, text: str, separator: Optional[str], separator_name: str,
) -> Tuple[int, int]:
    """(live_id, aid) from the stripped data line ``text``; raises DataError unless it holds two int64s."""
    parts = text.split(separator) if separator is not None else text.split()
    if len(parts) != 2:
        raise data_error(path, line_number, "(line)",
                         f"{len(parts)} {separator_name}-separated field(s) in {show_value(text)}",
                         f"2 fields 'live_id{separator or ' '}aid' ({separator_name} detected on the first data line)")
    values: List[int] = []
    for name, value in zip(("live_id", "aid"), parts):
        try:
            values.append(to_int(value))
        except CONVERSION_ERRORS:
            raise data_error(path, line_number, name, show_value(value.strip()), "an int64 integer") from None
    return values[0], values[1]


def _read_mapping_lines(path: Path) -> Tuple[Dict[int, Tuple[int, int]], int]:
    """live_id -> (aid, line number of its first listing), and the count of repeated identical lines.

    Logs a header line and the detected separator; raises DataError for a malformed line, a
    live_id mapped to two different ids, or bytes that are not UTF-8.
    """
    mapping: Dict[int, Tuple[int, int]] = {}
    separator: Optional[str] = None
    separator_name: Optional[str] = None
    seen_line = False
    repeats = 0
    line_number = 0
    try:
        with open_text(path) as handle:
            for line_number, line in numbered_lines(handle):
                text = line.strip()
                if not text:
                    continue
                if not seen_line:
                    seen_line = True
                    if _is_header(text):
                        logger.info("%s: line %d is a header: %r", path, line_number, text)
                        continue
                if separator_name is None:
                    separator, separator_name = _mapping_separator(text)
                    logger.info("%s: separator %s (detected from line %d)", path, separator_name, line_number)
                live, aid = _parse_mapping_line(path, line_number, text, separator, separator_name)
                if live in mapping:
                    old_aid, old_line = mapping[live]
                    if old_aid != aid:
                        raise data_error(path, line_number, "aid", f"live_id {live} mapped to {aid} here and to "
                                         f"{old_aid} on line {old_line}", "one streamer per live_id")
                    repeats += 1
                    continue
                mapping[live] = (aid, line_number)
    except UnicodeDecodeError as exc:
        raise data_error(path, line_number + 1, "(line)", f"bytes that are not UTF-8 ({exc.reason})",
                         "UTF-8 text") from exc
    return mapping, repeats


def read_live_id2aid(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """``live_id2aid.txt`` as (live_ids sorted ascending, streamer ids), both int64.

    The separator (tab, comma, single space or any whitespace) is detected from the first
    data line; the first non-empty line may be a header (its first token not an integer).
    Raises DataError for a missing file, a file without data lines, a malformed line or a
    live_id mapped to two different ids.
    """
    path = Path(path)
    if not path.is_file():
        raise data_error(path, None, "(file)", "no such file", f"the live_id -> streamer map {MAPPING_NAME}")
    mapping, repeats = _read_mapping_lines(path)
    if not mapping:
        raise data_error(path, None, "(file)", "no data lines", "lines 'live_id<sep>aid'")
    if repeats:
        logger.info("%s: %d repeated (identical) live_id lines", path, repeats)
    lives = np.fromiter(mapping.keys(), dtype=np.int64, count=len(mapping))
    aids = np.fromiter((entry[0] for entry in mapping.values()), dtype=np.int64, count=len(mapping))
    order = np.argsort(lives, kind="stable")
    return lives[order], aids[order]
