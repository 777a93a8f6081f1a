"""DIFM (Lu et al., "A Dual Input-aware Factorization Machine for CTR Prediction", IJCAI 2020).

ContentCTR 4.3.1 baseline "DIFM": an FM whose first-order weights and embeddings are reweighted,
per input, by factors learned from the input at the vector level and at the bit level. Per sample,
with field embeddings ``e_1..e_F`` (features of :mod:`baselines.features`)::

    vector-wise  e^Res_i = ReLU(concat_h sum_j softmax_j(<W_Q^h e_i, W_K^h e_j>) W_V^h e_j + W_Res e_i)
                 m_vec   = P_vec [e^Res_1, ..., e^Res_F]                      in R^F   (eq. 4-8)
    bit-wise     m_bit   = P_bit MLP([e_1, ..., e_F])                          in R^F   (eq. 9-10)
    combination  m_x     = m_vec + m_bit                                                (eq. 11)
    reweighting  w'_i = m_{x,i} w_i,   v'_i = m_{x,i} e_i                               (eq. 12-13)
    prediction   logit   = w_0 + sum_i w'_i + <u, dense> + sum_{i<j} <v'_i, v'_j>       (eq. 14)

``P_vec`` and ``P_bit`` have no bias. Dense counters (when on) enter the linear term only and are
not reweighted (they have no field factor); the factor networks read the sparse embeddings only.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from torch import Tensor, nn

from baselines.features import (
    FEATURE_OVERRIDES,
    PerPositionCTR,
    features_from_overrides,
)
from baselines.layers import (
    MLP,
    FieldSelfAttention,
    FirstOrder,
    FMInteraction,
    as_hidden,
)
from kuaihl_rec.data.batch import BatchSpec
from kuaihl_rec.model.registry import register_model


class InputAwareFactors(nn.Module):
    """DIFM's dual factor network: ``emb [N, F, k] -> (m_x, m_vec, m_bit)``, each ``[N, F]``."""

    def __init__(self, n_fields: int, dim: int, heads: int, head_dim: int, mlp: Sequence[int], dropout: float) -> None:
        super().__init__()
        if not mlp:
            raise ValueError("DIFM's bit-wise factor network needs at least one hidden layer (mlp)")
        self.vector_wise = FieldSelfAttention(dim, heads, head_dim)
        self.p_vec = nn.Linear(n_fields * heads * head_dim, n_fields, bias=False)
        self.bit_wise = MLP(n_fields * dim, mlp, dropout)
        self.p_bit = nn.Linear(self.bit_wise.out_dim, n_fields, bias=False)

    def forward(self, emb: Tensor):
        m_vec = self.p_vec(self.vector_wise(emb).flatten(1))
        m_bit = self.p_bit(self.bit_wise(emb.flatten(1)))
        return m_vec + m_bit, m_vec, m_bit


class DIFMHead(nn.Module):
    """``(emb [N, F, k], w [N, F], dense [N, D]) -> logits [N]`` (reweighted FM, eq. 14)."""

    def __init__(
        self, n_fields: int, dim: int, n_dense: int, heads: int, head_dim: int, mlp: Sequence[int], dropout: float
    ) -> None:
        super().__init__()
        self.factors = InputAwareFactors(n_fields, dim, heads, head_dim, mlp, dropout)
        self.first_order = FirstOrder(n_dense)
        self.fm = FMInteraction()

    def forward(self, emb: Tensor, w: Optional[Tensor], dense: Tensor) -> Tensor:
        m_x = self.factors(emb)[0]
        return self.first_order(w, dense, m_x) + self.fm(emb * m_x.unsqueeze(-1))


class DIFM(PerPositionCTR):
    """DIFM over the per-position features; ``forward(batch) -> logits [b, n]``."""


@register_model(
    "difm", family="id_baseline", default_loss="point", paper={"tau": 0.5697},
    description="DIFM (Lu et al. 2020) over the per-position ID features",
    overrides=("embedding_dim", "mlp", "dropout", "att_heads", "att_head_dim", "init_scale") + FEATURE_OVERRIDES,
)
def difm(
    spec: BatchSpec,
    embedding_dim: int = 16,
    mlp: Sequence[int] = (128, 64),
    dropout: float = 0.1,
    att_heads: int = 2,
    att_head_dim: int = 8,
    init_scale: float = 1e-4,
    **features: Any,
) -> DIFM:
    """DIFM (Lu et al. 2020): ``mlp`` is the bit-wise factor network, ``att_heads x att_head_dim``
    the vector-wise one; the feature overrides are those of :class:`~baselines.features.FeatureConfig`;
    ``init_scale``: tables start uniform in +-init_scale (near zero, like DeepCTR / FuxiCTR)."""
    cfg = features_from_overrides(features)
    head = DIFMHead(
        len(cfg.field_keys), embedding_dim, cfg.n_dense, int(att_heads), int(att_head_dim), as_hidden(mlp), dropout
    )
    return DIFM.build(spec, cfg, head, embedding_dim, init_scale)
