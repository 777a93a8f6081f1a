"""Rebuilding the rooms of a KLive release and checking them.

:func:`sort_rows` puts the rows of all shards in (live_id, timestamp) order, so that each
room (live_id) is a run of rows. The checks then raise DataError for an LVTR outside [0, 1],
a room in more than one split, a duplicate (live_id, timestamp) and timestamps off the room's
30 s grid; :func:`map_streamers` gives each row its streamer and :func:`segment_indices` its
segment. Every message names the shard and line of the rows involved.

Gaps: two rows of a room more than 30 s apart (on the grid, e.g. 90 s) mean the release lacks
the segments between them. The reader neither refuses the release nor renumbers the rows to hide
the gap: ``segment`` stays ``(timestamp - first) // 30``, so the missing numbers are visible, each
gap is logged (a warning naming the shard and line of the first), and the segment-table
validator refuses the table (``segment_gap``) until the gap is dealt with. Renumbering would make
a segment minutes later than the model's "next 30 s" without any trace of it.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import List, Sequence

import numpy as np

from kuaihl_rec.data.io import DataError
from kuaihl_rec.data.klive.errors import data_error
from kuaihl_rec.data.klive.release import Release
from kuaihl_rec.data.klive.shards import ShardRows
from kuaihl_rec.data.schema import SEGMENT_SECONDS

# The package's logger: every module of the reader logs as "kuaihl_rec.data.klive".
logger = logging.getLogger(__package__)

UNKNOWN_STREAMER_MODES = ("error", "own_id")


@dataclasses.dataclass
class SortedRows:
    """The scalar columns of all rows in (live_id, timestamp) order, with where each row came from.

    ``order``: the permutation applied to the rows in reading order; ``file_index`` (into
    ``files``), ``line_number``, ``split_code``: per row; ``room_start``: True on the first row
    of each room; ``room_starts``: the indices of those rows; ``room_of_row``: each row's room.
    """

    order: np.ndarray
    live_id: np.ndarray
    timestamp: np.ndarray
    lvtr: np.ndarray
    file_index: np.ndarray
    line_number: np.ndarray
    split_code: np.ndarray
    room_start: np.ndarray
    room_starts: np.ndarray
    room_of_row: np.ndarray
    files: List[Path]

    def where(self, row: int) -> str:
        """``"<shard path>, line <n>"`` for sorted row ``row``, to start an error message."""
        return f"{self.files[int(self.file_index[row])]}, line {int(self.line_number[row])}"


def sort_rows(shard_rows: ShardRows) -> SortedRows:
    """The scalar columns of ``shard_rows`` concatenated and sorted by (live_id, timestamp)."""
    live_id = np.concatenate([chunk.live_id for chunk in shard_rows.chunks])
    timestamp = np.concatenate([chunk.timestamp for chunk in shard_rows.chunks])
    lvtr = np.concatenate([chunk.lvtr for chunk in shard_rows.chunks])
    file_index = np.concatenate(shard_rows.file_index)
    line_number = np.concatenate(shard_rows.line_number)
    split_code = np.concatenate(shard_rows.split_code)
    order = np.lexsort((timestamp, live_id))
    live_id = live_id[order]
    room_start = np.r_[True, live_id[1:] != live_id[:-1]]
    return SortedRows(
        order=order, live_id=live_id, timestamp=timestamp[order], lvtr=lvtr[order],
        file_index=file_index[order], line_number=line_number[order], split_code=split_code[order],
        room_start=room_start, room_starts=np.flatnonzero(room_start), room_of_row=np.cumsum(room_start) - 1,
        files=shard_rows.files,
    )


def first_in_reading_order(rows: SortedRows, candidates: np.ndarray) -> int:
    """The sorted row among ``candidates`` that comes first in the shards (by file, then line)."""
    return int(candidates[np.lexsort((rows.line_number[candidates], rows.file_index[candidates]))[0]])


def check_lvtr_range(rows: SortedRows) -> None:
    """Raise DataError (naming the first such line in reading order) if an LVTR is outside [0, 1].

    LVTR is a rate (long views / views): a value outside [0, 1] is a broken row, never a label.
    """
    with np.errstate(invalid="ignore"):
        outside = np.flatnonzero((rows.lvtr < 0.0) | (rows.lvtr > 1.0))
    if not outside.size:
        return
    row = first_in_reading_order(rows, outside)
    raise data_error(rows.files[int(rows.file_index[row])], int(rows.line_number[row]), "lvtr",
                     f"{float(rows.lvtr[row])!r} (live_id {int(rows.live_id[row])}, timestamp "
                     f"{int(rows.timestamp[row])})",
                     f"a rate in [0, 1] ({outside.size} row(s) outside it)")


def log_segment_gaps(rows: SortedRows, segment: np.ndarray) -> int:
    """Log a warning for the gaps in the rooms' segment numbers (missing 30 s segments); returns their count.

    The gaps are kept in ``segment`` (see the module docstring), for the validator to refuse.
    """
    gap = np.flatnonzero(~rows.room_start[1:] & (segment[1:] - segment[:-1] > 1)) + 1
    if gap.size:
        row = int(gap[0])
        logger.warning(
            "%s, field 'timestamp': live_id %d jumps from timestamp %d to %d (%d segment(s) missing); "
            "%d gap(s) in %d room(s) are kept as gaps in 'segment' (validation refuses them as segment_gap)",
            rows.where(row), int(rows.live_id[row]), int(rows.timestamp[row - 1]), int(rows.timestamp[row]),
            int(segment[row] - segment[row - 1] - 1), gap.size, np.unique(rows.room_of_row[gap]).size)
    return int(gap.size)


def check_one_split_per_room(rows: SortedRows, splits: Sequence[str]) -> None:
    """Raise DataError (naming the first such room) if a room has rows in more than one split."""
    starts, split_code = rows.room_starts, rows.split_code
    lowest = np.minimum.reduceat(split_code, starts)
    highest = np.maximum.reduceat(split_code, starts)
    mixed = np.flatnonzero(lowest != highest)
    if not mixed.size:
        return
    room = int(mixed[0])
    room_rows = np.arange(starts[room], starts[room + 1] if room + 1 < len(starts) else len(rows.live_id))
    first_in_lowest = int(room_rows[split_code[room_rows] == lowest[room]][0])
    first_in_highest = int(room_rows[split_code[room_rows] == highest[room]][0])
    raise DataError(
        f"{rows.where(first_in_highest)}, field 'live_id': found room {int(rows.live_id[first_in_lowest])} in split "
        f"{splits[int(highest[room])]!r} and also in {splits[int(lowest[room])]!r} "
        f"({rows.where(first_in_lowest)}); expected each room in one split only "
        f"({mixed.size} room(s) in several splits)")


def map_streamers(rows: SortedRows, release: Release, unknown_streamer: str) -> np.ndarray:
    """The streamer id of each row, from the release's ``live_id2aid.txt``.

    A live_id missing from the map raises DataError when ``unknown_streamer`` is ``"error"``;
    with ``"own_id"`` it gets streamer ``-live_id`` and a logged warning.
    """
    mapped_live_ids, live_id = release.mapped_live_ids, rows.live_id
    position = np.searchsorted(mapped_live_ids, live_id)
    position = np.minimum(position, max(len(mapped_live_ids) - 1, 0))
    known = mapped_live_ids[position] == live_id
    streamer = np.where(known, release.mapped_streamers[position], -live_id)
    if known.all():
        return streamer
    unknown_rooms = np.unique(live_id[~known])
    first_unknown = int(np.flatnonzero(~known)[0])
    shown = ", ".join(str(int(room)) for room in unknown_rooms[:5]) + (" ..." if unknown_rooms.size > 5 else "")
    if unknown_streamer == "error":
        raise DataError(
            f"{rows.where(first_unknown)}, field 'live_id': found {unknown_rooms.size} "
            f"live_id(s) ({int((~known).sum())} rows) not in {release.mapping_path}: {shown}; expected every "
            f"live_id to be mapped to a streamer (or unknown_streamer='own_id')")
    logger.warning("%d live_id(s) (%d rows) are not in %s (%s); each gets its own streamer id -live_id",
                   unknown_rooms.size, int((~known).sum()), release.mapping_path, shown)
    return streamer


def check_unique_timestamps(rows: SortedRows) -> None:
    """Raise DataError (naming both lines of the first pair) if a room has a timestamp twice."""
    duplicates = np.flatnonzero(~rows.room_start[1:] & (rows.timestamp[1:] == rows.timestamp[:-1]))
    if not duplicates.size:
        return
    row = int(duplicates[0])
    def reading_position(index: int) -> tuple:
        return int(rows.file_index[index]), int(rows.line_number[index])

    earlier, later = sorted((row, row + 1), key=reading_position)
    raise DataError(
        f"{rows.where(later)}, field 'timestamp': found a duplicate of {rows.where(earlier)} "
        f"(live_id {int(rows.live_id[row])}, timestamp {int(rows.timestamp[row])}); expected one "
        f"row per (live_id, timestamp) ({duplicates.size} duplicate(s) in all)")


def segment_indices(rows: SortedRows) -> np.ndarray:
    """Each row's segment: ``(timestamp - first timestamp of its room) // 30``, as int64.

    Raises DataError for a timestamp that is not a multiple of 30 s after its room's first,
    or a segment index beyond int32.
    """
    first_of_room = rows.room_starts[rows.room_of_row]
    offset = rows.timestamp - rows.timestamp[first_of_room]
    off_grid = np.flatnonzero(offset % SEGMENT_SECONDS != 0)
    if off_grid.size:
        row = int(off_grid[0])
        first = int(first_of_room[row])
        n_rooms = np.unique(rows.room_of_row[off_grid]).size
        raise DataError(
            f"{rows.where(row)}, field 'timestamp': found timestamp {int(rows.timestamp[row])} in room "
            f"(live_id) {int(rows.live_id[row])}, {int(offset[row])} s after its first timestamp "
            f"{int(rows.timestamp[first])} ({rows.where(first)}); expected a multiple of {SEGMENT_SECONDS} s "
            f"({n_rooms} room(s) off the grid)")
    segment = offset // SEGMENT_SECONDS
    if segment.size and segment.max() > np.iinfo(np.int32).max:
        row = int(np.argmax(segment))
        raise data_error(rows.files[int(rows.file_index[row])], int(rows.line_number[row]), "timestamp",
                         f"segment {int(segment[row])} of room {int(rows.live_id[row])}",
                         "a segment index that fits int32")
    return segment
