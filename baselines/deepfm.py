"""DeepFM (Guo et al., "DeepFM: A Factorization-Machine based Neural Network for CTR Prediction",
IJCAI 2017).

ContentCTR 4.3.1 baseline "DeepFM". FM and deep component share the field embeddings
(features of :mod:`baselines.features`); per sample::

    y_FM  = w_0 + sum_i w_{x_i} + <u, dense> + sum_{i<j} <e_i, e_j>     (eq. 2; one-hot fields, so
                                                                         x_i = 1 for the field's id)
    y_DNN = h^T MLP([e_1, ..., e_F, dense]) + c                          (eq. 3-4)
    logit = y_FM + y_DNN                                                 (eq. 1)

The pair sum is the classic FM term (:func:`baselines.layers.fm_interaction`), not TorchRec's
``FactorizationMachine``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from baselines.features import (
    FEATURE_OVERRIDES,
    PerPositionCTR,
    features_from_overrides,
)
from baselines.layers import MLP, FirstOrder, FMInteraction, as_hidden
from kuaihl_rec.data.batch import BatchSpec
from kuaihl_rec.model.registry import register_model


class DeepFMHead(nn.Module):
    """``(emb [N, F, k], w [N, F], dense [N, D]) -> logits [N]`` (first order + FM + deep)."""

    def __init__(self, n_fields: int, dim: int, n_dense: int, mlp: Sequence[int], dropout: float) -> None:
        super().__init__()
        self.first_order = FirstOrder(n_dense)
        self.fm = FMInteraction()
        self.deep = MLP(n_fields * dim + n_dense, mlp, dropout)
        self.out = nn.Linear(self.deep.out_dim, 1)

    def forward(self, emb: Tensor, w: Optional[Tensor], dense: Tensor) -> Tensor:
        deep_in = torch.cat([emb.flatten(1), dense.to(emb.dtype)], dim=1)
        return self.first_order(w, dense) + self.fm(emb) + self.out(self.deep(deep_in)).squeeze(-1)


class DeepFM(PerPositionCTR):
    """DeepFM over the per-position features; ``forward(batch) -> logits [b, n]``."""


@register_model(
    "deepfm", family="id_baseline", default_loss="point", paper={"tau": 0.5542},
    description="DeepFM (Guo et al. 2017) over the per-position ID features",
    overrides=("embedding_dim", "mlp", "dropout", "init_scale") + FEATURE_OVERRIDES,
)
def deepfm(
    spec: BatchSpec,
    embedding_dim: int = 16,
    mlp: Sequence[int] = (128, 64),
    dropout: float = 0.1,
    init_scale: float = 1e-4,
    **features: Any,
) -> DeepFM:
    """DeepFM (Guo et al. 2017); the feature overrides are those of :class:`~baselines.features.FeatureConfig`;
    ``init_scale``: tables start uniform in +-init_scale (near zero, like DeepCTR / FuxiCTR)."""
    cfg = features_from_overrides(features)
    head = DeepFMHead(len(cfg.field_keys), embedding_dim, cfg.n_dense, as_hidden(mlp), dropout)
    return DeepFM.build(spec, cfg, head, embedding_dim, init_scale)
