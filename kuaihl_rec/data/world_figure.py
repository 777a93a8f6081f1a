"""Figure of one synthetic room's timeline (``figures/room_timeline.png``, ``docs/WORLD.md`` section 1).

Three stacked panels over the room's segments, each on a band coloured by the hidden state: the hidden
attractiveness logit; the true LVTR p_t against the LVTR label (open markers below ``min_viewers``);
viewers (with the ``min_viewers`` line) and comments. The default room is a typical one: about one
hour long, with a highlight, mostly above ``min_viewers`` and with an audience of a typical size.
"""

from __future__ import annotations

import io
from typing import Optional

import numpy as np

from kuaihl_rec.data.world_config import STATE_NAMES
from kuaihl_rec.data.world_profiles import HIGHLIGHT, N_STATES
from kuaihl_rec.data.world_tables import World

__all__ = ["pick_room", "plot_room_timeline"]

STATE_COLOURS = ("#d9d9d9", "#9ecae1", "#a1d99b", "#fdae6b", "#e34a33")
TARGET_ROOM_SEGMENTS = 120  # one hour


def pick_room(world: World) -> int:
    """A representative room for the figure: ~1 h, with a highlight, mostly above min_viewers."""
    seg = world.segments
    live = seg.column("live_id").to_numpy()
    viewers = seg.column("n_viewers").to_numpy()
    state = world.truth.column("state").to_numpy()
    ids, first, counts = np.unique(live, return_index=True, return_counts=True)
    has_highlight = np.add.reduceat((state == HIGHLIGHT).astype(np.int64), first) > 0
    ok_viewers = np.add.reduceat((viewers >= world.config.min_viewers).astype(np.int64), first) >= 0.8 * counts
    log_viewers = np.log(viewers.astype(np.float64))
    typical = np.abs(np.add.reduceat(log_viewers, first) / counts - np.median(log_viewers))  # a typical audience
    score = np.abs(counts - TARGET_ROOM_SEGMENTS) + 40.0 * typical + 1000 * ~has_highlight + 500 * ~ok_viewers
    return int(ids[np.argmin(score)])


def _state_band(ax, t: np.ndarray, state: np.ndarray) -> None:
    """Shade each run of a state on ``ax``; ``t`` [n] segment positions, ``state`` [n] codes."""
    for k in range(N_STATES):
        runs_start = np.flatnonzero((state == k) & np.r_[True, state[1:] != state[:-1]])
        for run_first in runs_start:
            run_last = run_first
            while run_last + 1 < len(state) and state[run_last + 1] == k:
                run_last += 1
            ax.axvspan(t[run_first] - 0.5, t[run_last] + 0.5, color=STATE_COLOURS[k], alpha=0.35, lw=0)


def _lvtr_panel(ax, t: np.ndarray, true_lvtr: np.ndarray, lvtr: np.ndarray, low: np.ndarray, min_viewers: int) -> None:
    """True LVTR against the label, open markers where the room has fewer than ``min_viewers``."""
    ax.plot(t, true_lvtr, color="k", lw=1.4, label="true LVTR p_t")
    ax.scatter(t[~low], lvtr[~low], s=12, color="tab:blue", label="LVTR label")
    low_label = f"LVTR label (< {min_viewers} viewers)"
    ax.scatter(t[low], lvtr[low], s=12, facecolors="none", edgecolors="tab:blue", label=low_label)
    ax.set_ylim(0, 1)
    ax.set_ylabel("LVTR")
    ax.legend(loc="lower right", fontsize=8)


def _audience_panel(ax, t: np.ndarray, viewers: np.ndarray, comments: np.ndarray, min_viewers: int) -> None:
    """Viewers (left axis, with the ``min_viewers`` line) and comments (right axis)."""
    ax.plot(t, viewers, color="tab:green", lw=1.4, label="viewers")
    ax.axhline(min_viewers, color="tab:green", ls=":", lw=1, label="min_viewers")
    ax.set_ylabel("viewers")
    ax.set_xlabel("segment (30 s)")
    right = ax.twinx()
    right.plot(t, comments, color="tab:purple", lw=1.0, label="comments")
    right.set_ylabel("comments")
    handles_left, labels_left = ax.get_legend_handles_labels()
    handles_right, labels_right = right.get_legend_handles_labels()
    ax.legend(handles_left + handles_right, labels_left + labels_right, loc="upper left", fontsize=8)


def plot_room_timeline(world: World, live_id: Optional[int] = None) -> bytes:
    """PNG of one room's timeline: hidden state band, attractiveness, LVTR, viewers, comments."""
    # matplotlib is heavy and only needed for this figure: imported here, not at module load.
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    live_id = pick_room(world) if live_id is None else int(live_id)
    seg = world.segments
    rows = np.flatnonzero(seg.column("live_id").to_numpy() == live_id)
    if len(rows) == 0:
        raise ValueError(f"live_id {live_id} is not in this world")
    lo, hi = int(rows[0]), int(rows[-1]) + 1

    def col(table, name):
        return table.column(name).slice(lo, hi - lo).to_numpy()

    t = col(seg, "segment")
    min_viewers = world.config.min_viewers
    fig, axes = plt.subplots(3, 1, figsize=(11, 7.5), sharex=True, constrained_layout=True)
    for ax in axes:
        _state_band(ax, t, col(world.truth, "state"))
    ax = axes[0]
    ax.plot(t, col(world.truth, "attract_logit"), color="k", lw=1.4, label="hidden attractiveness (logit)")
    ax.set_ylabel("logit")
    ax.legend(loc="upper left", fontsize=8)
    streamer = int(col(seg, "streamer_id")[0])
    ax.set_title(f"room {live_id} (streamer {streamer}): hidden state band, labels and audience")
    viewers = col(seg, "n_viewers")
    low = viewers < min_viewers
    _lvtr_panel(axes[1], t, col(world.truth, "true_lvtr"), col(seg, "lvtr"), low, min_viewers)
    _audience_panel(axes[2], t, viewers, col(seg, "n_comments"), min_viewers)
    patches = [Patch(color=STATE_COLOURS[k], alpha=0.35, label=STATE_NAMES[k]) for k in range(N_STATES)]
    fig.legend(
        handles=patches, loc="outside lower center", ncol=N_STATES, fontsize=8, title="hidden state", title_fontsize=8
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
