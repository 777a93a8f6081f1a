"""Windowing a segment table into samples of ``n`` consecutive segments, and batching them.

Left shift (docs/MODEL.md section 1). A room with segments ``0..T-1`` has *targets* ``1..T-1``
(the first segment has no past). A window starting at segment ``s`` holds the content of
segments ``s .. s+n-1`` at positions ``0 .. n-1`` and, at position ``i``, the label of segment
``s+i+1``; positions whose next segment does not exist are padding (``valid`` False). Hence a
room yields full windows for ``s = 0 .. T-1-n`` and, when ``T-1 < n``, one right-padded window.

Which windows (``mode``):

* ``"train"``: starts ``0, stride, 2*stride, ...`` and always the last full start ``T-1-n``
  (so every target is covered at least once). The viewer filter (KLive): a window whose *last*
  target has fewer than ``min_viewers`` viewers is dropped; inside kept windows, targets below
  ``min_viewers`` are masked out of the loss (``label_mask``).
* ``"eval"`` (decision, docs/MODEL.md section 1): each target is scored exactly once, at the last position of
  the window that ends on its preceding segment, i.e. with the longest available history (up to
  ``n-1`` past segments). Window ``s = 0`` scores targets ``1..min(n, T-1)`` at all its positions
  (causality makes position ``i`` of that window equal to a window ending there); windows
  ``s = 1 .. T-1-n`` score their last position. Targets below ``min_viewers`` are not scored.

Every count of dropped or masked targets is returned in a :class:`WindowStats`; nothing is lost
silently.

Split by live room: the table's ``split`` column when present (the synthetic world and the KLive
reader write it), else a deterministic hash of ``live_id`` (:func:`hash_split`).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from kuaihl_rec.config import from_dict as config_from_dict
from kuaihl_rec.data.batch import LiveBatch, make_id_features
from kuaihl_rec.data.io import DataError
from kuaihl_rec.data.schema import (
    COUNTER_COLUMNS,
    LABEL_DELAY_SEGMENTS,
    SPLITS,
    FeatureSizes,
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class WindowConfig:
    """How samples are cut. ``window`` = n (20 in the papers); ``label`` is "lvtr" or "ctr".

    ``label_delay``: how many segments after a segment ends its label is complete, i.e. known to
    the platform. LVTR counts impressions watched longer than 60 s, so the label of segment t is
    complete only 60 s after t ends: 2 segments of 30 s (``None`` = 2 for "lvtr", 0 for "ctr",
    whose clicks are known at once). ``LiveBatch.observed`` at a position whose content segment is
    t holds the label of segment ``t - label_delay`` (the freshest label known when the score for
    t + 1 is needed), or -1 where the room has none yet.
    """

    window: int = 20
    stride: int = 1
    min_viewers: int = 60
    label: str = "lvtr"
    split_fractions: Tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    label_delay: Optional[int] = None

    def __post_init__(self) -> None:
        if self.label_delay is not None and (
            isinstance(self.label_delay, bool) or not isinstance(self.label_delay, int) or self.label_delay < 0
        ):
            raise ValueError(f"WindowConfig.label_delay must be None or an integer >= 0, got {self.label_delay!r}")

    @classmethod
    def from_dict(cls, saved: Dict[str, object]) -> "WindowConfig":
        """The config saved as JSON (``dataclasses.asdict``; lists back to tuples), e.g. a run's
        ``config.json["window"]``; keys missing from older runs take their defaults."""
        return config_from_dict(cls, saved)

    @property
    def observed_delay(self) -> int:
        """``label_delay`` resolved: 2 segments for LVTR (60 s / 30 s), 0 for CTR."""
        if self.label_delay is not None:
            return self.label_delay
        return LABEL_DELAY_SEGMENTS.get(self.label, 0)


@dataclasses.dataclass
class WindowStats:
    """Counts of what the windowing kept, masked and dropped (and why)."""

    split: str
    mode: str
    n_rooms: int = 0
    n_windows: int = 0
    n_targets: int = 0
    n_scored_targets: int = 0
    targets_below_min_viewers: int = 0
    windows_dropped_low_viewers: int = 0
    rooms_without_targets: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x += np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x


def hash_split(live_ids: np.ndarray, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> np.ndarray:
    """Deterministic split by room: ``u = splitmix64(live_id + seed) / 2^64`` against cumulative fractions.

    Returns an object array of "train" / "val" / "test" (independent of row order and machine).
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"split_fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}")
    with np.errstate(over="ignore"):
        u = _splitmix64(live_ids.astype(np.int64).view(np.uint64) + np.uint64(seed)).astype(np.float64) / 2.0**64
    edges = np.cumsum(fractions)
    return np.array(SPLITS, dtype=object)[np.searchsorted(edges[:-1], u, side="right")]


@dataclasses.dataclass
class IdVocab:
    """Raw ids -> embedding-table rows. Row 0 is "unknown" (cold-start streamers, unseen rooms)."""

    raw: np.ndarray  # sorted unique raw ids; row r+1 <-> raw[r]

    @classmethod
    def fit(cls, ids: np.ndarray) -> "IdVocab":
        return cls(raw=np.unique(ids.astype(np.int64)))

    @property
    def num_rows(self) -> int:
        return len(self.raw) + 1

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        ids = ids.astype(np.int64)
        pos = np.searchsorted(self.raw, ids)
        pos_clip = np.minimum(pos, max(len(self.raw) - 1, 0))
        found = (len(self.raw) > 0) & (self.raw[pos_clip] == ids) if len(self.raw) else np.zeros(len(ids), bool)
        return np.where(found, pos_clip + 1, 0).astype(np.int64)


def _flat_vectors(col: pa.ChunkedArray, width: int, name: str) -> np.ndarray:
    arr = col.combine_chunks()
    values = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if values.size != len(arr) * width:
        raise DataError(
            f"field '{name}': expected {width} values per row, found {values.size} values over {len(arr)} rows "
            "(validate the table first)"
        )
    return values.reshape(len(arr), width)


@dataclasses.dataclass
class SegmentArrays:
    """The columns a model may read, as numpy arrays ``[N, ...]`` over all rows of a table."""

    live_id: np.ndarray
    streamer_id: np.ndarray
    segment: np.ndarray
    timestamp: np.ndarray
    visual: np.ndarray  # [N, k_v * d_v]
    text: np.ndarray  # [N, d_t]
    counters: np.ndarray  # [N, C] float32
    viewers: Optional[np.ndarray]
    label: np.ndarray  # [N] float32
    split: np.ndarray  # [N] object
    sizes: FeatureSizes

    @classmethod
    def from_table(cls, table: pa.Table, sizes: FeatureSizes, cfg: WindowConfig) -> "SegmentArrays":
        if cfg.label not in table.column_names:
            raise DataError(f"field '{cfg.label}': the label column chosen for training is not in the table")
        live = table.column("live_id").to_numpy(zero_copy_only=False).astype(np.int64)
        seg = table.column("segment").to_numpy(zero_copy_only=False).astype(np.int64)
        order = np.lexsort((seg, live))
        if not np.array_equal(order, np.arange(len(order))):
            table = table.take(pa.array(order))
            live, seg = live[order], seg[order]
        counters = np.zeros((table.num_rows, len(COUNTER_COLUMNS)), dtype=np.float32)
        for j, c in enumerate(COUNTER_COLUMNS):
            if c in table.column_names:
                counters[:, j] = table.column(c).to_numpy(zero_copy_only=False)
        if "split" in table.column_names:
            split = table.column("split").to_numpy(zero_copy_only=False).astype(object)
        else:
            split = hash_split(live, cfg.split_fractions, cfg.split_seed)
        return cls(
            live_id=live,
            streamer_id=table.column("streamer_id").to_numpy(zero_copy_only=False).astype(np.int64),
            segment=seg,
            timestamp=table.column("timestamp").to_numpy(zero_copy_only=False).astype(np.int64),
            visual=_flat_vectors(table.column("visual"), sizes.visual_len, "visual"),
            text=_flat_vectors(table.column("text"), sizes.text_dim, "text"),
            counters=counters,
            viewers=(
                table.column("n_viewers").to_numpy(zero_copy_only=False) if "n_viewers" in table.column_names else None
            ),
            label=table.column(cfg.label).to_numpy(zero_copy_only=False).astype(np.float32),
            split=split,
            sizes=sizes,
        )

    def room_bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        """Start row and length of every room (rows are sorted by live_id, segment)."""
        starts = (
            np.flatnonzero(np.r_[True, self.live_id[1:] != self.live_id[:-1]])
            if len(self.live_id)
            else np.zeros(0, np.int64)
        )
        lengths = np.diff(np.r_[starts, len(self.live_id)])
        return starts, lengths


def _window_starts(length: int, n: int, stride: int, mode: str) -> np.ndarray:
    """Window starts (segment offsets) of one room of ``length`` segments."""
    last = length - 1 - n  # last start of a full window (its last position's target is segment length-1)
    if last <= 0:
        return np.zeros(1 if length >= 2 else 0, dtype=np.int64)
    if mode == "eval":
        return np.arange(0, last + 1, dtype=np.int64)
    starts = np.arange(0, last + 1, stride, dtype=np.int64)
    if starts[-1] != last:
        starts = np.r_[starts, last]
    return starts


@dataclasses.dataclass
class WindowIndex:
    """The windows of one split: ``first_row[w]`` is the table row of window ``w``'s position 0."""

    first_row: np.ndarray  # [W] int64
    n_valid: np.ndarray  # [W] number of real positions (>= 1)
    score_from: np.ndarray  # [W] first position scored in eval mode (n_valid - 1, or 0 for s = 0)
    stats: WindowStats


def build_windows(arr: SegmentArrays, cfg: WindowConfig, split: str, mode: str = "train") -> WindowIndex:
    """Index the windows of ``split`` (see the module docstring for ``mode``)."""
    if mode not in ("train", "eval"):
        raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    n = cfg.window
    stats = WindowStats(split=split, mode=mode)
    starts, lengths = arr.room_bounds()
    in_split = arr.split[starts] == split
    firsts, n_valids, score_froms = [], [], []
    viewers_ok = (arr.viewers >= cfg.min_viewers) if arr.viewers is not None else np.ones(len(arr.live_id), bool)
    for r0, length in zip(starts[in_split], lengths[in_split]):
        stats.n_rooms += 1
        if length < 2:
            stats.rooms_without_targets += 1
            continue
        n_targets = length - 1
        stats.n_targets += int(n_targets)
        stats.targets_below_min_viewers += int((~viewers_ok[r0 + 1 : r0 + length]).sum())
        s = _window_starts(int(length), n, cfg.stride, mode)
        n_valid = np.minimum(n, n_targets - s)
        last_target_row = r0 + s + n_valid  # row of the last position's target
        if mode == "train":
            keep = viewers_ok[last_target_row]
            stats.windows_dropped_low_viewers += int((~keep).sum())
            s, n_valid = s[keep], n_valid[keep]
            score_from = n_valid - 1
        else:
            score_from = np.where(s == 0, 0, n_valid - 1)
            scored_targets = (
                r0 + 1 + np.r_[np.arange(min(n, n_targets)), (s[1:] + n - 1)] if len(s) else np.zeros(0, np.int64)
            )
            stats.n_scored_targets += int(viewers_ok[scored_targets].sum())
        firsts.append(r0 + s)
        n_valids.append(n_valid)
        score_froms.append(score_from)
    cat = (lambda xs: np.concatenate(xs).astype(np.int64)) if firsts else (lambda xs: np.zeros(0, np.int64))
    index = WindowIndex(first_row=cat(firsts), n_valid=cat(n_valids), score_from=cat(score_froms), stats=stats)
    stats.n_windows = len(index.first_row)
    if stats.targets_below_min_viewers or stats.windows_dropped_low_viewers:
        logger.info(
            "%s/%s: %d of %d targets below %d viewers (masked); %d windows dropped by the viewer filter",
            split, mode, stats.targets_below_min_viewers, stats.n_targets, cfg.min_viewers,
            stats.windows_dropped_low_viewers,
        )
    return index


class WindowedSplit:
    """Windows of one split with their arrays; :meth:`batch` gathers a :class:`LiveBatch`.

    ``streamer_vocab`` / ``live_vocab`` map raw ids to table rows; build them on the training
    split (:func:`fit_vocabs`) and pass the same ones to every split so cold-start ids map to 0.
    """

    def __init__(
        self,
        arr: SegmentArrays,
        index: WindowIndex,
        cfg: WindowConfig,
        streamer_vocab: IdVocab,
        live_vocab: IdVocab,
        mode: str,
    ):
        self.arr = arr
        self.index = index
        self.cfg = cfg
        self.streamer_vocab = streamer_vocab
        self.live_vocab = live_vocab
        self.mode = mode

    def __len__(self) -> int:
        return len(self.index.first_row)

    @property
    def stats(self) -> WindowStats:
        return self.index.stats

    def batch(self, windows: np.ndarray, gather: bool = False) -> LiveBatch:
        """Gather windows ``windows`` (int [b]) into a LiveBatch (shapes in :mod:`batch`).

        ``gather``: instead of copying the features of every window's ``n`` rows, the batch carries
        the split's whole feature block (``[N, ...]``, shared by every batch, no copy) and the row
        index ``gather [b, n]``; :meth:`LiveBatch.to` moves the block once per device and gathers
        there. Either way the batch equals, after ``to``, the copied one.
        """
        a, n = self.arr, self.cfg.window
        first = self.index.first_row[windows]
        n_valid = self.index.n_valid[windows]
        pos = np.arange(n)
        valid = pos[None, :] < n_valid[:, None]  # [b, n]
        rows = np.where(valid, first[:, None] + pos[None, :], first[:, None])  # padding reads row `first`, then masked
        target_rows = np.where(valid, rows + 1, rows)
        viewers_ok = (a.viewers[target_rows] >= self.cfg.min_viewers) if a.viewers is not None else np.ones_like(valid)
        label_mask = valid & viewers_ok
        if self.mode == "eval":
            score_mask = label_mask & (pos[None, :] >= self.index.score_from[windows][:, None])
        else:
            score_mask = label_mask & (pos[None, :] == (n_valid - 1)[:, None])
        features = self._block() if gather else self._copied(rows, valid)
        labels = np.where(valid, a.label[target_rows], 0.0).astype(np.float32)
        streamer_raw = a.streamer_id[first]
        live_raw = a.live_id[first]
        ids = {
            "streamer_id": torch.from_numpy(self.streamer_vocab.lookup(streamer_raw)),
            "live_id": torch.from_numpy(self.live_vocab.lookup(live_raw)),
        }
        return LiveBatch(
            sparse_features=make_id_features(ids),
            **features,
            labels=torch.from_numpy(labels),
            label_mask=torch.from_numpy(label_mask),
            score_mask=torch.from_numpy(score_mask),
            valid=torch.from_numpy(valid),
            segment=torch.from_numpy(np.where(valid, a.segment[rows], -1)),
            timestamp=torch.from_numpy(np.where(valid, a.timestamp[rows], -1)),
            streamer_raw=torch.from_numpy(streamer_raw.copy()),
            live_raw=torch.from_numpy(live_raw.copy()),
            observed=torch.from_numpy(self._observed(rows, valid)),
            gather=torch.from_numpy(rows) if gather else None,
        )

    def _copied(self, rows: np.ndarray, valid: np.ndarray) -> Dict[str, torch.Tensor]:
        """Features of ``rows [b, n]`` copied into windows (zeros on padding)."""
        a, sizes = self.arr, self.arr.sizes
        b, n = rows.shape
        zero_pad = ~valid
        visual = a.visual[rows].reshape(b, n, sizes.visual_tokens, sizes.visual_dim)
        text = a.text[rows]
        counters = a.counters[rows]
        visual[zero_pad] = 0.0
        text[zero_pad] = 0.0
        counters[zero_pad] = 0.0
        return {"visual": torch.from_numpy(np.ascontiguousarray(visual)),
                "text": torch.from_numpy(np.ascontiguousarray(text)),
                "counters": torch.from_numpy(np.ascontiguousarray(counters))}

    def _block(self) -> Dict[str, torch.Tensor]:
        """The split's feature block ``visual [N, k_v, d_v]``, ``text [N, d_t]``, ``counters [N, C]`` as
        tensors sharing the arrays' memory (built once; the same tensor objects for every batch)."""
        if getattr(self, "_block_tensors", None) is None:
            a, sizes = self.arr, self.arr.sizes
            with warnings.catch_warnings():  # Arrow-backed arrays are read-only; the block is only ever read
                warnings.simplefilter("ignore", UserWarning)
                self._block_tensors = {
                    "visual": torch.from_numpy(np.ascontiguousarray(a.visual)).view(-1, sizes.visual_tokens,
                                                                                    sizes.visual_dim),
                    "text": torch.from_numpy(np.ascontiguousarray(a.text)),
                    "counters": torch.from_numpy(np.ascontiguousarray(a.counters)),
                }
        return self._block_tensors

    def eval_batches(self, batch_size: int, rank: int = 0, world_size: int = 1
                     ) -> Tuple[int, Iterator[Tuple[LiveBatch, torch.Tensor]]]:
        """``(steps, iterator of (batch, keep [b, 1]))``: this rank's slice of every global batch of
        ``batch_size * world_size`` windows, in order; the windows are padded to a multiple of that
        (padding repeats window 0, ``keep`` False) so every rank runs ``steps`` forwards."""
        n = len(self)
        global_bs = batch_size * world_size
        n_steps = -(-n // global_bs) if n else 0
        padded = np.arange(n_steps * global_bs)
        keep_window = padded < n
        padded = np.where(keep_window, padded, 0)

        def batches() -> Iterator[Tuple[LiveBatch, torch.Tensor]]:
            for k in range(n_steps):
                sl = slice(k * global_bs + rank * batch_size, k * global_bs + (rank + 1) * batch_size)
                yield self.batch(padded[sl]), torch.from_numpy(keep_window[sl])[:, None]

        return n_steps, batches()

    def _observed(self, rows: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Label of segment ``t - delay`` of the same room for content rows ``rows`` [b, n]; -1
        where the room has no such segment (its first ``delay`` segments) and on padding."""
        a, delay = self.arr, self.cfg.observed_delay
        if delay == 0:
            return np.where(valid, a.label[rows], -1.0).astype(np.float32)
        back = np.maximum(rows - delay, 0)
        same = (a.live_id[back] == a.live_id[rows]) & (a.segment[rows] - a.segment[back] == delay) & (rows >= delay)
        return np.where(valid & same, a.label[back], -1.0).astype(np.float32)

    def iter_batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> Iterator[LiveBatch]:
        """Batches of this rank's shard. With ``world_size`` ranks each global batch of
        ``batch_size * world_size`` windows is split into contiguous per-rank slices, so the ranks
        together see exactly the windows a single process sees with ``batch_size * world_size``."""
        order = np.arange(len(self))
        if shuffle:
            order = np.random.default_rng([seed, epoch]).permutation(len(self))
        global_bs = batch_size * world_size
        n_batches = len(order) // global_bs if drop_last else -(-len(order) // global_bs)
        for k in range(n_batches):
            chunk = order[k * global_bs : (k + 1) * global_bs]
            mine = chunk[rank * batch_size : (rank + 1) * batch_size]
            if len(mine) == 0:
                continue
            yield self.batch(mine)


def fit_vocabs(arr: SegmentArrays, split: str = "train") -> Tuple[IdVocab, IdVocab]:
    """Streamer and live-room vocabularies from the rows of ``split`` (row 0 = unknown)."""
    rows = arr.split == split
    return IdVocab.fit(arr.streamer_id[rows]), IdVocab.fit(arr.live_id[rows])


def window_splits(
    arr: SegmentArrays, cfg: WindowConfig, modes: Optional[Dict[str, str]] = None
) -> Dict[str, WindowedSplit]:
    """Windows of every split present: train in "train" mode, val and test in "eval" mode by default."""
    modes = modes or {"train": "train", "val": "eval", "test": "eval"}
    svocab, lvocab = fit_vocabs(arr)
    out = {}
    for split, mode in modes.items():
        index = build_windows(arr, cfg, split, mode)
        out[split] = WindowedSplit(arr, index, cfg, svocab, lvocab, mode)
    return out
