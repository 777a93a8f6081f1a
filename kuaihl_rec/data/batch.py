"""``LiveBatch``: the one batch type every model reads (content model and ID baselines).

A batch holds ``b`` windows of ``n`` consecutive segments of one room each. Labels are
left-shifted (docs/MODEL.md section 1): position ``i`` carries the *content* of segment
``s + i`` and the *label* of segment ``s + i + 1``, so every position predicts the next
segment from the past only.

Fields (shapes; ``b`` windows, ``n`` positions, ``k_v`` visual tokens, ``C`` counters)::

    sparse_features  KeyedJaggedTensor, keys SPARSE_KEYS = ("streamer_id", "live_id"),
                     one id per window each (vocabulary rows; row 0 = unknown / cold start)
    visual           float32 [b, n, k_v, d_v]   visual features of the content segments
    text             float32 [b, n, d_t]        text features of the content segments
    counters         float32 [b, n, C]          raw counters of the content segments
                                                 (COUNTER_COLUMNS order; zeros when the data has none)
    labels           float32 [b, n]             label (LVTR or CTR) of the *next* segment
    label_mask       bool    [b, n]             the position has a target that passes the viewer filter
    score_mask       bool    [b, n]             this (window, position) is the evaluation unit of its
                                                 target (each target is scored once; see windows.py)
    valid            bool    [b, n]             the position holds a real segment (False = right padding)
    segment          int64   [b, n]             content segment index (-1 on padding)
    timestamp        int64   [b, n]             content timestamps (unix s; -1 on padding)
    streamer_raw     int64   [b]                raw streamer ids (for predictions files)
    live_raw         int64   [b]                raw live ids
    observed         float32 [b, n] or None     the freshest *complete* label when position i is
                                                 scored: the label of segment t - label_delay for
                                                 content segment t (LVTR: t - 2, its 60 s outcome is
                                                 known by then; CTR: t), -1 where the room has none
                                                 yet and on padding (WindowConfig.label_delay).
                                                 Position i's target (segment t + 1) is never in it.
    gather           int64   [b, n] or None     block form (``WindowedSplit.batch(gather=True)``): then
                                                 ``visual`` / ``text`` / ``counters`` hold a block of
                                                 segments [N, ...] shared by many batches and
                                                 ``gather`` the row of each position; :meth:`to` moves
                                                 the block once per device (cached) and gathers the
                                                 windows there, returning the ordinary form.

Right padding (short rooms) is harmless under the causal mask: padding sits *after* every real
position, so no real position attends to it.

``LiveBatch`` implements TorchRec's ``Pipelineable`` (``to``, ``record_stream``, ``pin_memory``)
so ``TrainPipelineSparseDist`` can move it between streams.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections import OrderedDict
from typing import List, Optional, Tuple

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable

SPARSE_KEYS = ("streamer_id", "live_id")


@dataclasses.dataclass
class LiveBatch(Pipelineable):
    sparse_features: KeyedJaggedTensor
    visual: torch.Tensor
    text: torch.Tensor
    counters: torch.Tensor
    labels: torch.Tensor
    label_mask: torch.Tensor
    score_mask: torch.Tensor
    valid: torch.Tensor
    segment: torch.Tensor
    timestamp: torch.Tensor
    streamer_raw: torch.Tensor
    live_raw: torch.Tensor
    observed: Optional[torch.Tensor] = None
    gather: Optional[torch.Tensor] = None

    _TENSOR_FIELDS = (
        "visual",
        "text",
        "counters",
        "labels",
        "label_mask",
        "score_mask",
        "valid",
        "segment",
        "timestamp",
        "streamer_raw",
        "live_raw",
        "observed",
        "gather",
    )
    _BLOCK_FIELDS = ("visual", "text", "counters")

    @property
    def batch_size(self) -> int:
        return int(self.labels.shape[0])

    @property
    def window(self) -> int:
        return int(self.labels.shape[1])

    def streamer_ids(self) -> torch.Tensor:
        """Vocabulary row of each window's streamer, ``int64 [b]`` (one id per window)."""
        return self.sparse_features["streamer_id"].values()

    def _tensors(self) -> List[torch.Tensor]:
        return [t for t in (getattr(self, name) for name in self._TENSOR_FIELDS) if t is not None]

    def _map(self, fn) -> dict:
        return {
            name: (None if getattr(self, name) is None else fn(getattr(self, name))) for name in self._TENSOR_FIELDS
        }

    def to(self, device: torch.device, non_blocking: bool = False) -> "LiveBatch":
        if self.gather is not None:
            return self._gathered(torch.device(device), non_blocking)
        moved = self._map(lambda t: t.to(device=device, non_blocking=non_blocking))
        return LiveBatch(sparse_features=self.sparse_features.to(device=device, non_blocking=non_blocking), **moved)

    def materialize(self) -> "LiveBatch":
        """The ordinary form of a block batch (features ``[b, n, ...]``) on its own device; itself otherwise."""
        return self if self.gather is None else self._gathered(self.gather.device, False)

    def _gathered(self, device: torch.device, non_blocking: bool) -> "LiveBatch":
        """Move the block (once per device, see :func:`_on_device`) and the small fields, gather the windows
        there and zero the padding positions."""
        small = {name: getattr(self, name) for name in self._TENSOR_FIELDS if name not in self._BLOCK_FIELDS}
        small = {k: (None if t is None else t.to(device, non_blocking=non_blocking)) for k, t in small.items()}
        rows, valid = small.pop("gather"), small["valid"]
        feats = {}
        for name in self._BLOCK_FIELDS:
            block = _on_device(getattr(self, name), device, non_blocking)
            picked = block[rows]  # [b, n, ...]
            mask = valid.reshape(*valid.shape, *([1] * (picked.dim() - 2)))
            feats[name] = torch.where(mask, picked, torch.zeros((), dtype=picked.dtype, device=device))
        return LiveBatch(sparse_features=self.sparse_features.to(device=device, non_blocking=non_blocking),
                         **feats, **small)

    def record_stream(self, stream: torch.Stream) -> None:
        self.sparse_features.record_stream(stream)
        for t in self._tensors():
            t.record_stream(stream)

    def pin_memory(self) -> "LiveBatch":
        pinned = self._map(lambda t: t.pin_memory())
        return LiveBatch(sparse_features=self.sparse_features.pin_memory(), **pinned)

    def select(self, index: torch.Tensor) -> "LiveBatch":
        """The sub-batch of the windows in ``index`` (int64 [b'])."""
        if self.gather is not None:
            return self.materialize().select(index)
        index = index.to(torch.long)
        ids = {key: self.sparse_features[key].values()[index] for key in self.sparse_features.keys()}
        return LiveBatch(
            sparse_features=make_id_features(ids),
            **self._map(lambda t: t[index]),
        )


_BLOCK_CACHE: "OrderedDict[Tuple[int, str], Tuple[weakref.ref, torch.Tensor]]" = OrderedDict()
_BLOCK_CACHE_SIZE = 16


def _forget(key: Tuple[int, str]):
    """The weak-reference callback that drops ``key``'s entry (and its device copy) when the block dies."""

    def drop(ref: weakref.ref) -> None:
        hit = _BLOCK_CACHE.get(key)
        if hit is not None and hit[0] is ref:  # not a newer block that reused the id
            del _BLOCK_CACHE[key]

    return drop


def _on_device(block: torch.Tensor, device: torch.device, non_blocking: bool) -> torch.Tensor:
    """``block`` on ``device``, copied once per (block, device): batches of the same buffer share it.
    Entries die with their block (a weak reference whose callback drops the device copy) and the cache
    keeps the newest 16."""
    if block.device == device:
        return block
    key: Tuple[int, str] = (id(block), str(device))
    hit = _BLOCK_CACHE.get(key)
    if hit is not None and hit[0]() is block:
        _BLOCK_CACHE.move_to_end(key)
        return hit[1]
    moved = block.to(device, non_blocking=non_blocking)
    _BLOCK_CACHE[key] = (weakref.ref(block, _forget(key)), moved)
    while len(_BLOCK_CACHE) > _BLOCK_CACHE_SIZE:
        _BLOCK_CACHE.popitem(last=False)
    return moved


def make_id_features(ids: "dict[str, torch.Tensor]") -> KeyedJaggedTensor:
    """A KJT with one id per window for each key (``ids[key]``: int64 [b])."""
    keys = list(ids)
    b = int(next(iter(ids.values())).shape[0]) if ids else 0
    values = torch.cat([ids[k].to(torch.long) for k in keys]) if keys else torch.zeros(0, dtype=torch.long)
    lengths = torch.ones(len(keys) * b, dtype=torch.int32)
    return KeyedJaggedTensor.from_lengths_sync(keys=keys, values=values, lengths=lengths)


@dataclasses.dataclass(frozen=True)
class BatchSpec:
    """What a model needs to know about the batches it will read (sizes of features and id tables).

    ``num_streamers`` / ``num_lives`` are embedding-table row counts (vocabulary size + 1 for the
    unknown row 0); ``n_counters`` is ``counters.shape[-1]``.
    """

    visual_tokens: int
    visual_dim: int
    text_dim: int
    num_streamers: int
    num_lives: int
    n_counters: int
    window: int

    @classmethod
    def of(cls, split: "object") -> "BatchSpec":
        """The spec of a :class:`~kuaihl_rec.data.windows.WindowedSplit`."""
        sizes = split.arr.sizes
        return cls(
            visual_tokens=sizes.visual_tokens,
            visual_dim=sizes.visual_dim,
            text_dim=sizes.text_dim,
            num_streamers=split.streamer_vocab.num_rows,
            num_lives=split.live_vocab.num_rows,
            n_counters=split.arr.counters.shape[1],
            window=split.cfg.window,
        )
