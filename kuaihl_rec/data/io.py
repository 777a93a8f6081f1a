"""Reading and writing segment tables (Parquet + a JSON manifest), atomically.

Layout written by :func:`write_segment_table`::

    DIR/dataset.json                   {"format", "version", "feature_sizes", "files", "file_rows",
                                        "n_rows", "n_rooms", ...}
    DIR/segments/part-00000.parquet    rows sorted by (live_id, segment); a room never spans two files

Every file is written to a temporary name in the same directory and renamed into place
(``os.replace``), so a crash leaves either the old file or the new one, never half of one.
Written files get the mode an ordinary ``open`` would give them, ``0o666 & ~umask`` (0644 under
the usual umask 022), not the 0600 of the temporary file.

Reading trusts nothing in the manifest: :func:`segment_files` refuses a file listed twice and a
path that leaves the dataset directory (``..``, an absolute path, a symlink pointing outside);
:func:`manifest_sizes` refuses feature sizes that are not integers >= 1. The row counts the
manifest records (``n_rows``, ``file_rows``, ``n_rooms``) are checked against the data by
:mod:`kuaihl_rec.data.validate`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kuaihl_rec.data.schema import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    SEGMENTS_DIR,
    FeatureSizes,
)

PathLike = Union[str, os.PathLike]


class DataError(ValueError):
    """Data that cannot be used; the message names the file, row and field."""


def _process_umask() -> int:
    """The process umask, read from ``/proc/self/status`` where it is there (no change of the umask,
    so no race with other threads), else by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def output_file_mode() -> int:
    """The mode of a file written by this module: ``0o666 & ~umask`` (0644 under umask 022)."""
    return 0o666 & ~_process_umask()


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace`` (mode: :func:`output_file_mode`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, output_file_mode())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def atomic_write_parquet(path: PathLike, table: pa.Table, **kwargs: Any) -> None:
    """``pq.write_table`` to a temporary file in the target directory, then rename (mode:
    :func:`output_file_mode`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, **kwargs)
        os.chmod(tmp, output_file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def write_segment_table(
    table: pa.Table,
    out_dir: PathLike,
    sizes: FeatureSizes,
    rows_per_file: int = 250_000,
    extra: Optional[Dict[str, Any]] = None,
) -> Path:
    """Write ``table`` (sorted by live_id, segment) as ``out_dir/segments/part-*.parquet``.

    Files are cut at room boundaries, so a room is never split across files. The manifest
    is written last: a reader that finds ``dataset.json`` finds every file it lists.
    Deterministic: the same table gives byte-identical files.
    """
    out_dir = Path(out_dir)
    seg_dir = out_dir / SEGMENTS_DIR
    seg_dir.mkdir(parents=True, exist_ok=True)
    live = table.column("live_id").to_numpy()
    n = len(live)
    # Start index of every room, then cut files at the first room start after each multiple of rows_per_file.
    room_starts = np.flatnonzero(np.r_[True, live[1:] != live[:-1]]) if n else np.zeros(0, dtype=np.int64)
    cuts: List[int] = [0]
    while n and cuts[-1] < n:
        target = cuts[-1] + rows_per_file
        if target >= n:
            cuts.append(n)
            break
        nxt = room_starts[np.searchsorted(room_starts, target)] if target <= room_starts[-1] else n
        cuts.append(int(nxt))
    files, file_rows = [], []
    for i, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:])):
        name = f"part-{i:05d}.parquet"
        atomic_write_parquet(seg_dir / name, table.slice(lo, hi - lo), compression="zstd", row_group_size=65_536)
        files.append(f"{SEGMENTS_DIR}/{name}")
        file_rows.append(int(hi - lo))
    # Remove parts of an earlier, larger write so the directory holds exactly what the manifest lists.
    for stale in seg_dir.glob("part-*.parquet"):
        if f"{SEGMENTS_DIR}/{stale.name}" not in files:
            stale.unlink()
    # The contract's own keys come last: ``extra`` cannot overwrite the files or their counts.
    manifest = {
        **(extra or {}),
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "feature_sizes": dataclasses.asdict(sizes),
        "files": files,
        "file_rows": file_rows,
        "n_rows": int(n),
        "n_rooms": int(len(room_starts)),
    }
    atomic_write_json(out_dir / MANIFEST_NAME, manifest)
    return out_dir


def segment_files(path: PathLike) -> List[Path]:
    """The Parquet files of a segment table (a directory with a manifest, a directory, or one file)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory (expected a segment table directory or a .parquet file)")
    if path.is_file():
        return [path]
    manifest = read_manifest(path)
    if manifest is not None:
        return manifest_files(path, manifest)
    files = sorted(path.rglob("*.parquet"))
    if not files:
        raise DataError(f"{path}: no {MANIFEST_NAME} and no .parquet files inside")
    return files


def manifest_files(path: PathLike, manifest: Dict[str, Any]) -> List[Path]:
    """The files ``manifest`` lists, as paths under ``path``; raises DataError for an entry that is
    not a relative path inside the directory (after following symlinks), one listed twice (a
    model would then see every segment of its rooms twice and learn a segment's own label as the
    next one) or one that does not exist."""
    root = Path(path)
    mpath = root / MANIFEST_NAME
    inside = root.resolve()
    files: List[Path] = []
    first_entry: Dict[Path, int] = {}
    for i, entry in enumerate(manifest["files"]):
        where = f"{mpath}: field 'files'[{i}]"
        if not isinstance(entry, str) or not entry:
            raise DataError(f"{where}: found {entry!r}; expected a non-empty relative path")
        if os.path.isabs(entry):
            raise DataError(f"{where}: found the absolute path {entry!r}; expected a path relative to {root}")
        resolved = (root / entry).resolve()
        if not resolved.is_relative_to(inside):
            raise DataError(f"{where}: {entry!r} leads to {resolved}, outside the dataset directory {inside}; "
                            f"expected a file inside it")
        if resolved in first_entry:
            raise DataError(f"{where}: {entry!r} is the same file as field 'files'[{first_entry[resolved]}] "
                            f"({manifest['files'][first_entry[resolved]]!r}); expected each file listed once")
        first_entry[resolved] = i
        files.append(root / entry)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{mpath}: lists files that do not exist: {', '.join(missing[:5])}")
    return files


def read_manifest(path: PathLike) -> Optional[Dict[str, Any]]:
    """The manifest of a segment-table directory, or None when it has none."""
    mpath = Path(path) / MANIFEST_NAME
    if not mpath.exists():
        return None
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{mpath}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise DataError(f"{mpath}: found a JSON {type(manifest).__name__}; expected an object")
    if manifest.get("format") != FORMAT_NAME:
        raise DataError(f"{mpath}: field 'format' is {manifest.get('format')!r}, expected {FORMAT_NAME!r}")
    if manifest.get("version") != FORMAT_VERSION:
        raise DataError(f"{mpath}: field 'version' is {manifest.get('version')!r}, expected {FORMAT_VERSION}")
    for key in ("feature_sizes", "files"):
        if key not in manifest:
            raise DataError(f"{mpath}: missing field {key!r}")
    if not isinstance(manifest["files"], list):
        raise DataError(f"{mpath}: field 'files' is {manifest['files']!r}, expected a list of relative paths")
    return manifest


def manifest_sizes(path: PathLike) -> Optional[FeatureSizes]:
    """The manifest's ``feature_sizes`` (None without a manifest); raises DataError unless each of
    ``visual_tokens``, ``visual_dim``, ``text_dim`` is an integer >= 1 (a feature vector of width 0
    carries nothing and a negative width is no width)."""
    manifest = read_manifest(path) if Path(path).is_dir() else None
    if manifest is None:
        return None
    mpath = Path(path) / MANIFEST_NAME
    given = manifest["feature_sizes"]
    names = [f.name for f in dataclasses.fields(FeatureSizes)]
    if not isinstance(given, dict) or sorted(given) != sorted(names):
        raise DataError(f"{mpath}: field 'feature_sizes' is {given!r}, expected an object with keys {names}")
    for name in names:
        value = given[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{mpath}: field 'feature_sizes.{name}' is {value!r}, expected an integer >= 1")
    return FeatureSizes(**given)
