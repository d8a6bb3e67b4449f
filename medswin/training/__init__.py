"""Training: one supervised loop for every 3D model (``Trainer``), its config, losses, checkpoints, DDP."""

from .config import ConfigError, TrainConfig
from .trainer import Trainer

__all__ = ["ConfigError", "TrainConfig", "Trainer"]
