"""Batched (soft-)DTW over anti-diagonals with an explicit reverse-wavefront backward.

KuaiHL eq. 4-5 / ContentCTR eq. 7-8, for a cost matrix ``D`` (``[n, m]`` per batch item)::

    C_00 = D_00
    C_ij = D_ij + min(C_{i-1,j-1}, C_{i-1,j}, C_{i,j-1})
    DTW(D) = C_{n-1,m-1}            (0-based; the papers' C_{n,m})

Soft-DTW (Cuturi & Blondel 2017; the official code, gamma = 0.1) replaces ``min`` by the soft-min
``min_gamma(a) = -gamma log sum_k exp(-a_k / gamma)``. The backward propagates
``E_ij = dC_end / dC_ij`` from the end cell back along the anti-diagonals,
``E_ij = sum_succ E_succ * w_succ(ij)`` with ``w`` the weight a successor's min gives cell ``ij``
(soft-min weights, or the argmin indicator for hard DTW), and ``dC_end / dD_ij = E_ij``
(Cuturi & Blondel 2017, Algorithm 2). First derivatives only.

Shapes: ``cost`` is ``[B, n, m]``; the wavefront works on ``K = n + m - 1`` anti-diagonals of
``[B, n]`` cells each.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor

__all__ = ["dtw_from_cost"]

# Finite stand-in for +inf in the DTW wavefront: keeps min / logsumexp and their gradients
# free of NaN (inf - inf) while never being selected next to a real cumulative cost.
_DTW_BIG = 1.0e10

Lengths = Union[None, Tensor, Tuple[Tensor, Tensor]]


def _lengths_pair(
    lengths: Lengths, B: int, n: int, m: int, device: torch.device
) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """Validate ``lengths`` (``None``, ``[B]`` or a pair of ``[B]``) into ``(lx [B], ly [B])`` longs."""
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


def _skew_by_antidiagonal(cost: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Lay ``cost [B, n, m]`` out by anti-diagonal: ``skew[k, b, i] = cost[b, i, k - i]``.

    Returns ``skew [K, B, n]`` (contiguous; out-of-band cells, ``k - i`` outside ``[0, m)``, hold
    ``_DTW_BIG``), the gather index ``idx [B, n, K]`` (clamped column of each cell) and the bool
    ``in_band [K, n]``; ``K = n + m - 1``.
    """
    B, n, m = cost.shape
    device, dtype = cost.device, cost.dtype
    n_diag = n + m - 1
    rows = torch.arange(n, device=device)
    cols = torch.arange(n_diag, device=device)[:, None] - rows[None, :]  # [K, n]: j = k - i
    in_band = (cols >= 0) & (cols < m)
    idx = cols.clamp(0, m - 1).t()[None].expand(B, n, n_diag)
    skew = cost.gather(2, idx).permute(2, 0, 1)  # [K, B, n]: skew[k, b, i] = cost[b, i, k-i]
    skew = torch.where(in_band[:, None, :], skew, torch.full((), _DTW_BIG, dtype=dtype, device=device))
    return skew.contiguous(), idx, in_band


def _predecessors(C: Tensor, k: int) -> Tuple[Tensor, Tensor, Tensor]:
    """The three ``[B, n]`` predecessor views of anti-diagonal ``k`` in the storage ``C``.

    Of cell ``(i, k-i)``: ``C[i-1, j-1]`` (diag k-2, row i-1), ``C[i-1, j]`` (diag k-1, row i-1)
    and ``C[i, j-1]`` (diag k-1, row i).
    """
    return C[k - 1, :, :-1], C[k, :, :-1], C[k, :, 1:]


def _hard_wavefront(C: Tensor, skew: Tensor, need_grad: bool) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """Fill ``C`` with hard-min DTW; returns the argmin masks ``(take_diag, take_up)`` ``[K, B, n]``.

    ``take_diag``: the diagonal predecessor is the min; ``take_up``: "up" is at most "left" (ties
    go to the first of diagonal / up / left). ``None`` masks when no gradient is needed.
    """
    n_diag, B, n = skew.shape
    take_diag = torch.zeros((n_diag, B, n), dtype=torch.bool, device=skew.device) if need_grad else None
    take_up = torch.zeros((n_diag, B, n), dtype=torch.bool, device=skew.device) if need_grad else None
    for k in range(1, n_diag):
        ul, up, left = _predecessors(C, k)
        up_left = torch.minimum(up, left)
        best = torch.minimum(ul, up_left)
        if need_grad:
            torch.le(ul, up_left, out=take_diag[k])
            torch.le(up, left, out=take_up[k])
        torch.add(skew[k], best, out=C[k + 1, :, 1:])
    return take_diag, take_up


def _soft_wavefront(C: Tensor, skew: Tensor, gamma: float, need_grad: bool) -> Optional[Tensor]:
    """Fill ``C`` with soft-min DTW; returns ``soft_w [K, 4, B, n]`` (``None`` without gradient).

    ``soft_w[k]`` holds the unnormalised soft-min weights ``exp((best - x) / gamma)`` of the
    diagonal / up / left predecessors and their sum, the soft-min being
    ``best - gamma * log(sum)`` with ``best`` the hard min (a stable logsumexp).
    """
    n_diag, B, n = skew.shape
    soft_w = torch.zeros((n_diag, 4, B, n), dtype=skew.dtype, device=skew.device) if need_grad else None
    inv_gamma = 1.0 / gamma
    for k in range(1, n_diag):
        ul, up, left = _predecessors(C, k)
        up_left = torch.minimum(up, left)
        best = torch.minimum(ul, up_left)
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
    return soft_w


def _predecessor_shares(
    e: Tensor, k: int, gamma: Optional[float], saved: Tuple[Tensor, ...], zero: Tensor
) -> Tuple[Tensor, Tensor, Tensor]:
    """Split ``e = dC_end / dC`` of diagonal ``k`` (``[B, n]``) over the diagonal / up / left predecessors."""
    if gamma is None:
        take_diag, take_up = saved
        p0 = torch.where(take_diag[k], e, zero)
        rest = e - p0
        p1 = torch.where(take_up[k], rest, zero)
        return p0, p1, rest - p1
    e0, e1, e2, total = saved[0][k].unbind(0)
    scale = e / total
    return e0 * scale, e1 * scale, e2 * scale


def _reverse_wavefront(
    grad_out: Tensor,
    gamma: Optional[float],
    saved: Tuple[Tensor, ...],
    in_band: Tensor,
    end_k: Tensor,
    lx: Tensor,
    dtype: torch.dtype,
) -> Tensor:
    """``acc [K, B, n]``: ``dC_end / dD`` of every cell, in anti-diagonal layout (0 out of band).

    ``acc[k, b, i]`` collects ``dC_end / dC(i, k - i)`` from the successors, starting from
    ``grad_out [B]`` at each end cell ``(lx - 1, ly - 1)`` on diagonal ``end_k``.
    """
    n_diag, n = in_band.shape
    B = grad_out.shape[0]
    device = grad_out.device
    acc = torch.zeros((n_diag, B, n), dtype=dtype, device=device)
    acc[end_k, torch.arange(B, device=device), lx - 1] = grad_out.to(dtype)
    band = in_band.to(dtype)[:, None, :]
    zero = torch.zeros((), dtype=dtype, device=device)
    for k in range(n_diag - 1, 0, -1):
        e = acc[k].mul_(band[k])
        p0, p1, p2 = _predecessor_shares(e, k, gamma, saved, zero)
        # Cell (i, k-i) passes p1 to (i-1, j) and p2 to (i, j-1) on diag k-1, and p0 to
        # (i-1, j-1) on diag k-2.
        acc[k - 1, :, : n - 1] += p1[:, 1:]
        acc[k - 1] += p2
        if k >= 2:
            acc[k - 2, :, : n - 1] += p0[:, 1:]
    acc[0].mul_(band[0])
    return acc


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
        """``cost [B, n, m]``, lengths ``lx, ly [B]`` -> distances ``C[lx-1, ly-1]`` ``[B]``."""
        B, n, m = cost.shape
        skew, idx, in_band = _skew_by_antidiagonal(cost)
        need_grad = ctx.needs_input_grad[0]
        C = torch.full((n + m, B, n + 1), _DTW_BIG, dtype=cost.dtype, device=cost.device)
        C[1, :, 1:] = skew[0]  # cell (0, 0): C = D (its predecessor C[-1, -1] is 0)
        if gamma is None:
            saved = _hard_wavefront(C, skew, need_grad)
        else:
            saved = (_soft_wavefront(C, skew, gamma, need_grad),)
        end_k = lx + ly - 2
        out = C[end_k + 1, torch.arange(B, device=cost.device), lx].clone()
        if need_grad:
            ctx.gamma = gamma
            ctx.shape = (B, n, m)
            ctx.dtype = cost.dtype
            ctx.save_for_backward(idx, in_band, end_k, lx, *saved)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        """``grad_out [B]`` -> ``dL / dcost [B, n, m]`` (``None`` for gamma and the lengths)."""
        idx, in_band, end_k, lx, *saved = ctx.saved_tensors
        acc = _reverse_wavefront(grad_out, ctx.gamma, tuple(saved), in_band, end_k, lx, ctx.dtype)
        grad_cost = torch.zeros(ctx.shape, dtype=ctx.dtype, device=grad_out.device)
        grad_cost.scatter_add_(2, idx, acc.permute(1, 2, 0))  # out-of-band entries are 0
        return grad_cost, None, None, None


def dtw_from_cost(
    cost: Tensor,
    gamma: Optional[float] = None,
    lengths: Lengths = None,
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
