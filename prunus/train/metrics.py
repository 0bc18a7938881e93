"""Training metrics: top-k accuracy of a batch and running averages over an epoch.

Metrics read the outputs' arrays directly (no autograd, no graph) on the outputs' device; each
batch costs one host sync for the counts. Losses are summed weighted by batch size, so an epoch's
mean loss is the mean over samples even when the last batch is short.
"""

from __future__ import annotations

from prunus.errors import ArgumentError, ShapeError, fmt_shape
from prunus.tensor import Tensor


def _check_topk(topk) -> tuple:
    ks = (topk,) if isinstance(topk, int) else tuple(topk)
    if not ks or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in ks):
        raise ArgumentError(f"accuracy: topk must be positive ints, got {topk!r}")
    return ks


def topk_correct(output: Tensor, target: Tensor, topk=(1,)) -> list[int]:
    """How many rows of `output` (N, C scores) have `target` (N class indices) among their k
    highest scores, for each k. A k larger than C counts every row as correct."""
    ks = _check_topk(topk)
    if output.ndim != 2 or target.ndim != 1 or output.shape[0] != target.shape[0]:
        raise ShapeError(
            f"accuracy: expected output (N, C) and target (N,), got {fmt_shape(output.shape)} and "
            f"{fmt_shape(target.shape)}"
        )
    xp = output.device.xp
    scores, labels = output.data, target.data
    if target.device is not output.device:
        labels = xp.asarray(target.device.kernels.to_numpy(labels))
    n, c = scores.shape
    counts = []
    top1 = None
    for k in ks:
        k = min(k, c)
        if k == 1:  # argmax is the common case and much cheaper than a partition
            if top1 is None:
                top1 = int((scores.argmax(axis=1) == labels).sum())
            counts.append(top1)
        elif k == c:
            counts.append(n)
        else:
            # the k largest, in no particular order: argpartition is O(C) per row
            idx = xp.argpartition(-scores, k - 1, axis=1)[:, :k]
            counts.append(int((idx == labels[:, None]).any(axis=1).sum()))
    return counts


def accuracy(output: Tensor, target: Tensor, topk=(1,)) -> list[float]:
    """The fraction of rows whose target is in the top k, for each k (as torchvision's
    reference scripts' `accuracy`, but fractions in [0, 1] rather than percentages)."""
    n = output.shape[0] if output.ndim else 0
    if n == 0:
        raise ShapeError("accuracy: empty batch")
    return [c / n for c in topk_correct(output, target, topk)]


class Mean:
    """A running mean of values weighted by counts (e.g. a batch's mean loss weighted by its size)."""

    def __init__(self):
        self.total = 0.0
        self.count = 0

    def update(self, value: float, n: int = 1) -> None:
        self.total += float(value) * n
        self.count += n

    @property
    def value(self) -> float:
        return self.total / self.count if self.count else float("nan")

    def reset(self) -> None:
        self.total, self.count = 0.0, 0


class Metrics:
    """Loss and top-k accuracy accumulated over many batches.

    `update(loss, output, target)` with the batch's mean loss (a float or a 0-d Tensor);
    `compute()` -> {"loss": ..., "acc": ..., "acc@5": ...} (top-1 is "acc"; others "acc@k").
    Pass output=None to track the loss only (e.g. a regression model).
    """

    def __init__(self, topk=(1,)):
        self.topk = _check_topk(topk)
        self.reset()

    def reset(self) -> None:
        self.loss = Mean()
        self.samples = 0
        self.correct = [0] * len(self.topk)
        self.scored = 0

    def update(self, loss, output: Tensor | None = None, target: Tensor | None = None,
               n: int | None = None) -> dict:
        """Add one batch; returns that batch's own metrics (same keys as `compute`)."""
        if isinstance(loss, Tensor):
            loss = loss.item()
        if n is None:
            n = output.shape[0] if output is not None else 1
        self.loss.update(loss, n)
        self.samples += n
        batch = {"loss": float(loss)}
        # only class scores (N, C) with class indices (N,) have an accuracy
        if output is not None and target is not None and output.ndim == 2 and target.ndim == 1:
            m = output.shape[0]
            for i, (k, c) in enumerate(zip(self.topk, topk_correct(output, target, self.topk))):
                self.correct[i] += c
                batch[self.name(k)] = c / m if m else float("nan")
            self.scored += m
        return batch

    @staticmethod
    def name(k: int) -> str:
        return "acc" if k == 1 else f"acc@{k}"

    def state_dict(self) -> dict:
        return {"loss_total": self.loss.total, "loss_count": self.loss.count,
                "samples": self.samples, "correct": list(self.correct), "scored": self.scored}

    def load_state_dict(self, state: dict) -> None:
        self.loss.total, self.loss.count = float(state["loss_total"]), int(state["loss_count"])
        self.samples, self.scored = int(state["samples"]), int(state["scored"])
        self.correct = [int(c) for c in state["correct"]]

    def compute(self) -> dict:
        out = {"loss": self.loss.value}
        if self.scored:
            for k, c in zip(self.topk, self.correct):
                out[self.name(k)] = c / self.scored
        return out
