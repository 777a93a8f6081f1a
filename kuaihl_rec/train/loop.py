"""``kuaihl train``: any registered model, sharded with DMP, single-process or under torchrun.

Per rank, :class:`Trainer` runs named stages::

    setup       the process group (gloo on CPU, nccl on CUDA, timeout KUAIHL_DIST_TIMEOUT_S; a private
                1-rank group when not launched by torchrun), the run directory (a fresh run refuses one holding another
                run unless ``overwrite``; a resume checks the saved config and data fingerprint),
                the data (train windows in train mode, val in eval mode), the model from the
                registry -> fused row-wise Adagrad in its tables -> plan -> DMP, the dense optimizer
    resume      (``resume=True``) the newest checkpoint that passes verification (SHA-256 manifest,
                run identity; damaged ones are moved aside with a warning): weights, optimizer
                state, RNG states and the position in the epoch
    run_epoch   TrainPipelineSparseDist over this rank's slice of every global batch of the epoch
    end_epoch   validation tau-b (all ranks score their shard, results are all-gathered), early
                stopping, checkpoint (DCP, atomic, with a manifest), metrics.jsonl
    finish      model.pt from the best checkpoint once it verifies, the loss curve, summary.json

Validation: ``summary["validation"]`` is "tau_b", "none" (no validation rooms: no early stopping,
``best_val_tau`` None, model.pt from the last checkpoint) or "undefined" (tau-b never defined,
e.g. constant labels: the same, with a warning every epoch).

Data order is a function of (seed, epoch), so a resumed run replays exactly the batches the
uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
from tqdm.auto import tqdm

from kuaihl_rec.data.batch import BatchSpec, LiveBatch
from kuaihl_rec.data.io import DataError, atomic_write_json
from kuaihl_rec.data.validate import load_segments
from kuaihl_rec.data.catalog import save_vocabs
from kuaihl_rec.data.windows import SegmentArrays, WindowConfig, window_splits
from kuaihl_rec.losses import ContentLoss
from kuaihl_rec.metrics import evaluate_segments
from kuaihl_rec.model import create_model
from kuaihl_rec.model.streamer import check_same_vocabulary
from kuaihl_rec.model.registry import model_info
from kuaihl_rec.train.checkpoint import (
    choose_resume_checkpoint, convert_to_single_file, load_checkpoint, mark_best, save_checkpoint,
    set_pointers, verified_best_checkpoint,
)
from kuaihl_rec.train.config import TrainConfig
from kuaihl_rec.train.data_path import (
    Split, epoch_batches, epoch_steps, hash_ids, load_stream_splits, stream_position,
)
from kuaihl_rec.train.distributed import init_distributed, peer_lost_error
from kuaihl_rec.train.records import (
    check_run_dir_free, check_saved_config, check_saved_data, data_fingerprint, finite_or_none, move_run_aside,
    plot_losses, run_identity, truncate_jsonl, versions,
)
from kuaihl_rec.train.scoring import PlainPipeline, pipeline_scorer, plain_scorer, score_split
from kuaihl_rec.train.sharding import (
    build_optimizer, dense_param_groups, embedding_modules, fuse_table_optimizer, wrap_model,
)
from kuaihl_rec.train.wrapper import TrainWrapper

__all__ = [
    "RunData", "Trainer", "build_model", "init_distributed", "load_run_data", "loss_preset_for",
    "plain_scorer", "score_split", "train", "versions",
]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ process group


# ------------------------------------------------------------------------------------ data


@dataclasses.dataclass
class RunData:
    train: Split
    val: Split
    spec: BatchSpec
    window_cfg: WindowConfig


def load_run_data(data_dir: Path, cfg: TrainConfig, rank: int = 0, world_size: int = 1) -> RunData:
    """Validated windows of the train and val splits (every rank reads the same directory); with
    ``cfg.stream.enabled`` this rank's streamed rooms instead (:mod:`kuaihl_rec.train.data_path`)."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise DataError(
            f"{data_dir}: the data directory does not exist (create one with `kuaihl world --out {data_dir}`)"
        )
    wcfg = cfg.data
    if cfg.stream.enabled:
        train, val = load_stream_splits(data_dir, cfg, rank, world_size)
        if len(val) == 0:
            logger.warning("%s: no validation rooms: no validation tau-b, no early stopping", data_dir)
        return RunData(train=train, val=val, spec=train.spec(), window_cfg=wcfg)
    table, sizes, report = load_segments(data_dir, min_viewers=wcfg.min_viewers)
    arr = SegmentArrays.from_table(table, sizes, wcfg)
    splits = window_splits(arr, wcfg, {"train": "train", "val": "eval"})
    hash_ids(splits, cfg.stream.id_hash_buckets)
    if len(splits["train"]) == 0:
        raise DataError(
            f"{data_dir}: no training windows (rooms per split: {report.splits}); is there a 'train' split?"
        )
    if len(splits["val"]) == 0:
        logger.warning("%s: no validation rooms: no validation tau-b, no early stopping; model.pt will be the last "
                       "checkpoint", data_dir)
    return RunData(train=splits["train"], val=splits["val"], spec=BatchSpec.of(splits["train"]), window_cfg=wcfg)


# ------------------------------------------------------------------------------------ training


def build_model(cfg: TrainConfig, spec: BatchSpec, seed: Optional[int] = None) -> torch.nn.Module:
    torch.manual_seed(cfg.seed if seed is None else seed)
    return create_model(cfg.model.name, spec, **cfg.overrides)


def loss_preset_for(cfg: TrainConfig, model: torch.nn.Module) -> str:
    """The loss preset of a run: the config's, else the model's registry entry's default."""
    return cfg.loss or model_info(cfg.model.name).default_loss


def _fresh_state() -> Dict[str, Any]:
    """The training position a checkpoint saves (``meta``) and a resume restores."""
    return {"step": 0, "epoch": 0, "batch_in_epoch": 0, "epoch_loss_sum": 0.0, "best_tau": None,
            "best_name": None, "bad_epochs": 0, "history": []}


class Trainer:
    """One training run on this rank (module docstring for the stages); :func:`train` drives it.

    ``overwrite`` lets a fresh run take a directory holding another run (whose files are moved to
    ``RUN/.replaced-<time>/``, see :mod:`kuaihl_rec.train.records`). ``stop_after_steps`` ends the
    process abruptly after that many steps (``os._exit``), as a kill would; it exists so tests can
    interrupt a run mid-epoch and check ``resume``.
    """

    def __init__(self, data_dir: Path, run_dir: Path, cfg: TrainConfig, resume: bool = False, progress: bool = True,
                 stop_after_steps: Optional[int] = None, overwrite: bool = False) -> None:
        if resume and overwrite:
            raise ValueError("resume and overwrite exclude each other: continue the run or replace it, not both")
        self.data_dir, self.run_dir, self.cfg = Path(data_dir), Path(run_dir), cfg
        self.resume, self.progress, self.stop_after_steps = resume, progress, stop_after_steps
        self.overwrite = overwrite
        self.state = _fresh_state()
        self.stopped_early = False
        self.stream_position: Optional[Dict[str, Any]] = None  # streaming: where a resume continues the epoch

    # -------------------------------------------------------------------------------- setup

    def setup(self) -> None:
        """Process group, run directory, data, model, DMP, optimizers (the pipeline comes in :meth:`fit`,
        after a resume has loaded the checkpoint)."""
        cfg = self.cfg
        self.device = init_distributed()
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        if cfg.batch_size % self.world_size:
            raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the number of ranks {self.world_size}")
        self.ckpt_root, self.config_path = self.run_dir / "checkpoints", self.run_dir / "config.json"
        self._claim_run_dir()
        if self.resume:
            check_saved_config(self.config_path, self.run_dir, cfg.to_dict())
        self.data = load_run_data(self.data_dir, cfg, self.rank, self.world_size)
        self.fingerprint = data_fingerprint(self.data_dir)
        if self.resume:
            check_saved_data(self.config_path, self.data_dir, self.fingerprint)
        self.identity = run_identity(cfg.to_dict(), self.fingerprint)
        self._build_model()
        self.steps_per_epoch = epoch_steps(self.data.train, cfg.batch_size, cfg.seed, self.rank, self.world_size)
        if self.steps_per_epoch == 0:
            raise DataError(
                f"{self.data_dir}: {len(self.data.train)} training windows is fewer than one global batch "
                f"of {cfg.batch_size}"
            )
        self.total_steps = cfg.max_steps or self.steps_per_epoch * cfg.epochs
        if self.rank == 0 and not self.resume:
            self._write_run_header()

    def _claim_run_dir(self) -> None:
        """A fresh run checks (every rank, reading only) that the directory holds no other run, then
        rank 0 moves an overwritten run aside and creates the directories."""
        held = [] if self.resume else check_run_dir_free(self.run_dir, self.overwrite)
        dist.barrier()
        if self.rank == 0:
            move_run_aside(self.run_dir, held)
            self.ckpt_root.mkdir(parents=True, exist_ok=True)
        dist.barrier()

    def _build_model(self) -> None:
        cfg = self.cfg
        self.model = build_model(cfg, self.data.spec)
        if cfg.overrides.get("streamer_init"):  # the copied table rows must belong to the same streamers
            check_same_vocabulary(cfg.overrides["streamer_init"], self.data.train.streamer_vocab.raw)
        self.loss_name = loss_preset_for(cfg, self.model)
        self.wrapper = TrainWrapper(self.model, ContentLoss(self.loss_name), seed=cfg.seed + 1000 * self.rank)
        fuse_table_optimizer(self.wrapper, cfg.optim)
        # DMP re-initialises EmbeddingBagCollection tables when it shards them; load the seeded
        # initial weights back so a run's start does not depend on the number of ranks.
        initial = OrderedDict((k, v.detach().clone()) for k, v in self.wrapper.state_dict().items())
        self.dmp = wrap_model(self.wrapper, self.device)
        self.dmp.load_state_dict(initial)
        self.optimizer = build_optimizer(self.dmp, cfg.optim)
        self.dense_groups = dense_param_groups(self.optimizer)
        for group in self.dense_groups:
            group["initial_lr"] = group["lr"]

    def _write_run_header(self) -> None:
        data, cfg = self.data, self.cfg
        atomic_write_json(self.config_path, {
            "train": cfg.to_dict(), "loss": self.loss_name, "data": str(self.data_dir.resolve()),
            "spec": dataclasses.asdict(data.spec), "window": dataclasses.asdict(data.window_cfg),
            "world_size": self.world_size, "versions": versions(), "seed": cfg.seed,
            "data_fingerprint": self.fingerprint, "identity": self.identity,
        })
        save_vocabs(self.run_dir / "vocab.npz", data.train.streamer_vocab, data.train.live_vocab)
        for name in ("metrics.jsonl", "steps.jsonl"):
            (self.run_dir / name).unlink(missing_ok=True)

    def _build_pipeline(self) -> None:
        # pipeline_postproc lets the pipeline prefetch tables whose KJT a model builds in forward (the
        # ID baselines); torchrec versions without the option run those tables in place.
        params = inspect.signature(TrainPipelineSparseDist.__init__).parameters
        extra = {"pipeline_postproc": True} if "pipeline_postproc" in params else {}
        if embedding_modules(self.wrapper):
            self.pipeline = TrainPipelineSparseDist(self.dmp, self.optimizer, self.device, **extra)
        else:  # no table to pipeline (e.g. SelfAttention-plain, content_no_id): TorchRec's tracer has nothing to do
            self.pipeline = PlainPipeline(self.dmp, self.optimizer, self.device)
        self.amp = self.cfg.amp == "bf16" or (self.cfg.amp == "auto" and self.device.type == "cuda")

    # -------------------------------------------------------------------------------- resume

    def restore(self) -> None:
        """Continue from the newest checkpoint that verifies (weights, optimizer, RNGs, position)."""
        ckpt = choose_resume_checkpoint(self.ckpt_root, self.identity)
        if ckpt is None:
            logger.warning("%s: no checkpoint yet; starting from the beginning", self.ckpt_root)
            return
        loaded = load_checkpoint(ckpt, self.dmp, self.optimizer)
        state = self.state
        state.update({k: loaded["meta"][k] for k in state if k in loaded["meta"]})
        state["best_tau"] = finite_or_none(state["best_tau"])  # -inf in checkpoints of older versions
        if self.rank == 0:  # after a fall-back, latest / best must name what this run continues from
            set_pointers(self.ckpt_root, ckpt.name, state["best_name"])
        local = loaded["rank_local"]
        if "torch_rng" in local:
            torch.set_rng_state(local["torch_rng"])
            self.wrapper.generator.set_state(local["loss_rng"])
        self.stream_position = local.get("stream_position")
        logger.info(
            "resumed from %s (step %d, epoch %d, batch %d)",
            ckpt, state["step"], state["epoch"], state["batch_in_epoch"],
        )
        if self.rank == 0:  # forget what the killed run logged after its last checkpoint
            truncate_jsonl(self.run_dir / "steps.jsonl", "step", state["step"])
            truncate_jsonl(self.run_dir / "metrics.jsonl", "epoch", state["epoch"])

    def snapshot(self, step: int) -> Path:
        meta = dict(self.state)
        local = {"torch_rng": torch.get_rng_state(), "loss_rng": self.wrapper.generator.get_state(),
                 "stream_position": stream_position(self.data.train, self.state["epoch"], self.state["batch_in_epoch"])}
        return save_checkpoint(
            self.ckpt_root, step, self.dmp, self.optimizer, meta, local, keep=self.cfg.keep_checkpoints,
            identity=self.identity,
        )

    # -------------------------------------------------------------------------------- epochs

    def run_epoch(self, step_log) -> float:
        """The remaining batches of the current epoch; returns the epoch's wall time (s)."""
        cfg, state = self.cfg, self.state
        epoch = state["epoch"]
        # Never hand the pipeline more batches than the step budget: it then drains through
        # StopIteration and holds no prefetched training batch when validation runs.
        start = state["batch_in_epoch"]
        count = max(min(self.steps_per_epoch - start, self.total_steps - state["step"]), 0)
        self.dmp.train()
        bar = tqdm(total=count, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                   disable=not (self.progress and self.rank == 0))
        batch_iter: Iterator[LiveBatch] = epoch_batches(self.data.train, cfg.batch_size, cfg.seed, epoch, self.rank,
                                                        self.world_size, start, count, self.stream_position)
        self.stream_position = None
        losses: List[float] = []
        t_epoch = time.perf_counter()
        while True:
            factor = cfg.lr_factor(state["step"], self.total_steps)
            for group in self.dense_groups:
                group["lr"] = group["initial_lr"] * factor
            try:
                with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                    parts, _, _ = self.pipeline.progress(batch_iter)  # the pipeline returns the model output only
            except StopIteration:
                break
            losses.append(self._after_step(parts, epoch, step_log))
            bar.update(1)
            rate = self.samples_seen / (time.perf_counter() - self.t_start)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", samples_s=f"{rate:.0f}")
        bar.close()
        return time.perf_counter() - t_epoch

    def _after_step(self, parts: Dict[str, torch.Tensor], epoch: int, step_log) -> float:
        """Book-keeping of one step: global loss, counters, step log, simulated kill, mid-epoch checkpoint."""
        cfg, state = self.cfg, self.state
        loss_t = parts["loss"].detach().clone()
        if self.world_size > 1:  # log the global batch's loss, not this rank's share
            dist.all_reduce(loss_t)
            loss_t /= self.world_size
        loss = float(loss_t)
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {loss} at step {state['step']} (epoch {epoch}); lower the learning rate"
            )
        state["epoch_loss_sum"] += loss
        state["step"] += 1
        state["batch_in_epoch"] += 1
        self.samples_seen += cfg.batch_size
        if step_log:
            terms = {k: float(parts[k]) for k in ("point", "pair", "align")}
            step_log.write(json.dumps({"step": state["step"], "epoch": epoch, "loss": loss, **terms}) + "\n")
            step_log.flush()
        if self.stop_after_steps is not None and state["step"] >= self.stop_after_steps:
            logger.warning("stop_after_steps=%d reached: exiting abruptly (simulated kill)", self.stop_after_steps)
            if step_log:
                step_log.close()
            os._exit(17)
        if (
            cfg.checkpoint_every
            and state["step"] % cfg.checkpoint_every == 0
            and state["batch_in_epoch"] < self.steps_per_epoch
        ):
            self.snapshot(state["step"])
        return loss

    def _validate(self, record: Dict[str, Any]) -> Optional[float]:
        """Validation metrics into ``record`` (``val_*``; undefined ones as None); returns tau-b or None."""
        if not len(self.data.val):
            return None
        batch = max(self.cfg.eval_batch_size // self.world_size, 1)
        scored = score_split(
            pipeline_scorer(self.pipeline, self.dmp), self.data.val, batch, self.device, self.rank, self.world_size
        )
        metrics = evaluate_segments(scored["label"], scored["score"], room_ids=scored["live_id"])
        scalars = {k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}
        record.update({f"val_{k}": finite_or_none(v) for k, v in scalars.items()})
        if record["val_tau"] is None and self.rank == 0:
            logger.warning("epoch %d: validation tau-b is undefined (constant labels or constant scores over %d "
                           "segments); this epoch cannot be ranked", record["epoch"], metrics["n_segments"])
        return record["val_tau"]

    def end_epoch(self, epoch_seconds: float) -> None:
        """Validation, early stopping, checkpoint, metrics.jsonl.

        Until a validation tau-b is defined (none: no validation rooms; undefined: constant labels), the
        newest checkpoint counts as the best and nothing stops early.
        """
        cfg, state, epoch = self.cfg, self.state, self.state["epoch"]
        train_loss = state["epoch_loss_sum"] / max(state["batch_in_epoch"], 1)
        record: Dict[str, Any] = {"epoch": epoch + 1, "step": state["step"], "train_loss": train_loss,
                                  "epoch_seconds": round(epoch_seconds, 2)}
        objective = self._validate(record)
        state.update(epoch=epoch + 1, batch_in_epoch=0, epoch_loss_sum=0.0)
        best = state["best_tau"]
        improved = best is None if objective is None else (best is None or objective > best)
        if improved:
            state["best_tau"], state["bad_epochs"] = objective, 0
        else:
            state["bad_epochs"] += 1
        state["history"].append(record)
        name = f"step-{state['step']:08d}"
        if improved:
            state["best_name"] = name
        self.snapshot(state["step"])
        if improved:
            mark_best(self.ckpt_root, name)
        if self.rank == 0:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            shown = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
            logger.info("epoch %d: %s", epoch + 1, shown)
        if state["bad_epochs"] >= cfg.patience:
            logger.info("early stopping: no better validation tau-b for %d epoch(s)", cfg.patience)
            self.stopped_early = True

    def fit(self) -> None:
        """The pipeline, then epochs until the budget, the step limit or early stopping ends them."""
        self._build_pipeline()
        step_log = open(self.run_dir / "steps.jsonl", "a") if self.rank == 0 else None
        self.t_start, self.samples_seen = time.perf_counter(), 0
        try:
            while (
                self.state["epoch"] < self.cfg.epochs
                and self.state["step"] < self.total_steps
                and not self.stopped_early
            ):
                self.end_epoch(self.run_epoch(step_log))
        finally:
            if step_log:
                step_log.close()

    # -------------------------------------------------------------------------------- finish

    def validation_status(self) -> str:
        """"tau_b", "none" (no validation rooms) or "undefined" (tau-b never defined, e.g. constant labels)."""
        if len(self.data.val) == 0:
            return "none"
        return "undefined" if self.state["best_tau"] is None else "tau_b"

    def finish(self) -> Dict[str, Any]:
        """``model.pt`` from the best checkpoint once it verifies, the loss curve and ``summary.json`` (rank 0).

        A best checkpoint that fails verification raises :class:`CheckpointError` and leaves
        ``model.pt`` as it was.
        """
        dist.barrier()
        state = self.state
        validation = self.validation_status()
        if validation != "tau_b" and self.rank == 0:
            logger.warning("no validation tau-b (%s): best_val_tau is None and model.pt is the last checkpoint",
                           "no validation rooms" if validation == "none" else "tau-b undefined, constant labels?")
        summary = {
            "steps": state["step"], "epochs": state["epoch"], "validation": validation,
            "best_val_tau": state["best_tau"], "best_checkpoint": state["best_name"],
            "stopped_early": self.stopped_early, "history": state["history"],
            "loss": self.loss_name, "world_size": self.world_size,
        }
        best = verified_best_checkpoint(self.ckpt_root)
        if self.rank == 0:
            header = {"config": json.loads(self.config_path.read_text()), "checkpoint": best.name}
            convert_to_single_file(best, self.run_dir / "model.pt", header)
            steps_path = self.run_dir / "steps.jsonl"
            steps = [json.loads(line) for line in open(steps_path)] if steps_path.exists() else []
            plot_losses(self.run_dir, steps, state["history"])
            atomic_write_json(self.run_dir / "summary.json", summary)
        dist.barrier()
        return summary


def train(
    data_dir: Path,
    run_dir: Path,
    cfg: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    stop_after_steps: Optional[int] = None,
    overwrite: bool = False,
) -> Dict[str, Any]:
    """Train on ``data_dir`` into ``run_dir`` (call on every rank). Returns the final summary.

    A fresh run refuses a ``run_dir`` that holds another run (``FileExistsError``) unless ``overwrite``. A peer
    lost in a multi-rank run raises ``PeerLostError`` (kuaihl_rec/train/distributed.py; docs/DISTRIBUTED.md).
    """
    trainer = Trainer(data_dir, run_dir, cfg, resume=resume, progress=progress, stop_after_steps=stop_after_steps,
                      overwrite=overwrite)
    try:
        trainer.setup()
        if resume:
            trainer.restore()
        trainer.fit()
        return trainer.finish()
    except Exception as exc:  # a lost peer becomes one clear PeerLostError (kuaihl_rec/train/distributed.py)
        lost = peer_lost_error(exc, getattr(trainer, "state", {}).get("step"))
        if lost is None:
            raise
        raise lost from exc
