"""A ranking formula as configuration: named score terms, per-term calibration, a blend.

Two formula shapes, as in the papers' online test (``s_base = s_ctr + s_lvtr + ...``,
``s_exp = s_base + s_content``) and in common industrial practice:

    linear   s = sum_k w_k * c_k(s_k)
    product  s = prod_k (c_k(s_k) + alpha_k) ^ beta_k       (ranked as sum_k beta_k log(c_k(s_k) + alpha_k))

where ``c_k`` is the term's calibration, fitted on a validation split so a new term does not
dominate by scale:

    auto      platt where the source has labelled scores on the calibration split, else zscore (the default)
    none      the raw score
    zscore    (s - mean) / sd                  (moments of the calibration split's scores)
    rank      the empirical CDF of the calibration split's scores, in [0, 1]
    platt     sigmoid(a * logit(s) + b)        (a, b fitted by soft-label log loss on (score, label) pairs)
    isotonic  a non-decreasing step function   (pool-adjacent-violators on (score, label) pairs)

``platt`` and ``isotonic`` map a term to the probability of its label (CTR, LVTR), so terms that
predict different labels add on their natural scales (the papers' ``s_ctr + s_lvtr + s_content``),
and a term that carries no information collapses to a near-constant, so adding it cannot reorder
the feed by noise. ``zscore`` / ``rank`` need no labels but give every term unit spread, informative
or not: an uninformative term then acts like a random shuffle of the ranking.

Config form (what ``kuaihl ab`` reads)::

    terms:
      ctr:     prev_ctr                                   # built-in: CTR of segment u-1
      lvtr:    {source: prev_lvtr, calibrate: platt}
      content: {source: runs/content, calibrate: auto, missing: carry}
    arms:
      control:   {ctr: 1.0, lvtr: 1.0}                    # linear weights
      treatment: {ctr: 1.0, lvtr: 1.0, content: 1.0}
      product:   {product: {ctr: [0.0, 1.0], content: [0.1, 0.5]}}   # term: [alpha, beta]
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ranking.score_source import CalibrationPairs, ScoreContext, ScoreSource
from ranking.scores import MissingReport, fill_missing, load_scores

logger = logging.getLogger(__name__)

__all__ = ["CALIBRATIONS", "Calibrator", "Formula", "Term", "TermValues", "isotonic_fit", "parse_formula",
           "resolve_term", "resolve_terms"]

CALIBRATIONS = ("none", "zscore", "rank", "platt", "isotonic")
#: A term's calibration when the config names none: ``platt`` where the source has labelled scores
#: on the calibration split, else ``zscore``.
AUTO = "auto"


# ------------------------------------------------------------------------------------------------
# Calibration
# ------------------------------------------------------------------------------------------------


def isotonic_fit(x: np.ndarray, y: np.ndarray, w: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares non-decreasing fit of y on x (pool adjacent violators).

    Returns ``(thresholds, values)``: the sorted distinct x and the fitted value at each; predict
    with :func:`numpy.interp` (linear between thresholds, constant outside).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    w = np.ones_like(x) if w is None else np.asarray(w, np.float64)
    order = np.argsort(x, kind="stable")
    x, y, w = x[order], y[order], w[order]
    distinct_x, start = np.unique(x, return_index=True)
    weight_sum = np.add.reduceat(w, start)
    weighted_y_sum = np.add.reduceat(w * y, start)
    # Pool adjacent violators over the distinct x's (a stack of blocks: mean, weight, number of x's).
    block_means, block_weights, block_sizes = [], [], []
    for mean, weight in zip(weighted_y_sum / weight_sum, weight_sum):
        size = 1
        while block_means and block_means[-1] >= mean:
            prev_mean, prev_weight, prev_size = block_means.pop(), block_weights.pop(), block_sizes.pop()
            mean = (prev_mean * prev_weight + mean * weight) / (prev_weight + weight)
            weight += prev_weight
            size += prev_size
        block_means.append(mean)
        block_weights.append(weight)
        block_sizes.append(size)
    fitted = np.repeat(np.asarray(block_means), np.asarray(block_sizes))
    return distinct_x, fitted


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _platt_fit(s: np.ndarray, y: np.ndarray, probability_input: bool) -> Tuple[float, float]:
    """Fit sigmoid(a * f + b) to soft labels y by Newton's method on the log loss (f = logit(s) or s)."""
    f = _logit(s) if probability_input else s
    mu, sd = f.mean(), f.std() or 1.0
    f_std = (f - mu) / sd
    a, b = 1.0, float(_logit(np.array([np.clip(y.mean(), 1e-4, 1 - 1e-4)]))[0])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(a * f_std + b)))
        gradient = np.array([np.dot(p - y, f_std), np.sum(p - y)]) / len(y)
        curvature = p * (1 - p)
        hessian = np.array([[np.dot(curvature, f_std * f_std), np.dot(curvature, f_std)],
                            [np.dot(curvature, f_std), curvature.sum()]]) / len(y) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    # back to the unstandardised input: a*(f - mu)/sd + b
    return float(a / sd), float(b - a * mu / sd)


@dataclasses.dataclass
class Calibrator:
    """One term's calibration (see the module docstring); :meth:`fit` then :meth:`transform`."""

    kind: str = "zscore"
    params: Dict[str, Any] = dataclasses.field(default_factory=dict)
    fitted_on: str = ""

    def __post_init__(self) -> None:
        if self.kind not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {self.kind!r}")

    def fit(self, scores: np.ndarray, labels: Optional[np.ndarray] = None, where: str = "") -> "Calibrator":
        s = np.asarray(scores, np.float64)
        ok = np.isfinite(s)
        if labels is not None:
            labels = np.asarray(labels, np.float64)
            ok &= np.isfinite(labels)
        s = s[ok]
        self.fitted_on = where
        if len(s) == 0:
            raise ValueError(f"calibration {self.kind!r}: no finite scores to fit on ({where})")
        if self.kind == "zscore":
            self.params = {"mean": float(s.mean()), "sd": float(s.std()) or 1.0}
        elif self.kind == "rank":
            self.params = {"sorted": np.sort(s)}
        elif self.kind in ("platt", "isotonic"):
            if labels is None:
                raise ValueError(
                    f"calibration {self.kind!r} needs (score, label) pairs on a calibration split ({where})")
            y = labels[ok]
            if self.kind == "platt":
                probability_input = bool(s.min() >= 0 and s.max() <= 1)
                a, b = _platt_fit(s, np.clip(y, 0, 1), probability_input)
                self.params = {"a": a, "b": b, "logit_input": probability_input}
            else:
                thresholds, fitted = isotonic_fit(s, y)
                self.params = {"x": thresholds, "y": fitted}
        return self

    def transform(self, scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, np.float64)
        out = np.full(s.shape, np.nan)
        ok = np.isfinite(s)
        v = s[ok]
        if self.kind == "none":
            out[ok] = v
        elif self.kind == "zscore":
            out[ok] = (v - self.params["mean"]) / self.params["sd"]
        elif self.kind == "rank":
            reference = self.params["sorted"]
            below, not_above = np.searchsorted(reference, v, "left"), np.searchsorted(reference, v, "right")
            out[ok] = (below + not_above) / (2.0 * len(reference))
        elif self.kind == "platt":
            f = _logit(v) if self.params["logit_input"] else v
            out[ok] = 1.0 / (1.0 + np.exp(-(self.params["a"] * f + self.params["b"])))
        elif self.kind == "isotonic":
            out[ok] = np.interp(v, self.params["x"], self.params["y"])
        return out

    def summary(self) -> Dict[str, Any]:
        p = {k: v for k, v in self.params.items() if not isinstance(v, np.ndarray)}
        if self.kind == "isotonic":
            p["n_steps"] = int(len(np.unique(self.params["y"])))
        if self.kind == "rank":
            p["n"] = int(len(self.params["sorted"]))
        return {"kind": self.kind, "fitted_on": self.fitted_on, **p}


# ------------------------------------------------------------------------------------------------
# Terms
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Term:
    """A named score term: its source, calibration and missing-score policy."""

    name: str
    source: ScoreSource
    calibrate: str = AUTO
    missing: str = "carry"

    def __post_init__(self) -> None:
        if self.calibrate not in CALIBRATIONS + (AUTO,):
            raise ValueError(
                f"term {self.name!r}: calibrate must be one of {CALIBRATIONS + (AUTO,)}, got {self.calibrate!r}")

    @classmethod
    def from_config(cls, name: str, spec: Any) -> "Term":
        """``spec``: a source (path, built-in name, callable, table) or a mapping
        ``{source, calibrate, missing, column, val, label}``."""
        if isinstance(spec, Mapping) and "source" in spec:
            spec = dict(spec)
            unknown = set(spec) - {"source", "calibrate", "missing", "column", "val", "label", "allow_first_segment"}
            if unknown:
                raise ValueError(f"term {name!r}: unknown key(s) {sorted(unknown)}")
            kw = {k: spec[k] for k in ("column", "val", "label", "allow_first_segment") if k in spec}
            src = load_scores(spec["source"], name=name, **kw)
            return cls(name, src, calibrate=spec.get("calibrate", AUTO), missing=spec.get("missing", "carry"))
        return cls(name, load_scores(spec, name=name))


@dataclasses.dataclass
class TermValues:
    """A term resolved on the simulated rows: calibrated values with missing scores filled."""

    name: str
    values: np.ndarray
    raw: np.ndarray
    calibrator: Calibrator
    missing: MissingReport
    source: str
    oracle: bool = False

    def summary(self) -> Dict[str, Any]:
        v = self.values
        return {
            "source": self.source,
            "oracle": self.oracle,
            "calibration": self.calibrator.summary(),
            "missing": self.missing.to_dict(),
            "mean": float(v.mean()) if len(v) else float("nan"),
            "sd": float(v.std()) if len(v) else float("nan"),
        }


def _fitted_calibrator(term: Term, ctx: ScoreContext, raw: np.ndarray, pairs: CalibrationPairs) -> Calibrator:
    """The term's calibration (``auto`` resolved), fitted on the calibration split's (score, label) pairs."""
    kind = term.calibrate
    if kind == AUTO:
        kind = "platt" if (pairs is not None and pairs[1] is not None and len(pairs[0]) >= 20) else "zscore"
    calibrator = Calibrator(kind)
    if kind in ("platt", "isotonic"):
        if pairs is None or pairs[1] is None:
            raise ValueError(f"term {term.name!r}: calibration {term.calibrate!r} needs labelled scores on the "
                             f"{ctx.cal_split!r} split (a run directory, a predictions table with `val:`, or a "
                             "built-in term)")
        calibrator.fit(pairs[0], pairs[1], where=f"{ctx.cal_split} split ({len(pairs[0])} labelled scores)")
    elif kind in ("zscore", "rank"):
        if pairs is not None and len(pairs[0]):
            calibrator.fit(pairs[0], where=f"{ctx.cal_split} split ({len(pairs[0])} scores)")
        else:
            # No calibration split: the moments of the simulated split's whole score distribution (labels unused).
            # They are constants over the whole period; give a calibration split to keep even them out of it.
            calibrator.fit(raw, where="simulated split's score distribution (no calibration split; labels unused)")
            if not term.source.oracle:
                logger.warning("term %s: no calibration split; %s calibration fitted on the simulated split's score "
                               "distribution", term.name, kind)
    return calibrator


def resolve_term(term: Term, ctx: ScoreContext) -> TermValues:
    """Score the rows of ``ctx`` with ``term``: raw scores -> calibration -> missing-score fill."""
    raw = term.source.values(ctx)
    if len(raw) and not np.isfinite(raw).any():
        raise ValueError(f"term {term.name!r} ({term.source.describe()}): no score for any simulated row; "
                         f"were the predictions made on another split or world than {ctx.split!r}?")
    pairs = term.source.calibration_pairs(ctx) if term.calibrate != "none" else None
    calibrator = _fitted_calibrator(term, ctx, raw, pairs)
    values = calibrator.transform(raw)
    if pairs is not None and len(pairs[0]):
        prior = float(np.nanmean(calibrator.transform(pairs[0])))
    else:
        prior = float(np.nanmean(values)) if np.isfinite(values).any() else 0.0
    filled, report = fill_missing(values, ctx.live_id, ctx.segment, term.missing, prior)
    if report.n_rows and report.n_missing > 0.2 * report.n_rows:
        logger.warning("term %s: %.0f%% of the simulated rows had no score (filled by %s)", term.name,
                       100 * report.n_missing / report.n_rows, term.missing)
    return TermValues(term.name, filled, raw, calibrator, report, term.source.describe(), oracle=term.source.oracle)


def resolve_terms(terms: Mapping[str, Term], ctx: ScoreContext) -> Dict[str, TermValues]:
    return {name: resolve_term(t, ctx) for name, t in terms.items()}


# ------------------------------------------------------------------------------------------------
# Formulas
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Formula:
    """``linear``: sum_k w_k s_k; ``product``: prod_k (s_k + alpha_k)^beta_k (ranked by its log).

    ``coef`` maps term -> weight (linear) or term -> (alpha, beta) (product).
    """

    kind: str
    coef: Tuple[Tuple[str, Any], ...]

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "product"):
            raise ValueError(f"formula kind must be 'linear' or 'product', got {self.kind!r}")

    @classmethod
    def linear(cls, weights: Mapping[str, float]) -> "Formula":
        return cls("linear", tuple((str(k), float(v)) for k, v in weights.items()))

    @classmethod
    def product(cls, terms: Mapping[str, Sequence[float]]) -> "Formula":
        return cls("product", tuple((str(k), (float(v[0]), float(v[1]))) for k, v in terms.items()))

    @property
    def terms(self) -> Tuple[str, ...]:
        return tuple(k for k, _ in self.coef)

    def weight(self, term: str) -> float:
        for k, v in self.coef:
            if k == term:
                return v if self.kind == "linear" else v[1]
        return 0.0

    def with_weight(self, term: str, w: float) -> "Formula":
        """The same formula with ``term``'s weight (linear) or exponent beta (product) set to ``w``."""
        if self.kind == "linear":
            d = dict(self.coef)
            d[term] = float(w)
            return Formula.linear(d)
        d = dict(self.coef)
        alpha = d[term][0] if term in d else 0.0
        d[term] = (alpha, float(w))
        return Formula.product(d)

    def rename(self, mapping: Mapping[str, str]) -> "Formula":
        return Formula(self.kind, tuple((mapping.get(k, k), v) for k, v in self.coef))

    def score(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        missing = [k for k in self.terms if k not in values]
        if missing:
            raise KeyError(f"formula uses unknown term(s) {missing}; known: {sorted(values)}")
        n = len(next(iter(values.values())))
        out = np.zeros(n)
        if self.kind == "linear":
            for k, w in self.coef:
                if w != 0.0:
                    out += w * values[k]
            return out
        for k, (alpha, beta) in self.coef:
            if beta == 0.0:
                continue
            base = values[k] + alpha
            if np.any(base <= 0):
                raise ValueError(f"product formula: term {k!r} + alpha ({alpha}) is <= 0 for "
                                 f"{int(np.sum(base <= 0))} rows; use a calibration onto [0, 1] (platt, isotonic, "
                                 "rank) or a larger alpha")
            out += beta * np.log(base)
        return out

    def describe(self) -> str:
        if self.kind == "linear":
            return " + ".join(f"{w:g}*{k}" for k, w in self.coef if w != 0) or "0"
        return " * ".join(f"({k}+{a:g})^{b:g}" for k, (a, b) in self.coef if b != 0) or "1"

    def to_dict(self) -> Dict[str, Any]:
        if self.kind == "linear":
            return {"weights": dict(self.coef)}
        return {"product": {k: list(v) for k, v in self.coef}}


def parse_formula(spec: Any) -> Formula:
    """A :class:`Formula` from config: ``{term: weight}``, ``{"weights": {...}}`` or
    ``{"product": {term: [alpha, beta]}}``."""
    if isinstance(spec, Formula):
        return spec
    if not isinstance(spec, Mapping):
        raise ValueError(f"a formula is a mapping of term weights, got {spec!r}")
    if "product" in spec:
        return Formula.product(spec["product"])
    if "weights" in spec:
        return Formula.linear(spec["weights"])
    bad = {k: v for k, v in spec.items() if not isinstance(v, (int, float)) or isinstance(v, bool)}
    if bad:
        raise ValueError(f"formula weights must be numbers, got {bad}")
    return Formula.linear(spec)
