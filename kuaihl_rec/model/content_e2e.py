"""``content_e2e``: the content model with its encoders inside (ContentCTR 3.3 / 4.3.2, docs/MODEL.md section 12).

The papers fine-tune Swin (F) and BERT (G) with the heads ("the gradient of swin and BERT feature
extractors are open"). Here a batch still carries ids and segment indices only; the model looks
up each (live_id, segment) of the window in a :class:`MediaBank` (every frame of the raw-media
table decoded once, every text tokenised once: the tokenisation cache), runs
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
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from kuaihl_rec.data.batch import BatchSpec, LiveBatch
from kuaihl_rec.data.io import DataError
from kuaihl_rec.data.schema import RAW_MEDIA_COLUMNS
from kuaihl_rec.encoders import EncoderConfig, EndToEndFeaturizer, preset_config, segment_text
from kuaihl_rec.model.config import ContentConfig
from kuaihl_rec.model.content import ContentCTR, _CONFIG_FIELDS, content_parts
from kuaihl_rec.model.registry import register_model

__all__ = ["ContentE2E", "MediaBank", "MediaFeaturizer", "load_media_bank"]


@dataclasses.dataclass
class MediaBank:
    """Every segment's decoded frames and tokenised text (N rows, in the table's (live_id, segment) order).

    live_ids: [R] int64 sorted; offsets: [R] int64 first row of each room; lengths: [R] int64.
    frames: uint8 [N, F, 3, S, S].  tokens: {name: int64 [N, L]} (``input_ids``, ``attention_mask``, ...).
    """

    live_ids: Tensor
    offsets: Tensor
    lengths: Tensor
    frames: Tensor
    tokens: dict

    def rows(self, live_raw: Tensor, segment: Tensor) -> Tensor:
        """Bank rows ``[b, n]`` of windows ``live_raw [b]`` at content segments ``segment [b, n]`` (-1 -> row 0)."""
        room = torch.searchsorted(self.live_ids, live_raw.to(torch.long))
        room = room.clamp(max=len(self.live_ids) - 1)
        if not torch.equal(self.live_ids[room], live_raw.to(torch.long)):
            missing = live_raw[self.live_ids[room] != live_raw].tolist()
            raise DataError(f"live_id(s) {missing[:5]} are not in the media table (model.media)")
        seg = segment.to(torch.long)
        if bool((seg >= self.lengths[room][:, None]).any()):
            raise DataError("a window reads a segment past its room's end in the media table (model.media)")
        return torch.where(seg >= 0, self.offsets[room][:, None] + seg, torch.zeros_like(seg))


def _check_media_order(path: Path, live: np.ndarray, seg: np.ndarray) -> None:
    """Each room's rows are contiguous, in segment order 0, 1, 2, ..., and no live_id starts twice (otherwise
    rooms would merge in the bank and a window would read another room's frames)."""
    if len(live) == 0:
        raise DataError(f"{path}: the media table (model.media) has no rows")
    new_room = np.ones(len(live), dtype=bool)
    new_room[1:] = live[1:] != live[:-1]
    expected = np.zeros(len(seg), dtype=np.int64)
    expected[1:] = seg[:-1] + 1
    expected[new_room] = 0
    bad = np.flatnonzero(seg != expected)
    if bad.size:
        r = int(bad[0])
        raise DataError(f"{path}: row {r}: segment: the media table (model.media): live_id {int(live[r])} has segment "
                        f"{int(seg[r])} where {int(expected[r])} is expected (each room's rows contiguous, segments "
                        "0, 1, 2, ...)")
    firsts = np.flatnonzero(new_room)
    _, first_seen = np.unique(live[firsts], return_index=True)
    repeated = np.setdiff1d(np.arange(len(firsts)), first_seen)
    if repeated.size:
        r = int(firsts[repeated.min()])
        raise DataError(f"{path}: row {r}: live_id: the media table (model.media): live_id {int(live[r])} appears in "
                        "two separate runs of rows (each room's rows must be contiguous)")


def load_media_bank(media: Any, cfg: EncoderConfig, featurizer: EndToEndFeaturizer) -> MediaBank:
    """Read the raw-media segment table ``media`` (a directory or ``.parquet`` file with ``frame_paths`` /
    ``asr_text`` / ``comment_text``), decode its frames as ``kuaihl extract`` does and tokenise its texts."""
    # why: function-level import: extract pulls the data validator, only the end-to-end model needs it
    from kuaihl_rec.extract import load_frames
    from kuaihl_rec.data.validate import read_table

    path = Path(media)
    if not path.exists():
        raise DataError(f"{path}: the media table (model.media) does not exist")
    parts, _ = read_table(path)
    root = path if path.is_dir() else path.parent
    live, seg, frames, texts = [], [], [], []
    for name, table in parts:
        absent = [c for c in RAW_MEDIA_COLUMNS if c not in table.column_names]
        if absent:
            raise DataError(f"{name}: the media table lacks the raw-media column(s) {absent} "
                            "(write one with `kuaihl world --set raw_media=true`)")
        live.append(table.column("live_id").to_numpy())
        seg.append(table.column("segment").to_numpy())
    live_np, seg_np = np.concatenate(live), np.concatenate(seg)
    _check_media_order(path, live_np, seg_np)
    for name, table in parts:
        for r, (paths, asr, com) in enumerate(zip(table.column("frame_paths").to_pylist(),
                                                  table.column("asr_text").to_pylist(),
                                                  table.column("comment_text").to_pylist())):
            img = load_frames(paths, cfg, root, f"{name}: row {r}")
            frames.append(img.mul(255.0).round_().to(torch.uint8))
            texts.append(segment_text(asr, com))
    starts = np.flatnonzero(seg_np == 0)
    order = np.argsort(live_np[starts], kind="stable")
    lengths = np.diff(np.append(starts, len(seg_np)))
    tokens = dict(featurizer.text.tokenize(texts))
    return MediaBank(
        live_ids=torch.from_numpy(live_np[starts][order].astype(np.int64)),
        offsets=torch.from_numpy(starts[order].astype(np.int64)),
        lengths=torch.from_numpy(lengths[order].astype(np.int64)),
        frames=torch.stack(frames),
        tokens={k: v for k, v in tokens.items()},
    )


class MediaFeaturizer(nn.Module):
    """``(live_raw [b], segment [b, n]) -> (visual [b, n, k_v, d_v], text [b, n, d_t])`` through the encoders.

    The bank is held as plain tensors (not buffers: neither in checkpoints nor broadcast by DDP).
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
        images = self.bank.frames[unique].to(device)
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


_E2E_OVERRIDES = ("preset", "media", "encoder_preset", "finetune", "encoder_lr", "vision_checkpoint", "text_model")


@register_model(
    "content_e2e", family="content", default_loss="contentctr",
    description="ContentCTR with Swin + MiniLM inside the model (gradients open, or frozen with finetune=False)",
    overrides=_E2E_OVERRIDES + tuple(f for f in _CONFIG_FIELDS if f not in _E2E_OVERRIDES),
)
def content_e2e(spec: BatchSpec, preset: str = "small", media: Optional[str] = None,
                encoder_preset: str = "swin_media", finetune: bool = True, encoder_lr: Optional[float] = None,
                vision_checkpoint: Optional[str] = None, text_model: str = "minilm", **overrides: Any) -> ContentE2E:
    """The end-to-end content model. ``media``: the raw-media segment table (required; e.g. the world
    written with ``raw_media: true``); ``encoder_preset``: a ``kuaihl_rec.encoders.PRESETS`` name."""
    if media is None:
        raise ValueError("content_e2e needs the raw-media table: --set model.media=DIR "
                         "(a world written with `kuaihl world --preset tiny_media` or `--set raw_media=true`)")
    if not isinstance(finetune, bool):
        raise ValueError(f"content_e2e: model.finetune must be true or false, got {finetune!r}")
    if encoder_lr is not None and (isinstance(encoder_lr, bool) or not isinstance(encoder_lr, (int, float))
                                   or not encoder_lr > 0):
        raise ValueError(f"content_e2e: model.encoder_lr must be a number > 0 (or unset), got {encoder_lr!r}")
    enc_cfg = preset_config(encoder_preset, vision_checkpoint=vision_checkpoint, text_model=text_model)
    featurizer = EndToEndFeaturizer(enc_cfg, trainable=finetune)
    bank = load_media_bank(media, enc_cfg, featurizer)
    sizes = featurizer.sizes
    spec = dataclasses.replace(spec, visual_tokens=sizes.visual_tokens, visual_dim=sizes.visual_dim,
                               text_dim=sizes.text_dim)
    cfg, ec = content_parts(spec, preset, overrides)
    lr = None if encoder_lr is None else float(encoder_lr)
    return ContentE2E(spec, cfg, ec, MediaFeaturizer(featurizer, bank, lr), default_loss="contentctr")
