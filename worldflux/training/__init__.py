from worldflux.training.callbacks import Callback, History, ProgressPrinter
from worldflux.training.checkpoint import latest_checkpoint
from worldflux.training.trainer import (
    LR_SCHEDULES,
    Trainer,
    TrainerConfig,
    TrainResult,
    seed_everything,
)

__all__ = [
    "LR_SCHEDULES",
    "Callback",
    "History",
    "ProgressPrinter",
    "TrainResult",
    "Trainer",
    "TrainerConfig",
    "latest_checkpoint",
    "seed_everything",
]
