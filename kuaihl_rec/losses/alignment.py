"""DTW alignment InfoNCE loss (KuaiHL eq. 4-7, ContentCTR eq. 7-9).

With the cosine cost ``D_ij = 1 - cos(z_i, v_j)`` (KuaiHL eq. 4) between the text sequence
``z`` and the visual sequence ``v`` of a window, ``d(z, v) = DTW(D)`` over the valid ``m x m``
prefix (eq. 5, :mod:`kuaihl_rec.losses.dtw`), one positive order ``v+`` and N shuffled negatives
``v-`` (eq. 6, :mod:`kuaihl_rec.losses.augmentation`)::

    L_align = -log( exp(-d(z, v+)/tau) / (exp(-d(z, v+)/tau) + sum_{N negatives} exp(-d(z, v-)/tau)) )

(eq. 7; the papers print ``exp(d/tau)``; with ``d`` a distance the sign must be negative.)

Decisions (papers silent or ambiguous; the alternative is an option):

* ``d`` is divided by the valid window length ``m`` by default (``normalize="length"``) so the
  temperature does not depend on the window length; ``"none"`` is the papers' raw ``C_{m,m}``.
* Default temperature ``tau = 0.1`` on the normalised distance (for m = 20 that equals tau = 2
  on the raw distance). The official code uses no temperature (tau = 1, raw distance).
* Windows with no distinct negative are left out of the mean over windows.

Shapes: ``text_seq``, ``visual_seq`` are ``[b, n, d]``, ``valid_mask`` ``[b, n]`` (a prefix),
costs ``[b, n, n]``, orders ``[b, S, n]`` with ``S = 1 + N``.
"""

from __future__ import annotations

import logging
from typing import Optional, Tuple

import torch
from torch import Tensor

from kuaihl_rec.losses.augmentation import sample_alignment_permutations
from kuaihl_rec.losses.dtw import dtw_from_cost
from kuaihl_rec.losses.reduction import Normalizer, _as_bool_mask, _mean, _zero_like

logger = logging.getLogger(__name__)

__all__ = ["ALIGN_NORMS", "cosine_cost", "alignment_distances", "alignment_loss"]

ALIGN_NORMS: Tuple[str, ...] = ("length", "none")


def cosine_cost(text_seq: Tensor, visual_seq: Tensor, eps: float = 1e-8) -> Tensor:
    """``D_ij = 1 - cos(z_i, v_j)``: ``[b, n, d] x [b, m, d] -> [b, n, m]`` (KuaiHL eq. 4 cost)."""
    # Norms divided out of the [b, n, m] product (not the [b, n, d] inputs): cheaper backward.
    dot = torch.bmm(text_seq, visual_seq.transpose(1, 2))
    nz = torch.linalg.vector_norm(text_seq, dim=-1).clamp_min(eps)
    nv = torch.linalg.vector_norm(visual_seq, dim=-1).clamp_min(eps)
    return 1.0 - dot / (nz[:, :, None] * nv[:, None, :])


def _prefix_lengths(valid_mask: Tensor) -> Tensor:
    """Valid lengths ``[b]`` of a ``[b, n]`` bool mask that must mark a prefix of each row."""
    n = valid_mask.shape[1]
    lengths = valid_mask.sum(dim=1)
    prefix = torch.arange(n, device=valid_mask.device)[None, :] < lengths[:, None]
    if not bool((prefix == valid_mask).all()):
        raise ValueError(
            "valid_mask must mark a prefix of each window (right padding): positions 0..m-1 valid"
        )
    return lengths


def alignment_distances(
    cost: Tensor, orders: Tensor, lengths: Tensor, gamma: Optional[float] = None
) -> Tensor:
    """DTW distances between ``z`` and reordered ``v``: ``[b, n, n] x [b, S, n] -> [b, S]``.

    A reordered sequence ``v[order]`` has cost ``D[:, :, order]``, so all ``S = 1 + N`` sequences
    of a window share one cosine matrix (columns gathered, nothing recomputed); the DP then runs
    once over all ``b * S`` matrices (:func:`dtw_from_cost`) on the valid ``m x m`` prefixes.
    """
    b, n, m = cost.shape
    S = orders.shape[1]
    gathered = cost[:, None].expand(b, S, n, m).gather(3, orders[:, :, None, :].expand(b, S, n, m))
    dist = dtw_from_cost(
        gathered.reshape(b * S, n, m), gamma=gamma, lengths=lengths.repeat_interleave(S)
    )
    return dist.reshape(b, S)


def _check_alignment_args(text_seq: Tensor, visual_seq: Tensor, n_negatives: int, tau: float, normalize: str) -> None:
    """Raise ``ValueError`` on sequences of different / non-``[b, n, d]`` shapes or bad options."""
    if text_seq.dim() != 3 or text_seq.shape != visual_seq.shape:
        raise ValueError(
            "text_seq and visual_seq must both be [b, n, d] of one shape, got "
            f"{tuple(text_seq.shape)} and {tuple(visual_seq.shape)}"
        )
    if n_negatives < 1:
        raise ValueError(f"n_negatives must be >= 1, got {n_negatives}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if normalize not in ALIGN_NORMS:
        raise ValueError(f"normalize must be one of {ALIGN_NORMS}, got {normalize!r}")


def alignment_loss(
    text_seq: Tensor,
    visual_seq: Tensor,
    valid_mask: Optional[Tensor] = None,
    *,
    n_negatives: int = 8,
    tau: float = 0.1,
    gamma: Optional[float] = None,
    augment: str = "positive",
    augment_gamma: float = 0.1,
    normalize: str = "length",
    generator: Optional[torch.Generator] = None,
    normalizer: Optional[Normalizer] = None,
) -> Tensor:
    """DTW alignment InfoNCE loss (KuaiHL eq. 4-7, ContentCTR eq. 7-9).

    ``L = -log( exp(-d(z, v+)/tau) / (exp(-d(z, v+)/tau) + sum_{N negatives} exp(-d(z, v-)/tau)) )``
    with ``d`` the DTW distance on the cost ``D_ij = 1 - cos(z_i, v_j)`` over the valid prefix
    of each window. (The papers' eq. 7 / eq. 9 print ``exp(d/tau)``; with ``d`` a distance the
    sign must be negative, as in the spec.)

    Args:
        text_seq: ``[b, n, d]`` projected text sequence ``z`` (= S_a).
        visual_seq: ``[b, n, d]`` projected visual sequence ``v`` (= S_p).
        valid_mask: ``[b, n]`` bool, valid positions; must be a prefix (right padding). ``None`` = all.
        n_negatives: N shuffled negatives (8 in the papers, 7 in the official code).
        tau: InfoNCE temperature (default 0.1 on the length-normalised distance; see module doc).
        gamma: ``None`` = hard DTW (papers), else soft-DTW temperature (official code: 0.1).
        augment: ``"positive"`` (KuaiHL: swapped v is the positive), ``"exclude"`` (official code:
            positive stays v, swapped order is never a negative), ``"none"`` (ContentCTR).
        augment_gamma: softmax temperature of KuaiHL eq. 6.
        normalize: ``"length"`` (divide d by the valid length m, default) or ``"none"`` (raw C_{m,m}).
        generator: optional ``torch.Generator`` for the negatives and the swap.
        normalizer: maps the local count of usable windows to the count divided by; ``None`` = local.

    Returns:
        Scalar ``[]`` mean over windows with distinct negatives; a differentiable zero when none.
    """
    _check_alignment_args(text_seq, visual_seq, n_negatives, tau, normalize)
    mask = _as_bool_mask(valid_mask, text_seq, "valid_mask")
    lengths = _prefix_lengths(mask)
    if not bool((lengths >= 2).any()):
        logger.debug("alignment loss: no window with >= 2 valid positions; returning zero")
        return _zero_like(text_seq, visual_seq)
    # Windows without valid positions still need a length >= 1 for the DP; they are dropped.
    dp_lengths = lengths.clamp(min=1)

    z, v = text_seq, visual_seq
    if z.dtype in (torch.float16, torch.bfloat16):
        z, v = z.float(), v.float()
    cost = cosine_cost(z, v)  # [b, n, n]
    positive, negatives, _, usable = sample_alignment_permutations(
        1.0 - cost.detach(), dp_lengths, n_negatives, augment, augment_gamma, generator
    )
    if not bool(usable.any()):
        logger.debug("alignment loss: no window has distinct negatives; returning zero")
        # The normalizer may be a collective: call it on this path too, so every rank calls it.
        return _mean(_zero_like(text_seq, visual_seq), torch.zeros((), device=text_seq.device), normalizer)
    # Only the usable windows enter the DP.
    keep = usable.nonzero(as_tuple=True)[0]
    orders = torch.cat((positive[:, None, :], negatives), dim=1)[keep]  # [b', 1+N, n]
    dist = alignment_distances(cost[keep], orders, dp_lengths[keep], gamma)  # [b', 1+N]
    if normalize == "length":
        dist = dist / dp_lengths[keep, None].to(dist.dtype)
    logits = -dist / tau
    per_window = torch.logsumexp(logits, dim=1) - logits[:, 0]
    if keep.numel() < text_seq.shape[0]:
        logger.debug("alignment loss: %d of %d windows used", keep.numel(), text_seq.shape[0])
    return _mean(per_window.sum(), torch.tensor(float(keep.numel()), device=per_window.device), normalizer)
