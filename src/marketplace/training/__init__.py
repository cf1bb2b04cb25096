"""The supervised training program: config, loop, checkpoints, and the hooks that show and record a run."""

from .build import build_market, build_optimizer, market_from_checkpoint, model_record
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .config import DEFAULT_LR, TrainConfig
from .hooks import Hook, JsonLog, ProgressBar, StepRate
from .loop import Trainer, accuracy, batch_indices, finished, leader_metrics, train

__all__ = [
    "Checkpoint", "CheckpointError", "DEFAULT_LR", "Hook", "JsonLog", "ProgressBar", "StepRate", "TrainConfig",
    "Trainer", "accuracy", "batch_indices", "build_market", "build_optimizer", "finished", "leader_metrics",
    "load_checkpoint", "market_from_checkpoint", "model_record", "save_checkpoint", "train",
]
