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
``RunDirScores``               a ``kuaihl train`` run directory: scored on the requested split by the
                               context's ``score_run`` function (:class:`ranking.score_source.RunScorer`,
                               e.g. ``kuaihl_rec.train.evaluate.evaluate_run``; predictions cached)
``CallableScores``             a user's ``fn(live_id, segment) -> scores`` (NaN = no score)
``ObservableTerm``             a function of the observable segment table (counters, labels), e.g. the
                               built-in production-like terms ``prev_ctr``, ``prev_lvtr``, ``cum_ctr``,
                               ``cum_lvtr``, ``prev_viewers``; checked for causality by perturbing
                               future rows (:func:`check_causal`) and refused when it leaks
                               (:mod:`ranking.observable`)
``TruthTerm``                  a column of the hidden truth (``truth:attract_logit``): sanity arms only
=============================  =====================================================================

Missing scores (the first segment of a room has no past; ``kuaihl eval`` does not score targets
below ``min_viewers``) are never dropped silently: :func:`fill_missing` fills them by a stated
policy (``carry``: the room's last earlier score, else the prior; ``prior``: the term's prior mean)
and counts every fill, and the counts go into ``ab.json``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ranking.observable import (
    BUILTIN_TERMS,
    DELAYED_COLUMNS,
    LVTR_DELAY,
    ObservableTerm,
    check_causal,
    cum_ctr,
    cum_lvtr,
    prev_ctr,
    prev_lvtr,
    prev_viewers,
)
from ranking.score_cache import cache_key, key_path, read_key, write_key
from ranking.score_source import (
    OBSERVABLE_COLUMNS,
    CalibrationPairs,
    LeakageError,
    PairIndex,
    RunScorer,
    ScoreContext,
    ScoreSource,
)

logger = logging.getLogger(__name__)

__all__ = [
    "BUILTIN_TERMS",
    "CallableScores",
    "DELAYED_COLUMNS",
    "LVTR_DELAY",
    "LeakageError",
    "MissingReport",
    "OBSERVABLE_COLUMNS",
    "ObservableTerm",
    "RunDirScores",
    "RunScorer",
    "ScoreContext",
    "ScoreSource",
    "ScoreTable",
    "TruthTerm",
    "check_causal",
    "cum_ctr",
    "cum_lvtr",
    "fill_missing",
    "load_scores",
    "prev_ctr",
    "prev_lvtr",
    "prev_viewers",
]

def _finite_pairs(scores: np.ndarray, labels: Optional[np.ndarray]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """The (score, label) pairs where both are finite (scores alone when there are no labels)."""
    if labels is None:
        ok = np.isfinite(scores)
        return scores[ok], None
    ok = np.isfinite(scores) & np.isfinite(labels)
    return scores[ok], labels[ok]


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
            n_first = int(np.sum(self.segment == 0))
            raise LeakageError(
                f"score table {name!r}: {n_first} row(s) score segment 0, which has no past. Scores must be keyed by "
                "the TARGET segment u (scored from content < u), as `kuaihl eval --predictions` writes them; a table "
                "keyed by the input segment leaks the segment on air. Shift it by +1, or pass "
                "allow_first_segment=True if these are deliberate priors."
            )
        self._index = PairIndex(self.live_id, self.segment)
        if self._index.has_duplicates():
            raise ValueError(f"score table {name!r}: (live_id, segment) pairs are not unique")
        if val is None or isinstance(val, ScoreTable):
            self.val = val
        else:
            self.val = ScoreTable(val, name=f"{name}[val]", column=column, label=label, allow_first_segment=True)

    @classmethod
    def read(cls, path: Union[str, Path], **kwargs: Any) -> "ScoreTable":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: no such score table (expected a Parquet file written by `kuaihl eval --predictions`)")
        kwargs.setdefault("name", path.stem)
        kwargs.setdefault("description", str(path))
        val = kwargs.pop("val", None)
        if isinstance(val, (str, Path)):
            val = cls.read(val, name=f"{kwargs['name']}[val]", column=kwargs.get("column", "score"),
                           label=kwargs.get("label"), allow_first_segment=True)
        return cls(pq.read_table(path), val=val, **kwargs)

    def lookup(self, live_id, segment) -> np.ndarray:
        """The score of each ``(live_id, segment)`` pair (NaN for a pair the table does not have)."""
        pos = self._index.positions(live_id, segment)
        if len(self.score) == 0:
            return np.full(len(pos), np.nan)
        return np.where(pos >= 0, self.score[np.maximum(pos, 0)], np.nan)

    def values(self, ctx: ScoreContext) -> np.ndarray:
        return self.lookup(ctx.live_id, ctx.segment)

    def finite_pairs(self) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """This table's (score, label) pairs where both are finite (scores alone without labels)."""
        return _finite_pairs(self.score, self.labels)

    def calibration_pairs(self, ctx: ScoreContext) -> CalibrationPairs:
        return None if self.val is None else self.val.finite_pairs()

    def describe(self) -> str:
        return self._desc


def _read_table(table: Any, column: str, name: str, label: Optional[str] = None):
    if isinstance(table, (str, Path)):
        table = pq.read_table(table)
    if hasattr(table, "to_pandas") and not isinstance(table, pd.DataFrame):
        table = table.to_pandas()
    if isinstance(table, Mapping):
        table = pd.DataFrame(dict(table))
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"score table {name!r}: expected a DataFrame, an Arrow table, a mapping or a path, "
                        f"got {type(table).__name__}")
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

    ``ranking`` does not evaluate models: the context's ``score_run`` function
    (:class:`ranking.score_source.RunScorer`; the application layer passes
    ``kuaihl_rec.train.evaluate.evaluate_run``) writes the predictions Parquet files to
    ``ctx.cache_dir`` (``<name>_<split>.parquet``; the run directory when there is none). Each file
    has its key beside it (``<name>_<split>.key.json``, :mod:`ranking.score_cache`: the run's
    ``config.json`` and ``model.pt``, the world and the split); a file is reused without scoring
    only when its key is this run's on this world and split, so another run under the same term
    name, a retrained model or a regenerated world is scored afresh.
    """

    def __init__(self, run_dir: Union[str, Path], name: str = "run", label: Optional[str] = None) -> None:
        self.run_dir = Path(run_dir)
        self.name = name
        self.label = label
        self._tables: Dict[Tuple[str, str], ScoreTable] = {}
        if not (self.run_dir / "model.pt").exists():
            raise FileNotFoundError(f"{self.run_dir}: not a finished `kuaihl train` run (no model.pt)")

    def _table(self, ctx: ScoreContext, split: str) -> ScoreTable:
        if ctx.world_dir is None:
            raise ValueError(f"term {self.name!r}: a run directory needs the world directory to score it on")
        key = cache_key(self.run_dir, Path(ctx.world_dir), split)
        if (split, key["key"]) in self._tables:
            return self._tables[(split, key["key"])]
        cache = Path(ctx.cache_dir) if ctx.cache_dir else self.run_dir
        path = cache / f"{self.name}_{split}.parquet"
        if not self._cache_is_usable(ctx, path, key["key"]):
            self._score(ctx, split, path)
            write_key(path, key)
        table = ScoreTable.read(path, name=self.name, description=f"{self.run_dir} on {split} ({path})")
        self._tables[(split, key["key"])] = table
        return table

    def _cache_is_usable(self, ctx: ScoreContext, path: Path, key: str) -> bool:
        """Whether the cached ``path`` holds this run's scores (stale or unkeyed files are scored again)."""
        if not path.exists():
            return False
        stored = read_key(path)
        if stored == key:
            return True
        if ctx.score_run is not None:
            logger.info("term %r: %s was scored from %s; scoring %s again", self.name, path,
                        "another run, model, world or split" if stored else "an unknown run (no key file)",
                        self.run_dir)
            return False
        if stored is None:
            logger.warning("term %r: %s has no key file (written by an older version?), so nothing says it holds "
                           "the scores of %s; using it because no scoring function was given", self.name, path,
                           self.run_dir)
            return True
        raise ValueError(
            f"term {self.name!r}: the cached predictions {path} were scored from another run, model, world or split "
            f"than {self.run_dir} on {ctx.world_dir}, and no scoring function was given to score it again: pass "
            "score_run=... (e.g. kuaihl_rec.train.evaluate.evaluate_run) or remove the file")

    def _score(self, ctx: ScoreContext, split: str, path: Path) -> None:
        if ctx.score_run is None:
            raise ValueError(
                f"term {self.name!r} is the run directory {self.run_dir}, which needs a scoring function: pass "
                "score_run=... to run_ab (or the ScoreContext), e.g. kuaihl_rec.train.evaluate.evaluate_run")
        logger.info("scoring %s on %s split %s -> %s", self.run_dir, ctx.world_dir, split, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        key_path(path).unlink(missing_ok=True)  # a failed scoring must not leave a stale file with a valid key
        path.unlink(missing_ok=True)
        ctx.score_run(self.run_dir, Path(ctx.world_dir), split, predictions_out=path)
        if not path.exists():
            raise FileNotFoundError(f"term {self.name!r}: score_run wrote no predictions to {path}")

    def values(self, ctx: ScoreContext) -> np.ndarray:
        return self._table(ctx, ctx.split).values(ctx)

    def calibration_pairs(self, ctx: ScoreContext) -> CalibrationPairs:
        return self._table(ctx, ctx.cal_split).finite_pairs()

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

    def __init__(self, fn: Callable[[np.ndarray, np.ndarray], Any], name: str = "callable",
                 label: Optional[str] = None, calibration: CalibrationPairs = None) -> None:
        self.fn = fn
        self.name = name
        self.label = label
        self._cal = calibration

    def _call(self, live_id: np.ndarray, segment: np.ndarray) -> np.ndarray:
        out = np.asarray(self.fn(live_id.copy(), segment.copy()), dtype=np.float64)
        if out.shape != live_id.shape:
            raise ValueError(
                f"term {self.name!r}: the callable returned shape {out.shape} for {len(live_id)} rows")
        return out

    def values(self, ctx: ScoreContext) -> np.ndarray:
        return self._call(ctx.live_id, ctx.segment)

    def calibration_pairs(self, ctx: ScoreContext) -> CalibrationPairs:
        if self._cal is not None:
            return self._cal
        if ctx.val_obs is None or len(ctx.val_obs) == 0:
            return None
        scores = self._call(ctx.val_obs["live_id"].to_numpy(np.int64), ctx.val_obs["segment"].to_numpy(np.int64))
        if not np.isfinite(scores).any():
            return None
        labels = None
        if self.label and self.label in ctx.val_obs.columns:
            labels = ctx.val_obs[self.label].to_numpy(np.float64)
        return _finite_pairs(scores, labels)

    def describe(self) -> str:
        return f"callable {getattr(self.fn, '__qualname__', repr(self.fn))}"


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


def _source_from_path(source: Union[str, Path], name: Optional[str], column: str, val: Any, label: Optional[str],
                      **kwargs: Any) -> ScoreSource:
    path = Path(source)
    if path.is_dir():
        if (path / "model.pt").exists():
            return RunDirScores(path, name=name or path.name, label=label)
        raise FileNotFoundError(f"{path}: a directory without model.pt is not a run directory")
    if path.suffix == ".parquet" or path.exists():
        return ScoreTable.read(path, name=name or path.stem, column=column, val=val, label=label, **kwargs)
    known = ", ".join(sorted(BUILTIN_TERMS))
    raise FileNotFoundError(
        f"{source!r}: no such score file or run directory (built-in terms: {known}; or truth:<column>)")


def load_scores(source: Any, name: Optional[str] = None, column: str = "score", val: Any = None,
                label: Optional[str] = None, **kwargs: Any) -> ScoreSource:
    """One :class:`ScoreSource` from whatever names the scores.

    - a :class:`ScoreSource`: returned as is;
    - a callable ``fn(live_id, segment) -> scores``: :class:`CallableScores`;
    - a DataFrame / Arrow table / mapping with ``live_id, segment, <column>``: :class:`ScoreTable`;
    - ``"prev_ctr"``, ``"prev_lvtr"``, ``"cum_ctr"``, ``"cum_lvtr"``, ``"prev_viewers"``: built-in
      observable terms; ``"truth:<column>"``: a :class:`TruthTerm` (oracle only);
    - a path to a ``.parquet`` file: :class:`ScoreTable` (``val=`` another file for calibration);
    - a directory with ``model.pt``: :class:`RunDirScores` (scored on demand by the context's
      ``score_run``, e.g. ``kuaihl eval``'s ``evaluate_run``).
    """
    if isinstance(source, ScoreSource):
        return source
    if callable(source) and not isinstance(source, (str, Path)):
        return CallableScores(source, name=name or getattr(source, "__name__", "callable"), label=label, **kwargs)
    if isinstance(source, (pd.DataFrame, Mapping)) or hasattr(source, "to_pandas"):
        return ScoreTable(source, name=name or "scores", column=column, val=val, label=label, **kwargs)
    if isinstance(source, str) and source in BUILTIN_TERMS:
        fn, builtin_label = BUILTIN_TERMS[source]
        return ObservableTerm(fn, name=name or source, label=label or builtin_label)
    if isinstance(source, str) and source.startswith("truth:"):
        return TruthTerm(source.split(":", 1)[1], name=name)
    if isinstance(source, (str, Path)):
        return _source_from_path(source, name, column, val, label, **kwargs)
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


def fill_missing(values: np.ndarray, live_id: np.ndarray, segment: np.ndarray, policy: str,
                 prior: float) -> Tuple[np.ndarray, MissingReport]:
    """Fill NaN scores by ``policy`` and count every fill.

    ``carry``: the room's most recent earlier score (a score computed at an earlier tick is still
    causal), else ``prior``; ``prior``: the term's prior mean (from the calibration split when there
    is one). Rows must be sorted by (live_id, segment).
    """
    if policy not in ("carry", "prior"):
        raise ValueError(f"missing-score policy must be 'carry' or 'prior', got {policy!r}")
    filled = np.asarray(values, dtype=np.float64).copy()
    missing = ~np.isfinite(filled)
    n_first = int(np.sum(missing & (segment == 0)))
    n_carried = 0
    if policy == "carry" and missing.any():
        row = np.arange(len(filled))
        last_scored = np.maximum.accumulate(np.where(~missing, row, -1))
        first = np.r_[True, live_id[1:] != live_id[:-1]]
        room_start = np.maximum.accumulate(np.where(first, row, 0))
        carried = missing & (last_scored >= room_start) & (last_scored >= 0)
        filled[carried] = filled[last_scored[carried]]
        n_carried = int(carried.sum())
    still = ~np.isfinite(filled)
    filled[still] = prior
    report = MissingReport(len(filled), int(missing.sum()), n_first, n_carried, int(still.sum()), float(prior), policy)
    return filled, report
