"""What a training run writes besides checkpoints (versions, step / epoch logs, the loss curve) and
what makes a run directory one run's: its ownership check and the identity a resume must match.

Run-directory ownership: a fresh run refuses a directory that holds another run's files
(:data:`RUN_FILES`) with :class:`FileExistsError`; with ``overwrite=True`` those files are
*moved*, not deleted, to ``RUN/.replaced-<UTC timestamp>/``, together with everything else in the
directory whose name does not start with a dot (eval outputs next to them belong to that run too);
nothing is lost: remove that folder yourself once you no longer need it.

Identity: the config (hashed), the seed and a fingerprint of the training data
(:func:`data_fingerprint`: SHA-256 over the data manifest's bytes and, per Parquet file, its name,
size and footer, i.e. its schema, row counts and column statistics). It costs a few small reads,
not a pass over the data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from kuaihl_rec.data.io import atomic_write_bytes, segment_files
from kuaihl_rec.data.schema import MANIFEST_NAME

logger = logging.getLogger(__name__)

RUN_FILES = (
    "config.json", "model.pt", "summary.json", "metrics.jsonl", "steps.jsonl", "loss_curve.png", "vocab.npz",
    "checkpoints",
)
REPLACED_PREFIX = ".replaced-"
_FOOTER_TAIL = 8  # a Parquet file ends with <footer length: uint32 LE> b"PAR1"


def versions() -> Dict[str, str]:
    """Versions of the stack a run used (saved in ``config.json``)."""
    import torchrec  # noqa: PLC0415  (imported where used, like fbgemm_gpu below, which may be absent)

    out = {
        "python": platform.python_version(), "torch": torch.__version__,
        "torchrec": getattr(torchrec, "__version__", "?"), "numpy": np.__version__,
    }
    try:
        import fbgemm_gpu

        out["fbgemm_gpu"] = getattr(fbgemm_gpu, "__version__", "?")
    except ImportError:
        pass
    return out


def truncate_jsonl(path: Path, key: str, last: int) -> None:
    """Keep the lines of a JSON-lines log whose ``key`` is <= ``last`` (forget what a killed run
    logged after its last checkpoint)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)[key] <= last]
    atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())


def plot_losses(run_dir: Path, steps: List[Dict[str, float]], epochs: List[Dict[str, Any]]) -> None:
    """``run_dir/loss_curve.png``: per-step training loss (and its moving mean), validation tau-b per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    if steps:
        xs = [s["step"] for s in steps]
        a.plot(xs, [s["loss"] for s in steps], lw=0.8, label="train loss (per step)")
        k = max(1, len(xs) // 50)
        smooth = np.convolve([s["loss"] for s in steps], np.ones(k) / k, mode="valid")
        a.plot(xs[k - 1 :], smooth, lw=1.5, label=f"moving mean ({k})")
    a.set_xlabel("step")
    a.set_ylabel("loss")
    a.legend()
    if epochs:
        val_tau = [float("nan") if e.get("val_tau") is None else e["val_tau"] for e in epochs]
        b.plot([e["epoch"] for e in epochs], val_tau, "o-", label="val tau-b")
        b.set_xlabel("epoch")
        b.set_ylabel("Kendall tau-b (validation)")
        b.legend()
    fig.suptitle("training curves (synthetic data unless stated otherwise)", fontsize=9)
    fig.tight_layout()
    tmp = run_dir / ".loss_curve.png.tmp"
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    os.replace(tmp, run_dir / "loss_curve.png")


# ------------------------------------------------------------------------------------ ownership


def run_files_in(run_dir: Path) -> List[str]:
    """The names of :data:`RUN_FILES` present in ``run_dir`` (an empty ``checkpoints/`` does not count)."""
    run_dir = Path(run_dir)
    held = []
    for name in RUN_FILES:
        path = run_dir / name
        if (path.is_dir() and any(path.iterdir())) or path.is_file():
            held.append(name)
    return held


def check_run_dir_free(run_dir: Path, overwrite: bool) -> List[str]:
    """Refuse (``FileExistsError``) a directory holding another run unless ``overwrite``; returns what it holds.

    Reads only, so every rank can call it before rank 0 writes anything.
    """
    held = run_files_in(run_dir)
    if held and not overwrite:
        raise FileExistsError(
            f"{run_dir}: already holds a run ({', '.join(held)}); use --resume to continue it, "
            f"--overwrite to replace it (its files are moved to {Path(run_dir) / (REPLACED_PREFIX + '<time>')}), "
            "or another --out"
        )
    return held


def move_run_aside(run_dir: Path, held: List[str]) -> Optional[Path]:
    """Move the earlier run (every entry of ``run_dir`` whose name does not start with a dot: the run's
    files and what was written next to them, e.g. eval outputs) into ``run_dir/.replaced-<UTC time>/``.

    Does nothing and returns None when ``held`` (what :func:`check_run_dir_free` found) is empty.
    """
    if not held:
        return None
    run_dir = Path(run_dir)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target, k = run_dir / f"{REPLACED_PREFIX}{stamp}", 1
    while target.exists():
        target, k = run_dir / f"{REPLACED_PREFIX}{stamp}-{k}", k + 1
    target.mkdir()
    moved = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
    for name in moved:
        os.replace(run_dir / name, target / name)
    logger.warning("%s: the earlier run's files (%s) were moved to %s", run_dir, ", ".join(moved), target)
    return target


# ------------------------------------------------------------------------------------ identity


def _parquet_footer(path: Path) -> bytes:
    """The footer of a Parquet file (schema, row groups, statistics); the last 64 KiB if it has none."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        if size >= 12:
            handle.seek(size - _FOOTER_TAIL)
            tail = handle.read(_FOOTER_TAIL)
            length = int.from_bytes(tail[:4], "little")
            if tail[4:] == b"PAR1" and length <= size - 12:
                handle.seek(size - _FOOTER_TAIL - length)
                return handle.read(length)
        handle.seek(max(size - 65536, 0))
        return handle.read()


def data_fingerprint(data_dir: Path) -> Dict[str, Any]:
    """A cheap fingerprint of a segment table: ``{"sha256", "files", "bytes"}`` (module docstring)."""
    data_dir = Path(data_dir)
    digest = hashlib.sha256()
    manifest = data_dir / MANIFEST_NAME
    if data_dir.is_dir() and manifest.exists():
        digest.update(manifest.read_bytes())
    files = segment_files(data_dir)
    total = 0
    for path in files:
        size = path.stat().st_size
        total += size
        name = path.relative_to(data_dir).as_posix() if data_dir.is_dir() else path.name
        digest.update(f"{name}\0{size}\0".encode())
        digest.update(hashlib.sha256(_parquet_footer(path)).digest())
    return {"sha256": digest.hexdigest(), "files": len(files), "bytes": total}


def config_hash(cfg_dict: Dict[str, Any]) -> str:
    """SHA-256 of a config's canonical JSON."""
    return hashlib.sha256(json.dumps(cfg_dict, sort_keys=True, default=str).encode()).hexdigest()


def run_identity(cfg_dict: Dict[str, Any], fingerprint: Dict[str, Any]) -> Dict[str, Any]:
    """What every checkpoint of a run records and a resume must match: config hash, seed, data fingerprint."""
    return {"config_hash": config_hash(cfg_dict), "seed": cfg_dict.get("seed"),
            "data_fingerprint": fingerprint["sha256"]}


def finite_or_none(value: Any) -> Any:
    """``value``, or None for a float that is NaN or infinite (tau-b of constant labels): strict JSON."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def check_saved_config(config_path: Path, run_dir: Path, cfg_dict: Dict[str, Any]) -> None:
    """A resume uses the run's own config (``ValueError`` naming the keys that differ, seed included)."""
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path}: --resume needs an earlier run in {run_dir}")
    saved = json.loads(config_path.read_text())["train"]
    now = json.loads(json.dumps(cfg_dict))
    if saved != now:
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise ValueError(f"{config_path}: the run was made with another config (differs in {diff}); "
                         "resume with the same settings or use a new --out")


def check_saved_data(config_path: Path, data_dir: Path, fingerprint: Dict[str, Any]) -> None:
    """A resume trains on the run's data: the fingerprint in ``config.json`` must match (``ValueError``).

    The same content at another path (a moved copy) passes with a warning.
    """
    saved = json.loads(config_path.read_text())
    before = saved.get("data_fingerprint")
    if before is None:
        logger.warning("%s: written before data fingerprints; cannot check that %s is the run's data",
                       config_path, data_dir)
    elif before.get("sha256") != fingerprint["sha256"]:
        raise ValueError(
            f"{data_dir}: not the data the run in {config_path.parent} was trained on (it used {saved.get('data')}: "
            f"{before.get('files')} file(s), {before.get('bytes')} bytes; now {fingerprint['files']} file(s), "
            f"{fingerprint['bytes']} bytes, another fingerprint); resume on the same data or start a new run"
        )
    if saved.get("data") != str(Path(data_dir).resolve()):
        logger.warning("%s: the run used %s; resuming on %s (same data fingerprint)", config_path.parent,
                       saved.get("data"), Path(data_dir).resolve())
