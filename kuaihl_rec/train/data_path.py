"""The trainer's two data paths behind one interface (docs/STREAMING.md).

* in memory (``TrainConfig.stream.enabled`` False, the default): every rank loads and validates the
  whole table; each global batch of the permutation ``rng(seed, epoch)`` of all windows is split
  into contiguous per-rank slices (:func:`global_batches`);
* streaming: each rank reads only its own rooms, a chunk at a time, from one catalog pass
  (:class:`~kuaihl_rec.data.stream.StreamSplit`).

On one rank whose split fits one chunk both give identical batches on the same seed
(tests/test_stream.py). :func:`epoch_steps` and :func:`epoch_batches` are what the training loop
calls; ``position`` is the stream position a checkpoint saved (streaming only).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from kuaihl_rec.data.batch import LiveBatch
from kuaihl_rec.data.catalog import HashedVocab, build_catalog, catalog_vocabs
from kuaihl_rec.data.io import DataError
from kuaihl_rec.data.stream import StreamSplit
from kuaihl_rec.data.windows import WindowedSplit

logger = logging.getLogger(__name__)

Split = Union[WindowedSplit, StreamSplit]


def load_stream_splits(data_dir: Path, cfg: Any, rank: int, world_size: int) -> Tuple[StreamSplit, StreamSplit]:
    """(train, val) of this rank, from one pass over the light columns (vocabularies in the same pass)."""
    catalog = build_catalog(data_dir, cfg.data)
    svocab, lvocab = catalog_vocabs(catalog, cfg.stream.id_hash_buckets)
    train, val = (StreamSplit(catalog, split, cfg.data, cfg.stream, svocab, lvocab, rank, world_size)
                  for split in ("train", "val"))
    logger.info("streaming %s: %d rooms, rank %d of %d reads %d train rooms in %d chunks (%d windows)",
                data_dir, catalog.n_rooms, rank, world_size, len(train.rooms), train.n_chunks,
                int(train.rank_windows()[rank]) if world_size else 0)
    if len(train) == 0:
        rooms = {s: len(catalog.rooms_of(s)) for s in ("train", "val", "test")}
        raise DataError(f"{data_dir}: no training windows (rooms per split: {rooms}); is there a 'train' split?")
    return train, val


def hash_ids(splits: Dict[str, WindowedSplit], buckets: int) -> None:
    """Give every in-memory split hashed id vocabularies (``stream.id_hash_buckets`` > 0)."""
    if buckets:
        for split in splits.values():
            split.streamer_vocab, split.live_vocab = HashedVocab(buckets), HashedVocab(buckets)


def global_batches(split: WindowedSplit, batch_size: int, seed: int, epoch: int, rank: int,
                   world_size: int) -> List[np.ndarray]:
    """This rank's window indices for every full global batch of the epoch (drop_last: every rank
    runs the same number of steps, which sharded collectives require)."""
    order = np.random.default_rng([seed, epoch]).permutation(len(split))
    per_rank = batch_size // world_size
    n_batches = len(order) // (per_rank * world_size)
    out = []
    for k in range(n_batches):
        chunk = order[k * per_rank * world_size : (k + 1) * per_rank * world_size]
        out.append(chunk[rank * per_rank : (rank + 1) * per_rank])
    return out


def epoch_steps(split: Split, batch_size: int, seed: int, rank: int, world_size: int) -> int:
    """Steps of one epoch for the *global* ``batch_size``."""
    if isinstance(split, StreamSplit):
        return split.train_steps(batch_size // world_size)
    return len(global_batches(split, batch_size, seed, 0, rank, world_size))


def epoch_batches(split: Split, batch_size: int, seed: int, epoch: int, rank: int, world_size: int, start: int,
                  count: int, position: Optional[Dict[str, Any]] = None) -> Iterator[LiveBatch]:
    """This rank's batches ``start .. start + count - 1`` of ``epoch`` (global ``batch_size``)."""
    if isinstance(split, StreamSplit):
        if start and position is None:
            raise ValueError(f"resuming epoch {epoch} at batch {start} needs the stream position the checkpoint "
                             "saved (rank-local 'stream_position'); this checkpoint has none")
        return split.train_batches(batch_size // world_size, seed, epoch, start + count, position)
    chosen = global_batches(split, batch_size, seed, epoch, rank, world_size)[start : start + count]
    return (split.batch(idx, gather=False) for idx in chosen)


def stream_position(split: Split, epoch: int, batch: int) -> Optional[Dict[str, Any]]:
    """The position a checkpoint saves before batch ``batch`` of ``epoch`` (None for the in-memory path)."""
    return split.position_at(epoch, batch) if isinstance(split, StreamSplit) else None
