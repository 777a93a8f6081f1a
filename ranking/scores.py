"""The scoring interface: where the terms of a ranking formula come from.

A score for ranking is always keyed by ``(live_id, segment u)``: the score of room ``live_id``
while it broadcasts segment ``u``, computed from what a production system has at that moment,
i.e. content and counters of segments ``< u`` only. That is exactly what
``kuaihl eval RUN --predictions P.parquet`` writes (one row per *target* segment u, scored from the
window that ends on segment u - 1), and the simulator looks a score up only at the tick where its
segment is on air.

Sources (:func:`load_scores` picks one from what it is given):

=============================  =====================================================================
``ScoreTable``                 a table of ``live_id, segment, score`` (a predictions Parquet file, a
                               pandas / Arrow table); optionally a ``label`` column (for calibration)
``RunDirScores``               a ``kuaihl train`` run directory: scored on the requested split with
                               :func:`kuaihl_rec.train.evaluate.evaluate_run` (predictions cached)
``CallableScores``             a user's ``fn(live_id, segment) -> scores`` (NaN = no score)
``ObservableTerm``             a function of the observable segment table (counters, labels), e.g. the
                               built-in production-like terms ``prev_ctr``, ``prev_lvtr``, ``cum_ctr``,
                               ``cum_lvtr``, ``prev_viewers``; checked for causality by perturbing
                               future rows (:func:`check_causal`) and refused when it leaks
``TruthTerm``                  a column of the hidden truth (``truth:attract_logit``): sanity arms only
=============================  =====================================================================

Missing scores (the first segment of a room has no past; ``kuaihl eval`` does not score targets
below ``min_viewers``) are never dropped silently: :func:`fill_missing` fills them by a stated
policy (``carry``: the room's last earlier score, else the prior; ``prior``: the term's prior mean)
and counts every fill, and the counts go into ``ab.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import pandas as pd

from kuaihl_rec.data.schema import LABEL_DELAY_SEGMENTS

logger = logging.getLogger(__name__)

__all__ = [
    "BUILTIN_TERMS",
    "CallableScores",
    "LeakageError",
    "ObservableTerm",
    "RunDirScores",
    "ScoreContext",
    "ScoreSource",
    "ScoreTable",
    "TruthTerm",
    "check_causal",
    "fill_missing",
    "load_scores",
]

#: Observable columns of the segment table a production system has after a segment ends.
OBSERVABLE_COLUMNS: Tuple[str, ...] = (
    "lvtr", "ctr", "n_exposures", "n_viewers", "n_long_viewers", "n_comments", "n_gifts",
    "n_clicks", "n_likes", "n_follows", "n_entries", "n_exits",
)


class LeakageError(ValueError):
    """A score source that would use information from the segment on air or later."""


@dataclasses.dataclass
class ScoreContext:
    """What a source may use to produce scores for the simulated rows.

    live_id, segment: the rows to score, sorted by (live_id, segment), unique
    obs:              observable columns of those rows (aligned), for :class:`ObservableTerm`
    truth:            hidden truth of those rows (aligned), for :class:`TruthTerm` only
    val_obs:          observable table of the calibration split (for built-in terms' calibration)
    world_dir:        the world directory (run directories are scored on it)
    split / cal_split: the simulated split and the calibration split
    cache_dir:        where run-directory predictions are written (None: a temporary directory)
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


def _keys(live_id, segment) -> np.ndarray:
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

    def calibration_pairs(self, ctx: ScoreContext) -> Optional[Tuple[np.ndarray, Optional[np.ndarray]]]:
        """``(scores, labels)`` on the calibration split (``labels`` None when the source has scores but
        no labels there), or None when the source has no calibration data."""
        return None

    def describe(self) -> str:
        return self.name


# ------------------------------------------------------------------------------------------------
# Tables of precomputed scores
# ------------------------------------------------------------------------------------------------


class ScoreTable(ScoreSource):
    """Scores keyed by ``(live_id, segment)`` (the *target* segment, scored from content < segment).

    ``table``: anything with columns ``live_id``, ``segment`` and the score column (pandas, Arrow,
    a dict of arrays); labels for calibration come from the column named ``label`` when the table has
    one, else from a ``label`` column (what ``kuaihl eval`` writes). ``val``: an optional second table
    on the calibration split. Segment-0 scores are refused unless ``allow_first_segment``: segment 0
    has no past, so a score for it is the classic sign of a table keyed by the *input* segment
    (which would make every lookup use the segment on air, one step of future leakage).
    """

    def __init__(
        self,
        table: Any,
        name: str = "scores",
        column: str = "score",
        val: Any = None,
        label: Optional[str] = None,
        allow_first_segment: bool = False,
        description: Optional[str] = None,
    ) -> None:
        self.name = name
        self.label = label
        self._desc = description or f"table ({name})"
        self.live_id, self.segment, self.score, self.labels = _read_table(table, column, name, label)
        if not allow_first_segment and len(self.segment) and np.any(self.segment == 0):
            n0 = int(np.sum(self.segment == 0))
            raise LeakageError(
                f"score table {name!r}: {n0} row(s) score segment 0, which has no past. Scores must be keyed by the "
                "TARGET segment u (scored from content < u), as `kuaihl eval --predictions` writes them; a table "
                "keyed by the input segment leaks the segment on air. Shift it by +1, or pass "
                "allow_first_segment=True if these are deliberate priors."
            )
        keys = _keys(self.live_id, self.segment)
        order = np.argsort(keys, kind="stable")
        self._sorted_keys = keys[order]
        self._sorted_score = self.score[order]
        if len(keys) and np.any(np.diff(self._sorted_keys) == 0):
            raise ValueError(f"score table {name!r}: (live_id, segment) pairs are not unique")
        self.val = val if (val is None or isinstance(val, ScoreTable)) else ScoreTable(val, name=f"{name}[val]", column=column, label=label,
                                                                                        allow_first_segment=True)

    @classmethod
    def read(cls, path: Union[str, Path], **kwargs: Any) -> "ScoreTable":
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such score table (expected a Parquet file written by `kuaihl eval --predictions`)")
        kwargs.setdefault("name", path.stem)
        kwargs.setdefault("description", str(path))
        val = kwargs.pop("val", None)
        if isinstance(val, (str, Path)):
            val = cls.read(val, name=f"{kwargs['name']}[val]", column=kwargs.get("column", "score"), label=kwargs.get("label"),
                           allow_first_segment=True)
        return cls(pq.read_table(path), val=val, **kwargs)

    def lookup(self, live_id, segment) -> np.ndarray:
        keys = _keys(live_id, segment)
        if len(self._sorted_keys) == 0:
            return np.full(len(keys), np.nan)
        pos = np.searchsorted(self._sorted_keys, keys)
        pos_c = np.minimum(pos, len(self._sorted_keys) - 1)
        hit = self._sorted_keys[pos_c] == keys
        return np.where(hit, self._sorted_score[pos_c], np.nan)

    def values(self, ctx: ScoreContext) -> np.ndarray:
        return self.lookup(ctx.live_id, ctx.segment)

    def calibration_pairs(self, ctx: ScoreContext) -> Optional[Tuple[np.ndarray, Optional[np.ndarray]]]:
        if self.val is None:
            return None
        if self.val.labels is None:
            ok = np.isfinite(self.val.score)
            return self.val.score[ok], None
        ok = np.isfinite(self.val.score) & np.isfinite(self.val.labels)
        return self.val.score[ok], self.val.labels[ok]

    def describe(self) -> str:
        return self._desc


def _read_table(table: Any, column: str, name: str, label: Optional[str] = None):
    if isinstance(table, (str, Path)):
        import pyarrow.parquet as pq

        table = pq.read_table(table)
    if hasattr(table, "to_pandas") and not isinstance(table, pd.DataFrame):
        table = table.to_pandas()
    if isinstance(table, Mapping):
        table = pd.DataFrame(dict(table))
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"score table {name!r}: expected a DataFrame, an Arrow table, a mapping or a path, got {type(table).__name__}")
    missing = [c for c in ("live_id", "segment", column) if c not in table.columns]
    if missing:
        raise ValueError(f"score table {name!r}: missing column(s) {missing}; has {list(table.columns)}")
    live = table["live_id"].to_numpy(dtype=np.int64)
    seg = table["segment"].to_numpy(dtype=np.int64)
    score = table[column].to_numpy(dtype=np.float64)
    label_col = label if (label and label in table.columns) else ("label" if "label" in table.columns else None)
    labels = table[label_col].to_numpy(dtype=np.float64) if label_col else None
    if np.any(seg < 0):
        raise ValueError(f"score table {name!r}: negative segment indices")
    return live, seg, score, labels


class RunDirScores(ScoreSource):
    """A ``kuaihl train`` run directory, scored on the simulated split (and on the calibration split).

    Scoring runs :func:`kuaihl_rec.train.evaluate.evaluate_run` with ``predictions_out``; the
    predictions Parquet files are cached in ``ctx.cache_dir`` (``<name>_<split>.parquet``) and reused
    when they already exist.
    """

    def __init__(self, run_dir: Union[str, Path], name: str = "run", label: Optional[str] = None) -> None:
        self.run_dir = Path(run_dir)
        self.name = name
        self.label = label
        self._tables: Dict[str, ScoreTable] = {}
        if not (self.run_dir / "model.pt").exists():
            raise FileNotFoundError(f"{self.run_dir}: not a finished `kuaihl train` run (no model.pt)")

    def _table(self, ctx: ScoreContext, split: str) -> ScoreTable:
        if split in self._tables:
            return self._tables[split]
        if ctx.world_dir is None:
            raise ValueError(f"term {self.name!r}: a run directory needs the world directory to score it on")
        cache = Path(ctx.cache_dir) if ctx.cache_dir else self.run_dir
        path = cache / f"{self.name}_{split}.parquet"
        if not path.exists():
            from kuaihl_rec.train.evaluate import evaluate_run

            logger.info("scoring %s on %s split %s -> %s", self.run_dir, ctx.world_dir, split, path)
            evaluate_run(self.run_dir, Path(ctx.world_dir), split, predictions_out=path, progress=ctx.progress)
        table = ScoreTable.read(path, name=self.name, description=f"{self.run_dir} on {split} ({path})")
        self._tables[split] = table
        return table

    def values(self, ctx: ScoreContext) -> np.ndarray:
        return self._table(ctx, ctx.split).values(ctx)

    def calibration_pairs(self, ctx: ScoreContext) -> Optional[Tuple[np.ndarray, Optional[np.ndarray]]]:
        t = self._table(ctx, ctx.cal_split)
        if t.labels is None:
            ok = np.isfinite(t.score)
            return t.score[ok], None
        ok = np.isfinite(t.score) & np.isfinite(t.labels)
        return t.score[ok], t.labels[ok]

    def describe(self) -> str:
        return f"run {self.run_dir}"


class CallableScores(ScoreSource):
    """A user's function ``fn(live_id: int64[n], segment: int64[n]) -> float[n]`` (NaN = no score).

    The simulator asks it once for every (room, segment) of the simulated split and uses the answer
    for (live_id, u) only at the tick where segment u is on air; keeping ``fn`` causal (content
    < u only) is the caller's contract. For calibration it is also asked for the calibration
    split's rows (their ``label`` column, when ``label`` names one, gives the labels); a function
    that has no scores there (all NaN) can pass ``calibration=(scores, labels)`` instead.
    """

    def __init__(self, fn: Callable[[np.ndarray, np.ndarray], Any], name: str = "callable", label: Optional[str] = None,
                 calibration: Optional[Tuple[np.ndarray, Optional[np.ndarray]]] = None) -> None:
        self.fn = fn
        self.name = name
        self.label = label
        self._cal = calibration

    def _call(self, live_id: np.ndarray, segment: np.ndarray) -> np.ndarray:
        out = np.asarray(self.fn(live_id.copy(), segment.copy()), dtype=np.float64)
        if out.shape != live_id.shape:
            raise ValueError(f"term {self.name!r}: the callable returned shape {out.shape} for {len(live_id)} rows")
        return out

    def values(self, ctx: ScoreContext) -> np.ndarray:
        return self._call(ctx.live_id, ctx.segment)

    def calibration_pairs(self, ctx: ScoreContext) -> Optional[Tuple[np.ndarray, Optional[np.ndarray]]]:
        if self._cal is not None:
            return self._cal
        if ctx.val_obs is None or len(ctx.val_obs) == 0:
            return None
        s = self._call(ctx.val_obs["live_id"].to_numpy(np.int64), ctx.val_obs["segment"].to_numpy(np.int64))
        ok = np.isfinite(s)
        if not ok.any():
            return None
        if self.label and self.label in ctx.val_obs.columns:
            y = ctx.val_obs[self.label].to_numpy(np.float64)
            ok &= np.isfinite(y)
            return s[ok], y[ok]
        return s[ok], None

    def describe(self) -> str:
        return f"callable {getattr(self.fn, '__qualname__', repr(self.fn))}"


# ------------------------------------------------------------------------------------------------
# Observable (production-like) terms
# ------------------------------------------------------------------------------------------------


#: Observable columns that are complete only some segments after their segment ends: LVTR counts
#: views longer than 60 s, so the LVTR (and its numerator) of segment j is known at the end of
#: segment j + 2 (README "When a label is known"; ``WindowConfig.label_delay``).
DELAYED_COLUMNS: Dict[str, int] = {"lvtr": LABEL_DELAY_SEGMENTS["lvtr"], "n_long_viewers": LABEL_DELAY_SEGMENTS["lvtr"]}
LVTR_DELAY = DELAYED_COLUMNS["lvtr"]


def _prev(obs: pd.DataFrame, column: str, lag: int = 1) -> np.ndarray:
    """Value of ``column`` at segment u - ``lag`` of the same room (NaN where the room has none)."""
    live = obs["live_id"].to_numpy()
    seg = obs["segment"].to_numpy()
    val = obs[column].to_numpy(dtype=np.float64)
    out = np.full(len(obs), np.nan)
    if lag < len(obs):
        same = (live[lag:] == live[:-lag]) & (seg[lag:] == seg[:-lag] + lag)
        out[lag:][same] = val[:-lag][same]
    return out


def _cum_before(obs: pd.DataFrame, column: str, lag: int = 1) -> np.ndarray:
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
    return _prev(obs, "ctr")


def prev_lvtr(obs: pd.DataFrame) -> np.ndarray:
    """The last complete LVTR at tick u: the label of segment u - 3 (LVTR of u - 1 and u - 2 still
    waits for its 60 s outcome). ``kuaihl eval`` reports it as ``last_complete_label``."""
    return _prev(obs, "lvtr", lag=1 + LVTR_DELAY)


def cum_ctr(obs: pd.DataFrame, prior_clicks: float = 1.0, prior_exposures: float = 10.0) -> np.ndarray:
    """The room's smoothed CTR over segments < u: (clicks + 1) / (exposures + 10); NaN at u = 0."""
    c, e = _cum_before(obs, "n_clicks"), _cum_before(obs, "n_exposures")
    out = (c + prior_clicks) / (e + prior_exposures)
    out[obs["segment"].to_numpy() == 0] = np.nan
    return out


def cum_lvtr(obs: pd.DataFrame, prior_long: float = 3.0, prior_viewers: float = 5.0) -> np.ndarray:
    """The room's smoothed LVTR over its complete segments (<= u - 3): (long viewers + 3) /
    (viewers + 5); the prior alone until the room has a complete segment; NaN at u = 0."""
    lag = 1 + LVTR_DELAY
    lv, v = _cum_before(obs, "n_long_viewers", lag), _cum_before(obs, "n_viewers", lag)
    out = (lv + prior_long) / (v + prior_viewers)
    out[obs["segment"].to_numpy() == 0] = np.nan
    return out


def prev_viewers(obs: pd.DataFrame) -> np.ndarray:
    """log(1 + viewers) of segment u - 1 (the room's current audience size)."""
    return np.log1p(_prev(obs, "n_viewers"))


class ObservableTerm(ScoreSource):
    """A term computed from the observable segment table: ``fn(obs) -> float[len(obs)]``.

    ``obs`` holds ``live_id, segment`` and the observable columns (:data:`OBSERVABLE_COLUMNS`) of
    every segment of the simulated rooms, sorted by (live_id, segment); row i's output is the score
    of target segment ``obs.segment[i]``, which may use rows of the same room with a *smaller*
    segment only. :meth:`values` runs :func:`check_causal` first and raises :class:`LeakageError`
    when perturbing the segment on air or later changes an earlier score.
    """

    def __init__(self, fn: Callable[[pd.DataFrame], Any], name: str, label: Optional[str] = None, check: bool = True) -> None:
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

    def calibration_pairs(self, ctx: ScoreContext) -> Optional[Tuple[np.ndarray, Optional[np.ndarray]]]:
        if ctx.val_obs is None or len(ctx.val_obs) == 0:
            return None
        s = self._apply(ctx.val_obs)
        if self.label is None or self.label not in ctx.val_obs.columns:
            ok = np.isfinite(s)
            return s[ok], None
        y = ctx.val_obs[self.label].to_numpy(dtype=np.float64)
        ok = np.isfinite(s) & np.isfinite(y)
        return s[ok], y[ok]

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


def check_causal(fn: Callable[[pd.DataFrame], Any], obs: pd.DataFrame, name: str = "term", n_trials: int = 2, seed: int = 0) -> None:
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
    seg = obs["segment"].to_numpy()
    first = np.r_[True, live[1:] != live[:-1]]
    room = np.cumsum(first) - 1
    lengths = np.bincount(room)
    for _ in range(n_trials):
        cut_room = 1 + np.floor(rng.random(len(lengths)) * np.maximum(lengths - 1, 1)).astype(np.int64)
        cut = cut_room[room]
        pert = obs.copy()
        for col in pert.columns:
            if col in ("live_id", "segment", "streamer_id", "timestamp", "split"):
                continue
            vals = pert[col].to_numpy()
            if not np.issubdtype(vals.dtype, np.number):
                continue
            hidden = seg >= cut - DELAYED_COLUMNS.get(col, 0)
            noise = rng.random(int(hidden.sum()))
            new = vals.astype(np.float64, copy=True)
            new[hidden] = noise * (np.nanmax(vals) if np.isfinite(np.nanmax(vals)) and np.nanmax(vals) > 0 else 1.0) + 1.0
            pert[col] = new.astype(vals.dtype) if np.issubdtype(vals.dtype, np.floating) else np.rint(new).astype(vals.dtype)
        after = np.asarray(fn(pert), dtype=np.float64)
        keep = seg <= cut
        same = (base[keep] == after[keep]) | (np.isnan(base[keep]) & np.isnan(after[keep]))
        if not same.all():
            share = 1.0 - same.mean()
            raise LeakageError(
                f"term {name!r} is not causal: perturbing segments >= u (LVTR columns: >= u - {LVTR_DELAY}) changed {share:.1%} "
                "of the scores of targets <= u. A score for target segment u may read segments < u only (the segment on air "
                f"and later are the future), and {sorted(DELAYED_COLUMNS)} only of segments <= u - {1 + LVTR_DELAY} (incomplete before)."
            )


# ------------------------------------------------------------------------------------------------
# Truth (sanity arms only)
# ------------------------------------------------------------------------------------------------


class TruthTerm(ScoreSource):
    """A column of the hidden truth of the segment on air (``attract_logit``, ``true_lvtr``, ``true_ctr``).

    For the oracle sanity arm only: no model can see it, which is why it bounds what any content
    score can reach.
    """

    oracle = True

    def __init__(self, column: str = "true_lvtr", name: Optional[str] = None) -> None:
        self.column = column
        self.name = name or f"truth:{column}"
        self.label = "lvtr"

    def values(self, ctx: ScoreContext) -> np.ndarray:
        if ctx.truth is None or self.column not in ctx.truth.columns:
            raise ValueError(f"term {self.name!r} needs the hidden truth column {self.column!r}")
        return ctx.truth[self.column].to_numpy(dtype=np.float64)

    def describe(self) -> str:
        return f"hidden truth {self.column} of the segment on air (oracle)"


# ------------------------------------------------------------------------------------------------
# Loading and missing values
# ------------------------------------------------------------------------------------------------


def load_scores(source: Any, name: Optional[str] = None, column: str = "score", val: Any = None, label: Optional[str] = None,
                **kwargs: Any) -> ScoreSource:
    """One :class:`ScoreSource` from whatever names the scores.

    - a :class:`ScoreSource`: returned as is;
    - a callable ``fn(live_id, segment) -> scores``: :class:`CallableScores`;
    - a DataFrame / Arrow table / mapping with ``live_id, segment, <column>``: :class:`ScoreTable`;
    - ``"prev_ctr"``, ``"prev_lvtr"``, ``"cum_ctr"``, ``"cum_lvtr"``, ``"prev_viewers"``: built-in
      observable terms; ``"truth:<column>"``: a :class:`TruthTerm` (oracle only);
    - a path to a ``.parquet`` file: :class:`ScoreTable` (``val=`` another file for calibration);
    - a directory with ``model.pt``: :class:`RunDirScores` (scored with ``kuaihl eval`` on demand).
    """
    if isinstance(source, ScoreSource):
        return source
    if callable(source) and not isinstance(source, (str, Path)):
        return CallableScores(source, name=name or getattr(source, "__name__", "callable"), label=label, **kwargs)
    if isinstance(source, (pd.DataFrame, Mapping)) or hasattr(source, "to_pandas"):
        return ScoreTable(source, name=name or "scores", column=column, val=val, label=label, **kwargs)
    if isinstance(source, str) and source in BUILTIN_TERMS:
        fn, lab = BUILTIN_TERMS[source]
        return ObservableTerm(fn, name=name or source, label=label or lab)
    if isinstance(source, str) and source.startswith("truth:"):
        return TruthTerm(source.split(":", 1)[1], name=name)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            if (path / "model.pt").exists():
                return RunDirScores(path, name=name or path.name, label=label)
            raise FileNotFoundError(f"{path}: a directory without model.pt is not a run directory")
        if path.suffix == ".parquet" or path.exists():
            return ScoreTable.read(path, name=name or path.stem, column=column, val=val, label=label, **kwargs)
        known = ", ".join(sorted(BUILTIN_TERMS))
        raise FileNotFoundError(f"{source!r}: no such score file or run directory (built-in terms: {known}; or truth:<column>)")
    raise TypeError(f"cannot make a score source from {type(source).__name__}")


@dataclasses.dataclass
class MissingReport:
    """How the missing scores of one term were filled (reported in ``ab.json``)."""

    n_rows: int
    n_missing: int
    n_first_segment: int
    n_carried: int
    n_prior: int
    prior: float
    policy: str

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["share_missing"] = self.n_missing / self.n_rows if self.n_rows else 0.0
        return d


def fill_missing(values: np.ndarray, live_id: np.ndarray, segment: np.ndarray, policy: str, prior: float) -> Tuple[np.ndarray, MissingReport]:
    """Fill NaN scores by ``policy`` and count every fill.

    ``carry``: the room's most recent earlier score (a score computed at an earlier tick is still
    causal), else ``prior``; ``prior``: the term's prior mean (from the calibration split when there
    is one). Rows must be sorted by (live_id, segment).
    """
    if policy not in ("carry", "prior"):
        raise ValueError(f"missing-score policy must be 'carry' or 'prior', got {policy!r}")
    v = np.asarray(values, dtype=np.float64).copy()
    miss = ~np.isfinite(v)
    n_first = int(np.sum(miss & (segment == 0)))
    n_carried = 0
    if policy == "carry" and miss.any():
        idx = np.where(~miss, np.arange(len(v)), -1)
        last = np.maximum.accumulate(idx)
        first = np.r_[True, live_id[1:] != live_id[:-1]]
        room_start = np.maximum.accumulate(np.where(first, np.arange(len(v)), 0))
        ok = miss & (last >= room_start) & (last >= 0)
        v[ok] = v[last[ok]]
        n_carried = int(ok.sum())
    still = ~np.isfinite(v)
    v[still] = prior
    return v, MissingReport(len(v), int(miss.sum()), n_first, n_carried, int(still.sum()), float(prior), policy)


def stable_hash(*parts: Any) -> int:
    """A 63-bit hash of strings / numbers, stable across processes and machines."""
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1
