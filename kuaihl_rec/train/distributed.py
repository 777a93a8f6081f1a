"""Process-group timeout and the one clear error for a lost peer (docs/DISTRIBUTED.md).

* ``KUAIHL_DIST_TIMEOUT_S`` (seconds, default 1800, torch's own gloo default) bounds every
  collective and store operation of the training process group: a rank whose peer host vanished
  (power loss, network partition: no TCP reset ever arrives) fails after this long instead of
  waiting forever. A peer process that dies while its host stays up closes its sockets, and the
  survivors fail at their next collective, within a second. The value must exceed the longest
  wait a healthy run has at a barrier: rank 0 converting the best checkpoint to ``model.pt``
  while the others wait, a slow checkpoint write.
* :func:`peer_lost_error` turns what gloo / NCCL / the TCP store raise when a peer is gone into
  :class:`PeerLostError`, a ``ConnectionError`` (so ``kuaihl train`` prints it as one line and
  exits 1) that names this rank, the step reached and what to do: restart every host with
  ``--resume``.
"""

from __future__ import annotations

import datetime
import os
import re
import socket
from typing import Optional

import torch
import torch.distributed as dist

TIMEOUT_ENV = "KUAIHL_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800.0

# What the backends say when a peer is gone (gloo's TCP pair, NCCL's watchdog, the c10d store).
_PEER_GONE = re.compile(
    r"connection closed by peer|connection reset by peer|broken pipe|timed out|timeout|"
    r"nccl communicator was aborted|connection refused|no route to host",
    re.IGNORECASE,
)


class PeerLostError(ConnectionError):
    """Another rank stopped answering (its process died, its host or the network went away)."""


def dist_timeout() -> datetime.timedelta:
    """The process group's timeout from ``KUAIHL_DIST_TIMEOUT_S`` (a positive number of seconds)."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return datetime.timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise ValueError(f"{TIMEOUT_ENV}={text!r}: expected a positive number of seconds, e.g. {TIMEOUT_ENV}=300")
    return datetime.timedelta(seconds=seconds)


def _dist_failure(exc: BaseException) -> Optional[BaseException]:
    """The backend error in ``exc``'s chain of causes (a checkpoint write wraps one in an OSError), or None."""
    dist_error = getattr(dist, "DistError", ())
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, dist_error) or (isinstance(exc, RuntimeError) and _PEER_GONE.search(str(exc))):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def peer_lost_error(exc: BaseException, step: Optional[int]) -> Optional[PeerLostError]:
    """A :class:`PeerLostError` for ``exc`` when it (or its cause) says a peer is gone in a multi-rank run."""
    if not dist.is_initialized() or dist.get_world_size() <= 1 or isinstance(exc, PeerLostError):
        return None
    failure = _dist_failure(exc)
    if failure is None:
        return None
    first_line = next((line.strip() for line in str(failure).splitlines() if line.strip()), type(failure).__name__)
    where = "before the first step" if not step else f"after step {step}"
    timeout = dist_timeout().total_seconds()
    return PeerLostError(
        f"rank {dist.get_rank()} of {dist.get_world_size()} lost contact with the other ranks {where} "
        f"({type(failure).__name__}: {first_line[:300]}); a peer process died or its host or network went away "
        f"(collectives time out after {TIMEOUT_ENV}={timeout:g} s). Restart the same command on every host "
        "with --resume to continue from the last checkpoint"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> torch.device:
    """Join torchrun's group (RANK/WORLD_SIZE set) or start a private one-rank group; returns the device."""
    cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        backend = "nccl" if cuda else "gloo"
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            dist.init_process_group(backend=backend, timeout=dist_timeout())
        else:
            init = f"tcp://127.0.0.1:{_free_port()}"
            dist.init_process_group(backend=backend, init_method=init, rank=0, world_size=1, timeout=dist_timeout())
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")
