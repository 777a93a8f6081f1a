"""ContentCTR (2023) and KuaiHL (ICME 2024): the multimodal content model, its Table 1 variants,
modality ablations and the highlight-detection mode, as configurations of one module.

Data flow (ContentCTR 3.2, Algorithms 1-2; shapes for ``b`` windows of ``n`` segments)::

    S_p = proj_1(visual)              [b, n, k_v, d]   (eq. 2; visual features pre-extracted)
    S_a = proj_2(text)                [b, n, 1, d]     (eq. 2; <CLS> text vector)
    E_f = concat([S_p, S_a], dim=2)   [b, n, k, d]     k = k_v + 1 (3.2.1)
    E_u = streamer embedding          [b, d]           TorchRec EmbeddingCollection, repeated n times
    E_p = Fusion(E_f, E_u)            [b, n, d]        Perceiver block, Algorithm 1 (or a Table 1 variant)
    H   = Decoder(E_p, causal mask)   [b, n, d]        Algorithm 2, eq. 5
    logits = H W + c                  [b, n]           s = sigmoid(logits)

KuaiHL is the same network trained with the augmented alignment loss; the two registry entries
differ only by ``default_loss`` (the :data:`kuaihl_rec.losses.LOSS_PRESETS` name a trainer should use).

The streamer id is looked up in a TorchRec :class:`~torchrec.EmbeddingCollection` (table
``"streamer"``, feature ``"streamer_id"``) built by the factory and passed in, so
``DistributedModelParallel`` can shard it. The model hands ``batch.sparse_features`` to the
collection unchanged (the collection only reads its own feature ``"streamer_id"``; the
``"live_id"`` key, meant for the ID baselines, is ignored), which keeps the lookup pipelineable
by ``TrainPipelineSparseDist``: :meth:`ContentCTR.encode` has no data-dependent control flow,
every check lives inside the dense sub-modules.

ContentCTR-HL on live-stream windows (``content_hl``): the id embedding is replaced by a
"history feature" and the mask is fully visible. Live-stream windows have no user history, so
**the history feature here is a proxy**: the mean of the window's fused tokens E_f over all real
positions (``batch.valid``) and tokens, followed by a linear map; and the window's labels are the
*next* segment's, so with the fully visible mask position i reads segment i+1, whose label it is
trained on: this entry's scores evaluate nothing (it stays for the registry's smoke tests). The
task as the paper defines it (user-history feature, labels not shifted, PHD evaluation) is
:class:`kuaihl_rec.model.content_hl.ContentHL` on PHD batches (docs/HIGHLIGHTS.md).

Without the id (``use_id=False``) a learned latent vector shared by all streamers replaces E_u
(the "learned latent query" of a Perceiver), so every fusion mode keeps its equations.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn
from torchrec import EmbeddingCollection, EmbeddingConfig

from kuaihl_rec.data.batch import BatchSpec, LiveBatch
from kuaihl_rec.data.schema import COUNTER_COLUMNS, PAPER_COUNTER_COLUMNS
from kuaihl_rec.model.blocks import MLPHead
from kuaihl_rec.model.config import ContentConfig, content_config
from kuaihl_rec.model.decoder import CausalDecoder
from kuaihl_rec.model.perceiver import PerceiverFusion
from kuaihl_rec.model.registry import register_model
from kuaihl_rec.model.streamer import STREAMER_FEATURE, STREAMER_TABLE, StreamerIdDropout, init_streamer_table


class ContentOutput(NamedTuple):
    """What :meth:`ContentCTR.encode` returns.

    logits: float32 ``[b, n]``.
    text_seq: ``[b, n, d]`` projected text sequence S_a (None when text is ablated).
    visual_seq: ``[b, n, d]`` projected visual sequence S_p, visual tokens mean-pooled per segment
        (None when visual is ablated). These two feed the DTW alignment loss.
    """

    logits: Tensor
    text_seq: Optional[Tensor]
    visual_seq: Optional[Tensor]


def build_streamer_embedding(
    spec: BatchSpec, config: ContentConfig, device: Optional[torch.device] = None
) -> EmbeddingCollection:
    """The streamer table: one ``EmbeddingConfig`` "streamer" (feature "streamer_id"),
    ``spec.num_streamers`` rows of width ``config.id_dim or config.d``.

    Initialised by TorchRec's default initialiser from the global torch RNG (deterministic under
    ``torch.manual_seed``); ``device="meta"`` defers allocation to ``DistributedModelParallel``.
    """
    return EmbeddingCollection(
        tables=[
            EmbeddingConfig(
                name=STREAMER_TABLE,
                embedding_dim=config.id_dim or config.d,
                num_embeddings=spec.num_streamers,
                feature_names=[STREAMER_FEATURE],
            )
        ],
        device=device if device is not None else torch.device("cpu"),
    )


class FeatureFusion(nn.Module):
    """Projection heads and token fusion (ContentCTR 3.2.1, eq. 2): E_f ``[b, n, k, d]``.

    Tokens, in order: k_v visual tokens ``proj_1(visual)`` (if ``use_visual``), the text token
    ``proj_2(text)`` (if ``use_text``), the *engagement* token
    ``proj_c([log1p(counters) ; sin h ; cos h ; log1p(t) ; y_obs ; known])`` (if ``use_counters``):
    what the ID baselines read about segment t, i.e. its eight ContentCTR 4.3.2 counters
    (``PAPER_COUNTER_COLUMNS``; not ``n_long_viewers``, the numerator of the not yet complete LVTR),
    the hour of day h = (timestamp mod 86400) / 3600 as a point on the circle (any time zone is a
    rotation, which the linear map absorbs) and the position in the room t (segment index), plus
    the freshest complete label (``LiveBatch.observed``: segment t - label_delay; ``y_obs`` = 0 and
    ``known`` = 0 where the room has none yet), i.e. what the platform has measured about the room
    when the score is needed. Causal by construction: position i reads measurements of segment
    t = s+i and earlier, its target is segment t+1. Returns
    ``(E_f, text_seq [b, n, d] | None, visual_seq [b, n, d] | None)``, where ``visual_seq`` is the mean of
    the visual tokens of each segment.
    """

    def __init__(self, spec: BatchSpec, config: ContentConfig) -> None:
        super().__init__()
        c = config
        self.proj_visual = MLPHead(spec.visual_dim, c.d, c.dropout, c.input_norm) if c.use_visual else None
        self.proj_text = MLPHead(spec.text_dim, c.d, c.dropout, c.input_norm) if c.use_text else None
        # engagement token: log1p(counters) and the segment's observed label (LiveBatch.observed)
        self.proj_counters = nn.Linear(len(PAPER_COUNTER_COLUMNS) + 5, c.d) if c.use_counters else None
        if c.use_counters and spec.n_counters != len(COUNTER_COLUMNS):
            raise ValueError(
                f"use_counters reads the counters in COUNTER_COLUMNS order ({len(COUNTER_COLUMNS)}), "
                f"but spec.n_counters = {spec.n_counters}"
            )
        self.register_buffer(
            "counter_index", torch.tensor([COUNTER_COLUMNS.index(c) for c in PAPER_COUNTER_COLUMNS]), persistent=False
        )
        self.drop = nn.Dropout(c.dropout)
        self.n_tokens = (spec.visual_tokens if c.use_visual else 0) + int(c.use_text) + int(c.use_counters)

    def forward(
        self, visual: Tensor, text: Tensor, counters: Tensor, observed: Optional[Tensor] = None,
        timestamp: Optional[Tensor] = None, segment: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        tokens = []
        visual_seq = text_seq = None
        if self.proj_visual is not None:
            s_p = self.proj_visual(visual)  # [b, n, k_v, d]
            visual_seq = s_p.mean(dim=2)
            tokens.append(s_p)
        if self.proj_text is not None:
            s_a = self.proj_text(text)  # [b, n, d]
            text_seq = s_a
            tokens.append(s_a.unsqueeze(2))
        if self.proj_counters is not None:
            seen = observed if observed is not None else counters.new_full(counters.shape[:2], -1.0)
            known = (seen >= 0).to(counters.dtype)
            paper = counters.index_select(-1, self.counter_index)
            zeros = counters.new_zeros(counters.shape[:2])
            if timestamp is not None:
                angle = torch.remainder(timestamp, 86_400).to(counters.dtype) * (2.0 * math.pi / 86_400.0)
                hour = [torch.sin(angle), torch.cos(angle)]
            else:
                hour = [zeros, zeros]
            position = torch.log1p(segment.clamp(min=0).to(counters.dtype)) if segment is not None else zeros
            engagement = torch.cat(
                [torch.log1p(paper.clamp(min=0))]
                + [x.unsqueeze(-1) for x in (*hour, position, seen.clamp(min=0) * known, known)],
                dim=-1,
            )
            tokens.append(self.proj_counters(engagement).unsqueeze(2))
        e_f = self.drop(torch.cat(tokens, dim=2))
        return e_f, text_seq, visual_seq


class HistoryFeature(nn.Module):
    """ContentCTR-HL's history feature, proxy (see module doc): ``W mean_{valid i, tokens}(E_f) + c``.

    Shapes: ``e_f [b, n, k, d]``, ``valid`` bool ``[b, n]`` -> ``[b, d]``.
    """

    def __init__(self, d: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d, d)

    def forward(self, e_f: Tensor, valid: Tensor) -> Tensor:
        w = valid.to(e_f.dtype)[:, :, None]  # [b, n, 1]
        summed = (e_f.mean(dim=2) * w).sum(dim=1)  # [b, d]
        return self.proj(summed / w.sum(dim=1).clamp(min=1.0))


class ObservedSkip(nn.Module):
    """Residual path from the observed label to the logit (``ContentConfig.engagement_skip``)::

        skip_i = a * logit(clip(y_obs_i, eps, 1 - eps))  if y_obs_i >= 0, else 0     [b, n]

    with a learned scalar ``a`` (``a_0 = 1``). ``y_obs_i`` is the freshest complete label at
    position i (``LiveBatch.observed``), the causal trivial predictor of the target at i; -1 (no
    label yet, padding) contributes nothing. With ``a = 1`` and a zero head the model ranks like
    that trivial predictor; training learns how far to trust it (``a``) and the correction (the
    tower). ``eps`` = 0.01.
    """

    eps: float = 0.01

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))

    def forward(self, observed: Tensor) -> Tensor:
        y = observed.float()
        return torch.where(y >= 0, self.weight * torch.logit(y.clamp(self.eps, 1.0 - self.eps)), torch.zeros_like(y))


class LearnedLatent(nn.Module):
    """A learned latent vector shared by every window (E_u when the id is ablated): ``[b, d]``."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.latent = nn.Parameter(torch.randn(d) * 0.02)

    def forward(self, e_f: Tensor) -> Tensor:
        return self.latent.expand(e_f.shape[0], -1)


def _check_window(n: Any, window: int) -> None:
    """A window of ``n`` positions must fit the positional embedding. Under ``torch.fx`` tracing
    ``n`` is a Proxy and the check becomes a traced ``torch._assert`` (no Python branch on it)."""
    message = f"window of more positions than the model's positional embedding covers ({window}, ContentConfig.window)"
    if isinstance(n, torch.fx.Proxy):
        torch._assert(n <= window, message)
    elif n > window:
        raise ValueError(
            f"window of {n} positions, but the model's positional embedding covers {window} (ContentConfig.window)"
        )


class ContentTower(nn.Module):
    """Fusion (Algorithm 1 or a variant) + decoder (Algorithm 2) + linear head: logits ``[b, n]``.

    Shapes: ``e_f [b, n, k, d]``, ``u [b, d]`` (one latent per window, repeated over the n
    positions), ``valid`` bool ``[b, n]`` (key padding, fully visible mode only).
    """

    def __init__(self, config: ContentConfig) -> None:
        super().__init__()
        self.window = config.window
        self.fusion = PerceiverFusion(config)
        self.decoder = CausalDecoder(config)
        self.head = nn.Linear(config.d, 1)
        if config.engagement_skip:  # start exactly at the trivial predictor (ObservedSkip)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def fuse(self, e_f: Tensor, u: Optional[Tensor]) -> Tensor:
        """The per-segment part: ``E_p = Fusion(E_f, E_u)`` ``[b, n, d]`` from ``e_f [b, n, k, d]``
        and ``u [b, d]`` (or None). Each segment is fused on its own (no position mixes with another,
        no window position enters), so ``E_p`` of a segment is the same in every window that holds
        it: what :class:`kuaihl_rec.serving.StreamingScorer` caches."""
        b, n, k, d = e_f.shape
        x_f = e_f.reshape(b * n, k, d)  # Algorithm 1: flatten(x_f)
        x_u = None
        if u is not None:
            x_u = u[:, None, None, :].expand(b, n, 1, d).reshape(b * n, 1, d)  # n x E_u, flattened
        return self.fusion(x_f, x_u).reshape(b, n, d)  # unflatten

    def decode(self, e_p: Tensor, valid: Tensor) -> Tensor:
        """Decoder (Algorithm 2) + head: logits ``[b, n]`` from ``e_p [b, n, d]``."""
        _check_window(e_p.shape[1], self.window)
        return self.head(self.decoder(e_p, valid)).squeeze(-1).float()

    def decode_last(self, e_p: Tensor, last: Tensor) -> Tensor:
        """Logit of position ``last[w]`` of each window only, ``[b]`` (:meth:`CausalDecoder.forward_last`)."""
        _check_window(e_p.shape[1], self.window)
        return self.head(self.decoder.forward_last(e_p, last)).squeeze(-1).float()

    def forward(self, e_f: Tensor, u: Optional[Tensor], valid: Tensor) -> Tensor:
        return self.decode(self.fuse(e_f, u), valid)


class ContentCTR(nn.Module):
    """The content model. ``forward(batch) -> logits [b, n]``; ``encode(batch) -> ContentOutput``.

    Args:
        spec: batch sizes (feature widths, table rows, window).
        config: a :class:`ContentConfig` (see :data:`~kuaihl_rec.model.config.CONTENT_PRESETS`).
        embedding_collection: the streamer table (:func:`build_streamer_embedding`); required
            exactly when ``config.use_id and config.id_source == "streamer"``.
        default_loss: the loss preset name a trainer should use with this model.

    Example::

        >>> import torch
        >>> from kuaihl_rec.data.batch import BatchSpec
        >>> spec = BatchSpec(
        ...     visual_tokens=1, visual_dim=8, text_dim=6, num_streamers=5, num_lives=9, n_counters=10, window=4
        ... )
        >>> cfg = ContentConfig(d=8, n_heads=2, d_head=4, n_perceiver_layers=1, n_decoder_layers=1, window=4)
        >>> model = ContentCTR(spec, cfg, build_streamer_embedding(spec, cfg))
        >>> model.config.fusion
        'perceiver'
    """

    default_loss: str = "contentctr"

    def __init__(
        self,
        spec: BatchSpec,
        config: ContentConfig,
        embedding_collection: Optional[EmbeddingCollection] = None,
        default_loss: Optional[str] = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.config = config
        if default_loss is not None:
            self.default_loss = default_loss
        if config.uses_streamer_table:
            if embedding_collection is None:
                raise ValueError(
                    "this configuration reads the streamer id: "
                    "pass embedding_collection=build_streamer_embedding(spec, config)"
                )
            _check_streamer_table(embedding_collection, config.id_dim or config.d)
        elif embedding_collection is not None:
            raise ValueError(
                "this configuration does not read the streamer id (use_id=False or id_source='history'); "
                "pass embedding_collection=None"
            )
        self.embedding_collection = embedding_collection
        self.features = FeatureFusion(spec, config)
        id_dim = config.id_dim or config.d
        self.id_proj: Optional[nn.Module] = None
        self.id_drop: Optional[StreamerIdDropout] = None
        if config.uses_streamer_table and config.id_dropout > 0:  # 0: not built (bit-identical to before)
            self.id_drop = StreamerIdDropout(config.id_dropout)
        self.history: Optional[HistoryFeature] = None
        self.latent: Optional[LearnedLatent] = None
        if config.uses_streamer_table:
            self.id_proj = nn.Linear(id_dim, config.d) if id_dim != config.d else nn.Identity()
        elif config.use_id:  # id_source == "history"
            self.history = HistoryFeature(config.d)
        elif config.fusion != "self_plain":
            self.latent = LearnedLatent(config.d)
        self.tower = ContentTower(config)
        self.skip = ObservedSkip() if config.engagement_skip else None

    def streamer_latent(self, rows: Tensor) -> Tensor:
        """E_u ``[b, d]`` for streamer-table rows ``rows`` int64 ``[b]``, read from the table's weight
        directly (no KeyedJaggedTensor; an unsharded model only: the inference path)."""
        table = self.embedding_collection.embeddings[STREAMER_TABLE]
        return self.id_proj(table(rows))

    def window_latent(
        self, e_f: Tensor, rows: Optional[Tensor] = None, valid: Optional[Tensor] = None
    ) -> Optional[Tensor]:
        """The id latent of each window ``[b, d]`` (or None for ``self_plain``): the streamer
        embedding of ``rows``, the history feature (ContentCTR-HL) or the learned latent."""
        if self.embedding_collection is not None:
            if rows is None:
                raise ValueError("this model reads the streamer id: pass its table rows")
            return self.streamer_latent(rows)
        if self.history is not None:
            return self.history(e_f, valid)
        if self.latent is not None:
            return self.latent(e_f)
        return None

    def content_inputs(self, batch: LiveBatch) -> Tuple[Tensor, Tensor]:
        """The visual ``[b, n, k_v, d_v]`` and text ``[b, n, d_t]`` features the model reads: the batch's
        (pre-extracted); the end-to-end model (``content_e2e``) computes them from raw media instead."""
        return batch.visual, batch.text

    def encode(self, batch: LiveBatch) -> ContentOutput:
        """Logits and the projected text / visual sequences (for the alignment loss)."""
        inputs = self.content_inputs(batch)
        e_f, text_seq, visual_seq = self.features(
            inputs[0], inputs[1], batch.counters, batch.observed, batch.timestamp, batch.segment
        )
        u: Optional[Tensor] = None
        if self.embedding_collection is not None:
            # dict of JaggedTensors; one id (one row of width id_dim) per window -> [b, id_dim].
            # The KJT path (not streamer_latent) keeps the lookup shardable and pipelineable.
            kjt = batch.sparse_features if self.id_drop is None else self.id_drop(batch.sparse_features)
            emb = self.embedding_collection(kjt)[STREAMER_FEATURE].values()
            if self.config.streamer_freeze:  # a fixed (pretrained) table: no gradient reaches it
                emb = emb.detach()
            u = self.id_proj(emb)
        else:
            u = self.window_latent(e_f, valid=batch.valid)
        logits = self.tower(e_f, u, batch.valid)
        if self.skip is not None:
            if batch.observed is None:
                raise ValueError("engagement_skip reads LiveBatch.observed, but the batch has none")
            logits = logits + self.skip(batch.observed)
        return ContentOutput(logits, text_seq, visual_seq)

    def forward(self, batch: LiveBatch) -> Tensor:
        """Float32 logits ``[b, n]`` (s = sigmoid(logits) predicts the next segment's label)."""
        return self.encode(batch).logits


def _check_streamer_table(ec: EmbeddingCollection, dim: int) -> None:
    configs = ec.embedding_configs()
    found = [c for c in configs if STREAMER_FEATURE in c.feature_names]
    if len(found) != 1:
        raise ValueError(
            f"embedding_collection must have exactly one table reading feature {STREAMER_FEATURE!r}, "
            f"got {[c.name for c in configs]}"
        )
    if found[0].embedding_dim != dim:
        raise ValueError(f"streamer table width {found[0].embedding_dim} != id_dim {dim}")


# --------------------------------------------------------------------------------------------
# Registry: every variant is a set of fixed ContentConfig fields over the same code.
# --------------------------------------------------------------------------------------------
_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(ContentConfig))

class Variant(NamedTuple):
    """A registered content model: fixed ContentConfig fields, default loss preset, one line, and
    the papers' KLive numbers for it (ContentCTR Tables 1, 3, 4; KuaiHL Tables I-III)."""

    fixed: Dict[str, Any]
    loss: str
    doc: str
    paper: Dict[str, Any]


# ContentCTR Table 4 / KuaiHL Table II: the loss ablation of the content model (tau-b on KLive).
PAPER_LOSS_ABLATION = {
    "point": 0.5761, "point+L0": 0.5857, "point+L1": 0.5872, "point+L2": 0.5256, "point+L3": 0.5824,
    "point+L1+align": 0.5919, "point+L1+align+aug": 0.5961,
}

# Registration order = the papers' table order (list_models(family="content") keeps it): Table 1
# variants, ContentCTR, KuaiHL, the modality ablations of Table 3, ContentCTR-HL.
CONTENT_VARIANTS: Dict[str, Variant] = {
    "self_attention_plain": Variant(
        {"fusion": "self_plain", "use_id": False}, "contentctr", "ContentCTR Table 1 SelfAttention-plain",
        {"tau": 0.5868},
    ),
    "self_attention_input": Variant(
        {"fusion": "self_input"}, "contentctr", "ContentCTR Table 1 SelfAttention-input", {"tau": 0.5718}
    ),
    "cross_attention_q": Variant(
        {"fusion": "cross_q"}, "contentctr", "ContentCTR Table 1 CrossAttention-q", {"tau": 0.5909}
    ),
    "cross_attention_kv": Variant(
        {"fusion": "cross_kv"}, "contentctr", "ContentCTR Table 1 CrossAttention-kv", {"tau": 0.5780}
    ),
    "cross_attention_qkv": Variant(
        {"fusion": "cross_qkv"}, "contentctr", "ContentCTR Table 1 CrossAttention-qkv", {"tau": 0.5883}
    ),
    "content": Variant({}, "contentctr", "ContentCTR: Perceiver fusion (Algorithm 1) + causal decoder (Algorithm 2)",
                       {"tau": 0.5919, "loss_ablation": PAPER_LOSS_ABLATION}),
    "kuaihl": Variant(
        {}, "kuaihl", "KuaiHL: the ContentCTR network trained with the augmented alignment loss", {"tau": 0.5961}
    ),
    # Without one modality there is nothing to align (the DTW term needs both sequences): the
    # papers' total loss less its alignment term, point + L1 (ContentCTR eq. 14 with lambda2 = 0).
    "content_no_visual": Variant(
        {"use_visual": False}, "point+L1", "modality ablation: without visual", {"drop_pct": -4.72}
    ),
    "content_no_text": Variant({"use_text": False}, "point+L1", "modality ablation: without text", {"drop_pct": -2.01}),
    "content_no_id": Variant({"use_id": False}, "contentctr", "modality ablation: without ID", {"drop_pct": -0.51}),
    # ContentCTR-HL optimises point + align only (ContentCTR 4.2): loss preset "contentctr_hl".
    "content_hl": Variant({"id_source": "history", "causal": False}, "contentctr_hl",
                          "ContentCTR-HL proxy on live windows (leaks the next label; the task: "
                          "kuaihl_rec.model.content_hl, `kuaihl phd`)", {"map": 21.89}),
}


def content_parts(spec: BatchSpec, preset: str, overrides: Dict[str, Any]):
    """The config and streamer embedding collection every content factory builds from (``content``, its
    variants, ``content_e2e``): the window from ``spec``, the table (None without one), initialised from a
    finished run's table when ``streamer_init`` is set (a pretrained streamer embedding, ContentCTR 3.1)."""
    cfg = content_config(preset, **{"window": spec.window, **overrides})
    ec = build_streamer_embedding(spec, cfg) if cfg.uses_streamer_table else None
    if cfg.streamer_init is not None:
        init_streamer_table(ec.embeddings[STREAMER_TABLE].weight, cfg.streamer_init)
    return cfg, ec


def _make_factory(name: str, fixed: Dict[str, Any], default_loss: str, doc: str):
    def factory(spec: BatchSpec, preset: str = "small", **overrides: Any) -> ContentCTR:
        cfg, ec = content_parts(spec, preset, {**overrides, **fixed})
        return ContentCTR(spec, cfg, ec, default_loss=default_loss)

    factory.__name__ = name
    factory.__qualname__ = name
    factory.__doc__ = (
        f"{doc}.\n\nFixed fields: {fixed or 'none'}; default loss preset {default_loss!r}. Overrides: "
        "``preset`` (\"small\" | \"paper\") and any other ContentConfig field."
    )
    return factory


for _name, _variant in CONTENT_VARIANTS.items():
    register_model(
        _name, family="content", default_loss=_variant.loss, description=_variant.doc, paper=_variant.paper,
        overrides=("preset",) + tuple(f for f in _CONFIG_FIELDS if f not in _variant.fixed),
    )(_make_factory(_name, _variant.fixed, _variant.loss, _variant.doc))
