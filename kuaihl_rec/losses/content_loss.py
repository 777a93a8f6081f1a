"""The training loss module: the weighted total of KuaiHL eq. 13 / ContentCTR eq. 14.

::

    L = w_point * L_point (eq. 8) + w_pair * L_pair (eq. 9-12) + w_align * L_align (eq. 4-7)

configured by a :class:`~kuaihl_rec.losses.config.LossConfig` or a preset name of
:data:`~kuaihl_rec.losses.config.LOSS_PRESETS`.

Shapes: ``logits``, ``labels``, ``label_mask``, ``valid_mask`` ``[b, n]``; ``text_seq``,
``visual_seq`` ``[b, n, d]``; every returned value a scalar ``[]``.
"""

from __future__ import annotations

from typing import Dict, Optional, Union

import torch
from torch import Tensor, nn

from kuaihl_rec.losses.alignment import alignment_loss
from kuaihl_rec.losses.config import LOSS_PRESETS, LossConfig
from kuaihl_rec.losses.pairwise import pairwise_loss
from kuaihl_rec.losses.pointwise import pointwise_loss
from kuaihl_rec.losses.reduction import Normalizer

__all__ = ["ContentLoss"]


class ContentLoss(nn.Module):
    """The training loss of KuaiHL (eq. 13) / ContentCTR (eq. 14), configured by :class:`LossConfig`.

    Example::

        loss_fn = ContentLoss("kuaihl")
        out = loss_fn(logits, labels, label_mask, text_seq=z, visual_seq=v, valid_mask=valid)
        out["loss"].backward()

    Args:
        config: a :class:`LossConfig` or the name of a preset in :data:`LOSS_PRESETS`.
    """

    def __init__(self, config: Union[LossConfig, str] = "kuaihl") -> None:
        super().__init__()
        if isinstance(config, str):
            if config not in LOSS_PRESETS:
                raise ValueError(f"unknown loss preset {config!r}; known: {sorted(LOSS_PRESETS)}")
            config = LOSS_PRESETS[config]
        self.config = config
        # Default normalizer for forward() (set by a data-parallel trainer; see reduction._mean).
        self.normalizer: Optional[Normalizer] = None

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        label_mask: Optional[Tensor] = None,
        text_seq: Optional[Tensor] = None,
        visual_seq: Optional[Tensor] = None,
        valid_mask: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
        normalizer: Optional[Normalizer] = None,
    ) -> Dict[str, Tensor]:
        """Compute the weighted total.

        Args:
            logits, labels, label_mask: ``[b, n]`` (see :func:`pointwise_loss`).
            text_seq, visual_seq: ``[b, n, d]`` projected sequences; required when ``config.align``
                (and ``w_align > 0``).
            valid_mask: ``[b, n]`` valid (prefix) positions for the alignment; ``None`` = all.
            generator: optional ``torch.Generator`` for the alignment's random draws.
            normalizer: maps each term's local count (positions, pairs, windows) to the count it
                is divided by; the trainer passes ``all_reduce(count) / world_size`` so that
                data-parallel training optimises the global batch's mean (see ``reduction._mean``).

        Returns:
            ``{"loss": total (with gradient), "point", "pair", "align"}``; the components are
            detached, unweighted, and 0 when switched off.
        """
        cfg = self.config
        normalizer = normalizer if normalizer is not None else self.normalizer
        point = pointwise_loss(logits, labels, label_mask, normalizer=normalizer)
        total = cfg.w_point * point
        if cfg.pair_variant != "none":
            pair = pairwise_loss(
                logits,
                labels,
                label_mask,
                variant=cfg.pair_variant,
                sigma=cfg.sigma,
                scope=cfg.pair_scope,
                normalizer=normalizer,
                reduction=cfg.pair_reduction,
            )
            total = total + cfg.w_pair * pair
        else:
            pair = logits.new_zeros(())
        align = self._alignment_term(text_seq, visual_seq, valid_mask, generator, normalizer)
        if align is not None:
            total = total + cfg.w_align * align
        else:
            align = logits.new_zeros(())
        return {"loss": total, "point": point.detach(), "pair": pair.detach(), "align": align.detach()}

    def _alignment_term(
        self,
        text_seq: Optional[Tensor],
        visual_seq: Optional[Tensor],
        valid_mask: Optional[Tensor],
        generator: Optional[torch.Generator],
        normalizer: Optional[Normalizer],
    ) -> Optional[Tensor]:
        """The unweighted alignment loss ``[]``, or ``None`` when the term is switched off.

        With ``w_align == 0`` the term is only a statistic: skipped when no sequences are given.
        """
        cfg = self.config
        if not cfg.align or (cfg.w_align == 0 and (text_seq is None or visual_seq is None)):
            return None
        if text_seq is None or visual_seq is None:
            raise ValueError(
                "LossConfig.align is on but text_seq / visual_seq were not given: pass the projected "
                "[b, n, d] text and visual sequences, or use a config with align=False"
            )
        return alignment_loss(
            text_seq,
            visual_seq,
            valid_mask,
            n_negatives=cfg.n_negatives,
            tau=cfg.align_tau,
            gamma=cfg.soft_dtw_gamma,
            augment=cfg.augment,
            augment_gamma=cfg.augment_gamma,
            normalize=cfg.align_norm,
            generator=generator,
            normalizer=normalizer,
        )

    def extra_repr(self) -> str:
        return repr(self.config)
