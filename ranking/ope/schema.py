"""The logged-data format of off-policy evaluation: a directory of two Parquet files and a JSON note.

``impressions.parquet``: one row per impression (an item shown at a position of a returned list)

=====================  ========  ==============================================================
column                 type      meaning
=====================  ========  ==============================================================
``request_id``         int64     one returned list (a feed opening); positions 0..L-1 all present
``session_id``         int64     the unit the bootstrap resamples (a session or a user); one per request
``position``           int       0-based slot in the list
``item_id``            int64     what was shown (once per request)
``propensity``         float     the logging policy's probability of showing this item at this position
                                 in this request (marginal over lists), in (0, 1]
``click``              int       0 / 1
``watch_s``            float     seconds watched after the click (0 without one), finite, >= 0
``prefix_propensity``  float     optional: the logging probability of the request's items at positions
                                 0..position in that order; at position 0 it equals ``propensity``,
                                 and it never grows down the list (needed by IPS, SNIPS, RIPS and DR)
=====================  ========  ==============================================================

``candidates.parquet``: one row per (request, candidate item) the policies rank: ``request_id``,
``item_id`` and one float column per score term (``ctr``, ``lvtr``, ``content``...), the inputs of the
blended formulas; every shown item is a candidate of its request.

``log.json``: how the log was made (the logging formula and temperature, the list length, its source).

:func:`read_logs` refuses a log it cannot evaluate with one line naming the file, the row (0-based, in the
file's order) and the field: a propensity of 0 or above 1, a missing position, a duplicate impression, an
impression without its candidate row, a null or non-finite value.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kuaihl_rec.data.io import DataError, atomic_write_json, atomic_write_parquet

#: The reward columns of an impression row that a policy value is estimated for.
REWARDS = ("click", "watch_s")

__all__ = [
    "REWARDS",
    "CANDIDATES_FILE",
    "IMPRESSION_COLUMNS",
    "IMPRESSIONS_FILE",
    "LOG_META_FILE",
    "LoggedData",
    "read_logs",
    "strict_json",
    "validate_candidates",
    "validate_impressions",
    "write_logs",
]

IMPRESSIONS_FILE = "impressions.parquet"
CANDIDATES_FILE = "candidates.parquet"
LOG_META_FILE = "log.json"
#: Required impression columns and their kind (``i`` integer, ``f`` float).
IMPRESSION_COLUMNS: Dict[str, str] = {"request_id": "i", "session_id": "i", "position": "i", "item_id": "i",
                                      "propensity": "f", "click": "i", "watch_s": "f"}
OPTIONAL_COLUMNS: Dict[str, str] = {"prefix_propensity": "f"}
_KEY_COLUMNS = ("request_id", "item_id")
#: Slack for float comparisons between propensities of one request.
_TOL = 1e-9


@dataclasses.dataclass
class LoggedData:
    """A validated log: impressions sorted by (request, position), candidates sorted by (request, item)."""

    impressions: pd.DataFrame
    candidates: pd.DataFrame
    meta: Dict[str, Any]
    path: Optional[Path] = None

    @property
    def term_columns(self) -> Sequence[str]:
        return [c for c in self.candidates.columns if c not in _KEY_COLUMNS]

    @property
    def has_prefix(self) -> bool:
        return "prefix_propensity" in self.impressions.columns


def _first_bad(where: str, df: pd.DataFrame, bad: np.ndarray, field: str, expected: str) -> DataError:
    row = int(np.flatnonzero(bad)[0])
    value = df[field].iloc[row] if field in df.columns else None
    value = value.item() if isinstance(value, np.generic) else value
    return DataError(f"{where}: row {int(df.index[row])}: {field} = {value!r}; expected {expected} "
                     f"({int(bad.sum())} bad row(s))")


def _check_columns(where: str, df: pd.DataFrame, columns: Dict[str, str]) -> None:
    for name, kind in columns.items():
        if name not in df.columns:
            raise DataError(f"{where}: no column {name!r}; expected columns {sorted(columns)}")
        column = df[name]
        if column.isna().any():
            raise _first_bad(where, df, column.isna().to_numpy(), name, "a value (no nulls)")
        if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column) and kind == "f":
            raise DataError(f"{where}: column {name!r} has type {column.dtype}; expected "
                            f"{'an integer' if kind == 'i' else 'a float'} column")
        if kind == "i" and not pd.api.types.is_integer_dtype(column) and not pd.api.types.is_bool_dtype(column):
            values = column.to_numpy(np.float64)
            bad = values != np.round(values)
            if bad.any():
                raise _first_bad(where, df, bad, name, "an integer")
        if kind == "f" and not np.isfinite(column.to_numpy(np.float64)).all():
            raise _first_bad(where, df, ~np.isfinite(column.to_numpy(np.float64)), name, "a finite number")


def _check_lists(where: str, df: pd.DataFrame) -> None:
    """Positions 0..L-1 once each per request, each item once per request, one session per request."""
    dup = df.duplicated(["request_id", "position"], keep="first").to_numpy()
    if dup.any():
        raise _first_bad(where, df, dup, "position", "one impression per (request_id, position): duplicate impression")
    dup = df.duplicated(["request_id", "item_id"], keep="first").to_numpy()
    if dup.any():
        raise _first_bad(where, df, dup, "item_id", "each item once per request: duplicate impression")
    grouped = df.groupby("request_id", sort=False)
    n_rows, top = grouped["position"].transform("size"), grouped["position"].transform("max")
    bad = (df["position"] < 0).to_numpy() | (top + 1 != n_rows).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        request = int(df["request_id"].iloc[row])
        have = sorted(int(p) for p in df.loc[df["request_id"] == request, "position"])
        raise DataError(f"{where}: row {int(df.index[row])}: request_id {request} has positions {have}; expected "
                        f"positions 0..{len(have) - 1} (missing positions)")
    bad = (grouped["session_id"].transform("nunique") > 1).to_numpy()
    if bad.any():
        raise _first_bad(where, df, bad, "session_id", "one session_id per request_id")


def validate_impressions(df: pd.DataFrame, where: str = IMPRESSIONS_FILE) -> pd.DataFrame:
    """The impressions, checked (see the module docstring) and sorted by (request, position)."""
    df = df.reset_index(drop=True)
    columns = {**IMPRESSION_COLUMNS, **{k: v for k, v in OPTIONAL_COLUMNS.items() if k in df.columns}}
    _check_columns(where, df, columns)
    if len(df) == 0:
        raise DataError(f"{where}: no impressions")
    p = df["propensity"].to_numpy(np.float64)
    bad = ~((p > 0) & (p <= 1))
    if bad.any():
        raise _first_bad(where, df, bad, "propensity", "a probability in (0, 1] (a propensity of 0 cannot be logged; "
                         "above 1 is not a probability)")
    click = df["click"].to_numpy(np.float64)
    if not np.isin(click, (0, 1)).all():
        raise _first_bad(where, df, ~np.isin(click, (0, 1)), "click", "0 or 1")
    watch = df["watch_s"].to_numpy(np.float64)
    if (watch < 0).any():
        raise _first_bad(where, df, watch < 0, "watch_s", "seconds >= 0")
    _check_lists(where, df)
    df = df.sort_values(["request_id", "position"], kind="stable")
    if "prefix_propensity" in df.columns:
        _check_prefix(where, df)
    return df.astype({"request_id": np.int64, "session_id": np.int64, "position": np.int64, "item_id": np.int64,
                      "click": np.int64})


def _check_prefix(where: str, df: pd.DataFrame) -> None:
    """prefix_propensity in (0, 1], equal to propensity at position 0, never growing down a list."""
    prefix = df["prefix_propensity"].to_numpy(np.float64)
    bad = ~((prefix > 0) & (prefix <= 1))
    first = df["position"].to_numpy() == 0
    bad |= first & (np.abs(prefix - df["propensity"].to_numpy(np.float64)) > _TOL)
    previous = np.r_[np.inf, prefix[:-1]]
    bad |= ~first & (prefix > previous * (1 + _TOL))
    bad |= prefix > df["propensity"].to_numpy(np.float64) * (1 + _TOL)
    if bad.any():
        raise _first_bad(where, df, bad, "prefix_propensity",
                         "a probability in (0, 1] that equals propensity at position 0, is at most the row's "
                         "propensity and never grows down the list")


def validate_candidates(cand: pd.DataFrame, impressions: pd.DataFrame, where: str = CANDIDATES_FILE) -> pd.DataFrame:
    """The candidates, checked against the impressions and sorted by (request, item)."""
    cand = cand.reset_index(drop=True)
    terms = {c: "f" for c in cand.columns if c not in _KEY_COLUMNS}
    _check_columns(where, cand, {"request_id": "i", "item_id": "i", **terms})
    if not terms:
        raise DataError(f"{where}: no score columns; expected request_id, item_id and one column per term")
    dup = cand.duplicated(list(_KEY_COLUMNS)).to_numpy()
    if dup.any():
        raise _first_bad(where, cand, dup, "item_id", "each candidate once per request")
    shown = impressions[list(_KEY_COLUMNS)].merge(cand[list(_KEY_COLUMNS)].assign(_has=True), how="left",
                                                  on=list(_KEY_COLUMNS))
    missing = shown["_has"].isna().to_numpy()
    if missing.any():
        row = impressions.iloc[int(np.flatnonzero(missing)[0])]
        raise DataError(f"{where}: no candidate row for the shown item_id {int(row['item_id'])} of request_id "
                        f"{int(row['request_id'])} ({int(missing.sum())} shown item(s) without a candidate row)")
    extra = ~cand["request_id"].isin(impressions["request_id"]).to_numpy()
    if extra.any():
        raise _first_bad(where, cand, extra, "request_id", "a request that has impressions")
    return cand.sort_values(list(_KEY_COLUMNS), kind="stable").astype({"request_id": np.int64, "item_id": np.int64})


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, +-inf, numpy's too) replaced by None, so that the JSON written
    is strict (``json.dumps`` would write ``NaN`` / ``Infinity``, which strict parsers refuse)."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict_json(obj.tolist())
    if isinstance(obj, (float, np.floating)) and not math.isfinite(float(obj)):
        return None
    return obj


def _read_parquet(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (a log directory holds {IMPRESSIONS_FILE}, {CANDIDATES_FILE}, "
                                f"{LOG_META_FILE})")
    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc


def read_logs(path: Union[str, Path]) -> LoggedData:
    """Read and validate a log directory (see the module docstring)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such log directory")
    impressions = validate_impressions(_read_parquet(path / IMPRESSIONS_FILE), str(path / IMPRESSIONS_FILE))
    candidates = validate_candidates(_read_parquet(path / CANDIDATES_FILE), impressions, str(path / CANDIDATES_FILE))
    meta_path = path / LOG_META_FILE
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: no such file; a log directory holds {IMPRESSIONS_FILE}, {CANDIDATES_FILE} and "
                        f"{LOG_META_FILE} (written last: without it the log is unfinished)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{meta_path}: not JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    return LoggedData(impressions, candidates, meta, path)


def write_logs(path: Union[str, Path], impressions: pd.DataFrame, candidates: pd.DataFrame,
               meta: Dict[str, Any]) -> Path:
    """Validate and write a log directory atomically file by file (``meta`` last: a log without it is unfinished;
    an older ``log.json`` is removed before the tables are replaced). Non-finite floats of ``meta`` become null."""
    path = Path(path)
    impressions = validate_impressions(impressions, "impressions")
    candidates = validate_candidates(candidates, impressions, "candidates")
    (path / LOG_META_FILE).unlink(missing_ok=True)  # an old log.json (its truth) must not describe the new tables
    atomic_write_parquet(path / IMPRESSIONS_FILE, pa.Table.from_pandas(impressions, preserve_index=False))
    atomic_write_parquet(path / CANDIDATES_FILE, pa.Table.from_pandas(candidates, preserve_index=False))
    atomic_write_json(path / LOG_META_FILE, strict_json(meta))
    return path
