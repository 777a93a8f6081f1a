"""Tests of kuaihl_rec.losses: hand-computed values, brute force, a textbook DTW and tslearn."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from kuaihl_rec.losses import (
    LOSS_PRESETS,
    ContentLoss,
    LossConfig,
    alignment_loss,
    cosine_cost,
    dtw_from_cost,
    pair_keep_mask,
    pairwise_loss,
    pointwise_loss,
    sample_alignment_permutations,
)

# The classic example: squared-difference cost, DTW = 1.75 (tslearn reports sqrt = 1.3229).
X_REF = [0.0, 1.0, 2.0, 3.0, 2.0, 1.0, 0.0]
Y_REF = [0.0, 0.0, 1.5, 3.5, 3.0, 1.0, 0.0, 0.0]


def _sq_cost(x, y) -> torch.Tensor:
    x = torch.tensor(x, dtype=torch.float64)
    y = torch.tensor(y, dtype=torch.float64)
    return ((x[:, None] - y[None, :]) ** 2)[None]


def _logit(p):
    p = torch.as_tensor(p, dtype=torch.float64)
    return torch.log(p) - torch.log1p(-p)


# ------------------------------------------------------------------------------------ references
def textbook_dtw(cost: np.ndarray, gamma=None) -> float:
    """Per-cell DP: R[i, j] = cost[i-1, j-1] + min(R[i-1, j-1], R[i-1, j], R[i, j-1]), R[0, 0] = 0."""
    n, m = cost.shape
    R = np.full((n + 1, m + 1), np.inf)
    R[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            prev = np.array([R[i - 1, j - 1], R[i - 1, j], R[i, j - 1]])
            if gamma is None:
                best = prev.min()
            else:
                best = -gamma * logsumexp(-prev / gamma)
            R[i, j] = cost[i - 1, j - 1] + best
    return float(R[n, m])


def all_warping_paths(n: int, m: int):
    """Every monotone path (0,0) -> (n-1, m-1) with steps (1,1), (1,0), (0,1)."""

    def rec(i, j):
        if (i, j) == (n - 1, m - 1):
            yield [(i, j)]
            return
        for di, dj in ((1, 1), (1, 0), (0, 1)):
            a, b = i + di, j + dj
            if a < n and b < m:
                for rest in rec(a, b):
                    yield [(i, j)] + rest

    return list(rec(0, 0))


def bce(x: float, y: float) -> float:
    return math.log1p(math.exp(x)) - x * y


# ------------------------------------------------------------------------------------ pointwise
def test_pointwise_hand_value_and_mask():
    logits = torch.tensor([[0.0, 2.0, -1.0], [0.5, -3.0, 1.0]], requires_grad=True)
    labels = torch.tensor([[0.5, 0.8, float("nan")], [0.0, 0.2, 1.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    got = pointwise_loss(logits, labels, mask)
    want = np.mean([bce(0.0, 0.5), bce(2.0, 0.8), bce(0.5, 0.0), bce(-3.0, 0.2), bce(1.0, 1.0)])
    assert got.item() == pytest.approx(want, rel=1e-6)
    got.backward()
    assert logits.grad[0, 2].item() == 0.0  # the unlabelled position gets no gradient
    # d/dx mean BCE = (sigmoid(x) - y) / count
    assert logits.grad[0, 1].item() == pytest.approx((1 / (1 + math.exp(-2.0)) - 0.8) / 5, rel=1e-5)


def test_pointwise_empty_mask_is_differentiable_zero():
    logits = torch.randn(2, 4, requires_grad=True)
    loss = pointwise_loss(logits, torch.rand(2, 4), torch.zeros(2, 4, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(2, 4))


# ------------------------------------------------------------------------------------ pairwise
# One window where each border case is known: s and y with (i, j) pairs y_i > y_j:
#   (0,1): dy .40 ds  .05 -> L0 L1 L3     (0,3): dy .45 ds .50 -> L0 only (over the border)
#   (0,2): dy .80 ds -.10 -> L0 L1 L2     (1,3): dy .05 ds .45 -> L0 only
#   (1,2): dy .40 ds -.15 -> L0 L1 L2     (3,2): dy .35 ds -.60 -> L0 L1 L2
# Position 4 is unlabelled (it would form pairs with everything).
S_CRAFT = [0.6, 0.55, 0.7, 0.1, 0.01]
Y_CRAFT = [0.9, 0.5, 0.1, 0.45, 1.0]
MASK_CRAFT = [True, True, True, True, False]
KEPT_CRAFT = {
    "L0": {(0, 1), (0, 3), (0, 2), (1, 3), (1, 2), (3, 2)},
    "L1": {(0, 1), (0, 2), (1, 2), (3, 2)},
    "L2": {(0, 2), (1, 2), (3, 2)},
    "L3": {(0, 1)},
}


@pytest.mark.parametrize("variant", ["L0", "L1", "L2", "L3"])
@pytest.mark.parametrize("sigma", [10.0, 1.0])
def test_pairwise_crafted_border_cases(variant, sigma):
    logits = _logit([S_CRAFT]).float().requires_grad_(True)
    labels = torch.tensor([Y_CRAFT])
    mask = torch.tensor([MASK_CRAFT])
    keep = pair_keep_mask(torch.sigmoid(logits), labels, mask, variant)[0]
    assert {tuple(p) for p in keep.nonzero().tolist()} == KEPT_CRAFT[variant]
    got = pairwise_loss(logits, labels, mask, variant=variant, sigma=sigma)
    want = np.mean(
        [math.log1p(math.exp(-sigma * (S_CRAFT[i] - S_CRAFT[j]))) for i, j in KEPT_CRAFT[variant]]
    )
    assert got.item() == pytest.approx(want, rel=1e-5)


def _brute_pairwise(s, y, mask, variant, sigma, scope):
    """Python loops over pairs; returns (loss, kept pairs as ((b,i),(b,j)))."""
    b, n = len(s), len(s[0])
    cells = [(w, i) for w in range(b) for i in range(n) if mask[w][i]]
    kept, terms = [], []
    for p, q in itertools.product(cells, cells):
        if scope == "window" and p[0] != q[0]:
            continue
        si, sj, yi, yj = s[p[0]][p[1]], s[q[0]][q[1]], y[p[0]][p[1]], y[q[0]][q[1]]
        if not yi > yj:
            continue
        ds, dy = si - sj, yi - yj
        ok = {"L0": True, "L1": dy - ds >= 0, "L2": ds <= 0, "L3": 0 < ds < dy}[variant]
        if ok:
            kept.append((p, q))
            terms.append(math.log1p(math.exp(-sigma * ds)))
    return (float(np.mean(terms)) if terms else 0.0), kept


@pytest.mark.parametrize("scope", ["window", "batch"])
@pytest.mark.parametrize("variant", ["L0", "L1", "L2", "L3"])
def test_pairwise_matches_brute_force(variant, scope):
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    labels = torch.rand(3, 6, generator=gen, dtype=torch.float64)
    mask = torch.rand(3, 6, generator=gen) > 0.25
    s = torch.sigmoid(logits).tolist()
    want, kept = _brute_pairwise(s, labels.tolist(), mask.tolist(), variant, 10.0, scope)
    assert kept, "the random case must keep some pairs"
    got = pairwise_loss(logits, labels, mask, variant=variant, sigma=10.0, scope=scope)
    assert got.item() == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("variant", ["L1", "L2", "L3"])
def test_pairwise_gradient_does_not_flow_through_the_mask(variant):
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.rand(2, 7, generator=gen, dtype=torch.float64)
    loss = pairwise_loss(logits, labels, variant=variant, sigma=10.0)
    loss.backward()
    # The same loss with the mask frozen to constants from the current (detached) values.
    s0 = torch.sigmoid(logits.detach()).numpy()
    y = labels.numpy()
    const = np.zeros((2, 7, 7), dtype=bool)
    for w, i, j in itertools.product(range(2), range(7), range(7)):
        ds, dy = s0[w, i] - s0[w, j], y[w, i] - y[w, j]
        if dy > 0:
            const[w, i, j] = {"L1": dy - ds >= 0, "L2": ds <= 0, "L3": 0 < ds < dy}[variant]
    assert const.any()
    x = logits.detach().clone().requires_grad_(True)
    s = torch.sigmoid(x)
    ds = s[:, :, None] - s[:, None, :]
    ref = torch.nn.functional.softplus(-10.0 * ds)[torch.from_numpy(const)].mean()
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    torch.testing.assert_close(logits.grad, x.grad, rtol=1e-10, atol=1e-12)


def test_pairwise_no_pairs_is_differentiable_zero_and_none_variant():
    logits = torch.randn(2, 5, requires_grad=True)
    flat = torch.full((2, 5), 0.3)  # no y_i > y_j
    for variant in ("L0", "L1", "none"):
        loss = pairwise_loss(logits, flat, variant=variant)
        assert loss.item() == 0.0 and loss.requires_grad
        (g,) = torch.autograd.grad(loss, logits)
        assert torch.equal(g, torch.zeros_like(g))
    # Over-optimised pairs only: L1 keeps none, L0 keeps them.
    logits2 = _logit([[0.9, 0.1]]).float().requires_grad_(True)
    y2 = torch.tensor([[0.6, 0.5]])
    assert pairwise_loss(logits2, y2, variant="L1").item() == 0.0
    assert pairwise_loss(logits2, y2, variant="L0").item() > 0.0


def test_pairwise_window_scope_ignores_cross_window_pairs():
    # Two windows, one position each: window scope has no pair, batch scope has one.
    logits = torch.zeros(2, 1, requires_grad=True)
    labels = torch.tensor([[0.8], [0.2]])
    assert pairwise_loss(logits, labels, variant="L0", scope="window").item() == 0.0
    assert pairwise_loss(logits, labels, variant="L0", scope="batch").item() == pytest.approx(math.log(2))


# ------------------------------------------------------------------------------------ DTW
@pytest.mark.parametrize("gamma", [None, 1.0, 0.1, 0.01])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 5), (2, 4, 7), (2, 7, 3), (3, 20, 20), (2, 1, 6)])
def test_dtw_matches_textbook_dp(shape, gamma):
    gen = torch.Generator().manual_seed(sum(shape))
    cost = torch.rand(*shape, generator=gen, dtype=torch.float64) * 2.0
    got = dtw_from_cost(cost, gamma=gamma)
    want = [textbook_dtw(c, gamma) for c in cost.numpy()]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-10)
    # float32 agrees too (the DP runs in the input dtype)
    np.testing.assert_allclose(dtw_from_cost(cost.float(), gamma=gamma).numpy(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("gamma", [None, 0.1])
def test_dtw_variable_lengths_read_the_prefix(gamma):
    gen = torch.Generator().manual_seed(11)
    cost = torch.rand(5, 6, 8, generator=gen, dtype=torch.float64)
    lx = torch.tensor([6, 1, 3, 4, 2])
    ly = torch.tensor([8, 5, 3, 1, 2])
    got = dtw_from_cost(cost, gamma=gamma, lengths=(lx, ly))
    want = [textbook_dtw(c[:a, :b], gamma) for c, a, b in zip(cost.numpy(), lx.tolist(), ly.tolist())]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
    # Square prefixes from a single [B] tensor; garbage (NaN) in the padding changes nothing.
    sq = torch.rand(4, 6, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([6, 2, 4, 1])
    dirty = sq.detach().clone()
    for k, m in enumerate(lengths.tolist()):
        dirty[k, m:, :] = float("nan")
        dirty[k, :, m:] = float("nan")
    dirty.requires_grad_(True)
    got_sq = dtw_from_cost(dirty, gamma=gamma, lengths=lengths)
    want_sq = [textbook_dtw(c[:m, :m], gamma) for c, m in zip(sq.detach().numpy(), lengths.tolist())]
    np.testing.assert_allclose(got_sq.detach().numpy(), want_sq, rtol=1e-10)
    got_sq.sum().backward()
    assert torch.isfinite(dirty.grad).all()
    for k, m in enumerate(lengths.tolist()):
        assert dirty.grad[k, m:, :].abs().sum() == 0 and dirty.grad[k, :, m:].abs().sum() == 0


def test_dtw_reference_constants():
    cost = _sq_cost(X_REF, Y_REF)
    assert dtw_from_cost(cost).item() == pytest.approx(1.75, abs=1e-12)
    assert math.sqrt(dtw_from_cost(cost).item()) == pytest.approx(1.3229, abs=1e-4)


def test_dtw_against_tslearn():
    metrics = pytest.importorskip("tslearn.metrics")

    def ts_dtw(a, b, gamma=None):
        # tslearn's PyTorch backend (its own per-cell loops) skips the ~20 s numba JIT of the
        # NumPy backend; fall back to NumPy on tslearn versions without backends.
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        try:
            if gamma is None:
                out = metrics.dtw(ta, tb, be="pytorch")
            else:
                out = metrics.soft_dtw(ta, tb, gamma=gamma, be="pytorch")
        except TypeError:
            out = metrics.dtw(a, b) if gamma is None else metrics.soft_dtw(a, b, gamma=gamma)
        return float(out)

    x = np.array(X_REF)[:, None]
    y = np.array(Y_REF)[:, None]
    cost = _sq_cost(X_REF, Y_REF)
    assert ts_dtw(x, y) == pytest.approx(1.3228756555, abs=1e-9)
    assert math.sqrt(dtw_from_cost(cost).item()) == pytest.approx(ts_dtw(x, y), abs=1e-12)
    for gamma in (1.0, 0.1, 0.01):
        want = ts_dtw(x, y, gamma)
        assert dtw_from_cost(cost, gamma=gamma).item() == pytest.approx(want, rel=1e-10, abs=1e-10)
    # random multivariate series of different lengths
    rng = np.random.default_rng(0)
    for n, m in ((5, 9), (12, 4)):
        a, b = rng.normal(size=(n, 3)), rng.normal(size=(m, 3))
        c = torch.from_numpy(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))[None]
        assert math.sqrt(dtw_from_cost(c).item()) == pytest.approx(ts_dtw(a, b), rel=1e-10)
        for gamma in (1.0, 0.1, 0.01):
            want = ts_dtw(a, b, gamma)
            assert dtw_from_cost(c, gamma=gamma).item() == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_soft_dtw_gradcheck():
    gen = torch.Generator().manual_seed(5)
    cost = torch.rand(3, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c: dtw_from_cost(c, gamma=0.3), (cost,))
    assert torch.autograd.gradcheck(lambda c: dtw_from_cost(c, gamma=1.0), (cost,))
    lengths = (torch.tensor([4, 2, 3]), torch.tensor([5, 5, 1]))
    assert torch.autograd.gradcheck(lambda c: dtw_from_cost(c, gamma=0.1, lengths=lengths), (cost,))


def test_hard_dtw_gradient_is_the_optimal_path():
    gen = torch.Generator().manual_seed(9)
    for n, m in ((4, 5), (5, 5), (6, 3)):
        cost = torch.rand(1, n, m, generator=gen, dtype=torch.float64)
        paths = all_warping_paths(n, m)
        totals = [sum(cost[0, i, j].item() for i, j in p) for p in paths]
        order = np.argsort(totals)
        assert totals[order[1]] - totals[order[0]] > 1e-6, "test needs a unique optimal path"
        indicator = torch.zeros(n, m, dtype=torch.float64)
        for i, j in paths[order[0]]:
            indicator[i, j] = 1.0
        c = cost.clone().requires_grad_(True)
        d = dtw_from_cost(c)
        assert d.item() == pytest.approx(totals[order[0]], rel=1e-12)
        d.backward()
        assert torch.equal(c.grad[0], indicator)


# ------------------------------------------------------------------------------------ alignment
def _pair(b=8, n=20, d=32, noise=0.05, seed=0):
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(b, n, d, generator=gen)
    z = v + noise * torch.randn(b, n, d, generator=gen)
    return z, v


@pytest.mark.parametrize("augment", ["none", "positive", "exclude"])
@pytest.mark.parametrize("gamma", [None, 0.1])
def test_alignment_lower_for_aligned_than_shuffled(augment, gamma):
    z, v = _pair()
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    kw = dict(augment=augment, gamma=gamma)
    aligned = alignment_loss(z, v, generator=torch.Generator().manual_seed(2), **kw)
    shuffled = alignment_loss(z, v[:, perm], generator=torch.Generator().manual_seed(2), **kw)
    assert aligned.item() < 0.1 * shuffled.item()
    assert shuffled.item() > math.log(9) * 0.5


@pytest.mark.parametrize("augment", ["none", "positive", "exclude"])
@pytest.mark.parametrize("normalize", ["length", "none"])
def test_alignment_value_matches_reference(augment, normalize):
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(3, 6, 5, generator=gen, dtype=torch.float64)
    v = torch.randn(3, 6, 5, generator=gen, dtype=torch.float64)
    valid = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] * 5 + [False]])
    kw = dict(n_negatives=4, tau=0.5, augment=augment, augment_gamma=0.2)
    got = alignment_loss(z, v, valid, normalize=normalize, generator=torch.Generator().manual_seed(8), **kw)
    # Replay the same draws, then evaluate with the textbook DP on explicitly reordered v.
    lengths = valid.sum(1)
    sim = torch.nn.functional.cosine_similarity(z[:, :, None, :], v[:, None, :, :], dim=-1)
    pos, negs, swap, usable = sample_alignment_permutations(
        sim, lengths, 4, augment, 0.2, torch.Generator().manual_seed(8)
    )
    assert usable.all()
    losses = []
    for w in range(3):
        m = int(lengths[w])
        dists = []
        for order in [pos[w]] + list(negs[w]):
            vw = v[w][order[:m]]
            zz = torch.nn.functional.normalize(z[w, :m], dim=-1)
            vv = torch.nn.functional.normalize(vw, dim=-1)
            dist = textbook_dtw((1 - zz @ vv.T).numpy())
            dists.append(dist / m if normalize == "length" else dist)
        logits = -np.array(dists) / 0.5
        losses.append(logsumexp(logits) - logits[0])
    assert got.item() == pytest.approx(float(np.mean(losses)), rel=1e-9)


def test_alignment_permutation_sampling_rules():
    b, n, N = 6, 7, 50
    lengths = torch.tensor([7, 7, 3, 5, 2, 1])
    sim = torch.rand(b, n, n, generator=torch.Generator().manual_seed(0))
    ident = torch.arange(n)
    for augment in ("none", "positive", "exclude"):
        pos, negs, swap, usable = sample_alignment_permutations(
            sim, lengths, N, augment, 0.1, torch.Generator().manual_seed(1)
        )
        again = sample_alignment_permutations(sim, lengths, N, augment, 0.1, torch.Generator().manual_seed(1))
        assert all(torch.equal(a, b_) for a, b_ in zip((pos, negs, swap, usable), again))
        want_usable = lengths >= (2 if augment == "none" else 3)
        assert torch.equal(usable, want_usable)
        for w in range(b):
            m = int(lengths[w])
            for order in negs[w]:
                # a permutation of the valid prefix; padding stays in place
                assert sorted(order[:m].tolist()) == list(range(m))
                assert torch.equal(order[m:], ident[m:])
                if usable[w]:
                    assert not torch.equal(order, ident)
                    if augment != "none":
                        assert not torch.equal(order, swap[w])
            if augment == "none":
                assert torch.equal(swap[w], ident) and torch.equal(pos[w], ident)
            else:
                moved = (swap[w] != ident).nonzero().flatten().tolist()
                if m >= 2:  # a transposition of two valid positions
                    assert len(moved) == 2 and max(moved) < m
                    i, j = moved
                    assert swap[w][i] == j and swap[w][j] == i
                assert torch.equal(pos[w], swap[w] if augment == "positive" else ident)


def test_alignment_swap_follows_softmax_of_similarity():
    # Many copies of one 3-position window: empirical swap frequencies vs KuaiHL eq. 6.
    reps, gamma = 20000, 0.5
    base = torch.tensor([[0.9, 0.1, -0.3], [0.5, 0.2, 0.8], [-0.2, 0.4, 0.0]])
    sim = base.expand(reps, 3, 3)
    _, _, swap, _ = sample_alignment_permutations(
        sim, torch.full((reps,), 3), 1, "positive", gamma, torch.Generator().manual_seed(0)
    )
    off = [(i, j) for i in range(3) for j in range(3) if i != j]
    p = torch.softmax(torch.tensor([base[i, j] / gamma for i, j in off]), 0)
    # the unordered pair {i, j} is observed; it has probability p(i, j) + p(j, i)
    for a, b in ((0, 1), (0, 2), (1, 2)):
        want = p[off.index((a, b))] + p[off.index((b, a))]
        got = ((swap[:, a] == b) & (swap[:, b] == a)).double().mean()
        assert abs(got.item() - want.item()) < 0.015
    # A dominant pair is (almost) always taken at a small temperature.
    sharp = torch.zeros(1, 4, 4)
    sharp[0, 1, 3] = 1.0
    _, _, swap1, _ = sample_alignment_permutations(sharp, torch.tensor([4]), 1, "positive", 0.01)
    assert swap1[0].tolist() == [0, 3, 2, 1]


def test_alignment_padding_is_ignored_and_degenerate_windows_dropped():
    z, v = _pair(b=3, n=8, d=6, seed=5)
    valid = torch.tensor([[True] * 8, [True] * 5 + [False] * 3, [True] * 3 + [False] * 5])
    z2, v2 = z.clone(), v.clone()
    z2[~valid] = 100.0 * torch.randn(int((~valid).sum()), 6)
    v2[~valid] = -7.0
    z2.requires_grad_(True)
    v2.requires_grad_(True)
    keep = valid[..., None]
    zero_pad = alignment_loss(z * keep, v * keep, valid, generator=torch.Generator().manual_seed(3))
    dirty = alignment_loss(z2, v2, valid, generator=torch.Generator().manual_seed(3))
    assert dirty.item() == pytest.approx(zero_pad.item(), rel=1e-6)
    dirty.backward()
    assert z2.grad[~valid].abs().sum() == 0 and v2.grad[~valid].abs().sum() == 0
    assert z2.grad[valid].abs().sum() > 0
    # No window with distinct negatives: a differentiable zero.
    short = torch.tensor([[True, True] + [False] * 6] * 3)
    zr = z.clone().requires_grad_(True)
    loss = alignment_loss(zr, v, short, augment="positive")
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(zr.grad, torch.zeros_like(zr))
    with pytest.raises(ValueError, match="prefix"):
        alignment_loss(z, v, torch.tensor([[False] + [True] * 7] * 3))


def test_cosine_cost():
    z = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    v = torch.tensor([[[3.0, 0.0], [1.0, 1.0], [-1.0, 0.0]]])
    want = torch.tensor([[[0.0, 1 - 1 / math.sqrt(2), 2.0], [1.0, 1 - 1 / math.sqrt(2), 1.0]]])
    torch.testing.assert_close(cosine_cost(z, v), want)


# ------------------------------------------------------------------------------------ total
def _batch(seed=0, b=4, n=10, d=16):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, n, generator=gen, requires_grad=True)
    labels = torch.rand(b, n, generator=gen)
    label_mask = torch.ones(b, n, dtype=torch.bool)
    label_mask[:, -1] = False
    z, v = _pair(b=b, n=n, d=d, noise=0.5, seed=seed)
    return logits, labels, label_mask, z.requires_grad_(True), v.requires_grad_(True)


def test_content_loss_total_is_the_weighted_sum():
    logits, labels, label_mask, z, v = _batch()
    out = ContentLoss("kuaihl")(logits, labels, label_mask, z, v, generator=torch.Generator().manual_seed(0))
    assert set(out) == {"loss", "point", "pair", "align"}
    cfg = LOSS_PRESETS["kuaihl"]
    assert (cfg.w_point, cfg.w_align, cfg.w_pair) == (0.65, 0.15, 0.20)
    point = pointwise_loss(logits, labels, label_mask)
    pair = pairwise_loss(logits, labels, label_mask, variant="L1", sigma=10.0)
    align = alignment_loss(z, v, generator=torch.Generator().manual_seed(0))
    assert out["point"].item() == pytest.approx(point.item())
    assert out["pair"].item() == pytest.approx(pair.item())
    assert out["align"].item() == pytest.approx(align.item())
    want = 0.65 * point + 0.15 * align + 0.20 * pair
    assert out["loss"].item() == pytest.approx(want.item(), rel=1e-6)
    assert out["loss"].requires_grad
    assert not any(out[k].requires_grad for k in ("point", "pair", "align"))
    out["loss"].backward()
    assert logits.grad.abs().sum() > 0 and z.grad.abs().sum() > 0 and v.grad.abs().sum() > 0


def test_content_loss_presets_and_switches():
    logits, labels, label_mask, z, v = _batch(1)
    point_only = ContentLoss("point")(logits, labels, label_mask)
    assert point_only["pair"].item() == 0.0 and point_only["align"].item() == 0.0
    assert point_only["loss"].item() == pytest.approx(0.65 * point_only["point"].item())
    with pytest.raises(ValueError, match="text_seq"):
        ContentLoss("kuaihl")(logits, labels, label_mask)
    # align on with weight 0 and no sequences: skipped, not an error
    silent = ContentLoss(dataclasses.replace(LOSS_PRESETS["kuaihl"], w_align=0.0))(logits, labels, label_mask)
    assert silent["align"].item() == 0.0
    with pytest.raises(ValueError, match="unknown loss preset"):
        ContentLoss("nope")
    # Loss ablation rows (ContentCTR Table 4 / KuaiHL Table II).
    table = {
        "point": ("none", False, "positive"),
        "point+L0": ("L0", False, "positive"),
        "point+L1": ("L1", False, "positive"),
        "point+L2": ("L2", False, "positive"),
        "point+L3": ("L3", False, "positive"),
        "point+L1+align": ("L1", True, "none"),
        "point+L1+align+aug": ("L1", True, "positive"),
        "point+align": ("none", True, "none"),
        "contentctr_hl": ("none", True, "none"),
    }
    for name, (variant, align, augment) in table.items():
        cfg = LOSS_PRESETS[name]
        assert (cfg.pair_variant, cfg.align) == (variant, align), name
        if align:
            assert cfg.augment == augment
    assert LOSS_PRESETS["contentctr"] == LOSS_PRESETS["point+L1+align"]
    assert LOSS_PRESETS["kuaihl"] == LOSS_PRESETS["point+L1+align+aug"]
    off = LOSS_PRESETS["official"]
    got = (off.soft_dtw_gamma, off.augment, off.n_negatives, off.w_align, off.sigma, off.align_tau)
    assert got == (0.1, "exclude", 7, 0.01, 1.0, 1.0)
    out = ContentLoss(off)(logits, labels, label_mask, z, v)
    assert torch.isfinite(out["loss"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        off.sigma = 3.0  # type: ignore[misc]
    bad_fields = (
        dict(pair_variant="L4"), dict(augment="swap"), dict(pair_scope="room"), dict(soft_dtw_gamma=0.0),
        dict(align_norm="path"), dict(n_negatives=0), dict(w_pair=-1.0),
    )
    for bad in bad_fields:
        with pytest.raises(ValueError):
            LossConfig(**bad)
