"""The papers' pair scale (KuaiHL eq. 9-13 / ContentCTR eq. 10-14 as written): the pairwise loss as a
sum over each window's kept pairs, averaged over windows, against a brute-force sum."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from kuaihl_rec.losses import LOSS_PRESETS, PAPER_SCALE_SUFFIX, ContentLoss, LossConfig, pairwise_loss
from kuaihl_rec.losses.pointwise import pointwise_loss


def _brute_sum(logits, labels, mask, variant, sigma, scope):
    """(sum over kept pairs of softplus(-sigma ds), windows with a labelled position), by loops."""
    s = torch.sigmoid(logits).tolist()
    y, m = labels.tolist(), mask.tolist()
    b, n = len(s), len(s[0])
    cells = [(w, i) for w in range(b) for i in range(n) if m[w][i]]
    total = 0.0
    for p, q in itertools.product(cells, cells):
        if scope == "window" and p[0] != q[0]:
            continue
        ds, dy = s[p[0]][p[1]] - s[q[0]][q[1]], y[p[0]][p[1]] - y[q[0]][q[1]]
        if dy > 0 and {"L0": True, "L1": dy - ds >= 0, "L2": ds <= 0, "L3": 0 < ds < dy}[variant]:
            total += math.log1p(math.exp(-sigma * ds))
    return total, sum(any(row) for row in m)


def _case(seed=5):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    labels = torch.rand(4, 7, generator=gen, dtype=torch.float64)
    mask = torch.rand(4, 7, generator=gen) > 0.3
    mask[2] = False  # a window without a labelled position is not counted
    return logits, labels, mask


@pytest.mark.parametrize("scope", ["window", "batch"])
@pytest.mark.parametrize("variant", ["L0", "L1", "L2", "L3"])
def test_window_sum_equals_a_brute_force_sum(variant, scope):
    logits, labels, mask = _case()
    total, windows = _brute_sum(logits, labels, mask, variant, 10.0, scope)
    assert total > 0 and windows == 3
    got = pairwise_loss(logits, labels, mask, variant=variant, scope=scope, reduction="window_sum")
    assert got.item() == pytest.approx(total / windows, rel=1e-12)
    mean = pairwise_loss(logits, labels, mask, variant=variant, scope=scope)
    assert got.item() > mean.item()  # many pairs per window: the papers' scale is the larger


def test_the_sum_presets_weigh_the_papers_sum():
    logits, labels, mask = _case(11)
    cfg = LOSS_PRESETS["point+L1" + PAPER_SCALE_SUFFIX]
    assert cfg.pair_reduction == "window_sum" and cfg.w_pair == 0.20
    assert LOSS_PRESETS["point+L1"].pair_reduction == "mean"
    out = ContentLoss(cfg)(logits, labels, mask)
    total, windows = _brute_sum(logits, labels, mask, "L1", cfg.sigma, "window")
    want = cfg.w_point * pointwise_loss(logits, labels, mask).item() + cfg.w_pair * total / windows
    assert out["loss"].item() == pytest.approx(want, rel=1e-12)
    assert {n for n in LOSS_PRESETS if n.endswith(PAPER_SCALE_SUFFIX)} == {
        n + PAPER_SCALE_SUFFIX for n, c in LOSS_PRESETS.items() if c.pair_variant != "none" and "@" not in n
    }
    with pytest.raises(ValueError, match="pair_reduction must be one of"):
        LossConfig(pair_reduction="sum")
    with pytest.raises(ValueError, match="pair reduction must be one of"):
        pairwise_loss(logits, labels, mask, reduction="sum")


def test_window_sum_with_a_normalizer_is_the_global_batch_mean():
    """Two 'ranks' holding halves of the batch with normalizer(c) = W_global / 2 average to the whole
    batch's loss (DDP averages gradients), whatever each half's window count."""
    logits, labels, mask = _case(2)
    whole = pairwise_loss(logits, labels, mask, reduction="window_sum")
    norm = lambda c: torch.tensor(3.0 / 2)  # noqa: E731  (3 windows with labels in all)
    halves = [pairwise_loss(logits[a:b], labels[a:b], mask[a:b], reduction="window_sum", normalizer=norm)
              for a, b in ((0, 1), (1, 4))]
    assert ((halves[0] + halves[1]) / 2).item() == pytest.approx(whole.item(), rel=1e-12)
