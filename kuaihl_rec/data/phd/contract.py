"""The personalised-highlight data contract (docs/HIGHLIGHTS.md, "Data contract").

A PHD directory holds four files::

    phd.json            {"format": "kuaihl-phd", "version": 1, "segment_seconds": s}
    segments.parquet    video_id: string, segment: int64 (0 .. T-1, each once),
                        visual: list<float32>, text: list<float32>
    selections.parquet  user_id: string, video_id: string, start: float64 (s), duration: float64 (s), role: string
    users.parquet       user_id: string, split: string ("train" | "val" | "test")

Feature side: a video is the sequence of its T segments, segment ``i`` covering
``[i s, (i + 1) s)`` seconds (``s = segment_seconds``); ``visual`` / ``text`` are one vector per
segment, of one width each over the whole table. Label side: one row per clip a user selected,
``[start, start + duration)`` seconds of one video; ``role = "history"`` rows are the user's
history clips (on other videos), ``role = "target"`` rows are the user's ground-truth highlights
on their test video (one target video per user, one or more selections on it, their union is the
truth). Users are split by user: a user is in exactly one split.

Every check raises :class:`~kuaihl_rec.data.io.DataError` with one line naming the file, the
row (0-based table row) and the field, and what was expected. Nothing is dropped or repaired.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kuaihl_rec.data.io import DataError, atomic_write_json, atomic_write_parquet
from kuaihl_rec.metrics.phd import FPS

PathLike = Union[str, Path]

FORMAT = "kuaihl-phd"
VERSION = 1
MANIFEST = "phd.json"
SEGMENTS = "segments.parquet"
SELECTIONS = "selections.parquet"
USERS = "users.parquet"
ROLES = ("history", "target")
SPLITS = ("train", "val", "test")
SELECTION_COLUMNS = ("user_id", "video_id", "start", "duration", "role")
USER_COLUMNS = ("user_id", "split")
# a selection may end this many seconds past the last segment's end (rounding of the release's seconds)
END_TOLERANCE_S = 1e-6


@dataclasses.dataclass(frozen=True)
class PHDVideo:
    """One video's feature side: ``visual`` float32 ``[T, visual_dim]``, ``text`` float32 ``[T, text_dim]``."""

    visual: np.ndarray
    text: np.ndarray

    @property
    def n_segments(self) -> int:
        return int(self.visual.shape[0])


@dataclasses.dataclass(frozen=True)
class PHDLabels:
    """The label side: ``selections`` (columns :data:`SELECTION_COLUMNS`), ``users``
    (:data:`USER_COLUMNS`) and the known video durations in seconds (``NaN`` = unknown)."""

    selections: pd.DataFrame
    users: pd.DataFrame
    video_durations: Mapping[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class PHDData:
    """A whole PHD data set: ``segment_seconds``, ``videos`` (id -> :class:`PHDVideo`) and the labels."""

    segment_seconds: float
    videos: Mapping[str, PHDVideo]
    labels: PHDLabels

    @property
    def visual_dim(self) -> int:
        return int(next(iter(self.videos.values())).visual.shape[1])

    @property
    def text_dim(self) -> int:
        return int(next(iter(self.videos.values())).text.shape[1])


def _fail(where: str, row: Optional[int], field: str, message: str) -> DataError:
    at = f"row {row}: " if row is not None else ""
    return DataError(f"{where}: {at}{field}: {message}")


def _require_columns(df: pd.DataFrame, columns, where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; expected {list(columns)}")


def _check_strings(df: pd.DataFrame, column: str, where: str) -> None:
    for row, value in enumerate(df[column].tolist()):
        if not isinstance(value, str) or not value:
            raise _fail(where, row, column, f"expected a non-empty string, got {value!r}")


def check_label_side(
    labels: PHDLabels, where: str = SELECTIONS, users_where: str = USERS, end_tolerance: float = END_TOLERANCE_S
) -> None:
    """Field, row and cross-row checks of the label side (see module doc); a selection may end at most
    ``end_tolerance`` seconds after its video's known duration."""
    sel, users = labels.selections.reset_index(drop=True), labels.users.reset_index(drop=True)
    _require_columns(sel, SELECTION_COLUMNS, where)
    _require_columns(users, USER_COLUMNS, users_where)
    _check_strings(users, "user_id", users_where)
    for row, split in enumerate(users["split"].tolist()):
        if split not in SPLITS:
            raise _fail(users_where, row, "split", f"expected one of {list(SPLITS)}, got {split!r}")
    dup = users["user_id"].duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise _fail(users_where, row, "user_id", f"user {users['user_id'].iloc[row]!r} is listed twice (split by user)")
    for column in ("user_id", "video_id"):
        _check_strings(sel, column, where)
    known_users = set(users["user_id"])
    for row, (user, start, duration, role) in enumerate(
        zip(sel["user_id"], sel["start"], sel["duration"], sel["role"])
    ):
        if user not in known_users:
            raise _fail(where, row, "user_id", f"user {user!r} is not in {users_where}")
        if not isinstance(start, (int, float, np.number)) or not math.isfinite(start) or start < 0:
            raise _fail(where, row, "start", f"expected a finite number of seconds >= 0, got {start!r}")
        if not isinstance(duration, (int, float, np.number)) or not math.isfinite(duration) or duration <= 0:
            raise _fail(where, row, "duration", f"expected a finite number of seconds > 0, got {duration!r}")
        if role not in ROLES:
            raise _fail(where, row, "role", f"expected one of {list(ROLES)}, got {role!r}")
    _check_targets(sel, users, where)
    _check_durations(sel, labels.video_durations, where, end_tolerance)


def _check_targets(sel: pd.DataFrame, users: pd.DataFrame, where: str) -> None:
    """One target video per user; no history clip on the user's own target video."""
    target = sel[sel["role"] == "target"]
    per_user = target.groupby("user_id", sort=False)["video_id"].unique()
    for user in users["user_id"]:
        videos = per_user.get(user)
        if videos is None:
            raise DataError(f"{where}: user {user!r}: no target selection (role 'target'); each user needs one")
        if len(videos) != 1:
            row = int(target.index[(target["user_id"] == user).to_numpy()][-1])
            raise _fail(where, row, "video_id", f"user {user!r} has target selections on {len(videos)} videos "
                        f"({sorted(videos)}); expected one target video per user")
    own = sel["user_id"].map(lambda u: per_user[u][0])
    leak = (sel["role"] == "history") & (sel["video_id"] == own)
    if leak.any():
        row = int(np.flatnonzero(leak.to_numpy())[0])
        raise _fail(where, row, "video_id", f"history clip of user {sel['user_id'].iloc[row]!r} on that user's target "
                    f"video {sel['video_id'].iloc[row]!r}; history must come from other videos")


def _check_durations(sel: pd.DataFrame, durations: Mapping[str, float], where: str, tolerance: float) -> None:
    """A selection ends within the video's known duration."""
    ends = (sel["start"] + sel["duration"]).to_numpy(dtype=np.float64)
    known = sel["video_id"].map(lambda v: durations.get(v, math.nan)).to_numpy(dtype=np.float64)
    bad = np.flatnonzero(np.isfinite(known) & (ends > known + tolerance))
    if bad.size:
        row = int(bad[0])
        raise _fail(where, row, "duration", f"selection ends at {ends[row]:g} s, after the end of video "
                    f"{sel['video_id'].iloc[row]!r} ({known[row]:g} s)")


def check_against_features(data: PHDData, where: str = SELECTIONS) -> None:
    """Every selected video has features, and every selection ends within its video's segments."""
    sel = data.labels.selections
    lengths = {v: video.n_segments * data.segment_seconds for v, video in data.videos.items()}
    for row, (video, start, duration) in enumerate(zip(sel["video_id"], sel["start"], sel["duration"])):
        if video not in lengths:
            raise _fail(where, row, "video_id", f"video {video!r} has no segments in {SEGMENTS}")
        if start + duration > lengths[video] + END_TOLERANCE_S:
            raise _fail(where, row, "duration", f"selection ends at {start + duration:g} s, after the last segment "
                        f"of video {video!r} ({lengths[video]:g} s)")


def _videos_from_table(df: pd.DataFrame, where: str) -> Dict[str, PHDVideo]:
    _require_columns(df, ("video_id", "segment", "visual", "text"), where)
    _check_strings(df, "video_id", where)
    widths: Dict[str, int] = {}
    for column in ("visual", "text"):
        for row, value in enumerate(df[column].tolist()):
            arr = np.asarray(value if value is not None else [], dtype=np.float64)
            if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
                raise _fail(where, row, column, "expected a non-empty list of finite numbers")
            if widths.setdefault(column, arr.size) != arr.size:
                raise _fail(where, row, column, f"expected {widths[column]} numbers (the table's width), "
                            f"got {arr.size}")
    videos: Dict[str, PHDVideo] = {}
    for video, group in df.groupby("video_id", sort=False):
        seg = group["segment"].to_numpy()
        order = np.argsort(seg, kind="stable")
        if not np.array_equal(seg[order], np.arange(len(seg))):
            row = int(group.index[order][np.flatnonzero(seg[order] != np.arange(len(seg)))[0]])
            raise _fail(where, row, "segment", f"video {video!r}: segments must be 0 .. {len(seg) - 1}, each once")
        videos[str(video)] = PHDVideo(
            np.stack(group["visual"].to_numpy()[order]).astype(np.float32),
            np.stack(group["text"].to_numpy()[order]).astype(np.float32),
        )
    return videos


def check_segment_seconds(value: object, where: str = MANIFEST) -> None:
    """``segment_seconds`` is a number > 0 covering a whole number of 30 fps frames (the evaluation's and
    the segment labels' frames; e.g. 0.25 s = 7.5 frames is refused)."""
    if not (isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)
            and value > 0):
        raise DataError(f"{where}: segment_seconds: expected a number > 0, got {value!r}")
    frames = float(value) * FPS
    if abs(frames - round(frames)) > 1e-6:
        raise DataError(f"{where}: segment_seconds: expected a whole number of {FPS} fps frames per segment, "
                        f"got {value!r} s = {frames:g} frames")


def check_data(data: PHDData) -> None:
    """All checks of a whole data set (label side, features, their agreement)."""
    check_segment_seconds(data.segment_seconds)
    if not data.videos:
        raise DataError(f"{SEGMENTS}: no videos")
    check_label_side(data.labels)
    check_against_features(data)


def write_phd(path: PathLike, data: PHDData) -> Path:
    """Write ``data`` (checked first) as a PHD directory (atomic per file); returns the path."""
    check_data(data)
    out = Path(path)
    rows = [(v, i, video.visual[i].tolist(), video.text[i].tolist())
            for v, video in data.videos.items() for i in range(video.n_segments)]
    seg = pa.table({
        "video_id": pa.array([r[0] for r in rows], pa.string()),
        "segment": pa.array([r[1] for r in rows], pa.int64()),
        "visual": pa.array([r[2] for r in rows], pa.list_(pa.float32())),
        "text": pa.array([r[3] for r in rows], pa.list_(pa.float32())),
    })
    atomic_write_parquet(out / SEGMENTS, seg)
    sel = data.labels.selections[list(SELECTION_COLUMNS)].reset_index(drop=True)
    atomic_write_parquet(out / SELECTIONS, pa.Table.from_pandas(sel, preserve_index=False))
    users = data.labels.users[list(USER_COLUMNS)].reset_index(drop=True)
    atomic_write_parquet(out / USERS, pa.Table.from_pandas(users, preserve_index=False))
    atomic_write_json(out / MANIFEST, {"format": FORMAT, "version": VERSION, "segment_seconds": data.segment_seconds})
    return out


def read_phd(path: PathLike) -> PHDData:
    """Read and check a PHD directory; a missing file is a ``FileNotFoundError``, bad content a ``DataError``."""
    root = Path(path)
    for name in (MANIFEST, SEGMENTS, SELECTIONS, USERS):
        if not (root / name).is_file():
            raise FileNotFoundError(2, "missing file of a PHD directory", str(root / name))
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{root / MANIFEST}: not JSON ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"{root / MANIFEST}: format: expected {FORMAT!r}, got {manifest.get('format')!r}")
    if manifest.get("version") != VERSION:
        raise DataError(f"{root / MANIFEST}: version: expected {VERSION}, got {manifest.get('version')!r}")
    seg = pq.read_table(root / SEGMENTS).to_pandas()
    sel = pq.read_table(root / SELECTIONS).to_pandas()
    users = pq.read_table(root / USERS).to_pandas()
    videos = _videos_from_table(seg, str(root / SEGMENTS))
    check_segment_seconds(manifest.get("segment_seconds"), str(root / MANIFEST))
    data = PHDData(float(manifest["segment_seconds"]), videos, PHDLabels(sel, users, {}))
    check_label_side(data.labels, str(root / SELECTIONS), str(root / USERS))
    check_against_features(data, str(root / SELECTIONS))
    return data
