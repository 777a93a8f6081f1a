"""PR-Net: preference reasoning for personalised video highlight detection (Chen et al., ICCV 2021),
equations 1-9 and the Table 2 ablations as configurations (docs/HIGHLIGHTS.md, "PR-Net").

Shapes: ``b`` users, ``n`` frames (our segments) of the input video, ``m`` history clips of ``c``
segments, width ``d``::

    S  = M(V)                                   [b, n, d]     eq. 1 (temporal U-Net-like encoder)
    h~_j = mean_{frames of clip j} M(H_j)       [b, m, d]     history clip embeddings (3.2)
    q^u_ij = cos(s_i, h~_j)                     [b, n, m]     eq. 3
    a^u_ij = softmax_j(lambda q^u_ij)           [b, n, m]     eq. 3, lambda = 9
    p^u_i = sum_j a^u_ij h~_j                   [b, n, d]     eq. 2
    q^c1_i = exp(lambda cos(s_i, p^u_i)),  q^c2_i = exp(lambda cos(s_i, g))                eq. 5
    p^c_i = (q^c1_i p^u_i + q^c2_i g) / (q^c1_i + q^c2_i)               [b, n, d]        eq. 4
    l_i = s_i . p^c_i   (highlight degree, the score)                   [b, n]           eq. 6
    b_i = s_i . u       (non-highlight degree)                          [b, n]           eq. 7
    l~_i = softmax_i(l_i), b~_i = softmax_i(b_i) over the video's frames                 eq. 9
    L = sum_{y in Omega} log(l~_y + b~_y) + sum_{x in U} log(l~_x + b~_x) - (sum_Omega l~_y + sum_U b~_x)  eq. 8

``g`` (generic preference) and ``u`` (non-highlight preference) are learned vectors ``[d]``;
``Omega`` = positive frames, ``U`` = the ``K = 5 |Omega|`` unlabeled frames of highest ``b_i``
(the pseudo-negatives; fewer when the video has fewer unlabeled frames).

Decisions (the paper is silent or inconsistent; each has an option):

* eq. 8 as printed (``eq8_reading="literal"``) subtracts the relative degrees themselves; its
  gradient in ``l~_y`` is ``1 / (l~_y + b~_y) - 1 > 0`` whenever ``l~_y + b~_y < 1`` (always, with
  more than a few frames), so minimising it would *lower* the highlight degree of the positives.
  The default ``eq8_reading="log"`` reads the subtracted terms as logs, i.e. a two-way softmax
  between the highlight and the non-highlight degree of each frame:
  ``L = -sum_Omega log(l~_y / (l~_y + b~_y)) - sum_U log(b~_x / (l~_x + b~_x))``.
  The loss is summed over a video's frames and averaged over the videos of a batch that have a
  positive.
* eq. 5 is computed as a two-way softmax of ``lambda cos`` (the same number, without overflow);
  a user without history clips has ``q^c1 = 0`` (``p^c = g``: "especially when the user's history
  is missing"), and ``p^u = 0``.
* M (Fig. 3, "U-net-like", every convolution of width d): an input projection (1-D convolution,
  kernel 3), ``levels`` encoder stages (two kernel-3 convolutions + ReLU, then max-pool by 2), a
  bottleneck stage, and decoder stages (nearest upsampling, concatenation with the skip, two
  kernel-3 convolutions), then a kernel-1 output convolution. Padded positions are zeroed after
  every stage (and excluded from every max-pool), so a video's scores do not depend on the padding.
* The input is the visual feature only (PR-Net reads C3D features).

Table 2 ablations (:data:`PR_NET_VARIANTS`): ``G`` (generic only: ``p^c = g``), ``U`` (user-specific
only: ``p^c = p^u``), ``meanU`` (``p^c = mean_j h~_j``), ``meanU+G`` (eq. 4-5 with the mean history
in place of ``p^u``), ``h0`` / ``h5`` (at most 0 / 5 history clips), ``residual`` (a per-frame residual
block in place of M).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kuaihl_rec.data.phd.examples import PHDBatch

LAMBDA = 9.0
PREFERENCES = ("full", "generic", "user", "mean_user", "mean_user_generic")
ENCODERS = ("unet", "residual")
EQ8_READINGS = ("log", "literal")


@dataclasses.dataclass(frozen=True)
class PRNetConfig:
    """d: width; lam: inverse temperature (eq. 3, 5); preference: one of :data:`PREFERENCES`;
    history_size: at most this many history clips (None = all); negative_ratio: K / |Omega| (eq. 8);
    eq8_reading: see the module doc; levels: U-Net down-sampling stages; encoder: ``"unet"`` (M, eq. 1)
    or ``"residual"`` (Table 2's PR-Net_residual: a per-frame residual block, no temporal context)."""

    d: int = 64
    lam: float = LAMBDA
    preference: str = "full"
    history_size: Optional[int] = None
    negative_ratio: int = 5
    eq8_reading: str = "log"
    levels: int = 2
    encoder: str = "unet"

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.preference not in PREFERENCES:
            raise ValueError(f"preference must be one of {PREFERENCES}, got {self.preference!r}")
        if self.eq8_reading not in EQ8_READINGS:
            raise ValueError(f"eq8_reading must be one of {EQ8_READINGS}, got {self.eq8_reading!r}")
        if self.history_size is not None and self.history_size < 0:
            raise ValueError("history_size must be None or >= 0")


PR_NET_VARIANTS: Dict[str, PRNetConfig] = {
    "pr_net": PRNetConfig(),
    "pr_net_G": PRNetConfig(preference="generic"),
    "pr_net_U": PRNetConfig(preference="user"),
    "pr_net_meanU": PRNetConfig(preference="mean_user"),
    "pr_net_meanU+G": PRNetConfig(preference="mean_user_generic"),
    "pr_net_h0": PRNetConfig(history_size=0),
    "pr_net_h5": PRNetConfig(history_size=5),
    "pr_net_residual": PRNetConfig(encoder="residual"),
}
# PR-Net Tables 1-2 (mAP %, PHD-GIFs).
PAPER_MAP = {"pr_net": 18.66, "pr_net_G": 16.78, "pr_net_U": 17.57, "pr_net_meanU": 16.87,
             "pr_net_meanU+G": 17.21, "pr_net_h0": 16.78, "pr_net_h5": 17.48, "pr_net_residual": 16.69}


# ----------------------------------------------------------------------------------------- eq. 2-9
def user_preference(s: Tensor, h: Tensor, h_valid: Tensor, lam: float = LAMBDA) -> Tuple[Tensor, Tensor]:
    """eq. 2-3: ``p^u [b, n, d]`` and the attention ``a^u [b, n, m]`` from ``s [b, n, d]``,
    ``h [b, m, d]``, ``h_valid`` bool ``[b, m]`` (rows without a valid clip get ``p^u = 0``, ``a^u = 0``)."""
    q = F.normalize(s, dim=-1) @ F.normalize(h, dim=-1).transpose(1, 2)  # cos, [b, n, m]
    logits = (lam * q).masked_fill(~h_valid[:, None, :], float("-inf"))
    has = h_valid.any(dim=1)[:, None, None]
    a = torch.where(has, torch.softmax(torch.where(has, logits, torch.zeros_like(logits)), dim=-1), torch.zeros_like(q))
    return a @ h, a


def comprehensive_preference(
    s: Tensor, p_u: Tensor, g: Tensor, has_user: Tensor, lam: float = LAMBDA
) -> Tuple[Tensor, Tensor]:
    """eq. 4-5: ``p^c [b, n, d]`` and the user weight ``q^c1 / (q^c1 + q^c2)`` ``[b, n]``.

    ``s``, ``p_u`` ``[b, n, d]`` (``p_u`` may be ``[b, 1, d]``), ``g [d]``, ``has_user`` bool ``[b]``
    (False: ``q^c1 = 0``, so ``p^c = g``)."""
    p_u = p_u.expand_as(s)
    c1 = lam * F.cosine_similarity(s, p_u, dim=-1)
    c2 = lam * F.cosine_similarity(s, g.expand_as(s), dim=-1)
    c1 = c1.masked_fill(~has_user[:, None], float("-inf"))
    w = torch.softmax(torch.stack([c1, c2], dim=-1), dim=-1)  # q^c1, q^c2 normalised
    return w[..., :1] * p_u + w[..., 1:] * g, w[..., 0]


def highlight_degree(s: Tensor, p_c: Tensor) -> Tensor:
    """eq. 6: ``l_i = s_i . p^c_i`` ``[b, n]``."""
    return (s * p_c).sum(dim=-1)


def non_highlight_degree(s: Tensor, u: Tensor) -> Tensor:
    """eq. 7: ``b_i = s_i . u`` ``[b, n]``."""
    return s @ u


def pseudo_negatives(b_deg: Tensor, positive: Tensor, valid: Tensor, ratio: int = 5) -> Tensor:
    """eq. 8's ``U``: per video, the ``K = ratio |Omega|`` unlabeled valid frames of highest ``b_i``
    (all of them when fewer). Bool ``[b, n]``; ties broken by ``torch.topk``."""
    unlabeled = valid & ~positive
    k = torch.minimum(ratio * positive.sum(dim=1), unlabeled.sum(dim=1))  # [b]
    score = b_deg.detach().masked_fill(~unlabeled, float("-inf"))
    order = torch.argsort(score, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
    return unlabeled & (rank < k[:, None])


def bidirectional_contrastive_loss(
    l_deg: Tensor, b_deg: Tensor, positive: Tensor, negative: Tensor, valid: Tensor, reading: str = "log"
) -> Tensor:
    """eq. 8-9 for ``[b, n]`` degrees and masks; mean over videos with a positive (0 when none)."""
    neg_inf = torch.full_like(l_deg, float("-inf"))
    zero = torch.zeros_like(l_deg)
    # padding leaves the softmax (-inf), then is set to 0 so no -inf - -inf reaches a gradient
    log_l = torch.where(valid, torch.log_softmax(torch.where(valid, l_deg, neg_inf), dim=1), zero)  # log l~ (eq. 9)
    log_b = torch.where(valid, torch.log_softmax(torch.where(valid, b_deg, neg_inf), dim=1), zero)  # log b~
    log_sum = torch.logaddexp(log_l, log_b)  # log(l~ + b~)
    if reading == "log":
        per = torch.where(positive, log_sum - log_l, zero) + torch.where(negative, log_sum - log_b, zero)
    elif reading == "literal":
        per = (torch.where(positive, log_sum - log_l.exp(), zero) + torch.where(negative, log_sum - log_b.exp(), zero))
    else:
        raise ValueError(f"reading must be one of {EQ8_READINGS}, got {reading!r}")
    has = positive.any(dim=1)
    total = torch.where(has, per.sum(dim=1), torch.zeros_like(per[:, 0]))
    return total.sum() / has.sum().clamp(min=1)


# ------------------------------------------------------------------------------------------ eq. 1
def _masked_pool(x: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
    """Max-pool by 2 over time of ``x [B, d, n]`` ignoring masked positions; returns (x, mask)."""
    if x.shape[-1] % 2:
        x, mask = F.pad(x, (0, 1)), F.pad(mask, (0, 1))
    pooled = F.max_pool1d(x.masked_fill(~mask[:, None, :], -1e4), 2)
    down = F.max_pool1d(mask[:, None, :].float(), 2)[:, 0] > 0
    return pooled * down[:, None, :], down


class _Stage(nn.Module):
    def __init__(self, d_in: int, d: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv1d(d_in, d, 3, padding=1), nn.Conv1d(d, d, 3, padding=1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        m = mask[:, None, :].to(x.dtype)
        x = F.relu(self.conv1(x)) * m
        return F.relu(self.conv2(x)) * m


class TemporalUNet(nn.Module):
    """The encoder M (eq. 1, Fig. 3): ``V [B, n, d_in]``, ``mask [B, n]`` -> ``S [B, n, d]`` (see module doc)."""

    def __init__(self, d_in: int, d: int, levels: int = 2) -> None:
        super().__init__()
        self.inp = nn.Conv1d(d_in, d, 3, padding=1)
        self.down = nn.ModuleList(_Stage(d, d) for _ in range(levels))
        self.mid = _Stage(d, d)
        self.up = nn.ModuleList(_Stage(2 * d, d) for _ in range(levels))
        self.out = nn.Conv1d(d, d, 1)

    def forward(self, v: Tensor, mask: Tensor) -> Tensor:
        m0 = mask[:, None, :].to(v.dtype)
        x = self.inp((v * mask[..., None].to(v.dtype)).transpose(1, 2)) * m0
        skips, masks = [], []
        msk = mask
        for stage in self.down:
            x = stage(x, msk)
            skips.append(x)
            masks.append(msk)
            x, msk = _masked_pool(x, msk)
        x = self.mid(x, msk)
        for stage in self.up:
            skip, msk = skips.pop(), masks.pop()
            x = x.repeat_interleave(2, dim=-1)[..., : skip.shape[-1]]  # nearest x2, cut to the skip's length
            x = x * msk[:, None, :].to(x.dtype)
            x = stage(torch.cat([x, skip], dim=1), msk)
        return (self.out(x) * m0).transpose(1, 2)


class ResidualFrameEncoder(nn.Module):
    """PR-Net_residual's encoder (Table 2): ``x = W_in v_t``, ``S_t = x + W_2 ReLU(W_1 x)`` per frame
    (no temporal context); ``V [B, n, d_in]``, ``mask [B, n]`` -> ``S [B, n, d]`` (padding zeroed)."""

    def __init__(self, d_in: int, d: int) -> None:
        super().__init__()
        self.inp = nn.Linear(d_in, d)
        self.block = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, d))

    def forward(self, v: Tensor, mask: Tensor) -> Tensor:
        x = self.inp(v)
        return (x + self.block(x)) * mask[..., None].to(x.dtype)


# ------------------------------------------------------------------------------------------ model
class PRNet(nn.Module):
    """PR-Net of one :class:`PRNetConfig`. ``forward(batch) -> l [b, n]`` (eq. 6, the highlight score);
    ``training_loss(batch)`` = eq. 8-9; ``parts(batch)`` returns every intermediate for inspection."""

    def __init__(self, visual_dim: int, config: PRNetConfig = PRNetConfig()) -> None:
        super().__init__()
        self.config = config
        self.encoder = (TemporalUNet(visual_dim, config.d, config.levels) if config.encoder == "unet"
                        else ResidualFrameEncoder(visual_dim, config.d))
        self.generic = nn.Parameter(torch.randn(config.d) * 0.1)  # g (eq. 4)
        self.non_highlight = nn.Parameter(torch.randn(config.d) * 0.1)  # u (eq. 7)

    def history_embeddings(self, batch: PHDBatch) -> Tuple[Tensor, Tensor]:
        """``h~ [b, m, d]`` (mean of M over each clip's segments) and the clip mask ``[b, m]``."""
        b, m, c, dv = batch.hist_visual.shape
        clip_valid = batch.hist_valid.any(dim=2)
        if self.config.history_size is not None:
            clip_valid = clip_valid & (torch.arange(m) < self.config.history_size)[None, :]
        seg_mask = batch.hist_valid.reshape(b * m, c)
        enc = self.encoder(batch.hist_visual.reshape(b * m, c, dv), seg_mask).reshape(b, m, c, -1)
        w = batch.hist_valid.unsqueeze(-1).to(enc.dtype)
        h = (enc * w).sum(dim=2) / w.sum(dim=2).clamp(min=1.0)
        return h, clip_valid

    def parts(self, batch: PHDBatch) -> Dict[str, Tensor]:
        """S, h~, a^u, p^u, p^c, the user weight, l and b."""
        cfg = self.config
        s = self.encoder(batch.visual, batch.valid)
        h, h_valid = self.history_embeddings(batch)
        has = h_valid.any(dim=1)
        if cfg.preference in ("mean_user", "mean_user_generic"):
            w = h_valid.unsqueeze(-1).to(h.dtype)
            p_u, a = ((h * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0))[:, None, :], None
        else:
            p_u, a = user_preference(s, h, h_valid, cfg.lam)
        if cfg.preference == "generic":
            p_c, w_user = self.generic.expand_as(s), torch.zeros_like(s[..., 0])
        elif cfg.preference in ("user", "mean_user"):
            p_c, w_user = p_u.expand_as(s), has[:, None].expand_as(s[..., 0]).to(s.dtype)
        else:
            p_c, w_user = comprehensive_preference(s, p_u, self.generic, has, cfg.lam)
        out = {"s": s, "h": h, "h_valid": h_valid, "p_u": p_u, "p_c": p_c, "w_user": w_user,
               "l": highlight_degree(s, p_c), "b": non_highlight_degree(s, self.non_highlight)}
        if a is not None:
            out["a"] = a
        return out

    def forward(self, batch: PHDBatch) -> Tensor:
        return self.parts(batch)["l"]

    def training_loss(self, batch: PHDBatch, generator: Optional[torch.Generator] = None) -> Tensor:
        """eq. 8-9 over the batch's videos (``generator`` unused: the loss draws nothing)."""
        p = self.parts(batch)
        neg = pseudo_negatives(p["b"], batch.positive, batch.valid, self.config.negative_ratio)
        return bidirectional_contrastive_loss(p["l"], p["b"], batch.positive, neg, batch.valid,
                                              self.config.eq8_reading)


def build_pr_net(name: str, visual_dim: int, **overrides: object) -> PRNet:
    """The PR-Net variant ``name`` (:data:`PR_NET_VARIANTS`) with field overrides."""
    if name not in PR_NET_VARIANTS:
        raise KeyError(f"unknown PR-Net variant {name!r}; known: {sorted(PR_NET_VARIANTS)}")
    return PRNet(visual_dim, dataclasses.replace(PR_NET_VARIANTS[name], **overrides))
