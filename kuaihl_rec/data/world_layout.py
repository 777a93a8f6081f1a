"""Shared machinery of the world generator: random streams, segment rows, stepping rooms along time.

Random streams (``docs/WORLD.md`` section 2): ``np.random.SeedSequence(seed).spawn(6)`` gives six
independent PCG64 generators ``structure, latent, chain, audience, visual, text``; ``chain_seed``
(when set) replaces ``latent, chain, audience`` by ``SeedSequence([chain_seed, 0x6B75616968]).spawn(3)``.

Segment rows (section 1): rows are sorted by ``(live_id, segment)``; room r holds rows
``offset_r .. offset_r + T_r - 1``, ``segment`` runs 0..T_r-1, ``timestamp = room start + 30 segment``
and the local hour is ``((timestamp + 3600 utc_offset_hours) mod 86400) / 3600``.

Time stepping (section 2): rooms sorted by length, longest first (stable), so at step t the rooms
with length > t, the ones still on air, are a prefix of that order.
"""

from __future__ import annotations

import dataclasses
from typing import Dict

import numpy as np

from kuaihl_rec.data.schema import SEGMENT_SECONDS
from kuaihl_rec.data.world_config import WorldConfig
from kuaihl_rec.data.world_structure import WorldStructure

__all__ = ["STREAM_NAMES", "RoomsByLength", "SegmentLayout", "progress_bar", "random_streams", "rooms_by_length",
           "segment_layout"]

STREAM_NAMES = ("structure", "latent", "chain", "audience", "visual", "text")
_HIDDEN_STREAM_NAMES = ("latent", "chain", "audience")
_CHAIN_SEED_SALT = 0x6B75616968  # "kuaih"


def random_streams(cfg: WorldConfig) -> Dict[str, np.random.Generator]:
    """``{name: Generator}`` for every name of :data:`STREAM_NAMES`; ``chain_seed`` re-seeds the hidden ones."""
    children = np.random.SeedSequence(cfg.seed).spawn(len(STREAM_NAMES))
    streams = {name: np.random.Generator(np.random.PCG64(seq)) for name, seq in zip(STREAM_NAMES, children)}
    if cfg.chain_seed is not None:
        hidden = np.random.SeedSequence([cfg.chain_seed, _CHAIN_SEED_SALT]).spawn(len(_HIDDEN_STREAM_NAMES))
        for name, seq in zip(_HIDDEN_STREAM_NAMES, hidden):
            streams[name] = np.random.Generator(np.random.PCG64(seq))
    return streams


@dataclasses.dataclass
class SegmentLayout:
    """Where every segment row sits (R rooms, N segment rows in ``(live_id, segment)`` order).

    offsets:    [R] int64, first row of each room
    room:       [N] int, room index of each row
    segment:    [N] int32, position of the row within its room
    streamer:   [N] int, streamer index of each row
    category:   [N] int, category index of each row's streamer
    timestamp:  [N] int64, unix seconds
    local_hour: [N] float64, local hour of day in [0, 24)
    """

    offsets: np.ndarray
    room: np.ndarray
    segment: np.ndarray
    streamer: np.ndarray
    category: np.ndarray
    timestamp: np.ndarray
    local_hour: np.ndarray

    @property
    def n_segments(self) -> int:
        return len(self.segment)


def segment_layout(cfg: WorldConfig, structure: WorldStructure) -> SegmentLayout:
    """The row layout of the segments of ``structure``'s rooms (no random draws)."""
    lengths = structure.room_length
    n_segments = int(lengths.sum())
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    room = np.repeat(np.arange(len(lengths)), lengths)
    segment = (np.arange(n_segments) - np.repeat(offsets, lengths)).astype(np.int32)
    streamer = structure.room_streamer[room]
    timestamp = np.repeat(structure.room_start, lengths) + SEGMENT_SECONDS * segment.astype(np.int64)
    local_hour = ((timestamp + cfg.utc_offset_hours * 3600.0) % 86400.0) / 3600.0
    return SegmentLayout(
        offsets=offsets,
        room=room,
        segment=segment,
        streamer=streamer,
        category=structure.streamer_category[streamer],
        timestamp=timestamp,
        local_hour=local_hour,
    )


@dataclasses.dataclass
class RoomsByLength:
    """Rooms sorted by length, longest first, for stepping all rooms at once along time.

    order:      [R] room indices, longest room first (stable)
    first_rows: [R] first segment row of ``order[i]``; row of step t is ``first_rows[i] + t``
    n_active:   [n_steps] rooms on air (length > t) at step t: the prefix ``order[:n_active[t]]``
    """

    order: np.ndarray
    first_rows: np.ndarray
    n_active: np.ndarray

    @property
    def n_steps(self) -> int:
        return len(self.n_active)


def rooms_by_length(lengths: np.ndarray, offsets: np.ndarray) -> RoomsByLength:
    """:class:`RoomsByLength` of rooms with lengths ``lengths`` [R] and first rows ``offsets`` [R]."""
    order = np.argsort(-lengths, kind="stable")  # longest first: the active rooms are a prefix
    sorted_lengths = lengths[order]
    n_steps = int(sorted_lengths.max()) if len(lengths) else 0
    n_active = np.searchsorted(-sorted_lengths, -np.arange(n_steps), side="left")  # rooms with length > t
    return RoomsByLength(order=order, first_rows=offsets[order], n_active=n_active)


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar of ``total`` steps, or None when disabled or tqdm is missing."""
    if not enabled:
        return None
    try:
        # tqdm is an optional dependency, imported only when a progress bar is asked for.
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, desc=desc, unit="step", leave=False)
