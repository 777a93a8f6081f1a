"""The population-referenced history kernel and its fusion (kuaihl_rec/model/history_kernel.py)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from kuaihl_rec.data.phd.examples import PHDBatch, make_batch, user_examples
from kuaihl_rec.data.phd.world import generate_phd_world, phd_world_config
from kuaihl_rec.model.history_kernel import HistoryKernel, HistoryKernelFusion, zscore


def _batch(seed=0, b=2, n=7, m=3, c=4, dv=5, dt=3):
    g = torch.Generator().manual_seed(seed)
    valid = torch.ones(b, n, dtype=torch.bool)
    valid[1, 5:] = False
    hv = torch.zeros(b, m, c, dtype=torch.bool)
    hv[0, :, :2] = True
    hv[1, 0, :3] = True  # user 1: one clip only
    return PHDBatch(torch.randn(b, n, dv, generator=g), torch.randn(b, n, dt, generator=g), valid,
                    torch.zeros(b, n), torch.zeros(b, n, dtype=torch.bool), torch.randn(b, m, c, dv, generator=g),
                    torch.randn(b, m, c, dt, generator=g), hv)


def _kernel(batch, rank=4, seed=1):
    d = batch.visual.shape[-1] + batch.text.shape[-1]
    k = HistoryKernel(d, rank)
    g = torch.Generator().manual_seed(seed)
    k.mu, k.sd = torch.randn(d, generator=g), torch.rand(d, generator=g) + 0.5
    k.basis = torch.randn(d, rank, generator=g)
    k.population = torch.nn.functional.normalize(torch.randn(6, rank, generator=g), dim=-1)
    return k


def _unit(v):
    return v / np.linalg.norm(v)


def test_kernel_matches_a_direct_computation():
    batch, kappa = _batch(), 3.0
    k = _kernel(batch)
    got = k(batch, kappa).numpy()
    mu, sd, basis, pop = (t.numpy().astype(np.float64) for t in (k.mu, k.sd, k.basis, k.population))
    proj = lambda f: ((f - mu) / sd) @ basis  # noqa: E731
    for u in range(2):
        f = np.concatenate([batch.visual[u].numpy(), batch.text[u].numpy()], 1).astype(np.float64)
        n_valid = int(batch.valid[u].sum())
        x = proj(f[:n_valid])
        clips = [_unit(proj(np.concatenate([batch.hist_visual[u, j], batch.hist_text[u, j]], 1)
                            [batch.hist_valid[u, j].numpy()]).mean(0))
                 for j in range(3) if batch.hist_valid[u, j].any()]
        for i in range(n_valid):
            xi = _unit(x[max(i - 1, 0):i + 2].mean(0))  # the segments i-1..i+1 that exist
            own = math.log(np.mean([math.exp(kappa * xi @ h) for h in clips]))
            ref = math.log(np.mean([math.exp(kappa * xi @ p) for p in pop]))
            assert abs(got[u, i] - (own - ref)) < 1e-4
        assert np.all(got[u, n_valid:] == 0)  # padding


def test_kernel_is_zero_without_history_and_fusion_with_beta_zero_is_the_zscored_base():
    batch = _batch()
    k = _kernel(batch)
    empty = batch.replace(hist_valid=torch.zeros_like(batch.hist_valid))
    assert torch.all(k(empty, 2.0) == 0)

    class Base(torch.nn.Module):
        def forward(self, b):
            return b.visual[..., 0] * 3 + 1

    fused = HistoryKernelFusion(Base(), 8, 4)
    fused.kernel = k
    z = zscore(Base()(batch), batch.valid)
    assert torch.allclose(fused(batch), z)
    for u in range(2):  # mean 0, sd 1 over the valid segments
        v = z[u][batch.valid[u]]
        assert abs(float(v.mean())) < 1e-5 and abs(float(v.std(unbiased=False)) - 1) < 1e-4
    fused.beta, fused.kappa = 0.5, 2.0
    assert torch.allclose(fused(batch), z + 0.5 * k(batch, 2.0))


def test_fit_chooses_the_grid_point_of_best_train_score_and_population_comes_from_train_users():
    data, _ = generate_phd_world(phd_world_config("tiny", seed=0))
    train = user_examples(data, "train")

    class Base(torch.nn.Module):
        def forward(self, b):
            return b.visual[..., 0]

    fused = HistoryKernelFusion(Base(), data.visual_dim + data.text_dim, 4)
    seen = []

    def score(model, exs):  # a scorer that prefers beta = 1, kappa = 5
        seen.append((model.beta, model.kappa))
        return -abs(model.beta - 1.0) - abs(model.kappa - 5.0)

    fused.after_training(data, train, 0, score)
    assert (fused.beta, fused.kappa) == (1.0, 5.0) and (0.0, 2.0) in seen
    clips, valid = fused.kernel.clips(make_batch(data, train))
    assert len(fused.kernel.population) == int(valid.sum())  # tiny: fewer than 400 users, all of them
    other = [dataclasses.replace(e, history=train[(i + 1) % len(train)].history) for i, e in enumerate(train)]
    b_own, b_other = make_batch(data, train), make_batch(data, other)
    assert not torch.allclose(fused(b_own), fused(b_other))  # beta > 0: the user's history matters
