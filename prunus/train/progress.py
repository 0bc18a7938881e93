"""`ProgressBar`: a tqdm bar per epoch showing loss, accuracy and samples/s; one plain line per
epoch when the output is not a terminal (logs, CI); nothing at all when quiet."""

from __future__ import annotations

import sys
import time

from prunus.train.callbacks import Callback


def _fmt(logs: dict, prefix: str = "") -> list[str]:
    parts = []
    for key, value in logs.items():
        name = key.removeprefix(prefix) if prefix else key
        if name == "loss":
            parts.append(f"{key} {value:.4f}")
        elif name.startswith("acc"):
            parts.append(f"{key} {100 * value:.2f}%")
    return parts


class ProgressBar(Callback):
    """`ProgressBar(quiet=False, file=None, bar=None)`.

    file: where to write (sys.stderr by default). bar: True for a tqdm bar, False for one line
    per epoch, None to choose by whether `file` is a terminal. The bar's postfix shows the epoch's
    running mean loss and accuracy and the samples per second since the epoch (or resume) began.
    """

    order = 90  # after the metrics-changing callbacks, before checkpoints

    def __init__(self, quiet: bool = False, file=None, bar: bool | None = None):
        self.quiet, self._file, self._bar_mode = quiet, file, bar
        self.bar = None

    @property
    def file(self):
        return self._file if self._file is not None else sys.stderr

    def _use_bar(self) -> bool:
        if self._bar_mode is not None:
            return self._bar_mode
        isatty = getattr(self.file, "isatty", None)
        return bool(isatty and isatty())

    def _print(self, line: str) -> None:
        print(line, file=self.file, flush=True)

    def _rate(self, trainer) -> float:
        elapsed = time.perf_counter() - self._start
        done = trainer.epoch_metrics.samples - self._start_samples  # not those before a resume
        return done / elapsed if elapsed > 0 else 0.0

    def _epoch_name(self, trainer) -> str:
        total = f"/{trainer.epochs}" if trainer.epochs else ""
        return f"epoch {trainer.epoch + 1}{total}"

    def on_epoch_start(self, trainer):
        self._start = time.perf_counter()
        self._start_samples = trainer.epoch_metrics.samples
        if self.quiet or not self._use_bar():
            return
        from tqdm.auto import tqdm

        try:
            total = len(trainer.train_loader)
        except TypeError:  # an iterable without a length
            total = None
        self.bar = tqdm(total=total, initial=trainer.batch_in_epoch, desc=self._epoch_name(trainer),
                        unit="batch", file=self.file, dynamic_ncols=True, leave=True)

    def on_batch_end(self, trainer, logs):
        if self.bar is None:
            return
        running = trainer.epoch_metrics.compute()
        post = {"loss": f"{running['loss']:.4f}"}
        if "acc" in running:
            post["acc"] = f"{100 * running['acc']:.2f}%"
        post["samples/s"] = f"{self._rate(trainer):.0f}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def on_epoch_end(self, trainer, logs):
        rate = self._rate(trainer)
        if self.bar is not None:
            val = {k: v for k, v in logs.items() if k.startswith("val_")}
            if val:
                post = ", ".join(filter(None, [self.bar.postfix, *_fmt(val, "val_")]))
                self.bar.set_postfix_str(post)
            self.bar.close()
            self.bar = None
        elif not self.quiet:
            parts = [f"epoch {logs['epoch']}" + (f"/{trainer.epochs}" if trainer.epochs else ""),
                     f"step {trainer.step}"]
            parts += _fmt({k: v for k, v in logs.items() if not k.startswith("val_")})
            parts += _fmt({k: v for k, v in logs.items() if k.startswith("val_")}, "val_")
            parts += [f"{rate:.0f} samples/s", f"{logs['time']:.1f} s"]
            self._print("  ".join(parts))

    def on_fit_end(self, trainer):
        stopped_mid_epoch = trainer.batch_in_epoch > 0
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif not self.quiet and stopped_mid_epoch and trainer.epoch_metrics.samples:
            where = f"{self._epoch_name(trainer)}, batch {trainer.batch_in_epoch}"
            parts = [f"stopped at step {trainer.step} ({where})"]
            parts += _fmt(trainer.epoch_metrics.compute())
            parts.append(f"{self._rate(trainer):.0f} samples/s")
            self._print("  ".join(parts))
