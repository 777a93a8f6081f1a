"""``content_e2e``: the content model with its encoders inside (ContentCTR 3.3 / 4.3.2, docs/MODEL.md section 12).

The papers fine-tune Swin (F) and BERT (G) with the heads ("the gradient of swin and BERT feature
extractors are open"). Here a batch still carries ids and segment indices only; the model looks
up each (live_id, segment) of the window in a :class:`MediaBank` (``kuaihl_rec/model/media_bank.py``: every
text tokenised once, the tokenisation cache; every frame decoded once up front, or, with
``model.media_frames=lazy``, only the batch's rows decoded at each step), runs
:class:`~kuaihl_rec.encoders.EndToEndFeaturizer` on the *distinct* segments of the batch
(overlapping windows share segments) and feeds the result to the unchanged ContentCTR network::

    visual_t = F(frames_t)  [k_v, d_v]      text_t = G([CLS] asr_t [SEP] comments_t [SEP])  [d_t]
    logits   = ContentCTR(visual, text, counters, E_u)          (eq. 2-8, docs/MODEL.md)

``finetune=True`` opens the encoders' gradients (trained with their own learning rate
``encoder_lr``, a second AdamW parameter group, see ``kuaihl_rec.train.sharding.build_optimizer``);
``finetune=False`` keeps them frozen (eval mode, no gradient): the model then computes exactly the
features ``kuaihl extract`` writes with the same encoder preset, i.e. it is the frozen-feature twin
(tested). The featurizer is a child module without embedding tables, so TorchRec's pipeline tracer
treats it as a leaf and the model trains under the same trainer / DMP as every other model.

Padding positions (segment -1) read row 0 of the bank; the causal mask and ``valid`` keep them out of
every real position and the loss.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple

import torch
from torch import Tensor, nn

from kuaihl_rec.data.batch import BatchSpec, LiveBatch
from kuaihl_rec.encoders import EndToEndFeaturizer, preset_config
from kuaihl_rec.model.config import ContentConfig
from kuaihl_rec.model.content import ContentCTR, _CONFIG_FIELDS, content_parts
from kuaihl_rec.model.media_bank import DEFAULT_RAM_GIB, MEDIA_FRAMES, MediaBank, load_media_bank
from kuaihl_rec.model.registry import register_model

__all__ = ["ContentE2E", "MediaBank", "MediaFeaturizer", "load_media_bank"]


class MediaFeaturizer(nn.Module):
    """``(live_raw [b], segment [b, n]) -> (visual [b, n, k_v, d_v], text [b, n, d_t])`` through the encoders.

    The bank is held as plain tensors / frame paths (not buffers: neither in checkpoints nor broadcast by DDP).
    ``encoder_lr`` (None: the dense learning rate) is read by ``build_optimizer``.
    """

    def __init__(self, featurizer: EndToEndFeaturizer, bank: MediaBank, encoder_lr: Optional[float] = None):
        super().__init__()
        self.featurizer = featurizer
        self.bank = bank
        self.encoder_lr = encoder_lr

    def forward(self, live_raw: Tensor, segment: Tensor) -> Tuple[Tensor, Tensor]:
        rows = self.bank.rows(live_raw.cpu(), segment.cpu())
        unique, inverse = torch.unique(rows, return_inverse=True)
        device = next(self.featurizer.parameters()).device
        images = self.bank.images(unique).to(device)  # ram: indexed; lazy: these rows decoded now
        tokens = {k: v[unique] for k, v in self.bank.tokens.items()}
        width = int(tokens["attention_mask"].sum(1).max())  # drop the columns that are padding for every row
        tokens = {k: v[:, :width] for k, v in tokens.items()}
        visual = self.featurizer.visual(images)  # [u, k_v, d_v]
        text = self.featurizer.text.encode_tokens(tokens)  # [u, d_t]
        inverse = inverse.to(device)
        return visual[inverse], text[inverse]


class ContentE2E(ContentCTR):
    """ContentCTR whose ``visual`` / ``text`` come from :class:`MediaFeaturizer` (``self.media``)."""

    #: Why the plain-tensor serving path refuses this model (kuaihl_rec.serving reads it): serving takes
    #: pre-extracted feature vectors, and features from any other encoder than this run's (fine-tuned)
    #: Swin and MiniLM would be scored silently wrong.
    not_servable = ("its encoders run inside the model on raw frames and text, and serving takes pre-extracted "
                    "feature vectors; extract features with this run's encoders first (not yet supported)")

    def __init__(self, spec: BatchSpec, config: ContentConfig, embedding_collection, media: MediaFeaturizer,
                 default_loss: Optional[str] = None) -> None:
        super().__init__(spec, config, embedding_collection, default_loss=default_loss)
        self.media = media

    def content_inputs(self, batch: LiveBatch) -> Tuple[Tensor, Tensor]:
        out = self.media(batch.live_raw, batch.segment)
        return out[0], out[1]  # indexed, not unpacked: the pipeline FX-traces this method


_E2E_OVERRIDES = ("preset", "media", "encoder_preset", "finetune", "encoder_lr", "vision_checkpoint", "text_model",
                  "media_frames", "media_ram_gib")


@register_model(
    "content_e2e", family="content", default_loss="contentctr",
    description="ContentCTR with Swin + MiniLM inside the model (gradients open, or frozen with finetune=False)",
    overrides=_E2E_OVERRIDES + tuple(f for f in _CONFIG_FIELDS if f not in _E2E_OVERRIDES),
)
def content_e2e(spec: BatchSpec, preset: str = "small", media: Optional[str] = None,
                encoder_preset: str = "swin_media", finetune: bool = True, encoder_lr: Optional[float] = None,
                vision_checkpoint: Optional[str] = None, text_model: str = "minilm", media_frames: str = "auto",
                media_ram_gib: float = DEFAULT_RAM_GIB, **overrides: Any) -> ContentE2E:
    """The end-to-end content model. ``media``: the raw-media segment table (required; e.g. the world
    written with ``raw_media: true``); ``encoder_preset``: a ``kuaihl_rec.encoders.PRESETS`` name;
    ``media_frames`` / ``media_ram_gib``: how the bank holds the frames (``kuaihl_rec/model/media_bank.py``)."""
    if media is None:
        raise ValueError("content_e2e needs the raw-media table: --set model.media=DIR "
                         "(a world written with `kuaihl world --preset tiny_media` or `--set raw_media=true`)")
    if not isinstance(finetune, bool):
        raise ValueError(f"content_e2e: model.finetune must be true or false, got {finetune!r}")
    if encoder_lr is not None and (isinstance(encoder_lr, bool) or not isinstance(encoder_lr, (int, float))
                                   or not encoder_lr > 0):
        raise ValueError(f"content_e2e: model.encoder_lr must be a number > 0 (or unset), got {encoder_lr!r}")
    if media_frames not in MEDIA_FRAMES:
        raise ValueError(f"content_e2e: model.media_frames must be one of {', '.join(MEDIA_FRAMES)}, "
                         f"got {media_frames!r}")
    if isinstance(media_ram_gib, bool) or not isinstance(media_ram_gib, (int, float)) or not media_ram_gib >= 0:
        raise ValueError(f"content_e2e: model.media_ram_gib must be a number >= 0 (GiB of decoded frames that "
                         f"model.media_frames=auto keeps in memory), got {media_ram_gib!r}")
    enc_cfg = preset_config(encoder_preset, vision_checkpoint=vision_checkpoint, text_model=text_model)
    featurizer = EndToEndFeaturizer(enc_cfg, trainable=finetune)
    bank = load_media_bank(media, enc_cfg, featurizer, frames=media_frames, ram_gib=float(media_ram_gib))
    sizes = featurizer.sizes
    spec = dataclasses.replace(spec, visual_tokens=sizes.visual_tokens, visual_dim=sizes.visual_dim,
                               text_dim=sizes.text_dim)
    cfg, ec = content_parts(spec, preset, overrides)
    lr = None if encoder_lr is None else float(encoder_lr)
    return ContentE2E(spec, cfg, ec, MediaFeaturizer(featurizer, bank, lr), default_loss="contentctr")
