"""Per-rank streaming input: each rank reads only its own rooms, a chunk at a time (docs/STREAMING.md).

A :class:`StreamSplit` is one split as one rank sees it. Its rooms (:func:`~kuaihl_rec.data.catalog.rank_rooms`:
contiguous runs of the catalog balanced by segment count, rooms never split) are cut into chunks of
about ``chunk_rows`` segments; a chunk is read from the Parquet row groups that hold it
(:class:`ChunkReader`) and windowed with :func:`~kuaihl_rec.data.windows.build_windows`, so memory
is bounded by a few buffers of chunks whatever the table's size: between rebuilds the pool of the
buffered chunks (``buffer_chunks``, at times one more) plus ``prefetch_chunks`` read ahead; while the
pool is rebuilt as a chunk enters, the old pool, the entering chunk and the new pool coexist, so the
peak is about ``2 * (buffer_chunks + 1) + 1 + prefetch_chunks`` chunks (docs/STREAMING.md).

Training order of epoch e on rank r (a function of (seed, e, r) only):

* chunks in the order ``permutation(n_chunks)`` drawn from ``rng(seed, e, r, 1)``;
* the windows of chunk c in the order ``permutation(W_c)`` drawn from ``rng(seed, e, r, c + 2)``,
  except chunk 0 of rank 0, which draws from ``rng(seed, e)`` (the in-memory path's seed);
* the shuffle buffer holds ``buffer_chunks`` chunks; a batch of b windows takes b positions
  uniformly without replacement among the R windows the buffer still holds (``rng(seed, e, r, 0)``)
  and each chunk gives the next ones of its order for the positions that fell on it; an exhausted
  chunk leaves and the next chunk enters before the following batch. Drawn uniformly, the buffered
  chunks drain together, so when fewer than b windows are left the next chunk enters early (the
  buffer then briefly holds ``buffer_chunks + 1`` chunks).

Hence one rank whose split is one chunk yields exactly the batches of the in-memory path
(:func:`kuaihl_rec.train.data_path.global_batches`) on the same seed. Every rank runs ``min_r floor(W_r / b)``
batches an epoch (sharded collectives need equal step counts; ``W_r`` is known from the catalog).

Position: before each batch the iterator records ``(epoch, batch, next chunk, (chunk, consumed) per
buffered chunk, sampler state)``, a few numbers; the trainer saves the one of the next batch to
consume in the checkpoint (rank-local), and a resume reloads the buffered chunks and continues
exactly (:meth:`StreamSplit.train_batches` with ``position``).

Evaluation: each rank scores its rooms' eval windows chunk by chunk, in order, padded with
dropped copies to the largest rank's batch count (:meth:`StreamSplit.eval_batches`).
"""

from __future__ import annotations

import ctypes
import logging
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from kuaihl_rec.data.batch import BatchSpec, LiveBatch
from kuaihl_rec.data.catalog import (
    LIGHT_COLUMNS, SPLIT_MODES, RoomCatalog, StreamConfig, Vocab, assign_ranks, chunk_ids,
)
from kuaihl_rec.data.io import DataError
from kuaihl_rec.data.schema import COUNTER_COLUMNS, ID_COLUMNS
from kuaihl_rec.data.windows import (
    SegmentArrays, WindowConfig, WindowedSplit, WindowIndex, WindowStats, build_windows,
)

logger = logging.getLogger(__name__)

POSITION_HISTORY = 64  # batches of look-back kept for position_at (more than any pipeline prefetches)
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def bound_heap(threshold: int) -> bool:
    """Make glibc give every allocation of ``threshold`` bytes or more its own mapping, unmapped when
    freed (``mallopt(M_MMAP_THRESHOLD, threshold)``; setting it also stops glibc from raising the
    threshold as large blocks are freed). Without it, chunk arrays and batch tensors of a few MB
    land in the heap between small long-lived objects, the heap fragments, and a streaming rank's
    RSS grows with the data it scores (bench/bench_scale.py, 300 steps + test scoring: 1.65 / 3.28
    GB at 1 M / 5 M segments without, 1.36 / 1.51 GB with a 1 MiB threshold). Process-wide; a no-op
    (False) off glibc or with ``threshold`` 0."""
    if threshold <= 0:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False


class ChunkReader:
    """Reads sets of rooms of a catalog from the Parquet row groups that hold them."""

    def __init__(self, catalog: RoomCatalog, cfg: WindowConfig) -> None:
        self.catalog, self.cfg = catalog, cfg
        wanted = (*ID_COLUMNS, cfg.label, "visual", "text", *COUNTER_COLUMNS, *LIGHT_COLUMNS)
        self.columns = [c for c in dict.fromkeys(wanted) if c in catalog.columns]
        self._group_starts: Dict[int, np.ndarray] = {}

    def _starts(self, f: int) -> np.ndarray:
        if f not in self._group_starts:
            meta = pq.ParquetFile(self.catalog.files[f]).metadata
            rows = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
            self._group_starts[f] = np.r_[0, np.cumsum(rows)].astype(np.int64)
        return self._group_starts[f]

    def _read_file_rows(self, f: int, rooms: np.ndarray) -> pa.Table:
        cat = self.catalog
        lo, hi = cat.row[rooms], cat.row[rooms] + cat.length[rooms]
        starts = self._starts(f)
        first_g = np.searchsorted(starts, lo, side="right") - 1
        last_g = np.searchsorted(starts, hi - 1, side="right") - 1
        groups = np.unique(np.concatenate([np.arange(a, b + 1) for a, b in zip(first_g, last_g)]))
        path = cat.files[f]
        try:
            table = pq.ParquetFile(path).read_row_groups(groups.tolist(), columns=self.columns)
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataError(f"{path}: reading row groups {groups.tolist()[:5]} failed ({exc})") from exc
        # row r of the file sits at offset(r's group) + r - start(r's group) in the table read
        base = np.cumsum(np.r_[0, starts[groups + 1] - starts[groups]])[:-1]
        rows = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)])
        g = np.searchsorted(starts, rows, side="right") - 1
        at = base[np.searchsorted(groups, g)] + rows - starts[g]
        if len(at) and at[-1] - at[0] == len(at) - 1:  # one contiguous run (the usual case): no copy
            return table.slice(int(at[0]), len(at))
        return table.take(pa.array(at))

    def read(self, rooms: np.ndarray) -> SegmentArrays:
        """The arrays of ``rooms`` (catalog indices), rows sorted by (live_id, segment)."""
        cat = self.catalog
        pieces = [self._read_file_rows(int(f), rooms[cat.file[rooms] == f]) for f in np.unique(cat.file[rooms])]
        table = pa.concat_tables(pieces, promote_options="permissive") if len(pieces) > 1 else pieces[0]
        return SegmentArrays.from_table(table, cat.sizes, self.cfg)


def concat_arrays(parts: List[SegmentArrays]) -> SegmentArrays:
    """Row-wise concatenation of arrays of the same table (same sizes and columns)."""
    first = parts[0]
    if len(parts) == 1:
        return first
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    return SegmentArrays(
        live_id=cat("live_id"), streamer_id=cat("streamer_id"), segment=cat("segment"), timestamp=cat("timestamp"),
        visual=cat("visual"), text=cat("text"), counters=cat("counters"),
        viewers=None if first.viewers is None else cat("viewers"), label=cat("label"), split=cat("split"),
        sizes=first.sizes,
    )


class _Slot:
    """One buffered chunk: its arrays (views of the pool once pooled), windows, window order, progress."""

    def __init__(self, chunk: int, arr: SegmentArrays, index: WindowIndex, order: np.ndarray, consumed: int) -> None:
        self.chunk, self.arr, self.index, self.order, self.consumed = chunk, arr, index, order, consumed

    @property
    def remaining(self) -> int:
        return len(self.order) - self.consumed


class StreamSplit:
    """One split of a catalog as rank ``rank`` of ``world_size`` streams it (module docstring)."""

    def __init__(self, catalog: RoomCatalog, split: str, cfg: WindowConfig, stream: StreamConfig,
                 streamer_vocab: Vocab, live_vocab: Vocab, rank: int = 0, world_size: int = 1) -> None:
        self.catalog, self.split, self.cfg, self.stream = catalog, split, cfg, stream
        self.mode = SPLIT_MODES[split]
        self.streamer_vocab, self.live_vocab = streamer_vocab, live_vocab
        self.rank, self.world_size = rank, world_size
        rooms = catalog.rooms_of(split)
        self.room_rank = assign_ranks(catalog.length[rooms], world_size)
        self.all_rooms = rooms
        self.rooms = rooms[self.room_rank == rank]
        self.chunk_of_room = chunk_ids(catalog.length[self.rooms], stream.chunk_rows)
        self.n_chunks = int(self.chunk_of_room.max()) + 1 if len(self.rooms) else 0
        self.reader = ChunkReader(catalog, cfg)
        bound_heap(stream.mmap_threshold)
        self._positions: "OrderedDict[Tuple[int, int], Dict[str, Any]]" = OrderedDict()
        self._executor: Optional[ThreadPoolExecutor] = None

    # ------------------------------------------------------------------------------ sizes

    def __len__(self) -> int:
        """Windows of the split over all ranks."""
        return int(self.catalog.windows[self.all_rooms].sum())

    @property
    def stats(self) -> WindowStats:
        return self.catalog.stats.get(self.split, WindowStats(split=self.split, mode=self.mode))

    def rank_windows(self) -> np.ndarray:
        """Windows of each rank, ``int64 [world_size]``."""
        return np.bincount(self.room_rank, weights=self.catalog.windows[self.all_rooms],
                           minlength=self.world_size).astype(np.int64)

    def train_steps(self, batch_size: int) -> int:
        """Full batches of ``batch_size`` (per rank) every rank can run in an epoch.

        Raises :class:`DataError` when a rank gets no room at all (rooms are never split, so a few
        long rooms can leave a rank empty), naming the rank and the split's room and segment counts.
        """
        rooms_per_rank = np.bincount(self.room_rank, minlength=self.world_size)
        if self.world_size > 1 and len(self.all_rooms) and (rooms_per_rank == 0).any():
            empty = int(np.flatnonzero(rooms_per_rank == 0)[0])
            lengths = self.catalog.length[self.all_rooms]
            raise DataError(
                f"{self.catalog.files[0].parent}: rank {empty} of {self.world_size} gets no {self.split} room: "
                f"the split has {len(lengths)} rooms, {int(lengths.sum())} segments (longest room "
                f"{int(lengths.max())}), and rooms go whole to ranks balanced by segment count; "
                f"use fewer ranks or a table with more rooms"
            )
        return int(self.rank_windows().min() // batch_size) if self.world_size else 0

    def spec(self) -> BatchSpec:
        sizes = self.catalog.sizes
        return BatchSpec(visual_tokens=sizes.visual_tokens, visual_dim=sizes.visual_dim, text_dim=sizes.text_dim,
                         num_streamers=self.streamer_vocab.num_rows, num_lives=self.live_vocab.num_rows,
                         n_counters=len(COUNTER_COLUMNS), window=self.cfg.window)

    # ------------------------------------------------------------------------------ chunks

    def load_chunk(self, chunk: int) -> Tuple[SegmentArrays, WindowIndex]:
        """Arrays and windows (in this split's mode) of one of this rank's chunks."""
        arr = self.reader.read(self.rooms[self.chunk_of_room == chunk])
        return arr, self._windows(arr)

    def _windows(self, arr: SegmentArrays) -> WindowIndex:
        return build_windows(arr, self.cfg, self.split, self.mode)

    def _view(self, arr: SegmentArrays, index: WindowIndex) -> WindowedSplit:
        return WindowedSplit(arr, index, self.cfg, self.streamer_vocab, self.live_vocab, self.mode)

    # ------------------------------------------------------------------------------ training

    def _rng(self, seed: int, epoch: int, *tail: int) -> np.random.Generator:
        return np.random.default_rng([seed, epoch, self.rank, *tail])

    def _chunk_order(self, seed: int, epoch: int, chunk: int, n: int) -> np.ndarray:
        key = [seed, epoch] if (self.rank, chunk) == (0, 0) else [seed, epoch, self.rank, chunk + 2]
        return np.random.default_rng(key).permutation(n)

    def _slot(self, seed: int, epoch: int, chunk: int, consumed: int = 0,
              loaded: Optional[Tuple[SegmentArrays, WindowIndex]] = None) -> _Slot:
        arr, index = loaded if loaded is not None else self.load_chunk(chunk)
        return _Slot(chunk, arr, index, self._chunk_order(seed, epoch, chunk, len(index.first_row)), consumed)

    def read_ahead(self, chunks: Sequence[int]) -> Iterator[Tuple[SegmentArrays, WindowIndex]]:
        """:meth:`load_chunk` of ``chunks`` in order, the next ``stream.prefetch_chunks`` read by a background
        thread meanwhile (Parquet decoding releases the GIL, so it overlaps building batches)."""
        ahead = self.stream.prefetch_chunks
        if ahead == 0:
            yield from (self.load_chunk(int(c)) for c in chunks)
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kuaihl-chunks")
        pending: "deque[Future]" = deque()
        for c in chunks:
            pending.append(self._executor.submit(self.load_chunk, int(c)))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def position_at(self, epoch: int, batch: int) -> Optional[Dict[str, Any]]:
        """The recorded position before batch ``batch`` of ``epoch`` (None: start of an epoch)."""
        if batch == 0:
            return None
        if (epoch, batch) not in self._positions:
            raise KeyError(f"no recorded stream position for epoch {epoch}, batch {batch}")
        return self._positions[(epoch, batch)]

    def _record(self, epoch: int, batch: int, next_chunk: int, slots: List[_Slot], sampler) -> None:
        self._positions[(epoch, batch)] = {
            "epoch": epoch, "batch": batch, "next_chunk": next_chunk, "world_size": self.world_size,
            "rank": self.rank, "slots": [(s.chunk, s.consumed) for s in slots if s.remaining > 0],
            "sampler": sampler.bit_generator.state,
        }
        while len(self._positions) > POSITION_HISTORY:
            self._positions.popitem(last=False)

    def train_batches(self, batch_size: int, seed: int, epoch: int, steps: int,
                      position: Optional[Dict[str, Any]] = None) -> Iterator[LiveBatch]:
        """This rank's batches ``position["batch"] .. steps - 1`` of ``epoch`` (from 0 without ``position``)."""
        chunks = self._rng(seed, epoch, 1).permutation(self.n_chunks)
        sampler = self._rng(seed, epoch, 0)
        if position is None:
            k, next_chunk, slots = 0, 0, []
        else:
            if (position["epoch"], position["world_size"], position["rank"]) != (epoch, self.world_size, self.rank):
                raise ValueError(f"stream position {position} belongs to another epoch or rank layout "
                                 f"(epoch {epoch}, rank {self.rank} of {self.world_size})")
            k, next_chunk = position["batch"], position["next_chunk"]
            slots = [self._slot(seed, epoch, c, used) for c, used in position["slots"]]
            sampler.bit_generator.state = position["sampler"]
        pool: Optional[WindowedSplit] = None
        loads = self.read_ahead(chunks[next_chunk:])
        while k < steps:
            changed = len([s for s in slots if s.remaining == 0]) > 0
            slots = [s for s in slots if s.remaining > 0]
            # Fill the buffer; beyond it too while it holds fewer windows than a batch (chunks drain together).
            while next_chunk < self.n_chunks and (
                len(slots) < self.stream.buffer_chunks or sum(s.remaining for s in slots) < batch_size
            ):
                slots.append(self._slot(seed, epoch, int(chunks[next_chunk]), loaded=next(loads)))
                next_chunk, changed = next_chunk + 1, True
            if pool is None or changed:
                pool = self._pool(slots)
            windows = self._draw(slots, sampler, batch_size)
            if len(windows) < batch_size:
                raise RuntimeError(f"rank {self.rank}: stream ran dry at batch {k} of {steps} (catalog miscounted)")
            k += 1
            self._record(epoch, k, next_chunk, slots, sampler)  # the position before batch k (the next one)
            yield pool.batch(windows, gather=self.stream.gather_on_device)

    def _pool(self, slots: List[_Slot]) -> WindowedSplit:
        """One array over the buffered chunks; each slot's arrays become views of it (no second copy)."""
        arr = concat_arrays([s.arr for s in slots])
        offsets = np.cumsum([0] + [len(s.arr.live_id) for s in slots])
        firsts, valids, froms = [], [], []
        for s, off in zip(slots, offsets):
            firsts.append(s.index.first_row + off)
            valids.append(s.index.n_valid)
            froms.append(s.index.score_from)
            s.arr = _slice(arr, off, off + len(s.arr.live_id))
        index = WindowIndex(np.concatenate(firsts), np.concatenate(valids), np.concatenate(froms),
                            WindowStats(split=self.split, mode=self.mode))
        return self._view(arr, index)

    @staticmethod
    def _draw(slots: List[_Slot], sampler: np.random.Generator, batch_size: int) -> np.ndarray:
        """Pool window ids of one batch: b uniform positions among the remaining windows of the slots."""
        remaining = np.array([s.remaining for s in slots], dtype=np.int64)
        total = int(remaining.sum())
        take = min(batch_size, total)
        if take == 0:
            return np.zeros(0, np.int64)
        pos = sampler.choice(total, size=take, replace=False)
        counts = np.bincount(np.searchsorted(np.cumsum(remaining), pos, side="right"), minlength=len(slots))
        out, offset = [], 0
        for s, m in zip(slots, counts):
            out.append(offset + s.order[s.consumed : s.consumed + m])
            s.consumed += int(m)
            offset += len(s.index.first_row)
        return np.concatenate(out)

    # ------------------------------------------------------------------------------ evaluation

    def eval_steps(self, batch_size: int) -> int:
        """Forwards every rank runs to score the split: the largest rank's sum of per-chunk batches."""
        per_rank = []
        windows = self.catalog.windows[self.all_rooms]
        for r in range(self.world_size):
            mine = self.room_rank == r
            chunks = chunk_ids(self.catalog.length[self.all_rooms[mine]], self.stream.chunk_rows)
            per_chunk = np.bincount(chunks, weights=windows[mine]) if len(chunks) else np.zeros(0)
            per_rank.append(int(np.ceil(per_chunk / batch_size).sum()))
        return max(per_rank) if per_rank else 0

    def eval_batches(self, batch_size: int, rank: int, world_size: int) -> Tuple[int, Iterator[Tuple[LiveBatch,
                                                                                                  torch.Tensor]]]:
        """``(steps, iterator of (batch, keep [b, 1]))`` over this rank's eval windows, chunk by chunk,
        padded with dropped batches to ``steps`` so every rank runs the same number of forwards."""
        if (rank, world_size) != (self.rank, self.world_size):
            raise ValueError(f"this split streams rank {self.rank} of {self.world_size}, not {rank} of {world_size}")
        steps = self.eval_steps(batch_size)
        return steps, self._eval_iter(batch_size, steps)

    def _eval_iter(self, batch_size: int, steps: int) -> Iterator[Tuple[LiveBatch, torch.Tensor]]:
        done, last = 0, None
        for loaded in self.read_ahead(range(self.n_chunks)):
            view = self._view(*loaded)
            n = len(view)
            for lo in range(0, n, batch_size):
                ids = np.arange(lo, min(lo + batch_size, n))
                last = view
                yield view.batch(ids, gather=self.stream.gather_on_device), torch.ones(len(ids), 1, dtype=torch.bool)
                done += 1
        if done < steps:
            if last is None:  # this rank has no windows: pad with copies of another rank's first window
                last = self._any_view()
            for _ in range(steps - done):
                ids = np.zeros(batch_size, np.int64)
                yield last.batch(ids, gather=self.stream.gather_on_device), torch.zeros(batch_size, 1,
                                                                                        dtype=torch.bool)

    def _any_view(self) -> WindowedSplit:
        """Windows of the first room of the split that has any (for padding batches of an idle rank)."""
        first = self.all_rooms[np.flatnonzero(self.catalog.windows[self.all_rooms] > 0)[:1]]
        if len(first) == 0:
            raise DataError(f"split {self.split!r} has no windows to score")
        arr = self.reader.read(first)
        return self._view(arr, self._windows(arr))


def _slice(arr: SegmentArrays, lo: int, hi: int) -> SegmentArrays:
    sl = slice(lo, hi)
    return SegmentArrays(
        live_id=arr.live_id[sl], streamer_id=arr.streamer_id[sl], segment=arr.segment[sl],
        timestamp=arr.timestamp[sl], visual=arr.visual[sl], text=arr.text[sl], counters=arr.counters[sl],
        viewers=None if arr.viewers is None else arr.viewers[sl], label=arr.label[sl], split=arr.split[sl],
        sizes=arr.sizes,
    )
