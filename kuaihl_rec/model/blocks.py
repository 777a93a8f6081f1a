"""Attention and feed-forward building blocks (pre-LayerNorm residual style).

Multi-head attention as in ContentCTR eq. 3-5::

    MultiHead(Q, K, V) = Concat(head_1 .. head_{n_h}) W^O
    head_i = softmax(Q W_i^Q (K W_i^K)^T / sqrt(d_h) + M) V W_i^V

with ``W_i^{Q,K,V}`` in R^{d x d_h} and an optional mask M (boolean here: True = may attend).
The residual blocks are pre-LayerNorm (docs/MODEL.md section 3, as the official code): ``x + f(LN(x))``.

Nothing in these blocks mixes positions except the masked attention (LayerNorm normalises
over features only, no batch statistics), so a causal mask gives exact causality.
The attention kernel is ``torch.nn.functional.scaled_dot_product_attention`` with an explicit
boolean mask (available since torch 2.0; no newer-only argument is used).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention (ContentCTR eq. 3-5), no normalisation.

    Args:
        d: model width (input and output).
        n_heads: n_h.
        d_head: d_h (per-head width).
        dropout: dropout on the attention weights (training only).

    Shapes: ``q [B, Lq, d]``, ``kv [B, Lk, d]``, ``mask`` bool broadcastable to
    ``[B, n_h, Lq, Lk]`` (True = attend) -> ``[B, Lq, d]``.
    """

    def __init__(self, d: int, n_heads: int, d_head: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.d_head = d_head
        inner = n_heads * d_head
        self.q_proj = nn.Linear(d, inner)
        self.k_proj = nn.Linear(d, inner)
        self.v_proj = nn.Linear(d, inner)
        self.o_proj = nn.Linear(inner, d)
        self.dropout = dropout

    def _heads(self, x: Tensor) -> Tensor:
        # [B, L, h * d_h] -> [B, h, L, d_h]
        return x.unflatten(-1, (self.n_heads, self.d_head)).transpose(1, 2)

    def forward(self, q: Tensor, kv: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        qh = self._heads(self.q_proj(q))
        kh = self._heads(self.k_proj(kv))
        vh = self._heads(self.v_proj(kv))
        out = F.scaled_dot_product_attention(
            qh, kh, vh, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.o_proj(out.transpose(1, 2).flatten(-2))


class FeedForward(nn.Module):
    """Pre-LN position-wise feed-forward: ``FFN(x) = W_2 drop(GELU(W_1 LN(x)))`` (no residual)."""

    def __init__(self, d: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(self.norm(x))))))


class SelfAttentionLayer(nn.Module):
    """Pre-LN transformer layer::

        x = x + drop(MHA(LN(x), LN(x), mask))
        x = x + FFN(x)

    Used by the decoder (Algorithm 2) and by the self-attention fusion variants.
    """

    def __init__(self, d: int, n_heads: int, d_head: int, ffn_hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.attn = MultiHeadAttention(d, n_heads, d_head, dropout)
        self.ffn = FeedForward(d, ffn_hidden, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        h = self.norm(x)
        x = x + self.drop(self.attn(h, h, mask))
        return x + self.ffn(x)

    def forward_at(self, x: Tensor, x_q: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """The same layer for a subset of query positions only::

            y = x_q + drop(MHA(LN(x_q), LN(x), mask));   y = y + FFN(y)

        ``x [B, L, d]`` the whole residual stream (keys and values), ``x_q [B, Lq, d]`` the rows of
        ``x`` whose outputs are wanted, ``mask`` broadcastable to ``[B, n_h, Lq, L]`` -> ``[B, Lq, d]``.
        Equal to ``forward(x, mask_full)`` at those rows (LayerNorm, attention queries and the FFN are
        per row), at ``Lq / L`` of the query-side cost: the streaming scorer's last decoder layer.
        """
        h = self.norm(x)
        y = x_q + self.drop(self.attn(self.norm(x_q), h, mask))
        return y + self.ffn(y)


class CrossAttentionLayer(nn.Module):
    """Pre-LN cross-attention layer with a residual stream ``x``::

        q  = LN_q(query if query is given else x)
        kv = concat([LN_kv(context), q])   if kv_include_query   (Perceiver, Algorithm 1)
             LN_kv(context)                otherwise             (plain cross-attention)
        x  = x + drop(MHA(q, kv))
        x  = x + FFN(x)

    ``kv_include_query`` is the Perceiver-resampler form of Algorithm 1's
    ``attention_i(q=x, kv=concat([x_f, x]))``: the latent sees the content tokens and itself,
    each normalised by its own LayerNorm.

    Shapes: ``x [B, Lq, d]``, ``context [B, Lk, d]``, ``query`` like ``x`` -> ``[B, Lq, d]``.
    """

    def __init__(
        self, d: int, n_heads: int, d_head: int, ffn_hidden: int, dropout: float = 0.0, kv_include_query: bool = False
    ) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(d)
        self.norm_kv = nn.LayerNorm(d)
        self.attn = MultiHeadAttention(d, n_heads, d_head, dropout)
        self.ffn = FeedForward(d, ffn_hidden, dropout)
        self.drop = nn.Dropout(dropout)
        self.kv_include_query = kv_include_query

    def forward(
        self, x: Tensor, context: Tensor, query: Optional[Tensor] = None, mask: Optional[Tensor] = None
    ) -> Tensor:
        q = self.norm_q(x if query is None else query)
        kv = self.norm_kv(context)
        if self.kv_include_query:
            kv = torch.cat([kv, q], dim=1)
        x = x + self.drop(self.attn(q, kv, mask))
        return x + self.ffn(x)


class MLPHead(nn.Module):
    """Projection head ``proj(x) = W_2 drop(GELU(W_1 LN?(x)))``: d_in -> d (ContentCTR eq. 2 proj_1 / proj_2).

    ``input_norm`` puts a LayerNorm over the raw input features first (features only).
    """

    def __init__(self, d_in: int, d: int, dropout: float = 0.0, input_norm: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_in) if input_norm else nn.Identity()
        self.fc1 = nn.Linear(d_in, d)
        self.fc2 = nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(self.norm(x)))))
