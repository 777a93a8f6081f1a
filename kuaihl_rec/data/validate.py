"""Validation of segment tables: every problem named by file, row and field.

:func:`validate_path` checks a segment table (see :mod:`kuaihl_rec.data.schema`) and returns a
:class:`ValidationReport`; :func:`load_segments` returns the table when it is usable and raises
:class:`~kuaihl_rec.data.io.DataError` with the report otherwise. Row numbers in messages are
0-based data rows *within the named file* (the Parquet header is not a row).

Errors (the data cannot be used; ``kuaihl validate`` exits 1):

=====================  =====================================================================
kind                   what is checked
=====================  =====================================================================
missing_column         a required column is absent
wrong_type             a column's Arrow type is not the contract's (any integer width is
                       accepted for integer columns, float32/float64 for floats)
null_value             a null in a column that must be set
non_finite             NaN or +-inf in a feature vector or a label
wrong_length           a ``visual`` / ``text`` vector whose length differs from the manifest's
                       (or, without a manifest, from row 0 of the first file: every file of a
                       table has the same widths)
empty_vector           without a manifest, feature vectors of width 0 (no features at all)
negative_count         a counter below 0
long_gt_viewers        ``n_long_viewers > n_viewers``
clicks_gt_exposures    ``n_clicks > n_exposures``
label_range            ``lvtr`` / ``ctr`` outside [0, 1]
duplicate_segment      the same (live_id, segment) twice
out_of_order           a room's segments not in increasing order in the file
segment_gap            a room's segments not consecutive (a missing 30 s segment)
segment_start          a room whose first segment is not 0 (segments are 0-based)
negative_segment       a segment number below 0
room_split_files       one room's rows in more than one file
streamer_changes       one room with more than one streamer_id
bad_split              ``split`` not in {train, val, test} or not constant within a room
timestamp_order        timestamps not strictly increasing within a room
timestamp_step         timestamps of a room not 30 s per segment apart (``timestamp`` must be
                       the room's first timestamp + 30 * ``segment``; a hidden pause would
                       make the "next" segment minutes later than the model assumes)
manifest_rows          the manifest's ``n_rows`` (total), ``file_rows`` (per file) or
                       ``n_rooms`` differs from what the files hold
=====================  =====================================================================

Refused before any row is read (:class:`~kuaihl_rec.data.io.DataError`, also from
:func:`validate_path`, so ``kuaihl validate`` exits 1): an unreadable file, a manifest that is
not valid, lists a file twice or a path outside the dataset directory, or gives feature sizes
that are not integers >= 1 (see :mod:`kuaihl_rec.data.io`).

Rejections (usable data; counted and reported, never silent): targets whose segment has fewer
than ``min_viewers`` viewers (they are masked from losses and metrics, and training windows whose
last target is such a segment are dropped), and rooms with a single segment (no next-segment label).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kuaihl_rec.data.io import DataError, manifest_sizes, read_manifest, segment_files
from kuaihl_rec.data.schema import (
    COUNTER_COLUMNS,
    MANIFEST_NAME,
    OPTIONAL_TYPES,
    REQUIRED_TYPES,
    SEGMENT_SECONDS,
    SPLITS,
    FeatureSizes,
)
from kuaihl_rec.data.validate_report import MAX_EXAMPLES, Problem, ValidationReport  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

_INT_COLUMNS = {c for c, t in {**REQUIRED_TYPES, **OPTIONAL_TYPES}.items() if pa.types.is_integer(t)}
_FLOAT_COLUMNS = {c for c, t in {**REQUIRED_TYPES, **OPTIONAL_TYPES}.items() if pa.types.is_floating(t)}
_VECTOR_COLUMNS = ("visual", "text")


def _type_ok(column: str, found: pa.DataType) -> bool:
    if column in _INT_COLUMNS:
        return pa.types.is_integer(found)
    if column in _FLOAT_COLUMNS:
        return pa.types.is_floating(found)
    if column in _VECTOR_COLUMNS:
        return (pa.types.is_list(found) or pa.types.is_large_list(found) or pa.types.is_fixed_size_list(found)) and (
            pa.types.is_floating(found.value_type)
        )
    expected = {**REQUIRED_TYPES, **OPTIONAL_TYPES}[column]
    if pa.types.is_string(expected):
        return pa.types.is_string(found) or pa.types.is_large_string(found)
    if pa.types.is_list(expected):
        return (pa.types.is_list(found) or pa.types.is_large_list(found)) and (
            pa.types.is_string(found.value_type) or pa.types.is_large_string(found.value_type)
        )
    return found == expected


def _rows_where(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask)


def _vector_lengths_and_values(col: pa.ChunkedArray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row list lengths, the flat values (float64 view not made: kept in native float) and row ids."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_fixed_size_list(arr.type):
        lengths = np.full(len(arr), arr.type.list_size, dtype=np.int64)
    else:
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        lengths = np.nan_to_num(lengths.astype(np.float64), nan=-1).astype(np.int64)
    values = pc.list_flatten(arr).to_numpy(zero_copy_only=False)
    owners = np.repeat(np.arange(len(arr)), np.maximum(lengths, 0))
    return lengths, values, owners


class _FileChecker:
    """Checks one Parquet file's rows; cross-file checks are done by :func:`validate_path`."""

    def __init__(
        self, report: ValidationReport, path: Path, sizes: Optional[FeatureSizes], sizes_source: str = ""
    ):
        self.report = report
        self.path = path
        self.sizes = sizes
        self.sizes_source = sizes_source or "the manifest's feature_sizes"

    def where(self, row: int, field: str, what: str) -> str:
        return f"{self.path}: row {row}, field '{field}': {what}"

    def flag(self, kind: str, rows: np.ndarray, field: str, describe) -> None:
        if len(rows):
            self.report.add(kind, len(rows), [self.where(int(r), field, describe(int(r))) for r in rows[:MAX_EXAMPLES]])

    def check(self, table: pa.Table) -> bool:
        """Run every per-file check. Returns False when the columns are unusable (further checks skipped)."""
        names = set(table.column_names)
        usable = True
        for col in REQUIRED_TYPES:
            if col not in names:
                self.report.add(
                    "missing_column",
                    1,
                    [f"{self.path}: field '{col}': required column is missing (columns present: {sorted(names)})"],
                )
                usable = False
        for col in [c for c in table.column_names if c in REQUIRED_TYPES or c in OPTIONAL_TYPES]:
            found = table.schema.field(col).type
            if not _type_ok(col, found):
                expected = {**REQUIRED_TYPES, **OPTIONAL_TYPES}[col]
                self.report.add("wrong_type", 1, [f"{self.path}: field '{col}': type is {found}, expected {expected}"])
                usable = False
        if not usable:
            return False
        for col in [
            c for c in table.column_names if c in REQUIRED_TYPES or c in COUNTER_COLUMNS or c in ("ctr", "split")
        ]:
            nulls = table.column(col).is_null().to_numpy(zero_copy_only=False)
            self.flag("null_value", _rows_where(nulls), col, lambda r: "value is null")
        self._check_vectors(table)
        self._check_labels(table)
        self._check_counters(table)
        return True

    def _check_vectors(self, table: pa.Table) -> None:
        for col in _VECTOR_COLUMNS:
            lengths, values, owners = _vector_lengths_and_values(table.column(col))
            if self.sizes is not None:
                expected = self.sizes.visual_len if col == "visual" else self.sizes.text_dim
                source = self.sizes_source
            else:
                expected = int(lengths[0]) if len(lengths) else 0
                source = "row 0"
            if expected == 0:
                self.flag(
                    "empty_vector", _rows_where(lengths == 0), col,
                    lambda r, s=source: f"vector has 0 values (width 0, from {s}), expected at least 1",
                )
            bad = _rows_where(lengths != expected)
            self.flag(
                "wrong_length", bad, col,
                lambda r, e=expected, s=source, L=lengths: f"vector has {L[r]} values, expected {e} (from {s})",
            )
            finite = np.isfinite(values)
            if not finite.all():
                bad_rows = np.unique(owners[~finite])
                vals = values
                first_bad = {}
                for idx in np.flatnonzero(~finite)[: 10 * MAX_EXAMPLES]:
                    first_bad.setdefault(int(owners[idx]), vals[idx])
                self.flag(
                    "non_finite", bad_rows, col,
                    lambda r, fb=first_bad: f"vector holds {fb.get(r, 'a non-finite value')}",
                )

    def _check_labels(self, table: pa.Table) -> None:
        for col in ("lvtr", "ctr"):
            if col not in table.column_names:
                continue
            vals = table.column(col).to_numpy(zero_copy_only=False).astype(np.float64)
            nonfinite = ~np.isfinite(vals)
            self.flag("non_finite", _rows_where(nonfinite), col, lambda r, v=vals: f"label is {v[r]}")
            with np.errstate(invalid="ignore"):
                out = np.isfinite(vals) & ((vals < 0) | (vals > 1))
            self.flag("label_range", _rows_where(out), col, lambda r, v=vals: f"label {v[r]:.6g} outside [0, 1]")

    def _check_counters(self, table: pa.Table) -> None:
        present = [c for c in COUNTER_COLUMNS if c in table.column_names]
        counts = {c: table.column(c).to_numpy(zero_copy_only=False) for c in present}
        for col, vals in counts.items():
            with np.errstate(invalid="ignore"):
                self.flag("negative_count", _rows_where(vals < 0), col, lambda r, v=vals: f"count {v[r]} is negative")
        for small, big, kind in (
            ("n_long_viewers", "n_viewers", "long_gt_viewers"),
            ("n_clicks", "n_exposures", "clicks_gt_exposures"),
        ):
            if small in counts and big in counts:
                a, b = counts[small], counts[big]
                with np.errstate(invalid="ignore"):
                    bad = _rows_where(a > b)
                self.flag(kind, bad, small, lambda r, a=a, b=b, s=small, g=big: f"{s} = {a[r]} exceeds {g} = {b[r]}")

    def check_rooms(
        self, live: np.ndarray, seg: np.ndarray, ts: np.ndarray, streamer: np.ndarray, split: Optional[np.ndarray]
    ) -> None:
        """Ordering checks inside the file: rows of a room must be contiguous, in order, without gaps."""
        if not len(live):
            return
        same_room = live[1:] == live[:-1]
        step = seg[1:].astype(np.int64) - seg[:-1].astype(np.int64)
        dup = _rows_where(same_room & (step == 0)) + 1
        self.flag(
            "duplicate_segment", dup, "segment",
            lambda r: f"live_id {live[r]} segment {seg[r]} appears again (also row {r - 1})",
        )
        back = _rows_where(same_room & (step < 0)) + 1
        self.flag(
            "out_of_order", back, "segment",
            lambda r: (
                f"live_id {live[r]}: segment {seg[r]} comes after segment {seg[r - 1]} "
                "(rows must be sorted by live_id, segment)"
            ),
        )
        gap = _rows_where(same_room & (step > 1)) + 1
        self.flag(
            "segment_gap", gap, "segment",
            lambda r: (
                f"live_id {live[r]}: segment {seg[r]} follows segment {seg[r - 1]}: "
                f"{seg[r] - seg[r - 1] - 1} segment(s) missing"
            ),
        )
        ts_bad = _rows_where(same_room & (step > 0) & (ts[1:] <= ts[:-1])) + 1
        self.flag(
            "timestamp_order", ts_bad, "timestamp",
            lambda r: f"live_id {live[r]}: timestamp {ts[r]} not after the previous segment's {ts[r - 1]}",
        )
        # A room seen again later in the file (rows not contiguous) is also out of order.
        starts = np.flatnonzero(np.r_[True, ~same_room])
        room_ids = live[starts]
        order = np.argsort(room_ids, kind="stable")
        repeated = starts[order][1:][room_ids[order][1:] == room_ids[order][:-1]]
        self.flag(
            "out_of_order", repeated, "live_id",
            lambda r: f"live_id {live[r]} reappears after other rooms (a room's rows must be contiguous)",
        )
        sc = _rows_where(same_room & (streamer[1:] != streamer[:-1])) + 1
        self.flag(
            "streamer_changes", sc, "streamer_id",
            lambda r: f"live_id {live[r]} has streamer_id {streamer[r]} but {streamer[r - 1]} on the previous row",
        )
        self.check_numbering(live, seg, ts)
        if split is not None:
            bad_value = _rows_where(~np.isin(split, np.array(SPLITS, dtype=object)))
            self.flag("bad_split", bad_value, "split", lambda r: f"value {split[r]!r}, expected one of {list(SPLITS)}")
            changes = _rows_where(same_room & (split[1:] != split[:-1])) + 1
            self.flag(
                "bad_split", changes, "split",
                lambda r: f"live_id {live[r]} is in split {split[r]!r} here but {split[r - 1]!r} on the previous row",
            )


    def check_numbering(self, live: np.ndarray, seg: np.ndarray, ts: np.ndarray) -> None:
        """Segment numbers and timestamps: each room starts at segment 0, no segment is negative, and
        a room's timestamps advance 30 s per segment (``timestamp - 30 * segment`` constant in a room)."""
        seg64 = seg.astype(np.int64)
        ts64 = ts.astype(np.int64)
        self.flag(
            "negative_segment", _rows_where(seg64 < 0), "segment",
            lambda r: f"live_id {live[r]}: segment {seg[r]} is negative, expected a 0-based index >= 0",
        )
        starts = np.flatnonzero(np.r_[True, live[1:] != live[:-1]])
        self.flag(
            "segment_start", starts[seg64[starts] != 0], "segment",
            lambda r: (
                f"live_id {live[r]}: the room's first row has segment {seg[r]}, expected 0 "
                "(segments are 0-based and consecutive from the start of the room)"
            ),
        )
        same_room = live[1:] == live[:-1]
        step = seg64[1:] - seg64[:-1]
        seconds = ts64[1:] - ts64[:-1]
        uneven = _rows_where(same_room & (step > 0) & (seconds > 0) & (seconds != SEGMENT_SECONDS * step)) + 1
        self.flag(
            "timestamp_step", uneven, "timestamp",
            lambda r: (
                f"live_id {live[r]}: segment {seg[r]} starts {ts64[r] - ts64[r - 1]} s after segment {seg[r - 1]} "
                f"(timestamp {ts[r]}, previous {ts[r - 1]}), expected {SEGMENT_SECONDS * (seg64[r] - seg64[r - 1])} s "
                f"({SEGMENT_SECONDS} s per segment)"
            ),
        )

def read_table(path) -> Tuple[List[Tuple[Path, pa.Table]], Optional[FeatureSizes]]:
    """Read every file of a segment table (no checks beyond readability and the manifest's own)."""
    tables, sizes, _ = _read_with_manifest(path)
    return tables, sizes


def _read_with_manifest(path) -> Tuple[List[Tuple[Path, pa.Table]], Optional[FeatureSizes], Optional[dict]]:
    """``(files, manifest feature sizes, manifest)``; the last two are None without a manifest."""
    files = segment_files(path)
    sizes = manifest_sizes(path)
    manifest = read_manifest(path) if Path(path).is_dir() else None
    out = []
    for f in files:
        try:
            out.append((f, pq.read_table(f)))
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{f}: not a readable Parquet file ({exc})") from exc
    return out, sizes, manifest


def _infer_sizes(tables: List[Tuple[Path, pa.Table]]) -> Tuple[Optional[FeatureSizes], str]:
    """Sizes from the first row of the first non-empty file (a table without manifest), and where they came from."""
    for path, t in tables:
        if t.num_rows and "visual" in t.column_names and "text" in t.column_names:
            v = t.column("visual")[0].values
            x = t.column("text")[0].values
            if v is None or x is None:
                return None, ""
            return FeatureSizes(visual_tokens=1, visual_dim=len(v), text_dim=len(x)), f"row 0 of {path}"
    return None, ""


def _check_manifest_counts(report: ValidationReport, tables: List[Tuple[Path, pa.Table]], manifest: dict,
                           manifest_path: Path) -> None:
    """The row and room counts the manifest records (``n_rows``, ``file_rows``, ``n_rooms``) against the files."""
    def count_problem(field: str, recorded, found: int, what: str) -> None:
        if isinstance(recorded, bool) or not isinstance(recorded, int) or recorded != found:
            report.add("manifest_rows", 1, [
                f"{manifest_path}: field {field}: manifest says {recorded!r} {what}, expected {found} "
                f"(what the files hold)"])

    if "n_rows" in manifest:
        count_problem("'n_rows'", manifest["n_rows"], report.n_rows, "rows")
    if "n_rooms" in manifest and report.ok:  # room counts mean something only in an otherwise valid table
        count_problem("'n_rooms'", manifest["n_rooms"], report.n_rooms, "rooms")
    file_rows = manifest.get("file_rows")
    if file_rows is None:
        return
    if not isinstance(file_rows, list) or len(file_rows) != len(tables):
        report.add("manifest_rows", 1, [
            f"{manifest_path}: field 'file_rows': found {file_rows!r}, expected one row count per listed file "
            f"({len(tables)})"])
        return
    for i, ((path, table), recorded) in enumerate(zip(tables, file_rows)):
        count_problem(f"'file_rows'[{i}]", recorded, table.num_rows, f"rows for {path}")


class _RoomTally:
    """Cross-file bookkeeping of :func:`validate_tables`: rooms, streamers, splits and rejections."""

    def __init__(self, report: ValidationReport, min_viewers: int):
        self.report = report
        self.min_viewers = min_viewers
        self.room_file: Dict[int, Path] = {}
        self.streamers: set = set()
        self.split_rooms: Dict[str, int] = {}
        self.low_viewer_targets = 0
        self.single_segment_rooms = 0

    def add_file(self, path: Path, table: pa.Table, live: np.ndarray, streamer: np.ndarray,
                 split: Optional[np.ndarray]) -> None:
        """Count one file's rooms; a room already seen in another file is a ``room_split_files`` error."""
        starts = np.flatnonzero(np.r_[True, live[1:] != live[:-1]])
        lengths = np.diff(np.r_[starts, len(live)])
        for row, room in zip(starts, live[starts]):
            room = int(room)
            if room in self.room_file and self.room_file[room] != path:
                self.report.add(
                    "room_split_files",
                    1,
                    [f"{path}: row {row}, field 'live_id': room {room} also has rows in {self.room_file[room]}"],
                )
            self.room_file.setdefault(room, path)
        self.streamers.update(np.unique(streamer).tolist())
        if split is not None:
            for name, count in zip(*np.unique(split[starts].astype(str), return_counts=True)):
                self.split_rooms[name] = self.split_rooms.get(name, 0) + int(count)
        self.single_segment_rooms += int((lengths == 1).sum())
        if "n_viewers" in table.column_names:
            viewers = table.column("n_viewers").to_numpy(zero_copy_only=False)
            is_target = np.ones(len(live), dtype=bool)
            is_target[starts] = False  # a room's first segment is never a target (no earlier content)
            self.low_viewer_targets += int((is_target & (viewers < self.min_viewers)).sum())

    def finish(self) -> None:
        """Write the totals into the report."""
        report = self.report
        report.n_rooms = len(self.room_file)
        report.n_streamers = len(self.streamers)
        report.splits = dict(sorted(self.split_rooms.items()))
        report.rejections = {
            f"targets_below_{self.min_viewers}_viewers": self.low_viewer_targets,
            "single_segment_rooms": self.single_segment_rooms,
        }


def validate_tables(
    tables: List[Tuple[Path, pa.Table]],
    sizes: Optional[FeatureSizes],
    min_viewers: int = 60,
    label: str = "lvtr",
    display_path: str = "",
    manifest: Optional[dict] = None,
    manifest_path: Optional[Path] = None,
) -> ValidationReport:
    """Validate already-read files (``[(path, table)]``); see the module docstring for the checks.

    ``sizes``: the manifest's feature sizes; without them every file is held to the widths of row 0
    of the first file. ``manifest`` (with ``manifest_path`` for messages): its recorded counts are checked.
    """
    report = ValidationReport(path=display_path, n_files=len(tables))
    inferred, inferred_from = _infer_sizes(tables)
    report.sizes = sizes or inferred
    tally = _RoomTally(report, min_viewers)
    for path, table in tables:
        if sizes is not None:
            checker = _FileChecker(report, path, sizes)
        else:
            checker = _FileChecker(report, path, inferred, inferred_from)
        report.n_rows += table.num_rows
        if not checker.check(table) or table.num_rows == 0:
            continue
        live = table.column("live_id").to_numpy(zero_copy_only=False)
        seg = table.column("segment").to_numpy(zero_copy_only=False)
        ts = table.column("timestamp").to_numpy(zero_copy_only=False)
        streamer = table.column("streamer_id").to_numpy(zero_copy_only=False)
        split = table.column("split").to_numpy(zero_copy_only=False) if "split" in table.column_names else None
        checker.check_rooms(live, seg, ts, streamer, split)
        tally.add_file(path, table, live, streamer, split)
    tally.finish()
    if manifest is not None:
        _check_manifest_counts(report, tables, manifest, manifest_path or Path(display_path) / MANIFEST_NAME)
    if report.n_rows == 0 and not report.errors:
        report.add("empty", 1, [f"{display_path}: the table has no rows"])
    return report


def validate_path(path, min_viewers: int = 60, label: str = "lvtr") -> ValidationReport:
    """Validate the segment table at ``path`` (directory with manifest, directory, or one file)."""
    tables, sizes, manifest = _read_with_manifest(path)
    report = validate_tables(tables, sizes, min_viewers=min_viewers, label=label, display_path=str(path),
                             manifest=manifest, manifest_path=Path(path) / MANIFEST_NAME)
    logger.info("validated %s: %s", path, "ok" if report.ok else f"{len(report.errors)} kind(s) of problem")
    return report


def load_segments(path, min_viewers: int = 60) -> Tuple[pa.Table, FeatureSizes, ValidationReport]:
    """Read and validate a segment table; raise :class:`DataError` with the full report if it is unusable."""
    tables, sizes, manifest = _read_with_manifest(path)
    report = validate_tables(tables, sizes, min_viewers=min_viewers, display_path=str(path),
                             manifest=manifest, manifest_path=Path(path) / MANIFEST_NAME)
    if not report.ok:
        raise DataError(report.format())
    table = pa.concat_tables([t for _, t in tables], promote_options="permissive") if len(tables) > 1 else tables[0][1]
    assert report.sizes is not None
    return table, report.sizes, report
