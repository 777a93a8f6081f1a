"""Reductions shared by the loss terms: the (global-batch) mean, a differentiable zero, mask checks.

Every term of the total loss (KuaiHL eq. 13, ContentCTR eq. 14) is a mean over what it counts:
labelled positions (pointwise), kept pairs (pairwise) or usable windows (alignment)::

    L_term = total / max(count, 1)                   (single process)
    L_term = total / max(normalizer(count), 1)       (data parallel)

With ``R`` ranks whose gradients are averaged (DDP), ``normalizer(c) = all_reduce(c) / R`` gives
``mean_r(total_r / (C / R)) = sum_r total_r / C``: the mean over the whole global batch.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

__all__ = ["Normalizer"]

# Maps a term's local count (a scalar tensor) to the count it is divided by.
Normalizer = Callable[[Tensor], Tensor]


def _mean(total: Tensor, count: Tensor, normalizer: Optional[Normalizer]) -> Tensor:
    """``total / count`` (count clamped to 1), or ``total / normalizer(count)``; scalars ``[]``.

    A normalizer makes a data-parallel loss equal the loss of the whole global batch: with R ranks
    whose gradients are averaged (DDP), ``normalizer(c) = all_reduce(c) / R`` gives
    ``mean_r(total_r / (C / R)) = sum_r total_r / C`` -- the global mean, whatever each rank's count.
    """
    count = count.to(total.dtype)
    return total / (normalizer(count) if normalizer is not None else count).clamp_min(1)


def _zero_like(*tensors: Tensor) -> Tensor:
    """A differentiable scalar zero ``[]`` connected to ``tensors`` (its gradient is all zeros)."""
    total = tensors[0].new_zeros(())
    for t in tensors:
        total = total + t.sum() * 0.0
    return total


def _as_bool_mask(mask: Optional[Tensor], like: Tensor, name: str) -> Tensor:
    """``mask`` as a bool ``[b, n]`` on ``like``'s device (``like`` is ``[b, n, ...]``); ``None`` = all."""
    if mask is None:
        return torch.ones(like.shape[:2], dtype=torch.bool, device=like.device)
    if mask.shape != like.shape[:2]:
        raise ValueError(f"{name} has shape {tuple(mask.shape)}, expected {tuple(like.shape[:2])}")
    return mask.to(device=like.device, dtype=torch.bool)
