"""Part 2 of bench/bench_phd_history.py: train the PHD models on one world and inspect their history pathway.

Per model: test mAP with the user's own and with another user's history, and, on the test users,

* PR-Net: mean pairwise cosine of a user's history clip embeddings ``h~`` (1 = all clips look alike), the
  entropy of the attention ``a^u`` over clips / log m (1 = uniform), the user weight ``q^c1 / (q^c1 + q^c2)``
  (eq. 5; mean and sd over users) and the mean |score change| when the history is swapped, relative to the
  score's sd within a video;
* ContentCTR-HL: ``||u_own - u_other|| / ||u_own||`` for the history feature and the same score change;
* both: the share of the loss gradient's norm that reaches the parameters through the history input
  (gradient of the loss w.r.t. the history features vs w.r.t. the target features), at init and after training.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Dict, Sequence

import numpy as np
import torch

from kuaihl_rec.apps.phd_models import PHD_ROWS
from kuaihl_rec.data.phd.examples import UserExample, make_batch, segment_labels, training_crop
from kuaihl_rec.metrics.phd import phd_evaluate
from kuaihl_rec.train.phd import PHDTrainConfig, phd_items, score_phd, train_phd


def _other(examples: Sequence[UserExample]):
    return [dataclasses.replace(e, history=examples[(i + 1) % len(examples)].history) for i, e in enumerate(examples)]


def _input_grad_share(model, data, train: Sequence[UserExample], seed: int) -> float:
    """||dL/d hist_visual|| / (||dL/d hist_visual|| + ||dL/d visual||) on one training batch."""
    rng = np.random.default_rng(seed)
    exs = list(train[:32])
    crops = [training_crop(segment_labels(e.selections, data.videos[e.video_id].n_segments, data.segment_seconds),
                           32, rng) for e in exs]
    batch = make_batch(data, exs, crops)
    hv, v = batch.hist_visual.clone().requires_grad_(True), batch.visual.clone().requires_grad_(True)
    model.train()
    loss = model.training_loss(batch.replace(hist_visual=hv, visual=v), torch.Generator().manual_seed(seed))
    gh, gv = torch.autograd.grad(loss, [hv, v], allow_unused=True)
    model.eval()
    nh = 0.0 if gh is None else float(gh.norm())
    return nh / (nh + float(gv.norm()) + 1e-12)


@torch.no_grad()
def _pathway_stats(model, data, test: Sequence[UserExample]) -> Dict[str, float]:
    own, oth = make_batch(data, test[:64]), make_batch(data, _other(test)[:64])
    out: Dict[str, float] = {}
    s_own, s_oth = model(own), model(oth)
    valid = own.valid
    sd = torch.stack([s_own[i][valid[i]].std() for i in range(len(valid))])
    diff = torch.stack([(s_own[i] - s_oth[i])[valid[i]].abs().mean() for i in range(len(valid))])
    out["|score change| / score sd (history swapped)"] = float((diff / sd.clamp(min=1e-9)).mean())
    if hasattr(model, "parts") and model.config.preference != "generic":
        p = model.parts(own)
        h = torch.nn.functional.normalize(p["h"], dim=-1)
        cos = h @ h.transpose(1, 2)
        m = cos.shape[-1]
        off = ~torch.eye(m, dtype=torch.bool)
        out["mean pairwise cos of a user's history embeddings"] = float(cos[:, off].mean())
        if "a" in p:
            a = p["a"][valid]
            ent = -(a.clamp(min=1e-12).log() * a).sum(-1) / np.log(m)
            out["attention entropy / log m (1 = uniform)"] = float(ent.mean())
        w = torch.stack([p["w_user"][i][valid[i]].mean() for i in range(len(valid))])
        out["user weight q1/(q1+q2): mean"] = float(w.mean())
        out["user weight q1/(q1+q2): sd over users"] = float(w.std())
    elif getattr(model, "history", None) is not None:
        e_f, _, _ = model.features(own.visual[:, :, None, :], own.text, None)
        u1, u2 = model.user_feature(own, e_f), model.user_feature(oth, e_f)
        out["||u_own - u_other|| / ||u_own||"] = float(((u1 - u2).norm(dim=-1) / u1.norm(dim=-1)).mean())
    return out


def train_probes(data, train, test, rows: Sequence[str], epochs: int, seed: int) -> Dict[str, tuple]:
    """Prints the figures; returns {history-free row: (train scores, test scores)} for the late-fusion probe."""
    generic: Dict[str, tuple] = {}
    for name in rows:
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        model = PHD_ROWS[name].build(data)
        g0 = _input_grad_share(model, data, train, seed)
        init = _pathway_stats(model, data, test)
        train_phd(model, data, train, PHDTrainConfig(epochs=epochs, seed=seed))
        g1 = _input_grad_share(model, data, train, seed)
        m_own = phd_evaluate(phd_items(data, test, score_phd(model, data, test)))["map"]
        other = _other(test)
        m_oth = phd_evaluate(phd_items(data, other, score_phd(model, data, other)))["map"]
        print(f"## {name} ({epochs} epochs, {time.perf_counter() - t0:.0f} s): mAP own {m_own:.2f}  "
              f"other {m_oth:.2f}  own-other {m_own - m_oth:+.2f}")
        print(f"   gradient share reaching the history input: init {g0:.3f}  trained {g1:.3f}")
        for k, v in _pathway_stats(model, data, test).items():
            print(f"   {k:<55s} init {init[k]:.3f}  trained {v:.3f}")
        if not PHD_ROWS[name].uses_history:
            generic[name] = (score_phd(model, data, train), score_phd(model, data, test))
    return generic
