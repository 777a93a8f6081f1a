"""The media bank of ``content_e2e``: segments' frames and tokenised texts by (live_id, segment), docs/MODEL.md 12.

Two ways to hold the frames (``model.media_frames``):

* ``ram``: every frame decoded once, up front, into one uint8 tensor ``[N, F, 3, S, S]``
  (N x F x 3 x S^2 bytes: 3 KB a segment at 32 x 32, 150 KB a frame at 224 x 224);
* ``lazy``: only the frame paths (one Arrow ``list<string>`` array, O(path bytes)); each step decodes the
  batch's *distinct* rows, with the same function (:func:`kuaihl_rec.extract.load_frames`, then
  ``round(255 x)`` to uint8), so both modes hand the encoders bit-identical images;
* ``auto`` (default): ``ram`` when the decoded frames, estimated from the table as
  rows x ``frames_per_segment`` x 3 x ``image_size``^2 bytes (nothing decoded), fit ``model.media_ram_gib``
  (default 2 GiB), else ``lazy``.

A lazy bank stats every frame file it may read when it is built (a missing file is one
:class:`~kuaihl_rec.data.io.DataError` naming the table file, row and image, before training starts); a file that
disappears or cannot be decoded later fails the step with one such line. The texts are small and always
tokenised up front (the tokenisation cache).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from kuaihl_rec.data.io import DataError, segment_files
from kuaihl_rec.data.schema import RAW_MEDIA_COLUMNS
from kuaihl_rec.encoders import EncoderConfig, segment_text

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_RAM_GIB", "FramePaths", "MEDIA_FRAMES", "MediaBank", "decoded_frame_bytes", "load_media_bank",
           "resolve_frames_mode"]

#: ``model.media_frames`` values.
MEDIA_FRAMES = ("auto", "ram", "lazy")
#: ``model.media_ram_gib``: the most decoded frame bytes ``auto`` holds in memory.
DEFAULT_RAM_GIB = 2.0


def decoded_frame_bytes(n_rows: int, cfg: EncoderConfig) -> int:
    """Bytes of every row's decoded frames as uint8: ``n_rows x frames_per_segment x 3 x image_size^2``."""
    return int(n_rows) * cfg.frames_per_segment * 3 * cfg.image_size ** 2


def resolve_frames_mode(mode: str, n_rows: int, cfg: EncoderConfig, ram_gib: float) -> str:
    """``ram`` or ``lazy`` for ``mode`` (``auto``: ``ram`` when the decoded frames fit ``ram_gib`` GiB)."""
    if mode not in MEDIA_FRAMES:
        raise ValueError(f"model.media_frames must be one of {', '.join(MEDIA_FRAMES)}, got {mode!r}")
    if mode != "auto":
        return mode
    return "ram" if decoded_frame_bytes(n_rows, cfg) <= float(ram_gib) * 2 ** 30 else "lazy"


@dataclasses.dataclass(frozen=True)
class FramePaths:
    """Every row's frame paths (bank order = table order) and where each row came from; decodes rows on demand.

    paths: Arrow ``list<string>`` [N].  part: int32 [N] index into ``names`` (the table's files).
    row_in_part: int64 [N] the row within its file (as error messages count rows).  root: what relative
    paths resolve against.  cfg: the encoder config (``frames_per_segment``, ``image_size``).
    """

    paths: pa.Array
    part: np.ndarray
    row_in_part: np.ndarray
    names: Tuple[str, ...]
    root: Path
    cfg: EncoderConfig

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def nbytes(self) -> int:
        """What this holds in memory: the Arrow buffers (offsets + UTF-8 bytes) and the two row-origin arrays."""
        return int(self.paths.nbytes + self.part.nbytes + self.row_in_part.nbytes)

    def where(self, r: int) -> str:
        """``"FILE: row R"`` of bank row ``r`` (as ``kuaihl extract`` names rows)."""
        return f"{self.names[int(self.part[r])]}: row {int(self.row_in_part[r])}"

    def decode(self, rows: Sequence[int], out: Optional[Tensor] = None) -> Tensor:
        """Rows' frames as uint8 ``[len(rows), F, 3, S, S]`` (``round(255 x)`` of ``load_frames``' [0, 1] floats)."""
        # why: function-level import: extract pulls the data validator, only the end-to-end model needs it
        from kuaihl_rec.extract import load_frames

        cfg = self.cfg
        if out is None:
            out = torch.empty((len(rows), cfg.frames_per_segment, 3, cfg.image_size, cfg.image_size),
                              dtype=torch.uint8)
        for i, r in enumerate(rows):
            img = load_frames(self.paths[int(r)].as_py(), cfg, self.root, self.where(int(r)))
            out[i] = img.mul(255.0).round_().to(torch.uint8)
        return out

    def check_files(self) -> None:
        """Stat every frame file a row may read (the ``frames_per_segment`` chosen of its list); a missing one is a
        DataError naming the first (file, row, image) and the count."""
        # why: function-level import: extract pulls the data validator, only the end-to-end model needs it
        from kuaihl_rec.extract import frame_indices, resolve_frame_path

        first, n_missing = None, 0
        for r, paths in enumerate(self.paths.to_pylist()):
            if not paths:
                raise DataError(f"{self.where(r)}, field 'frame_paths': the segment has no frames")
            for j in frame_indices(len(paths), self.cfg.frames_per_segment):
                if paths[j] is None:
                    raise DataError(f"{self.where(r)}, field 'frame_paths'[{j}]: path is null")
                p = resolve_frame_path(paths[j], self.root)
                if not p.is_file():
                    n_missing += 1
                    first = first or f"{self.where(r)}, field 'frame_paths'[{j}]: image file {p} does not exist"
        if first:
            raise DataError(f"{first} (the media table (model.media): {n_missing} frame file(s) missing in all)")


@dataclasses.dataclass
class MediaBank:
    """Every segment's frames and tokenised text (N rows, in the table's (live_id, segment) order).

    live_ids: [R] int64 sorted; offsets: [R] int64 first row of each room; lengths: [R] int64.
    frames: uint8 [N, F, 3, S, S] (``ram``) or None (``lazy``: ``paths`` decodes the rows a batch needs).
    tokens: {name: int64 [N, L]} (``input_ids``, ``attention_mask``, ...).
    """

    live_ids: Tensor
    offsets: Tensor
    lengths: Tensor
    frames: Optional[Tensor]
    tokens: dict
    paths: Optional[FramePaths] = None

    @property
    def mode(self) -> str:
        """``"ram"`` or ``"lazy"``."""
        return "ram" if self.frames is not None else "lazy"

    def rows(self, live_raw: Tensor, segment: Tensor) -> Tensor:
        """Bank rows ``[b, n]`` of windows ``live_raw [b]`` at content segments ``segment [b, n]`` (-1 -> row 0)."""
        room = torch.searchsorted(self.live_ids, live_raw.to(torch.long))
        room = room.clamp(max=len(self.live_ids) - 1)
        if not torch.equal(self.live_ids[room], live_raw.to(torch.long)):
            missing = live_raw[self.live_ids[room] != live_raw].tolist()
            raise DataError(f"live_id(s) {missing[:5]} are not in the media table (model.media)")
        seg = segment.to(torch.long)
        if bool((seg >= self.lengths[room][:, None]).any()):
            raise DataError("a window reads a segment past its room's end in the media table (model.media)")
        return torch.where(seg >= 0, self.offsets[room][:, None] + seg, torch.zeros_like(seg))

    def images(self, rows: Tensor) -> Tensor:
        """uint8 ``[u, F, 3, S, S]`` frames of bank ``rows [u]`` (indexed in ``ram``, decoded now in ``lazy``)."""
        if self.frames is not None:
            return self.frames[rows]
        try:
            return self.paths.decode(rows.tolist())
        except DataError as exc:
            raise DataError(f"{exc} (model.media_frames=lazy decodes a frame when a batch reads it; building the "
                            "bank checked only that every frame file existed)") from exc


def _check_media_order(path: Path, live: np.ndarray, seg: np.ndarray) -> None:
    """Each room's rows are contiguous, in segment order 0, 1, 2, ..., and no live_id starts twice (otherwise
    rooms would merge in the bank and a window would read another room's frames)."""
    if len(live) == 0:
        raise DataError(f"{path}: the media table (model.media) has no rows")
    new_room = np.ones(len(live), dtype=bool)
    new_room[1:] = live[1:] != live[:-1]
    expected = np.zeros(len(seg), dtype=np.int64)
    expected[1:] = seg[:-1] + 1
    expected[new_room] = 0
    bad = np.flatnonzero(seg != expected)
    if bad.size:
        r = int(bad[0])
        raise DataError(f"{path}: row {r}: segment: the media table (model.media): live_id {int(live[r])} has segment "
                        f"{int(seg[r])} where {int(expected[r])} is expected (each room's rows contiguous, segments "
                        "0, 1, 2, ...)")
    firsts = np.flatnonzero(new_room)
    _, first_seen = np.unique(live[firsts], return_index=True)
    repeated = np.setdiff1d(np.arange(len(firsts)), first_seen)
    if repeated.size:
        r = int(firsts[repeated.min()])
        raise DataError(f"{path}: row {r}: live_id: the media table (model.media): live_id {int(live[r])} appears in "
                        "two separate runs of rows (each room's rows must be contiguous)")


_KEY_COLUMNS = ("live_id", "segment")


def _read_media_columns(path: Path) -> List[Tuple[Path, pa.Table]]:
    """Each file of the table with only (live_id, segment, frame_paths, asr_text, comment_text): a table that also
    holds feature vectors is not read whole."""
    out = []
    for f in segment_files(path):
        try:
            names = pq.read_schema(f).names
            absent = [c for c in RAW_MEDIA_COLUMNS if c not in names]
            if absent:
                raise DataError(f"{f}: the media table lacks the raw-media column(s) {absent} "
                                "(write one with `kuaihl world --set raw_media=true`)")
            absent = [c for c in _KEY_COLUMNS if c not in names]
            if absent:
                raise DataError(f"{f}: the media table (model.media) lacks the column(s) {absent}")
            out.append((f, pq.read_table(f, columns=[*_KEY_COLUMNS, *RAW_MEDIA_COLUMNS])))
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{f}: not a readable Parquet file ({exc})") from exc
    return out


def _frame_paths(parts: List[Tuple[Path, pa.Table]], root: Path, cfg: EncoderConfig) -> FramePaths:
    columns = [t.column("frame_paths").cast(pa.list_(pa.string())).combine_chunks() for _, t in parts]
    return FramePaths(
        paths=pa.concat_arrays(columns) if len(columns) > 1 else columns[0],
        part=np.concatenate([np.full(t.num_rows, i, dtype=np.int32) for i, (_, t) in enumerate(parts)]),
        row_in_part=np.concatenate([np.arange(t.num_rows, dtype=np.int64) for _, t in parts]),
        names=tuple(str(name) for name, _ in parts), root=root, cfg=cfg)


def load_media_bank(media: Any, cfg: EncoderConfig, featurizer: Any, frames: str = "auto",
                    ram_gib: float = DEFAULT_RAM_GIB) -> MediaBank:
    """Read the raw-media segment table ``media`` (a directory or ``.parquet`` file with ``frame_paths`` /
    ``asr_text`` / ``comment_text``), tokenise its texts with ``featurizer.text`` and hold its frames as ``frames``
    says (``auto`` | ``ram`` | ``lazy``, see the module docstring); frames decode as ``kuaihl extract`` decodes them."""
    path = Path(media)
    if not path.exists():
        raise DataError(f"{path}: the media table (model.media) does not exist")
    parts = _read_media_columns(path)
    live_np = np.concatenate([t.column("live_id").to_numpy() for _, t in parts])
    seg_np = np.concatenate([t.column("segment").to_numpy() for _, t in parts])
    _check_media_order(path, live_np, seg_np)
    mode = resolve_frames_mode(frames, len(live_np), cfg, ram_gib)
    paths = _frame_paths(parts, path if path.is_dir() else path.parent, cfg)
    texts = [segment_text(a, c) for _, t in parts
             for a, c in zip(t.column("asr_text").to_pylist(), t.column("comment_text").to_pylist())]
    del parts
    logger.info("media bank: %d segments, frames %s (decoded: %.2f GiB, budget %s GiB for auto)", len(paths), mode,
                decoded_frame_bytes(len(paths), cfg) / 2 ** 30, ram_gib)
    if mode == "ram":
        decoded, paths = paths.decode(range(len(paths))), None
    else:
        paths.check_files()
        decoded = None
    starts = np.flatnonzero(seg_np == 0)
    order = np.argsort(live_np[starts], kind="stable")
    lengths = np.diff(np.append(starts, len(seg_np)))
    return MediaBank(
        live_ids=torch.from_numpy(live_np[starts][order].astype(np.int64)),
        offsets=torch.from_numpy(starts[order].astype(np.int64)),
        lengths=torch.from_numpy(lengths[order].astype(np.int64)),
        frames=decoded,
        tokens=dict(featurizer.text.tokenize(texts)),
        paths=paths,
    )
