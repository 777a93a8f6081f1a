"""Positive, swap and negative orders of the visual sequence for the alignment loss.

* Partial-shuffle augmentation (KuaiHL eq. 6): one ordered pair ``(i, j)`` of valid positions,
  ``i != j``, is drawn with probability::

      P(i, j) = softmax_{(i', j'), i' != j'}( cos(z_i', v_j') / augment_gamma )[i, j]

  and ``v_i``, ``v_j`` are exchanged. Decision: the diagonal is left out, since swapping a
  position with itself is no augmentation; default ``augment_gamma = 0.1``.
* Negatives (KuaiHL eq. 7, ContentCTR eq. 9): N uniform random permutations of the valid prefix
  of ``v``. Decision: a negative never equals the positive's order (nor, with augmentation, the
  identity or the swapped order), since such a "negative" only adds a constant; windows with
  fewer than 2 valid positions (3 with augmentation) have no distinct negative and are marked
  unusable (left out of the alignment mean).

Shapes: ``b`` windows, ``n`` positions; orders are long index tensors (``[b, n]``, or
``[b, N, n]`` for the negatives) meaning the sequence ``v[order]``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ["AUGMENT_MODES", "sample_alignment_permutations"]

AUGMENT_MODES: Tuple[str, ...] = ("none", "positive", "exclude")

# Attempts of the vectorised rejection sampling of negatives (each succeeds with p >= 2/3).
_MAX_RESAMPLE = 64


def _sample_swap(
    sim: Tensor, valid: Tensor, pos_idx: Tensor, augment_gamma: float, generator: Optional[torch.Generator]
) -> Tensor:
    """The swapped order ``[b, n]`` of KuaiHL eq. 6 (the identity for windows without a valid pair).

    ``sim [b, n, n]`` cosine similarities, ``valid [b, n]`` bool valid positions, ``pos_idx [n]``
    the positions ``0..n-1``.
    """
    b, n, _ = sim.shape
    device = sim.device
    rng_device = generator.device if generator is not None else device
    identity = pos_idx.expand(b, n)
    pair_ok = valid[:, :, None] & valid[:, None, :] & (pos_idx[:, None] != pos_idx[None, :])
    has_pair = pair_ok.flatten(1).any(dim=1)
    logits = (sim.float() / augment_gamma).masked_fill(~pair_ok, float("-inf")).flatten(1)
    # Rows without any valid pair get a dummy uniform row; their swap is discarded.
    logits = torch.where(has_pair[:, None], logits, torch.zeros_like(logits))
    probs = torch.softmax(logits, dim=1)
    flat = torch.multinomial(probs.to(rng_device), 1, generator=generator).squeeze(1).to(device)
    i, j = flat // n, flat % n
    rows = torch.arange(b, device=device)
    swapped = identity.clone()
    swapped[rows, i] = j
    swapped[rows, j] = i
    return torch.where(has_pair[:, None], swapped, identity)


def _sample_negatives(
    valid: Tensor,
    excluded: Tuple[Tensor, ...],
    usable: Tensor,
    n_negatives: int,
    generator: Optional[torch.Generator],
) -> Tuple[Tensor, Tensor]:
    """N random permutations of each valid prefix, redrawn while equal to an excluded order.

    Args:
        valid: ``[b, n]`` bool valid (prefix) positions; padded positions stay in place.
        excluded: orders ``[b, n]`` a negative must differ from (the identity, maybe the swap).
        usable: ``[b]`` bool, windows long enough to have a distinct negative.
        n_negatives: N.
        generator: optional ``torch.Generator``; the draws are made on its device.

    Returns:
        ``negatives [b, N, n]`` and ``usable [b]`` (narrowed if the rejection sampling ran out).
    """
    b, n = valid.shape
    device = valid.device
    rng_device = generator.device if generator is not None else device
    pos_idx = torch.arange(n, device=device)

    def draw() -> Tensor:
        keys = torch.rand((b, n_negatives, n), generator=generator, device=rng_device).to(device)
        keys = torch.where(valid[:, None, :], keys, 2.0 + pos_idx.to(keys.dtype))
        return keys.argsort(dim=-1)

    def rejected(perms: Tensor) -> Tensor:
        bad = (perms == excluded[0][:, None, :]).all(dim=-1)
        for order in excluded[1:]:
            bad |= (perms == order[:, None, :]).all(dim=-1)
        return bad & usable[:, None]

    negatives = draw()
    bad = rejected(negatives)
    for _ in range(_MAX_RESAMPLE):
        if not bool(bad.any()):
            break
        negatives = torch.where(bad[..., None], draw(), negatives)
        bad = rejected(negatives)
    if bool(bad.any()):  # pragma: no cover - probability < (1/3)^64
        usable = usable & ~bad.any(dim=1)
    return negatives, usable


@torch.no_grad()
def sample_alignment_permutations(
    sim: Tensor,
    lengths: Tensor,
    n_negatives: int,
    augment: str = "positive",
    augment_gamma: float = 0.1,
    generator: Optional[torch.Generator] = None,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sample the positive order, the swap and the N negative orders of ``v`` (no gradient).

    * Swap (KuaiHL eq. 6): one ordered pair ``(i, j)``, ``i != j < m``, drawn with probability
      ``softmax(sim[i, j] / augment_gamma)`` over the valid off-diagonal pairs; ``v_i`` and
      ``v_j`` are exchanged. ``augment="none"`` draws nothing (swap = identity).
    * Positive: the swapped order for ``augment="positive"`` (KuaiHL), else the identity.
    * Negatives (KuaiHL eq. 7, ContentCTR eq. 9): uniform random permutations of the valid
      prefix (padded positions stay in place), redrawn (vectorised rejection) while equal to
      the identity or, with augmentation, to the swapped order.

    Args:
        sim: ``[b, n, n]`` cosine similarities ``cos(z_i, v_j)``.
        lengths: ``[b]`` valid prefix lengths ``m``.
        n_negatives: N.
        augment: ``"none" | "positive" | "exclude"``.
        augment_gamma: softmax temperature of eq. 6.
        generator: optional ``torch.Generator`` for reproducibility; the draws are made on its
            device and moved to ``sim``'s.

    Returns:
        ``positive [b, n]``, ``negatives [b, N, n]``, ``swap [b, n]`` (long index orders: the
        sequence ``v[order]``) and ``usable [b]`` (bool: the window has distinct negatives).
    """
    if augment not in AUGMENT_MODES:
        raise ValueError(f"augment must be one of {AUGMENT_MODES}, got {augment!r}")
    b, n, _ = sim.shape
    device = sim.device
    lengths = lengths.to(device=device, dtype=torch.long)
    pos_idx = torch.arange(n, device=device)
    valid = pos_idx[None, :] < lengths[:, None]  # [b, n]
    identity = pos_idx.expand(b, n)
    if augment == "none":
        swap = identity.clone()
        excluded: Tuple[Tensor, ...] = (identity,)
        usable = lengths >= 2  # windows where some permutation differs from every excluded order
    else:
        swap = _sample_swap(sim, valid, pos_idx, augment_gamma, generator)
        excluded = (identity, swap)
        usable = lengths >= 3
    positive = swap if augment == "positive" else identity
    negatives, usable = _sample_negatives(valid, excluded, usable, n_negatives, generator)
    return positive, negatives, swap, usable
