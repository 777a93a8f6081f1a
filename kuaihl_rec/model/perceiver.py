"""Per-segment fusion of the content tokens E_f with the id latent E_u: the Perceiver block
(ContentCTR Algorithm 1, KuaiHL III-B) and the attention variants of ContentCTR Table 1.

Every segment of every window is fused independently (``B = b * n`` rows), so this module never
mixes positions: causality is the decoder's business alone.

Notation: ``x_f in R^{B x k x d}`` the k content tokens of a segment (k_v visual tokens and the
text token, ContentCTR 3.2.1), ``u in R^{B x 1 x d}`` the id latent (streamer embedding E_u,
history feature, or a learned latent when the id is ablated). Every layer l is a pre-LN
residual block with its own weights; ``Attn_l(q, kv)`` is multi-head attention (eq. 3-4) with
``LN`` applied to its query and key/value inputs, ``FFN_l(x) = MLP(LN(x))``. For each mode:

``perceiver`` (ContentCTR Algorithm 1; the default)::

    x_0 = u
    x_l = x'_l + FFN_l(x'_l),   x'_l = x_{l-1} + Attn_l(q = x_{l-1}, kv = concat([x_f, x_{l-1}]))
    E_p = x_L                                                     -> [B, d]

``cross_qkv`` (CrossAttention-qkv: query initialised with E_u and carried, kv = E_f only)::

    x_0 = u
    x'_l = x_{l-1} + Attn_l(q = x_{l-1}, kv = x_f);   x_l = x'_l + FFN_l(x'_l)
    E_p = x_L

  The only difference from the Perceiver is that the latent is not part of its own key/value set.

``cross_q`` (CrossAttention-q: the query of *every* layer is E_u itself, kv = E_f)::

    x_0 = u
    x'_l = x_{l-1} + Attn_l(q = u, kv = x_f);   x_l = x'_l + FFN_l(x'_l)
    E_p = x_L

  The residual stream accumulates the layers' outputs, but no layer's query sees the previous
  layer's result (no carried query state).

``cross_kv`` (CrossAttention-kv: kv = E_u, query initialised with the content tokens)::

    t_0 = x_f                                                     [B, k, d]
    t'_l = t_{l-1} + Attn_l(q = t_{l-1}, kv = u);   t_l = t'_l + FFN_l(t'_l)
    E_p = mean_k(t_L)

  With a single key the softmax is 1, so each layer adds ``W^O W^V LN(u)`` to every token: the id
  conditions the tokens additively and the tokens never see each other (faithful to the
  paper's description; this is why it is a weak variant).

``self_plain`` (SelfAttention-plain: no id, self-attention over the k segment tokens)::

    t_0 = x_f;   t'_l = t_{l-1} + Attn_l(t_{l-1}, t_{l-1});   t_l = t'_l + FFN_l(t'_l)
    E_p = mean_k(t_L)

``self_input`` (SelfAttention-input: the id token concatenated to E_f as an input token)::

    t_0 = concat([x_f, u])                                        [B, k+1, d]
    t'_l = t_{l-1} + Attn_l(t_{l-1}, t_{l-1});   t_l = t'_l + FFN_l(t'_l)
    E_p = t_L[:, k]   (the id token's output)
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from kuaihl_rec.model.blocks import CrossAttentionLayer, SelfAttentionLayer
from kuaihl_rec.model.config import FUSIONS, ContentConfig


class PerceiverFusion(nn.Module):
    """The fusion stack of one :class:`ContentConfig` (``fusion`` picks the mode, see module doc).

    Args:
        config: sizes (d, n_heads, d_head, ffn_mult, dropout), ``n_perceiver_layers`` = L and
            ``fusion``.

    Shapes: ``x_f [B, k, d]``, ``u [B, 1, d]`` (ignored, may be None, for ``self_plain``)
    -> ``E_p [B, d]``.

    Example::

        >>> import torch
        >>> from kuaihl_rec.model.config import ContentConfig
        >>> fusion = PerceiverFusion(ContentConfig(d=8, n_heads=2, d_head=4))
        >>> fusion(torch.randn(6, 2, 8), torch.randn(6, 1, 8)).shape
        torch.Size([6, 8])
    """

    def __init__(self, config: ContentConfig) -> None:
        super().__init__()
        if config.fusion not in FUSIONS:  # pragma: no cover - ContentConfig validates
            raise ValueError(f"fusion must be one of {FUSIONS}, got {config.fusion!r}")
        self.mode = config.fusion
        c = config
        if self.mode in ("self_plain", "self_input"):
            layers = [
                SelfAttentionLayer(c.d, c.n_heads, c.d_head, c.ffn_hidden, c.dropout)
                for _ in range(c.n_perceiver_layers)
            ]
        else:
            layers = [
                CrossAttentionLayer(
                    c.d, c.n_heads, c.d_head, c.ffn_hidden, c.dropout, kv_include_query=self.mode == "perceiver"
                )
                for _ in range(c.n_perceiver_layers)
            ]
        self.layers = nn.ModuleList(layers)

    def forward(self, x_f: Tensor, u: Optional[Tensor] = None) -> Tensor:
        mode = self.mode
        if mode == "self_plain":
            t = x_f
            for layer in self.layers:
                t = layer(t)
            return t.mean(dim=1)
        if u is None:
            raise ValueError(f"fusion {mode!r} needs the id latent u [B, 1, d]")
        if mode == "self_input":
            t = torch.cat([x_f, u], dim=1)  # [B, k+1, d]
            for layer in self.layers:
                t = layer(t)
            return t[:, -1]
        if mode == "cross_kv":
            t = x_f
            for layer in self.layers:
                t = layer(t, u)
            return t.mean(dim=1)
        x = u
        for layer in self.layers:
            if mode == "cross_q":
                x = layer(x, x_f, query=u)
            else:  # "perceiver" (kv = concat([x_f, x]) inside the layer) or "cross_qkv" (kv = x_f)
                x = layer(x, x_f)
        return x[:, 0]

