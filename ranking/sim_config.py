"""The simulator's clock and its hidden user and platform behaviour (:class:`SimConfig`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict

__all__ = ["LONG_VIEW_S", "SEGMENT_SECONDS", "SHORT_VIEW_S", "SimConfig", "TICKS_PER_DAY"]

#: One tick of simulated time: a room broadcasts one segment per tick.
SEGMENT_SECONDS = 30
TICKS_PER_DAY = 86400 // SEGMENT_SECONDS
#: A watch longer than this is a long view (the LVTR label).
LONG_VIEW_S = 60.0
#: A watch shorter than this is a short view (an immediate exit).
SHORT_VIEW_S = 3.0


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """Hidden user and platform behaviour of the simulator (documented in :mod:`ranking.simulator`)."""

    # users
    sessions_per_day: float = 1.0
    activity_shape: float = 1.5
    taste_sigma: float = 0.5
    click_bias_sigma: float = 0.3
    patience_mean: float = 0.8
    patience_concentration: float = 12.0
    return_mean: float = 0.65
    return_concentration: float = 10.0
    budget_median_s: float = 900.0
    budget_user_sigma: float = 0.6
    budget_session_sigma: float = 0.5
    stickiness_sigma: float = 0.3
    # platform
    max_positions: int = 20
    position_decay: float = 0.7
    short_view_scale: float = 0.35
    max_rounds: int = 1000
    chunk_sessions: int = 65536

    def replace(self, **kw: Any) -> "SimConfig":
        known = [f.name for f in dataclasses.fields(self)]
        unknown = set(kw) - set(known)
        if unknown:
            raise ValueError(f"unknown simulator setting(s) {sorted(unknown)}; known: {known}")
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)
