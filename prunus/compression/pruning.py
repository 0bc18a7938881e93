"""Magnitude pruning (Han, Pool, Tran, Dally, NIPS 2015) as a parametrization: weight = raw * mask.

`prune_magnitude` / `prune_global` register a `PruningMask` on a layer's weight (or shrink the one
already there), `dropout_rate` rescales dropout for the retraining, `pruning_report` counts what is
left, `iterative_pruning` alternates pruning and retraining. The mask is computed on the host, in
NumPy; the masked weight is an ordinary product of prunus ops, so training, compile and export see
nothing special.

Why pruned weights stay exactly zero under any optimizer: the layer uses raw * mask, whose
gradient with respect to raw is g * mask, i.e. 0 at pruned positions. An optimizer may still move
the raw value there (weight decay adds wd * raw, momentum carries old steps, Adam's L2 term too),
so the raw tensor drifts -- toward 0 under weight decay -- but the used weight is raw * 0 = 0
whatever raw is (the sign of that zero may be -0.0). Nothing needs re-masking after a step.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from prunus.autograd import no_grad
from prunus.errors import ArgumentError, DTypeError, fmt_shape
from prunus.nn.module import Module, _parametrization
from prunus.nn.utils.parametrize import register_parametrization
from prunus.tensor import Tensor

__all__ = [
    "LayerSparsity",
    "PruningMask",
    "dropout_rate",
    "format_report",
    "iterative_pruning",
    "prune_global",
    "prune_magnitude",
    "pruning_report",
    "sparsity",
]


class PruningMask(Module):
    """The parametrization of a pruned tensor: forward(w) = w * mask.

    `mask` is a buffer of 0s and 1s (1 = kept), of the weight's shape; prune_magnitude makes it
    in the weight's dtype, so Module.to() casts it along with the weight. A bool mask works as
    well (the product promotes it). Assigning `layer.weight = t` sets the raw weight to t
    (right_inverse is the identity), and the layer still uses t * mask."""

    def __init__(self, mask):
        super().__init__()
        if not isinstance(mask, Tensor):
            mask = Tensor(np.asarray(mask))
        if not (mask.dtype.is_floating_point or mask.dtype.name == "bool"):
            raise DTypeError(f"PruningMask: the mask must be a float or bool tensor of 0s and 1s, got {mask.dtype.name}")
        self.register_buffer("mask", mask)

    def forward(self, w):
        return w * self.mask

    def right_inverse(self, w):
        return w

    def extra_repr(self) -> str:
        m = self.mask
        kept = int(np.count_nonzero(m.device.kernels.to_numpy(m.data)))
        return f"shape={fmt_shape(m.shape)}, kept={kept}/{m.numel()}"


# -- targets ---------------------------------------------------------------------------------


def _label(module, path=None) -> str:
    s = f"{type(module).__name__}({module.extra_repr()})"
    return f"{path} ({s})" if path else s


def _check_target(module, name, fn, path=None) -> None:
    """`module.<name>` must be a parameter, or a parametrized tensor, of a Module."""
    if not isinstance(module, Module):
        raise DTypeError(f"{fn}: expected a Module (a layer), got {type(module).__name__}")
    d = module.__dict__
    if d["_parameters"].get(name) is None and _parametrization(d, name) is None:
        params = [k for k, v in d["_parameters"].items() if v is not None]
        raise ArgumentError(
            f"{fn}: {_label(module, path)} has no parameter {name!r} (its parameters: "
            f"{', '.join(params) or 'none'})"
        )


def _find(module, name, cls):
    """The parametrization of type `cls` on `module.<name>`, or None."""
    plist = _parametrization(module.__dict__, name)
    if plist is None:
        return None
    for m in plist:
        if isinstance(m, cls):
            return m
    return None


def _host(t: Tensor) -> np.ndarray:
    return t.device.kernels.to_numpy(t.data)


def _used(module, name) -> np.ndarray:
    """The weight the layer uses now (pruned positions 0), on the host."""
    with no_grad():
        return np.array(_host(getattr(module, name)), copy=True)


def _kept(module, name) -> np.ndarray:
    """The bool mask of the kept positions (all True for an unpruned layer)."""
    m = _find(module, name, PruningMask)
    if m is None:
        m = _find(module, name, _shared_weights_class())
    if m is None:
        return np.ones(getattr(module, name).shape, dtype=bool)
    return _host(m.mask) != 0


def _shared_weights_class():
    from prunus.compression.weight_sharing import SharedWeights  # imports this module

    return SharedWeights


def _set_mask(module, name, keep: np.ndarray) -> PruningMask:
    """Register a PruningMask with `keep`, or shrink the existing one in place (the buffer object
    stays, so a compiled graph reading it live sees the new mask)."""
    existing = _find(module, name, PruningMask)
    with no_grad():
        if existing is not None:
            m = existing.mask
            existing.mask.copy_(Tensor(keep.astype(m.dtype.np), device=m.device))
            return existing
        w = getattr(module, name)
        mask = PruningMask(Tensor(keep.astype(w.dtype.np), device=w.device))
    register_parametrization(module, name, mask)
    return mask


def _check_not_quantized(module, name, fn, path=None) -> None:
    if _find(module, name, _shared_weights_class()) is not None:
        raise ArgumentError(
            f"{fn}: {name!r} of {_label(module, path)} is quantized (weight-shared); prune before "
            "quantizing, or remove_parametrizations first"
        )


def _check_fraction(v, what, fn, lo_open=False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ArgumentError(f"{fn}: {what} must be a number, got {type(v).__name__} {v!r}")
    v = float(v)
    if not (0.0 < v <= 1.0 if lo_open else 0.0 <= v <= 1.0):
        raise ArgumentError(f"{fn}: {what} must be in {'(0, 1]' if lo_open else '[0, 1]'}, got {v!r}")
    return v


def _smallest(keys: np.ndarray, k: int) -> np.ndarray:
    """Flat positions of the k smallest keys; ties go to the lower position (a stable sort)."""
    return np.argsort(keys, kind="stable")[:k]


# -- pruning -----------------------------------------------------------------------------------


def prune_magnitude(module, name: str = "weight", quality=None, sparsity=None, std: str = "nonzero"):
    """Prune `module.<name>` by magnitude; returns the module.

    Give exactly one of
      quality   threshold = quality * std of the layer's weights, and weights with |w| < threshold
                are removed (Han et al. 2015). `std="nonzero"` (the default) takes the standard
                deviation (population, ddof=0) over the non-zero entries of the used weight, i.e.
                over the weights that survived earlier rounds, so a re-prune with the same quality
                removes more; `std="dense"` takes it over the whole tensor, zeros included.
      sparsity  the fraction of the tensor's entries that are zero afterwards: round(sparsity * n)
                entries with the smallest |w| (already pruned ones first; equal magnitudes: the
                lower flat index first, so the result is deterministic).

    Re-pruning a pruned layer only removes more: the new mask is the old one AND the new keep
    condition, and it is written into the existing mask buffer."""
    fn = "prune_magnitude"
    _check_target(module, name, fn)
    _check_not_quantized(module, name, fn)
    if (quality is None) == (sparsity is None):
        raise ArgumentError(
            f"{fn}: give exactly one of quality= or sparsity= (got quality={quality!r}, "
            f"sparsity={sparsity!r}) for {name!r} of {_label(module)}"
        )
    if std not in ("nonzero", "dense"):
        raise ArgumentError(f"{fn}: std must be 'nonzero' or 'dense', got {std!r}")
    w = _used(module, name)
    keep = _kept(module, name)
    a = np.abs(w.astype(np.float64))
    if quality is not None:
        if isinstance(quality, bool) or not isinstance(quality, (int, float, np.integer, np.floating)) \
                or not math.isfinite(quality) or quality < 0:
            raise ArgumentError(
                f"{fn}: quality must be a finite number >= 0, got {quality!r} for {name!r} of "
                f"{_label(module)}"
            )
        vals = w[w != 0] if std == "nonzero" else w.reshape(-1)
        sd = float(np.std(vals.astype(np.float64))) if vals.size else 0.0
        keep &= a >= float(quality) * sd
    else:
        s = _check_fraction(sparsity, "sparsity", fn)
        k = round(s * a.size)
        key = np.where(keep, a, -1.0).reshape(-1)  # pruned ones sort first: the mask only shrinks
        keep.reshape(-1)[_smallest(key, k)] = False
    _set_mask(module, name, keep)
    return module


def _layers(model, name):
    """(path, module) of the modules that own a parameter (or parametrized tensor) `name`."""
    out = []
    for path, m in model.named_modules():
        d = m.__dict__
        if d["_parameters"].get(name) is not None or _parametrization(d, name) is not None:
            out.append((path, m))
    return out


def _targets(modules, name, fn):
    """A model, or an iterable of modules / (module, name) pairs, as [(label, module, name)]."""
    if isinstance(modules, Module):
        found = [(p or type(m).__name__, m, name) for p, m in _layers(modules, name)]
        if not found:
            raise ArgumentError(f"{fn}: {type(modules).__name__} has no layer with a parameter {name!r}")
        return found
    out = []
    for item in modules:
        m, n = item if isinstance(item, tuple) else (item, name)
        _check_target(m, n, fn)
        out.append((None, m, n))
    if not out:
        raise ArgumentError(f"{fn}: got no layers to prune")
    return out


def prune_global(modules, sparsity, name: str = "weight"):
    """Prune several layers with one magnitude threshold, chosen so that `sparsity` of all their
    weights together are zero afterwards (layers with smaller weights lose more). `modules` is a
    model (all its layers with a parameter `name`), or an iterable of layers or (layer, name)
    pairs. Ties: earlier layer, then lower flat index first. Masks only shrink, as in
    prune_magnitude. Returns the list of pruned layers."""
    fn = "prune_global"
    s = _check_fraction(sparsity, "sparsity", fn)
    targets = _targets(modules, name, fn)
    keys, keeps = [], []
    for path, m, n in targets:
        _check_not_quantized(m, n, fn, path)
        keep = _kept(m, n)
        keeps.append(keep)
        keys.append(np.where(keep, np.abs(_used(m, n).astype(np.float64)), -1.0).reshape(-1))
    allkeys = np.concatenate(keys)
    pruned = np.zeros(allkeys.size, dtype=bool)
    pruned[_smallest(allkeys, round(s * allkeys.size))] = True
    start = 0
    for (_, m, n), keep in zip(targets, keeps):
        stop = start + keep.size
        keep &= ~pruned[start:stop].reshape(keep.shape)
        _set_mask(m, n, keep)
        start = stop
    return [m for _, m, _ in targets]


def dropout_rate(d_original, kept_fraction_now, kept_fraction_original=1.0) -> float:
    """The dropout rate for retraining a pruned layer (Han et al. 2015, eq. 2):
    D_r = D_o * sqrt(C_ir / C_io), with C the connections of the layer now and originally, given
    here as kept fractions. dropout_rate(0.5, 0.09) == 0.15."""
    fn = "dropout_rate"
    d = _check_fraction(d_original, "d_original", fn)
    now = _check_fraction(kept_fraction_now, "kept_fraction_now", fn)
    orig = _check_fraction(kept_fraction_original, "kept_fraction_original", fn, lo_open=True)
    if now > orig:
        raise ArgumentError(
            f"{fn}: kept_fraction_now ({now}) exceeds kept_fraction_original ({orig}); pruning "
            "only removes connections"
        )
    return d * math.sqrt(now / orig)


# -- reports -------------------------------------------------------------------------------------


class LayerSparsity(NamedTuple):
    """One row of pruning_report: kept counts the positions its mask keeps (the non-zero
    entries for a layer without a mask)."""

    layer: str
    shape: tuple
    weights: int
    kept: int

    @property
    def kept_fraction(self) -> float:
        return self.kept / self.weights if self.weights else 1.0


def pruning_report(model, name: str = "weight") -> list:
    """A LayerSparsity row for each layer of `model` (itself included) with a tensor `name`."""
    rows = []
    for path, m in _layers(model, name):
        has_mask = _find(m, name, PruningMask) is not None or _find(m, name, _shared_weights_class()) is not None
        kept = int(_kept(m, name).sum()) if has_mask else int(np.count_nonzero(_used(m, name)))
        shape = tuple(getattr(m, name).shape)
        rows.append(LayerSparsity(path or type(m).__name__, shape, int(np.prod(shape)), kept))
    return rows


def sparsity(module, name: str = "weight") -> float:
    """The fraction of pruned weights (1 - kept / total) over every layer of `module` (itself
    included) with a tensor `name`."""
    rows = pruning_report(module, name)
    if not rows:
        raise ArgumentError(f"sparsity: {type(module).__name__} has no layer with a parameter {name!r}")
    total = sum(r.weights for r in rows)
    return 1.0 - sum(r.kept for r in rows) / total if total else 0.0


def format_report(rows) -> str:
    """pruning_report's rows as a table, with a total line:
    layer  shape  weights  kept  % kept."""
    head = ("layer", "shape", "weights", "kept", "% kept")
    lines = [(r.layer, fmt_shape(r.shape), str(r.weights), str(r.kept), f"{100 * r.kept_fraction:.2f}")
             for r in rows]
    tw, tk = sum(r.weights for r in rows), sum(r.kept for r in rows)
    lines.append(("total", "", str(tw), str(tk), f"{100 * tk / tw:.2f}" if tw else "100.00"))
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(5)]
    fmt = [lambda s, w: s.ljust(w), lambda s, w: s.ljust(w)] + [lambda s, w: s.rjust(w)] * 3
    return "\n".join("  ".join(f(c, w) for f, c, w in zip(fmt, row, widths)).rstrip()
                     for row in [head, *lines])


# -- iterative pruning -------------------------------------------------------------------------


def iterative_pruning(model, schedule, retrain, name: str = "weight") -> list:
    """Han et al.'s loop: for each round of `schedule`, prune then call retrain(round_index).

    A round is a sparsity for every layer of `model` with a tensor `name` (pruned layer by
    layer), or a dict {layer path: sparsity} (paths as in model.named_modules()). Masks only
    shrink, so a schedule is cumulative. Returns one pruning_report per round, taken after the
    retraining. Adjust dropout inside `retrain` with dropout_rate() if the model has any."""
    if not callable(retrain):
        raise ArgumentError(f"iterative_pruning: retrain must be callable, got {type(retrain).__name__}")
    layers = dict(_layers(model, name))
    reports = []
    for i, target in enumerate(schedule):
        plan = target if isinstance(target, dict) else dict.fromkeys(layers, target)
        for path, s in plan.items():
            if path not in layers:
                raise ArgumentError(
                    f"iterative_pruning: round {i} names layer {path!r}, which has no parameter "
                    f"{name!r} (layers: {', '.join(layers) or 'none'})"
                )
            prune_magnitude(layers[path], name, sparsity=s)
        retrain(i)
        reports.append(pruning_report(model, name))
    return reports
