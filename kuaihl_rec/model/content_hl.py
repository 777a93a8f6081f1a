"""ContentCTR-HL as ContentCTR section 4.2 describes it, on PHD batches (docs/HIGHLIGHTS.md,
"ContentCTR-HL"), built from the content model's own blocks (:class:`FeatureFusion`,
:class:`HistoryFeature`, :class:`ContentTower`: Perceiver fusion + decoder + head)::

    E_f = FeatureFusion(visual, text)                 [b, n, 2, d]   (ContentCTR eq. 2)
    E_h = FeatureFusion(history clips' segments)      [b, m c, 2, d]
    u   = W mean_{valid history segments, tokens}(E_h) + c            [b, d]   the user-history feature,
                                                                                in place of the streamer id
    E_p = Perceiver(E_f, u)                           [b, n, d]      (Algorithm 1)
    H   = Decoder(E_p, fully visible mask over the clip's valid segments)     [b, n, d]  (Algorithm 2)
    logits_i = H_i W + c                              [b, n]         the score of segment i

Labels are **not shifted**: position ``i`` is scored from the clip's segments and trained on the
label of segment ``i`` itself; no label is a model input (the batch keeps labels apart).
Loss: ``w_point L_point + w_align L_align`` (ContentCTR 4.2 keeps only these two; weights and
alignment options of the loss preset ``contentctr_hl``); the trainer uses a cosine learning-rate
schedule (4.3.2).

``use_history=False`` is Table 5's "w/o history": a learned latent vector replaces ``u`` (our
generic, history-free highlight model). The survey's methods are options (``survey``):
``"less_is_more"`` adds the pair ranking loss with learned pair confidences, ``"tao_highlight"``
adds :class:`GraphRefine` over the top-k segments and the ``L_ag`` clip-agreement term
(:mod:`kuaihl_rec.losses.survey`).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kuaihl_rec.data.batch import BatchSpec
from kuaihl_rec.data.phd.examples import PHDBatch
from kuaihl_rec.data.schema import COUNTER_COLUMNS
from kuaihl_rec.losses.content_loss import ContentLoss
from kuaihl_rec.losses.survey import PairConfidence, clip_agreement_loss, less_is_more_loss, sample_pairs
from kuaihl_rec.model.config import content_config
from kuaihl_rec.model.content import ContentTower, FeatureFusion, HistoryFeature, LearnedLatent

SURVEY_OPTIONS = ("none", "less_is_more", "tao_highlight")


@dataclasses.dataclass(frozen=True)
class ContentHLConfig:
    """d, heads, layers, dropout: the content model's sizes (``ContentConfig``); window: the longest
    video (positions); use_history: the user-history feature (False: learned latent);
    loss: the loss preset (``contentctr_hl``: point 0.65 + align 0.15); survey: one of
    :data:`SURVEY_OPTIONS`; w_survey: weight of the survey term; pairs_per_video, group_size:
    Less-is-More; top_k, radius, graph_tau: TaoHighlight."""

    d: int = 32
    n_heads: int = 2
    d_head: int = 16
    n_perceiver_layers: int = 1
    n_decoder_layers: int = 2
    dropout: float = 0.1
    window: int = 128
    use_history: bool = True
    loss: str = "contentctr_hl"
    survey: str = "none"
    w_survey: float = 0.2
    pairs_per_video: int = 8
    group_size: int = 16
    top_k: int = 8
    radius: int = 1
    graph_tau: float = 0.1

    def __post_init__(self) -> None:
        if self.survey not in SURVEY_OPTIONS:
            raise ValueError(f"survey must be one of {SURVEY_OPTIONS}, got {self.survey!r}")


class GraphRefine(nn.Module):
    """TaoHighlight's graph-based fine-tuning over the top-k scored segments (survey; decisions ours):
    nodes = the k valid segments of highest logit, edges ``A = softmax_j(cos(H_i, H_j) / tau)``,
    one residual GCN layer ``H'_i = H_i + ReLU(sum_j A_ij H_j W)``, and the refined logit
    ``logit_i + w . H'_i`` for those k segments (the others keep theirs).

    ``H [b, n, d]``, ``logits [b, n]``, ``valid [b, n]`` -> refined logits ``[b, n]``, ``H`` with the
    refined states at the top-k ``[b, n, d]``."""

    def __init__(self, d: int, k: int, tau: float) -> None:
        super().__init__()
        self.k, self.tau = k, tau
        self.weight = nn.Linear(d, d, bias=False)
        self.delta = nn.Linear(d, 1)
        nn.init.zeros_(self.delta.weight)
        nn.init.zeros_(self.delta.bias)

    def forward(self, h: Tensor, logits: Tensor, valid: Tensor) -> Tuple[Tensor, Tensor]:
        k = min(self.k, logits.shape[1])
        masked = logits.detach().masked_fill(~valid, float("-inf"))
        idx = torch.topk(masked, k, dim=1).indices  # [b, k]
        take = torch.gather(valid, 1, idx)  # a short video may have fewer than k valid segments
        hk = torch.gather(h, 1, idx[..., None].expand(-1, -1, h.shape[-1]))
        sim = F.normalize(hk, dim=-1) @ F.normalize(hk, dim=-1).transpose(1, 2) / self.tau
        a = torch.softmax(sim.masked_fill(~take[:, None, :], float("-inf")), dim=-1)
        refined = hk + F.relu(a @ self.weight(hk))
        delta = self.delta(refined).squeeze(-1) * take
        out_logits = logits.scatter_add(1, idx, delta)
        out_h = h.scatter(1, idx[..., None].expand_as(hk), torch.where(take[..., None], refined, hk))
        return out_logits, out_h


class ContentHL(nn.Module):
    """ContentCTR-HL on :class:`PHDBatch` (module doc). ``forward(batch) -> logits [b, n]``."""

    def __init__(self, visual_dim: int, text_dim: int, config: ContentHLConfig = ContentHLConfig()) -> None:
        super().__init__()
        self.config = config
        c = config
        self.content_config = content_config(
            "small", d=c.d, n_heads=c.n_heads, d_head=c.d_head, n_perceiver_layers=c.n_perceiver_layers,
            n_decoder_layers=c.n_decoder_layers, dropout=c.dropout, window=c.window, causal=False,
            id_source="history",
        )
        spec = BatchSpec(visual_tokens=1, visual_dim=visual_dim, text_dim=text_dim, num_streamers=1, num_lives=1,
                         n_counters=len(COUNTER_COLUMNS), window=c.window)
        self.features = FeatureFusion(spec, self.content_config)
        self.history = HistoryFeature(c.d) if c.use_history else None
        self.latent = None if c.use_history else LearnedLatent(c.d)
        self.tower = ContentTower(self.content_config)
        self.loss_fn = ContentLoss(c.loss)
        self.pair_confidence = PairConfidence(c.d) if c.survey == "less_is_more" else None
        self.graph = GraphRefine(c.d, c.top_k, c.graph_tau) if c.survey == "tao_highlight" else None

    def user_feature(self, batch: PHDBatch, e_f: Tensor) -> Tensor:
        """``u [b, d]``: the history feature, or the learned latent without history."""
        if self.history is None:
            return self.latent(e_f)
        b, m, c, dv = batch.hist_visual.shape
        e_h, _, _ = self.features(batch.hist_visual.reshape(b, m * c, 1, dv),
                                  batch.hist_text.reshape(b, m * c, -1), None)
        return self.history(e_h, batch.hist_valid.reshape(b, m * c))

    def encode(self, batch: PHDBatch) -> Dict[str, Tensor]:
        """``logits [b, n]``, decoder states ``H [b, n, d]``, ``text_seq`` / ``visual_seq [b, n, d]``."""
        e_f, text_seq, visual_seq = self.features(batch.visual[:, :, None, :], batch.text, None)
        u = self.user_feature(batch, e_f)
        h = self.tower.decoder(self.tower.fuse(e_f, u), batch.valid)
        logits = self.tower.head(h).squeeze(-1).float()
        if self.graph is not None:
            logits, h = self.graph(h, logits, batch.valid)
        return {"logits": logits, "h": h, "text_seq": text_seq, "visual_seq": visual_seq}

    def forward(self, batch: PHDBatch) -> Tensor:
        return self.encode(batch)["logits"]

    def training_loss(self, batch: PHDBatch, generator: Optional[torch.Generator] = None) -> Tensor:
        """``w_point L_point + w_align L_align`` (+ ``w_survey`` x the survey term)."""
        out = self.encode(batch)
        total = self.loss_fn(out["logits"], batch.labels, batch.valid, out["text_seq"], out["visual_seq"],
                             batch.valid, generator=generator)["loss"]
        c = self.config
        if self.pair_confidence is not None:
            v, i, j = sample_pairs(batch.positive, batch.valid, c.pairs_per_video, generator)
            h = out["h"]
            conf = self.pair_confidence(h[v, i], h[v, j])
            total = total + c.w_survey * less_is_more_loss(out["logits"][v, i], out["logits"][v, j], conf, c.group_size)
        if self.graph is not None:
            total = total + c.w_survey * clip_agreement_loss(out["logits"], out["h"], batch.positive, batch.valid,
                                                             c.top_k, c.radius)
        return total
