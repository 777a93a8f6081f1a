"""Population-referenced history kernel and its late fusion with a trained generic highlight model
(docs/HIGHLIGHTS.md section 6: why history needs a reference to other users' history).

Features ``x = P ((f - mu) / sd)`` with ``f = [visual, text]`` of a segment, ``mu``, ``sd`` the train
segments' mean and sd and ``P`` their top ``rank`` principal directions. A target segment is
averaged over the segments ``i-1..i+1`` of its video that exist, a history clip is the mean of its
segments; ``c(.,.)`` is the cosine. For user ``u`` with clips ``h_1..h_m`` and a population
``h_1..h_P`` of train users' clips::

    k_i = log mean_j exp(kappa c(x_i, h_j)) - log mean_p exp(kappa c(x_i, h_p))          [b, n]

(the user's clips against everybody's: what every history shares -- "looks like a highlight" --
cancels). The fused score is ``z(s_i) + beta k_i`` with ``s`` the generic model's scores, ``z`` the
z-score over the video's valid segments; ``beta`` and ``kappa`` are chosen after the generic model is
trained, on the train users' mAP over a grid (``beta = 0`` keeps the generic ranking). A user
without history gets ``k = 0``.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kuaihl_rec.data.phd.contract import PHDData
from kuaihl_rec.data.phd.examples import PHDBatch, UserExample, make_batch

BETAS = (0.0, 0.25, 0.5, 1.0, 2.0)
KAPPAS = (2.0, 5.0, 10.0)


def _smooth(x: Tensor, valid: Tensor) -> Tensor:
    """Mean over the valid ones of segments i-1..i+1: ``x [b, n, d]`` -> ``[b, n, d]``."""
    w = valid.to(x.dtype)[..., None]
    xw = F.pad((x * w).transpose(1, 2), (1, 1))
    cw = F.pad(w.transpose(1, 2), (1, 1))
    num = F.avg_pool1d(xw, 3, 1)
    den = F.avg_pool1d(cw, 3, 1).clamp(min=1e-6)
    return (num / den).transpose(1, 2)


class HistoryKernel(nn.Module):
    """``k [b, n]`` of the module doc; ``fit`` sets the standardisation, the basis and the population."""

    def __init__(self, in_dim: int, rank: int = 16) -> None:
        super().__init__()
        self.register_buffer("mu", torch.zeros(in_dim))
        self.register_buffer("sd", torch.ones(in_dim))
        self.register_buffer("basis", torch.eye(in_dim)[:, :rank])
        self.register_buffer("population", torch.zeros(0, rank))

    def project(self, f: Tensor) -> Tensor:
        return ((f - self.mu) / self.sd) @ self.basis

    def clips(self, batch: PHDBatch) -> Tuple[Tensor, Tensor]:
        """Unit clip vectors ``[b, m, r]`` and the clip mask ``[b, m]``."""
        w = batch.hist_valid.to(batch.hist_visual.dtype)[..., None]
        f = torch.cat([batch.hist_visual, batch.hist_text], dim=-1)
        mean = (self.project(f) * w).sum(2) / w.sum(2).clamp(min=1.0)
        return F.normalize(mean, dim=-1), batch.hist_valid.any(dim=2)

    def fit(self, data: PHDData, examples: Sequence[UserExample], population_users: int = 400, seed: int = 0) -> None:
        """Standardisation and basis from the segments of ``examples``' target videos; population = the
        clips of ``population_users`` of them (drawn with ``seed``)."""
        f = np.concatenate([np.c_[data.videos[v].visual, data.videos[v].text]
                            for v in sorted({e.video_id for e in examples})]).astype(np.float64)
        mu, sd = f.mean(0), f.std(0) + 1e-9
        _, _, vt = np.linalg.svd((f - mu) / sd, full_matrices=False)
        self.mu, self.sd = torch.tensor(mu, dtype=torch.float32), torch.tensor(sd, dtype=torch.float32)
        self.basis = torch.tensor(vt[: self.basis.shape[1]].T.copy(), dtype=torch.float32)
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(examples), size=min(population_users, len(examples)), replace=False)
        clips, valid = self.clips(make_batch(data, [examples[i] for i in sorted(pick)]))
        self.population = clips[valid]

    def forward(self, batch: PHDBatch, kappa: float) -> Tensor:
        x = F.normalize(_smooth(self.project(torch.cat([batch.visual, batch.text], dim=-1)), batch.valid), dim=-1)
        h, h_valid = self.clips(batch)
        own = (kappa * x @ h.transpose(1, 2)).masked_fill(~h_valid[:, None, :], float("-inf"))
        n_own = h_valid.sum(1).clamp(min=1).to(x.dtype)
        k = torch.logsumexp(own, dim=-1) - n_own.log()[:, None]
        k = k - (torch.logsumexp(kappa * x @ self.population.T, dim=-1) - float(np.log(len(self.population))))
        return torch.where(h_valid.any(1)[:, None], k, torch.zeros_like(k)) * batch.valid


def zscore(s: Tensor, valid: Tensor) -> Tensor:
    """``(s - mean) / sd`` over each row's valid entries ``[b, n]`` (0 at padding)."""
    w = valid.to(s.dtype)
    n = w.sum(1, keepdim=True).clamp(min=1.0)
    mean = (s * w).sum(1, keepdim=True) / n
    sd = (((s - mean) * w) ** 2).sum(1, keepdim=True).div(n).sqrt().clamp(min=1e-9)
    return (s - mean) / sd * w


class HistoryKernelFusion(nn.Module):
    """``z(base(batch)) + beta k`` (module doc). Trains as ``base``; ``after_training`` fits the kernel
    and chooses ``(beta, kappa)`` by ``evaluate(examples, scores) -> mAP`` on the train users."""

    def __init__(self, base: nn.Module, in_dim: int, rank: int = 16) -> None:
        super().__init__()
        self.base, self.kernel = base, HistoryKernel(in_dim, rank)
        self.beta, self.kappa = 0.0, KAPPAS[0]

    def training_loss(self, batch: PHDBatch, generator: Optional[torch.Generator] = None) -> Tensor:
        return self.base.training_loss(batch, generator)

    def forward(self, batch: PHDBatch) -> Tensor:
        out = zscore(self.base(batch), batch.valid)
        return out + self.beta * self.kernel(batch, self.kappa) if self.beta else out

    def after_training(self, data: PHDData, examples: Sequence[UserExample], seed: int,
                       score: Callable[[nn.Module, Sequence[UserExample]], float]) -> None:
        """Fit the kernel on ``examples`` and keep the grid point of best ``score(self, examples)``."""
        self.kernel.fit(data, examples, seed=seed)
        best = None
        for beta in BETAS:
            for kappa in (KAPPAS if beta else KAPPAS[:1]):
                self.beta, self.kappa = beta, kappa
                value = score(self, examples)
                if best is None or value > best[0]:
                    best = (value, beta, kappa)
        _, self.beta, self.kappa = best
