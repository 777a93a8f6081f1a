"""Training configuration: one nested tree of frozen dataclasses with named presets.

::

    TrainConfig
      model: ModelChoice      name (registry), overrides (create_model keywords)
      data:  WindowConfig     window, stride, min_viewers, label, split, label_delay (kuaihl_rec.data.windows)
      optim: OptimConfig      dense AdamW + fused row-wise Adagrad (kuaihl_rec.train.sharding)
      stream: StreamConfig    in-memory (default) or per-rank streaming input, hashed ids (kuaihl_rec.data.catalog)
      loss, epochs, batch_size, warmup_steps, schedule, patience, checkpoint_every, ...

Read, written and changed with :mod:`kuaihl_rec.config` (``to_dict`` / ``from_dict`` /
``set_path``), which ``kuaihl train --set a.b=c`` uses too: ``--set data.stride=8``,
``--set optim.lr=1e-3``, ``--set model.use_counters=true`` (a model key: short for
``model.overrides.use_counters``). A run's ``config.json["train"]`` loads back as the same
config (:meth:`TrainConfig.from_dict`), also from runs written before the tree (flat ``window``,
``stride``, ``min_viewers``, ``label``, ``model`` as a string and ``model_overrides``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Mapping, Optional, Tuple

from kuaihl_rec import config as configs
from kuaihl_rec.data.catalog import StreamConfig
from kuaihl_rec.data.windows import WindowConfig
from kuaihl_rec.train.sharding import OptimConfig


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """Which registered model a run trains: ``name`` and its ``overrides`` (sorted key/value pairs)."""

    SHORTHAND = "name"  # model="deepfm" means ModelChoice(name="deepfm")

    name: str = "content"
    overrides: Tuple[Tuple[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (saved as ``RUN/config.json["train"]``).

    model                     :class:`ModelChoice` (registry name and keyword overrides)
    data                      :class:`~kuaihl_rec.data.windows.WindowConfig`: how samples are cut
                              (docs/MODEL.md section 1), including ``label_delay``
    loss                      loss preset (``kuaihl_rec.losses.LOSS_PRESETS``); None = the model's
                              registry default
    epochs, batch_size        ``batch_size`` is the *global* batch (split evenly over ranks)
    optim                     dense AdamW + fused row-wise Adagrad (``OptimConfig``)
    warmup_steps, schedule    linear warm-up then "cosine" (ContentCTR-HL) or "constant"
    patience                  early stopping: epochs without a better validation tau-b
    checkpoint_every          steps between mid-epoch checkpoints (0 = only at epoch ends)
    amp                       "auto" (bf16 autocast on CUDA, off on CPU), "bf16" or "off"
    stream                    :class:`~kuaihl_rec.data.catalog.StreamConfig`: streaming input
                              (``--set stream.enabled=true``), chunk and buffer sizes, hashed ids
    """

    model: ModelChoice = ModelChoice()
    data: WindowConfig = WindowConfig(stride=4)
    loss: Optional[str] = None
    epochs: int = 4
    batch_size: int = 48
    optim: OptimConfig = OptimConfig()
    warmup_steps: int = 30
    schedule: str = "cosine"
    patience: int = 2
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    seed: int = 0
    amp: str = "auto"
    eval_batch_size: int = 256
    max_steps: Optional[int] = None
    stream: StreamConfig = StreamConfig()

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.amp not in ("auto", "bf16", "off"):
            raise ValueError(f"amp must be 'auto', 'bf16' or 'off', got {self.amp!r}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be >= 1")

    def lr_factor(self, step: int, total: int) -> float:
        """The learning-rate multiplier at ``step`` of ``total``: linear warm-up over ``warmup_steps``, then
        constant or cosine decay to 0 at ``total``."""
        if step < self.warmup_steps:
            return (step + 1) / max(self.warmup_steps, 1)
        if self.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(total - self.warmup_steps, 1))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    @property
    def overrides(self) -> Dict[str, Any]:
        """The model's keyword overrides as a dict."""
        return dict(self.model.overrides)

    def to_dict(self) -> Dict[str, Any]:
        return configs.to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """The config :meth:`to_dict` wrote (or a pre-tree run's flat layout, see the module docstring)."""
        return configs.from_dict(cls, _upgrade(d))


# The flat layout of runs written before the config tree: key -> its path in the tree.
_FLAT_KEYS = {
    "window": "data.window",
    "stride": "data.stride",
    "min_viewers": "data.min_viewers",
    "label": "data.label",
}


def _upgrade(d: Mapping[str, Any]) -> Dict[str, Any]:
    d = dict(d)
    if isinstance(d.get("model"), str) or "model_overrides" in d:
        d["model"] = {"name": d.get("model", "content") if isinstance(d.get("model"), str) else d["model"]["name"],
                      "overrides": dict(d.pop("model_overrides", {}) or {})}
    data = dict(d.get("data", {}))
    for flat, dotted in _FLAT_KEYS.items():
        if flat in d:
            data[dotted.split(".", 1)[1]] = d.pop(flat)
    if data:
        d["data"] = {**configs.to_dict(WindowConfig(stride=4)), **data}
    return d


TRAIN_PRESETS: Dict[str, TrainConfig] = {
    # CPU default: the small content model on the default world in a few minutes.
    "small": TrainConfig(),
    # The papers' optimisation (Adam lr 5e-5, 12 epochs, global batch 48) with the paper-size model.
    "paper": TrainConfig(
        model=ModelChoice(overrides=(("preset", "paper"),)),
        data=WindowConfig(stride=1),
        epochs=12,
        batch_size=48,
        optim=OptimConfig(lr=5e-5, weight_decay=0.0),
        warmup_steps=500,
    ),
    # Seconds-long runs for tests and examples.
    "tiny": TrainConfig(data=WindowConfig(window=10, stride=2), epochs=2, batch_size=8, warmup_steps=2,
                        checkpoint_every=0, eval_batch_size=64),
}


def train_config(preset: str = "small", changes: Optional[Mapping[str, Any]] = None, **fields: Any) -> TrainConfig:
    """The preset ``preset`` with ``changes`` (dotted paths, as ``--set`` gives them) and ``fields``
    (top-level fields; a dict for a section is merged into it, ``model="name"`` names the model)
    applied, e.g. ``train_config("tiny", {"data.stride": 5}, model="deepfm", epochs=1)``.
    An unknown key is a ValueError naming it (and the section it belongs to, when it is one level down)."""
    if preset not in TRAIN_PRESETS:
        raise KeyError(f"unknown training preset {preset!r}; known: {sorted(TRAIN_PRESETS)}")
    cfg = TRAIN_PRESETS[preset]
    if "model" in fields and isinstance(fields["model"], str):  # keep the preset's overrides
        cfg = configs.set_path(cfg, "model.name", fields.pop("model"))
    cfg = configs.apply(cfg, fields)
    return configs.apply(cfg, dict(changes or {}))
