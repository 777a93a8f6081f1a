"""Keys of cached run-directory scores: a cache is reused only for the run, world and split it was made from.

``kuaihl ab`` scores a term that names a ``kuaihl train`` run directory once and caches the
predictions (``OUT/scores/<term>_<split>.parquet``). A cache keyed by the term's name alone would
hand a later experiment, whose config names *another* run under the same term, the earlier run's
scores. So every cached file has a key file beside it (``<term>_<split>.key.json``) holding
:func:`cache_key`: a SHA-256 over

* the run's identity (:func:`run_identity`): the SHA-256 of its ``config.json`` and the size,
  modification time and SHA-256 of its ``model.pt``;
* the world's identity (:func:`world_identity`): its resolved directory, the SHA-256 of its
  ``dataset.json`` and the size and modification time of every segment file;
* the split.

A cache whose key differs (or has none) is scored again when a scoring function is at hand.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from kuaihl_rec.data.io import atomic_write_json, segment_files

logger = logging.getLogger(__name__)

__all__ = ["KEY_SUFFIX", "cache_key", "key_path", "read_key", "run_identity", "world_identity", "write_key"]

#: What replaces ``.parquet`` in the name of a cached file's key file.
KEY_SUFFIX = ".key.json"
_CHUNK = 1 << 20
_SHA_MEMO: Dict[Tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, remembered per (path, size, mtime) within the process."""
    stat = path.stat()
    memo_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo_key not in _SHA_MEMO:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
        _SHA_MEMO[memo_key] = digest.hexdigest()
    return _SHA_MEMO[memo_key]


def _file_stamp(path: Path, with_sha: bool) -> Optional[Dict[str, Any]]:
    """Size, modification time (and SHA-256) of a file; None when it does not exist."""
    if not path.is_file():
        return None
    stat = path.stat()
    stamp: Dict[str, Any] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if with_sha:
        stamp["sha256"] = _file_sha256(path)
    return stamp


def run_identity(run_dir: Path) -> Dict[str, Any]:
    """What makes a run directory's scores what they are: its ``config.json`` and ``model.pt``."""
    run_dir = Path(run_dir)
    config = run_dir / "config.json"
    return {
        "config_sha256": _file_sha256(config) if config.is_file() else None,
        "model": _file_stamp(run_dir / "model.pt", with_sha=True),
    }


def world_identity(world_dir: Path) -> Dict[str, Any]:
    """The world a run is scored on: its directory, ``dataset.json`` and segment files."""
    world_dir = Path(world_dir)
    dataset = world_dir / "dataset.json"
    try:
        files = segment_files(world_dir)
    except (OSError, ValueError):  # no segment files (yet): the directory and dataset.json still count
        files = []
    return {
        "dir": str(world_dir.resolve()),
        "dataset_sha256": _file_sha256(dataset) if dataset.is_file() else None,
        "segments": {Path(f).name: _file_stamp(Path(f), with_sha=False) for f in files},
    }


def cache_key(run_dir: Path, world_dir: Path, split: str) -> Dict[str, Any]:
    """The key of the predictions of ``run_dir`` on ``split`` of ``world_dir`` (``key``: their SHA-256)."""
    parts = {"run": run_identity(run_dir), "world": world_identity(world_dir), "split": split}
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return {"key": digest, "run_dir": str(Path(run_dir).resolve()), **parts}


def key_path(predictions: Path) -> Path:
    """The key file beside a cached predictions file (``x.parquet`` -> ``x.key.json``)."""
    predictions = Path(predictions)
    return predictions.with_name(predictions.stem + KEY_SUFFIX)


def read_key(predictions: Path) -> Optional[str]:
    """The key stored beside ``predictions`` (None when there is none or it is unreadable)."""
    path = key_path(predictions)
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    key = stored.get("key") if isinstance(stored, dict) else None
    return key if isinstance(key, str) else None


def write_key(predictions: Path, key: Dict[str, Any]) -> None:
    """Store ``key`` (from :func:`cache_key`) beside ``predictions``."""
    atomic_write_json(key_path(predictions), key)
