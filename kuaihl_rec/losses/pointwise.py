"""Pointwise loss: soft-label binary cross-entropy (KuaiHL eq. 8, ContentCTR eq. 6).

With ``s_i = sigmoid(logit_i)`` and soft labels ``y_i`` in [0, 1], over the ``n`` labelled
positions of the batch::

    L_point = -1/n sum_i [ y_i log s_i + (1 - y_i) log(1 - s_i) ]

Shapes: ``logits``, ``labels``, ``label_mask`` are ``[b, n]`` (``b`` windows, ``n`` positions).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from kuaihl_rec.losses.reduction import Normalizer, _mean

__all__ = ["pointwise_loss"]


def pointwise_loss(
    logits: Tensor,
    labels: Tensor,
    label_mask: Optional[Tensor] = None,
    normalizer: Optional[Normalizer] = None,
) -> Tensor:
    """Binary cross-entropy between ``s = sigmoid(logits)`` and soft labels ``y`` in [0, 1].

    KuaiHL eq. 8 (ContentCTR eq. 6): ``-1/n sum_i [y_i log s_i + (1 - y_i) log(1 - s_i)]``,
    computed from logits (``binary_cross_entropy_with_logits``) for numerical stability.

    Args:
        logits: ``[b, n]`` pre-sigmoid scores.
        labels: ``[b, n]`` soft labels in [0, 1] (values at unmasked positions are ignored).
        label_mask: ``[b, n]`` bool, positions that carry a label; ``None`` = all.
        normalizer: maps the local count of labelled positions to the count divided by
            (see :func:`kuaihl_rec.losses.reduction._mean`); ``None`` = the local count.

    Returns:
        Scalar ``[]`` mean over masked positions; a differentiable zero when the mask is empty.
    """
    if logits.shape != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ")
    if label_mask is None:
        mask = torch.ones_like(logits, dtype=torch.bool)
    elif label_mask.shape != logits.shape:
        raise ValueError(f"label_mask {tuple(label_mask.shape)} and logits {tuple(logits.shape)} differ")
    else:
        mask = label_mask.to(device=logits.device, dtype=torch.bool)
    # Unlabelled positions may hold anything (NaN included): replace before the BCE.
    y = torch.where(mask, labels.to(logits.dtype), torch.zeros_like(logits))
    per_pos = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    # where + clamp instead of boolean indexing: no host sync, and 0 (with gradient) when empty.
    total = torch.where(mask, per_pos, torch.zeros_like(per_pos)).sum()
    return _mean(total, mask.sum(), normalizer)
