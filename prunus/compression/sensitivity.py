"""Sensitivity analysis for pruning (Han et al. 2015, Figure 5): prune one layer at a time over a
sweep of sparsities, measure the accuracy, put the layer back; then choose per-layer sparsities
for a tolerated accuracy drop or for a size budget.

`sensitivity_analysis` runs the sweep and returns a `SensitivityResult` (table, CSV, PNG plot);
`sparsities_for_drop` and `sparsities_for_budget` turn a result into {layer: sparsity} plans that
`iterative_pruning` or the Deep Compression pipeline take. Pruning here is magnitude pruning by
target sparsity (prune_magnitude); the plot needs the `prunus[plot]` extra (matplotlib).
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from prunus._fileio import atomic_write
from prunus.autograd import no_grad
from prunus.compression.pruning import (
    PruningMask,
    _check_fraction,
    _check_not_quantized,
    _find,
    _host,
    _layers,
    prune_magnitude,
)
from prunus.errors import ArgumentError, MissingDependencyError
from prunus.nn.module import Module
from prunus.nn.parametrize import is_parametrized, remove_parametrizations
from prunus.tensor import Tensor

__all__ = [
    "DEFAULT_SPARSITIES",
    "SensitivityResult",
    "evaluate_accuracy",
    "read_csv",
    "sensitivity_analysis",
    "sparsities_for_budget",
    "sparsities_for_drop",
]

DEFAULT_SPARSITIES = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
PLOT_HINT = 'pip install "prunus[plot]"'


def evaluate_accuracy(model, loader, topk=(1,)) -> float:
    """Top-1 accuracy of `model` over `loader` through prunus.train's evaluation loop (eval mode,
    no gradients; the model's mode is put back)."""
    from prunus.train.trainer import Trainer

    return float(Trainer(model, None, topk=topk).evaluate(loader)["acc"])


@dataclass
class SensitivityResult:
    """The sweep: accuracy[layer][i] is the accuracy with only `layer` pruned to sparsities[i]
    (every other layer as it was). baseline is the accuracy of the model as given; weights the
    number of entries of each layer's tensor; kept_before the entries its mask kept before the
    sweep (= weights for a layer that was not pruned)."""

    sparsities: tuple
    baseline: float
    accuracy: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    kept_before: dict = field(default_factory=dict)

    @property
    def layers(self) -> list:
        return list(self.accuracy)

    def drop(self, layer: str) -> np.ndarray:
        """baseline - accuracy at each sparsity (positive = worse)."""
        return self.baseline - np.asarray(self.accuracy[layer], dtype=np.float64)

    def rows(self) -> list:
        """(layer, weights, sparsity, accuracy, drop) per measured point."""
        return [(layer, self.weights[layer], s, a, self.baseline - a)
                for layer, accs in self.accuracy.items() for s, a in zip(self.sparsities, accs)]

    def format_table(self) -> str:
        """Accuracy (%) per layer (rows) and sparsity (columns)."""
        head = ["layer", "weights"] + [f"{100 * s:g}%" for s in self.sparsities]
        body = [[layer, str(self.weights[layer])] + [f"{100 * a:.2f}" for a in accs]
                for layer, accs in self.accuracy.items()]
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                 for r in [head, *body]]
        return "\n".join([f"baseline accuracy {100 * self.baseline:.2f}%", *lines])

    def to_csv(self, path=None) -> str:
        """The table in long form: a header `layer,weights,sparsity,accuracy,drop`, one row per
        point, and a first row for the unpruned model (layer `<baseline>`). Written atomically to
        `path` when given; the text is returned either way. read_csv() reads it back."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["layer", "weights", "sparsity", "accuracy", "drop"])
        w.writerow(["<baseline>", sum(self.weights.values()), 0.0, repr(self.baseline), 0.0])
        for layer, n, s, a, d in self.rows():
            w.writerow([layer, n, repr(float(s)), repr(float(a)), repr(float(d))])
        text = buf.getvalue()
        if path is not None:
            atomic_write(path, text.encode())
        return text

    def plot(self, path, title: str = "Pruning sensitivity") -> None:
        """Accuracy against sparsity, one curve per layer, the baseline dashed; a PNG at `path`
        (matplotlib's Agg renderer, without touching pyplot's global backend)."""
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as e:
            raise MissingDependencyError(
                f"SensitivityResult.plot needs matplotlib ({e}); install it with: {PLOT_HINT}"
            ) from None
        fig = Figure(figsize=(6.4, 4.4), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        xs = [100 * s for s in self.sparsities]
        for layer, accs in self.accuracy.items():
            ax.plot(xs, [100 * a for a in accs], marker="o", markersize=3, label=layer)
        ax.axhline(100 * self.baseline, color="gray", linestyle="--", linewidth=1, label="baseline")
        ax.set_xlabel("weights pruned away (%)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        atomic_write(path, buf.getvalue())


def read_csv(path) -> SensitivityResult:
    """A SensitivityResult from a file written by SensitivityResult.to_csv."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != ["layer", "weights", "sparsity", "accuracy", "drop"] or len(rows) < 2 \
            or rows[1][0] != "<baseline>":
        raise ArgumentError(f"read_csv: {path} is not a sensitivity table written by to_csv")
    try:
        baseline = float(rows[1][3])
        acc, weights, sparsities = {}, {}, []
        for layer, n, s, a, _ in rows[2:]:
            acc.setdefault(layer, []).append(float(a))
            weights[layer] = int(n)
            if len(acc) == 1:
                sparsities.append(float(s))
    except ValueError as e:
        raise ArgumentError(f"read_csv: {path}: a malformed row ({e})") from None
    if any(len(v) != len(sparsities) for v in acc.values()):
        raise ArgumentError(f"read_csv: {path}: the layers were not measured at the same sparsities")
    return SensitivityResult(tuple(sparsities), baseline, acc, weights, dict(weights))


# -- the sweep ------------------------------------------------------------------------------------


def _check_sparsities(sparsities) -> tuple:
    try:
        values = tuple(sparsities)
    except TypeError:
        raise ArgumentError(f"sensitivity_analysis: sparsities must be a sequence of fractions, got "
                            f"{type(sparsities).__name__}") from None
    if not values:
        raise ArgumentError("sensitivity_analysis: sparsities is empty")
    values = tuple(_check_fraction(s, "each sparsity", "sensitivity_analysis") for s in values)
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ArgumentError(f"sensitivity_analysis: sparsities must be strictly increasing, got {values}")
    return values


def _evaluator(evaluate, loader):
    if (evaluate is None) == (loader is None):
        raise ArgumentError(
            "sensitivity_analysis: give exactly one of evaluate= (a callable model -> accuracy) or "
            "loader= (a DataLoader of (inputs, targets), evaluated with prunus.train)"
        )
    if loader is not None:
        return lambda model: evaluate_accuracy(model, loader)
    if not callable(evaluate):
        raise ArgumentError(f"sensitivity_analysis: evaluate must be callable, got {type(evaluate).__name__}")
    return evaluate


def _score(fn, model, where) -> float:
    v = fn(model)
    if isinstance(v, Tensor):
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
        raise ArgumentError(f"sensitivity_analysis: evaluate returned {v!r} {where}; expected a finite number")
    return float(v)


def sensitivity_analysis(model, evaluate=None, *, loader=None, sparsities=DEFAULT_SPARSITIES,
                         layers=None, name: str = "weight", progress: bool = False) -> SensitivityResult:
    """Prune each layer alone to each of `sparsities` (magnitude pruning, prune_magnitude) and
    measure the model's accuracy, restoring the layer after every point.

    evaluate  a callable model -> accuracy (a number; higher is better), or
    loader    a DataLoader of (inputs, targets): top-1 accuracy through prunus.train's evaluation
    layers    layer paths (as in model.named_modules()) to analyse; default: every layer with a
              tensor `name` (for LeNet-5: conv1, conv2, fc1, fc2)

    A layer that is pruned already keeps its mask as the starting point (a sweep point below its
    present sparsity measures it as it is) and gets it back afterwards, bit for bit; a quantized
    layer is refused. progress=True shows a tqdm bar over the points. Returns a SensitivityResult.
    """
    if not isinstance(model, Module):
        raise ArgumentError(f"sensitivity_analysis: expected a Module, got {type(model).__name__}")
    fn = _evaluator(evaluate, loader)
    sparsities = _check_sparsities(sparsities)
    found = dict(_layers(model, name))
    if layers is None:
        plan = found
    else:
        if isinstance(layers, str):
            layers = [layers]
        missing = [p for p in layers if p not in found]
        if missing:
            raise ArgumentError(
                f"sensitivity_analysis: no layer {', '.join(map(repr, missing))} with a tensor "
                f"{name!r} (layers: {', '.join(found) or 'none'})"
            )
        plan = {p: found[p] for p in layers}
    if not plan:
        raise ArgumentError(f"sensitivity_analysis: {type(model).__name__} has no layer with a tensor {name!r}")
    for path, m in plan.items():
        _check_not_quantized(m, name, "sensitivity_analysis", path)
        if is_parametrized(m, name) and _find(m, name, PruningMask) is None:
            raise ArgumentError(
                f"sensitivity_analysis: {name!r} of layer {path!r} has a parametrization other than "
                "a PruningMask; remove it first"
            )

    baseline = _score(fn, model, "for the model as given")
    result = SensitivityResult(sparsities, baseline)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plan) * len(sparsities), desc="sensitivity", unit="point", leave=True)
    try:
        for path, m in plan.items():
            existing = _find(m, name, PruningMask)
            saved = None if existing is None else np.array(_host(existing.mask), copy=True)
            n = int(np.prod(getattr(m, name).shape))
            kept = n if saved is None else int(np.count_nonzero(saved))
            result.weights[path], result.kept_before[path] = n, kept
            accs = []
            for s in sparsities:
                if round(s * n) <= n - kept:  # no more zeros than it has: the model as it is
                    accs.append(baseline)
                else:
                    prune_magnitude(m, name, sparsity=s)
                    try:
                        accs.append(_score(fn, model, f"with layer {path!r} at sparsity {s}"))
                    finally:
                        _restore(m, name, saved)
                if bar is not None:
                    bar.set_postfix_str(f"{path} {100 * s:g}%", refresh=False)
                    bar.update(1)
            result.accuracy[path] = accs
    finally:
        if bar is not None:
            bar.close()
    return result


def _restore(module, name, saved) -> None:
    """Put the layer back as it was before prune_magnitude: no mask, or the saved one."""
    if saved is None:
        # the raw weight was never changed (pruning only writes the mask): dropping the
        # parametrization without applying it gives the original tensor back
        remove_parametrizations(module, name, leave_parametrized=False)
        return
    mask = _find(module, name, PruningMask).mask
    with no_grad():
        mask.copy_(Tensor(saved.astype(mask.dtype.np), device=mask.device))


# -- choosing sparsities -----------------------------------------------------------------------------


def _check_result(result, fn) -> None:
    if not isinstance(result, SensitivityResult):
        raise ArgumentError(f"{fn}: expected a SensitivityResult, got {type(result).__name__}")


def sparsities_for_drop(result: SensitivityResult, max_drop: float) -> dict:
    """{layer: the largest swept sparsity whose accuracy drop (baseline - accuracy, layer pruned
    alone) is <= max_drop}; 0.0 for a layer none of whose points qualify. Accuracies are the
    units of `evaluate` (fractions for the loader: max_drop=0.005 is half a point). Layers pruned
    together usually lose more than each alone: retrain, or use a smaller max_drop."""
    _check_result(result, "sparsities_for_drop")
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float, np.integer, np.floating)) \
            or not math.isfinite(max_drop) or max_drop < 0:
        raise ArgumentError(f"sparsities_for_drop: max_drop must be a finite number >= 0, got {max_drop!r}")
    out = {}
    for layer in result.layers:
        ok = [s for s, d in zip(result.sparsities, result.drop(layer)) if d <= max_drop]
        out[layer] = max(ok) if ok else 0.0
    return out


def _size(result, layer, s, bytes_per_weight) -> float:
    # a layer's kept weights at sparsity s (never more than it kept before the sweep)
    n = result.weights[layer]
    return min(n - round(s * n), result.kept_before[layer]) * bytes_per_weight


def sparsities_for_budget(result: SensitivityResult, budget_bytes: float, bytes_per_weight: float = 4.0) -> dict:
    """{layer: sparsity} whose total size (kept weights x bytes_per_weight, over the analysed
    layers) is <= budget_bytes, chosen greedily: each step moves one layer to a higher swept
    sparsity, the move with the smallest accuracy loss per byte saved (the loss measured with
    the layer pruned alone; ties: more bytes saved, then the earlier layer), until the budget is
    met. Raises ArgumentError when even every layer at the highest swept sparsity is too big."""
    fn = "sparsities_for_budget"
    _check_result(result, fn)
    for what, v in (("budget_bytes", budget_bytes), ("bytes_per_weight", bytes_per_weight)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not math.isfinite(v) or v <= 0:
            raise ArgumentError(f"{fn}: {what} must be a positive number, got {v!r}")
    sp = result.sparsities
    at = dict.fromkeys(result.layers, 0)  # index into sparsities per layer
    drops = {layer: result.drop(layer) for layer in result.layers}

    def total():
        return sum(_size(result, layer, sp[i], bytes_per_weight) for layer, i in at.items())

    smallest = sum(_size(result, layer, sp[-1], bytes_per_weight) for layer in result.layers)
    if smallest > budget_bytes:
        raise ArgumentError(
            f"{fn}: the budget of {budget_bytes:g} bytes can't be met: with every layer at the "
            f"highest swept sparsity ({sp[-1]:g}) the layers take {smallest:g} bytes; sweep higher "
            "sparsities or raise the budget"
        )
    while total() > budget_bytes:
        best = None
        for order, (layer, i) in enumerate(at.items()):
            now = _size(result, layer, sp[i], bytes_per_weight)
            for j in range(i + 1, len(sp)):
                saved = now - _size(result, layer, sp[j], bytes_per_weight)
                if saved <= 0:
                    continue
                # a negative loss (noise: accuracy went up) counts as free
                cost = max(0.0, float(drops[layer][j] - drops[layer][i])) / saved
                key = (cost, -saved, order, j)
                if best is None or key < best[0]:
                    best = (key, layer, j)
        if best is None:  # nothing left to save (cannot happen after the check above)
            break
        at[best[1]] = best[2]
    return {layer: sp[i] for layer, i in at.items()}
