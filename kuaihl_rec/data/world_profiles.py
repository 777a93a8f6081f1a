"""Hidden content states and the built-in streamer category profiles of the synthetic world.

The state codes (``docs/WORLD.md`` section 4) are the ``state`` column of the truth sidecar::

    0 idle   1 talk   2 performance   3 pk   4 highlight

``idle`` to ``pk`` are the *regular* states; ``highlight`` is a short burst entered from them.
A category profile (section 3, table of categories) gives, for category c,

- the occupancy weights w_c[j] of the regular states j (where a switch goes),
- the highlight entry rates h_c[i] from each regular state i,
- the audience's taste peak hour and the streamers' mean start hour.

Rooms start in idle (0.6) or talk (0.4); a highlight burst returns to regular state j with
probability proportional to (0.2, 1, 1, 1)[j] * w_c[j] (section 4).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import numpy as np

from kuaihl_rec.data.world_config import CATEGORY_NAMES, STATE_NAMES

__all__ = [
    "CATEGORY_PROFILES",
    "HIGHLIGHT",
    "HIGHLIGHT_RETURN_WEIGHTS",
    "IDLE",
    "INITIAL_STATE_PROBS",
    "N_REGULAR_STATES",
    "N_STATES",
    "PERFORMANCE",
    "PK",
    "TALK",
    "CategoryProfile",
]

IDLE, TALK, PERFORMANCE, PK, HIGHLIGHT = range(5)
N_STATES = len(STATE_NAMES)
#: idle, talk, performance, pk: the states a highlight burst is entered from and returns to.
N_REGULAR_STATES = 4


@dataclasses.dataclass(frozen=True)
class CategoryProfile:
    """Built-in behaviour of a streamer category (documented in docs/WORLD.md).

    occupancy:       relative weight of jumping into idle / talk / performance / pk
    highlight_entry: per-segment probability of a highlight burst from idle / talk / performance / pk
    taste_peak_hour: local hour at which the audience likes this category most
    start_hour:      mean local hour at which its streamers go live
    """

    occupancy: Tuple[float, float, float, float]
    highlight_entry: Tuple[float, float, float, float]
    taste_peak_hour: float
    start_hour: float


CATEGORY_PROFILES: Dict[str, CategoryProfile] = {
    "dance": CategoryProfile((0.15, 0.25, 0.50, 0.10), (0.0, 0.010, 0.045, 0.050), 22.0, 20.0),
    "singing": CategoryProfile((0.15, 0.30, 0.50, 0.05), (0.0, 0.010, 0.050, 0.040), 21.0, 20.0),
    "gaming": CategoryProfile((0.20, 0.20, 0.55, 0.05), (0.0, 0.005, 0.055, 0.040), 23.0, 21.0),
    "chat": CategoryProfile((0.25, 0.60, 0.10, 0.05), (0.0, 0.015, 0.030, 0.040), 15.0, 14.0),
    "pk": CategoryProfile((0.10, 0.25, 0.15, 0.50), (0.0, 0.010, 0.030, 0.060), 21.0, 19.0),
    "shopping": CategoryProfile((0.15, 0.60, 0.20, 0.05), (0.0, 0.010, 0.030, 0.030), 19.0, 18.0),
}
assert tuple(sorted(CATEGORY_PROFILES)) == tuple(sorted(CATEGORY_NAMES))

#: Pr(first state of a room), over the five states.
INITIAL_STATE_PROBS = np.array([0.6, 0.4, 0.0, 0.0, 0.0])
#: Where a highlight burst returns to, before multiplying by the category occupancy.
HIGHLIGHT_RETURN_WEIGHTS = np.array([0.2, 1.0, 1.0, 1.0])
