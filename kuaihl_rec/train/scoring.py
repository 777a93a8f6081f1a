"""Scoring a split with a model, once per evaluation unit (docs/MODEL.md section 1), on one or many ranks.

``plain_scorer`` runs an ordinary module; ``pipeline_scorer`` runs a model whose embedding modules
live in a ``TrainPipelineSparseDist`` (they can only be called through it); ``PlainPipeline`` is
the pipeline contract for models without tables. ``score_split`` takes the split's padded batches
(``eval_batches``: every rank runs the same number of forwards), keeps each target's score once
(``LiveBatch.score_mask``) and all-gathers the rows.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from kuaihl_rec.data.batch import LiveBatch
from kuaihl_rec.data.windows import WindowedSplit

if TYPE_CHECKING:
    from kuaihl_rec.data.stream import StreamSplit


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
    split: "WindowedSplit | StreamSplit",
    batch_size: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
) -> Dict[str, np.ndarray]:
    """Score every evaluation unit of ``split`` once (score_mask); all ranks take part and get all rows.

    ``split``: a :class:`WindowedSplit` (every rank holds all windows and scores its slice of each
    global batch) or a :class:`~kuaihl_rec.data.stream.StreamSplit` (every rank scores its own rooms);
    both pad with dropped windows (``split.eval_batches``) so every rank runs the same number of
    forwards. Returns flat arrays sorted by (live_id, segment): live_id, streamer_id, segment (the
    *target* segment), label, score (probability), logit.
    """
    n_steps, pairs = split.eval_batches(batch_size, rank, world_size)
    pending: deque = deque()

    def batches() -> Iterator[LiveBatch]:
        for batch, keep in pairs:
            pending.append((batch, keep))
            yield batch.to(device)

    rows: Dict[str, List[np.ndarray]] = {k: [] for k in ("live_id", "streamer_id", "segment", "label", "logit")}
    bar = tqdm(total=n_steps, desc=f"score {split.stats.split}", unit="batch", leave=False,
               disable=not (progress and rank == 0))
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
