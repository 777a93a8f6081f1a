"""Estimators of a new ranking policy's value from logged lists (docs/OPE.md, "Estimators").

The value of a policy pi is the expected reward of one request (one returned list of length L),
summed over its positions: ``V(pi) = E_x E_{a ~ pi(.|x)} [ sum_k r_k ]``. With a click reward
that is the request's click-through rate; with ``watch_s`` the seconds watched per request. The log
holds n requests drawn under the logging policy pi_0; per impression (request i, position k, item a_ik):

``w_ik  = pi(a_ik at k | x_i) / pi_0(a_ik at k | x_i)``         marginal (position-wise) weight
``w_i,0:k = pi(a_i0..a_ik | x_i) / pi_0(a_i0..a_ik | x_i)``      prefix weight; ``W_i = w_i,0:L-1``

==============  ====================================================================================
``dm``          direct method: ``1/n sum_i sum_k sum_a pi(a at k | x_i) q(x_i, a, k)``
``ips``         slate IPS (whole-list weight): ``1/n sum_i W_i sum_k r_ik``
``snips``       self-normalised slate IPS: ``sum_i W_i R_i / sum_i W_i``  (Swaminathan & Joachims 2015)
``iips``        independent-item IPS: ``1/n sum_i sum_k w_ik r_ik``; unbiased when r_k depends only on
                (x, a_k, k), e.g. a position-based click model (Li et al. 2018)
``rips``        reward-interaction IPS: ``1/n sum_i sum_k w_i,0:k r_ik``; unbiased when r_k depends on the
                items at positions <= k only, e.g. the cascade (McInerney et al. 2020; Kiyohara et al. 2022)
``dr``          cascade doubly robust (Kiyohara et al. 2022, eq. 6), the DR of Dudik et al. (2011) for lists:
                ``1/n sum_i sum_k [ w_i,0:k (r_ik - q(x_i, a_ik, k))
                + w_i,0:k-1 sum_a pi(a | x_i, a_i,0..k-1) q(x_i, a, k) ]``  (``w_i,0:-1 = 1``);
                unbiased under the cascade assumption for any reward model q
==============  ====================================================================================

Each estimator returns per-request numerators and denominators (:class:`Contributions`): the estimate
is ``sum num / sum den`` (``den = 1`` except for ``snips``), which lets :mod:`ranking.ope.intervals`
bootstrap over sessions by resampling per-session sums. With one position per request (the Open
Bandit Dataset, position as context) ``ips = iips = rips`` and ``dr`` is the DR of Dudik et al.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Tuple

import numpy as np

__all__ = ["ESTIMATORS", "Contributions", "SlateData", "available", "contributions", "estimate"]


@dataclasses.dataclass(frozen=True)
class SlateData:
    """Row arrays ``[n_rows]`` of a log, rows sorted by (request, position); ``request`` in 0..R-1.

    ``p_log`` / ``p_eval``: marginal probabilities of the logged item at its position under pi_0 / pi;
    ``prefix_log`` / ``prefix_eval``: probabilities of the logged prefix up to the row (None: unknown);
    ``q_logged``: the reward model at the logged (item, position); ``q_eval``: its expectation under pi's
    marginal at the position, ``sum_a pi(a at k) q(a, k)``; ``q_next``: under pi's choice at k given the
    logged prefix above, ``sum_a pi(a | a_0..a_k-1) q(a, k)``. ``session [R]``: the bootstrap unit of each request.
    """

    request: np.ndarray
    reward: np.ndarray
    p_log: np.ndarray
    p_eval: np.ndarray
    session: np.ndarray
    prefix_log: Optional[np.ndarray] = None
    prefix_eval: Optional[np.ndarray] = None
    q_logged: Optional[np.ndarray] = None
    q_eval: Optional[np.ndarray] = None
    q_next: Optional[np.ndarray] = None

    @property
    def n_requests(self) -> int:
        return len(self.session)

    def per_request(self, row_values: np.ndarray) -> np.ndarray:
        """Sum of a row array over each request's rows ``[R]``."""
        return np.bincount(self.request, weights=row_values, minlength=self.n_requests)

    @property
    def last_row(self) -> np.ndarray:
        """Index of each request's last row ``[R]``."""
        return np.r_[np.flatnonzero(np.diff(self.request)), len(self.request) - 1]

    @property
    def marginal_weight(self) -> np.ndarray:
        return self.p_eval / self.p_log

    @property
    def prefix_weight(self) -> np.ndarray:
        if self.prefix_log is None or self.prefix_eval is None:
            raise ValueError("this log has no prefix propensities (column prefix_propensity): ips, snips, rips and "
                             "dr need them")
        return self.prefix_eval / self.prefix_log

    @property
    def slate_weight(self) -> np.ndarray:
        """``W_i [R]``: the whole logged list's weight."""
        return self.prefix_weight[self.last_row]

    @property
    def previous_prefix_weight(self) -> np.ndarray:
        """``w_i,0:k-1`` per row (1 at position 0)."""
        w = self.prefix_weight
        first = np.r_[True, self.request[1:] != self.request[:-1]]
        return np.where(first, 1.0, np.r_[1.0, w[:-1]])


@dataclasses.dataclass(frozen=True)
class Contributions:
    """Per-request numerator and denominator ``[R]``: the estimate is ``num.sum() / den.sum()``."""

    num: np.ndarray
    den: np.ndarray

    @property
    def value(self) -> float:
        return float(self.num.sum() / self.den.sum())


def _linear(data: SlateData, row_values: np.ndarray) -> Contributions:
    return Contributions(data.per_request(row_values), np.ones(data.n_requests))


def _need_model(data: SlateData, name: str) -> None:
    if data.q_logged is None or data.q_eval is None or data.q_next is None:
        raise ValueError(f"estimator {name!r} needs a reward model (q_logged, q_eval, q_next)")


def _dm(data: SlateData) -> Contributions:
    _need_model(data, "dm")
    return _linear(data, data.q_eval)


def _ips(data: SlateData) -> Contributions:
    return Contributions(data.slate_weight * data.per_request(data.reward), np.ones(data.n_requests))


def _snips(data: SlateData) -> Contributions:
    weight = data.slate_weight
    return Contributions(weight * data.per_request(data.reward), weight)


def _iips(data: SlateData) -> Contributions:
    return _linear(data, data.marginal_weight * data.reward)


def _rips(data: SlateData) -> Contributions:
    return _linear(data, data.prefix_weight * data.reward)


def _dr(data: SlateData) -> Contributions:
    _need_model(data, "dr")
    correction = data.prefix_weight * (data.reward - data.q_logged)
    return _linear(data, correction + data.previous_prefix_weight * data.q_next)


#: name -> (function, the weights it uses: "none", "slate", "marginal" or "prefix").
ESTIMATORS: Dict[str, Tuple[Callable[[SlateData], Contributions], str]] = {
    "dm": (_dm, "none"),
    "ips": (_ips, "slate"),
    "snips": (_snips, "slate"),
    "iips": (_iips, "marginal"),
    "rips": (_rips, "prefix"),
    "dr": (_dr, "prefix"),
}


def contributions(data: SlateData, name: str) -> Contributions:
    """Per-request contributions of estimator ``name`` (:data:`ESTIMATORS`)."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; known: {sorted(ESTIMATORS)}")
    return ESTIMATORS[name][0](data)


def estimate(data: SlateData, name: str) -> float:
    """The point estimate of ``V(pi)`` by estimator ``name``."""
    return contributions(data, name).value


def available(data: SlateData) -> Tuple[str, ...]:
    """The estimators this log supports (prefix propensities and a reward model are optional)."""
    out = []
    for name, (_, weights) in ESTIMATORS.items():
        if weights in ("slate", "prefix") and data.prefix_log is None:
            continue
        if name in ("dm", "dr") and data.q_logged is None:
            continue
        out.append(name)
    return tuple(out)
