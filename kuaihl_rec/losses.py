"""Training losses of KuaiHL / ContentCTR: pointwise, border-aware pairwise, DTW alignment.

Papers (see ``docs/MODEL_SPEC.md`` section 4):

* KuaiHL (ICME 2024), eq. 4-13: DTW alignment (eq. 4-5), partial-shuffle augmentation
  (eq. 6), InfoNCE (eq. 7), pointwise BCE (eq. 8), pairwise L0-L3 (eq. 9-12), total (eq. 13).
* ContentCTR (2023), eq. 7-14: DTW (eq. 7-8), InfoNCE (eq. 9), pairwise L0-L3 (eq. 10-13),
  total (eq. 14).

Shapes: ``b`` windows, ``n`` positions per window (n = 20 in the papers), ``d`` model width.
``logits``, ``labels``, ``label_mask`` are ``[b, n]``; text / visual sequences ``[b, n, d]``.

Decisions taken here (papers silent or ambiguous; the alternative is an option):

* Pairwise losses are *means* over kept pairs (the papers write sums), so the weights
  (0.65, 0.15, 0.20) do not depend on the number of pairs; 0 (a differentiable zero) when no
  pair is kept. Pairs live inside one window by default (``scope="window"``), option ``"batch"``.
* DTW distance is divided by the valid window length ``m`` by default (``align_norm="length"``)
  so the temperature does not depend on the window length; ``"none"`` is the papers' raw
  ``C_{m,m}``. Default temperature ``tau = 0.1`` on the normalised distance (for m = 20 that
  equals tau = 2 on the raw distance). The official code uses no temperature (tau = 1, raw).
* Negatives are N random permutations of the valid prefix of ``v``; a negative never equals
  the positive's order (nor, with augmentation, the identity or the swapped order), since such a
  "negative" only adds a constant. Windows with fewer than 2 valid positions (or 2 positions with
  augmentation) have no distinct negative and are left out of the alignment mean.
* Augmentation samples an ordered pair ``i != j`` of valid positions with probability
  ``softmax(cos(z_i, v_j) / augment_gamma)`` (KuaiHL eq. 6; the diagonal is left out because
  swapping a position with itself is no augmentation), default ``augment_gamma = 0.1``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = [
    "PAIR_VARIANTS",
    "PAIR_SCOPES",
    "AUGMENT_MODES",
    "ALIGN_NORMS",
    "pointwise_loss",
    "pairwise_loss",
    "pair_keep_mask",
    "dtw_from_cost",
    "cosine_cost",
    "sample_alignment_permutations",
    "alignment_distances",
    "alignment_loss",
    "LossConfig",
    "LOSS_PRESETS",
    "ContentLoss",
]

PAIR_VARIANTS: Tuple[str, ...] = ("none", "L0", "L1", "L2", "L3")
PAIR_SCOPES: Tuple[str, ...] = ("window", "batch")
AUGMENT_MODES: Tuple[str, ...] = ("none", "positive", "exclude")
ALIGN_NORMS: Tuple[str, ...] = ("length", "none")

# Finite stand-in for +inf in the DTW wavefront: keeps min / logsumexp and their gradients
# free of NaN (inf - inf) while never being selected next to a real cumulative cost.
_DTW_BIG = 1.0e10
# Attempts of the vectorised rejection sampling of negatives (each succeeds with p >= 2/3).
_MAX_RESAMPLE = 64


Normalizer = Callable[[Tensor], Tensor]


def _mean(total: Tensor, count: Tensor, normalizer: Optional[Normalizer]) -> Tensor:
    """``total / count`` (count clamped to 1), or ``total / normalizer(count)``.

    A normalizer makes a data-parallel loss equal the loss of the whole global batch: with R ranks
    whose gradients are averaged (DDP), ``normalizer(c) = all_reduce(c) / R`` gives
    ``mean_r(total_r / (C / R)) = sum_r total_r / C`` -- the global mean, whatever each rank's count.
    """
    count = count.to(total.dtype)
    return total / (normalizer(count) if normalizer is not None else count).clamp_min(1)


def _zero_like(*tensors: Tensor) -> Tensor:
    """A differentiable scalar zero connected to ``tensors`` (its gradient is all zeros)."""
    total = tensors[0].new_zeros(())
    for t in tensors:
        total = total + t.sum() * 0.0
    return total


def _as_bool_mask(mask: Optional[Tensor], like: Tensor, name: str) -> Tensor:
    if mask is None:
        return torch.ones(like.shape[:2], dtype=torch.bool, device=like.device)
    if mask.shape != like.shape[:2]:
        raise ValueError(f"{name} has shape {tuple(mask.shape)}, expected {tuple(like.shape[:2])}")
    return mask.to(device=like.device, dtype=torch.bool)


# --------------------------------------------------------------------------------------------
# Pointwise
# --------------------------------------------------------------------------------------------
def pointwise_loss(logits: Tensor, labels: Tensor, label_mask: Optional[Tensor] = None, normalizer: Optional[Normalizer] = None) -> Tensor:
    """Binary cross-entropy between ``s = sigmoid(logits)`` and soft labels ``y`` in [0, 1].

    KuaiHL eq. 8 (ContentCTR eq. 6): ``-1/n sum_i [y_i log s_i + (1 - y_i) log(1 - s_i)]``,
    computed from logits (``binary_cross_entropy_with_logits``) for numerical stability.

    Args:
        logits: ``[b, n]`` pre-sigmoid scores.
        labels: ``[b, n]`` soft labels in [0, 1] (values at unmasked positions are ignored).
        label_mask: ``[b, n]`` bool, positions that carry a label; ``None`` = all.

    Returns:
        Scalar mean over masked positions; a differentiable zero when the mask is empty.
    """
    if logits.shape != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ")
    if label_mask is None:
        mask = torch.ones_like(logits, dtype=torch.bool)
    elif label_mask.shape != logits.shape:
        raise ValueError(f"label_mask {tuple(label_mask.shape)} and logits {tuple(logits.shape)} differ")
    else:
        mask = label_mask.to(device=logits.device, dtype=torch.bool)
    # Unlabelled positions may hold anything (NaN included): replace before the BCE.
    y = torch.where(mask, labels.to(logits.dtype), torch.zeros_like(logits))
    per_pos = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    # where + clamp instead of boolean indexing: no host sync, and 0 (with gradient) when empty.
    total = torch.where(mask, per_pos, torch.zeros_like(per_pos)).sum()
    return _mean(total, mask.sum(), normalizer)


# --------------------------------------------------------------------------------------------
# Pairwise
# --------------------------------------------------------------------------------------------
def pair_keep_mask(s: Tensor, y: Tensor, valid: Tensor, variant: str) -> Tensor:
    """Which ordered pairs (i, j) enter the pairwise loss: ``[G, K, K]`` bool, without gradient.

    Pairs have ``y_i > y_j`` and both positions labelled, and per variant
    (KuaiHL eq. 9-12, ContentCTR eq. 10-13; ``ds = s_i - s_j``, ``dy = y_i - y_j``):

    * ``L0``: all such pairs;
    * ``L1`` (border-aware, used by the papers): ``dy - ds >= 0``;
    * ``L2``: ``ds <= 0`` (Part 1 only);
    * ``L3``: ``0 < ds < dy`` (Part 2 only).

    Args:
        s: ``[G, K]`` predicted probabilities (detached here).
        y: ``[G, K]`` labels.
        valid: ``[G, K]`` bool label mask.
        variant: one of ``"L0", "L1", "L2", "L3"``.
    """
    if variant not in PAIR_VARIANTS[1:]:
        raise ValueError(f"pair variant must be one of {PAIR_VARIANTS[1:]}, got {variant!r}")
    with torch.no_grad():
        s = s.detach()
        y = y.detach().to(s.dtype)
        ds = s[:, :, None] - s[:, None, :]
        dy = y[:, :, None] - y[:, None, :]
        keep = (dy > 0) & valid[:, :, None] & valid[:, None, :]
        if variant == "L1":
            keep &= (dy - ds) >= 0
        elif variant == "L2":
            keep &= ds <= 0
        elif variant == "L3":
            keep &= (ds > 0) & (ds < dy)
    return keep


def pairwise_loss(
    logits: Tensor,
    labels: Tensor,
    label_mask: Optional[Tensor] = None,
    *,
    variant: str = "L1",
    sigma: float = 10.0,
    scope: str = "window",
    normalizer: Optional[Normalizer] = None,
) -> Tensor:
    """Pairwise logistic ranking loss with the border masks of KuaiHL eq. 9-12 / ContentCTR eq. 10-13.

    Per kept pair: ``log(1 + exp(-sigma (s_i - s_j)))`` = ``softplus(-sigma (s_i - s_j))`` with
    ``s = sigmoid(logits)``. Which pairs are kept is decided by :func:`pair_keep_mask` on
    detached values, so no gradient flows through the masks.

    Args:
        logits: ``[b, n]``.
        labels: ``[b, n]`` soft labels.
        label_mask: ``[b, n]`` bool; unlabelled positions form no pair. ``None`` = all.
        variant: ``"L0" | "L1" | "L2" | "L3"`` (``"none"`` returns a zero).
        sigma: scale; 10 in the papers (the official code's default is 1.0).
        scope: ``"window"`` (pairs inside one window, default) or ``"batch"`` (all pairs of
            labelled positions across the batch).

    Returns:
        Scalar mean over kept pairs (pooled over the batch); a differentiable zero when none.
    """
    if logits.dim() != 2 or logits.shape != labels.shape:
        raise ValueError(
            f"logits and labels must both be [b, n], got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if scope not in PAIR_SCOPES:
        raise ValueError(f"pair scope must be one of {PAIR_SCOPES}, got {scope!r}")
    if variant == "none":
        return _zero_like(logits)
    mask = _as_bool_mask(label_mask, logits, "label_mask")
    s = torch.sigmoid(logits)
    y = torch.where(mask, labels.to(s.dtype), torch.zeros_like(s))
    if scope == "batch":
        s, y, mask = s.reshape(1, -1), y.reshape(1, -1), mask.reshape(1, -1)
    keep = pair_keep_mask(s, y, mask, variant)
    ds = s[:, :, None] - s[:, None, :]
    per_pair = F.softplus(-sigma * ds)
    # where + clamp instead of boolean indexing: no host sync, and 0 (with gradient) when none.
    total = torch.where(keep, per_pair, torch.zeros_like(per_pair)).sum()
    return _mean(total, keep.sum(), normalizer)


# --------------------------------------------------------------------------------------------
# DTW
# --------------------------------------------------------------------------------------------
def _lengths_pair(
    lengths: Union[None, Tensor, Tuple[Tensor, Tensor]], B: int, n: int, m: int, device: torch.device
) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    if lengths is None:
        return None, None
    if isinstance(lengths, (tuple, list)):
        if len(lengths) != 2:
            raise ValueError("lengths must be a [B] tensor or a pair (lengths_x, lengths_y)")
        lx, ly = lengths
    else:
        lx = ly = lengths
    lx = torch.as_tensor(lx, device=device).long().reshape(-1)
    ly = torch.as_tensor(ly, device=device).long().reshape(-1)
    if lx.numel() != B or ly.numel() != B:
        raise ValueError(f"lengths must have B = {B} entries")
    if bool((lx < 1).any()) or bool((lx > n).any()) or bool((ly < 1).any()) or bool((ly > m).any()):
        raise ValueError(f"lengths must lie in [1, {n}] x [1, {m}]")
    return lx, ly


class _WavefrontDTW(torch.autograd.Function):
    """DTW / soft-DTW over anti-diagonals with an explicit reverse-wavefront backward.

    Storage: ``C[1 + k, b, 1 + i]`` holds the cumulative cost of cell ``(i, k - i)``; row 0 (an
    all-``BIG`` diagonal ``k = -1``) and column 0 (a constant ``BIG``) are borders, so the three
    predecessors of a diagonal are plain views (no copies). Out-of-band cells (``k - i`` outside
    ``[0, m)``) carry cost ``BIG`` and never win a min next to a real cell.

    Forward also keeps what the backward needs: for hard DTW two bool masks per cell (is the
    diagonal predecessor the argmin; else is "up" at most "left"): ties go to the first of
    diagonal / up / left; for soft-DTW the three unnormalised soft-min weights and their sum.

    Backward propagates ``E_ij = dC_end / dC_ij`` from the end cell back along the anti-diagonals,
    ``E_ij = sum_succ E_succ * w_succ(ij)`` with ``w`` the weight a successor's min gives cell
    ``ij``, and ``dC_end / dD_ij = E_ij`` (Cuturi & Blondel 2017, Algorithm 2; for hard DTW, the
    indicator of the argmin path). First derivatives only.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        cost: Tensor,
        gamma: Optional[float],
        lx: Tensor,
        ly: Tensor,
    ) -> Tensor:
        B, n, m = cost.shape
        device, dtype = cost.device, cost.dtype
        n_diag = n + m - 1
        rows = torch.arange(n, device=device)
        cols = torch.arange(n_diag, device=device)[:, None] - rows[None, :]  # [K, n]: j = k - i
        in_band = (cols >= 0) & (cols < m)
        idx = cols.clamp(0, m - 1).t()[None].expand(B, n, n_diag)
        skew = cost.gather(2, idx).permute(2, 0, 1)  # [K, B, n]: skew[k, b, i] = cost[b, i, k-i]
        skew = torch.where(in_band[:, None, :], skew, torch.full((), _DTW_BIG, dtype=dtype, device=device))
        skew = skew.contiguous()
        need_grad = ctx.needs_input_grad[0]

        C = torch.full((n_diag + 1, B, n + 1), _DTW_BIG, dtype=dtype, device=device)
        C[1, :, 1:] = skew[0]  # cell (0, 0): C = D (its predecessor C[-1, -1] is 0)
        if gamma is None:
            take_diag = torch.zeros((n_diag, B, n), dtype=torch.bool, device=device) if need_grad else None
            take_up = torch.zeros((n_diag, B, n), dtype=torch.bool, device=device) if need_grad else None
        else:
            soft_w = torch.zeros((n_diag, 4, B, n), dtype=dtype, device=device) if need_grad else None
            inv_gamma = 1.0 / gamma
        for k in range(1, n_diag):
            # predecessors of (i, k-i): C[i-1, j-1] (diag k-2, row i-1), C[i-1, j] (diag k-1,
            # row i-1), C[i, j-1] (diag k-1, row i)
            ul, up, left = C[k - 1, :, :-1], C[k, :, :-1], C[k, :, 1:]
            up_left = torch.minimum(up, left)
            best = torch.minimum(ul, up_left)
            if gamma is None:
                if need_grad:
                    torch.le(ul, up_left, out=take_diag[k])
                    torch.le(up, left, out=take_up[k])
            else:
                if need_grad:
                    e0, e1, e2, total = soft_w[k].unbind(0)
                else:
                    e0, e1, e2 = torch.empty_like(best), torch.empty_like(best), torch.empty_like(best)
                    total = torch.empty_like(best)
                torch.exp((best - ul) * inv_gamma, out=e0)
                torch.exp((best - up) * inv_gamma, out=e1)
                torch.exp((best - left) * inv_gamma, out=e2)
                torch.add(e0, e1, out=total).add_(e2)
                best = best - gamma * torch.log(total)
            torch.add(skew[k], best, out=C[k + 1, :, 1:])

        batch = torch.arange(B, device=device)
        end_k = lx + ly - 2
        out = C[end_k + 1, batch, lx].clone()
        if need_grad:
            ctx.gamma = gamma
            ctx.shape = (B, n, m)
            ctx.dtype = dtype
            saved = (take_diag, take_up) if gamma is None else (soft_w,)
            ctx.save_for_backward(idx, in_band, end_k, lx, *saved)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        idx, in_band, end_k, lx, *saved = ctx.saved_tensors
        B, n, m = ctx.shape
        n_diag = n + m - 1
        dtype = ctx.dtype
        device = grad_out.device
        # acc[k, b, i]: dC_end / dC(i, k - i), collected from the successors; becomes dC_end / dD.
        acc = torch.zeros((n_diag, B, n), dtype=dtype, device=device)
        acc[end_k, torch.arange(B, device=device), lx - 1] = grad_out.to(dtype)
        band = in_band.to(dtype)[:, None, :]
        zero = torch.zeros((), dtype=dtype, device=device)
        for k in range(n_diag - 1, 0, -1):
            e = acc[k].mul_(band[k])
            if ctx.gamma is None:
                take_diag, take_up = saved
                p0 = torch.where(take_diag[k], e, zero)
                rest = e - p0
                p1 = torch.where(take_up[k], rest, zero)
                p2 = rest - p1
            else:
                e0, e1, e2, total = saved[0][k].unbind(0)
                scale = e / total
                p0, p1, p2 = e0 * scale, e1 * scale, e2 * scale
            # Cell (i, k-i) passes p1 to (i-1, j) and p2 to (i, j-1) on diag k-1, and p0 to
            # (i-1, j-1) on diag k-2.
            acc[k - 1, :, : n - 1] += p1[:, 1:]
            acc[k - 1] += p2
            if k >= 2:
                acc[k - 2, :, : n - 1] += p0[:, 1:]
        acc[0].mul_(band[0])
        grad_cost = torch.zeros((B, n, m), dtype=dtype, device=device)
        grad_cost.scatter_add_(2, idx, acc.permute(1, 2, 0))  # out-of-band entries are 0
        return grad_cost, None, None, None


def dtw_from_cost(
    cost: Tensor,
    gamma: Optional[float] = None,
    lengths: Union[None, Tensor, Tuple[Tensor, Tensor]] = None,
) -> Tensor:
    """Batched (soft-)DTW distance from a cost matrix: anti-diagonal wavefront over the batch.

    KuaiHL eq. 4-5 / ContentCTR eq. 7-8: ``C_ij = D_ij + min(C_{i-1,j-1}, C_{i-1,j}, C_{i,j-1})``,
    ``C_00 = D_00``, distance ``C_{n,m}`` (1-based; here ``C[n-1, m-1]``). With ``gamma`` the min
    is the soft-min ``-gamma * logsumexp(-x / gamma)`` (soft-DTW, Cuturi & Blondel 2017; the
    official code's choice, gamma = 0.1). Hard min (``gamma=None``, the papers) back-propagates a
    subgradient: the indicator of the argmin path (ties go to the first of diagonal, up, left).

    The loop runs over the ``n + m - 1`` anti-diagonals; each step is a handful of vector ops on
    ``[B, n]``, never a Python loop per cell. The backward is an explicit reverse wavefront
    (:class:`_WavefrontDTW`), 1.3x (soft) to 2x (hard) faster than autograd through the loop on
    CPU; it supports first derivatives only.

    Args:
        cost: ``[B, n, m]`` cost matrix (any cost: cosine distance, squared difference, ...).
        gamma: ``None`` for hard DTW, else the soft-min temperature (> 0).
        lengths: ``None`` (full matrices), a ``[B]`` integer tensor (valid prefix ``l x l`` of
            each matrix), or a pair ``(lengths_x [B], lengths_y [B])`` for ``lx x ly`` prefixes.
            The distance is read at ``C[lx-1, ly-1]``, which depends on the prefix only.

    Returns:
        ``[B]`` distances, in the cost's dtype (float32 for half / bfloat16 input).
    """
    if cost.dim() != 3:
        raise ValueError(f"cost must be [B, n, m], got {tuple(cost.shape)}")
    if gamma is not None and not gamma > 0:
        raise ValueError(f"gamma must be None or > 0, got {gamma}")
    if not cost.is_floating_point():
        raise ValueError(f"cost must be a floating-point tensor, got {cost.dtype}")
    if cost.dtype in (torch.float16, torch.bfloat16):
        cost = cost.float()
    B, n, m = cost.shape
    device = cost.device
    lx, ly = _lengths_pair(lengths, B, n, m, device)
    if lx is None:
        lx = torch.full((B,), n, dtype=torch.long, device=device)
        ly = torch.full((B,), m, dtype=torch.long, device=device)
    else:
        cell_ok = (torch.arange(n, device=device)[None, :, None] < lx[:, None, None]) & (
            torch.arange(m, device=device)[None, None, :] < ly[:, None, None]
        )
        # Padded cells never reach C[lx-1, ly-1]; zero them so NaN / inf there cannot leak.
        cost = torch.where(cell_ok, cost, torch.zeros((), dtype=cost.dtype, device=device))
    if B == 0 or n == 0 or m == 0:
        return cost.new_zeros(B)
    return _WavefrontDTW.apply(cost, None if gamma is None else float(gamma), lx, ly)


# --------------------------------------------------------------------------------------------
# Alignment (DTW + InfoNCE)
# --------------------------------------------------------------------------------------------
def cosine_cost(text_seq: Tensor, visual_seq: Tensor, eps: float = 1e-8) -> Tensor:
    """``D_ij = 1 - cos(z_i, v_j)``: ``[b, n, d] x [b, m, d] -> [b, n, m]`` (KuaiHL eq. 4 cost)."""
    # Norms divided out of the [b, n, m] product (not the [b, n, d] inputs): cheaper backward.
    dot = torch.bmm(text_seq, visual_seq.transpose(1, 2))
    nz = torch.linalg.vector_norm(text_seq, dim=-1).clamp_min(eps)
    nv = torch.linalg.vector_norm(visual_seq, dim=-1).clamp_min(eps)
    return 1.0 - dot / (nz[:, :, None] * nv[:, None, :])


def _prefix_lengths(valid_mask: Tensor) -> Tensor:
    n = valid_mask.shape[1]
    lengths = valid_mask.sum(dim=1)
    prefix = torch.arange(n, device=valid_mask.device)[None, :] < lengths[:, None]
    if not bool((prefix == valid_mask).all()):
        raise ValueError(
            "valid_mask must mark a prefix of each window (right padding): positions 0..m-1 valid"
        )
    return lengths


@torch.no_grad()
def sample_alignment_permutations(
    sim: Tensor,
    lengths: Tensor,
    n_negatives: int,
    augment: str = "positive",
    augment_gamma: float = 0.1,
    generator: Optional[torch.Generator] = None,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sample the positive order, the swap and the N negative orders of ``v`` (no gradient).

    * Swap (KuaiHL eq. 6): one ordered pair ``(i, j)``, ``i != j < m``, drawn with probability
      ``softmax(sim[i, j] / augment_gamma)`` over the valid off-diagonal pairs; ``v_i`` and
      ``v_j`` are exchanged. ``augment="none"`` draws nothing (swap = identity).
    * Positive: the swapped order for ``augment="positive"`` (KuaiHL), else the identity.
    * Negatives (KuaiHL eq. 7, ContentCTR eq. 9): uniform random permutations of the valid
      prefix (padded positions stay in place), redrawn (vectorised rejection) while equal to
      the identity or, with augmentation, to the swapped order.

    Args:
        sim: ``[b, n, n]`` cosine similarities ``cos(z_i, v_j)``.
        lengths: ``[b]`` valid prefix lengths ``m``.
        n_negatives: N.
        augment: ``"none" | "positive" | "exclude"``.
        augment_gamma: softmax temperature of eq. 6.
        generator: optional ``torch.Generator`` for reproducibility; the draws are made on its
            device and moved to ``sim``'s.

    Returns:
        ``positive [b, n]``, ``negatives [b, N, n]``, ``swap [b, n]`` (long index orders: the
        sequence ``v[order]``) and ``usable [b]`` (bool: the window has distinct negatives).
    """
    if augment not in AUGMENT_MODES:
        raise ValueError(f"augment must be one of {AUGMENT_MODES}, got {augment!r}")
    b, n, _ = sim.shape
    device = sim.device
    lengths = lengths.to(device=device, dtype=torch.long)
    pos_idx = torch.arange(n, device=device)
    valid = pos_idx[None, :] < lengths[:, None]  # [b, n]
    identity = pos_idx.expand(b, n)
    rng_device = generator.device if generator is not None else device

    swap = identity.clone()
    if augment != "none":
        pair_ok = valid[:, :, None] & valid[:, None, :] & (pos_idx[:, None] != pos_idx[None, :])
        has_pair = pair_ok.flatten(1).any(dim=1)
        logits = (sim.float() / augment_gamma).masked_fill(~pair_ok, float("-inf")).flatten(1)
        # Rows without any valid pair get a dummy uniform row; their swap is discarded.
        logits = torch.where(has_pair[:, None], logits, torch.zeros_like(logits))
        probs = torch.softmax(logits, dim=1)
        flat = torch.multinomial(probs.to(rng_device), 1, generator=generator).squeeze(1).to(device)
        i, j = flat // n, flat % n
        rows = torch.arange(b, device=device)
        swapped = identity.clone()
        swapped[rows, i] = j
        swapped[rows, j] = i
        swap = torch.where(has_pair[:, None], swapped, identity)
    positive = swap if augment == "positive" else identity

    # Windows where no permutation differs from every excluded order.
    if augment == "none":
        usable = lengths >= 2
    else:
        usable = lengths >= 3

    def draw() -> Tensor:
        keys = torch.rand((b, n_negatives, n), generator=generator, device=rng_device).to(device)
        keys = torch.where(valid[:, None, :], keys, 2.0 + pos_idx.to(keys.dtype))
        return keys.argsort(dim=-1)

    def rejected(perms: Tensor) -> Tensor:
        bad = (perms == identity[:, None, :]).all(dim=-1)
        if augment != "none":
            bad |= (perms == swap[:, None, :]).all(dim=-1)
        return bad & usable[:, None]

    negatives = draw()
    bad = rejected(negatives)
    for _ in range(_MAX_RESAMPLE):
        if not bool(bad.any()):
            break
        negatives = torch.where(bad[..., None], draw(), negatives)
        bad = rejected(negatives)
    if bool(bad.any()):  # pragma: no cover - probability < (1/3)^64
        usable = usable & ~bad.any(dim=1)
    return positive, negatives, swap, usable


def alignment_distances(
    cost: Tensor, orders: Tensor, lengths: Tensor, gamma: Optional[float] = None
) -> Tensor:
    """DTW distances between ``z`` and reordered ``v``: ``[b, n, n] x [b, S, n] -> [b, S]``.

    A reordered sequence ``v[order]`` has cost ``D[:, :, order]``, so all ``S = 1 + N`` sequences
    of a window share one cosine matrix (columns gathered, nothing recomputed); the DP then runs
    once over all ``b * S`` matrices (:func:`dtw_from_cost`) on the valid ``m x m`` prefixes.
    """
    b, n, m = cost.shape
    S = orders.shape[1]
    gathered = cost[:, None].expand(b, S, n, m).gather(3, orders[:, :, None, :].expand(b, S, n, m))
    dist = dtw_from_cost(
        gathered.reshape(b * S, n, m), gamma=gamma, lengths=lengths.repeat_interleave(S)
    )
    return dist.reshape(b, S)


def alignment_loss(
    text_seq: Tensor,
    visual_seq: Tensor,
    valid_mask: Optional[Tensor] = None,
    *,
    n_negatives: int = 8,
    tau: float = 0.1,
    gamma: Optional[float] = None,
    augment: str = "positive",
    augment_gamma: float = 0.1,
    normalize: str = "length",
    generator: Optional[torch.Generator] = None,
    normalizer: Optional[Normalizer] = None,
) -> Tensor:
    """DTW alignment InfoNCE loss (KuaiHL eq. 4-7, ContentCTR eq. 7-9).

    ``L = -log( exp(-d(z, v+)/tau) / (exp(-d(z, v+)/tau) + sum_{N negatives} exp(-d(z, v-)/tau)) )``
    with ``d`` the DTW distance on the cost ``D_ij = 1 - cos(z_i, v_j)`` over the valid prefix
    of each window. (The papers' eq. 7 / eq. 9 print ``exp(d/tau)``; with ``d`` a distance the
    sign must be negative, as in the spec.)

    Args:
        text_seq: ``[b, n, d]`` projected text sequence ``z`` (= S_a).
        visual_seq: ``[b, n, d]`` projected visual sequence ``v`` (= S_p).
        valid_mask: ``[b, n]`` bool, valid positions; must be a prefix (right padding). ``None`` = all.
        n_negatives: N shuffled negatives (8 in the papers, 7 in the official code).
        tau: InfoNCE temperature (default 0.1 on the length-normalised distance; see module doc).
        gamma: ``None`` = hard DTW (papers), else soft-DTW temperature (official code: 0.1).
        augment: ``"positive"`` (KuaiHL: swapped v is the positive), ``"exclude"`` (official code:
            positive stays v, swapped order is never a negative), ``"none"`` (ContentCTR).
        augment_gamma: softmax temperature of KuaiHL eq. 6.
        normalize: ``"length"`` (divide d by the valid length m, default) or ``"none"`` (raw C_{m,m}).
        generator: optional ``torch.Generator`` for the negatives and the swap.

    Returns:
        Scalar mean over windows with distinct negatives; a differentiable zero when none.
    """
    if text_seq.dim() != 3 or text_seq.shape != visual_seq.shape:
        raise ValueError(
            "text_seq and visual_seq must both be [b, n, d] of one shape, got "
            f"{tuple(text_seq.shape)} and {tuple(visual_seq.shape)}"
        )
    if n_negatives < 1:
        raise ValueError(f"n_negatives must be >= 1, got {n_negatives}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if normalize not in ALIGN_NORMS:
        raise ValueError(f"normalize must be one of {ALIGN_NORMS}, got {normalize!r}")
    mask = _as_bool_mask(valid_mask, text_seq, "valid_mask")
    lengths = _prefix_lengths(mask)
    if not bool((lengths >= 2).any()):
        logger.debug("alignment loss: no window with >= 2 valid positions; returning zero")
        return _zero_like(text_seq, visual_seq)
    # Windows without valid positions still need a length >= 1 for the DP; they are dropped.
    dp_lengths = lengths.clamp(min=1)

    z, v = text_seq, visual_seq
    if z.dtype in (torch.float16, torch.bfloat16):
        z, v = z.float(), v.float()
    cost = cosine_cost(z, v)  # [b, n, n]
    positive, negatives, _, usable = sample_alignment_permutations(
        1.0 - cost.detach(), dp_lengths, n_negatives, augment, augment_gamma, generator
    )
    if not bool(usable.any()):
        logger.debug("alignment loss: no window has distinct negatives; returning zero")
        # The normalizer may be a collective: call it on this path too, so every rank calls it.
        return _mean(_zero_like(text_seq, visual_seq), torch.zeros((), device=text_seq.device), normalizer)
    # Only the usable windows enter the DP.
    keep = usable.nonzero(as_tuple=True)[0]
    orders = torch.cat((positive[:, None, :], negatives), dim=1)[keep]  # [b', 1+N, n]
    dist = alignment_distances(cost[keep], orders, dp_lengths[keep], gamma)  # [b', 1+N]
    if normalize == "length":
        dist = dist / dp_lengths[keep, None].to(dist.dtype)
    logits = -dist / tau
    per_window = torch.logsumexp(logits, dim=1) - logits[:, 0]
    if keep.numel() < text_seq.shape[0]:
        logger.debug("alignment loss: %d of %d windows used", keep.numel(), text_seq.shape[0])
    return _mean(per_window.sum(), torch.tensor(float(keep.numel()), device=per_window.device), normalizer)


# --------------------------------------------------------------------------------------------
# Total
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Weights and options of the total loss ``L = w_point L_point + w_align L_align + w_pair L_pair``.

    KuaiHL eq. 13 / ContentCTR eq. 14 with (lambda1, lambda2, lambda3) = (0.65, 0.15, 0.20) and
    L_pair = L1 (border-aware). Defaults are the KuaiHL paper; see :data:`LOSS_PRESETS`.

    Fields:
        w_point, w_align, w_pair: weights (lambda1, lambda2, lambda3).
        pair_variant: ``"none" | "L0" | "L1" | "L2" | "L3"``.
        sigma: pairwise scale (papers 10, official code 1.0).
        pair_scope: ``"window" | "batch"``.
        align: whether the DTW alignment loss is on (needs text / visual sequences).
        n_negatives: N shuffled negatives.
        align_tau: InfoNCE temperature.
        soft_dtw_gamma: ``None`` = hard DTW, else soft-DTW gamma.
        augment: ``"none" | "positive" | "exclude"``.
        augment_gamma: softmax temperature of the swap sampling (KuaiHL eq. 6).
        align_norm: ``"length" | "none"``: DTW distance divided by the valid length, or raw.
    """

    w_point: float = 0.65
    w_align: float = 0.15
    w_pair: float = 0.20
    pair_variant: str = "L1"
    sigma: float = 10.0
    pair_scope: str = "window"
    align: bool = True
    n_negatives: int = 8
    align_tau: float = 0.1
    soft_dtw_gamma: Optional[float] = None
    augment: str = "positive"
    augment_gamma: float = 0.1
    align_norm: str = "length"

    def __post_init__(self) -> None:
        if self.pair_variant not in PAIR_VARIANTS:
            raise ValueError(f"pair_variant must be one of {PAIR_VARIANTS}, got {self.pair_variant!r}")
        if self.pair_scope not in PAIR_SCOPES:
            raise ValueError(f"pair_scope must be one of {PAIR_SCOPES}, got {self.pair_scope!r}")
        if self.augment not in AUGMENT_MODES:
            raise ValueError(f"augment must be one of {AUGMENT_MODES}, got {self.augment!r}")
        if self.align_norm not in ALIGN_NORMS:
            raise ValueError(f"align_norm must be one of {ALIGN_NORMS}, got {self.align_norm!r}")
        for name in ("w_point", "w_align", "w_pair"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        if self.n_negatives < 1:
            raise ValueError(f"n_negatives must be >= 1, got {self.n_negatives}")
        if not self.align_tau > 0:
            raise ValueError(f"align_tau must be > 0, got {self.align_tau}")
        if self.soft_dtw_gamma is not None and not self.soft_dtw_gamma > 0:
            raise ValueError(f"soft_dtw_gamma must be None or > 0, got {self.soft_dtw_gamma}")
        if not self.augment_gamma > 0:
            raise ValueError(f"augment_gamma must be > 0, got {self.augment_gamma}")


_KUAIHL = LossConfig()
# Loss ablation (ContentCTR Table 4 / KuaiHL Table II): the same weights, components switched
# on or off, so the rows differ only by the terms they name.
LOSS_PRESETS: Dict[str, LossConfig] = {
    "kuaihl": _KUAIHL,
    "contentctr": dataclasses.replace(_KUAIHL, augment="none"),
    # The authors' public code, as far as the spec records it: soft-DTW gamma 0.1, no
    # temperature (raw distance, tau 1), align weight 0.01, 7 negatives, swapped order only
    # excluded from the negatives, sigma 1.0.
    "official": dataclasses.replace(
        _KUAIHL,
        w_align=0.01,
        sigma=1.0,
        n_negatives=7,
        align_tau=1.0,
        soft_dtw_gamma=0.1,
        augment="exclude",
        align_norm="none",
    ),
    "point": dataclasses.replace(_KUAIHL, pair_variant="none", align=False),
    "point+L0": dataclasses.replace(_KUAIHL, pair_variant="L0", align=False),
    "point+L1": dataclasses.replace(_KUAIHL, pair_variant="L1", align=False),
    "point+L2": dataclasses.replace(_KUAIHL, pair_variant="L2", align=False),
    "point+L3": dataclasses.replace(_KUAIHL, pair_variant="L3", align=False),
    "point+L1+align": dataclasses.replace(_KUAIHL, augment="none"),
    "point+L1+align+aug": _KUAIHL,
    # ContentCTR-HL (PHD, binary labels): point + align only (ContentCTR 4.3, KuaiHL IV).
    "point+align": dataclasses.replace(_KUAIHL, pair_variant="none", augment="none"),
    "contentctr_hl": dataclasses.replace(_KUAIHL, pair_variant="none", augment="none"),
}


class ContentLoss(nn.Module):
    """The training loss of KuaiHL (eq. 13) / ContentCTR (eq. 14), configured by :class:`LossConfig`.

    Example::

        loss_fn = ContentLoss("kuaihl")
        out = loss_fn(logits, labels, label_mask, text_seq=z, visual_seq=v, valid_mask=valid)
        out["loss"].backward()

    Args:
        config: a :class:`LossConfig` or the name of a preset in :data:`LOSS_PRESETS`.
    """

    def __init__(self, config: Union[LossConfig, str] = "kuaihl") -> None:
        super().__init__()
        if isinstance(config, str):
            if config not in LOSS_PRESETS:
                raise ValueError(f"unknown loss preset {config!r}; known: {sorted(LOSS_PRESETS)}")
            config = LOSS_PRESETS[config]
        self.config = config
        # Default normalizer for forward() (set by a data-parallel trainer; see _mean).
        self.normalizer: Optional[Normalizer] = None

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        label_mask: Optional[Tensor] = None,
        text_seq: Optional[Tensor] = None,
        visual_seq: Optional[Tensor] = None,
        valid_mask: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
        normalizer: Optional[Normalizer] = None,
    ) -> Dict[str, Tensor]:
        """Compute the weighted total.

        Args:
            logits, labels, label_mask: ``[b, n]`` (see :func:`pointwise_loss`).
            text_seq, visual_seq: ``[b, n, d]`` projected sequences; required when ``config.align``
                (and ``w_align > 0``).
            valid_mask: ``[b, n]`` valid (prefix) positions for the alignment; ``None`` = all.
            generator: optional ``torch.Generator`` for the alignment's random draws.
            normalizer: maps each term's local count (positions, pairs, windows) to the count it
                is divided by; the trainer passes ``all_reduce(count) / world_size`` so that
                data-parallel training optimises the global batch's mean (see :func:`_mean`).

        Returns:
            ``{"loss": total (with gradient), "point", "pair", "align"}``; the components are
            detached, unweighted, and 0 when switched off.
        """
        cfg = self.config
        normalizer = normalizer if normalizer is not None else self.normalizer
        point = pointwise_loss(logits, labels, label_mask, normalizer=normalizer)
        total = cfg.w_point * point
        if cfg.pair_variant != "none":
            pair = pairwise_loss(
                logits, labels, label_mask, variant=cfg.pair_variant, sigma=cfg.sigma, scope=cfg.pair_scope, normalizer=normalizer
            )
            total = total + cfg.w_pair * pair
        else:
            pair = logits.new_zeros(())
        # With w_align == 0 the term is only a statistic: skipped when no sequences are given.
        if cfg.align and not (cfg.w_align == 0 and (text_seq is None or visual_seq is None)):
            if text_seq is None or visual_seq is None:
                raise ValueError(
                    "LossConfig.align is on but text_seq / visual_seq were not given: pass the projected "
                    "[b, n, d] text and visual sequences, or use a config with align=False"
                )
            align = alignment_loss(
                text_seq,
                visual_seq,
                valid_mask,
                n_negatives=cfg.n_negatives,
                tau=cfg.align_tau,
                gamma=cfg.soft_dtw_gamma,
                augment=cfg.augment,
                augment_gamma=cfg.augment_gamma,
                normalize=cfg.align_norm,
                generator=generator,
                normalizer=normalizer,
            )
            total = total + cfg.w_align * align
        else:
            align = logits.new_zeros(())
        return {"loss": total, "point": point.detach(), "pair": pair.detach(), "align": align.detach()}

    def extra_repr(self) -> str:
        return repr(self.config)
