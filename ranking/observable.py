"""Observable (production-like) score terms and the causality check they must pass.

An observable term is a function of the observable segment table (counters and labels of segments
that have ended): :class:`ObservableTerm`. The built-in ones (:data:`BUILTIN_TERMS`) are what a
production system has without any model: ``prev_ctr``, ``prev_lvtr``, ``cum_ctr``, ``cum_lvtr``,
``prev_viewers``. :func:`check_causal` refuses a term whose score for target segment u reads
segment u or later (or an LVTR that is not complete yet).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import pandas as pd

from kuaihl_rec.data.schema import LABEL_DELAY_SEGMENTS
from ranking.score_source import CalibrationPairs, LeakageError, ScoreContext, ScoreSource

__all__ = [
    "BUILTIN_TERMS",
    "DELAYED_COLUMNS",
    "LVTR_DELAY",
    "ObservableTerm",
    "check_causal",
    "cum_ctr",
    "cum_lvtr",
    "prev_ctr",
    "prev_lvtr",
    "prev_viewers",
]

#: Observable columns that are complete only some segments after their segment ends: LVTR counts
#: views longer than 60 s, so the LVTR (and its numerator) of segment j is known at the end of
#: segment j + 2 (README "When a label is known"; ``WindowConfig.label_delay``).
DELAYED_COLUMNS: Dict[str, int] = {"lvtr": LABEL_DELAY_SEGMENTS["lvtr"], "n_long_viewers": LABEL_DELAY_SEGMENTS["lvtr"]}
LVTR_DELAY = DELAYED_COLUMNS["lvtr"]
#: Columns a causality check leaves as they are (keys and metadata, not observations).
_KEY_COLUMNS = ("live_id", "segment", "streamer_id", "timestamp", "split")


def value_before(obs: pd.DataFrame, column: str, lag: int = 1) -> np.ndarray:
    """Value of ``column`` at segment u - ``lag`` of the same room (NaN where the room has none)."""
    live = obs["live_id"].to_numpy()
    seg = obs["segment"].to_numpy()
    val = obs[column].to_numpy(dtype=np.float64)
    out = np.full(len(obs), np.nan)
    if lag < len(obs):
        same = (live[lag:] == live[:-lag]) & (seg[lag:] == seg[:-lag] + lag)
        out[lag:][same] = val[:-lag][same]
    return out


def sum_before(obs: pd.DataFrame, column: str, lag: int = 1) -> np.ndarray:
    """Sum of ``column`` over segments <= u - ``lag`` of the same room (0 where there are none)."""
    live = obs["live_id"].to_numpy()
    seg = obs["segment"].to_numpy().astype(np.int64)
    val = obs[column].to_numpy(dtype=np.float64)
    first = np.r_[True, live[1:] != live[:-1]]
    room = np.cumsum(first) - 1
    start = np.flatnonzero(first)[room]
    inclusive = np.cumsum(val)
    before_room = np.where(start > 0, inclusive[start - 1], 0.0)
    key = room.astype(np.int64) * (1 << 32) + seg
    pos = np.searchsorted(key, key - lag, side="right") - 1  # last row of the room with segment <= u - lag
    ok = (pos >= 0) & (pos >= start)
    return np.where(ok, inclusive[np.maximum(pos, 0)] - before_room, 0.0)


def prev_ctr(obs: pd.DataFrame) -> np.ndarray:
    """CTR (clicks / exposures) of segment u - 1: the freshest CTR counter at tick u."""
    return value_before(obs, "ctr")


def prev_lvtr(obs: pd.DataFrame) -> np.ndarray:
    """The last complete LVTR at tick u: the label of segment u - 3 (LVTR of u - 1 and u - 2 still
    waits for its 60 s outcome). ``kuaihl eval`` reports it as ``last_complete_label``."""
    return value_before(obs, "lvtr", lag=1 + LVTR_DELAY)


def cum_ctr(obs: pd.DataFrame, prior_clicks: float = 1.0, prior_exposures: float = 10.0) -> np.ndarray:
    """The room's smoothed CTR over segments < u: (clicks + 1) / (exposures + 10); NaN at u = 0."""
    clicks, exposures = sum_before(obs, "n_clicks"), sum_before(obs, "n_exposures")
    out = (clicks + prior_clicks) / (exposures + prior_exposures)
    out[obs["segment"].to_numpy() == 0] = np.nan
    return out


def cum_lvtr(obs: pd.DataFrame, prior_long: float = 3.0, prior_viewers: float = 5.0) -> np.ndarray:
    """The room's smoothed LVTR over its complete segments (<= u - 3): (long viewers + 3) /
    (viewers + 5); the prior alone until the room has a complete segment; NaN at u = 0."""
    lag = 1 + LVTR_DELAY
    long_viewers, viewers = sum_before(obs, "n_long_viewers", lag), sum_before(obs, "n_viewers", lag)
    out = (long_viewers + prior_long) / (viewers + prior_viewers)
    out[obs["segment"].to_numpy() == 0] = np.nan
    return out


def prev_viewers(obs: pd.DataFrame) -> np.ndarray:
    """log(1 + viewers) of segment u - 1 (the room's current audience size)."""
    return np.log1p(value_before(obs, "n_viewers"))


class ObservableTerm(ScoreSource):
    """A term computed from the observable segment table: ``fn(obs) -> float[len(obs)]``.

    ``obs`` holds ``live_id, segment`` and the observable columns
    (:data:`ranking.score_source.OBSERVABLE_COLUMNS`) of every segment of the simulated rooms, sorted
    by (live_id, segment); row i's output is the score of target segment ``obs.segment[i]``, which may
    use rows of the same room with a *smaller* segment only. :meth:`values` runs :func:`check_causal`
    first and raises :class:`LeakageError` when perturbing the segment on air or later changes an
    earlier score.
    """

    def __init__(self, fn: Callable[[pd.DataFrame], Any], name: str, label: Optional[str] = None,
                 check: bool = True) -> None:
        self.fn = fn
        self.name = name
        self.label = label
        self.check = check
        self._checked = False

    def _apply(self, obs: pd.DataFrame) -> np.ndarray:
        out = np.asarray(self.fn(obs), dtype=np.float64)
        if out.shape != (len(obs),):
            raise ValueError(f"term {self.name!r}: returned shape {out.shape} for {len(obs)} rows")
        return out

    def values(self, ctx: ScoreContext) -> np.ndarray:
        if ctx.obs is None:
            raise ValueError(f"term {self.name!r} needs the observable segment table")
        if self.check and not self._checked:
            check_causal(self.fn, ctx.obs, name=self.name)
            self._checked = True
        return self._apply(ctx.obs)

    def calibration_pairs(self, ctx: ScoreContext) -> CalibrationPairs:
        if ctx.val_obs is None or len(ctx.val_obs) == 0:
            return None
        scores = self._apply(ctx.val_obs)
        if self.label is None or self.label not in ctx.val_obs.columns:
            ok = np.isfinite(scores)
            return scores[ok], None
        labels = ctx.val_obs[self.label].to_numpy(dtype=np.float64)
        ok = np.isfinite(scores) & np.isfinite(labels)
        return scores[ok], labels[ok]

    def describe(self) -> str:
        fn_name = getattr(self.fn, "__name__", "")
        return f"observable {fn_name if fn_name and fn_name != '<lambda>' else self.name}"


#: Built-in production-like terms (observable counters only), with the label each one predicts.
BUILTIN_TERMS: Dict[str, Tuple[Callable[[pd.DataFrame], np.ndarray], str]] = {
    "prev_ctr": (prev_ctr, "ctr"),
    "prev_lvtr": (prev_lvtr, "lvtr"),
    "cum_ctr": (cum_ctr, "ctr"),
    "cum_lvtr": (cum_lvtr, "lvtr"),
    "prev_viewers": (prev_viewers, "lvtr"),
}


# ------------------------------------------------------------------------------------------------
# Causality check
# ------------------------------------------------------------------------------------------------


def _with_future_replaced(obs: pd.DataFrame, segment: np.ndarray, cut: np.ndarray,
                          rng: np.random.Generator) -> pd.DataFrame:
    """``obs`` with every observation of segments >= ``cut`` (delayed columns: >= cut - delay) replaced
    by noise above the column's range; ``cut`` is per row (its room's cut)."""
    perturbed = obs.copy()
    for column in perturbed.columns:
        if column in _KEY_COLUMNS:
            continue
        original = perturbed[column].to_numpy()
        if not np.issubdtype(original.dtype, np.number):
            continue
        hidden = segment >= cut - DELAYED_COLUMNS.get(column, 0)
        noise = rng.random(int(hidden.sum()))
        peak = np.nanmax(original)
        scale = peak if np.isfinite(peak) and peak > 0 else 1.0
        replaced = original.astype(np.float64, copy=True)
        replaced[hidden] = noise * scale + 1.0
        if np.issubdtype(original.dtype, np.floating):
            perturbed[column] = replaced.astype(original.dtype)
        else:
            perturbed[column] = np.rint(replaced).astype(original.dtype)
    return perturbed


def check_causal(fn: Callable[[pd.DataFrame], Any], obs: pd.DataFrame, name: str = "term", n_trials: int = 2,
                 seed: int = 0) -> None:
    """Refuse an observable term whose score for target u reads segment u or later.

    For each trial, every room gets a random cut c (1 <= c < T); all observable values of segments
    >= c are replaced by noise, and so are the values of :data:`DELAYED_COLUMNS` of segments >= c -
    delay (LVTR of segments u - 1 and u - 2 is not yet complete at tick u); the scores of targets
    u <= c must not change (bit for bit, NaN included). Raises :class:`LeakageError` with the share
    of changed scores otherwise.
    """
    rng = np.random.default_rng(seed)
    base = np.asarray(fn(obs), dtype=np.float64)
    live = obs["live_id"].to_numpy()
    segment = obs["segment"].to_numpy()
    room = np.cumsum(np.r_[True, live[1:] != live[:-1]]) - 1
    lengths = np.bincount(room)
    for _ in range(n_trials):
        cut_of_room = 1 + np.floor(rng.random(len(lengths)) * np.maximum(lengths - 1, 1)).astype(np.int64)
        cut = cut_of_room[room]
        after = np.asarray(fn(_with_future_replaced(obs, segment, cut, rng)), dtype=np.float64)
        keep = segment <= cut
        same = (base[keep] == after[keep]) | (np.isnan(base[keep]) & np.isnan(after[keep]))
        if not same.all():
            share = 1.0 - same.mean()
            raise LeakageError(
                f"term {name!r} is not causal: perturbing segments >= u (LVTR columns: >= u - {LVTR_DELAY}) changed "
                f"{share:.1%} of the scores of targets <= u. A score for target segment u may read segments < u only "
                f"(the segment on air and later are the future), and {sorted(DELAYED_COLUMNS)} only of segments "
                f"<= u - {1 + LVTR_DELAY} (incomplete before)."
            )
