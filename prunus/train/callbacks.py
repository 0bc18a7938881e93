"""Callbacks of the fit loop: checkpoints (every N steps/epochs, keep the last K), early stopping,
LR scheduling per step or per epoch. The progress bar and TensorBoard live in their own files.

A callback implements any of `on_fit_start(trainer)`, `on_epoch_start(trainer)`,
`on_batch_end(trainer, logs)`, `on_epoch_end(trainer, logs)`, `on_fit_end(trainer)`, and
`state_dict()`/`load_state_dict()` if it has state a resumed run needs. Callbacks run in `order`
(lower first; ties keep the given order): the LR schedule first, checkpoints last, so a checkpoint
sees every other callback's update of the same step.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from prunus.errors import ArgumentError


class Callback:
    """Base class; every hook does nothing."""

    order = 50

    def on_fit_start(self, trainer) -> None: ...

    def on_epoch_start(self, trainer) -> None: ...

    def on_batch_end(self, trainer, logs: dict) -> None: ...

    def on_epoch_end(self, trainer, logs: dict) -> None: ...

    def on_fit_end(self, trainer) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


def _positive_or_none(value, who, name):
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
        raise ArgumentError(f"{who}: {name} must be a positive int or None, got {value!r}")
    return value


# -- LR schedules ---------------------------------------------------------------------------------


class LRSchedulerCallback(Callback):
    """Steps `scheduler` after every optimizer step (interval="step") or every epoch ("epoch").

    The trainer saves this scheduler's state in its checkpoints."""

    order = 0

    def __init__(self, scheduler, interval: str = "epoch"):
        if interval not in ("step", "epoch"):
            raise ArgumentError(f"LRSchedulerCallback: interval must be 'step' or 'epoch', got {interval!r}")
        self.scheduler, self.interval = scheduler, interval

    def on_batch_end(self, trainer, logs):
        if self.interval == "step":
            self.scheduler.step()

    def on_epoch_end(self, trainer, logs):
        if self.interval == "epoch":
            self.scheduler.step()


# -- early stopping -------------------------------------------------------------------------------


class EarlyStopping(Callback):
    """Stop when `monitor` (a key of the epoch logs: "val_loss", "val_acc", "loss", ...) has not
    improved by more than `min_delta` for `patience` epochs. mode "min"/"max"; "auto" means max
    for accuracies and min for everything else."""

    order = 10

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto"):
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        if mode not in ("min", "max"):
            raise ArgumentError(f"EarlyStopping: mode must be 'min', 'max' or 'auto', got {mode!r}")
        if not isinstance(patience, int) or patience < 0:
            raise ArgumentError(f"EarlyStopping: patience must be an int >= 0, got {patience!r}")
        self.monitor, self.patience, self.min_delta, self.mode = monitor, patience, abs(min_delta), mode
        self.best = math.inf if mode == "min" else -math.inf
        self.wait = 0
        self.stopped_epoch = None

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, trainer, logs):
        if self.monitor not in logs:
            raise ArgumentError(
                f"EarlyStopping: the monitored metric {self.monitor!r} is not among this epoch's "
                f"metrics ({', '.join(sorted(logs))}); pass a val_loader or monitor one of those"
            )
        value = float(logs[self.monitor])
        if self._improved(value):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = trainer.epoch
            trainer.stop_training = True

    def state_dict(self):
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state):
        self.best, self.wait = float(state["best"]), int(state["wait"])


# -- checkpoints ----------------------------------------------------------------------------------


def _checkpoint_re(prefix: str):
    return re.compile(re.escape(prefix) + r"-step(\d+)\.safetensors$")


def list_checkpoints(dirpath, prefix: str = "checkpoint") -> list[Path]:
    """The checkpoints `ModelCheckpoint` wrote to `dirpath`, oldest (lowest step) first."""
    d = Path(dirpath)
    if not d.is_dir():
        return []
    pat = _checkpoint_re(prefix)
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := pat.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(dirpath, prefix: str = "checkpoint") -> Path | None:
    """The newest checkpoint in `dirpath`, or None."""
    found = list_checkpoints(dirpath, prefix)
    return found[-1] if found else None


class ModelCheckpoint(Callback):
    """Save the trainer's full state (model, optimizer, scheduler, RNG, data position, callbacks)
    to `dirpath/<prefix>-step<step>.safetensors` every `every_n_steps` optimizer steps and/or
    every `every_n_epochs` epochs, and when fit ends (`save_on_fit_end`). Keeps the newest
    `keep_last` files (None keeps all). Writes are atomic (prunus.save), and an old file is only
    deleted after the new one is complete, so a crash never leaves fewer than one checkpoint."""

    order = 100

    def __init__(self, dirpath, every_n_steps: int | None = None, every_n_epochs: int | None = 1,
                 keep_last: int | None = 3, prefix: str = "checkpoint", save_on_fit_end: bool = True):
        who = "ModelCheckpoint"
        self.dirpath = Path(dirpath)
        self.every_n_steps = _positive_or_none(every_n_steps, who, "every_n_steps")
        self.every_n_epochs = _positive_or_none(every_n_epochs, who, "every_n_epochs")
        self.keep_last = _positive_or_none(keep_last, who, "keep_last")
        if not prefix or os.sep in prefix:
            raise ArgumentError(f"{who}: prefix must be a plain file name prefix, got {prefix!r}")
        self.prefix = prefix
        self.save_on_fit_end = save_on_fit_end
        self.last_saved: Path | None = None
        self._last_saved_key = None

    def path_for(self, step: int) -> Path:
        return self.dirpath / f"{self.prefix}-step{step:08d}.safetensors"

    def save(self, trainer) -> Path:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.path_for(trainer.step)
        trainer.save_checkpoint(path)
        self.last_saved = path
        self._last_saved_key = (trainer.step, trainer.epoch, trainer.batch_in_epoch)
        if self.keep_last is not None:
            for old in list_checkpoints(self.dirpath, self.prefix)[: -self.keep_last]:
                if old != path:
                    old.unlink(missing_ok=True)
        return path

    def on_batch_end(self, trainer, logs):
        if self.every_n_steps and trainer.step % self.every_n_steps == 0:
            self.save(trainer)

    def on_epoch_end(self, trainer, logs):
        if self.every_n_epochs and trainer.epoch % self.every_n_epochs == 0:
            self.save(trainer)

    def on_fit_end(self, trainer):
        key = (trainer.step, trainer.epoch, trainer.batch_in_epoch)
        if self.save_on_fit_end and key != self._last_saved_key and trainer.step > 0:
            self.save(trainer)
