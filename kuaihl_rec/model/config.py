"""Configuration of the content model (ContentCTR / KuaiHL and their Table 1 variants).

One frozen dataclass, :class:`ContentConfig`, configures every content model; the papers'
variants and ablations are values of its fields, not separate classes (docs/MODEL.md section 5):

================================  ==========================================================
registry name                     fields that differ from the ``content`` default
================================  ==========================================================
``content`` / ``kuaihl``          (none; ``kuaihl`` differs only by its default loss preset)
``self_attention_plain``          ``fusion="self_plain", use_id=False``
``self_attention_input``          ``fusion="self_input"``
``cross_attention_q``             ``fusion="cross_q"``
``cross_attention_kv``            ``fusion="cross_kv"``
``cross_attention_qkv``           ``fusion="cross_qkv"``
``content_no_id``                 ``use_id=False`` (a learned latent query replaces E_u)
``content_no_text``               ``use_text=False``
``content_no_visual``             ``use_visual=False``
``content_hl``                    ``id_source="history", causal=False`` (ContentCTR-HL)
================================  ==========================================================

Presets (:data:`CONTENT_PRESETS`):

* ``"paper"``: ContentCTR section 4.3.2 / KuaiHL: L = 3 Perceiver and 3 decoder layers,
  d = 512, d_h = 64, n_h = 8, n = 20; dropout 0.1 (the papers do not give one).
* ``"small"``: d = 64, 2 heads of 32, 2 + 2 layers, no dropout: the CPU default (trains the embedded
  synthetic world, ~80k windows per epoch, in minutes on 2 cores; see ``bench/bench_model.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

FUSIONS: Tuple[str, ...] = ("perceiver", "self_plain", "self_input", "cross_q", "cross_kv", "cross_qkv")
ID_SOURCES: Tuple[str, ...] = ("streamer", "history")


@dataclasses.dataclass(frozen=True)
class ContentConfig:
    """Sizes and switches of :class:`~kuaihl_rec.model.content.ContentCTR`.

    Fields:
        d: model width (tokens, latents, decoder).
        n_heads, d_head: attention heads n_h and their width d_h (``n_heads * d_head`` need not
            equal ``d``: the output projection maps back to ``d``, as in ContentCTR eq. 3).
        n_perceiver_layers: L of the fusion stack (Algorithm 1).
        n_decoder_layers: L of the causal decoder (Algorithm 2).
        ffn_mult: hidden width of every feed-forward block = ``ffn_mult * d``.
        dropout: dropout on attention weights, FFN hidden / output and projection heads.
        window: the largest window n the learned positional embedding covers.
        fusion: how E_f and E_u are fused per segment (see :mod:`kuaihl_rec.model.perceiver`).
        use_id, use_text, use_visual: modality switches (Table 3 / III ablations). Without the
            id, a learned latent vector (shared by all streamers) takes the place of E_u.
        use_counters: add one *engagement* token per segment from what the ID baselines read
            (the eight ContentCTR counters, ``log1p``; hour of day; position in the room) and the
            freshest complete label (``LiveBatch.observed``: for LVTR the label of segment t - 2,
            whose 60 s outcome is known when t + 1 is scored), then a linear map. Off in every preset
            (the papers' content model reads no counters).
        engagement_skip: (needs ``use_counters``) add ``a * logit(clip(observed, 0.01, 0.99))``
            to the head's logit, with a learned scalar ``a`` initialised to 1 and a zero head, so
            the untrained model ranks exactly like the causal trivial predictor (the freshest
            complete label) and the network learns the correction from content, id and counters
            (residual learning; see ``ObservedSkip`` in :mod:`kuaihl_rec.model.content`).
        causal: the decoder's causal mask (True); False = fully visible (ContentCTR-HL) with
            ``batch.valid`` as key-padding mask.
        id_source: ``"streamer"`` (E_u from the TorchRec table) or ``"history"`` (ContentCTR-HL:
            a history feature, here the mean of the window's fused tokens; not causal).
        id_dim: width of the streamer table; ``None`` = d, else a linear map id_dim -> d follows.
        input_norm: LayerNorm (over features) on the raw visual / text features before the
            projection heads, so features of any scale can be fed.
        id_dropout: training only: probability that a window's streamer id is replaced by the
            vocabulary's unknown row 0 (what a cold-start streamer reads at test time), so that row
            is trained (:class:`~kuaihl_rec.model.content.StreamerIdDropout`; docs/MODEL.md,
            "Unseen streamers"). 0 = off: the module is not built and training is bit-identical to
            a model without the field. Ignored by configurations that read no streamer table
            (``use_id=False``, ``id_source="history"``).
        streamer_init: a finished run directory whose streamer table (``RUN/model.pt``: an ID
            baseline's ``streamer_id`` embedding or a content model's table) initialises this model's,
            projected to ``id_dim or d`` by a fixed projection when the widths differ (ContentCTR 3.1
            takes E_u from a pretrained ID model; :func:`~kuaihl_rec.model.streamer.project_table`).
            Applied by the registry's factories (``create_model``); the run must be trained on the
            same data (same streamer vocabulary, checked by the trainer) and exist whenever the model
            is built. None = TorchRec's random initialisation.
        streamer_freeze: keep the streamer table fixed (its lookup is detached, so neither the
            fused table optimizer nor id dropout changes it); the projection ``id_dim -> d``, if
            any, still trains.
    """

    d: int = 64
    n_heads: int = 2
    d_head: int = 32
    n_perceiver_layers: int = 2
    n_decoder_layers: int = 2
    ffn_mult: int = 4
    dropout: float = 0.1
    window: int = 20
    fusion: str = "perceiver"
    use_id: bool = True
    use_text: bool = True
    use_visual: bool = True
    use_counters: bool = False
    engagement_skip: bool = False
    causal: bool = True
    id_source: str = "streamer"
    id_dim: Optional[int] = None
    input_norm: bool = True
    id_dropout: float = 0.0
    streamer_init: Optional[str] = None
    streamer_freeze: bool = False

    def __post_init__(self) -> None:
        for name in ("d", "n_heads", "d_head", "n_perceiver_layers", "n_decoder_layers", "ffn_mult", "window"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ContentConfig.{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"ContentConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not (isinstance(self.id_dropout, (int, float)) and 0.0 <= self.id_dropout < 1.0):
            raise ValueError(f"ContentConfig.id_dropout must be in [0, 1), got {self.id_dropout!r}")
        if (self.streamer_init is not None or self.streamer_freeze) and not self.uses_streamer_table:
            raise ValueError("ContentConfig: streamer_init / streamer_freeze need a streamer table "
                             "(use_id=True, id_source='streamer')")
        if self.fusion not in FUSIONS:
            raise ValueError(f"ContentConfig.fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.id_source not in ID_SOURCES:
            raise ValueError(f"ContentConfig.id_source must be one of {ID_SOURCES}, got {self.id_source!r}")
        if self.id_dim is not None and (not isinstance(self.id_dim, int) or self.id_dim < 1):
            raise ValueError(f"ContentConfig.id_dim must be None or an integer >= 1, got {self.id_dim!r}")
        if not (self.use_text or self.use_visual or self.use_counters):
            raise ValueError("ContentConfig: at least one of use_text, use_visual, use_counters must be True")
        if self.engagement_skip and not self.use_counters:
            raise ValueError(
                "ContentConfig: engagement_skip=True reads the observed label, so it needs use_counters=True"
            )
        if self.fusion == "self_plain" and self.use_id:
            raise ValueError(
                "ContentConfig: fusion='self_plain' (SelfAttention-plain) has no id by definition; set use_id=False"
            )
        if self.use_id and self.id_source == "history" and self.causal:
            raise ValueError(
                "ContentConfig: id_source='history' averages every position of the window (it sees the "
                "future), so it needs causal=False (ContentCTR-HL mode)"
            )

    @property
    def uses_streamer_table(self) -> bool:
        """Whether the model reads the streamer id through a TorchRec EmbeddingCollection."""
        return self.use_id and self.id_source == "streamer"

    @property
    def ffn_hidden(self) -> int:
        return self.ffn_mult * self.d


CONTENT_PRESETS: Dict[str, ContentConfig] = {
    # ContentCTR 4.3.2: "the layer number for the Perceiver block and Decoder block is set to 3,
    # the input dimension d = 512, the hidden dimension of the transformer d_h is set to 64 and
    # the number of attention head n_h = 8"; n = 20 (KuaiHL / KLive windows).
    "paper": ContentConfig(d=512, n_heads=8, d_head=64, n_perceiver_layers=3, n_decoder_layers=3, window=20),
    # CPU default (measured in bench/bench_model.py): the papers' inputs (no engagement token, so
    # the score measures what *content* adds; see FeatureFusion for use_counters=True) and dropout
    # 0.1: without it the model overfits the training rooms after one epoch on the default world
    # (validation tau-b falls), although dropout costs ~50% of the CPU step.
    "small": ContentConfig(
        d=64, n_heads=2, d_head=32, n_perceiver_layers=2, n_decoder_layers=2, dropout=0.1, window=20
    ),
}


def content_config(preset: str = "small", **overrides: object) -> ContentConfig:
    """The preset ``preset`` with ``overrides`` applied (unknown field -> TypeError)."""
    if preset not in CONTENT_PRESETS:
        raise KeyError(f"unknown content preset {preset!r}; known: {sorted(CONTENT_PRESETS)}")
    fields = {f.name for f in dataclasses.fields(ContentConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"unknown ContentConfig field(s) {unknown}; valid: {sorted(fields)}")
    return dataclasses.replace(CONTENT_PRESETS[preset], **overrides)
