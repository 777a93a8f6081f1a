"""Configuration and named presets of the total loss (KuaiHL eq. 13, ContentCTR eq. 14).

::

    L = w_point * L_point + w_align * L_align + w_pair * L_pair

with (lambda1, lambda2, lambda3) = (w_point, w_align, w_pair) = (0.65, 0.15, 0.20) and
``L_pair = L1`` (border-aware) in both papers. :data:`LOSS_PRESETS` names the papers' settings,
the authors' public code and the rows of the loss ablation (ContentCTR Table 4 / KuaiHL Table II).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional

from kuaihl_rec.losses.alignment import ALIGN_NORMS
from kuaihl_rec.losses.augmentation import AUGMENT_MODES
from kuaihl_rec.losses.pairwise import PAIR_REDUCTIONS, PAIR_SCOPES, PAIR_VARIANTS

__all__ = ["LossConfig", "LOSS_PRESETS", "PAPER_SCALE_SUFFIX"]


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Weights and options of the total loss ``L = w_point L_point + w_align L_align + w_pair L_pair``.

    KuaiHL eq. 13 / ContentCTR eq. 14 with (lambda1, lambda2, lambda3) = (0.65, 0.15, 0.20) and
    L_pair = L1 (border-aware). Defaults are the KuaiHL paper; see :data:`LOSS_PRESETS`.

    Fields:
        w_point, w_align, w_pair: weights (lambda1, lambda2, lambda3).
        pair_variant: ``"none" | "L0" | "L1" | "L2" | "L3"``.
        sigma: pairwise scale (papers 10, official code 1.0).
        pair_scope: ``"window" | "batch"``.
        pair_reduction: ``"mean"`` (ours: mean over kept pairs) or ``"window_sum"`` (the papers'
            scale, eq. 9-13: sum over each window's kept pairs, averaged over windows); see
            :mod:`kuaihl_rec.losses.pairwise`. Presets ``"<name>@sum"`` use the papers' scale.
        align: whether the DTW alignment loss is on (needs text / visual sequences).
        n_negatives: N shuffled negatives.
        align_tau: InfoNCE temperature.
        soft_dtw_gamma: ``None`` = hard DTW, else soft-DTW gamma.
        augment: ``"none" | "positive" | "exclude"``.
        augment_gamma: softmax temperature of the swap sampling (KuaiHL eq. 6).
        align_norm: ``"length" | "none"``: DTW distance divided by the valid length, or raw.
    """

    w_point: float = 0.65
    w_align: float = 0.15
    w_pair: float = 0.20
    pair_variant: str = "L1"
    sigma: float = 10.0
    pair_scope: str = "window"
    pair_reduction: str = "mean"
    align: bool = True
    n_negatives: int = 8
    align_tau: float = 0.1
    soft_dtw_gamma: Optional[float] = None
    augment: str = "positive"
    augment_gamma: float = 0.1
    align_norm: str = "length"

    def __post_init__(self) -> None:
        if self.pair_variant not in PAIR_VARIANTS:
            raise ValueError(f"pair_variant must be one of {PAIR_VARIANTS}, got {self.pair_variant!r}")
        if self.pair_scope not in PAIR_SCOPES:
            raise ValueError(f"pair_scope must be one of {PAIR_SCOPES}, got {self.pair_scope!r}")
        if self.pair_reduction not in PAIR_REDUCTIONS:
            raise ValueError(f"pair_reduction must be one of {PAIR_REDUCTIONS}, got {self.pair_reduction!r}")
        if self.augment not in AUGMENT_MODES:
            raise ValueError(f"augment must be one of {AUGMENT_MODES}, got {self.augment!r}")
        if self.align_norm not in ALIGN_NORMS:
            raise ValueError(f"align_norm must be one of {ALIGN_NORMS}, got {self.align_norm!r}")
        for name in ("w_point", "w_align", "w_pair"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        if self.n_negatives < 1:
            raise ValueError(f"n_negatives must be >= 1, got {self.n_negatives}")
        if not self.align_tau > 0:
            raise ValueError(f"align_tau must be > 0, got {self.align_tau}")
        if self.soft_dtw_gamma is not None and not self.soft_dtw_gamma > 0:
            raise ValueError(f"soft_dtw_gamma must be None or > 0, got {self.soft_dtw_gamma}")
        if not self.augment_gamma > 0:
            raise ValueError(f"augment_gamma must be > 0, got {self.augment_gamma}")


_KUAIHL = LossConfig()
# Loss ablation (ContentCTR Table 4 / KuaiHL Table II): the same weights, components switched
# on or off, so the rows differ only by the terms they name.
LOSS_PRESETS: Dict[str, LossConfig] = {
    "kuaihl": _KUAIHL,
    "contentctr": dataclasses.replace(_KUAIHL, augment="none"),
    # The authors' public code, as far as the spec records it: soft-DTW gamma 0.1, no
    # temperature (raw distance, tau 1), align weight 0.01, 7 negatives, swapped order only
    # excluded from the negatives, sigma 1.0.
    "official": dataclasses.replace(
        _KUAIHL,
        w_align=0.01,
        sigma=1.0,
        n_negatives=7,
        align_tau=1.0,
        soft_dtw_gamma=0.1,
        augment="exclude",
        align_norm="none",
    ),
    "point": dataclasses.replace(_KUAIHL, pair_variant="none", align=False),
    "point+L0": dataclasses.replace(_KUAIHL, pair_variant="L0", align=False),
    "point+L1": dataclasses.replace(_KUAIHL, pair_variant="L1", align=False),
    "point+L2": dataclasses.replace(_KUAIHL, pair_variant="L2", align=False),
    "point+L3": dataclasses.replace(_KUAIHL, pair_variant="L3", align=False),
    "point+L1+align": dataclasses.replace(_KUAIHL, augment="none"),
    "point+L1+align+aug": _KUAIHL,
    # ContentCTR-HL (PHD, binary labels): point + align only (ContentCTR 4.3, KuaiHL IV).
    "point+align": dataclasses.replace(_KUAIHL, pair_variant="none", augment="none"),
    "contentctr_hl": dataclasses.replace(_KUAIHL, pair_variant="none", augment="none"),
}
# The papers' pair scale (eq. 9-13 as written: a sum over each window's kept pairs, averaged over
# windows, lambda3 = 0.20) for every preset with a pairwise term: "<name>@sum".
PAPER_SCALE_SUFFIX = "@sum"
LOSS_PRESETS.update({
    name + PAPER_SCALE_SUFFIX: dataclasses.replace(cfg, pair_reduction="window_sum")
    for name, cfg in list(LOSS_PRESETS.items())
    if cfg.pair_variant != "none"
})
