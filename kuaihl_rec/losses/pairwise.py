"""Border-aware pairwise ranking losses L0-L3 (KuaiHL eq. 9-12, ContentCTR eq. 10-13).

With ``s = sigmoid(logits)``, for an ordered pair ``(i, j)`` of labelled positions with
``y_i > y_j``, ``ds = s_i - s_j`` and ``dy = y_i - y_j``, each kept pair contributes::

    l_ij = log(1 + exp(-sigma * ds)) = softplus(-sigma * ds)

and the variants differ only by which pairs are kept:

* ``L0``: all pairs with ``y_i > y_j``;
* ``L1`` (border-aware, the papers' choice): ``dy - ds >= 0``;
* ``L2``: ``ds <= 0`` (Part 1 only);
* ``L3``: ``0 < ds < dy`` (Part 2 only).

Reduction (``reduction``). The papers write a *sum* over the kept pairs of a sample (a window),
and the batch loss averages samples: ``"window_sum"`` is that scale,

    L_pair = (1 / W) sum_w sum_{kept (i, j) in w} l_ij        W = windows with a labelled position

(with ``scope="batch"`` the double sum runs over all kept pairs of the batch, still divided by W).
Our default ``"mean"`` divides by the number of kept pairs instead, so the weights (0.65, 0.15,
0.20) of the total do not depend on how many pairs a window keeps (up to n (n - 1) / 2 = 190 at
n = 20, so the papers' scale weighs the term up to ~100x more). Either is 0 (a differentiable zero)
when no pair is kept. Pairs live inside one window by default (``scope="window"``); option
``"batch"`` pairs all labelled positions of the batch.

Shapes: ``logits``, ``labels``, ``label_mask`` are ``[b, n]``; pair masks are ``[G, K, K]``
(``G = b, K = n`` for window scope, ``G = 1, K = b n`` for batch scope).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from kuaihl_rec.losses.reduction import Normalizer, _as_bool_mask, _mean, _zero_like

__all__ = ["PAIR_VARIANTS", "PAIR_SCOPES", "PAIR_REDUCTIONS", "pair_keep_mask", "pairwise_loss"]

PAIR_VARIANTS: Tuple[str, ...] = ("none", "L0", "L1", "L2", "L3")
PAIR_SCOPES: Tuple[str, ...] = ("window", "batch")
PAIR_REDUCTIONS: Tuple[str, ...] = ("mean", "window_sum")


def pair_keep_mask(s: Tensor, y: Tensor, valid: Tensor, variant: str) -> Tensor:
    """Which ordered pairs (i, j) enter the pairwise loss: ``[G, K, K]`` bool, without gradient.

    Pairs have ``y_i > y_j`` and both positions labelled, and per variant
    (KuaiHL eq. 9-12, ContentCTR eq. 10-13; ``ds = s_i - s_j``, ``dy = y_i - y_j``):

    * ``L0``: all such pairs;
    * ``L1`` (border-aware, used by the papers): ``dy - ds >= 0``;
    * ``L2``: ``ds <= 0`` (Part 1 only);
    * ``L3``: ``0 < ds < dy`` (Part 2 only).

    Args:
        s: ``[G, K]`` predicted probabilities (detached here).
        y: ``[G, K]`` labels.
        valid: ``[G, K]`` bool label mask.
        variant: one of ``"L0", "L1", "L2", "L3"``.
    """
    if variant not in PAIR_VARIANTS[1:]:
        raise ValueError(f"pair variant must be one of {PAIR_VARIANTS[1:]}, got {variant!r}")
    with torch.no_grad():
        s = s.detach()
        y = y.detach().to(s.dtype)
        ds = s[:, :, None] - s[:, None, :]
        dy = y[:, :, None] - y[:, None, :]
        keep = (dy > 0) & valid[:, :, None] & valid[:, None, :]
        if variant == "L1":
            keep &= (dy - ds) >= 0
        elif variant == "L2":
            keep &= ds <= 0
        elif variant == "L3":
            keep &= (ds > 0) & (ds < dy)
    return keep


def pairwise_loss(
    logits: Tensor,
    labels: Tensor,
    label_mask: Optional[Tensor] = None,
    *,
    variant: str = "L1",
    sigma: float = 10.0,
    scope: str = "window",
    normalizer: Optional[Normalizer] = None,
    reduction: str = "mean",
) -> Tensor:
    """Pairwise logistic ranking loss with the border masks of KuaiHL eq. 9-12 / ContentCTR eq. 10-13.

    Per kept pair: ``log(1 + exp(-sigma (s_i - s_j)))`` = ``softplus(-sigma (s_i - s_j))`` with
    ``s = sigmoid(logits)``. Which pairs are kept is decided by :func:`pair_keep_mask` on
    detached values, so no gradient flows through the masks.

    Args:
        logits: ``[b, n]``.
        labels: ``[b, n]`` soft labels.
        label_mask: ``[b, n]`` bool; unlabelled positions form no pair. ``None`` = all.
        variant: ``"L0" | "L1" | "L2" | "L3"`` (``"none"`` returns a zero).
        sigma: scale; 10 in the papers (the official code's default is 1.0).
        scope: ``"window"`` (pairs inside one window, default) or ``"batch"`` (all pairs of
            labelled positions across the batch).
        normalizer: maps the local count (kept pairs, or windows) to the count divided by; ``None`` = local.
        reduction: ``"mean"`` (over kept pairs, pooled over the batch) or ``"window_sum"`` (the
            papers' scale: the sum over each window's kept pairs, averaged over the windows with a
            labelled position; see the module docstring).

    Returns:
        Scalar ``[]``; a differentiable zero when no pair is kept.
    """
    if logits.dim() != 2 or logits.shape != labels.shape:
        raise ValueError(
            f"logits and labels must both be [b, n], got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if scope not in PAIR_SCOPES:
        raise ValueError(f"pair scope must be one of {PAIR_SCOPES}, got {scope!r}")
    if reduction not in PAIR_REDUCTIONS:
        raise ValueError(f"pair reduction must be one of {PAIR_REDUCTIONS}, got {reduction!r}")
    if variant == "none":
        return _zero_like(logits)
    mask = _as_bool_mask(label_mask, logits, "label_mask")
    windows = mask.any(dim=1).sum()  # W: windows with a labelled position (before any batch reshape)
    s = torch.sigmoid(logits)
    y = torch.where(mask, labels.to(s.dtype), torch.zeros_like(s))
    if scope == "batch":
        s, y, mask = s.reshape(1, -1), y.reshape(1, -1), mask.reshape(1, -1)
    keep = pair_keep_mask(s, y, mask, variant)
    ds = s[:, :, None] - s[:, None, :]
    per_pair = F.softplus(-sigma * ds)
    # where + clamp instead of boolean indexing: no host sync, and 0 (with gradient) when none.
    total = torch.where(keep, per_pair, torch.zeros_like(per_pair)).sum()
    return _mean(total, keep.sum() if reduction == "mean" else windows, normalizer)
