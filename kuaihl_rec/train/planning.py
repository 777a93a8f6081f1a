"""Sharding plans at platform size without allocating the tables (``kuaihl plan``, docs/DISTRIBUTED.md).

The model is built from the registry under ``FakeTensorMode``: every parameter, the 10M-row
streamer table included, has its shape and dtype but no memory. The trainer's own choices are
applied to it (row-wise Adagrad fused into the tables, :func:`~kuaihl_rec.train.sharding.default_constraints`,
the same storage reservation), and TorchRec's ``EmbeddingShardingPlanner`` plans it for the given
topology. The result per rank is TorchRec's storage estimate of the shards placed there
(weights, the optimizer state the planner counts, input/output buffers), next to the
replicated dense part: parameters x 16 bytes (fp32 weight, gradient and AdamW's two moments).
Activations are not estimated: they are what the planner's reservation
(:data:`~kuaihl_rec.train.sharding.STORAGE_RESERVATION` of each rank) is kept for.

A topology whose memory cannot hold the tables is refused with :class:`PlanDoesNotFitError`,
naming the table size, the memory per rank and the fewest ranks that would hold it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torchrec.distributed.planner import EmbeddingShardingPlanner
from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
from torchrec.distributed.planner.types import PlannerError, Stats
from torchrec.distributed.sharding_plan import get_default_sharders

from kuaihl_rec.data.batch import BatchSpec
from kuaihl_rec.data.schema import COUNTER_COLUMNS
from kuaihl_rec.model import create_model
from kuaihl_rec.train.config import train_config
from kuaihl_rec.train.sharding import (
    STORAGE_RESERVATION, default_constraints, fuse_table_optimizer, make_topology, table_configs,
)

GIB = 2**30
DENSE_BYTES_PER_PARAM = 16  # fp32 weight + gradient + AdamW exp_avg + exp_avg_sq
N_COUNTERS = len(COUNTER_COLUMNS)  # engagement counters per segment


class PlanDoesNotFitError(ValueError):
    """The tables (plus the reservation) do not fit in the topology's memory."""


@dataclasses.dataclass(frozen=True)
class PlanRequest:
    """What to plan: a registered model at a training preset, table sizes and a topology.

    streamers, lives          rows of the streamer / live-id tables (the unknown row 0 is added)
    world_size                ranks in all; ``local_world_size`` ranks per host
    compute_device            "cuda" (tables in HBM) or "cpu" (tables in DDR)
    hbm_gib, ddr_gib          memory per rank
    batch_size                global batch (None: the training preset's), split over ranks
    visual_tokens, visual_dim, text_dim   feature sizes per segment (default: the paper's
                              3 x 512 visual tokens and a 768-d text vector)
    """

    streamers: int
    world_size: int
    model: str = "content"
    preset: str = "paper"
    lives: Optional[int] = None
    local_world_size: int = 8
    compute_device: str = "cuda"
    hbm_gib: float = 80.0
    ddr_gib: float = 128.0
    batch_size: Optional[int] = None
    visual_tokens: int = 3
    visual_dim: int = 512
    text_dim: int = 768

    def __post_init__(self) -> None:
        for name in ("streamers", "world_size", "local_world_size", "visual_tokens", "visual_dim", "text_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.compute_device not in ("cuda", "cpu"):
            raise ValueError(f"compute_device must be 'cuda' or 'cpu', got {self.compute_device!r}")
        if not (self.hbm_gib > 0 and self.ddr_gib > 0):
            raise ValueError(f"hbm_gib and ddr_gib must be > 0, got {self.hbm_gib} and {self.ddr_gib}")

    @property
    def memory_kind(self) -> str:
        return "HBM" if self.compute_device == "cuda" else "DDR"

    @property
    def memory_bytes(self) -> int:
        return int((self.hbm_gib if self.compute_device == "cuda" else self.ddr_gib) * GIB)


@dataclasses.dataclass
class ShardRow:
    table: str
    sharding_type: str
    kernel: str
    rank: int
    offsets: List[int]
    sizes: List[int]
    hbm_bytes: int
    ddr_bytes: int


@dataclasses.dataclass
class PlanReport:
    request: PlanRequest
    tables: List[Dict[str, object]]  # name, rows, dim, bytes (fp32 weights)
    shards: List[ShardRow]
    dense_params: int
    per_rank_batch: int
    plan_text: str

    def rank_bytes(self, rank: int) -> Dict[str, int]:
        rows = [s for s in self.shards if s.rank == rank]
        return {"hbm": sum(s.hbm_bytes for s in rows), "ddr": sum(s.ddr_bytes for s in rows), "shards": len(rows)}

    @property
    def dense_bytes(self) -> int:
        return self.dense_params * DENSE_BYTES_PER_PARAM


class _CaptureStats(Stats):
    """A planner ``Stats`` that keeps the chosen sharding options (TorchRec's per-shard storage)."""

    def __init__(self) -> None:
        self.best_plan: list = []

    def log(self, *args, **kwargs) -> None:  # noqa: D102 (the Stats protocol; signature varies by version)
        self.best_plan = list(kwargs.get("best_plan") or (args[7] if len(args) > 7 else []))


def fake_model(req: PlanRequest) -> nn.Module:
    """The registered model at ``req``'s sizes with fake (unallocated) parameters and the trainer's
    fused row-wise Adagrad on its tables."""
    cfg = train_config(req.preset, model=req.model)
    spec = BatchSpec(
        visual_tokens=req.visual_tokens, visual_dim=req.visual_dim, text_dim=req.text_dim,
        num_streamers=req.streamers + 1, num_lives=(req.lives or req.streamers) + 1,
        n_counters=N_COUNTERS, window=cfg.data.window,
    )
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = create_model(cfg.model.name, spec, **cfg.overrides)
        fuse_table_optimizer(model, cfg.optim)
    return model


def _min_ranks(table_bytes: int, per_rank: float) -> int:
    return max(1, math.ceil(table_bytes / per_rank)) if per_rank > 0 else -1


def plan_at_scale(req: PlanRequest) -> PlanReport:
    """TorchRec's sharding plan for ``req`` (nothing allocated); refuses one that does not fit."""
    model = fake_model(req)
    cfg = train_config(req.preset, model=req.model)
    global_batch = req.batch_size or cfg.batch_size
    per_rank_batch = max(global_batch // req.world_size, 1)
    tables = [
        {"name": c.name, "rows": c.num_embeddings, "dim": c.embedding_dim,
         "bytes": c.num_embeddings * c.embedding_dim * 4}
        for _, c in table_configs(model)
    ]
    topology = make_topology(
        req.world_size, req.compute_device, ddr_cap_bytes=int(req.ddr_gib * GIB),
        hbm_cap_bytes=int(req.hbm_gib * GIB) if req.compute_device == "cuda" else None,
        local_world_size=min(req.local_world_size, req.world_size),
    )
    capture = _CaptureStats()
    planner = EmbeddingShardingPlanner(
        topology=topology,
        batch_size=per_rank_batch,
        constraints=default_constraints(model, req.world_size),
        storage_reservation=FixedPercentageStorageReservation(STORAGE_RESERVATION),
        stats=[capture],
        debug=False,
    )
    try:
        plan = planner.plan(model, get_default_sharders())
    except PlannerError as exc:
        raise _does_not_fit(req, tables, exc) from exc
    shards = [
        ShardRow(
            table=opt.name, sharding_type=opt.sharding_type, kernel=opt.compute_kernel, rank=int(s.rank),
            offsets=list(s.offset), sizes=list(s.size), hbm_bytes=int(s.storage.hbm), ddr_bytes=int(s.storage.ddr),
        )
        for opt in capture.best_plan for s in opt.shards
    ]
    dense = sum(p.numel() for n, p in model.named_parameters() if not _in_table(n, tables))
    return PlanReport(req, tables, shards, dense, per_rank_batch, str(plan))


def _in_table(param_name: str, tables: List[Dict[str, object]]) -> bool:
    return any(f".{t['name']}.weight" in f".{param_name}" for t in tables)


def _does_not_fit(req: PlanRequest, tables: List[Dict[str, object]], exc: Exception) -> PlanDoesNotFitError:
    total = sum(int(t["bytes"]) + int(t["rows"]) * 4 for t in tables)  # weights + row-wise Adagrad state
    usable = req.memory_bytes * (1 - STORAGE_RESERVATION)
    biggest = max(tables, key=lambda t: int(t["bytes"]))
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return PlanDoesNotFitError(
        f"the tables do not fit: {total / GIB:.1f} GiB of weights + row-wise Adagrad state (largest: "
        f"'{biggest['name']}' {int(biggest['rows']):,} x {biggest['dim']}), i.e. {total / req.world_size / GIB:.2f} "
        f"GiB per rank on {req.world_size} ranks, but each rank has {req.memory_bytes / GIB:.1f} GiB "
        f"{req.memory_kind} of which {usable / GIB:.1f} GiB is left after the {STORAGE_RESERVATION:.0%} reservation; "
        f"needs at least {_min_ranks(total, usable)} ranks of this size, or more memory per rank"
        + (f" (the {req.ddr_gib:g} GiB DDR per rank is too small for TorchRec's UVM-cached tables as well) "
           if req.compute_device == "cuda" else " ")
        + 
        f"(TorchRec planner: {first[:200]})"
    )


def format_report(report: PlanReport, full: bool = False) -> str:
    """The plan as text: request, tables, the plan per table (TorchRec's own tables too when ``full``),
    memory per rank (ranks with the same figures merged)."""
    req = report.request
    per_host = min(req.local_world_size, req.world_size)
    lines = [
        f"plan: model {req.model}, preset {req.preset}, {req.world_size} ranks ({per_host}"
        f" per host), compute device {req.compute_device}, {req.hbm_gib:g} GiB HBM and {req.ddr_gib:g} GiB DDR per "
        f"rank, per-rank batch {report.per_rank_batch}",
    ]
    for t in report.tables:
        rows = [s for s in report.shards if s.table == t["name"]]
        sizes: Dict[str, int] = {}
        for s in rows:
            key = " x ".join(f"{v:,}" for v in s.sizes)
            sizes[key] = sizes.get(key, 0) + 1
        shown = ", ".join(f"{n} x [{k}]" for k, n in sizes.items())
        kinds = sorted({(s.sharding_type, s.kernel) for s in rows})
        lines.append(
            f"table {t['name']}: {int(t['rows']):,} rows x {t['dim']} fp32 = {int(t['bytes']) / GIB:.2f} GiB; "
            + "; ".join(f"{st}, kernel {k}" for st, k in kinds)
            + f"; {len(rows)} shard(s): {shown} on {_ranks_text(sorted({s.rank for s in rows}))}"
        )
    lines.append(f"dense parameters (replicated on every rank): {report.dense_params:,} = "
                 f"{report.dense_bytes / GIB:.3f} GiB with gradients and AdamW state")
    if full:
        lines += ["TorchRec's plan:"] + ["  " + line for line in report.plan_text.strip().splitlines()]
    dense_on = "hbm" if req.compute_device == "cuda" else "ddr"
    caps = {"hbm": req.hbm_gib * GIB, "ddr": req.ddr_gib * GIB}
    lines.append(f"memory per rank (TorchRec's estimate of the shards + dense; {STORAGE_RESERVATION:.0%} of "
                 f"{req.memory_kind} reserved for activations):")
    groups: Dict[str, List[int]] = {}
    for rank in range(req.world_size):
        b = report.rank_bytes(rank)
        b[dense_on] += report.dense_bytes
        text = ", ".join(
            f"{kind.upper()} {b[kind] / GIB:.3f} GiB of {caps[kind] / GIB:g} ({100 * b[kind] / caps[kind]:.1f} %)"
            for kind in ("hbm", "ddr") if req.compute_device == "cuda" or kind == "ddr"
        )
        groups.setdefault(f"{b['shards']} table shard(s), {text}", []).append(rank)
    for text, ranks in groups.items():
        lines.append(f"  {_ranks_text(ranks)}: {text}")
    return "\n".join(lines)


def _ranks_text(ranks: List[int]) -> str:
    return f"{'rank' if len(ranks) == 1 else 'ranks'} {_ranges(ranks)}"


def _ranges(ranks: List[int]) -> str:
    """"0-6, 9" for [0, 1, 2, 3, 4, 5, 6, 9]."""
    if not ranks:
        return "none"
    out, start = [], ranks[0]
    for prev, cur in zip(ranks, ranks[1:] + [None]):
        if cur is None or cur != prev + 1:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = cur
    return ", ".join(out)
