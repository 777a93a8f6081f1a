"""``kuaihl train``: any registered model, sharded with DMP, single-process or under torchrun.

Per rank::

    init the process group (gloo on CPU, nccl on CUDA; a private 1-rank group when not launched by torchrun)
    read + validate the data directory; window train (train mode) and val (eval mode) splits
    build the model from the registry -> fuse row-wise Adagrad into its tables -> plan -> DMP
    TrainPipelineSparseDist over this rank's slice of every global batch
    each epoch: validation tau-b (all ranks score their shard, results are all-gathered),
    early stopping, checkpoint (DCP, atomic), metrics.jsonl, loss curve

Resume (``resume=True``): the newest complete checkpoint restores weights, optimizer state, RNG
states and the position in the epoch; data order is a function of (seed, epoch), so the resumed
run replays exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
import os
import platform
import socket
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np
import torch
import torch.distributed as dist

from kuaihl_rec.data.batch import BatchSpec, LiveBatch
from kuaihl_rec.data.io import DataError, atomic_write_bytes, atomic_write_json
from kuaihl_rec.data.validate import load_segments
from kuaihl_rec.data.windows import (
    SegmentArrays,
    WindowConfig,
    WindowedSplit,
    window_splits,
)
from kuaihl_rec.losses import ContentLoss
from kuaihl_rec.metrics import evaluate_segments
from kuaihl_rec.model import create_model
from kuaihl_rec.model.registry import model_info
from kuaihl_rec.train.checkpoint import (
    best_checkpoint,
    convert_to_single_file,
    latest_checkpoint,
    load_checkpoint,
    mark_best,
    save_checkpoint,
)
from kuaihl_rec.train.config import TrainConfig
from kuaihl_rec.train.sharding import (
    build_optimizer,
    dense_param_groups,
    embedding_modules,
    fuse_table_optimizer,
    wrap_model,
)
from kuaihl_rec.train.wrapper import TrainWrapper

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ process group


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
            dist.init_process_group(backend=backend)
        else:
            dist.init_process_group(backend=backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


# ------------------------------------------------------------------------------------ data


@dataclasses.dataclass
class RunData:
    train: WindowedSplit
    val: WindowedSplit
    spec: BatchSpec
    window_cfg: WindowConfig


def load_run_data(data_dir: Path, cfg: TrainConfig) -> RunData:
    """Validated windows of the train and val splits (every rank reads the same directory)."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise DataError(f"{data_dir}: the data directory does not exist (create one with `kuaihl world --out {data_dir}`)")
    table, sizes, report = load_segments(data_dir, min_viewers=cfg.min_viewers)
    wcfg = WindowConfig(window=cfg.window, stride=cfg.stride, min_viewers=cfg.min_viewers, label=cfg.label)
    arr = SegmentArrays.from_table(table, sizes, wcfg)
    splits = window_splits(arr, wcfg, {"train": "train", "val": "eval"})
    if len(splits["train"]) == 0:
        raise DataError(f"{data_dir}: no training windows (rooms per split: {report.splits}); is there a 'train' split?")
    if len(splits["val"]) == 0:
        logger.warning("%s: no validation rooms: early stopping falls back to the training loss", data_dir)
    return RunData(train=splits["train"], val=splits["val"], spec=BatchSpec.of(splits["train"]), window_cfg=wcfg)


def _global_batches(split: WindowedSplit, batch_size: int, seed: int, epoch: int, rank: int, world_size: int) -> List[np.ndarray]:
    """This rank's window indices for every full global batch of the epoch (drop_last: every rank
    runs the same number of steps, which sharded collectives require)."""
    order = np.random.default_rng([seed, epoch]).permutation(len(split))
    per_rank = batch_size // world_size
    n_batches = len(order) // (per_rank * world_size)
    out = []
    for k in range(n_batches):
        chunk = order[k * per_rank * world_size : (k + 1) * per_rank * world_size]
        out.append(chunk[rank * per_rank : (rank + 1) * per_rank])
    return out


# ------------------------------------------------------------------------------------ scoring


class PlainPipeline:
    """The ``progress`` contract of ``TrainPipelineSparseDist`` for models without embedding tables:
    next batch -> forward -> (training) zero_grad, backward, step -> the model's output."""

    def __init__(self, model: torch.nn.Module, optimizer, device: torch.device) -> None:
        self.model, self.optimizer, self.device = model, optimizer, device

    def progress(self, batches: Iterator[LiveBatch]):
        batch = next(batches).to(self.device)
        if self.model.training:
            self.optimizer.zero_grad()
        loss, output = self.model(batch)
        if self.model.training:
            loss.backward()
            self.optimizer.step()
        return output


def plain_scorer(model: torch.nn.Module) -> Callable[[Iterator[LiveBatch]], Iterator[torch.Tensor]]:
    """Logits of an ordinary (unsharded, or not pipelined) model, batch by batch."""

    def run(batches: Iterator[LiveBatch]) -> Iterator[torch.Tensor]:
        was = model.training
        model.eval()
        try:
            for batch in batches:
                yield model(batch)
        finally:
            model.train(was)

    return run


def pipeline_scorer(pipeline, dmp: torch.nn.Module) -> Callable[[Iterator[LiveBatch]], Iterator[torch.Tensor]]:
    """Logits through the training pipeline (its embedding modules are pipelined, so they can only be
    called through it); in eval mode the pipeline runs forward only and the wrapper skips the loss.
    Outputs come back in the order the batches went in."""

    def run(batches: Iterator[LiveBatch]) -> Iterator[torch.Tensor]:
        dmp.eval()
        try:
            while True:
                try:
                    _, logits, _ = pipeline.progress(batches)
                except StopIteration:
                    return
                yield logits
        finally:
            dmp.train()

    return run


@torch.no_grad()
def score_split(
    scorer: Callable[[Iterator[LiveBatch]], Iterator[torch.Tensor]],
    split: WindowedSplit,
    batch_size: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
) -> Dict[str, np.ndarray]:
    """Score every evaluation unit of ``split`` once (score_mask); all ranks take part and get all rows.

    Windows are padded to a multiple of ``batch_size * world_size`` (padding is scored and dropped)
    so every rank runs the same number of forwards. Returns flat arrays sorted by (live_id, segment):
    live_id, streamer_id, segment (the *target* segment), label, score (probability), logit.
    """
    from collections import deque

    from tqdm.auto import tqdm

    n = len(split)
    global_bs = batch_size * world_size
    n_steps = -(-n // global_bs) if n else 0
    padded = np.arange(n_steps * global_bs)
    keep_window = padded < n
    padded = np.where(keep_window, padded, 0)
    pending: deque = deque()

    def batches() -> Iterator[LiveBatch]:
        for k in range(n_steps):
            sl = slice(k * global_bs + rank * batch_size, k * global_bs + (rank + 1) * batch_size)
            batch = split.batch(padded[sl])
            keep = torch.from_numpy(keep_window[sl])[:, None]
            pending.append((batch, keep))
            yield batch.to(device)

    rows: Dict[str, List[np.ndarray]] = {k: [] for k in ("live_id", "streamer_id", "segment", "label", "logit")}
    bar = tqdm(total=n_steps, desc=f"score {split.index.stats.split}", unit="batch", leave=False, disable=not (progress and rank == 0))
    for logits in scorer(batches()):
        batch, keep = pending.popleft()
        logits = logits.float().cpu()
        w, i = torch.nonzero(batch.score_mask & keep, as_tuple=True)
        rows["live_id"].append(batch.live_raw[w].numpy())
        rows["streamer_id"].append(batch.streamer_raw[w].numpy())
        rows["segment"].append((batch.segment[w, i] + 1).numpy())
        rows["label"].append(batch.labels[w, i].numpy())
        rows["logit"].append(logits[w, i].numpy())
        bar.update(1)
    bar.close()
    local = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in rows.items()}
    if world_size > 1:
        gathered: List[Any] = [None] * world_size
        dist.all_gather_object(gathered, local)
        local = {k: np.concatenate([g[k] for g in gathered]) for k in local}
    order = np.lexsort((local["segment"], local["live_id"]))
    out = {k: v[order] for k, v in local.items()}
    out["score"] = 1.0 / (1.0 + np.exp(-out["logit"].astype(np.float64)))
    return out


# ------------------------------------------------------------------------------------ run directory


def versions() -> Dict[str, str]:
    import torchrec

    out = {"python": platform.python_version(), "torch": torch.__version__, "torchrec": getattr(torchrec, "__version__", "?"), "numpy": np.__version__}
    try:
        import fbgemm_gpu

        out["fbgemm_gpu"] = getattr(fbgemm_gpu, "__version__", "?")
    except ImportError:
        pass
    return out


def _truncate_jsonl(path: Path, key: str, last: int) -> None:
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)[key] <= last]
    atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())


def _lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / max(cfg.warmup_steps, 1)
    if cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(total - cfg.warmup_steps, 1))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _plot_losses(run_dir: Path, steps: List[Dict[str, float]], epochs: List[Dict[str, Any]]) -> None:
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
        b.plot([e["epoch"] for e in epochs], [e.get("val_tau", float("nan")) for e in epochs], "o-", label="val tau-b")
        b.set_xlabel("epoch")
        b.set_ylabel("Kendall tau-b (validation)")
        b.legend()
    fig.suptitle("training curves (synthetic data unless stated otherwise)", fontsize=9)
    fig.tight_layout()
    tmp = run_dir / ".loss_curve.png.tmp"
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    os.replace(tmp, run_dir / "loss_curve.png")


# ------------------------------------------------------------------------------------ training


def build_model(cfg: TrainConfig, spec: BatchSpec, seed: Optional[int] = None) -> torch.nn.Module:
    torch.manual_seed(cfg.seed if seed is None else seed)
    return create_model(cfg.model, spec, **cfg.overrides)


def loss_preset_for(cfg: TrainConfig, model: torch.nn.Module) -> str:
    """The loss preset of a run: the config's, else the model's registry entry's default."""
    return cfg.loss or model_info(cfg.model).default_loss


def train(
    data_dir: Path,
    run_dir: Path,
    cfg: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    stop_after_steps: Optional[int] = None,
) -> Dict[str, Any]:
    """Train on ``data_dir`` into ``run_dir`` (call on every rank). Returns the final summary.

    ``stop_after_steps`` ends the process abruptly after that many steps (``os._exit``), as a kill
    would; it exists so tests can interrupt a run mid-epoch and check ``resume``.
    """
    from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
    from tqdm.auto import tqdm


    device = init_distributed()
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if cfg.batch_size % world_size:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the number of ranks {world_size}")
    run_dir = Path(run_dir)
    ckpt_root = run_dir / "checkpoints"
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt_root.mkdir(exist_ok=True)
    dist.barrier()

    saved_cfg_path = run_dir / "config.json"
    if resume:
        if not saved_cfg_path.exists():
            raise FileNotFoundError(f"{saved_cfg_path}: --resume needs an earlier run in {run_dir}")
        saved = json.loads(saved_cfg_path.read_text())
        if saved["train"] != json.loads(json.dumps(cfg.to_dict())):
            diff = sorted(k for k in set(saved["train"]) | set(cfg.to_dict()) if saved["train"].get(k) != json.loads(json.dumps(cfg.to_dict())).get(k))
            raise ValueError(f"{saved_cfg_path}: the run was made with another config (differs in {diff}); resume with the same settings or use a new --out")

    data = load_run_data(Path(data_dir), cfg)
    model = build_model(cfg, data.spec)
    loss_name = loss_preset_for(cfg, model)
    wrapper = TrainWrapper(model, ContentLoss(loss_name), seed=cfg.seed + 1000 * rank)
    fuse_table_optimizer(wrapper, cfg.optim)
    # DMP re-initialises EmbeddingBagCollection tables when it shards them; load the seeded
    # initial weights back so a run's start does not depend on the number of ranks.
    initial = OrderedDict((k, v.detach().clone()) for k, v in wrapper.state_dict().items())
    dmp = wrap_model(wrapper, device)
    dmp.load_state_dict(initial)
    optimizer = build_optimizer(dmp, cfg.optim)
    dense_groups = dense_param_groups(optimizer)
    for g in dense_groups:
        g["initial_lr"] = g["lr"]

    steps_per_epoch = len(_global_batches(data.train, cfg.batch_size, cfg.seed, 0, rank, world_size))
    if steps_per_epoch == 0:
        raise DataError(f"{data_dir}: {len(data.train)} training windows is fewer than one global batch of {cfg.batch_size}")
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs

    if rank == 0 and not resume:
        atomic_write_json(saved_cfg_path, {
            "train": cfg.to_dict(), "loss": loss_name, "data": str(Path(data_dir).resolve()), "spec": dataclasses.asdict(data.spec),
            "window": dataclasses.asdict(data.window_cfg), "world_size": world_size, "versions": versions(), "seed": cfg.seed,
        })
        np.savez(run_dir / "vocab.npz", streamer=data.train.streamer_vocab.raw, live=data.train.live_vocab.raw)
        for f in ("metrics.jsonl", "steps.jsonl"):
            (run_dir / f).unlink(missing_ok=True)

    state: Dict[str, Any] = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "epoch_loss_sum": 0.0, "best_tau": -math.inf, "best_name": None, "bad_epochs": 0, "history": []}
    if resume:
        ckpt = latest_checkpoint(ckpt_root)
        if ckpt is None:
            logger.warning("%s: no checkpoint yet; starting from the beginning", ckpt_root)
        else:
            loaded = load_checkpoint(ckpt, dmp, optimizer)
            state.update({k: loaded["meta"][k] for k in state if k in loaded["meta"]})
            local = loaded["rank_local"]
            if "torch_rng" in local:
                torch.set_rng_state(local["torch_rng"])
                wrapper.generator.set_state(local["loss_rng"])
            logger.info("resumed from %s (step %d, epoch %d, batch %d)", ckpt, state["step"], state["epoch"], state["batch_in_epoch"])
            if rank == 0:  # forget what the killed run logged after its last checkpoint
                _truncate_jsonl(run_dir / "steps.jsonl", "step", state["step"])
                _truncate_jsonl(run_dir / "metrics.jsonl", "epoch", state["epoch"])

    def snapshot(name_step: int) -> Path:
        meta = {k: state[k] for k in state}
        local = {"torch_rng": torch.get_rng_state(), "loss_rng": wrapper.generator.get_state()}
        return save_checkpoint(ckpt_root, name_step, dmp, optimizer, meta, local, keep=cfg.keep_checkpoints)

    # pipeline_postproc lets the pipeline prefetch tables whose KJT a model builds in forward (the
    # ID baselines); torchrec versions without the option run those tables in place.
    extra = {"pipeline_postproc": True} if "pipeline_postproc" in inspect.signature(TrainPipelineSparseDist.__init__).parameters else {}
    if embedding_modules(wrapper):
        pipeline = TrainPipelineSparseDist(dmp, optimizer, device, **extra)
    else:  # no table to pipeline (e.g. SelfAttention-plain, content_no_id): TorchRec's tracer has nothing to do
        pipeline = PlainPipeline(dmp, optimizer, device)
    amp = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
    step_log = open(run_dir / "steps.jsonl", "a") if rank == 0 else None
    t_start = time.perf_counter()
    samples_seen = 0
    stopped_early = False
    try:
        while state["epoch"] < cfg.epochs and state["step"] < total_steps:
            epoch = state["epoch"]
            batches = _global_batches(data.train, cfg.batch_size, cfg.seed, epoch, rank, world_size)[state["batch_in_epoch"] :]
            # Never hand the pipeline more batches than the step budget: it then drains through
            # StopIteration and holds no prefetched training batch when validation runs.
            batches = batches[: max(total_steps - state["step"], 0)]
            dmp.train()
            bar = tqdm(total=len(batches), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not (progress and rank == 0))
            batch_iter: Iterator[LiveBatch] = (data.train.batch(idx) for idx in batches)
            losses: List[float] = []
            t_epoch = time.perf_counter()
            while True:
                factor = _lr_factor(state["step"], total_steps, cfg)
                for g in dense_groups:
                    g["lr"] = g["initial_lr"] * factor
                try:
                    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                        parts, _, _ = pipeline.progress(batch_iter)  # the pipeline returns the model output only
                except StopIteration:
                    break
                loss_t = parts["loss"].detach().clone()
                if world_size > 1:  # log the global batch's loss, not this rank's share
                    dist.all_reduce(loss_t)
                    loss_t /= world_size
                loss = float(loss_t)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"training loss became {loss} at step {state['step']} (epoch {epoch}); lower the learning rate")
                losses.append(loss)
                state["epoch_loss_sum"] += loss
                state["step"] += 1
                state["batch_in_epoch"] += 1
                samples_seen += cfg.batch_size
                bar.update(1)
                rate = samples_seen / (time.perf_counter() - t_start)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", samples_s=f"{rate:.0f}")
                if step_log:
                    step_log.write(json.dumps({"step": state["step"], "epoch": epoch, "loss": loss, **{k: float(parts[k]) for k in ("point", "pair", "align")}}) + "\n")
                    step_log.flush()
                if stop_after_steps is not None and state["step"] >= stop_after_steps:
                    logger.warning("stop_after_steps=%d reached: exiting abruptly (simulated kill)", stop_after_steps)
                    if step_log:
                        step_log.close()
                    os._exit(17)
                if cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0 and state["batch_in_epoch"] < steps_per_epoch:
                    snapshot(state["step"])
            bar.close()
            epoch_time = time.perf_counter() - t_epoch
            # --- validation, early stopping, checkpoint
            record: Dict[str, Any] = {"epoch": epoch + 1, "step": state["step"], "train_loss": state["epoch_loss_sum"] / max(state["batch_in_epoch"], 1), "epoch_seconds": round(epoch_time, 2)}
            if len(data.val):
                scored = score_split(pipeline_scorer(pipeline, dmp), data.val, max(cfg.eval_batch_size // world_size, 1), device, rank, world_size)
                metrics = evaluate_segments(scored["label"], scored["score"], room_ids=scored["live_id"])
                record.update({f"val_{k}": v for k, v in metrics.items() if not isinstance(v, (list, dict))})
                objective = metrics["tau"]
            else:
                objective = -(record["train_loss"] or 0.0)
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
            state["epoch_loss_sum"] = 0.0
            improved = objective > state["best_tau"]
            if improved:
                state["best_tau"], state["bad_epochs"] = objective, 0
            else:
                state["bad_epochs"] += 1
            state["history"].append(record)
            name = f"step-{state['step']:08d}"
            if improved:
                state["best_name"] = name
            snapshot(state["step"])
            if improved:
                mark_best(ckpt_root, name)
            if rank == 0:
                with open(run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                logger.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
            if state["bad_epochs"] >= cfg.patience:
                logger.info("early stopping: no better validation tau-b for %d epoch(s)", cfg.patience)
                stopped_early = True
                break
    finally:
        if step_log:
            step_log.close()
    dist.barrier()
    summary = {"steps": state["step"], "epochs": state["epoch"], "best_val_tau": state["best_tau"], "best_checkpoint": state["best_name"], "stopped_early": stopped_early, "history": state["history"], "loss": loss_name, "world_size": world_size}
    if rank == 0:
        best = best_checkpoint(ckpt_root)
        convert_to_single_file(best, run_dir / "model.pt", {"config": json.loads(saved_cfg_path.read_text()), "checkpoint": best.name})
        steps = [json.loads(line) for line in open(run_dir / "steps.jsonl")] if (run_dir / "steps.jsonl").exists() else []
        _plot_losses(run_dir, steps, state["history"])
        atomic_write_json(run_dir / "summary.json", summary)
    dist.barrier()
    return summary
