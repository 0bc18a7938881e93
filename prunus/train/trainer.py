"""`Trainer` and `fit`: the training and evaluation loops, the loop's state, and checkpoints of it.

Everything around the loop (checkpoints, early stopping, LR schedules, progress bars, TensorBoard)
is a callback (callbacks.py, progress.py, tensorboard.py); the loop only calls them.

Resuming is bit-exact: a checkpoint holds the model, optimizer, scheduler, the default RNG, the
shuffle generator's state both now and at the start of the current epoch, and how many batches of
that epoch were already used. On resume the epoch's order is drawn again from the saved
epoch-start state and the used batches are skipped without being loaded.
"""

from __future__ import annotations

import copy
import itertools
import time

from prunus import serialization
from prunus.autograd import no_grad
from prunus.backend import get_device
from prunus.errors import ArgumentError
from prunus.random import default_generator
from prunus.tensor import Tensor
from prunus.train.callbacks import Callback, LRSchedulerCallback
from prunus.train.metrics import Metrics


def _cross_entropy(output, target):
    from prunus.nn.functional import cross_entropy

    return cross_entropy(output, target)


def _shuffle_generator(loader):
    """The Generator that draws `loader`'s order (None for a fixed order)."""
    from prunus.data.sampler import RandomSampler, SubsetRandomSampler

    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, (RandomSampler, SubsetRandomSampler)):
        return sampler.generator or default_generator
    return None


def _model_device(model):
    for p in model.parameters():
        return p.device
    return get_device("cpu")


class Trainer:
    """Trains `model` with `optimizer` on batches of (inputs, targets).

    `Trainer(model, optimizer, loss_fn=cross_entropy, scheduler=None, scheduler_interval="epoch",
    callbacks=(), device=None, topk=(1,), meta=None)`; then `fit(train_loader, val_loader=None,
    epochs=1, max_steps=None)` and `evaluate(loader)`. `device` is where batches are moved (the
    model's device by default; move the model before creating its optimizer). `meta` is a dict of
    plain values stored in every checkpoint (the CLI keeps its model name and settings there).

    State: `step` (optimizer steps so far), `epoch` (the epoch in progress, from 0),
    `batch_in_epoch`, `history` (one dict of metrics per finished epoch), `stop_training`.
    """

    def __init__(self, model, optimizer, loss_fn=None, scheduler=None, scheduler_interval="epoch",
                 callbacks=(), device=None, topk=(1,), meta=None):
        self.model, self.optimizer = model, optimizer
        self.loss_fn = loss_fn or _cross_entropy
        callbacks = list(callbacks)
        if scheduler is not None:
            callbacks.append(LRSchedulerCallback(scheduler, scheduler_interval))
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise ArgumentError(f"Trainer: {type(cb).__name__} is not a prunus.train.Callback")
        self.callbacks = sorted(callbacks, key=lambda cb: cb.order)  # stable: ties keep order
        self.device = get_device(device) if device is not None else _model_device(model)
        self.topk = topk
        self.meta = dict(meta or {})
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.history: list[dict] = []
        self.stop_training = False
        self.epochs = self.max_steps = None
        self.train_loader = self.val_loader = None
        self.epoch_metrics = Metrics(topk)
        self._epoch_order_state = None  # shuffle generator state before this epoch's order
        self._pending_shuffle_state = None  # from a checkpoint, applied when fit gets its loader
        self._resumed_metrics = None  # the cut epoch's metrics so far, from a checkpoint

    @property
    def scheduler(self):
        for cb in self.callbacks:
            if isinstance(cb, LRSchedulerCallback):
                return cb.scheduler
        return None

    def _call(self, hook, *args):
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def _batch(self, batch):
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise ArgumentError(
                f"Trainer: expected batches of (inputs, targets), got a {type(batch).__name__}"
                + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
            )
        return tuple(
            t.to(self.device) if isinstance(t, Tensor) and t.device != self.device else t
            for t in batch
        )

    # -- training -------------------------------------------------------------------------------

    def _done(self) -> bool:
        return self.stop_training or (self.max_steps is not None and self.step >= self.max_steps)

    def fit(self, train_loader, val_loader=None, epochs: int = 1, max_steps: int | None = None):
        """Train until `epochs` epochs are done, `max_steps` optimizer steps are taken (counted
        from the start, including steps before a resume), or a callback sets `stop_training`.
        Returns `history`. Each epoch's metrics are the train "loss"/"acc"/"acc@k" and, with a
        `val_loader`, "val_loss"/"val_acc"/..."""
        if not isinstance(epochs, int) or epochs < 0:
            raise ArgumentError(f"Trainer.fit: epochs must be an int >= 0, got {epochs!r}")
        if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 0):
            raise ArgumentError(f"Trainer.fit: max_steps must be an int >= 0 or None, got {max_steps!r}")
        self.train_loader, self.val_loader = train_loader, val_loader
        self.epochs, self.max_steps = epochs, max_steps
        self.stop_training = False
        gen = _shuffle_generator(train_loader)
        if self._pending_shuffle_state is not None and gen is not None:
            gen.set_state(self._pending_shuffle_state)
        self._pending_shuffle_state = None
        self._call("on_fit_start")
        while self.epoch < epochs and not self._done():
            if not self._train_epoch(train_loader):
                break
        self._call("on_fit_end")
        return self.history

    def _epoch_batches(self, loader):
        gen = _shuffle_generator(loader)
        skip = self.batch_in_epoch
        if skip == 0:
            self._epoch_order_state = gen.get_state() if gen is not None else None
            return iter(loader)
        if getattr(loader, "batch_sampler", None) is not None and hasattr(loader, "dataset"):
            # draw the epoch's order again from its saved start state, then put the generator
            # back: the batches already trained on are skipped as indices, never loaded
            now = gen.get_state() if gen is not None else None
            if gen is not None and self._epoch_order_state is not None:
                gen.set_state(self._epoch_order_state)
            order = list(loader.batch_sampler)
            if gen is not None:
                gen.set_state(now)
            resumed = copy.copy(loader)
            resumed.batch_sampler = order[skip:]
            return iter(resumed)
        # any other iterable: load and drop the batches already used
        return itertools.islice(iter(loader), skip, None)

    def _train_epoch(self, loader) -> bool:
        """Train on (the rest of) one epoch; False when stopped before its end."""
        batches = self._epoch_batches(loader)
        self.model.train()
        self.epoch_metrics = metrics = Metrics(self.topk)
        if self._resumed_metrics and self.batch_in_epoch:
            metrics.load_state_dict(self._resumed_metrics)
        self._resumed_metrics = None
        self._call("on_epoch_start")
        start = time.perf_counter()
        while True:
            if self._done():  # checked before fetching, so nothing is drawn past the stop
                return False
            try:
                batch = next(batches)
            except StopIteration:
                break
            x, y = self._batch(batch)
            out = self.model(x)
            loss = self.loss_fn(out, y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.step += 1
            self.batch_in_epoch += 1
            n = x.shape[0] if isinstance(x, Tensor) and x.ndim else 1
            logs = metrics.update(loss, out, y, n=n)
            logs.update(step=self.step, batch_size=n)
            self._call("on_batch_end", logs)
        logs = metrics.compute()
        logs["time"] = time.perf_counter() - start
        if self.val_loader is not None:
            logs.update({f"val_{k}": v for k, v in self.evaluate(self.val_loader).items()})
        self.epoch += 1
        self.batch_in_epoch = 0
        logs.update(epoch=self.epoch, step=self.step)
        self.history.append(logs)
        self._call("on_epoch_end", logs)
        return True

    # -- evaluation -----------------------------------------------------------------------------

    def evaluate(self, loader) -> dict:
        """Mean loss and top-k accuracies over `loader`, in eval mode and without gradients
        (the model's train/eval mode is put back afterwards)."""
        was_training = self.model.training
        self.model.eval()
        metrics = Metrics(self.topk)
        try:
            with no_grad():
                for batch in loader:
                    x, y = self._batch(batch)
                    out = self.model(x)
                    n = x.shape[0] if isinstance(x, Tensor) and x.ndim else 1
                    metrics.update(self.loss_fn(out, y), out, y, n=n)
        finally:
            self.model.train(was_training)
        return metrics.compute()

    # -- checkpoints ----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """A snapshot of everything a bit-exact resume needs (see `prunus.serialization`)."""
        gen = _shuffle_generator(self.train_loader) if self.train_loader is not None else None
        loop = {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "epoch_order_state": self._epoch_order_state,
            "shuffle_state": gen.get_state() if gen is not None else None,
            "history": self.history,
            # so an epoch cut by the checkpoint still reports its metrics over all its batches
            "epoch_metrics": self.epoch_metrics.state_dict() if self.batch_in_epoch else None,
        }
        cbs = {f"{i}:{type(cb).__name__}": cb.state_dict() for i, cb in enumerate(self.callbacks)}
        return serialization.checkpoint(self.model, self.optimizer, self.scheduler, trainer=loop,
                                        callbacks=cbs, meta=self.meta)

    def save_checkpoint(self, path) -> None:
        serialization.save(self.state_dict(), path)

    def load_checkpoint(self, ckpt) -> dict:
        """Restore a checkpoint (a path or a loaded dict) into this trainer's fresh model,
        optimizer, scheduler and callbacks; the next `fit` continues where it was taken.
        Returns its `meta`."""
        if not isinstance(ckpt, dict):
            ckpt = serialization.load(ckpt, map_location=self.device)
        if "trainer" not in ckpt:
            raise ArgumentError("Trainer.load_checkpoint: not a Trainer checkpoint (no 'trainer' entry)")
        extra = serialization.restore(ckpt, self.model, self.optimizer, self.scheduler)
        loop = extra["trainer"]
        self.step, self.epoch = int(loop["step"]), int(loop["epoch"])
        self.batch_in_epoch = int(loop["batch_in_epoch"])
        self._epoch_order_state = _host(loop.get("epoch_order_state"))
        self._pending_shuffle_state = _host(loop.get("shuffle_state"))
        self.history = list(loop.get("history") or [])
        self._resumed_metrics = loop.get("epoch_metrics")
        saved = extra.get("callbacks") or {}
        for i, cb in enumerate(self.callbacks):
            state = saved.get(f"{i}:{type(cb).__name__}")
            if state:
                cb.load_state_dict(state)
        self.meta = dict(extra.get("meta") or {})
        return self.meta


def _host(state):
    return state.numpy() if isinstance(state, Tensor) else state


def fit(model, optimizer, train_loader, val_loader=None, epochs: int = 1, loss_fn=None,
        scheduler=None, scheduler_interval: str = "epoch", callbacks=(), device=None,
        max_steps: int | None = None, topk=(1,), progress: bool = True) -> Trainer:
    """Train `model` for `epochs` epochs and return the `Trainer` (its `history` holds the metrics
    per epoch). `progress=True` adds a progress bar (a line per epoch when not on a terminal)
    unless `callbacks` has one."""
    from prunus.train.progress import ProgressBar

    callbacks = list(callbacks)
    if progress and not any(isinstance(cb, ProgressBar) for cb in callbacks):
        callbacks.append(ProgressBar())
    trainer = Trainer(model, optimizer, loss_fn=loss_fn, scheduler=scheduler,
                      scheduler_interval=scheduler_interval, callbacks=callbacks, device=device,
                      topk=topk)
    trainer.fit(train_loader, val_loader, epochs=epochs, max_steps=max_steps)
    return trainer
