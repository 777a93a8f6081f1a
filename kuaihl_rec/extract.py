"""``kuaihl extract``: raw segments (frame images + ASR text + comments) -> ``visual`` / ``text`` columns.

Input: a segment table (directory with ``dataset.json``, a directory of Parquet files, or one
``.parquet`` file; or an in-memory ``pyarrow.Table``) with the raw-media columns ``frame_paths``
(list<string>), ``asr_text`` and ``comment_text`` (strings). It may lack ``visual`` / ``text``
(a raw table) or hold older ones, which are replaced (a log line says so). Every other column is
kept as it is.

Frame paths that are not absolute are resolved against ``media_root``: by default the table's
directory (for a single ``.parquet`` file, the directory it is in; for an in-memory table, the
current directory); an output table written by an earlier extraction records the media root it
used in its manifest (``extracted_by.media_root``) and that is used again. Each row's frames are
reduced or repeated to ``frames_per_segment`` evenly spaced frames (rows with another count are
counted in a log line). A row without frames, a missing image or an unreadable one is a
:class:`~kuaihl_rec.data.io.DataError` naming the table file, the row (0-based within the file)
and the image path: rows are never dropped silently. Missing files are looked for before any
encoding starts. A null ``asr_text`` / ``comment_text`` is encoded as empty text (counted in a log line).

Frames are decoded with PIL, converted to RGB and resized to ``image_size`` x ``image_size``
(bicubic, whole frame, no crop). The encoders run frozen, in batches, under
``torch.inference_mode``; the output is written with
:func:`~kuaihl_rec.data.io.write_segment_table` with feature sizes ``(k_v, d_v, d_t)`` from the
encoders. The same inputs, configuration and batch size give the same features (without a
checkpoint the Swin is initialised from ``EncoderConfig.vision_seed``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import torch

from kuaihl_rec.data.io import DataError, read_manifest, write_segment_table
from kuaihl_rec.data.schema import ALL_TYPES, RAW_MEDIA_COLUMNS, FeatureSizes
from kuaihl_rec.data.validate import read_table, validate_path
from kuaihl_rec.encoders import (
    EncoderConfig,
    TextEncoder,
    VisualEncoder,
    preset_config,
    segment_text,
)

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
IN_MEMORY = "<in-memory table>"


# --------------------------------------------------------------------------------------------
# Frames


def frame_indices(n_available: int, n_frames: int) -> List[int]:
    """``n_frames`` evenly spaced indices into ``n_available`` frames (repeats when there are fewer)."""
    if n_available < 1:
        raise ValueError("no frames")
    if n_available == n_frames:
        return list(range(n_frames))
    return [int(i) for i in np.round(np.linspace(0, n_available - 1, n_frames)).astype(np.int64)]


def resolve_frame_path(path: str, media_root: Optional[PathLike]) -> Path:
    p = Path(path).expanduser()
    if p.is_absolute() or media_root is None:
        return p
    return Path(media_root) / p


def load_image(path: PathLike, size: int) -> torch.Tensor:
    """One frame as float32 ``[3, size, size]`` in [0, 1] (RGB, bicubic resize of the whole frame)."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        rgb = img.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.BICUBIC)
    arr = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def load_frames(
    paths: Sequence[str], cfg: EncoderConfig, media_root: Optional[PathLike] = None, where: str = ""
) -> torch.Tensor:
    """A segment's frames as ``[frames_per_segment, 3, S, S]``; ``where`` prefixes error messages ("file: row r")."""
    prefix = f"{where}, " if where else ""
    if paths is None or len(paths) == 0:
        raise DataError(f"{prefix}field 'frame_paths': the segment has no frames")
    frames = []
    for j in frame_indices(len(paths), cfg.frames_per_segment):
        if paths[j] is None:
            raise DataError(f"{prefix}field 'frame_paths'[{j}]: path is null")
        path = resolve_frame_path(paths[j], media_root)
        try:
            frames.append(load_image(path, cfg.image_size))
        except FileNotFoundError as exc:
            raise DataError(f"{prefix}field 'frame_paths'[{j}]: image file {path} does not exist") from exc
        except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a corrupt file
            raise DataError(
                f"{prefix}field 'frame_paths'[{j}]: cannot read image {path} ({type(exc).__name__}: {exc})"
            ) from exc
    return torch.stack(frames)


# --------------------------------------------------------------------------------------------
# Reading the raw rows


class _Rows:
    """Every row's frame paths and text, with where it came from (file, row within the file)."""

    def __init__(self) -> None:
        self.where: List[Tuple[str, int]] = []
        self.frames: List[List[str]] = []
        self.texts: List[Tuple[str, str]] = []
        self.null_asr = 0
        self.null_comments = 0
        self.other_frame_counts = 0

    def __len__(self) -> int:
        return len(self.frames)

    def label(self, i: int) -> str:
        f, r = self.where[i]
        return f"{f}: row {r}"


def _read_source(
    source: Union[PathLike, pa.Table],
) -> Tuple[List[Tuple[str, pa.Table]], Optional[Path], Optional[Dict[str, Any]]]:
    """``[(display name, table)]``, the default media root and the manifest (if any)."""
    if isinstance(source, pa.Table):
        return [(IN_MEMORY, source)], None, None
    path = Path(source)
    tables, _ = read_table(path)
    manifest = read_manifest(path) if path.is_dir() else None
    root = path if path.is_dir() else path.parent
    return [(str(f), t) for f, t in tables], root, manifest


def _collect_rows(parts: List[Tuple[str, pa.Table]], cfg: EncoderConfig, media_root: Optional[Path]) -> _Rows:
    rows = _Rows()
    missing: List[str] = []
    n_missing = 0
    for name, table in parts:
        absent = [c for c in RAW_MEDIA_COLUMNS if c not in table.column_names]
        if absent:
            raise DataError(
                f"{name}: field(s) {absent}: raw-media column(s) missing; extraction needs {list(RAW_MEDIA_COLUMNS)} "
                f"(columns present: {sorted(table.column_names)})"
            )
        frames = table.column("frame_paths").to_pylist()
        asr = table.column("asr_text").to_pylist()
        comments = table.column("comment_text").to_pylist()
        for r, (fp, a, c) in enumerate(zip(frames, asr, comments)):
            if fp is None or len(fp) == 0:
                raise DataError(
                    f"{name}: row {r}, field 'frame_paths': the segment has no frames "
                    f"({'null' if fp is None else 'empty list'})"
                )
            if len(fp) != cfg.frames_per_segment:
                rows.other_frame_counts += 1
            for j in frame_indices(len(fp), cfg.frames_per_segment):
                if fp[j] is None:
                    raise DataError(f"{name}: row {r}, field 'frame_paths'[{j}]: path is null")
                p = resolve_frame_path(fp[j], media_root)
                if not p.is_file():
                    n_missing += 1
                    if len(missing) < 5:
                        missing.append(f"{name}: row {r}, field 'frame_paths'[{j}]: image file {p} does not exist")
            rows.null_asr += a is None
            rows.null_comments += c is None
            rows.where.append((name, r))
            rows.frames.append(fp)
            rows.texts.append(segment_text(a, c))
    if missing:
        more = f"\n  ... and {n_missing - len(missing)} more" if n_missing > len(missing) else ""
        raise DataError(f"{n_missing} frame image(s) missing:\n  " + "\n  ".join(missing) + more)
    return rows


def _ordered_columns(names: Sequence[str]) -> List[str]:
    known = [c for c in ALL_TYPES if c in set(names)]
    return known + [c for c in names if c not in ALL_TYPES]


def _list_chunk(values: np.ndarray) -> pa.ListArray:
    """``[rows, width]`` float32 -> a list<float32> array."""
    rows, width = values.shape
    offsets = pa.array(np.arange(rows + 1, dtype=np.int64) * width, pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), pa.float32()))


# --------------------------------------------------------------------------------------------
# Extraction


def _encoder_config(
    cfg: Optional[EncoderConfig], encoders: Optional[Tuple[VisualEncoder, TextEncoder]]
) -> EncoderConfig:
    """The configuration to extract with, from ``cfg`` and the ``encoders`` passed in (if any).

    Without ``encoders``: ``cfg``, or the default :class:`EncoderConfig`. With them: the visual encoder's
    configuration with the text fields of the text encoder's (a ``cfg`` that differs from the visual
    encoder's is a ``ValueError``).
    """
    if encoders is not None:
        if cfg is not None and cfg != encoders[0].cfg:
            raise ValueError("cfg differs from the configuration the visual encoder passed in was built from")
        # Frames, image size and k_v come from the visual encoder; the text fields from the text encoder.
        tcfg = encoders[1].cfg
        cfg = dataclasses.replace(
            encoders[0].cfg, text_model=tcfg.text_model, max_tokens=tcfg.max_tokens, text_pooling=tcfg.text_pooling
        )
    return cfg or EncoderConfig()


def _media_root(
    media_root: Optional[PathLike], manifest: Optional[Dict[str, Any]], default_root: Optional[Path]
) -> Optional[Path]:
    """The resolved media root: ``media_root`` if given, else the one recorded in ``manifest``
    (``extracted_by.media_root``), else ``default_root``; ``None`` when there is none.
    """
    if media_root is None:
        recorded = ((manifest or {}).get("extracted_by") or {}).get("media_root")
        media_root = Path(recorded) if recorded else default_root
    return Path(media_root).resolve() if media_root is not None else None


def _report_rows(
    rows: _Rows, source: Union[PathLike, pa.Table], parts: List[Tuple[str, pa.Table]], cfg: EncoderConfig
) -> List[str]:
    """Check and log the collected ``rows`` of ``source``: no rows is a :class:`DataError`; other frame
    counts and null texts are logged. Returns the columns (``visual`` / ``text``) of ``parts`` that the
    extracted features replace (logged too).
    """
    if len(rows) == 0:
        raise DataError(f"{source if not isinstance(source, pa.Table) else IN_MEMORY}: the table has no rows")
    if rows.other_frame_counts:
        logger.warning(
            "%d segment(s) do not have %d frames: %d evenly spaced frames were taken (repeated when fewer)",
            rows.other_frame_counts, cfg.frames_per_segment, cfg.frames_per_segment,
        )
    if rows.null_asr or rows.null_comments:
        logger.info(
            "%d segment(s) without ASR text and %d without comments: encoded as empty text",
            rows.null_asr, rows.null_comments,
        )
    replaced = [c for c in ("visual", "text") if any(c in t.column_names for _, t in parts)]
    if replaced:
        logger.info("the input already has column(s) %s: they are replaced by the extracted features", replaced)
    return replaced


def _prepare_encoders(
    cfg: EncoderConfig,
    encoders: Optional[Tuple[VisualEncoder, TextEncoder]],
    device: Union[str, torch.device],
    n_rows: int,
) -> Tuple[VisualEncoder, TextEncoder, Tuple[bool, bool], FeatureSizes]:
    """Build the encoders of ``cfg`` (or take ``encoders``), move them to ``device`` in eval mode and log
    what is extracted for ``n_rows`` segments. Returns ``(visual encoder, text encoder, their training
    modes before, feature sizes)``.
    """
    if encoders is None:
        visual_enc, text_enc = VisualEncoder(cfg), TextEncoder(cfg)
    else:
        visual_enc, text_enc = encoders
    modes = (visual_enc.training, text_enc.training)
    visual_enc.to(device).eval()
    text_enc.to(device).eval()
    sizes = FeatureSizes(visual_tokens=cfg.k_v, visual_dim=visual_enc.dim, text_dim=text_enc.dim)
    logger.info(
        "extracting %d segment(s): vision %s (%s), text %s; feature sizes visual %d x %d, text %d",
        n_rows, cfg.vision_model, cfg.vision_checkpoint or "random init", text_enc.model_dir,
        sizes.visual_tokens, sizes.visual_dim, sizes.text_dim,
    )
    return visual_enc, text_enc, modes, sizes


def _encode_rows(
    rows: _Rows,
    cfg: EncoderConfig,
    visual_enc: VisualEncoder,
    text_enc: TextEncoder,
    sizes: FeatureSizes,
    media_root: Optional[Path],
    batch_size: int,
    device: Union[str, torch.device],
    progress: bool,
) -> Tuple[List[pa.Array], List[pa.Array]]:
    """Load the frames and encode the frames and texts of ``rows`` in batches of ``batch_size`` under
    ``torch.inference_mode`` (a progress bar when ``progress``). Returns the ``visual`` and the ``text``
    chunks (list<float32>, one per batch); a non-finite feature is a :class:`DataError` naming its row.
    """
    from tqdm.auto import tqdm

    vis_chunks: List[pa.Array] = []
    txt_chunks: List[pa.Array] = []
    bar = tqdm(total=len(rows), unit="seg", desc="extract", disable=not progress)
    try:
        with torch.inference_mode():
            for lo in range(0, len(rows), batch_size):
                hi = min(lo + batch_size, len(rows))
                images = torch.stack(
                    [load_frames(rows.frames[i], cfg, media_root, rows.label(i)) for i in range(lo, hi)]
                )
                vis = visual_enc(images.to(device)).reshape(hi - lo, sizes.visual_len)
                txt = text_enc(rows.texts[lo:hi])
                vis_np = vis.float().cpu().numpy()
                txt_np = txt.float().cpu().numpy()
                for name, arr in (("visual", vis_np), ("text", txt_np)):
                    if not np.isfinite(arr).all():
                        bad = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
                        raise DataError(
                            f"{rows.label(lo + bad)}, field '{name}': the encoder produced a non-finite feature"
                        )
                vis_chunks.append(_list_chunk(vis_np))
                txt_chunks.append(_list_chunk(txt_np))
                bar.update(hi - lo)
    finally:
        bar.close()
    return vis_chunks, txt_chunks


def _assemble_table(
    parts: List[Tuple[str, pa.Table]], vis_chunks: List[pa.Array], txt_chunks: List[pa.Array]
) -> pa.Table:
    """The input ``parts`` (older ``visual`` / ``text`` dropped) concatenated, with the encoded chunks
    appended as ``visual`` / ``text`` and the columns in schema order.
    """
    tables = [t.drop_columns([c for c in ("visual", "text") if c in t.column_names]) for _, t in parts]
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    table = table.append_column("visual", pa.chunked_array(vis_chunks, pa.list_(pa.float32())))
    table = table.append_column("text", pa.chunked_array(txt_chunks, pa.list_(pa.float32())))
    return table.select(_ordered_columns(table.column_names))


def _provenance(
    cfg: EncoderConfig, text_enc: TextEncoder, media_root: Optional[Path], source: Union[PathLike, pa.Table]
) -> Dict[str, Any]:
    """The manifest's ``extracted_by`` entry (as ``{"extracted_by": {...}}``): encoder configuration,
    whether the vision model is pretrained, the text model directory, the media root and the source.
    """
    return {
        "extracted_by": {
            "encoder_config": cfg.to_dict(),
            "vision_pretrained": cfg.vision_checkpoint is not None,
            "text_model_dir": str(text_enc.model_dir),
            "media_root": str(media_root) if media_root is not None else None,
            "source": IN_MEMORY if isinstance(source, pa.Table) else str(source),
        }
    }


def extract_features(
    source: Union[PathLike, pa.Table],
    out_dir: PathLike,
    cfg: Optional[EncoderConfig] = None,
    batch_size: int = 16,
    progress: bool = True,
    media_root: Optional[PathLike] = None,
    device: Union[str, torch.device] = "cpu",
    encoders: Optional[Tuple[VisualEncoder, TextEncoder]] = None,
) -> Dict[str, Any]:
    """Fill ``visual`` / ``text`` from the raw media of ``source`` and write a segment table to ``out_dir``.

    ``encoders`` (a ``(VisualEncoder, TextEncoder)`` pair built from ``cfg``) skips building them.
    Returns ``{"rows", "feature_sizes", "seconds", "encode_seconds", "rows_per_s", "output", "media_root",
    "replaced_columns"}``: ``seconds`` is the whole call (reading, loading the encoders, writing),
    ``rows_per_s`` counts the batched loading and encoding only.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size is {batch_size}, expected >= 1")
    t0 = time.perf_counter()
    parts, default_root, manifest = _read_source(source)
    cfg = _encoder_config(cfg, encoders)
    media_root = _media_root(media_root, manifest, default_root)
    rows = _collect_rows(parts, cfg, media_root)
    replaced = _report_rows(rows, source, parts, cfg)

    visual_enc, text_enc, modes, sizes = _prepare_encoders(cfg, encoders, device, len(rows))
    t_encode = time.perf_counter()
    try:
        vis_chunks, txt_chunks = _encode_rows(
            rows, cfg, visual_enc, text_enc, sizes, media_root, batch_size, device, progress
        )
    finally:
        visual_enc.train(modes[0])
        text_enc.train(modes[1])
    encode_seconds = time.perf_counter() - t_encode

    table = _assemble_table(parts, vis_chunks, txt_chunks)
    out = write_segment_table(table, out_dir, sizes, extra=_provenance(cfg, text_enc, media_root, source))
    seconds = time.perf_counter() - t0
    logger.info("wrote %d segment(s) to %s in %.1f s", len(rows), out, seconds)
    return {
        "rows": len(rows),
        "feature_sizes": {
            "visual_tokens": sizes.visual_tokens, "visual_dim": sizes.visual_dim, "text_dim": sizes.text_dim
        },
        "seconds": seconds,
        "encode_seconds": encode_seconds,
        "rows_per_s": len(rows) / encode_seconds if encode_seconds > 0 else float("inf"),
        "output": str(out),
        "media_root": str(media_root) if media_root is not None else None,
        "replaced_columns": replaced,
    }


def _copy_world_truth(input_path: Path, out_dir: Path) -> bool:
    """When ``input_path`` is a synthetic world (it has ``truth/``), copy that hidden truth beside the extracted
    table: the twin has the same rooms and segments, so its ceiling row and warm / cold-start slices
    (``kuaihl compare``, ``kuaihl eval``) read the same truth. Copied to a temporary name, then renamed."""
    src = input_path / "truth"
    if not (input_path.is_dir() and src.is_dir()):
        return False
    dst = out_dir / "truth"
    tmp = out_dir / f".truth.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)
    return True


def run_extract(
    input_path: PathLike,
    out_dir: PathLike,
    preset: str = "swin_tiny",
    vision_checkpoint: Optional[PathLike] = None,
    text_model: str = "minilm",
    batch_size: int = 16,
    progress: bool = True,
    media_root: Optional[PathLike] = None,
    device: str = "cpu",
    **overrides: Any,
) -> Dict[str, Any]:
    """``kuaihl extract``: build the encoders of ``preset`` (see :data:`kuaihl_rec.encoders.PRESETS`),
    extract, validate the output table and return a JSON-ready summary.

    ``overrides`` are further :class:`EncoderConfig` fields (e.g. ``visual_token_mode="frames"``,
    ``text_pooling="mean"``). The summary holds ``rows``, ``feature_sizes``, ``seconds``,
    ``rows_per_s``, ``input``, ``output``, the encoders used and ``valid`` / ``problems`` from
    :func:`~kuaihl_rec.data.validate.validate_path` of the output.
    """
    cfg = preset_config(
        preset,
        vision_checkpoint=str(vision_checkpoint) if vision_checkpoint is not None else None,
        text_model=str(text_model),
        **overrides,
    )
    summary = extract_features(
        input_path, out_dir, cfg, batch_size=batch_size, progress=progress, media_root=media_root, device=device
    )
    summary["truth_copied"] = _copy_world_truth(Path(input_path), Path(out_dir))
    report = validate_path(out_dir)
    summary.update(
        {
            "input": str(input_path),
            "preset": preset,
            "vision_model": cfg.vision_model,
            "vision_checkpoint": cfg.vision_checkpoint,
            "vision_pretrained": cfg.vision_checkpoint is not None,
            "text_model": cfg.text_model,
            "valid": report.ok,
            "problems": {k: p.count for k, p in report.errors.items()},
        }
    )
    if not report.ok:
        logger.warning("the extracted table does not pass validation:\n%s", report.format())
    return summary
