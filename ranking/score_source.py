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

__all__ = ["CalibrationPairs", "OBSERVABLE_COLUMNS", "LeakageError", "RunScorer", "ScoreContext", "ScoreSource",
           "score_keys"]

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


def score_keys(live_id, segment) -> np.ndarray:
    """One int64 key per (live_id, segment) pair, ordered like the pairs."""
    return np.asarray(live_id, dtype=np.int64) * np.int64(1 << 20) + np.asarray(segment, dtype=np.int64)


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
