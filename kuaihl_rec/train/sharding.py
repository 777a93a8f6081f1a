"""Sharding plans, DistributedModelParallel and the optimizers (docs/ENVIRONMENT.md section 3, "TorchRec on CPU").

* The topology comes from ``TopologyFactory.create_topology`` (torchrec >= 1.9) or ``Topology``
  (older torchrec, e.g. 1.6 on the GPU machine); the plan is always computed explicitly by
  ``EmbeddingShardingPlanner.collective_plan`` and passed to DMP.
* Constraints per table: ``EmbeddingCollection`` tables default to row-wise when there is more
  than one rank (table-wise otherwise); ``EmbeddingBagCollection`` tables to table-wise (row-wise
  bags are GPU-only in the CPU planner). A model may override with ``sharding_constraints()``.
* Memory: before anything is allocated, :func:`check_table_memory` compares the tables' full size
  (weights + optimizer state) with the machine's memory and refuses with a clear error.
* Optimizers: embedding tables are fused into the backward with row-wise Adagrad (the only fused
  optimizers on CPU are exact SGD, exact Adagrad and row-wise Adagrad; Adam is refused), dense
  parameters use AdamW with gradient-norm clipping; both are combined in one ``CombinedOptimizer``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Dict, Iterable, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
from torchrec.distributed.sharding_plan import get_default_sharders
from torchrec.distributed.types import ShardingPlan, ShardingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

logger = logging.getLogger(__name__)


# Share of each rank's memory the planner keeps free for dense parameters, activations and buffers.
STORAGE_RESERVATION = 0.15


class TableTooLargeError(RuntimeError):
    """The embedding tables would not fit in this machine's memory."""


def embedding_modules(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    return [
        (name, m) for name, m in model.named_modules() if isinstance(m, (EmbeddingCollection, EmbeddingBagCollection))
    ]


def table_configs(model: nn.Module):
    """(module kind, table config) of every embedding table in ``model``."""
    out = []
    for _, module in embedding_modules(model):
        kind = "bag" if isinstance(module, EmbeddingBagCollection) else "seq"
        for cfg in module.embedding_bag_configs() if kind == "bag" else module.embedding_configs():
            out.append((kind, cfg))
    return out


def default_constraints(model: nn.Module, world_size: int) -> Dict[str, ParameterConstraints]:
    """Per-table constraints (see the module docstring); a model's ``sharding_constraints()`` wins."""
    custom = model.sharding_constraints(world_size) if hasattr(model, "sharding_constraints") else {}
    constraints: Dict[str, ParameterConstraints] = {}
    for kind, cfg in table_configs(model):
        if cfg.name in custom:
            constraints[cfg.name] = custom[cfg.name]
        elif kind == "seq":
            st = ShardingType.ROW_WISE.value if world_size > 1 else ShardingType.TABLE_WISE.value
            constraints[cfg.name] = ParameterConstraints(sharding_types=[st])
        else:
            constraints[cfg.name] = ParameterConstraints(sharding_types=[ShardingType.TABLE_WISE.value])
    return constraints


def machine_memory_bytes() -> int:
    """Physical memory of this machine (``os.sysconf``), an upper bound for what tables may use."""
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check_table_memory(
    num_rows_dims: Iterable[Tuple[str, int, int]],
    world_size: int,
    memory_bytes: Optional[int] = None,
    share: float = 0.5,
) -> None:
    """Refuse, before allocating anything, tables whose per-rank size exceeds ``share`` of memory.

    ``num_rows_dims``: (table name, rows, dim). The per-rank estimate assumes even row-wise
    sharding plus row-wise Adagrad state (one float per row).
    """
    memory_bytes = memory_bytes or machine_memory_bytes()
    tables = list(num_rows_dims)
    need = sum(rows * (dim + 1) * 4 for _, rows, dim in tables) / max(world_size, 1)
    if need > share * memory_bytes:
        biggest = max(tables, key=lambda t: t[1] * t[2])
        raise TableTooLargeError(
            f"embedding tables need about {need / 2**30:.1f} GiB per rank (largest: '{biggest[0]}' with "
            f"{biggest[1]:,} rows x {biggest[2]}), more than {share:.0%} of this machine's "
            f"{memory_bytes / 2**30:.1f} GiB; use more ranks, a smaller table or a hashed id space"
        )


def make_topology(
    world_size: int,
    compute_device: str,
    ddr_cap_bytes: Optional[int] = None,
    hbm_cap_bytes: Optional[int] = None,
    local_world_size: Optional[int] = None,
) -> Topology:
    """The planner topology: ``TopologyFactory`` where torchrec has it (>= 1.9), else ``Topology``.

    ``local_world_size`` defaults to ``LOCAL_WORLD_SIZE`` (set by torchrun), else ``world_size``.
    """
    local = local_world_size or int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    try:
        from torchrec.distributed.planner.types import HardwareConfig, KernelConfig, TopologyFactory, TrainerConfig
    except ImportError:
        kwargs = {"world_size": world_size, "compute_device": compute_device, "local_world_size": local}
        if ddr_cap_bytes:
            kwargs["ddr_cap"] = ddr_cap_bytes
        if hbm_cap_bytes:
            kwargs["hbm_cap"] = hbm_cap_bytes
        return Topology(**kwargs)
    trainer = TrainerConfig(
        world_size=world_size, local_world_size=local, ddr_cap_bytes=ddr_cap_bytes, hbm_cap_bytes=hbm_cap_bytes
    )
    return TopologyFactory.create_topology(
        trainer_config=trainer,
        hardware_config=HardwareConfig(),
        kernel_config=KernelConfig(compute_device=compute_device),
    )


def plan_sharding(model: nn.Module, world_size: int, device: torch.device, pg=None) -> ShardingPlan:
    """An explicit sharding plan for every table of ``model`` (collective when a group is given)."""
    topology = make_topology(
        world_size,
        device.type,
        ddr_cap_bytes=machine_memory_bytes() // max(int(os.environ.get("LOCAL_WORLD_SIZE", world_size)), 1),
    )
    planner = EmbeddingShardingPlanner(
        topology=topology,
        constraints=default_constraints(model, world_size),
        storage_reservation=FixedPercentageStorageReservation(STORAGE_RESERVATION),
        debug=False,
    )
    sharders = get_default_sharders()
    if dist.is_initialized():
        return planner.collective_plan(model, sharders, pg)
    return planner.plan(model, sharders)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Dense AdamW + fused row-wise Adagrad for tables."""

    lr: float = 1e-3
    weight_decay: float = 0.01
    sparse_lr: float = 0.05
    sparse_eps: float = 1e-8
    grad_clip: float = 1.0


class ClippedAdamW(torch.optim.AdamW):
    """AdamW that clips the global gradient norm of its parameters before each step.

    Clipping here (not in the loop) keeps it inside ``TrainPipelineSparseDist``'s step. Dense
    gradients are already all-reduced by DDP, so every rank clips the same norm. Fused embedding
    tables update in the backward and are not clipped.
    """

    def __init__(self, params, max_norm: float = 1.0, **kwargs):
        super().__init__(params, **kwargs)
        self.max_norm = max_norm

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102
        if self.max_norm and self.max_norm > 0:
            params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
            if params:
                torch.nn.utils.clip_grad_norm_(params, self.max_norm)
        return super().step(closure)


def fuse_table_optimizer(model: nn.Module, cfg: OptimConfig) -> None:
    """Attach row-wise Adagrad to every embedding table (fused into the backward once sharded)."""
    for _, module in embedding_modules(model):
        apply_optimizer_in_backward(RowWiseAdagrad, module.parameters(), {"lr": cfg.sparse_lr, "eps": cfg.sparse_eps})


def wrap_model(model: nn.Module, device: torch.device, pg=None) -> DistributedModelParallel:
    """DMP with an explicit plan; tables are materialised on ``device``."""
    world_size = dist.get_world_size(pg) if dist.is_initialized() else 1
    check_table_memory(
        [(cfg.name, cfg.num_embeddings, cfg.embedding_dim) for _, cfg in table_configs(model)], world_size
    )
    plan = plan_sharding(model, world_size, device, pg)
    return DistributedModelParallel(module=model, device=device, plan=plan)


def _encoder_groups(dmp: nn.Module, params: List[torch.Tensor], lr: float) -> List[dict]:
    """AdamW parameter groups: the encoders of a module with ``encoder_lr`` set (the end-to-end content
    model's featurizer) get that learning rate, every other dense parameter ``lr``."""
    encoder: Dict[int, float] = {}
    for module in dmp.modules():
        if getattr(module, "encoder_lr", None) is not None:
            encoder.update({id(p): float(module.encoder_lr) for p in module.parameters()})
    rest = [p for p in params if id(p) not in encoder]
    groups = [{"params": rest, "lr": lr}] if rest else []
    for enc_lr in sorted(set(encoder.values())):
        own = [p for p in params if encoder.get(id(p)) == enc_lr]
        if own:
            groups.append({"params": own, "lr": enc_lr})
    return groups


def build_optimizer(dmp: DistributedModelParallel, cfg: OptimConfig) -> CombinedOptimizer:
    dense = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    dense_opt = KeyedOptimizerWrapper(
        dense,
        lambda params: ClippedAdamW(
            _encoder_groups(dmp, params, cfg.lr), max_norm=cfg.grad_clip, lr=cfg.lr, weight_decay=cfg.weight_decay
        ),
    )
    return CombinedOptimizer([dmp.fused_optimizer, dense_opt])


def dense_param_groups(optimizer: CombinedOptimizer) -> List[dict]:
    """The param groups of the dense (AdamW) optimizer, for the learning-rate schedule."""
    groups = []
    for _, opt in optimizer.optimizers:
        if isinstance(opt, KeyedOptimizerWrapper):
            groups.extend(opt.param_groups)
    return groups
