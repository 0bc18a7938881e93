"""The fit loop: `Trainer`/`fit`, metrics, callbacks (checkpoints, early stopping, LR schedules),
progress bars and TensorBoard logging. Recipes (per-model CLI defaults) are in `recipes`.

`TensorBoardLogger` needs the `prunus[tensorboard]` extra and is imported on first use.
"""

from prunus.train.callbacks import (
    Callback,
    EarlyStopping,
    LRSchedulerCallback,
    ModelCheckpoint,
    latest_checkpoint,
    list_checkpoints,
)
from prunus.train.metrics import Metrics, accuracy, topk_correct
from prunus.train.progress import ProgressBar
from prunus.train.trainer import Trainer, fit


def __getattr__(name):
    # lazily, so `import prunus.train` works without tensorboardX
    if name == "TensorBoardLogger":
        from prunus.train.tensorboard import TensorBoardLogger

        return TensorBoardLogger
    raise AttributeError(f"module 'prunus.train' has no attribute {name!r}")


__all__ = [
    "Callback",
    "EarlyStopping",
    "LRSchedulerCallback",
    "Metrics",
    "ModelCheckpoint",
    "ProgressBar",
    "TensorBoardLogger",
    "Trainer",
    "accuracy",
    "fit",
    "latest_checkpoint",
    "list_checkpoints",
    "topk_correct",
]
