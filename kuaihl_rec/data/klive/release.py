"""Finding and reading the files of a KLive release directory.

:func:`discover_release` checks the directory, reads ``live_id2aid.txt`` and lists the shards
of each split; :func:`read_release_rows` reads every shard of every split into one
:class:`~kuaihl_rec.data.klive.shards.ShardRows`, optionally with a progress bar.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from kuaihl_rec.data.klive.errors import data_error
from kuaihl_rec.data.klive.layout import MAPPING_NAME, SHARD_GLOB, SHARD_SUFFIX
from kuaihl_rec.data.klive.mapping import read_live_id2aid
from kuaihl_rec.data.klive.shards import ShardRows

# The package's logger: every module of the reader logs as "kuaihl_rec.data.klive".
logger = logging.getLogger(__package__)


@dataclasses.dataclass
class Release:
    """The files of a KLive release: its ``root``, the split names in reading order, the
    live_id -> streamer map (``mapped_live_ids`` sorted ascending, ``mapped_streamers``
    aligned with them) and the shard paths of each split (in :func:`shard_sort_key` order)."""

    root: Path
    splits: Tuple[str, ...]
    mapped_live_ids: np.ndarray
    mapped_streamers: np.ndarray
    shards: Dict[str, List[Path]]

    @property
    def mapping_path(self) -> Path:
        """The release's ``live_id2aid.txt``."""
        return self.root / MAPPING_NAME


def shard_sort_key(path: Path) -> Tuple[int, int, str]:
    """Numbered shards (``7_...``) first, in numeric order, then the others by name."""
    prefix = path.name[: -len(SHARD_SUFFIX)]
    return (0, int(prefix), path.name) if prefix.isdigit() else (1, 0, path.name)


def list_shards(split_dir: Path) -> List[Path]:
    """The shard files of one split directory, sorted by :func:`shard_sort_key`.

    Other entries are logged and ignored; raises DataError if the directory is missing or
    holds no shard.
    """
    if not split_dir.is_dir():
        raise data_error(split_dir, None, "(directory)", "no such directory",
                         f"a split directory holding {SHARD_GLOB} shards")
    shards, ignored = [], []
    for entry in split_dir.iterdir():
        if entry.is_file() and entry.name.endswith(SHARD_SUFFIX) and len(entry.name) > len(SHARD_SUFFIX):
            shards.append(entry)
        else:
            ignored.append(entry.name)
    if ignored:
        logger.info("%s: ignoring %d entries that are not %s shards: %s", split_dir, len(ignored), SHARD_GLOB,
                    ", ".join(sorted(ignored)[:10]) + (" ..." if len(ignored) > 10 else ""))
    if not shards:
        found = f" (only {sorted(ignored)[:5]})" if ignored else " (empty directory)"
        raise data_error(split_dir, None, "(directory)", "no shard files" + found, f"one or more {SHARD_GLOB} files")
    return sorted(shards, key=shard_sort_key)


def discover_release(root: Path, splits: Tuple[str, ...]) -> Release:
    """The :class:`Release` at ``root`` for the split directories ``splits``.

    Reads ``live_id2aid.txt`` and lists the shards of each split; raises DataError if the
    directory, the map or a split's shards are missing (or the map is malformed).
    """
    if not root.is_dir():
        raise data_error(root, None, "(directory)", "no such directory",
                         f"a KLive release directory with {MAPPING_NAME}")
    mapped_live_ids, mapped_streamers = read_live_id2aid(root / MAPPING_NAME)
    shards = {split: list_shards(root / split) for split in splits}
    return Release(root, splits, mapped_live_ids, mapped_streamers, shards)


def _open_progress_bar(release: Release) -> Optional[Any]:
    """A tqdm bar over the bytes of all shards of ``release``, or None (logged) without tqdm."""
    try:
        from tqdm.auto import tqdm  # third-party and only needed for progress=True
    except ImportError:  # pragma: no cover - tqdm is a dependency
        logger.warning("progress=True but tqdm is not installed; reading without a progress bar")
        return None
    total = sum(path.stat().st_size for paths in release.shards.values() for path in paths)
    return tqdm(total=total, unit="B", unit_scale=True, desc=f"reading KLive {release.root.name}")


def read_release_rows(release: Release, progress: bool = False) -> ShardRows:
    """Every row of every shard of ``release``; split ``k`` of ``release.splits`` gets split code ``k``.

    Logs the row count of each shard; raises DataError for a bad shard or a split without
    rows. ``progress``: show a tqdm bar over the bytes of all shards.
    """
    progress_bar = _open_progress_bar(release) if progress else None
    rows = ShardRows(progress_bar)
    try:
        for split_code, split in enumerate(release.splits):
            n_split_rows = 0
            for path in release.shards[split]:
                n_rows = rows.read_shard(path, split_code)
                logger.info("%s: %d rows", path, n_rows)
                n_split_rows += n_rows
            if n_split_rows == 0:
                raise data_error(release.root / split, None, "(directory)",
                                 f"{len(release.shards[split])} shard(s) with no rows", "at least one row per split")
    finally:
        if progress_bar is not None:
            progress_bar.close()
    return rows
