"""Checkpoints with ``torch.distributed.checkpoint`` (DCP), written atomically.

Layout under ``RUN/checkpoints``::

    step-00000400/           a complete DCP checkpoint (every rank's shards, .metadata)
        rank-0.pt ...        rank-local state (RNG states, the loss generator)
        meta.json            step, epoch, batch in epoch, early-stopping state, history
        manifest.json        SHA-256 and size of every other file, the run's identity (written last)
    latest                   the name of the newest complete checkpoint (written last)
    best                     the name of the checkpoint with the best validation tau-b
    .corrupt-step-00000400/  a checkpoint that failed verification, moved aside (kept for inspection)

A checkpoint is written into ``.step-N.tmp`` and renamed into place only after every rank has
finished, then ``latest`` is replaced atomically: a crash mid-save leaves the previous
checkpoint and ``latest`` untouched. On a cluster, ``RUN`` must be on storage every rank sees.

DCP does not check what it reads, so :func:`verify_checkpoint` compares every file with the
manifest (a truncated shard, a flipped byte, a missing file) and the run's identity (config hash,
seed, data fingerprint) with the run's: :func:`newest_intact_checkpoint` is what a resume loads,
and ``model.pt`` is only ever converted from a checkpoint that passed it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from kuaihl_rec.data.io import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)

LATEST = "latest"
BEST = "best"
MANIFEST = "manifest.json"
CORRUPT_PREFIX = ".corrupt-"


class CheckpointError(ValueError):
    """No checkpoint of the run can be trusted (every one failed verification), or the one asked for
    belongs to another run."""


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def checkpoint_state(dmp: torch.nn.Module, optimizer) -> Dict[str, Any]:
    return {"model": dmp.state_dict(), "optim": optimizer.state_dict()}


def save_checkpoint(
    root: Path, step: int, dmp, optimizer, meta: Dict[str, Any], rank_local: Dict[str, Any], keep: int = 2,
    identity: Optional[Dict[str, Any]] = None,
) -> Path:
    """Save a complete checkpoint as ``root/step-{step}`` (collective: every rank calls it).

    After every rank has written its files, rank 0 hashes them into ``manifest.json`` (with
    ``identity``, the run's config hash, seed and data fingerprint), then renames the directory
    into place and moves ``latest``.
    """
    root = Path(root)
    name = f"step-{step:08d}"
    tmp, final = root / f".{name}.tmp", root / name
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    try:
        dcp.save(checkpoint_state(dmp, optimizer), checkpoint_id=str(tmp))
        torch.save(rank_local, tmp / f"rank-{_rank()}.pt")
        if _rank() == 0:
            atomic_write_json(tmp / "meta.json", {**meta, "step": step, "name": name})
    except (OSError, RuntimeError) as exc:  # a full disk reaches torch.save as "enforce fail at inline_container.cc"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise OSError(
            f"{tmp}: writing checkpoint {name} failed ({type(exc).__name__}: {first}); the previous checkpoint "
            "is kept and --resume continues from it. Is the disk full?"
        ) from exc
    _barrier()
    if _rank() == 0:
        write_manifest(tmp, step, identity or {})
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_bytes(root / LATEST, name.encode())
        _prune(root, keep)
    _barrier()
    return final


def mark_best(root: Path, name: str) -> None:
    if _rank() == 0:
        atomic_write_bytes(Path(root) / BEST, name.encode())


def set_pointers(root: Path, latest: str, best: Optional[str]) -> None:
    """Point ``latest`` (and ``best``, or remove it) at checkpoints a resume fell back to (rank 0)."""
    root = Path(root)
    atomic_write_bytes(root / LATEST, latest.encode())
    if best and (root / best).is_dir():
        atomic_write_bytes(root / BEST, best.encode())
    else:
        (root / BEST).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ integrity


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _payload_files(ckpt: Path) -> List[Path]:
    return sorted(p for p in ckpt.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(ckpt: Path, step: int, identity: Dict[str, Any]) -> None:
    """``ckpt/manifest.json``: size and SHA-256 of every file, the step and the run's identity (atomically)."""
    files = {
        p.relative_to(ckpt).as_posix(): {"size": p.stat().st_size, "sha256": file_sha256(p)}
        for p in _payload_files(ckpt)
    }
    atomic_write_json(ckpt / MANIFEST, {"step": step, "identity": identity, "files": files})


def read_manifest(ckpt: Path) -> Optional[Dict[str, Any]]:
    """The checkpoint's manifest; None for a checkpoint written before manifests existed."""
    path = Path(ckpt) / MANIFEST
    if not path.exists():
        return None
    return json.loads(path.read_text())


def verify_checkpoint(ckpt: Path) -> Optional[str]:
    """None when every file of ``ckpt`` matches its manifest, else what is wrong (one line).

    A checkpoint without a manifest (written by an older version) passes with a warning: it
    cannot be verified.
    """
    ckpt = Path(ckpt)
    if not (ckpt / "meta.json").exists():
        return f"{ckpt}: no meta.json (not a complete checkpoint)"
    try:
        manifest = read_manifest(ckpt)
    except (OSError, ValueError) as exc:
        return f"{ckpt / MANIFEST}: unreadable ({exc})"
    if manifest is None:
        logger.warning("%s: written without a manifest (an older version); its files cannot be verified", ckpt)
        return None
    for rel, want in sorted(manifest.get("files", {}).items()):
        path = ckpt / rel
        if not path.is_file():
            return f"{path}: missing"
        size = path.stat().st_size
        if size != want["size"]:
            return f"{path}: {size} bytes, the manifest says {want['size']} (truncated or overwritten)"
        if file_sha256(path) != want["sha256"]:
            return f"{path}: SHA-256 differs from the manifest (the file's bytes changed)"
    return None


def identity_mismatch(ckpt: Path, identity: Dict[str, Any]) -> List[str]:
    """The identity keys (config_hash, seed, data_fingerprint) in which ``ckpt`` differs from ``identity``."""
    manifest = read_manifest(ckpt) or {}
    saved = manifest.get("identity") or {}
    return sorted(k for k in identity if k in saved and saved[k] != identity[k])


def _candidates(root: Path) -> List[Path]:
    """Checkpoints newest first, the one ``latest`` names at the front."""
    ckpts = sorted((p for p in Path(root).glob("step-*") if p.is_dir()), reverse=True)
    latest = _read_pointer(root, LATEST)
    return sorted(ckpts, key=lambda p: p.name != latest)


def _quarantine(ckpt: Path) -> Path:
    """Move a checkpoint that failed verification out of the way (kept, never loaded again)."""
    target = ckpt.with_name(CORRUPT_PREFIX + ckpt.name)
    if target.exists():
        shutil.rmtree(target)
    os.replace(ckpt, target)
    return target


def newest_intact_checkpoint(root: Path, identity: Dict[str, Any]) -> Tuple[Optional[Path], List[str]]:
    """The newest checkpoint that passes :func:`verify_checkpoint` (rank 0 only; it moves the failed ones
    aside) and the problems of the newer ones it skipped. ``(None, [])`` when there is no checkpoint.

    Raises :class:`CheckpointError` when checkpoints exist but none is intact, or when the intact one
    was written by a run with another identity.
    """
    problems: List[str] = []
    for ckpt in _candidates(root):
        problem = verify_checkpoint(ckpt)
        if problem is None:
            differs = identity_mismatch(ckpt, identity)
            if differs:
                raise CheckpointError(f"{ckpt}: written by another run (differs in {differs}); "
                                      "resume with the same config, seed and data, or start a new run")
            return ckpt, problems
        moved = _quarantine(ckpt)
        logger.warning("checkpoint failed verification: %s; moved aside to %s", problem, moved)
        problems.append(problem)
    if problems:
        raise CheckpointError(f"{root}: no intact checkpoint to resume from ({'; '.join(problems)}); "
                              "the damaged ones were moved to .corrupt-*; start again with --overwrite")
    return None, problems


# ------------------------------------------------------------------------------------ pointers, load, convert


def _read_pointer(root: Path, pointer: str) -> Optional[str]:
    p = Path(root) / pointer
    return p.read_text().strip() if p.exists() else None


def _prune(root: Path, keep: int) -> None:
    protected = {_read_pointer(root, LATEST), _read_pointer(root, BEST)}
    ckpts = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in ckpts[:-keep] if keep > 0 else []:
        if old.name not in protected:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".step-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint(root: Path) -> Optional[Path]:
    name = _read_pointer(root, LATEST)
    if name is None:
        return None
    path = Path(root) / name
    if not (path / "meta.json").exists():
        raise FileNotFoundError(f"{root / LATEST} names {name}, but {path} is not a complete checkpoint")
    return path


def best_checkpoint(root: Path) -> Optional[Path]:
    name = _read_pointer(root, BEST) or _read_pointer(root, LATEST)
    return Path(root) / name if name else None


def load_checkpoint(path: Path, dmp, optimizer) -> Dict[str, Any]:
    """Load ``path`` into ``dmp`` and ``optimizer`` (collective); returns meta + this rank's local state.

    The dense optimizer's lazy state is created first (``init_state``), as DCP loads in place.
    """
    path = Path(path)
    optimizer.init_state()
    state = checkpoint_state(dmp, optimizer)
    dcp.load(state, checkpoint_id=str(path))
    dmp.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optim"])
    meta = json.loads((path / "meta.json").read_text())
    local_file = path / f"rank-{_rank()}.pt"
    rank_local = torch.load(local_file, weights_only=False) if local_file.exists() else {}
    return {"meta": meta, "rank_local": rank_local}


def convert_to_single_file(ckpt: Path, out_file: Path, extra: Dict[str, Any]) -> Path:
    """``dcp_to_torch_save`` then keep only the model weights: ``{"state_dict", **extra}``, atomically."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out_file = Path(out_file)
    tmp_full = out_file.with_name(f".{out_file.name}.full.tmp")
    dcp_to_torch_save(str(ckpt), str(tmp_full))
    full = torch.load(tmp_full, weights_only=False)
    tmp_full.unlink()
    payload = {"state_dict": full["model"], **extra}
    tmp = out_file.with_name(f".{out_file.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, out_file)
    return out_file


# ------------------------------------------------------------------------------------ collective choices


def _decided_on_rank0(decide) -> Any:
    """``decide()`` on rank 0, its result (or its :class:`CheckpointError`, raised again) on every rank."""
    answer: List[Any] = [None]
    if _rank() == 0:
        try:
            answer = [("ok", decide())]
        except CheckpointError as exc:
            answer = [("error", str(exc))]
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(answer, src=0)
    kind, value = answer[0]
    if kind == "error":
        raise CheckpointError(value)
    return value


def choose_resume_checkpoint(root: Path, identity: Dict[str, Any]) -> Optional[Path]:
    """The checkpoint a resume loads (collective): rank 0 runs :func:`newest_intact_checkpoint` and every
    rank gets its answer (or the same :class:`CheckpointError`). None when there is no checkpoint."""

    def decide() -> Tuple[Optional[str], int]:
        ckpt, skipped = newest_intact_checkpoint(root, identity)
        return (ckpt.name if ckpt else None), len(skipped)

    name, skipped = _decided_on_rank0(decide)
    if skipped:
        logger.warning("resuming from %s, the newest intact checkpoint (%d newer one(s) failed verification)",
                       name, skipped)
    return Path(root) / name if name else None


def verified_best_checkpoint(root: Path) -> Path:
    """The best checkpoint (:func:`best_checkpoint`) once rank 0 has verified it (collective); a damaged one
    raises :class:`CheckpointError` on every rank, so ``model.pt`` is never converted from it."""

    def decide() -> str:
        best = best_checkpoint(root)
        if best is None:
            raise CheckpointError(f"{root}: no checkpoint to convert into model.pt")
        problem = verify_checkpoint(best)
        if problem is not None:
            raise CheckpointError(f"refusing to convert a damaged checkpoint into model.pt: {problem}; "
                                  "model.pt was left as it was")
        return best.name

    return Path(root) / _decided_on_rank0(decide)
