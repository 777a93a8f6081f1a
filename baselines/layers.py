"""Small blocks shared by the baselines (shapes: ``N`` samples, ``F`` fields, ``k`` embedding width).

* :func:`fm_interaction` / :class:`FMInteraction`: the classic second-order FM term (Rendle 2010),
  ``sum_{i<j} <v_i, v_j> = 1/2 sum_f [(sum_i v_if)^2 - sum_i v_if^2]``, per sample. TorchRec's
  ``FactorizationMachine`` sums over all *scalar* pairs of the flattened input instead, which is a
  different function (docs/ENVIRONMENT.md), so it is not used.
* :class:`MLP`: ``(Linear -> ReLU -> Dropout)`` per hidden layer (TorchRec's ``MLP`` has no dropout).
* :class:`FirstOrder`: ``b + sum_i m_i w_i + <u, dense>`` (the linear / wide part; ``m`` are
  optional per-field factors, DIFM's reweighting).
* :class:`FieldSelfAttention`: multi-head self-attention over the fields with a ReLU residual
  (AutoInt's interacting layer, the vector-wise part of DIFM, Lu et al. IJCAI 2020, eq. 4-7).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn


def fm_interaction(emb: Tensor) -> Tensor:
    """Second-order FM term ``sum_{i<j} <e_i, e_j>`` of ``emb [N, F, k]`` -> ``[N]`` (O(F k))."""
    square_of_sum = emb.sum(dim=1).pow(2)  # [N, k]
    sum_of_square = emb.pow(2).sum(dim=1)  # [N, k]
    return 0.5 * (square_of_sum - sum_of_square).sum(dim=1)


class FMInteraction(nn.Module):
    """:func:`fm_interaction` as a module: ``[N, F, k] -> [N]``."""

    def forward(self, emb: Tensor) -> Tensor:
        return fm_interaction(emb)


class MLP(nn.Module):
    """``(Linear -> ReLU -> Dropout) x len(hidden)``: ``[N, in_dim] -> [N, hidden[-1]]``.

    With ``hidden=()`` it is the identity (``out_dim == in_dim``).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers = []
        width = in_dim
        for h in hidden:
            if int(h) < 1:
                raise ValueError(f"hidden layer widths must be >= 1, got {tuple(hidden)}")
            layers += [nn.Linear(width, int(h)), nn.ReLU(), nn.Dropout(dropout)]
            width = int(h)
        self.net = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class FirstOrder(nn.Module):
    """First-order (linear) term: ``b + sum_i m_i w_i + <u, dense>`` -> ``[N]``.

    Shapes: ``w [N, F]`` (the first-order weights of the sample's ids), ``m [N, F]`` optional
    per-field factors (None = 1), ``dense [N, D]``.
    """

    def __init__(self, n_dense: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))
        self.dense = nn.Linear(n_dense, 1, bias=False) if n_dense > 0 else None

    def forward(self, w: Tensor, dense: Tensor, m: Optional[Tensor] = None) -> Tensor:
        out = (w * m).sum(dim=1) if m is not None else w.sum(dim=1)
        if self.dense is not None:
            out = out + self.dense(dense.to(w.dtype)).squeeze(-1)
        return out + self.bias


class FieldSelfAttention(nn.Module):
    """Multi-head self-attention over fields with a residual (DIFM eq. 4-7 / AutoInt).

    For head h and fields i, j (``e_i`` in R^k)::

        alpha^h_ij = softmax_j(<W_Q^h e_i, W_K^h e_j>)          (no 1/sqrt(d) scaling, as in the paper)
        e~^h_i     = sum_j alpha^h_ij W_V^h e_j
        e~_i       = concat_h e~^h_i                             in R^{H d'}
        e^Res_i    = ReLU(e~_i + W_Res e_i)

    Shapes: ``[N, F, k] -> [N, F, H * d']``.
    """

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        if heads < 1 or head_dim < 1:
            raise ValueError(f"heads and head_dim must be >= 1, got {heads}, {head_dim}")
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.w_q = nn.Linear(dim, inner, bias=False)
        self.w_k = nn.Linear(dim, inner, bias=False)
        self.w_v = nn.Linear(dim, inner, bias=False)
        self.w_res = nn.Linear(dim, inner, bias=False)

    def _split(self, x: Tensor) -> Tensor:  # [N, F, H d'] -> [N, H, F, d']
        return x.reshape(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(self, emb: Tensor) -> Tensor:
        q, k, v = self._split(self.w_q(emb)), self._split(self.w_k(emb)), self._split(self.w_v(emb))
        alpha = torch.softmax(q @ k.transpose(-1, -2), dim=-1)  # [N, H, F, F]
        att = (alpha @ v).transpose(1, 2).reshape(emb.shape[0], emb.shape[1], self.heads * self.head_dim)
        return torch.relu(att + self.w_res(emb))


def as_hidden(hidden: Sequence[int], name: str = "mlp") -> Tuple[int, ...]:
    """A hidden-layer list from an override (list or tuple of positive ints)."""
    if isinstance(hidden, (int, str)):
        raise TypeError(f"{name} must be a sequence of layer widths, e.g. (128, 64), got {hidden!r}")
    out = tuple(int(h) for h in hidden)
    if any(h < 1 for h in out):
        raise ValueError(f"{name} widths must be >= 1, got {out}")
    return out
