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
                       (or, without a manifest, from the first row's)
negative_count         a counter below 0
long_gt_viewers        ``n_long_viewers > n_viewers``
clicks_gt_exposures    ``n_clicks > n_exposures``
label_range            ``lvtr`` / ``ctr`` outside [0, 1]
duplicate_segment      the same (live_id, segment) twice
out_of_order           a room's segments not in increasing order in the file
segment_gap            a room's segments not consecutive (a missing 30 s segment)
room_split_files       one room's rows in more than one file
streamer_changes       one room with more than one streamer_id
bad_split              ``split`` not in {train, val, test} or not constant within a room
timestamp_order        timestamps not strictly increasing within a room
=====================  =====================================================================

Rejections (usable data; counted and reported, never silent): targets whose segment has fewer
than ``min_viewers`` viewers (they are masked from losses and metrics, and training windows whose
last target is such a segment are dropped), and rooms with a single segment (no next-segment label).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kuaihl_rec.data.io import DataError, manifest_sizes, segment_files
from kuaihl_rec.data.schema import (
    COUNTER_COLUMNS,
    OPTIONAL_TYPES,
    REQUIRED_TYPES,
    SPLITS,
    FeatureSizes,
)

logger = logging.getLogger(__name__)

MAX_EXAMPLES = 5


@dataclasses.dataclass
class Problem:
    """One kind of problem: how many rows it hit and the first few places, already worded."""

    kind: str
    count: int
    examples: List[str]


@dataclasses.dataclass
class ValidationReport:
    """What :func:`validate_path` found. ``ok`` is False when any error was found."""

    path: str
    n_files: int = 0
    n_rows: int = 0
    n_rooms: int = 0
    n_streamers: int = 0
    sizes: Optional[FeatureSizes] = None
    errors: "OrderedDict[str, Problem]" = dataclasses.field(default_factory=OrderedDict)
    rejections: Dict[str, int] = dataclasses.field(default_factory=dict)
    splits: Dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, kind: str, count: int, examples: Sequence[str]) -> None:
        if count <= 0:
            return
        prob = self.errors.setdefault(kind, Problem(kind, 0, []))
        prob.count += int(count)
        room = MAX_EXAMPLES - len(prob.examples)
        prob.examples.extend(list(examples)[:room])

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "ok": self.ok,
            "n_files": self.n_files,
            "n_rows": self.n_rows,
            "n_rooms": self.n_rooms,
            "n_streamers": self.n_streamers,
            "feature_sizes": dataclasses.asdict(self.sizes) if self.sizes else None,
            "errors": {k: {"count": p.count, "examples": p.examples} for k, p in self.errors.items()},
            "rejections": dict(self.rejections),
            "rooms_per_split": dict(self.splits),
        }

    def format(self) -> str:
        lines = [
            f"{self.path}: {self.n_rows} rows, {self.n_rooms} rooms, {self.n_streamers} streamers "
            f"in {self.n_files} file(s)"
        ]
        if self.sizes:
            s = self.sizes
            lines.append(f"  feature sizes: visual {s.visual_tokens} x {s.visual_dim}, text {s.text_dim}")
        if self.splits:
            lines.append("  rooms per split: " + ", ".join(f"{k} {v}" for k, v in self.splits.items()))
        for name, count in self.rejections.items():
            lines.append(f"  rejected: {count} {name.replace('_', ' ')}")
        if self.ok:
            lines.append("  OK: the table satisfies the segment-data contract")
        else:
            lines.append(
                f"  INVALID: {sum(p.count for p in self.errors.values())} problem(s) of {len(self.errors)} kind(s)"
            )
            for prob in self.errors.values():
                lines.append(f"  - {prob.kind}: {prob.count}")
                lines.extend(f"      {ex}" for ex in prob.examples)
        return "\n".join(lines)


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

    def __init__(self, report: ValidationReport, path: Path, sizes: Optional[FeatureSizes]):
        self.report = report
        self.path = path
        self.sizes = sizes

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
                source = "the manifest's feature_sizes"
            else:
                expected = int(lengths[0]) if len(lengths) else 0
                source = "row 0"
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
        if split is not None:
            bad_value = _rows_where(~np.isin(split, np.array(SPLITS, dtype=object)))
            self.flag("bad_split", bad_value, "split", lambda r: f"value {split[r]!r}, expected one of {list(SPLITS)}")
            changes = _rows_where(same_room & (split[1:] != split[:-1])) + 1
            self.flag(
                "bad_split", changes, "split",
                lambda r: f"live_id {live[r]} is in split {split[r]!r} here but {split[r - 1]!r} on the previous row",
            )


def read_table(path) -> Tuple[List[Tuple[Path, pa.Table]], Optional[FeatureSizes]]:
    """Read every file of a segment table (no checks beyond readability)."""
    files = segment_files(path)
    sizes = manifest_sizes(path)
    out = []
    for f in files:
        try:
            out.append((f, pq.read_table(f)))
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{f}: not a readable Parquet file ({exc})") from exc
    return out, sizes


def _infer_sizes(tables: List[Tuple[Path, pa.Table]]) -> Optional[FeatureSizes]:
    for _, t in tables:
        if t.num_rows and "visual" in t.column_names and "text" in t.column_names:
            v = t.column("visual")[0].values
            x = t.column("text")[0].values
            if v is None or x is None:
                return None
            return FeatureSizes(visual_tokens=1, visual_dim=len(v), text_dim=len(x))
    return None


def validate_tables(
    tables: List[Tuple[Path, pa.Table]],
    sizes: Optional[FeatureSizes],
    min_viewers: int = 60,
    label: str = "lvtr",
    display_path: str = "",
) -> ValidationReport:
    """Validate already-read files (``[(path, table)]``); see the module docstring for the checks."""
    report = ValidationReport(path=display_path, n_files=len(tables))
    report.sizes = sizes or _infer_sizes(tables)
    room_file: Dict[int, Path] = {}
    streamers: set = set()
    split_rooms: Dict[str, int] = {}
    low_viewer_targets = 0
    single_segment_rooms = 0
    for path, table in tables:
        checker = _FileChecker(report, path, sizes)
        report.n_rows += table.num_rows
        if not checker.check(table) or table.num_rows == 0:
            continue
        live = table.column("live_id").to_numpy(zero_copy_only=False)
        seg = table.column("segment").to_numpy(zero_copy_only=False)
        ts = table.column("timestamp").to_numpy(zero_copy_only=False)
        streamer = table.column("streamer_id").to_numpy(zero_copy_only=False)
        split = table.column("split").to_numpy(zero_copy_only=False) if "split" in table.column_names else None
        checker.check_rooms(live, seg, ts, streamer, split)
        starts = np.flatnonzero(np.r_[True, live[1:] != live[:-1]])
        lengths = np.diff(np.r_[starts, len(live)])
        for row, room in zip(starts, live[starts]):
            room = int(room)
            if room in room_file and room_file[room] != path:
                report.add(
                    "room_split_files",
                    1,
                    [f"{path}: row {row}, field 'live_id': room {room} also has rows in {room_file[room]}"],
                )
            room_file.setdefault(room, path)
        streamers.update(np.unique(streamer).tolist())
        if split is not None:
            for name, count in zip(*np.unique(split[starts].astype(str), return_counts=True)):
                split_rooms[name] = split_rooms.get(name, 0) + int(count)
        single_segment_rooms += int((lengths == 1).sum())
        if "n_viewers" in table.column_names:
            viewers = table.column("n_viewers").to_numpy(zero_copy_only=False)
            is_target = np.ones(len(live), dtype=bool)
            is_target[starts] = False  # a room's first segment is never a target (no earlier content)
            low_viewer_targets += int((is_target & (viewers < min_viewers)).sum())
    report.n_rooms = len(room_file)
    report.n_streamers = len(streamers)
    report.splits = dict(sorted(split_rooms.items()))
    report.rejections = {
        f"targets_below_{min_viewers}_viewers": low_viewer_targets,
        "single_segment_rooms": single_segment_rooms,
    }
    if report.n_rows == 0 and not report.errors:
        report.add("empty", 1, [f"{display_path}: the table has no rows"])
    return report


def validate_path(path, min_viewers: int = 60, label: str = "lvtr") -> ValidationReport:
    """Validate the segment table at ``path`` (directory with manifest, directory, or one file)."""
    tables, sizes = read_table(path)
    report = validate_tables(tables, sizes, min_viewers=min_viewers, label=label, display_path=str(path))
    logger.info("validated %s: %s", path, "ok" if report.ok else f"{len(report.errors)} kind(s) of problem")
    return report


def load_segments(path, min_viewers: int = 60) -> Tuple[pa.Table, FeatureSizes, ValidationReport]:
    """Read and validate a segment table; raise :class:`DataError` with the full report if it is unusable."""
    tables, sizes = read_table(path)
    report = validate_tables(tables, sizes, min_viewers=min_viewers, display_path=str(path))
    if not report.ok:
        raise DataError(report.format())
    table = pa.concat_tables([t for _, t in tables], promote_options="permissive") if len(tables) > 1 else tables[0][1]
    assert report.sizes is not None
    return table, report.sizes, report
