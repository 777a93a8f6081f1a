"""Policies on a log: a blended formula made stochastic, scored on each request's candidates.

:class:`RequestArrays` lays a :class:`ranking.ope.schema.LoggedData` out per request: candidate term
scores ``[R, N, T]`` (N = the most candidates of any request; padding is NaN), the logged list as
candidate slots ``chosen [R, K]`` (-1 past the list's end). :class:`StochasticPolicy` is a formula
(:class:`ranking.blend.Formula`) and a Plackett-Luce temperature (:mod:`ranking.ope.plackett_luce`);
:func:`slate_data` combines a policy, the logged propensities and a reward model into the
:class:`ranking.ope.estimators.SlateData` the estimators read.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

import numpy as np
import pandas as pd

from ranking.blend import Formula
from ranking.ope.estimators import SlateData
from ranking.ope.plackett_luce import log_weights, normalised_weights, position_marginals, prefix_probabilities
from ranking.ope.schema import LoggedData

__all__ = ["PolicyProbabilities", "RequestArrays", "StochasticPolicy", "slate_data"]


@dataclasses.dataclass(frozen=True)
class StochasticPolicy:
    """``pi(list | x)``: Plackett-Luce over ``formula``'s blended scores divided by ``temperature``."""

    formula: Formula
    temperature: float

    def log_weights(self, terms: Dict[str, np.ndarray], present: np.ndarray) -> np.ndarray:
        """``s / tau`` of every candidate ``[R, N]`` (-inf where ``present`` is False)."""
        flat = {k: v.reshape(-1) for k, v in terms.items()}
        score = self.formula.score(flat).reshape(present.shape)
        return np.where(present, log_weights(np.where(present, score, 0.0), self.temperature), -np.inf)

    def to_dict(self) -> Dict[str, Any]:
        return {"formula": self.formula.to_dict(), "describe": self.formula.describe(), "temperature": self.temperature}


@dataclasses.dataclass
class RequestArrays:
    """A log per request: candidates' term scores, the logged list, and the row arrays in request order."""

    request_ids: np.ndarray  # [R]
    session: np.ndarray  # [R] session index 0..S-1
    terms: Dict[str, np.ndarray]  # name -> [R, N]
    present: np.ndarray  # [R, N]
    chosen: np.ndarray  # [R, K] candidate slot of the item at position k, -1 past the list
    row_request: np.ndarray  # [n_rows] request index
    row_position: np.ndarray  # [n_rows]
    impressions: pd.DataFrame

    @property
    def n_positions(self) -> int:
        return self.chosen.shape[1]

    @property
    def row_slot(self) -> np.ndarray:
        return self.chosen[self.row_request, self.row_position]

    @classmethod
    def from_logs(cls, data: LoggedData) -> "RequestArrays":
        imp, cand = data.impressions, data.candidates
        request_ids, row_request = np.unique(imp["request_id"].to_numpy(), return_inverse=True)
        cand_request = np.searchsorted(request_ids, cand["request_id"].to_numpy())
        starts = np.r_[0, np.flatnonzero(np.diff(cand_request)) + 1]
        slot = np.arange(len(cand)) - np.repeat(starts, np.diff(np.r_[starts, len(cand)]))
        n_cand = int(slot.max()) + 1
        present = np.zeros((len(request_ids), n_cand), dtype=bool)
        present[cand_request, slot] = True
        terms = {}
        for name in data.term_columns:
            grid = np.full(present.shape, np.nan)
            grid[cand_request, slot] = cand[name].to_numpy(np.float64)
            terms[name] = grid
        keyed = pd.DataFrame({"request_id": cand["request_id"].to_numpy(), "item_id": cand["item_id"].to_numpy(),
                              "_slot": slot})
        row_slot = imp[["request_id", "item_id"]].merge(keyed, how="left", on=["request_id", "item_id"])["_slot"]
        position = imp["position"].to_numpy(np.int64)
        chosen = np.full((len(request_ids), int(position.max()) + 1), -1, dtype=np.int64)
        chosen[row_request, position] = row_slot.to_numpy(np.int64)
        _, session = np.unique(imp.groupby("request_id", sort=True)["session_id"].first().to_numpy(),
                               return_inverse=True)
        return cls(request_ids, session.astype(np.int64), terms, present, chosen, row_request, position, imp)


@dataclasses.dataclass
class PolicyProbabilities:
    """A policy on a log: marginals ``[R, N, K]``, prefix probabilities ``[R, K]`` and conditional choice
    probabilities given the logged prefix ``[R, N, K]``."""

    marginals: np.ndarray
    prefix: np.ndarray
    conditional: np.ndarray

    @classmethod
    def of(cls, policy: StochasticPolicy, arrays: RequestArrays) -> "PolicyProbabilities":
        logw = policy.log_weights(arrays.terms, arrays.present)
        k = arrays.n_positions
        marginals = position_marginals(logw, k)
        prefix = prefix_probabilities(logw, arrays.chosen)
        w = normalised_weights(logw)  # [R, N], as prefix_probabilities uses them
        taken = np.zeros_like(w, dtype=bool)
        conditional = np.zeros(w.shape + (k,))
        for j in range(k):
            free = np.where(taken, 0.0, w)
            total = free.sum(axis=1, keepdims=True)
            conditional[:, :, j] = free / np.where(total > 0, total, 1.0)
            valid = arrays.chosen[:, j] >= 0
            taken[np.flatnonzero(valid), arrays.chosen[valid, j]] = True
        return cls(marginals, prefix, conditional)

    def at_rows(self, arrays: RequestArrays) -> Dict[str, np.ndarray]:
        r, k, slot = arrays.row_request, arrays.row_position, arrays.row_slot
        return {"marginal": self.marginals[r, slot, k], "prefix": self.prefix[r, k]}


def slate_data(arrays: RequestArrays, policy: PolicyProbabilities, reward: str,
               q_hat: Optional[np.ndarray] = None) -> SlateData:
    """The estimators' inputs for ``policy`` and the reward column ``reward``; ``q_hat [R, N, K]``: a reward
    model's prediction for every candidate at every position (None: no DM / DR)."""
    imp = arrays.impressions
    at = policy.at_rows(arrays)
    has_prefix = "prefix_propensity" in imp.columns
    r, k, slot = arrays.row_request, arrays.row_position, arrays.row_slot
    q = {}
    if q_hat is not None:
        q = {"q_logged": q_hat[r, slot, k],
             "q_eval": np.einsum("ij,ij->i", policy.marginals[r, :, k], q_hat[r, :, k]),
             "q_next": np.einsum("ij,ij->i", policy.conditional[r, :, k], q_hat[r, :, k])}
    return SlateData(
        request=r, reward=imp[reward].to_numpy(np.float64), p_log=imp["propensity"].to_numpy(np.float64),
        p_eval=at["marginal"], session=arrays.session,
        prefix_log=imp["prefix_propensity"].to_numpy(np.float64) if has_prefix else None,
        prefix_eval=at["prefix"] if has_prefix else None, **q)
