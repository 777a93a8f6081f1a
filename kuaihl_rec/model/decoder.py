"""The causal sequence decoder (ContentCTR Algorithm 2, eq. 5; KuaiHL III-B "Casual Attention").

::

    h_0 = E_p + P[:n]                         E_p [b, n, d] (Perceiver outputs), P learned [window, d]
    h'_l = h_{l-1} + MHA_l(LN(h_{l-1}), mask=M)
    h_l  = h'_l + FFN_l(h'_l)                 l = 1 .. L
    H    = LN(h_L)                             [b, n, d]

``M`` is the causal mask of eq. 5 (position i attends to positions <= i), or, in the
highlight-detection mode (ContentCTR-HL), a fully visible mask restricted to the window's real
positions (``key_valid``).

Decisions (docs/MODEL.md section 3): pre-LayerNorm blocks with a final LayerNorm; a learned positional
embedding added before the first layer (the papers give none; the decoder needs order).

Padding: windows are right-padded, so under the causal mask a real position never attends to a
padded one and no key-padding mask is needed (none is applied: padded positions read earlier
positions only and are masked out of every loss and metric). In fully visible mode ``key_valid``
must be given.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from kuaihl_rec.model.blocks import SelfAttentionLayer
from kuaihl_rec.model.config import ContentConfig


def causal_mask(n: int, device: torch.device) -> Tensor:
    """eq. 5's M as a boolean "may attend" matrix ``[n, n]``: True on and below the diagonal.

    Built from ``arange`` on every call (n <= 20: nothing to cache), so ``n`` may be a traced
    value under ``torch.fx`` / ``torch.export``."""
    idx = torch.arange(n, device=device)
    return idx[:, None] >= idx[None, :]


class CausalDecoder(nn.Module):
    """Decoder stack of :class:`ContentConfig` (``n_decoder_layers`` = L, ``causal``, ``window``).

    Shapes: ``e_p [b, n, d]`` (n <= config.window), ``key_valid`` bool ``[b, n]`` (used only when
    ``causal=False``) -> ``H [b, n, d]``.

    Example::

        >>> import torch
        >>> from kuaihl_rec.model.config import ContentConfig
        >>> dec = CausalDecoder(ContentConfig(d=8, n_heads=2, d_head=4, window=5))
        >>> dec(torch.randn(3, 5, 8)).shape
        torch.Size([3, 5, 8])
    """

    def __init__(self, config: ContentConfig) -> None:
        super().__init__()
        c = config
        self.causal = c.causal
        self.window = c.window
        self.pos = nn.Embedding(c.window, c.d)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.layers = nn.ModuleList(
            SelfAttentionLayer(c.d, c.n_heads, c.d_head, c.ffn_hidden, c.dropout) for _ in range(c.n_decoder_layers)
        )
        self.norm = nn.LayerNorm(c.d)
        self.drop = nn.Dropout(c.dropout)

    def attention_mask(
        self, n: int, key_valid: Optional[Tensor] = None, device: Optional[torch.device] = None
    ) -> Tensor:
        """The boolean mask for ``n`` positions: ``[n, n]`` (causal) or ``[b, 1, 1, n]`` (fully visible)."""
        if self.causal:
            return causal_mask(n, device if device is not None else self.pos.weight.device)
        if key_valid is None:
            raise ValueError("the fully visible decoder (causal=False) needs key_valid [b, n] (batch.valid)")
        return key_valid[:, None, None, :].to(torch.bool)

    def forward(self, e_p: Tensor, key_valid: Optional[Tensor] = None) -> Tensor:
        n = e_p.shape[1]
        mask = self.attention_mask(n, key_valid, e_p.device)
        h = self.drop(e_p + self.pos.weight[:n])
        for layer in self.layers:
            h = layer(h, mask)
        return self.norm(h)

    def forward_last(self, e_p: Tensor, last: Tensor) -> Tensor:
        """``H`` at one position per window only: ``H[w, last[w]]`` -> ``[b, d]`` (causal mode).

        ``e_p [b, n, d]``, ``last`` int64 ``[b]`` (the newest real position of each window,
        ``0 <= last < n``; positions after it may hold anything). Layers 1 .. L-1 run over all n
        positions (later layers need their keys and values); the last layer runs its query, FFN and
        the final LayerNorm for position ``last`` only (``SelfAttentionLayer.forward_at``), with
        keys restricted to positions <= last, which is row ``last`` of the causal mask M (eq. 5).
        Equal to ``forward(e_p)[w, last[w]]`` up to float rounding; padding after ``last`` has no
        influence (causality).
        """
        if not self.causal:
            raise ValueError(
                "forward_last scores the newest position of a causal window; "
                "this decoder is fully visible (causal=False)"
            )
        b, n, d = e_p.shape
        h = self.drop(e_p + self.pos.weight[:n])
        for layer in self.layers[:-1]:
            h = layer(h, causal_mask(n, e_p.device))
        rows = last.reshape(b, 1, 1).expand(b, 1, d)
        h_q = h.gather(1, rows)  # [b, 1, d]
        keys = torch.arange(n, device=e_p.device)[None, None, None, :] <= last.reshape(b, 1, 1, 1)  # [b, 1, 1, n]
        out = self.layers[-1].forward_at(h, h_q, keys)
        return self.norm(out)[:, 0]
