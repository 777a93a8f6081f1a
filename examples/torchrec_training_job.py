"""Plug ContentCTR into *your own* TorchRec training loop: your KJT, your DMP, your optimizer.

Run single-process, or on N ranks with ``torchrun --standalone --nproc_per_node=2 examples/torchrec_training_job.py``.
Your pipeline supplies, per window of n segments: visual and text features of each segment, the
streamer id as a KeyedJaggedTensor, and the next segment's label (here: random stand-ins).
"""

import argparse
import os

import torch
import torch.distributed as dist
from torchrec import KeyedJaggedTensor
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.sharding_plan import get_default_sharders
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from kuaihl_rec.data.batch import BatchSpec, LiveBatch
from kuaihl_rec.losses import ContentLoss
from kuaihl_rec.model import ContentCTR, build_streamer_embedding, content_config
from kuaihl_rec.train.wrapper import global_count


def my_batch(g: torch.Generator, spec: BatchSpec, b: int) -> LiveBatch:
    """Your data: b windows of n segments (here random; replace with your reader)."""
    n = spec.window
    streamers = torch.randint(1, spec.num_streamers, (b,), generator=g)
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["streamer_id"], values=streamers, lengths=torch.ones(b, dtype=torch.int32))
    ones = torch.ones(b, n, dtype=torch.bool)
    return LiveBatch(
        sparse_features=kjt,
        visual=torch.randn(b, n, spec.visual_tokens, spec.visual_dim, generator=g),
        text=torch.randn(b, n, spec.text_dim, generator=g),
        counters=torch.zeros(b, n, spec.n_counters),
        labels=torch.rand(b, n, generator=g),  # label of the NEXT segment at each position
        label_mask=ones, score_mask=ones, valid=ones,
        segment=torch.arange(n).repeat(b, 1), timestamp=torch.zeros(b, n, dtype=torch.long),
        streamer_raw=streamers, live_raw=torch.zeros(b, dtype=torch.long),
    )


class MyTrainModel(torch.nn.Module):
    """Your wrapper: the model returns logits, you own the loss (here the KuaiHL loss)."""

    def __init__(self, model: ContentCTR) -> None:
        super().__init__()
        self.model, self.loss = model, ContentLoss("kuaihl")
        self.loss.normalizer = global_count if dist.get_world_size() > 1 else None  # each term / its global count

    def forward(self, batch: LiveBatch):
        out = self.model.encode(batch)  # logits + projected text/visual sequences for the DTW loss
        return self.loss(out.logits, batch.labels, batch.label_mask, out.text_seq, out.visual_seq, batch.valid)["loss"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    else:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    rank, world = dist.get_rank(), dist.get_world_size()

    spec = BatchSpec(visual_tokens=1, visual_dim=64, text_dim=64, num_streamers=1000, num_lives=1, n_counters=10, window=20)
    cfg = content_config("small")
    torch.manual_seed(0)  # same initial weights on every rank
    model = MyTrainModel(ContentCTR(spec, cfg, build_streamer_embedding(spec, cfg)))

    # Your optimizer choice: row-wise Adagrad fused into the table's backward, AdamW for the rest.
    apply_optimizer_in_backward(RowWiseAdagrad, model.model.embedding_collection.parameters(), {"lr": 0.05})
    sharding = "row_wise" if world > 1 else "table_wise"
    planner = EmbeddingShardingPlanner(topology=Topology(world_size=world, compute_device="cpu"), constraints={"streamer": ParameterConstraints(sharding_types=[sharding])})
    plan = planner.collective_plan(model, get_default_sharders(), dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(model, device=torch.device("cpu"), plan=plan)
    dense = KeyedOptimizerWrapper(dict(in_backward_optimizer_filter(dmp.named_parameters())), lambda p: torch.optim.AdamW(p, lr=1e-3))
    opt = CombinedOptimizer([dmp.fused_optimizer, dense])

    g = torch.Generator().manual_seed(1 + rank)
    for step in range(args.steps):
        loss = dmp(my_batch(g, spec, b=16))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if rank == 0 and (step % 5 == 0 or step == args.steps - 1):
            print(f"step {step:3d}  loss {loss.item():.4f}  ({plan.plan['model.embedding_collection']['streamer'].sharding_type} table on {world} rank(s))")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
