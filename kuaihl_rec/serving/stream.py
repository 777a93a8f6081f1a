"""Streaming per-room scoring: one fresh content score per live room every tick (30 s).

A tick hands in the segments that just closed (:class:`~kuaihl_rec.serving.inputs.ClosedSegments`,
one row per room). For each, the scorer computes the segment's representation
``E_p [d]`` once (:meth:`ContentInference.encode_segments`: projection heads, engagement token,
Perceiver fusion with the streamer latent; nothing in it depends on the window), writes it into
its room's ring buffer of the last ``n`` representations, and runs the causal decoder over each
room's cached window (oldest first, right-padded while the room is younger than ``n``), with the
last decoder layer evaluated for the newest position only (:meth:`CausalDecoder.forward_last`).
All rooms of a tick go through the model in one batch (chunks of ``max_batch``).

The returned score of room r at tick (segment t closed) predicts segment t + 1: the row that
``kuaihl eval --predictions`` writes for target t + 1, with the same window (the last
min(n, t + 1) segments), hence the same number up to float rounding (tested to 1e-5).

State per room (``bytes_per_room``): the ring buffer ``n x d`` floats (``cache_dtype``, float32
by default: 5,120 bytes at d = 64, n = 20; 40,960 bytes for the paper preset, d = 512) and seven
int64 / bool book-keeping fields (57 bytes), so memory is ``rooms x bytes_per_room`` plus the
free slots of the last growth (capacity doubles; ``max_rooms`` caps it).

Room life cycle: a room starts with its first closed segment (segment 0, or a later one when the
scorer joins a room mid-stream: counted in ``stats["rooms_joined_mid_stream"]``); each later tick
must bring exactly the next segment (a segment that goes backwards or skips, a changed streamer,
a room that was evicted: :class:`ServingInputError`, and the tick changes nothing);
:meth:`end_rooms` evicts ended rooms, ``idle_ticks`` evicts rooms silent for that many ticks.
Unknown streamers read the cold-start row 0 (counted per room, ``stats["rooms_unknown_streamer"]``).

:meth:`save` / :meth:`restore` write and read the whole state (atomically; tied to the model's
fingerprint), so a restarted scorer continues with identical scores.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Deque, Dict, Iterable, Optional, Set

import numpy as np
import torch

from kuaihl_rec.serving.inference import ContentInference, load_inference
from kuaihl_rec.serving.inputs import (
    ClosedSegments,
    FeatureShape,
    ServingInputError,
    check_array,
    check_closed_segments,
)

logger = logging.getLogger(__name__)

STATE_FORMAT = "kuaihl-stream-state"
STATE_VERSION = 1
_SLOT_FIELDS = ("live", "streamer_raw", "streamer_row", "count", "next_segment", "last_tick")


@dataclasses.dataclass(frozen=True)
class TickScores:
    """Scores of one tick, aligned with the input rows: ``segment`` is the *target* (t + 1)."""

    live_id: np.ndarray  # int64 [m]
    streamer_id: np.ndarray  # int64 [m]
    segment: np.ndarray  # int64 [m]  the segment the score predicts (closed segment + 1)
    score: np.ndarray  # float64 [m] sigmoid(logit)
    logit: np.ndarray  # float32 [m]
    known_streamer: np.ndarray  # bool [m]


class StreamingScorer:
    """Per-room streaming scorer over a :class:`ContentInference` (see the module docstring).

    Args:
        model: the inference module (``load_inference(run_dir)``), or use :meth:`from_run`.
        max_batch: rooms per forward pass (bounds activation memory per chunk). None: 1,024 on a
            CPU (intermediates stay in cache: 1.8x the rooms per second of one 4,096-room batch
            for the ``small`` preset, ``bench/bench_serving.py``), 65,536 on a GPU.
        idle_ticks: evict rooms that brought no segment for this many ticks (None: only
            :meth:`end_rooms` evicts).
        max_rooms: refuse a tick that would hold more rooms than this (None: no cap).
        remember_evicted: how many evicted live ids are remembered, to refuse their return.
        cache_dtype: dtype of the ring buffers (float32; bfloat16 halves the memory, not bit-equal).
        autocast_dtype: run the model under ``torch.autocast`` in this dtype (e.g. bfloat16 on a GPU).
    """

    def __init__(
        self,
        model: ContentInference,
        *,
        max_batch: Optional[int] = None,
        idle_ticks: Optional[int] = None,
        max_rooms: Optional[int] = None,
        remember_evicted: int = 1_000_000,
        cache_dtype: torch.dtype = torch.float32,
        autocast_dtype: Optional[torch.dtype] = None,
        initial_capacity: int = 1024,
    ) -> None:
        self.model = model.eval()
        self.device = model.device
        if max_batch is None:
            max_batch = 1024 if self.device.type == "cpu" else 65_536
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.n = model.window
        self.d = model.d
        spec = model.spec
        self.shape = FeatureShape(spec.visual_tokens, spec.visual_dim, spec.text_dim, spec.n_counters)
        self.reads_counters = bool(model.config.use_counters)
        self.max_batch = int(max_batch)
        self.idle_ticks = idle_ticks
        self.max_rooms = max_rooms
        self.cache_dtype = cache_dtype
        self.autocast_dtype = autocast_dtype
        self.fingerprint = model.fingerprint()
        self._remember = int(remember_evicted)
        self._reset(initial_capacity)

    @classmethod
    def from_run(cls, run_dir: Path, device: Optional[torch.device] = None, **kwargs: Any) -> "StreamingScorer":
        """A scorer for the finished ``kuaihl train`` run in ``run_dir``."""
        return cls(load_inference(Path(run_dir), device=device), **kwargs)

    # ------------------------------------------------------------------------------ state

    def _reset(self, capacity: int) -> None:
        capacity = max(int(capacity), 1)
        self._cache = torch.zeros(capacity, self.n, self.d, dtype=self.cache_dtype, device=self.device)
        self._slots: Dict[str, np.ndarray] = {f: np.zeros(capacity, np.int64) for f in _SLOT_FIELDS}
        self._active = np.zeros(capacity, bool)
        self._free = list(range(capacity - 1, -1, -1))
        self._keys = np.zeros(0, np.int64)  # sorted live ids of active rooms
        self._key_slot = np.zeros(0, np.int64)
        self._evicted: Set[int] = set()
        self._evicted_order: Deque[int] = collections.deque()
        self.tick_index = 0
        self.stats: Dict[str, int] = collections.Counter(
            ticks=0,
            segments=0,
            rooms_started=0,
            rooms_joined_mid_stream=0,
            rooms_unknown_streamer=0,
            rooms_ended=0,
            rooms_idle_evicted=0,
        )

    @property
    def rooms(self) -> int:
        """Rooms currently held."""
        return int(len(self._keys))

    @property
    def capacity(self) -> int:
        return int(self._cache.shape[0])

    @property
    def bytes_per_room(self) -> int:
        """State bytes per held room: the ring buffer plus book-keeping (module docstring)."""
        return self.n * self.d * self._cache.element_size() + 8 * len(_SLOT_FIELDS) + 1 + 8 * 2

    def live_ids(self) -> np.ndarray:
        """Live ids of the rooms held (sorted)."""
        return self._keys.copy()

    def _find(self, live: np.ndarray) -> np.ndarray:
        """Slot of each live id, -1 when the room is not held."""
        if len(self._keys) == 0:
            return np.full(len(live), -1, np.int64)
        pos = np.minimum(np.searchsorted(self._keys, live), len(self._keys) - 1)
        return np.where(self._keys[pos] == live, self._key_slot[pos], -1)

    def _grow(self, need: int) -> None:
        old = self.capacity
        new = old
        while new - (old - len(self._free)) < need:
            new *= 2
        if new == old:
            return
        cache = torch.zeros(new, self.n, self.d, dtype=self.cache_dtype, device=self.device)
        cache[:old] = self._cache
        self._cache = cache
        for f in _SLOT_FIELDS:
            self._slots[f] = np.concatenate([self._slots[f], np.zeros(new - old, np.int64)])
        self._active = np.concatenate([self._active, np.zeros(new - old, bool)])
        self._free = list(range(new - 1, old - 1, -1)) + self._free

    def _rebuild_keys(self) -> None:
        """The sorted (live id, slot) index from scratch (after a restore)."""
        slots = np.flatnonzero(self._active)
        live = self._slots["live"][slots]
        order = np.argsort(live, kind="stable")
        self._keys, self._key_slot = live[order], slots[order]

    def _insert_keys(self, live: np.ndarray, slots: np.ndarray) -> None:
        """Merge new rooms into the sorted index: O(rooms held) copies, a sort of the new ones only."""
        order = np.argsort(live, kind="stable")
        at = np.searchsorted(self._keys, live[order])
        self._keys = np.insert(self._keys, at, live[order])
        self._key_slot = np.insert(self._key_slot, at, slots[order])

    def _remove_keys(self, slots: np.ndarray) -> None:
        keep = ~np.isin(self._key_slot, slots)
        self._keys, self._key_slot = self._keys[keep], self._key_slot[keep]

    # ------------------------------------------------------------------------------ ticks

    def tick(self, records: ClosedSegments) -> TickScores:
        """Score every room whose segment just closed (one batch); see the module docstring.

        Raises :class:`ServingInputError` (and changes nothing) on bad input.
        """
        x = check_closed_segments(records, self.shape, self.reads_counters)
        live = x["live_id"].numpy()
        streamer = x["streamer_id"].numpy()
        seg = x["segment"].numpy()
        m = len(live)
        slots = self._find(live)
        new = slots < 0
        self._check_continuity(live, streamer, seg, slots, new)
        if self.max_rooms is not None and self.rooms + int(new.sum()) > self.max_rooms:
            raise ServingInputError(
                f"live_id: this tick would hold {self.rooms + int(new.sum())} rooms, "
                f"more than max_rooms = {self.max_rooms}; end rooms first"
            )
        # -- commit: allocate new rooms
        if new.any():
            self._grow(int(new.sum()))
            fresh = np.array([self._free.pop() for _ in range(int(new.sum()))], np.int64)
            slots[new] = fresh
            rows, known = self.model.lookup(torch.from_numpy(streamer[new]).to(self.device))
            s = self._slots
            s["live"][fresh], s["streamer_raw"][fresh] = live[new], streamer[new]
            s["streamer_row"][fresh] = rows.cpu().numpy()
            s["count"][fresh], s["next_segment"][fresh] = 0, seg[new]
            self._active[fresh] = True
            self._insert_keys(live[new], fresh)
            self.stats["rooms_started"] += int(new.sum())
            self.stats["rooms_joined_mid_stream"] += int((seg[new] != 0).sum())
            self.stats["rooms_unknown_streamer"] += int((~known).sum())
        logits = self._score(x, slots) if m else torch.zeros(0)
        s = self._slots
        s["next_segment"][slots] = seg + 1
        s["last_tick"][slots] = self.tick_index
        known_streamer = s["streamer_row"][slots] > 0
        self.tick_index += 1
        self.stats["ticks"] += 1
        self.stats["segments"] += m
        if self.idle_ticks is not None:
            idle = self._active & (self._slots["last_tick"] < self.tick_index - self.idle_ticks)
            if idle.any():
                self.stats["rooms_idle_evicted"] += int(idle.sum())
                self._evict(np.flatnonzero(idle))
        logit = logits.float().cpu().numpy()
        return TickScores(
            live_id=live.copy(), streamer_id=streamer.copy(), segment=seg + 1,
            score=1.0 / (1.0 + np.exp(-logit.astype(np.float64))), logit=logit, known_streamer=known_streamer,
        )

    def _check_continuity(
        self, live: np.ndarray, streamer: np.ndarray, seg: np.ndarray, slots: np.ndarray, new: np.ndarray
    ) -> None:
        for row in np.flatnonzero(new):
            if int(live[row]) in self._evicted:
                raise ServingInputError(
                    f"live_id: room {int(live[row])} was evicted (ended or idle); "
                    f"an ended room cannot bring segments again (row {int(row)})"
                )
        old = np.flatnonzero(~new)
        if len(old) == 0:
            return
        expect = self._slots["next_segment"][slots[old]]
        bad = np.flatnonzero(seg[old] != expect)
        if len(bad):
            r = old[bad[0]]
            e, g = int(expect[bad[0]]), int(seg[r])
            how = "goes backwards" if g < e else "skips"
            raise ServingInputError(
                f"segment: room {int(live[r])} brought segment {g}, expected {e} "
                f"(the one after its last closed segment {e - 1}): the sequence {how} (row {int(r)})"
            )
        owner = self._slots["streamer_raw"][slots[old]]
        bad = np.flatnonzero(streamer[old] != owner)
        if len(bad):
            r = old[bad[0]]
            raise ServingInputError(
                f"streamer_id: room {int(live[r])} started with streamer {int(owner[bad[0]])}, "
                f"got {int(streamer[r])} (row {int(r)}); a room has one streamer"
            )

    @torch.inference_mode()
    def _score(self, x: Dict[str, torch.Tensor], slots: np.ndarray) -> torch.Tensor:
        out = []
        for lo in range(0, len(slots), self.max_batch):
            hi = min(lo + self.max_batch, len(slots))
            out.append(self._score_chunk({k: v[lo:hi] for k, v in x.items()}, slots[lo:hi]))
        return torch.cat(out)

    def _score_chunk(self, x: Dict[str, torch.Tensor], slots_np: np.ndarray) -> torch.Tensor:
        dev, n = self.device, self.n
        slots = torch.from_numpy(slots_np).to(dev)
        count = torch.from_numpy(self._slots["count"][slots_np]).to(dev)
        rows = torch.from_numpy(self._slots["streamer_row"][slots_np]).to(dev)
        t = {k: v.to(dev, non_blocking=True) for k, v in x.items()}
        with self._autocast():
            e_p = self.model.encode_segments(
                t["visual"], t["text"], t["counters"], t["observed"], t["timestamp"], t["segment"], rows
            )
        self._cache[slots, count % n] = e_p.to(self.cache_dtype)
        count = count + 1
        self._slots["count"][slots_np] += 1
        length = count.clamp(max=n)
        start = count - length
        ring = (start[:, None] + torch.arange(n, device=dev)[None, :]) % n  # [b, n], oldest first
        window = self._cache[slots[:, None], ring]  # [b, n, d]
        with self._autocast():
            return self.model.decode_logits(window.to(torch.float32), length, t["observed"])

    def _autocast(self):
        if self.autocast_dtype is None:
            return torch.autocast(device_type=self.device.type, enabled=False)
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    # ------------------------------------------------------------------------------ eviction

    def end_rooms(self, live_ids: Iterable[int]) -> int:
        """Evict ended rooms (unknown ids are ignored); returns how many were held."""
        live = check_array(
            "live_id",
            np.asarray(
                list(live_ids) if not isinstance(live_ids, (np.ndarray, torch.Tensor)) else live_ids, dtype=np.int64
            ),
            ("m",),
            "int",
        ).numpy()
        slots = self._find(live)
        held = slots[slots >= 0]
        self._evict(held)
        self.stats["rooms_ended"] += len(held)
        return int(len(held))

    def _evict(self, slots: np.ndarray) -> None:
        if len(slots) == 0:
            return
        for live in self._slots["live"][slots].tolist():
            self._evicted.add(live)
            self._evicted_order.append(live)
        while len(self._evicted_order) > self._remember:
            self._evicted.discard(self._evicted_order.popleft())
        self._active[slots] = False
        self._free.extend(int(s) for s in slots)
        self._remove_keys(slots)

    # ------------------------------------------------------------------------------ save / restore

    def state_dict(self) -> Dict[str, Any]:
        """The whole state, compacted to the held rooms (CPU tensors / numpy)."""
        slots = self._key_slot
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "model_fingerprint": self.fingerprint,
            "window": self.n,
            "d": self.d,
            "cache_dtype": str(self.cache_dtype),
            "tick_index": self.tick_index,
            "stats": dict(self.stats),
            "cache": self._cache[torch.from_numpy(slots).to(self.device)].cpu(),
            "slots": {f: self._slots[f][slots].copy() for f in _SLOT_FIELDS},
            "evicted": np.array(list(self._evicted_order), np.int64),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError("not a streaming-scorer state (format field missing)")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"scorer state version {state.get('version')}, this code reads version {STATE_VERSION}")
        if state["model_fingerprint"] != self.fingerprint:
            raise ValueError(
                f"scorer state was written by model {state['model_fingerprint']}, "
                f"this scorer runs model {self.fingerprint}"
            )
        if (state["window"], state["d"], state["cache_dtype"]) != (self.n, self.d, str(self.cache_dtype)):
            raise ValueError(
                f"scorer state has window {state['window']}, d {state['d']}, {state['cache_dtype']}; "
                f"this scorer {self.n}, {self.d}, {self.cache_dtype}"
            )
        held = len(state["slots"]["live"])
        self._reset(max(held, 1))
        self._cache[:held] = state["cache"].to(self.device)
        for f in _SLOT_FIELDS:
            self._slots[f][:held] = state["slots"][f]
        self._active[:held] = True
        self._free = list(range(self.capacity - 1, held - 1, -1))
        self._rebuild_keys()
        for live in state["evicted"].tolist():
            self._evicted.add(live)
            self._evicted_order.append(live)
        self.tick_index = int(state["tick_index"])
        self.stats.update(state["stats"])

    def save(self, path: Path, extra: Optional[Dict[str, Any]] = None) -> Path:
        """Write the state to ``path`` atomically (temp file + rename); ``extra`` is stored beside it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"scorer": self.state_dict(), "extra": extra or {}}
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            torch.save(payload, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    def restore(self, path: Path) -> Dict[str, Any]:
        """Load a state written by :meth:`save`; returns its ``extra``."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no scorer state")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ValueError(f"{path}: unreadable scorer state ({type(exc).__name__}: {exc})") from None
        if not isinstance(payload, dict) or "scorer" not in payload:
            raise ValueError(f"{path}: not a streaming-scorer state")
        try:
            self.load_state_dict(payload["scorer"])
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        return payload.get("extra", {})
