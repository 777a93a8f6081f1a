"""Training and scoring of PHD models (docs/HIGHLIGHTS.md, "Training").

A PHD model is any ``nn.Module`` with ``forward(batch: PHDBatch) -> scores [b, n]`` and
``training_loss(batch, generator) -> scalar`` (ContentCTR-HL, PR-Net and its ablations). Training
follows the papers: each train user's target video is cut into a ``window``-segment crop holding a
highlight (PR-Net 3.4, ContentCTR 4.1.2), Adam, a cosine learning-rate schedule (ContentCTR 4.3.2)
decaying to 0 over all steps, gradient-norm clipping at ``grad_clip``. Scoring takes whole videos.
Deterministic for a given seed (crops, order, dropout and the loss's draws all come from it). A model
with ``after_training(data, examples, seed, score)`` is given the train users and a train-mAP scorer
after the last epoch (the history-kernel fusion chooses its scale there).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from kuaihl_rec.data.phd.contract import PHDData
from kuaihl_rec.data.phd.examples import UserExample, make_batch, segment_labels, training_crop
from kuaihl_rec.metrics.phd import PHDItem, phd_evaluate

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PHDTrainConfig:
    epochs: int = 8
    batch_size: int = 16
    lr: float = 2e-3
    window: int = 32
    grad_clip: float = 1.0
    cosine: bool = True
    seed: int = 0
    clip_segments: int = 8

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.window < 2 or not self.lr > 0:
            raise ValueError("PHDTrainConfig: epochs, batch_size >= 1, window >= 2, lr > 0")


def train_phd(model: nn.Module, data: PHDData, examples: Sequence[UserExample], config: PHDTrainConfig,
              on_epoch: Optional[Callable[[int, float], None]] = None) -> List[float]:
    """Train ``model`` in place on ``examples``; returns the mean training loss of each epoch."""
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    labels = [segment_labels(e.selections, data.videos[e.video_id].n_segments, data.segment_seconds)
              for e in examples]
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    steps = config.epochs * math.ceil(len(examples) / config.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if config.cosine else None
    losses = []
    model.train()
    for epoch in range(config.epochs):
        order = rng.permutation(len(examples))
        total, count = 0.0, 0
        for first in range(0, len(order), config.batch_size):
            idx = order[first:first + config.batch_size]
            crops = [training_crop(labels[i], config.window, rng) for i in idx]
            batch = make_batch(data, [examples[i] for i in idx], crops, clip_segments=config.clip_segments)
            loss = model.training_loss(batch, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            if sched is not None:
                sched.step()
            total, count = total + float(loss.detach()), count + 1
        losses.append(total / max(count, 1))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    model.eval()
    if hasattr(model, "after_training"):  # a post-training fit on the train users (HistoryKernelFusion)
        def train_map(m: nn.Module, exs: Sequence[UserExample]) -> float:
            scores = score_phd(m, data, exs, clip_segments=config.clip_segments)
            return phd_evaluate(phd_items(data, exs, scores))["map"]
        model.after_training(data, examples, config.seed, train_map)
    return losses


@torch.no_grad()
def score_phd(model: nn.Module, data: PHDData, examples: Sequence[UserExample], batch_size: int = 16,
              clip_segments: int = 8) -> List[np.ndarray]:
    """Segment scores of each example's whole target video (``[T]`` each, padding cut off)."""
    model.eval()
    out: List[np.ndarray] = []
    for first in range(0, len(examples), batch_size):
        chunk = examples[first:first + batch_size]
        batch = make_batch(data, chunk, clip_segments=clip_segments)
        scores = model(batch).float().numpy()
        out.extend(scores[i, : data.videos[e.video_id].n_segments].copy() for i, e in enumerate(chunk))
    return out


def phd_items(data: PHDData, examples: Sequence[UserExample], scores: Sequence[np.ndarray]) -> List[PHDItem]:
    """The evaluation items (:class:`~kuaihl_rec.metrics.phd.PHDItem`) of scored examples."""
    return [PHDItem(e.user_id, e.selections, data.videos[e.video_id].n_segments * data.segment_seconds, s,
                    data.segment_seconds) for e, s in zip(examples, scores)]
