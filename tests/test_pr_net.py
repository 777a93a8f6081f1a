"""PR-Net (baselines/pr_net.py): each equation against a direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from baselines.pr_net import (
    LAMBDA,
    PR_NET_VARIANTS,
    TemporalUNet,
    bidirectional_contrastive_loss,
    build_pr_net,
    comprehensive_preference,
    highlight_degree,
    non_highlight_degree,
    pseudo_negatives,
    user_preference,
)
from kuaihl_rec.data.phd.examples import PHDBatch

F64 = torch.float64  # the equation tests compare float64 tensors against float64 loops


def _cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_lambda_is_nine():
    assert LAMBDA == 9.0 and all(v.lam == 9.0 for v in PR_NET_VARIANTS.values())


def test_user_preference_eq2_eq3_against_loops():
    g = torch.Generator().manual_seed(0)
    s, h = torch.randn(2, 4, 5, generator=g, dtype=F64), torch.randn(2, 3, 5, generator=g, dtype=F64)
    valid = torch.tensor([[True, True, False], [False, False, False]])
    p_u, a = user_preference(s, h, valid)
    S, H = s.numpy(), h.numpy()
    for i in range(4):
        q = [_cos(S[0, i], H[0, j]) for j in range(2)]
        e = [math.exp(9.0 * x) for x in q]
        want_a = [x / sum(e) for x in e]
        assert np.allclose(a[0, i, :2].numpy(), want_a) and a[0, i, 2] == 0
        assert np.allclose(p_u[0, i].numpy(), want_a[0] * H[0, 0] + want_a[1] * H[0, 1])
    assert torch.all(a[1] == 0) and torch.all(p_u[1] == 0)  # no history clip: p^u = 0


def test_comprehensive_preference_eq4_eq5_against_direct():
    gen = torch.Generator().manual_seed(1)
    s, p_u = torch.randn(2, 3, 4, generator=gen, dtype=F64), torch.randn(2, 3, 4, generator=gen, dtype=F64)
    g = torch.randn(4, generator=gen, dtype=F64)
    p_c, w = comprehensive_preference(s, p_u, g, torch.tensor([True, False]))
    S, P, G = s.numpy(), p_u.numpy(), g.numpy()
    for i in range(3):
        q1, q2 = math.exp(9.0 * _cos(S[0, i], P[0, i])), math.exp(9.0 * _cos(S[0, i], G))
        assert np.allclose(p_c[0, i].numpy(), P[0, i] * q1 / (q1 + q2) + G * q2 / (q1 + q2))
        assert w[0, i].item() == pytest.approx(q1 / (q1 + q2))
        assert np.allclose(p_c[1, i].numpy(), G)  # no history: the generic preference alone
    l_deg, b_deg = highlight_degree(s, p_c), non_highlight_degree(s, g)
    assert np.allclose(l_deg[0, 1].item(), np.dot(S[0, 1], p_c[0, 1].numpy()))  # eq. 6
    assert np.allclose(b_deg[1, 2].item(), np.dot(S[1, 2], G))  # eq. 7


def test_pseudo_negatives_take_the_top_k_unlabeled_by_b():
    b = torch.tensor([[5.0, 1.0, 4.0, 3.0, 2.0, 9.0, 0.5, 8.0, 7.0, 6.0, 0.1, 0.2, 0.3, 0.4]])
    pos = torch.zeros_like(b, dtype=torch.bool)
    pos[0, 5] = True  # the highest b is a positive: never a negative
    valid = torch.ones_like(pos)
    valid[0, 7] = False  # padding: never a negative
    neg = pseudo_negatives(b, pos, valid, ratio=5)
    unl = [i for i in range(14) if valid[0, i] and not pos[0, i]]
    want = sorted(sorted(unl, key=lambda i: -b[0, i].item())[:5])
    assert torch.nonzero(neg[0]).flatten().tolist() == want
    pos[0, [0, 2, 3]] = True  # 4 positives: K = 20 > 9 unlabeled -> all of them
    neg = pseudo_negatives(b, pos, valid, ratio=5)
    assert neg.sum() == 9 and not (neg & pos).any()


def _eq8_brute(l, b, pos, neg, reading):
    el, eb = [math.exp(x) for x in l], [math.exp(x) for x in b]
    lt, bt = [x / sum(el) for x in el], [x / sum(eb) for x in eb]  # eq. 9
    omega = [i for i in range(len(l)) if pos[i]]
    under = [i for i in range(len(l)) if neg[i]]
    if reading == "literal":  # eq. 8 as printed
        return (sum(math.log(lt[y] + bt[y]) for y in omega) + sum(math.log(lt[x] + bt[x]) for x in under)
                - (sum(lt[y] for y in omega) + sum(bt[x] for x in under)))
    return (sum(math.log(lt[y] + bt[y]) - math.log(lt[y]) for y in omega)
            + sum(math.log(lt[x] + bt[x]) - math.log(bt[x]) for x in under))


@pytest.mark.parametrize("reading", ["log", "literal"])
def test_bidirectional_loss_against_brute_force_eq8(reading):
    gen = torch.Generator().manual_seed(2)
    l, b = torch.randn(2, 7, generator=gen, dtype=torch.float64), torch.randn(2, 7, generator=gen, dtype=torch.float64)
    pos = torch.zeros(2, 7, dtype=torch.bool)
    pos[0, 1] = pos[1, [2, 3]] = True
    valid = torch.ones_like(pos)
    valid[1, 6] = False  # padding leaves the softmax of eq. 9
    neg = pseudo_negatives(b, pos, valid, ratio=2)
    got = bidirectional_contrastive_loss(l, b, pos, neg, valid, reading)
    want = np.mean([_eq8_brute(l[v, :n].tolist(), b[v, :n].tolist(), pos[v, :n].tolist(), neg[v, :n].tolist(),
                               reading) for v, n in ((0, 7), (1, 6))])
    assert got.item() == pytest.approx(want, rel=1e-10)


def test_literal_eq8_pushes_positives_down_and_the_log_reading_up():
    l = torch.zeros(1, 10, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, 10, dtype=torch.float64)
    pos = torch.zeros(1, 10, dtype=torch.bool)
    pos[0, 0] = True
    valid, neg = torch.ones_like(pos), torch.zeros_like(pos)
    for reading, sign in (("literal", 1.0), ("log", -1.0)):
        (grad,) = torch.autograd.grad(bidirectional_contrastive_loss(l, b, pos, neg, valid, reading), l)
        assert sign * grad[0, 0].item() > 0  # descent lowers l_y under the literal reading, raises it under log


def test_unet_keeps_length_and_ignores_padding():
    torch.manual_seed(0)
    net = TemporalUNet(3, 8, levels=2)
    x = torch.randn(1, 11, 3)
    alone = net(x, torch.ones(1, 11, dtype=torch.bool))
    padded = torch.cat([x, torch.full((1, 6, 3), 5.0)], dim=1)
    mask = torch.tensor([[True] * 11 + [False] * 6])
    out = net(padded, mask)
    assert out.shape == (1, 17, 8) and torch.allclose(out[:, :11], alone, atol=1e-6)
    assert torch.all(out[:, 11:] == 0)


def _batch(seed=0, b=2, n=12, m=3, c=4, dv=5):
    g = torch.Generator().manual_seed(seed)
    valid = torch.ones(b, n, dtype=torch.bool)
    labels = torch.zeros(b, n)
    labels[:, 3] = 1.0
    hv = torch.ones(b, m, c, dtype=torch.bool)
    return PHDBatch(torch.randn(b, n, dv, generator=g), torch.randn(b, n, 2, generator=g), valid, labels, labels > 0.5,
                    torch.randn(b, m, c, dv, generator=g), torch.randn(b, m, c, 2, generator=g), hv)


@pytest.mark.parametrize("name", sorted(PR_NET_VARIANTS))
def test_variants_read_history_as_configured(name):
    torch.manual_seed(0)
    model = build_pr_net(name, 5, d=8).eval()
    batch = _batch()
    base = model(batch)
    other = model(batch.replace(hist_visual=batch.hist_visual + 2.0 * torch.randn_like(batch.hist_visual)))
    reads = PR_NET_VARIANTS[name].preference != "generic" and PR_NET_VARIANTS[name].history_size != 0
    assert torch.equal(base, other) != reads
    if name == "pr_net_h5":  # clips after the fifth are never read
        assert model.config.history_size == 5
    loss = model.training_loss(batch)
    assert torch.isfinite(loss) and loss.requires_grad


def test_mean_history_variant_uses_the_mean_for_every_frame_and_h1_the_first_clip():
    torch.manual_seed(0)
    model = build_pr_net("pr_net_meanU", 5, d=8).eval()
    p = model.parts(_batch())
    w = p["h_valid"].unsqueeze(-1).float()
    assert torch.allclose(p["p_c"][:, 0], (p["h"] * w).sum(1) / w.sum(1), atol=1e-6)
    assert torch.allclose(p["p_c"][:, 0], p["p_c"][:, 5])
    model = build_pr_net("pr_net", 5, d=8, history_size=1).eval()
    batch = _batch()
    base = model(batch)
    later = batch.hist_visual.clone()
    later[:, 1:] += 3.0
    assert torch.equal(model(batch.replace(hist_visual=later)), base)


def test_padded_videos_give_finite_gradients():
    torch.manual_seed(0)
    model = build_pr_net("pr_net", 5, d=8)
    batch = _batch()
    valid = batch.valid.clone()
    valid[1, 8:] = False
    loss = model.training_loss(batch.replace(valid=valid, positive=batch.positive & valid))
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
