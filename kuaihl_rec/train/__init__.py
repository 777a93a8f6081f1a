"""Training on TorchRec (DMP, fused table optimizers, TrainPipelineSparseDist, DCP checkpoints) and evaluation."""

from kuaihl_rec.train.config import TRAIN_PRESETS, TrainConfig, train_config
from kuaihl_rec.train.sharding import OptimConfig

__all__ = ["TRAIN_PRESETS", "OptimConfig", "TrainConfig", "train_config"]
