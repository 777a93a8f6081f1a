"""The content model's inference path on plain tensors, decoupled from training records.

:class:`ContentInference` wraps a trained, unsharded :class:`~kuaihl_rec.model.content.ContentCTR`
(the same weights, shared, in eval mode) and its streamer vocabulary. Its inputs are plain
tensors; no :class:`~kuaihl_rec.data.batch.LiveBatch`, no KeyedJaggedTensor, no table rows.
Shapes for ``b`` rooms, windows of ``n <= window`` segments, ``k_v`` visual tokens of width
``d_v``, text width ``d_t``, ``C = len(COUNTER_COLUMNS)`` counters::

    visual       float32 [b, n, k_v, d_v]   visual features of the window's segments (oldest first)
    text         float32 [b, n, d_t]        text features
    counters     float32 [b, n, C]          raw counters, COUNTER_COLUMNS order (read only with use_counters)
    observed     float32 [b, n]             freshest complete label at each segment: the label of
                                            segment t - label_delay, -1 where none (use_counters only)
    timestamp    int64   [b, n]             segment start, unix seconds (use_counters only)
    segment      int64   [b, n]             segment index t in its room (use_counters only)
    streamer_id  int64   [b]                RAW streamer id (mapped to a table row inside, see lookup)
    lengths      int64   [b]                real segments per window (1 .. n); positions >= length
                                            are right padding and never read (causal mask)

    forward(...) -> (score float32 [b], known bool [b])

``score[w] = sigmoid(logit)`` predicts the label of the segment *after* window ``w``'s newest
segment (position ``lengths[w] - 1``), exactly what ``kuaihl eval`` scores for that target
(the left shift of docs/MODEL.md section 1). ``known[w]`` is False when the streamer id is not in
the run's vocabulary, which then reads the cold-start row 0, as in training and evaluation.

The same computation in two halves, for the streaming scorer (:mod:`kuaihl_rec.serving.stream`)::

    encode_segments(visual [B, k_v, d_v], text [B, d_t], counters [B, C], observed [B],
                    timestamp [B], segment [B], streamer_row [B]) -> E_p [B, d]
    decode_logits(e_p [b, n, d], lengths [b], observed_last [b]) -> logits [b]

``E_p`` of a segment (projection heads, engagement token, Perceiver fusion with the streamer
latent: ContentCTR eq. 2 and Algorithm 1) depends on that segment and its room's streamer only,
not on the window around it; only the decoder (Algorithm 2, with the positional embedding) needs
the window. Every method is free of data-dependent Python control flow, so the module traces
with ``torch.fx`` and exports with ``torch.export`` (dynamic batch size; see
:mod:`kuaihl_rec.serving.export`).

Id lookup: a module inside (:mod:`kuaihl_rec.serving.lookup`), by default the run's vocabulary
(sorted raw ids of the training split; row r + 1 <-> raw[r], row 0 = unknown) as a buffer and a
``searchsorted``, so the exported program takes raw ids. To serve an id space that does not fit a
vocabulary, pass another ``lookup=`` module (see ``docs/SERVING.md``: hashing, TorchRec
managed-collision modules).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from kuaihl_rec.data.schema import COUNTER_COLUMNS
from kuaihl_rec.data.windows import WindowConfig
from kuaihl_rec.model.content import ContentCTR
from kuaihl_rec.serving.lookup import VocabLookup
from kuaihl_rec.train.config import TrainConfig
from kuaihl_rec.train.evaluate import load_trained_model

INPUT_NAMES = ("visual", "text", "counters", "observed", "timestamp", "segment", "streamer_id", "lengths")
OUTPUT_NAMES = ("score", "known")


class NotServable(ValueError):
    """The run's model has no streaming / plain-tensor inference path (with the reason)."""


class ContentInference(nn.Module):
    """Plain-tensor inference module of a trained content model (see the module docstring).

    Args:
        model: a trained, unsharded ContentCTR (causal; streamer id from its table, or no id).
        streamer_vocab: sorted unique raw streamer ids of the training split (``vocab.npz``);
            builds the default :class:`~kuaihl_rec.serving.lookup.VocabLookup`.
        label_delay: segments until a label is complete (``WindowConfig.observed_delay``): the
            caller's ``observed`` at segment t is the label of t - label_delay.
        model_name: registry name, for messages and manifests.
        lookup: instead of ``streamer_vocab``, any module ``raw [b] -> (rows [b], known [b])``.
        window_config: the run's :class:`WindowConfig` (kept for replay; optional).
    """

    def __init__(
        self,
        model: nn.Module,
        streamer_vocab: Optional[np.ndarray] = None,
        label_delay: int = 2,
        model_name: str = "content",
        lookup: Optional[nn.Module] = None,
        window_config: Optional[WindowConfig] = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, ContentCTR):
            raise NotServable(
                f"model {model_name!r} ({type(model).__name__}) is not a content model; the serving path covers the "
                "ContentCTR family (the ID baselines score from their own feature pipeline)"
            )
        reason = getattr(model, "not_servable", None)
        if reason:
            raise NotServable(f"model {model_name!r} cannot be served on plain tensors: {reason}")
        if not model.config.causal or model.history is not None:
            raise NotServable(
                f"model {model_name!r} uses a fully visible window (ContentCTR-HL history feature): a segment's "
                "representation depends on the whole window, so it cannot be scored segment by segment"
            )
        if (streamer_vocab is None) == (lookup is None):
            raise ValueError("pass exactly one of streamer_vocab (the run's vocab.npz 'streamer') and lookup")
        self.model = model.eval()
        self.config = model.config
        self.spec = model.spec
        self.window = int(model.config.window)
        self.label_delay = int(label_delay)
        self.model_name = model_name
        self.window_config = window_config
        self.id_lookup = lookup if lookup is not None else VocabLookup(streamer_vocab)

    # ------------------------------------------------------------------------------ sizes

    @property
    def d(self) -> int:
        return int(self.config.d)

    @property
    def reads(self) -> Tuple[str, ...]:
        """The inputs this model's computation actually depends on (the others are accepted and ignored)."""
        c = self.config
        names = []
        if c.use_visual:
            names.append("visual")
        if c.use_text:
            names.append("text")
        if c.use_counters:
            names += ["counters", "observed", "timestamp", "segment"]
        if c.uses_streamer_table:
            names.append("streamer_id")
        return tuple(names + ["lengths"])

    def input_shapes(self) -> Dict[str, Tuple[Any, ...]]:
        """Shape of each input of :meth:`forward` (``"b"`` rooms, ``"n"`` window positions <= window)."""
        s = self.spec
        return {
            "visual": ("b", "n", s.visual_tokens, s.visual_dim),
            "text": ("b", "n", s.text_dim),
            "counters": ("b", "n", len(COUNTER_COLUMNS)),
            "observed": ("b", "n"),
            "timestamp": ("b", "n"),
            "segment": ("b", "n"),
            "streamer_id": ("b",),
            "lengths": ("b",),
        }

    # ------------------------------------------------------------------------------ pieces

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def lookup(self, streamer_id: Tensor) -> Tuple[Tensor, Tensor]:
        """Raw ids int64 ``[b]`` -> (table rows int64 ``[b]``, known bool ``[b]``); unknown -> row 0."""
        return self.id_lookup(streamer_id)

    def _latent(self, e_f: Tensor, streamer_row: Tensor) -> Optional[Tensor]:
        m = self.model
        if m.embedding_collection is not None:
            return m.streamer_latent(streamer_row)
        return m.window_latent(e_f)

    def _fused(
        self, visual: Tensor, text: Tensor, counters: Tensor, observed: Tensor, timestamp: Tensor, segment: Tensor,
        streamer_row: Tensor,
    ) -> Tensor:
        """``E_p [b, n, d]`` of windows of segments: projection heads, engagement token, fusion with the
        id latent (inputs shaped as in :meth:`window_logits`)."""
        m = self.model
        e_f, _, _ = m.features(visual, text, counters, observed, timestamp, segment)  # [b, n, k, d]
        return m.tower.fuse(e_f, self._latent(e_f, streamer_row))

    def encode_segments(
        self,
        visual: Tensor,
        text: Tensor,
        counters: Tensor,
        observed: Tensor,
        timestamp: Tensor,
        segment: Tensor,
        streamer_row: Tensor,
    ) -> Tensor:
        """``E_p [B, d]`` of ``B`` segments (each with its room's streamer-table row ``streamer_row [B]``)."""
        one = [x.unsqueeze(1) for x in (visual, text, counters, observed, timestamp, segment)]  # windows of 1
        return self._fused(*one, streamer_row)[:, 0]

    def decode_logits(self, e_p: Tensor, lengths: Tensor, observed_last: Tensor) -> Tensor:
        """Logit of each window's newest position ``lengths - 1``: ``[b]`` float32 (``e_p [b, n, d]``;
        ``observed_last [b]`` is the observed label of that newest segment, read by ``engagement_skip``)."""
        m = self.model
        logits = m.tower.decode_last(e_p, lengths - 1)
        if m.skip is not None:
            logits = logits + m.skip(observed_last)
        return logits

    def window_logits(
        self,
        visual: Tensor,
        text: Tensor,
        counters: Tensor,
        observed: Tensor,
        timestamp: Tensor,
        segment: Tensor,
        streamer_row: Tensor,
        lengths: Tensor,
    ) -> Tensor:
        """Logits ``[b]`` of full windows (every segment encoded here; no cache)."""
        e_p = self._fused(visual, text, counters, observed, timestamp, segment, streamer_row)  # [b, n, d]
        last = (lengths - 1).reshape(-1, 1)
        return self.decode_logits(e_p, lengths, observed.gather(1, last)[:, 0])

    def forward(
        self,
        visual: Tensor,
        text: Tensor,
        counters: Tensor,
        observed: Tensor,
        timestamp: Tensor,
        segment: Tensor,
        streamer_id: Tensor,
        lengths: Tensor,
    ) -> Tuple[Tensor, Tensor]:
        rows, known = self.lookup(streamer_id)
        logits = self.window_logits(visual, text, counters, observed, timestamp, segment, rows, lengths)
        return torch.sigmoid(logits), known

    # ------------------------------------------------------------------------------ identity

    def fingerprint(self) -> str:
        """SHA-256 (16 hex digits) of the weights, vocabulary and configuration: a scorer state or an
        export belongs to exactly one model."""
        h = hashlib.sha256()
        h.update(
            json.dumps(
                {"model": self.model_name, "config": _asdict(self.config), "label_delay": self.label_delay},
                sort_keys=True,
            ).encode()
        )
        for name, tensor in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def _asdict(config: Any) -> Dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(config)


def load_inference(run_dir: Path, device: Optional[torch.device] = None) -> ContentInference:
    """:class:`ContentInference` of a finished ``kuaihl train`` run (``model.pt``, ``config.json``,
    ``vocab.npz``), in eval mode on ``device`` (default CPU)."""
    run_dir = Path(run_dir)
    vocab_path = run_dir / "vocab.npz"
    if not vocab_path.exists():
        raise FileNotFoundError(f"{vocab_path}: no vocabulary (is {run_dir} a finished `kuaihl train` run?)")
    model, saved = load_trained_model(run_dir)
    vocab = np.load(vocab_path)
    wcfg = WindowConfig.from_dict(saved["window"])
    module = ContentInference(
        model,
        vocab["streamer"],
        label_delay=wcfg.observed_delay,
        model_name=TrainConfig.from_dict(saved["train"]).model.name,
        window_config=wcfg,
    )
    module.eval()
    if device is not None:
        module.to(device)
    return module
