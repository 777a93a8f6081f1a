"""Reader for the PHD-GIFs (PHD^2) CSV release (Garcia del Molino and Gygli, 2018): the label side
of the PHD contract (:mod:`kuaihl_rec.data.phd.contract`; docs/HIGHLIGHTS.md).

The release has one CSV per split, one row per GIF a user made::

    youtubeId,start,duration,user_id,video_duration,is_last
    abc123XYZ_0,12.5,4.0,1001,215.3,0

``start`` and ``duration`` in seconds; ``video_duration`` in seconds, ``-1`` where unknown;
``is_last`` (``0``/``1``, ``true``/``false`` in any case) marks the GIF(s) of the video that is the
user's test target; the user's other GIFs are their history. The release has no features; they are
supplied separately (:func:`kuaihl_rec.data.phd.contract.check_against_features`).

Decisions (the README is silent):

* a row with ``is_last = 0`` on the video of the user's ``is_last`` row is a **target** selection,
  not history: the PHD evaluation takes the union of the user's selections on the target video,
  and a history clip from the target video would hand the answer to the model;
* a user whose ``is_last`` rows lie on two videos, or who has none, is an error (one target video
  per user); a user in two split files is an error (split by user);
* rows of one video that give two different known durations (more than
  :data:`DURATION_TOLERANCE_S` apart) are an error; a selection may end at most
  :data:`DURATION_TOLERANCE_S` after the known duration (the release rounds its seconds);
* duplicate rows are kept (the truth is a union, a duplicate changes nothing).

Every error is one line: the file, the CSV line (1 = the header), the field, what was expected.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Mapping, Tuple, Union

import pandas as pd

from kuaihl_rec.data.io import DataError
from kuaihl_rec.data.phd.contract import SPLITS, PHDLabels, check_label_side

PathLike = Union[str, Path]

COLUMNS = ("youtubeId", "start", "duration", "user_id", "video_duration", "is_last")
DURATION_TOLERANCE_S = 0.5
_TRUE = {"1", "true"}
_FALSE = {"0", "false"}


def _line_error(path: PathLike, index: int, field: str, message: str) -> DataError:
    return DataError(f"{path}: line {index + 2}: {field}: {message}")


def _number(path: PathLike, index: int, field: str, text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise _line_error(path, index, field, f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value):
        raise _line_error(path, index, field, f"expected a finite number, got {text!r}")
    return value


def _parse_row(path: PathLike, index: int, row: Mapping[str, str]) -> Tuple[str, str, float, float, float, bool]:
    video, user = (row["youtubeId"] or "").strip(), (row["user_id"] or "").strip()
    if not video:
        raise _line_error(path, index, "youtubeId", "expected a video id, got an empty field")
    if not user:
        raise _line_error(path, index, "user_id", "expected a user id, got an empty field")
    start = _number(path, index, "start", row["start"])
    if start < 0:
        raise _line_error(path, index, "start", f"expected seconds >= 0, got {row['start']!r}")
    duration = _number(path, index, "duration", row["duration"])
    if duration <= 0:
        raise _line_error(path, index, "duration", f"expected seconds > 0, got {row['duration']!r}")
    video_duration = _number(path, index, "video_duration", row["video_duration"])
    if video_duration == -1:
        video_duration = math.nan
    elif video_duration <= 0:
        raise _line_error(path, index, "video_duration", f"expected seconds > 0 or -1 (unknown), got "
                          f"{row['video_duration']!r}")
    flag = (row["is_last"] or "").strip().lower()
    if flag not in _TRUE | _FALSE:
        raise _line_error(path, index, "is_last", f"expected 0/1 or true/false, got {row['is_last']!r}")
    return video, user, start, duration, video_duration, flag in _TRUE


def read_gifs_csv(path: PathLike) -> pd.DataFrame:
    """One split file -> rows ``youtubeId, start, duration, user_id, video_duration (NaN = unknown),
    is_last (bool), line`` after the field checks."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file; expected the header {','.join(COLUMNS)}") from None
    missing = [c for c in COLUMNS if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected {list(COLUMNS)}")
    rows = [_parse_row(path, i, r) for i, r in enumerate(raw[list(COLUMNS)].to_dict("records"))]
    out = pd.DataFrame(rows, columns=["youtubeId", "user_id", "start", "duration", "video_duration", "is_last"])
    out["line"] = range(2, len(out) + 2)
    return out


def _video_durations(frames: List[Tuple[PathLike, pd.DataFrame]]) -> Dict[str, float]:
    """Known duration per video (the largest of its rows); refuses a video whose rows' durations span more
    than :data:`DURATION_TOLERANCE_S` (min and max kept per video, so the verdict does not depend on row order)."""
    low: Dict[str, Tuple[float, PathLike, int]] = {}
    high: Dict[str, Tuple[float, PathLike, int]] = {}
    for path, df in frames:
        for video, value, line in zip(df["youtubeId"], df["video_duration"], df["line"]):
            if math.isnan(value):
                continue
            if video not in low or value < low[video][0]:
                low[video] = (value, path, line)
            if video not in high or value > high[video][0]:
                high[video] = (value, path, line)
            if high[video][0] - low[video][0] > DURATION_TOLERANCE_S:
                other = low[video] if value >= high[video][0] else high[video]
                raise DataError(f"{path}: line {line}: video_duration: video {video!r} is {value:g} s here but "
                                f"{other[0]:g} s at {other[1]} line {other[2]}")
    return {video: v[0] for video, v in high.items()}


def _labels_of_split(path: PathLike, df: pd.DataFrame, split: str) -> Tuple[pd.DataFrame, List[Tuple[str, str]]]:
    last = df[df["is_last"]]
    targets = last.groupby("user_id", sort=False)["youtubeId"].unique()
    for user in df["user_id"].unique():
        videos = targets.get(user)
        if videos is None:
            line = int(df.loc[df["user_id"] == user, "line"].iloc[0])
            raise DataError(f"{path}: line {line}: is_last: user {user!r} has no row with is_last = 1 "
                            "(no target video)")
        if len(videos) > 1:
            line = int(last.loc[last["user_id"] == user, "line"].iloc[-1])
            raise DataError(f"{path}: line {line}: is_last: user {user!r} has is_last rows on {len(videos)} "
                            f"videos {sorted(videos)}; expected one target video per user")
    own = df["user_id"].map(lambda u: targets[u][0])
    role = (df["youtubeId"] == own).map({True: "target", False: "history"})
    sel = pd.DataFrame({
        "user_id": df["user_id"], "video_id": df["youtubeId"], "start": df["start"].astype(float),
        "duration": df["duration"].astype(float), "role": role,
    })
    return sel, [(u, split) for u in df["user_id"].unique()]


def read_phd_gifs(files: Mapping[str, PathLike]) -> PHDLabels:
    """The PHD-GIFs CSV files of each split (``{"train": path, "test": path, ...}``) -> :class:`PHDLabels`.

    Raises ``FileNotFoundError`` for a missing file, :class:`~kuaihl_rec.data.io.DataError` (one line
    naming file, line and field) for anything the module doc lists.
    """
    frames: List[Tuple[PathLike, pd.DataFrame]] = []
    selections, users = [], []
    seen_users: Dict[str, PathLike] = {}
    for split, path in files.items():
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        if not Path(path).is_file():
            raise FileNotFoundError(2, "no such PHD-GIFs file", str(path))
        df = read_gifs_csv(path)
        for user, line in zip(df["user_id"], df["line"]):
            if user in seen_users and seen_users[user] != path:
                raise DataError(f"{path}: line {line}: user_id: user {user!r} is also in {seen_users[user]} "
                                "(users are split by user: one file each)")
            seen_users.setdefault(user, path)
        frames.append((path, df))
        sel, split_users = _labels_of_split(path, df, split)
        selections.append(sel)
        users.extend(split_users)
    durations = _video_durations(frames)
    for path, df in frames:
        for video, start, duration, line in zip(df["youtubeId"], df["start"], df["duration"], df["line"]):
            known = durations.get(video, math.nan)
            if start + duration > known + DURATION_TOLERANCE_S:
                raise DataError(f"{path}: line {line}: duration: GIF ends at {start + duration:g} s, after the end "
                                f"of video {video!r} ({known:g} s)")
    labels = PHDLabels(
        pd.concat(selections, ignore_index=True),
        pd.DataFrame(users, columns=["user_id", "split"]),
        {**durations, **{v: math.nan for path, df in frames for v in df["youtubeId"] if v not in durations}},
    )
    check_label_side(labels, "PHD-GIFs selections", "PHD-GIFs users", DURATION_TOLERANCE_S)
    return labels
