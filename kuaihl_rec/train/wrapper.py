"""The one training wrapper that owns the loss (TorchRec's ``DLRMTrain`` shape).

``TrainWrapper(model, loss)`` has ``forward(batch) -> (loss, (loss_parts, logits, labels))``, the
form ``TrainPipelineSparseDist`` expects. Models only ever return logits (``forward(batch)``);
models that support the DTW alignment loss also offer ``encode(batch)`` returning
``.logits``, ``.text_seq`` and ``.visual_seq``, which the wrapper uses when the loss needs them.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.distributed as dist
from torch import nn

from kuaihl_rec.data.batch import LiveBatch
from kuaihl_rec.losses import ContentLoss


def global_count(count: torch.Tensor) -> torch.Tensor:
    """``all_reduce(count) / world_size``: with DDP's gradient averaging, each loss term then is the
    mean over the *global* batch (see ``kuaihl_rec.losses._mean``), so R ranks train exactly like one
    process on the same global batches."""
    total = count.detach().clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


class TrainWrapper(nn.Module):
    """Model + loss. ``seed`` fixes the generator of the alignment loss's random negatives."""

    def __init__(self, model: nn.Module, loss: ContentLoss, seed: int = 0) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss
        self.needs_sequences = bool(loss.config.align and loss.config.w_align > 0)
        if self.needs_sequences and not hasattr(model, "encode"):
            raise ValueError(
                f"loss preset with the alignment term needs a model with encode(batch) (text/visual sequences); "
                f"{type(model).__name__} has none: choose a loss preset without 'align'"
            )
        config = getattr(model, "config", None)
        if (
            self.needs_sequences
            and config is not None
            and not (getattr(config, "use_text", True) and getattr(config, "use_visual", True))
        ):
            missing = "text" if not getattr(config, "use_text", True) else "visual"
            raise ValueError(
                f"the loss has the alignment term (DTW between the text and visual sequences), but this "
                f"model has no {missing} input (use_{missing}=False): choose a loss preset without 'align', "
                f"e.g. 'point+L1'"
            )
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)
        if dist.is_initialized() and dist.get_world_size() > 1:
            # an attribute, not a forward argument: the pipeline FX-traces this module's forward
            self.loss_fn.normalizer = global_count

    def forward(
        self, batch: LiveBatch
    ) -> Tuple[torch.Tensor, Tuple[Dict[str, torch.Tensor], torch.Tensor, torch.Tensor]]:
        if not self.training:  # scoring: logits only, no loss (and no random negatives drawn)
            logits = self.model(batch)
            zero = logits.new_zeros(())
            return zero, ({"loss": zero, "point": zero, "pair": zero, "align": zero}, logits.detach(), batch.labels)
        if self.needs_sequences:
            out = self.model.encode(batch)
            logits, text_seq, visual_seq = out.logits, out.text_seq, out.visual_seq
        else:
            logits, text_seq, visual_seq = self.model(batch), None, None
        parts = self.loss_fn(
            logits.float(),
            batch.labels,
            batch.label_mask,
            text_seq=text_seq,
            visual_seq=visual_seq,
            valid_mask=batch.valid,
            generator=self.generator,
        )
        loss = parts["loss"]
        # No iteration over dicts here: TrainPipelineSparseDist FX-traces this forward.
        stats = {"loss": loss.detach(), "point": parts["point"], "pair": parts["pair"], "align": parts["align"]}
        return loss, (stats, logits.detach(), batch.labels)
