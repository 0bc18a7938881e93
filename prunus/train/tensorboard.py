"""`TensorBoardLogger`: TensorBoard event files with scalars (loss, accuracy, learning rate, per
step and per epoch) and histograms of every weight and its gradient, written with tensorboardX.

tensorboardX is the optional extra `prunus[tensorboard]`, imported only when a logger is made.
"""

from __future__ import annotations

import numpy as np

from prunus.errors import ArgumentError, MissingDependencyError
from prunus.train.callbacks import Callback

INSTALL_HINT = 'pip install "prunus[tensorboard]"'


def _summary_writer_class():
    try:
        from tensorboardX import SummaryWriter
    except ImportError as e:
        raise MissingDependencyError(
            f"TensorBoard logging needs the tensorboardX package ({e}); install it with: "
            f"{INSTALL_HINT}"
        ) from None
    return SummaryWriter


def _finite(arr: np.ndarray) -> np.ndarray:
    # tensorboardX cannot bin NaN/Inf; a diverged run should still log what it can
    arr = np.asarray(arr, dtype=np.float64).reshape(-1)
    return arr if np.isfinite(arr).all() else arr[np.isfinite(arr)]


class TensorBoardLogger(Callback):
    """`TensorBoardLogger(logdir, log_every_n_steps=10, histograms=True, histogram_every_n_epochs=1)`.

    Tags: per step (every `log_every_n_steps`) "train/loss", "train/acc" (that batch) and
    "train/lr"; per epoch "epoch/loss", "epoch/acc", "epoch/val_loss", "epoch/val_acc", ...
    (x axis: the global step); histograms "weights/<param>" and "grads/<param>" every
    `histogram_every_n_epochs` epochs and at the end of fit. View with `tensorboard --logdir`.
    """

    order = 80

    def __init__(self, logdir, log_every_n_steps: int = 10, histograms: bool = True,
                 histogram_every_n_epochs: int = 1):
        self._writer_class = _summary_writer_class()  # fail now, not after an epoch of training
        for name, v in (("log_every_n_steps", log_every_n_steps),
                        ("histogram_every_n_epochs", histogram_every_n_epochs)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ArgumentError(f"TensorBoardLogger: {name} must be a positive int, got {v!r}")
        self.logdir = str(logdir)
        self.log_every_n_steps = log_every_n_steps
        self.histograms = histograms
        self.histogram_every_n_epochs = histogram_every_n_epochs
        self.writer = None
        self._hist_step = None

    def on_fit_start(self, trainer):
        if self.writer is None:
            self.writer = self._writer_class(logdir=self.logdir)

    def on_batch_end(self, trainer, logs):
        if trainer.step % self.log_every_n_steps:
            return
        w, step = self.writer, trainer.step
        w.add_scalar("train/loss", logs["loss"], step)
        for key, value in logs.items():
            if key.startswith("acc"):
                w.add_scalar(f"train/{key}", value, step)
        w.add_scalar("train/lr", trainer.optimizer.param_groups[0]["lr"], step)

    def on_epoch_end(self, trainer, logs):
        for key, value in logs.items():
            if key not in ("epoch", "step") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"epoch/{key}", value, trainer.step)
        if self.histograms and trainer.epoch % self.histogram_every_n_epochs == 0:
            self.log_histograms(trainer)
        self.writer.flush()

    def log_histograms(self, trainer) -> None:
        """Histograms of every parameter and (when present) its gradient at the current step."""
        step = trainer.step
        for name, p in trainer.model.named_parameters():
            values = _finite(p.detach().numpy())
            if values.size:
                self.writer.add_histogram(f"weights/{name}", values, step)
            if p.grad is not None:
                grads = _finite(p.grad.detach().numpy())
                if grads.size:
                    self.writer.add_histogram(f"grads/{name}", grads, step)
        self._hist_step = step

    def on_fit_end(self, trainer):
        if self.writer is None:
            return
        if self.histograms and self._hist_step != trainer.step and trainer.step > 0:
            self.log_histograms(trainer)
        self.writer.close()
        self.writer = None
