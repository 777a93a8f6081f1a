"""GPU check (run through ``bench/gpu_check.sh``): the ``paper`` preset trained for a fixed number of
steps in bf16 on precomputed ("frozen") segment features, on one device, tables unsharded.

Prints, for the paper's feature sizes (3 x 512 visual tokens + a 768-d text vector per segment):

* the data path alone: windows/s that ``WindowedSplit.batch`` builds on the host (gather of
  windows into a ``LiveBatch``), and with the copy to the device;
* training: samples/s of full steps (batch from the data path -> device -> forward under bf16
  autocast -> loss -> backward -> AdamW), the median over the measured steps;
* model FLOP utilisation: FLOPs of one training step counted by ``torch.utils.flop_counter``
  (forward + backward) x steps/s / the device's dense bf16 peak (``--peak-tflops``; known for
  H100 / H200 / A100, else not computed);
* peak device memory (``torch.cuda.max_memory_allocated``; on CPU the process's peak RSS).

Unsharded on purpose: the GPU machine has no CUDA fbgemm (docs/DISTRIBUTED.md), so the streamer
table is a plain TorchRec ``EmbeddingCollection`` on the device and every parameter trains with
AdamW (the sharded trainer's fused row-wise Adagrad needs fbgemm's CUDA kernels). The world is
synthetic (``kuaihl_rec.data.world``, ``default`` preset with fewer rooms and the paper's
feature sizes): the figures are throughput, not model quality.

``--device cpu --steps 3`` runs the same code on the CPU to check it (the figures then mean nothing).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from kuaihl_rec.data.world import generate_world, write_world
from kuaihl_rec.data.world_config import load_world_config
from kuaihl_rec.losses import ContentLoss
from kuaihl_rec.train.config import train_config
from kuaihl_rec.train.loop import build_model, load_run_data, loss_preset_for
from kuaihl_rec.train.wrapper import TrainWrapper

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def peak_tflops(device: torch.device, given: Optional[float]) -> Optional[float]:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def make_world(out: Path, rooms: int) -> Path:
    """A synthetic world with the paper's feature sizes, written to ``out``."""
    cfg = load_world_config(preset="default", n_rooms=rooms, n_streamers=max(rooms // 6, 10), visual_tokens=3,
                            visual_dim=512, text_dim=768)
    write_world(generate_world(cfg), out, figure=False)
    return out


def data_path_rate(split, batch: int, n_batches: int, device: torch.device, seed: int = 0) -> Dict[str, float]:
    """Windows/s of building batches on the host, then of building + copying them to ``device``."""
    rng = np.random.default_rng(seed)
    idx = [rng.choice(len(split), batch, replace=False) for _ in range(n_batches)]
    t0 = time.perf_counter()
    for i in idx:
        split.batch(i)
    host = n_batches * batch / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in idx:
        b = split.batch(i).to(device, non_blocking=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    del b
    return {"host": host, "to_device": n_batches * batch / (time.perf_counter() - t0)}


def train_steps(wrapper, opt, split, batch: int, steps: int, warmup: int, device: torch.device) -> List[float]:
    """Seconds of each measured training step (data path included)."""
    rng = np.random.default_rng(1)
    times: List[float] = []
    for k in range(warmup + steps):
        t0 = time.perf_counter()
        b = split.batch(rng.choice(len(split), batch, replace=False)).to(device, non_blocking=True)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            loss, _ = wrapper(b)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if k >= warmup:
            times.append(time.perf_counter() - t0)
        if k == warmup - 1 and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
    return times


def step_flops(wrapper, split, batch: int, device: torch.device) -> int:
    """FLOPs of one forward + backward (``torch.utils.flop_counter``: matmuls, attention, convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    b = split.batch(np.arange(batch)).to(device)
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            loss, _ = wrapper(b)
        loss.backward()
    wrapper.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run of the code path)")
    p.add_argument("--steps", type=int, default=200, help="measured training steps (default 200)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch", type=int, default=None, help="batch (default: the paper preset's 48)")
    p.add_argument("--rooms", type=int, default=200, help="rooms of the synthetic world (default 200, ~24k segments)")
    p.add_argument("--data-batches", type=int, default=200, help="batches timed for the data path alone")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, for MFU")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; use --device cpu --steps 3 for a dry run", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    t_start = time.perf_counter()
    cfg = train_config("paper")
    batch = args.batch or cfg.batch_size
    with tempfile.TemporaryDirectory(prefix="kuaihl-gpu-check-") as tmp:
        t0 = time.perf_counter()
        data = load_run_data(make_world(Path(tmp) / "world", args.rooms), cfg)
        print(f"world: {len(data.train):,} training windows of {cfg.data.window} segments, features "
              f"{data.spec.visual_tokens} x {data.spec.visual_dim} visual + {data.spec.text_dim} text "
              f"(synthetic), ready in {time.perf_counter() - t0:.1f} s")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run: the figures mean nothing)"
    print(f"device: {name}; torch {torch.__version__}; batch {batch}; bf16 autocast; tables unsharded")
    rate = data_path_rate(data.train, batch, args.data_batches if device.type == "cuda" else 3, device)
    print(f"data path: {rate['host']:,.0f} windows/s built on the host, {rate['to_device']:,.0f} windows/s "
          "built and copied to the device")
    model = build_model(cfg, data.spec).to(device)
    wrapper = TrainWrapper(model, ContentLoss(loss_preset_for(cfg, model))).to(device)
    wrapper.train()
    n_params = sum(q.numel() for q in model.parameters())
    opt = torch.optim.AdamW(wrapper.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    flops = step_flops(wrapper, data.train, batch, device)
    times = train_steps(wrapper, opt, data.train, batch, args.steps, args.warmup, device)
    step_s = statistics.median(times)
    peak = peak_tflops(device, args.peak_tflops)
    mfu = f"{100 * flops / step_s / (peak * 1e12):.1f} % of {peak:g} TFLOP/s bf16" if peak else "n/a (no peak known)"
    if device.type == "cuda":
        mem = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB allocated on the device"
    else:
        mem = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB peak RSS of the process"
    print(f"train: paper preset ({n_params / 1e6:.1f} M parameters, loss {loss_preset_for(cfg, model)}), "
          f"{len(times)} steps: {batch / step_s:,.1f} samples/s (median step {1e3 * step_s:.1f} ms, "
          "data path included)")
    print(f"model FLOPs per step (forward + backward): {flops / 1e9:.1f} GFLOP; MFU {mfu}")
    print(f"peak memory: {mem}")
    print(f"gpu_check: done in {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
