"""What a score source is given (:class:`ScoreContext`) and what it answers (:class:`ScoreSource`).

A score is keyed by ``(live_id, segment u)``: the score of room ``live_id`` while it broadcasts
segment ``u``, from what a production system knows at that moment (segments ``< u``). The sources
themselves are in :mod:`ranking.scores` and :mod:`ranking.observable`.

``ranking`` does not train or evaluate models. A ``kuaihl train`` run directory is scored by a
function the caller hands over (:data:`RunScorer`); the application layer passes
``kuaihl_rec.train.evaluate.evaluate_run``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Protocol, Tuple

import numpy as np
import pandas as pd

__all__ = ["CalibrationPairs", "OBSERVABLE_COLUMNS", "LeakageError", "PairIndex", "RunScorer", "ScoreContext",
           "ScoreSource"]

#: Observable columns of the segment table a production system has after a segment ends.
OBSERVABLE_COLUMNS: Tuple[str, ...] = (
    "lvtr", "ctr", "n_exposures", "n_viewers", "n_long_viewers", "n_comments", "n_gifts",
    "n_clicks", "n_likes", "n_follows", "n_entries", "n_exits",
)
#: ``(scores, labels)`` of a source on the calibration split (``labels`` None: scores only), or None.
CalibrationPairs = Optional[Tuple[np.ndarray, Optional[np.ndarray]]]

class RunScorer(Protocol):
    """``score_run(run_dir, world_dir, split, predictions_out=path) -> None``.

    Scores the ``kuaihl train`` run in ``run_dir`` on ``split`` of the world in ``world_dir`` and
    writes the predictions Parquet file ``kuaihl eval --predictions`` writes (``live_id, segment,
    label, score``, one row per target segment) to ``path`` (its directory exists). ``predictions_out``
    is passed by keyword, so ``functools.partial(kuaihl_rec.train.evaluate.evaluate_run, progress=False)``
    is one; what it returns is ignored.
    """

    def __call__(self, run_dir: Path, world_dir: Path, split: str, predictions_out: Path) -> object: ...


class LeakageError(ValueError):
    """A score source that would use information from the segment on air or later."""


@dataclasses.dataclass
class ScoreContext:
    """What a source may use to produce scores for the simulated rows.

    live_id, segment: the rows to score, sorted by (live_id, segment), unique
    obs:              observable columns of those rows (aligned), for observable terms
    truth:            hidden truth of those rows (aligned), for truth terms only
    val_obs:          observable table of the calibration split (for built-in terms' calibration)
    world_dir:        the world directory (run directories are scored on it)
    split / cal_split: the simulated split and the calibration split
    cache_dir:        where run-directory predictions are written (None: the run directory)
    progress:         whether a source may show progress (none of ours does; a ``score_run`` binds its own)
    score_run:        the function that scores a run directory (:data:`RunScorer`); None: run
                      directories cannot be scored (their cached predictions are still read)
    """

    live_id: np.ndarray
    segment: np.ndarray
    obs: Optional[pd.DataFrame] = None
    truth: Optional[pd.DataFrame] = None
    val_obs: Optional[pd.DataFrame] = None
    world_dir: Optional[Path] = None
    split: str = "test"
    cal_split: str = "val"
    cache_dir: Optional[Path] = None
    progress: bool = False
    score_run: Optional[RunScorer] = None


def _dense_codes(values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The rank of each ``query`` value among the sorted unique ``values`` (-1 where it is not one of them)."""
    if len(values) == 0:
        return np.full(len(query), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(values, query), len(values) - 1)
    return np.where(values[pos] == query, pos, -1).astype(np.int64)


class PairIndex:
    """Exact lookup of ``(live_id, segment)`` pairs in a table of pairs, for any int64 ids.

    A pair is coded as ``rank(live_id) * n_segments + rank(segment)``, the ranks taken among the
    table's own distinct values: codes sort like the pairs, never collide and never overflow
    (they stay below ``n_rows ** 2``), whatever the ids are (ids 2^58 apart, ids near 2^63).

    >>> index = PairIndex([2**62, 2**62, 7], [3, 4, 3])
    >>> index.positions([7, 2**62, 2**62 + 2**58, 7], [3, 4, 4, 9]).tolist()
    [2, 1, -1, -1]
    """

    def __init__(self, live_id, segment) -> None:
        live = np.asarray(live_id, dtype=np.int64)
        seg = np.asarray(segment, dtype=np.int64)
        if live.shape != seg.shape:
            raise ValueError(f"live_id and segment differ in shape: {live.shape} vs {seg.shape}")
        self._live_values = np.unique(live)
        self._seg_values = np.unique(seg)
        codes = self.codes(live, seg)
        self._order = np.argsort(codes, kind="stable")
        self._sorted_codes = codes[self._order]

    def __len__(self) -> int:
        return len(self._sorted_codes)

    def codes(self, live_id, segment) -> np.ndarray:
        """One int64 code per pair, ordered like the pairs; -1 for a pair that cannot be in the table."""
        live = _dense_codes(self._live_values, np.asarray(live_id, dtype=np.int64))
        seg = _dense_codes(self._seg_values, np.asarray(segment, dtype=np.int64))
        n_seg = np.int64(len(self._seg_values))
        return np.where((live >= 0) & (seg >= 0), live * n_seg + seg, -1)

    def has_duplicates(self) -> bool:
        """Whether some pair occurs more than once in the table."""
        return bool(len(self) and np.any(np.diff(self._sorted_codes) == 0))

    def positions(self, live_id, segment) -> np.ndarray:
        """The table row of each queried pair (its first row in table order when it repeats), -1 if absent."""
        want = self.codes(live_id, segment)
        if len(self) == 0:
            return np.full(len(want), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._sorted_codes, want), len(self) - 1)
        hit = (want >= 0) & (self._sorted_codes[pos] == want)
        return np.where(hit, self._order[pos], -1).astype(np.int64)


class ScoreSource:
    """Base class: ``values(ctx)`` gives one score per row of ``ctx`` (NaN where the source has none)."""

    name: str = "source"
    #: True for sources that read the hidden truth (oracle arms); never a model's term.
    oracle: bool = False
    #: The label this source's scores predict, for calibration (None: unknown).
    label: Optional[str] = None

    def values(self, ctx: ScoreContext) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def calibration_pairs(self, ctx: ScoreContext) -> CalibrationPairs:
        """``(scores, labels)`` on the calibration split (``labels`` None when the source has scores but
        no labels there), or None when the source has no calibration data."""
        return None

    def describe(self) -> str:
        return self.name
