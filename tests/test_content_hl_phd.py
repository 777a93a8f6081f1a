"""ContentCTR-HL on PHD batches (kuaihl_rec/model/content_hl.py) and the survey's options
(kuaihl_rec/losses/survey.py): no label leakage, the fully visible mask, the history feature, and
the Less-is-More / TaoHighlight terms against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kuaihl_rec.data.phd.examples import PHDBatch, user_examples
from kuaihl_rec.data.phd.world import generate_phd_world, phd_world_config
from kuaihl_rec.losses.survey import clip_agreement_loss, less_is_more_loss, positive_run, sample_pairs
from kuaihl_rec.model.content_hl import ContentHL, ContentHLConfig, GraphRefine
from kuaihl_rec.train import phd as phd_train


def _batch(seed=0, b=2, n=10, m=3, c=4, dv=6, dt=5):
    g = torch.Generator().manual_seed(seed)
    valid = torch.ones(b, n, dtype=torch.bool)
    valid[1, 7:] = False
    labels = torch.zeros(b, n)
    labels[0, 2:4] = 1.0
    labels[1, 5] = 0.7
    hv = torch.ones(b, m, c, dtype=torch.bool)
    hv[1, 2] = False  # user 1 has two history clips
    return PHDBatch(torch.randn(b, n, dv, generator=g), torch.randn(b, n, dt, generator=g), valid, labels,
                    (labels >= 0.5) & valid, torch.randn(b, m, c, dv, generator=g),
                    torch.randn(b, m, c, dt, generator=g), hv)


def _model(**fields):
    torch.manual_seed(0)
    return ContentHL(6, 5, ContentHLConfig(d=16, d_head=8, window=16, dropout=0.0, **fields)).eval()


def test_no_label_reaches_the_inputs_and_position_i_reads_the_whole_clip():
    model = _model()
    batch = _batch()
    with torch.no_grad():
        base = model(batch)
        flipped = model(batch.replace(labels=1.0 - batch.labels, positive=~batch.positive))
        assert torch.equal(base, flipped)  # perturbing every label changes no score
        for j in (0, 4, 9):  # fully visible: every position reads segment j, earlier and later ones too
            vis = batch.visual.clone()
            vis[0, j] += 3.0 * torch.randn(6, generator=torch.Generator().manual_seed(j))  # not a constant: LayerNorm
            out = model(batch.replace(visual=vis))
            assert not torch.equal(out[0, j], base[0, j])
            assert all(not torch.equal(out[0, i], base[0, i]) for i in range(10) if i != j)
        # padding (valid False) is key-padded: the real positions do not read it
        vis = batch.visual.clone()
        vis[1, 7:] = 9.0
        assert torch.equal(model(batch.replace(visual=vis))[batch.valid], base[batch.valid])


def test_the_training_target_of_position_i_is_segment_i():
    """The pointwise term equals the BCE of logit i against label i (labels are not shifted)."""
    model = _model()
    model.loss_fn.config = type(model.loss_fn.config)(w_point=1.0, w_align=0.0, w_pair=0.0, pair_variant="none",
                                                      align=False)
    batch = _batch()
    with torch.no_grad():
        logits = model(batch)
        loss = model.training_loss(batch)
    y, v = batch.labels, batch.valid
    p = torch.sigmoid(logits)
    want = sum(-(y[b, i] * math.log(p[b, i]) + (1 - y[b, i]) * math.log(1 - p[b, i]))
               for b in range(2) for i in range(10) if v[b, i]) / v.sum()
    assert loss.item() == pytest.approx(float(want), rel=1e-5)


def test_history_feature_is_read_and_padding_clips_are_not():
    model, generic = _model(), _model(use_history=False)
    batch = _batch()
    with torch.no_grad():
        base, gbase = model(batch), generic(batch)
        changed = batch.replace(hist_visual=batch.hist_visual + 1.0)
        assert not torch.equal(model(changed), base)
        assert torch.equal(generic(changed), gbase)  # w/o history: the history is never read
        pad = batch.hist_visual.clone()
        pad[1, 2] = 50.0  # user 1's third clip is padding
        assert torch.equal(model(batch.replace(hist_visual=pad)), base)


@pytest.mark.parametrize("survey", ["none", "less_is_more", "tao_highlight"])
def test_every_option_trains(survey):
    model = _model(survey=survey)
    model.train()
    batch = _batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(25):
        loss = model.training_loss(batch, torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < first


def test_less_is_more_loss_against_brute_force():
    g = torch.Generator().manual_seed(3)
    f_i, f_j, conf = (torch.randn(7, generator=g, dtype=torch.float64) for _ in range(3))
    got = less_is_more_loss(f_i, f_j, conf, group_size=3)
    want = 0.0
    for group in ([0, 1, 2], [3, 4, 5], [6]):
        e = [math.exp(conf[k].item()) for k in group]
        want += sum(e[t] / sum(e) * max(0.0, 1 - f_i[k].item() + f_j[k].item()) for t, k in enumerate(group))
    assert got.item() == pytest.approx(want / 3, rel=1e-10)
    batch = _batch()
    v, i, j = sample_pairs(batch.positive, batch.valid, 5, torch.Generator().manual_seed(0))
    assert v.tolist() == [0] * 5 + [1] * 5  # both videos have a positive (label >= 0.5)
    assert torch.all(batch.positive[v, i]) and not torch.any(batch.positive[v, j]) and torch.all(batch.valid[v, j])


def test_clip_agreement_against_direct_computation():
    scores = torch.tensor([[0.1, 2.0, 0.3, 1.5, 0.0, -1.0]], dtype=torch.float64)
    states = torch.randn(1, 6, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    positive = torch.tensor([[False, False, True, True, False, False]])
    valid = torch.ones_like(positive)
    got = clip_agreement_loss(scores, states, positive, valid, k=2, radius=1)
    assert positive_run(positive[0]) == (2, 4)
    gt = states[0, 2:4].mean(0).numpy()
    total, e_top = 0.0, [math.exp(2.0), math.exp(1.5)]
    for p, (centre) in zip([x / sum(e_top) for x in e_top], (1, 3)):
        first, end = centre - 1, centre + 2
        inter = max(0, min(end, 4) - max(first, 2))
        union = (end - first) + 2 - inter
        emb = states[0, first:end].mean(0).numpy()
        cos = float(np.dot(emb, gt) / np.linalg.norm(emb) / np.linalg.norm(gt))
        e = inter / union - abs((first + end) / 2 - 3.0) / union + cos
        total -= p * e
    assert got.item() == pytest.approx(total, rel=1e-10)


def test_graph_refine_changes_only_the_top_k():
    torch.manual_seed(0)
    refine = GraphRefine(4, k=2, tau=0.1)
    torch.nn.init.normal_(refine.delta.weight)
    h = torch.randn(1, 6, 4)
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0, 9.0]])
    valid = torch.tensor([[True] * 5 + [False]])
    out, _ = refine(h, logits, valid)
    changed = torch.nonzero(out[0] != logits[0]).flatten().tolist()
    assert changed == [1, 3]  # the two highest valid logits; the padding's 9.0 is not a node


def test_training_follows_a_cosine_schedule(monkeypatch):
    """kuaihl_rec.train.phd: lr_t = lr (1 + cos(pi t / T)) / 2 over all T steps (ContentCTR 4.3.2)."""
    seen = []

    class Recording(torch.optim.Adam):
        def step(self, closure=None):
            seen.append(self.param_groups[0]["lr"])
            return super().step(closure)

    monkeypatch.setattr(phd_train.torch.optim, "Adam", Recording)
    data, _ = generate_phd_world(phd_world_config("tiny"))
    examples = user_examples(data, "train")[:8]
    model = ContentHL(data.visual_dim, data.text_dim, ContentHLConfig(d=16, d_head=8, window=32))
    phd_train.train_phd(model, data, examples, phd_train.PHDTrainConfig(epochs=3, batch_size=4, lr=1e-3))
    T = 3 * 2
    assert seen == pytest.approx([1e-3 * (1 + math.cos(math.pi * t / T)) / 2 for t in range(T)])
