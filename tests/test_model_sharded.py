"""The content model inside DistributedModelParallel with its streamer table sharded row-wise over
2 CPU ranks (gloo) equals the unsharded model: same logits, and after one SGD step (fused exact
SGD on the table, DDP-averaged SGD on the dense part) the same table rows and the same logits.

Each rank runs its half of a global batch; the unsharded reference runs the whole batch with the
mean of the two halves' losses, which is what gradient averaging over ranks computes.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import traceback

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

WORLD = 2
LR = 0.1
TIMEOUT_S = 150
PER_RANK = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    from helpers import make_table
    from kuaihl_rec.data import BatchSpec, FeatureSizes, SegmentArrays, WindowConfig, window_splits

    sizes = FeatureSizes(visual_tokens=1, visual_dim=5, text_dim=3)
    table = make_table(room_lengths=(30, 6, 25, 12), sizes=sizes)
    cfg = WindowConfig(window=8, min_viewers=0)
    split = window_splits(SegmentArrays.from_table(table, sizes, cfg), cfg, {"train": "train"})["train"]
    # a larger table than the 3 streamers in the data, so each rank holds several rows
    spec = dataclasses.replace(BatchSpec.of(split), num_streamers=11)
    # 4 windows from different rooms (one right-padded): rank r gets windows [2r, 2r + 1]
    starts = np.flatnonzero(np.r_[True, np.diff(split.arr.live_id[split.index.first_row]) != 0])
    windows = np.array([starts[0], starts[1], starts[2], starts[3]])
    return spec, split, windows


def _loss(logits: torch.Tensor, batch) -> torch.Tensor:
    w = batch.label_mask.float()
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels, weight=w, reduction="sum") / w.sum()


def _worker(rank: int, port: int, name: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    import torch.distributed as dist
    from torchrec.distributed.embedding import EmbeddingCollectionSharder
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
    from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
    from torchrec.distributed.types import ShardingEnv, ShardingType
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.keyed import KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    from kuaihl_rec.model import STREAMER_TABLE, create_model

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        spec, split, windows = _data()
        global_batch = split.batch(windows)
        local_batch = split.batch(windows[rank * PER_RANK : (rank + 1) * PER_RANK])

        torch.manual_seed(0)
        reference = create_model(name, spec, dropout=0.0)
        torch.manual_seed(0)
        model = create_model(name, spec, dropout=0.0)
        for p_ref, p in zip(reference.parameters(), model.parameters()):
            assert torch.equal(p_ref, p)

        # Reference step on the global batch: mean of the ranks' local mean losses.
        ref_logits = reference(global_batch)
        halves = [_loss(ref_logits[r * PER_RANK : (r + 1) * PER_RANK], global_batch.select(torch.arange(r * PER_RANK, (r + 1) * PER_RANK))) for r in range(WORLD)]
        (sum(halves) / WORLD).backward()
        with torch.no_grad():
            for p in reference.parameters():
                p -= LR * p.grad
            ref_after = reference(global_batch)

        # Sharded model: table row-wise over the 2 ranks, fused exact SGD on the table.
        apply_optimizer_in_backward(torch.optim.SGD, model.embedding_collection.parameters(), {"lr": LR})
        try:
            from torchrec.distributed.planner.types import KernelConfig, TopologyFactory, TrainerConfig

            topology = TopologyFactory.create_topology(
                TrainerConfig(world_size=WORLD, local_world_size=WORLD), kernel_config=KernelConfig(compute_device="cpu")
            )
        except ImportError:  # torchrec < 1.9
            from torchrec.distributed.planner import Topology

            topology = Topology(world_size=WORLD, compute_device="cpu")
        planner = EmbeddingShardingPlanner(
            topology=topology,
            constraints={STREAMER_TABLE: ParameterConstraints(sharding_types=[ShardingType.ROW_WISE.value])},
            storage_reservation=FixedPercentageStorageReservation(0.15),
        )
        pg = dist.group.WORLD
        sharders = [EmbeddingCollectionSharder()]
        plan = planner.collective_plan(model, sharders, pg)
        param_plan = plan.get_plan_for_module("embedding_collection")[STREAMER_TABLE]
        assert param_plan.sharding_type == ShardingType.ROW_WISE.value, param_plan
        dmp = DistributedModelParallel(
            model, env=ShardingEnv.from_process_group(pg), device=torch.device("cpu"), plan=plan, sharders=sharders
        )
        dense_opt = KeyedOptimizerWrapper(dict(in_backward_optimizer_filter(dmp.named_parameters())), lambda ps: torch.optim.SGD(ps, lr=LR))

        logits = dmp(local_batch)
        mine = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        torch.testing.assert_close(logits, ref_logits[mine].detach(), rtol=1e-6, atol=1e-6)
        _loss(logits, local_batch).backward()  # the table steps inside backward (fused SGD)
        dense_opt.step()
        with torch.no_grad():
            torch.testing.assert_close(dmp(local_batch), ref_after[mine], rtol=1e-6, atol=1e-6)

        # Table rows after the step: each rank's row-wise shard equals the reference rows.
        sharded = dmp.state_dict()[f"embedding_collection.embeddings.{STREAMER_TABLE}.weight"]
        full = reference.embedding_collection.embeddings[STREAMER_TABLE].weight.detach()
        shards = sharded.local_shards()
        assert len(shards) == 1 and shards[0].metadata.shard_sizes[0] < spec.num_streamers  # really split
        for shard in shards:
            r0, c0 = shard.metadata.shard_offsets
            rows, cols = shard.metadata.shard_sizes
            torch.testing.assert_close(shard.tensor, full[r0 : r0 + rows, c0 : c0 + cols], rtol=1e-6, atol=1e-6)
        # rows read by the batch really moved
        assert not torch.equal(full, create_model_table(name, spec))
        dist.barrier()
    except Exception:
        traceback.print_exc()
        raise
    finally:
        dist.destroy_process_group()


def create_model_table(name: str, spec) -> torch.Tensor:
    from kuaihl_rec.model import STREAMER_TABLE, create_model

    torch.manual_seed(0)
    return create_model(name, spec, dropout=0.0).embedding_collection.embeddings[STREAMER_TABLE].weight.detach()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kuaihl"])
def test_sharded_equals_unsharded(name, monkeypatch):
    pytest.importorskip("fbgemm_gpu")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the spawned ranks before torch starts
    ctx = mp.start_processes(_worker, args=(_free_port(), name), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ctx.join(timeout=max(1.0, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                pytest.fail(f"sharded test did not finish within {TIMEOUT_S} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
