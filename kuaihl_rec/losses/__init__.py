"""Training losses of KuaiHL / ContentCTR: pointwise, border-aware pairwise, DTW alignment.

Papers (see ``docs/MODEL.md`` section 4):

* KuaiHL (ICME 2024), eq. 4-13: DTW alignment (eq. 4-5), partial-shuffle augmentation
  (eq. 6), InfoNCE (eq. 7), pointwise BCE (eq. 8), pairwise L0-L3 (eq. 9-12), total (eq. 13).
* ContentCTR (2023), eq. 7-14: DTW (eq. 7-8), InfoNCE (eq. 9), pairwise L0-L3 (eq. 10-13),
  total (eq. 14).

Modules (each docstring carries its equations and the decisions taken where the papers are
silent or ambiguous):

* :mod:`~kuaihl_rec.losses.pointwise`: BCE on soft labels (KuaiHL eq. 8, ContentCTR eq. 6).
* :mod:`~kuaihl_rec.losses.pairwise`: border-aware pairwise L0-L3 (KuaiHL eq. 9-12,
  ContentCTR eq. 10-13); means over kept pairs, or the papers' per-window sums (``@sum`` presets).
* :mod:`~kuaihl_rec.losses.dtw`: batched hard / soft DTW wavefront with a custom backward
  (KuaiHL eq. 4-5, ContentCTR eq. 7-8).
* :mod:`~kuaihl_rec.losses.augmentation`: swap augmentation (KuaiHL eq. 6) and shuffled negatives.
* :mod:`~kuaihl_rec.losses.alignment`: cosine cost and DTW InfoNCE (KuaiHL eq. 4-7,
  ContentCTR eq. 7-9); length-normalised distance, tau = 0.1.
* :mod:`~kuaihl_rec.losses.config`: :class:`LossConfig` and :data:`LOSS_PRESETS` (eq. 13 / 14).
* :mod:`~kuaihl_rec.losses.content_loss`: :class:`ContentLoss`, the weighted total.
* :mod:`~kuaihl_rec.losses.reduction`: the (data-parallel) mean every term is divided by.

Shapes: ``b`` windows, ``n`` positions per window (n = 20 in the papers), ``d`` model width.
``logits``, ``labels``, ``label_mask`` are ``[b, n]``; text / visual sequences ``[b, n, d]``.
"""

from __future__ import annotations

from kuaihl_rec.losses.alignment import ALIGN_NORMS, alignment_distances, alignment_loss, cosine_cost
from kuaihl_rec.losses.alignment import _prefix_lengths as _prefix_lengths
from kuaihl_rec.losses.augmentation import AUGMENT_MODES, sample_alignment_permutations
from kuaihl_rec.losses.augmentation import _MAX_RESAMPLE as _MAX_RESAMPLE
from kuaihl_rec.losses.config import LOSS_PRESETS, PAPER_SCALE_SUFFIX, LossConfig
from kuaihl_rec.losses.config import _KUAIHL as _KUAIHL
from kuaihl_rec.losses.content_loss import ContentLoss
from kuaihl_rec.losses.dtw import _DTW_BIG as _DTW_BIG
from kuaihl_rec.losses.dtw import _lengths_pair as _lengths_pair
from kuaihl_rec.losses.dtw import _WavefrontDTW as _WavefrontDTW
from kuaihl_rec.losses.dtw import dtw_from_cost
from kuaihl_rec.losses.pairwise import PAIR_REDUCTIONS, PAIR_SCOPES, PAIR_VARIANTS, pair_keep_mask, pairwise_loss
from kuaihl_rec.losses.pointwise import pointwise_loss
from kuaihl_rec.losses.reduction import Normalizer as Normalizer
from kuaihl_rec.losses.reduction import _as_bool_mask as _as_bool_mask
from kuaihl_rec.losses.reduction import _mean as _mean
from kuaihl_rec.losses.reduction import _zero_like as _zero_like

__all__ = [
    "PAIR_REDUCTIONS",
    "PAPER_SCALE_SUFFIX",
    "PAIR_VARIANTS",
    "PAIR_SCOPES",
    "AUGMENT_MODES",
    "ALIGN_NORMS",
    "pointwise_loss",
    "pairwise_loss",
    "pair_keep_mask",
    "dtw_from_cost",
    "cosine_cost",
    "sample_alignment_permutations",
    "alignment_distances",
    "alignment_loss",
    "LossConfig",
    "LOSS_PRESETS",
    "ContentLoss",
]
