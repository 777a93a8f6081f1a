"""Training configuration: a frozen dataclass with named presets."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

from kuaihl_rec.train.sharding import OptimConfig


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (saved as ``RUN/config.json``).

    model / model_overrides   registry name and keyword overrides (``create_model``)
    loss                      loss preset (``kuaihl_rec.losses.LOSS_PRESETS``); None = the model's ``default_loss``
    epochs, batch_size        ``batch_size`` is the *global* batch (split evenly over ranks)
    window, stride, min_viewers, label   windowing (MODEL_SPEC section 1)
    optim                     dense AdamW + fused row-wise Adagrad (``OptimConfig``)
    warmup_steps, schedule    linear warm-up then "cosine" (ContentCTR-HL) or "constant"
    patience                  early stopping: epochs without a better validation tau-b
    checkpoint_every          steps between mid-epoch checkpoints (0 = only at epoch ends)
    amp                       "auto" (bf16 autocast on CUDA, off on CPU), "bf16" or "off"
    """

    model: str = "content"
    model_overrides: Tuple[Tuple[str, Any], ...] = ()
    loss: Optional[str] = None
    epochs: int = 4
    batch_size: int = 48
    window: int = 20
    stride: int = 4
    min_viewers: int = 60
    label: str = "lvtr"
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

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.amp not in ("auto", "bf16", "off"):
            raise ValueError(f"amp must be 'auto', 'bf16' or 'off', got {self.amp!r}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be >= 1")

    @property
    def overrides(self) -> Dict[str, Any]:
        return dict(self.model_overrides)

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model_overrides"] = dict(self.model_overrides)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training config keys: {unknown}; known: {sorted(known)}")
        if "optim" in d and isinstance(d["optim"], dict):
            d["optim"] = OptimConfig(**d["optim"])
        if "model_overrides" in d and isinstance(d["model_overrides"], dict):
            d["model_overrides"] = tuple(sorted(d["model_overrides"].items()))
        return cls(**d)


TRAIN_PRESETS: Dict[str, TrainConfig] = {
    # CPU default: the small content model on the default world in a few minutes.
    "small": TrainConfig(),
    # The papers' optimisation (Adam lr 5e-5, 12 epochs, global batch 48) with the paper-size model.
    "paper": TrainConfig(
        model_overrides=(("preset", "paper"),),
        epochs=12,
        batch_size=48,
        stride=1,
        optim=OptimConfig(lr=5e-5, weight_decay=0.0),
        warmup_steps=500,
    ),
    # Seconds-long runs for tests and examples.
    "tiny": TrainConfig(epochs=2, batch_size=8, window=10, stride=2, warmup_steps=2, checkpoint_every=0, eval_batch_size=64),
}


def train_config(preset: str = "small", **overrides: Any) -> TrainConfig:
    if preset not in TRAIN_PRESETS:
        raise KeyError(f"unknown training preset {preset!r}; known: {sorted(TRAIN_PRESETS)}")
    base = TRAIN_PRESETS[preset]
    if "model_overrides" in overrides and isinstance(overrides["model_overrides"], dict):
        overrides["model_overrides"] = tuple(sorted(overrides["model_overrides"].items()))
    if "optim" in overrides and isinstance(overrides["optim"], dict):
        overrides["optim"] = dataclasses.replace(base.optim, **overrides["optim"])
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown training config keys: {unknown}; known: {sorted(known)}")
    return dataclasses.replace(base, **overrides)
