"""The highlight survey's two training signals as options (docs/HIGHLIGHTS.md, "Survey options").

**Less is More** (Xiong et al., CVPR 2019), pair ranking with learned pair confidences::

    L(D) = sum_{g=1}^{G} sum_{(s_i, s_j) in P_g} w_ij max(0, 1 - f(x_i) + f(x_j)),
    w_ij = softmax_{(i, j) in P_g}( h(x_i, x_j) )          (sum of w over each P_g is 1)

``s_i`` should rank above ``s_j``; ``h`` is a network scoring the pair, trained jointly; ``P_g`` are
the batches of pairs. What the survey leaves open and what we decided: the pairs are (positive
segment, non-positive segment) of the same video (our labels replace the paper's short/long video
duration signal); ``P_g`` are consecutive groups of ``group_size`` pairs of the batch (the last
group shorter); ``h`` is a two-layer MLP on ``[x_i ; x_j]`` (the decoder states); the sum over groups
is divided by the number of groups (a mean, so the weight does not depend on the batch size).

**TaoHighlight** (2021), clip agreement of the graph-refined top-k candidates::

    L_ag = - sum_{i=1}^{k} e(v_i, v^),   e(v_i, v_j) = theta_r r(v_i, v_j) + theta_d d(v_i, v_j) + theta_s cos(v_i, v_j)
    r = I(v_i, v_j) / U(v_i, v_j) (IoU),  d = |c_i - c_j| / U(v_i, v_j),  cos = cosine of the clips' embeddings

Open points and decisions: ``v_i`` is the clip of ``2 radius + 1`` segments centred on the i-th of
the top-k scored segments (clipped to the video); ``v^`` is the longest run of positive segments
(the first on ties); ``I``, ``U``, ``c`` are measured in segments, ``U`` = the length of the union
of the two clips (their enclosing span when disjoint); a clip's embedding is the mean of its
segments' states; ``d`` is a distance, so its weight is negative (``theta_d = -1``; the survey
prints ``+theta_d`` without a sign); the sum over ``i`` is weighted by ``p_i = softmax_i`` of the
refined scores of the top-k (without a score term the loss would not train the scores, only the
embeddings); videos without a positive are left out; mean over videos. ``L_reg`` (start / end
regression) does not apply to per-segment scores and is not used.

Shapes: ``f`` / scores ``[b, n]``, states ``[b, n, d]``, masks bool ``[b, n]``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PairConfidence", "sample_pairs", "less_is_more_loss", "positive_run", "clip_agreement_loss"]


class PairConfidence(nn.Module):
    """``h(x_i, x_j)``: MLP on ``[x_i ; x_j]`` -> one logit per pair. ``[P, d]``, ``[P, d]`` -> ``[P]``."""

    def __init__(self, d: int, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * d, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x_i: Tensor, x_j: Tensor) -> Tensor:
        return self.net(torch.cat([x_i, x_j], dim=-1)).squeeze(-1)


def sample_pairs(positive: Tensor, valid: Tensor, per_video: int, generator: Optional[torch.Generator] = None
                 ) -> Tuple[Tensor, Tensor, Tensor]:
    """Up to ``per_video`` (positive i, valid non-positive j) pairs per video, drawn uniformly with
    replacement: ``(video, i, j)`` int64 ``[P]`` each."""
    videos, firsts, seconds = [], [], []
    for v in range(positive.shape[0]):
        pos = torch.nonzero(positive[v]).flatten()
        neg = torch.nonzero(valid[v] & ~positive[v]).flatten()
        if pos.numel() == 0 or neg.numel() == 0:
            continue
        firsts.append(pos[torch.randint(pos.numel(), (per_video,), generator=generator)])
        seconds.append(neg[torch.randint(neg.numel(), (per_video,), generator=generator)])
        videos.append(torch.full((per_video,), v, dtype=torch.long))
    if not videos:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, empty
    return torch.cat(videos), torch.cat(firsts), torch.cat(seconds)


def less_is_more_loss(f_i: Tensor, f_j: Tensor, confidence: Tensor, group_size: int) -> Tensor:
    """``mean_g sum_{P_g} softmax_{P_g}(confidence) max(0, 1 - f_i + f_j)`` over consecutive groups of
    ``group_size`` pairs; ``[P]`` inputs; a differentiable zero when there is no pair."""
    n = f_i.shape[0]
    if n == 0:
        return (f_i.sum() + confidence.sum()) * 0.0
    hinge = torch.clamp(1.0 - f_i + f_j, min=0.0)
    group = torch.arange(n, device=f_i.device) // group_size
    n_groups = int(group[-1]) + 1
    # softmax within each group: subtract the group max, exponentiate, divide by the group sum
    gmax = confidence.new_full((n_groups,), float("-inf")).scatter_reduce(0, group, confidence, "amax")
    e = torch.exp(confidence - gmax[group])
    w = e / confidence.new_zeros(n_groups).index_add(0, group, e)[group]
    return (w * hinge).sum() / n_groups


def positive_run(positive: Tensor) -> Tuple[int, int]:
    """The longest run ``[first, end)`` of True in a bool ``[n]`` (the first on ties); ``(0, 0)`` if none."""
    best, first = (0, 0), None
    values = positive.tolist() + [False]
    for t, v in enumerate(values):
        if v and first is None:
            first = t
        elif not v and first is not None:
            if t - first > best[1] - best[0]:
                best = (first, t)
            first = None
    return best


def _agreement(first: Tensor, end: Tensor, gt: Tuple[int, int], emb: Tensor, gt_emb: Tensor,
               theta: Tuple[float, float, float]) -> Tensor:
    """``e(v_i, v^)`` for candidate clips ``[first, end)`` ``[k]`` against ``gt``; ``emb [k, d]``, ``gt_emb [d]``."""
    g0, g1 = float(gt[0]), float(gt[1])
    inter = (torch.minimum(end, torch.tensor(g1)) - torch.maximum(first, torch.tensor(g0))).clamp(min=0)
    union = (end - first) + (g1 - g0) - inter
    span = torch.maximum(end, torch.tensor(g1)) - torch.minimum(first, torch.tensor(g0))
    union = torch.where(inter > 0, union, span)  # disjoint clips: the enclosing span
    iou = inter / union
    dist = ((first + end) / 2 - (g0 + g1) / 2).abs() / union
    cos = F.cosine_similarity(emb, gt_emb.expand_as(emb), dim=-1)
    return theta[0] * iou + theta[1] * dist + theta[2] * cos


def clip_agreement_loss(scores: Tensor, states: Tensor, positive: Tensor, valid: Tensor, k: int, radius: int = 1,
                        theta: Tuple[float, float, float] = (1.0, -1.0, 1.0)) -> Tensor:
    """TaoHighlight's ``L_ag`` (module doc): ``- sum_i p_i e(v_i, v^)`` over the top-k valid segments,
    mean over videos with a positive; a differentiable zero when none."""
    losses = []
    for v in range(scores.shape[0]):
        gt = positive_run(positive[v])
        n = int(valid[v].sum())
        if gt[1] == gt[0] or n == 0:
            continue
        kk = min(k, n)
        top_scores, idx = torch.topk(scores[v, :n], kk)
        first = (idx - radius).clamp(min=0).to(states.dtype)
        end = (idx + radius + 1).clamp(max=n).to(states.dtype)
        csum = torch.cat([states.new_zeros(1, states.shape[-1]), states[v, :n].cumsum(0)])
        emb = (csum[end.long()] - csum[first.long()]) / (end - first)[:, None]
        gt_emb = states[v, gt[0]:gt[1]].mean(0)
        e = _agreement(first, end, gt, emb, gt_emb, theta)
        losses.append(-(torch.softmax(top_scores, 0) * e).sum())
    if not losses:
        return (scores.sum() + states.sum()) * 0.0
    return torch.stack(losses).mean()
