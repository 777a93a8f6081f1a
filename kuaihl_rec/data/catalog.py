"""The room catalog of a segment table, built in one streaming pass over its light columns.

Streaming input (docs/STREAMING.md) never holds the feature columns of a whole table. What it
needs to plan the work of every rank is one row per *room*::

    file [R]        index of the Parquet file holding the room (a room never spans two files)
    row [R]         its first row inside that file (a room's rows are contiguous and in order)
    length [R]      its number of segments T
    split [R]       index into SPLITS ("train", "val", "test")
    live_id, streamer_id [R]
    windows [R]     how many windows the room gives in its split's mode (train: after the viewer
                    filter; val / test: eval mode), exactly what :func:`~kuaihl_rec.data.windows.build_windows`
                    counts on the full table

:func:`build_catalog` reads only ``live_id, streamer_id, segment, split, n_viewers`` (columnar
Parquet: a few bytes per segment), one file at a time, and checks on the way what streaming relies
on (a room's rows contiguous, numbered 0..T-1, in one file, with one streamer); ``kuaihl validate``
remains the full contract check. The same pass gives the vocabularies (:func:`catalog_vocabs`):
the streamers and rooms of the training split, or hashed ids (:class:`HashedVocab`) for tables
too large to enumerate.

Work of the ranks: :func:`assign_ranks` cuts the rooms of a split, in catalog order, into
``world_size`` contiguous runs balanced by segment count (rooms never split; each rank is within
one room's length of ``T_split / world_size``); :func:`chunk_ids` cuts a rank's rooms into chunks
of about ``chunk_rows`` segments, the unit that is read and windowed at once.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import pyarrow.parquet as pq

from kuaihl_rec.data.io import DataError, atomic_write_bytes, manifest_sizes, segment_files
from kuaihl_rec.data.schema import SPLITS, FeatureSizes
from kuaihl_rec.data.windows import (
    IdVocab, SegmentArrays, WindowConfig, WindowStats, _splitmix64, build_windows, hash_split,
)

LIGHT_COLUMNS = ("live_id", "streamer_id", "segment", "split", "n_viewers")
# Columns every file must hold (besides the training label); checked before anything is read.
REQUIRED_COLUMNS = ("live_id", "streamer_id", "segment", "timestamp", "visual", "text")
SPLIT_MODES = {"train": "train", "val": "eval", "test": "eval"}


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    """How the trainer reads its data (``TrainConfig.stream``; ``--set stream.enabled=true``).

    enabled           False: every rank loads the whole table (the in-memory path, the default);
                      True: each rank streams its own rooms, ``chunk_rows`` segments at a time
    chunk_rows        segments read and windowed at once (rooms are never split, so a chunk may hold
                      up to one room more); keep Parquet row groups no larger, a row group is the
                      smallest unit Parquet reads
    buffer_chunks     chunks held at once; a training batch draws its windows uniformly from the
                      union of their remaining windows (the shuffle buffer)
    prefetch_chunks   chunks a background thread reads ahead (0: none); Parquet decoding releases the
                      GIL, so reading overlaps building batches (memory: that many chunks more)
    gather_on_device  batches carry the buffer's segment block (moved to the device once per
                      buffer change) and a ``[b, n]`` row index; the windows are gathered where the
                      model runs (``LiveBatch.to``) instead of copied ``n`` times on the host
    id_hash_buckets   0: exact streamer / live-id vocabularies of the training split; B > 0: ids
                      hashed into B rows (+ row 0, unused), nothing to enumerate
    mmap_threshold    glibc only: allocations of at least this many bytes get their own mapping,
                      returned to the system when freed (``mallopt(M_MMAP_THRESHOLD)``, see
                      :func:`kuaihl_rec.data.stream.bound_heap`); 0 leaves the allocator alone
    """

    enabled: bool = False
    chunk_rows: int = 32768
    buffer_chunks: int = 4
    prefetch_chunks: int = 1
    gather_on_device: bool = False
    id_hash_buckets: int = 0
    mmap_threshold: int = 1 << 20

    def __post_init__(self) -> None:
        for name in ("chunk_rows", "buffer_chunks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"stream.{name} must be an integer >= 1, got {value!r}")
        for name in ("prefetch_chunks", "id_hash_buckets", "mmap_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"stream.{name} must be an integer >= 0, got {value!r}")


@dataclasses.dataclass
class HashedVocab:
    """Ids -> rows ``1 + splitmix64(id) mod buckets``: a fixed-size table that needs no enumeration.

    Distinct ids may share a row (about ``n_ids / buckets`` per row); an id never seen in training
    still lands on some trained row rather than on the unknown row 0, which stays unused.
    """

    buckets: int

    @property
    def num_rows(self) -> int:
        return self.buckets + 1

    @property
    def raw(self) -> np.ndarray:
        return np.zeros(0, dtype=np.int64)

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        hashed = _splitmix64(np.asarray(ids, dtype=np.int64).view(np.uint64))
        return (hashed % np.uint64(self.buckets)).astype(np.int64) + 1


Vocab = Union[IdVocab, HashedVocab]


def save_vocabs(path: Path, streamer: Vocab, live: Vocab) -> None:
    """``vocab.npz`` of a run (atomically): ``streamer`` / ``live`` sorted raw ids (row r + 1 <-> raw[r]),
    or, for hashed ids, empty arrays and ``hash_buckets``."""
    buf = io.BytesIO()
    if isinstance(streamer, HashedVocab):
        np.savez(buf, streamer=streamer.raw, live=live.raw, hash_buckets=np.array([streamer.buckets, live.buckets]))
    else:
        np.savez(buf, streamer=streamer.raw, live=live.raw)
    atomic_write_bytes(path, buf.getvalue())


def load_vocabs(path: Path) -> Tuple[Vocab, Vocab]:
    """The (streamer, live) vocabularies :func:`save_vocabs` wrote."""
    saved = np.load(path)
    if "hash_buckets" in saved:
        s, lv = (int(b) for b in saved["hash_buckets"])
        return HashedVocab(s), HashedVocab(lv)
    return IdVocab(saved["streamer"]), IdVocab(saved["live"])


@dataclasses.dataclass
class RoomCatalog:
    """One row per room of a segment table (module docstring); rooms in (file, row) order."""

    files: List[Path]
    sizes: FeatureSizes
    columns: Tuple[str, ...]  # the table's column names (of the first file)
    file: np.ndarray
    row: np.ndarray
    length: np.ndarray
    split: np.ndarray  # int8 index into SPLITS
    live_id: np.ndarray
    streamer_id: np.ndarray
    windows: np.ndarray
    stats: Dict[str, WindowStats]

    @property
    def n_rooms(self) -> int:
        return len(self.live_id)

    def rooms_of(self, split: str) -> np.ndarray:
        """Catalog indices of the rooms of ``split``, in catalog order."""
        return np.flatnonzero(self.split == SPLITS.index(split))


def _first_sizes(files: List[Path]) -> FeatureSizes:
    """Widths from row 0 of the first non-empty file (a table without manifest; the in-memory path's rule)."""
    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except (OSError, ValueError) as exc:
            raise DataError(f"{f}: not a readable Parquet file ({exc})") from exc
        missing = [c for c in ("visual", "text") if c not in pf.schema_arrow.names]
        if missing:
            raise DataError(f"{f}: missing column(s) {missing}")
        if pf.metadata.num_rows:
            first = pf.read_row_group(0, columns=["visual", "text"]).slice(0, 1)
            v, t = first.column("visual")[0].values, first.column("text")[0].values
            return FeatureSizes(visual_tokens=1, visual_dim=len(v), text_dim=len(t))
    raise DataError(f"{files[0].parent}: the table has no rows")


def _light_arrays(f: Path, table, sizes: FeatureSizes, cfg: WindowConfig) -> SegmentArrays:
    """A :class:`SegmentArrays` of the light columns only (zero-width features), for counting windows."""
    n = table.num_rows
    col = lambda name: table.column(name).to_numpy(zero_copy_only=False)  # noqa: E731
    live = col("live_id").astype(np.int64)
    split = (col("split").astype(object) if "split" in table.column_names
             else hash_split(live, cfg.split_fractions, cfg.split_seed))
    bad = ~np.isin(split, np.array(SPLITS, dtype=object))
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise DataError(f"{f}: row {r}, field 'split': found {split[r]!r}, expected one of {SPLITS}")
    empty = np.zeros((n, 0), np.float32)
    return SegmentArrays(
        live_id=live, streamer_id=col("streamer_id").astype(np.int64), segment=col("segment").astype(np.int64),
        timestamp=np.zeros(n, np.int64), visual=empty, text=empty, counters=empty,
        viewers=col("n_viewers") if "n_viewers" in table.column_names else None,
        label=np.zeros(n, np.float32), split=split, sizes=sizes,
    )


def _check_rooms(f: Path, arr: SegmentArrays, starts: np.ndarray, lengths: np.ndarray) -> None:
    """What streaming relies on: rooms contiguous, numbered 0..T-1, one streamer per room."""
    live, seg = arr.live_id, arr.segment
    if len(np.unique(live[starts])) != len(starts):
        values, first = np.unique(live[starts], return_index=True)
        again = np.setdiff1d(np.arange(len(starts)), first)[0]
        raise DataError(f"{f}: row {starts[again]}, field 'live_id': room {live[starts[again]]} has rows that are "
                        f"not contiguous; expected each room's rows together, in segment order")
    expected = np.arange(len(live)) - np.repeat(starts, lengths)
    wrong = np.flatnonzero(seg != expected)
    if len(wrong):
        r = int(wrong[0])
        raise DataError(f"{f}: row {r}, field 'segment': room {live[r]} has segment {seg[r]} there, expected "
                        f"{expected[r]} (rooms numbered 0, 1, 2, ... in row order; run `kuaihl validate`)")
    mixed = np.flatnonzero(arr.streamer_id != np.repeat(arr.streamer_id[starts], lengths))
    if len(mixed):
        r = int(mixed[0])
        raise DataError(f"{f}: row {r}, field 'streamer_id': room {live[r]} changes streamer; expected one per room")


def _count_windows(arr: SegmentArrays, cfg: WindowConfig, starts: np.ndarray, stats: Dict[str, WindowStats],
                   room_split: np.ndarray) -> np.ndarray:
    """Windows of every room in its split's mode; adds each split's counts into ``stats``."""
    windows = np.zeros(len(starts), np.int64)
    for split, mode in SPLIT_MODES.items():
        index = build_windows(arr, cfg, split, mode)
        room = np.searchsorted(starts, index.first_row, side="right") - 1
        windows += np.bincount(room, minlength=len(starts)) * (room_split == SPLITS.index(split))
        total = stats.setdefault(split, WindowStats(split=split, mode=mode))
        for key, value in index.stats.to_dict().items():
            if isinstance(value, int):
                setattr(total, key, getattr(total, key) + value)
    return windows


def build_catalog(path: Union[str, Path], cfg: WindowConfig) -> RoomCatalog:
    """One pass over the light columns of every file of the table at ``path`` (module docstring)."""
    files = segment_files(path)
    sizes = manifest_sizes(path) or _first_sizes(files)
    parts: Dict[str, List[np.ndarray]] = {k: [] for k in ("file", "row", "length", "split", "live", "streamer",
                                                          "windows")}
    stats: Dict[str, WindowStats] = {}
    columns: Tuple[str, ...] = ()
    for i, f in enumerate(files):
        try:
            pf = pq.ParquetFile(f)
        except (OSError, ValueError) as exc:
            raise DataError(f"{f}: not a readable Parquet file ({exc})") from exc
        names = tuple(pf.schema_arrow.names)
        columns = columns or names
        missing = [c for c in REQUIRED_COLUMNS + (cfg.label,) if c not in names]
        if missing:
            raise DataError(f"{f}: missing column(s) {missing} (the label chosen for training is {cfg.label!r})")
        table = pf.read(columns=[c for c in LIGHT_COLUMNS if c in names])
        if table.num_rows == 0:
            continue
        arr = _light_arrays(f, table, sizes, cfg)
        starts, lengths = arr.room_bounds()
        _check_rooms(f, arr, starts, lengths)
        room_split = np.array([SPLITS.index(s) for s in arr.split[starts]], dtype=np.int8)
        parts["windows"].append(_count_windows(arr, cfg, starts, stats, room_split))
        parts["file"].append(np.full(len(starts), i, np.int32))
        parts["row"].append(starts.astype(np.int64))
        parts["length"].append(lengths.astype(np.int64))
        parts["split"].append(room_split)
        parts["live"].append(arr.live_id[starts])
        parts["streamer"].append(arr.streamer_id[starts])
    cat = {k: (np.concatenate(v) if v else np.zeros(0, np.int64)) for k, v in parts.items()}
    if len(cat["live"]) == 0:
        raise DataError(f"{path}: the table has no rows")
    values, counts = np.unique(cat["live"], return_counts=True)
    if (counts > 1).any():
        room = values[np.argmax(counts > 1)]
        where = [str(files[int(cat["file"][j])]) for j in np.flatnonzero(cat["live"] == room)[:2]]
        raise DataError(f"field 'live_id': room {room} has rows in {where[0]} and {where[1]}; "
                        "expected one file per room")
    return RoomCatalog(
        files=files, sizes=sizes, columns=columns, file=cat["file"], row=cat["row"], length=cat["length"],
        split=cat["split"].astype(np.int8), live_id=cat["live"], streamer_id=cat["streamer"],
        windows=cat["windows"], stats=stats,
    )


def catalog_vocabs(catalog: RoomCatalog, hash_buckets: int = 0) -> Tuple[Vocab, Vocab]:
    """Streamer and live-room vocabularies of the training split (equal to
    :func:`~kuaihl_rec.data.windows.fit_vocabs` on the full table), or hashed ones."""
    if hash_buckets:
        return HashedVocab(hash_buckets), HashedVocab(hash_buckets)
    train = catalog.rooms_of("train")
    return IdVocab.fit(catalog.streamer_id[train]), IdVocab.fit(catalog.live_id[train])


def assign_ranks(lengths: np.ndarray, world_size: int) -> np.ndarray:
    """Rank of each room (rooms in order): contiguous runs balanced by segment count.

    Room j goes to rank ``floor(world_size * m_j / T)``, ``m_j`` the segment count before its middle
    and ``T`` the total, so each rank holds within one room's length of ``T / world_size`` segments.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) == 0:
        return np.zeros(0, np.int64)
    middle = np.cumsum(lengths) - lengths / 2.0
    return np.minimum((middle * world_size / lengths.sum()).astype(np.int64), world_size - 1)


def chunk_ids(lengths: np.ndarray, chunk_rows: int) -> np.ndarray:
    """Chunk of each room (rooms in order): a room belongs to the chunk where its first segment falls,
    counting ``chunk_rows`` segments per chunk; chunk ids are 0, 1, 2, ... without gaps."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) == 0:
        return np.zeros(0, np.int64)
    raw = (np.cumsum(lengths) - lengths) // chunk_rows
    return np.unique(raw, return_inverse=True)[1].astype(np.int64)


def rank_rooms(catalog: RoomCatalog, split: str, rank: int, world_size: int,
               ranks: Optional[np.ndarray] = None) -> np.ndarray:
    """Catalog indices of the rooms of ``split`` that ``rank`` reads (of ``world_size``)."""
    rooms = catalog.rooms_of(split)
    ranks = assign_ranks(catalog.length[rooms], world_size) if ranks is None else ranks
    return rooms[ranks == rank]
