"""What the simulator counts: the outcome columns (:class:`Outcome`) and the per-session / per-user arrays.

An outcome array has one column per :class:`Outcome`, in its order: ``values[:, Outcome.CLICKS]``.
:data:`OUTCOME_FIELDS` holds the same names as strings (``"clicks"``); this module is the only place
that defines them.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Dict, Optional, Tuple

import numpy as np

from ranking.population import Sessions

__all__ = ["N_OUTCOMES", "OUTCOME_FIELDS", "Outcome", "SessionOutcomes", "aggregate_users"]


class Outcome(enum.IntEnum):
    """The outcome counters of a session (and their sums per user and day); the value is the column."""

    IMPRESSIONS = 0
    CLICKS = 1
    LONG_VIEWS = 2
    SHORT_VIEWS = 3
    PLAY_S = 4
    SESSIONS = 5
    VISITS = 6

    @property
    def field(self) -> str:
        """The column's name in results and configs (``"play_s"``)."""
        return self.name.lower()

    @classmethod
    def from_field(cls, field: str) -> "Outcome":
        return cls[field.upper()]


#: The outcome columns' names, in column order.
OUTCOME_FIELDS: Tuple[str, ...] = tuple(column.field for column in Outcome)
N_OUTCOMES = len(OUTCOME_FIELDS)


@dataclasses.dataclass
class SessionOutcomes:
    """Outcome counters (:class:`Outcome`): per session ``values[S, F]`` (when asked for) and/or
    per user and day ``user_days[n_users, days, F]`` (float32), per-position totals, an optional log."""

    values: Optional[np.ndarray]
    position_impressions: np.ndarray
    position_clicks: np.ndarray
    rounds: int
    empty_visits: int
    log: Optional[Dict[str, np.ndarray]] = None
    user_days: Optional[np.ndarray] = None
    n_impressions: int = 0

    @property
    def impressions(self) -> int:
        return int(self.n_impressions)


def aggregate_users(sessions: Sessions, outcomes: SessionOutcomes, n_users: int, days: int) -> np.ndarray:
    """Per-user per-day sums ``[n_users, days, N_OUTCOMES]`` (float32; sessions counted on their start
    day) of per-session outcomes (``simulate(..., per_session=True)``)."""
    if outcomes.values is None:
        raise ValueError("these outcomes were simulated without per-session values")
    key = sessions.user * days + np.minimum(sessions.day, days - 1)
    out = np.zeros((n_users * days, N_OUTCOMES))
    for column in Outcome:
        out[:, column] = np.bincount(key, weights=outcomes.values[:, column], minlength=n_users * days)
    return out.reshape(n_users, days, N_OUTCOMES).astype(np.float32)
