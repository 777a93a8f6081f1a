"""DCN-M / DCN-V2 (Wang et al., "DCN V2: Improved Deep & Cross Network and Practical Lessons for
Web-scale Learning to Rank Systems", WWW 2021), the mixture of low-rank experts.

ContentCTR 4.3.1 baseline "DCN-M". Per sample, ``x_0 = [e_1, ..., e_F, dense]`` (features of
:mod:`baselines.features`), cross layers l = 0..L-1 (section 5, "mixture of low-rank DCN")::

    E_i(x_l) = x_0 * (U_i^l g(C_i^l g(V_i^l^T x_l)) + b_l)           expert i, rank r, g = tanh
    x_{l+1}  = sum_i G_i(x_l) E_i(x_l) + x_l                          G = softmax_i(<a_i, x_l>)

implemented by TorchRec's ``LowRankMixtureCrossNet`` with ``activation=torch.tanh`` (which
matches these equations; ``tests/test_baselines.py`` re-derives them). Combination with the deep
network (section 4, Figure 2)::

    parallel (default):  logit = w^T [x_L, MLP(x_0)] + c
    stacked:             logit = w^T MLP(x_L) + c

DCN-V2 has no separate first-order part, so no width-1 tables are built.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn
from torchrec.modules.crossnet import LowRankMixtureCrossNet

from baselines.features import (
    FEATURE_OVERRIDES,
    PerPositionCTR,
    features_from_overrides,
)
from baselines.layers import MLP, as_hidden
from kuaihl_rec.data.batch import BatchSpec
from kuaihl_rec.model.registry import register_model

STRUCTURES = ("parallel", "stacked")


class DCNMHead(nn.Module):
    """``(emb [N, F, k], w (unused), dense [N, D]) -> logits [N]`` (cross network + deep network)."""

    def __init__(
        self,
        n_fields: int,
        dim: int,
        n_dense: int,
        cross_layers: int,
        experts: int,
        low_rank: int,
        mlp: Sequence[int],
        dropout: float,
        structure: str,
    ) -> None:
        super().__init__()
        if structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
        if cross_layers < 1 or experts < 1 or low_rank < 1:
            raise ValueError(
                f"cross_layers, experts and low_rank must be >= 1, got {cross_layers}, {experts}, {low_rank}"
            )
        self.structure = structure
        in_dim = n_fields * dim + n_dense
        self.cross = LowRankMixtureCrossNet(
            in_features=in_dim, num_layers=cross_layers, num_experts=experts, low_rank=low_rank, activation=torch.tanh
        )
        self.deep = MLP(in_dim, mlp, dropout)
        self.out = nn.Linear(in_dim + self.deep.out_dim if structure == "parallel" else self.deep.out_dim, 1)

    def forward(self, emb: Tensor, w: Optional[Tensor], dense: Tensor) -> Tensor:
        x0 = torch.cat([emb.flatten(1), dense.to(emb.dtype)], dim=1)
        if self.structure == "parallel":
            h = torch.cat([self.cross(x0), self.deep(x0)], dim=1)
        else:
            h = self.deep(self.cross(x0))
        return self.out(h).squeeze(-1)


class DCNM(PerPositionCTR):
    """DCN-M over the per-position features; ``forward(batch) -> logits [b, n]``."""


@register_model(
    "dcn_m", family="id_baseline", default_loss="point", paper={"tau": 0.5629},
    description="DCN-M (Wang et al. 2021) over the per-position ID features",
    overrides=(
        "embedding_dim", "mlp", "dropout", "cross_layers", "experts", "low_rank", "structure", "init_scale"
    ) + FEATURE_OVERRIDES,
)
def dcn_m(
    spec: BatchSpec,
    embedding_dim: int = 16,
    mlp: Sequence[int] = (128, 64),
    dropout: float = 0.1,
    cross_layers: int = 2,
    experts: int = 4,
    low_rank: int = 32,
    structure: str = "parallel",
    init_scale: float = 1e-4,
    **features: Any,
) -> DCNM:
    """DCN-M (Wang et al. 2021): ``cross_layers`` layers of ``experts`` rank-``low_rank`` experts,
    ``structure`` "parallel" | "stacked"; the feature overrides are those of
    :class:`~baselines.features.FeatureConfig`; ``init_scale``: tables start uniform in
    +-init_scale (near zero, like DeepCTR / FuxiCTR)."""
    cfg = features_from_overrides(features)
    head = DCNMHead(
        len(cfg.field_keys), embedding_dim, cfg.n_dense, int(cross_layers), int(experts), int(low_rank),
        as_hidden(mlp), dropout, structure,
    )
    return DCNM.build(spec, cfg, head, embedding_dim, init_scale, first_order=False)
