"""Checkpoints with ``torch.distributed.checkpoint`` (DCP), written atomically.

Layout under ``RUN/checkpoints``::

    step-00000400/           a complete DCP checkpoint (every rank's shards, .metadata)
        rank-0.pt ...        rank-local state (RNG states, the loss generator)
        meta.json            step, epoch, batch in epoch, early-stopping state, history
    latest                   the name of the newest complete checkpoint (written last)
    best                     the name of the checkpoint with the best validation tau-b

A checkpoint is written into ``.step-N.tmp`` and renamed into place only after every rank has
finished, then ``latest`` is replaced atomically: a crash mid-save leaves the previous
checkpoint and ``latest`` untouched. On a cluster, ``RUN`` must be on storage every rank sees.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from kuaihl_rec.data.io import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)

LATEST = "latest"
BEST = "best"


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def checkpoint_state(dmp: torch.nn.Module, optimizer) -> Dict[str, Any]:
    return {"model": dmp.state_dict(), "optim": optimizer.state_dict()}


def save_checkpoint(
    root: Path, step: int, dmp, optimizer, meta: Dict[str, Any], rank_local: Dict[str, Any], keep: int = 2
) -> Path:
    """Save a complete checkpoint as ``root/step-{step}`` (collective: every rank calls it)."""
    root = Path(root)
    name = f"step-{step:08d}"
    tmp, final = root / f".{name}.tmp", root / name
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    dcp.save(checkpoint_state(dmp, optimizer), checkpoint_id=str(tmp))
    torch.save(rank_local, tmp / f"rank-{_rank()}.pt")
    if _rank() == 0:
        atomic_write_json(tmp / "meta.json", {**meta, "step": step, "name": name})
    _barrier()
    if _rank() == 0:
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
