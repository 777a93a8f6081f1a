"""Wide & Deep (Cheng et al., "Wide & Deep Learning for Recommender Systems", DLRS 2016).

ContentCTR 4.3.1 baseline "W&D". Per sample (one scored position, features of
:mod:`baselines.features`)::

    wide  = w_0 + sum_i w_{x_i} + <u, dense>            [N]  first-order weights of every sparse key,
                                                              including the cross-product feature
                                                              phi(x) = streamer_id x hour_id (eq. 1)
    deep  = h^T MLP([e_1, ..., e_F, dense]) + c         [N]  (eq. 2: ReLU layers over the embeddings)
    logit = wide + deep                                 (eq. 3, joint training)

The paper trains the wide part with FTRL + L1 and the deep part with AdaGrad; here both go through
the shared trainer (tables: fused row-wise Adagrad, dense parameters: AdamW).
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
from baselines.layers import MLP, FirstOrder, as_hidden
from kuaihl_rec.data.batch import BatchSpec
from kuaihl_rec.model.registry import register_model


class WideDeepHead(nn.Module):
    """``(emb [N, F, k], w [N, F'], dense [N, D]) -> logits [N]`` (wide + deep)."""

    def __init__(self, n_fields: int, dim: int, n_dense: int, mlp: Sequence[int], dropout: float) -> None:
        super().__init__()
        self.wide = FirstOrder(n_dense)
        self.deep = MLP(n_fields * dim + n_dense, mlp, dropout)
        self.out = nn.Linear(self.deep.out_dim, 1)

    def forward(self, emb: Tensor, w: Optional[Tensor], dense: Tensor) -> Tensor:
        deep_in = torch.cat([emb.flatten(1), dense.to(emb.dtype)], dim=1)
        return self.wide(w, dense) + self.out(self.deep(deep_in)).squeeze(-1)


class WideDeep(PerPositionCTR):
    """Wide & Deep over the per-position features; ``forward(batch) -> logits [b, n]``."""


@register_model(
    "wide_deep", family="id_baseline", default_loss="point", paper={"tau": 0.5619},
    description="Wide&Deep (Cheng et al. 2016) over the per-position ID features",
    overrides=("embedding_dim", "mlp", "dropout", "cross_features", "init_scale") + FEATURE_OVERRIDES,
)
def wide_deep(
    spec: BatchSpec,
    embedding_dim: int = 16,
    mlp: Sequence[int] = (128, 64),
    dropout: float = 0.1,
    cross_features: bool = True,
    init_scale: float = 1e-4,
    **features: Any,
) -> WideDeep:
    """Wide & Deep (Cheng et al. 2016). ``cross_features`` adds streamer x hour to the wide part;
    the feature overrides are those of :class:`~baselines.features.FeatureConfig`;
    ``init_scale``: tables start uniform in +-init_scale (near zero, like DeepCTR / FuxiCTR)."""
    cfg = features_from_overrides(features, crosses=cross_features)
    head = WideDeepHead(len(cfg.field_keys), embedding_dim, cfg.n_dense, as_hidden(mlp), dropout)
    return WideDeep.build(spec, cfg, head, embedding_dim, init_scale, linear_keys=cfg.keys)
