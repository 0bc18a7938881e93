"""Trained quantization by weight sharing (Han, Mao, Dally, ICLR 2016, section 3).

`kmeans1d` clusters a layer's surviving weights into k = 2^bits centroids (vectorized, and
deterministic: the same input and seed give the same codebook bit for bit); `SharedWeights` is the
parametrization weight = codebook[indices] * mask; `quantize` / `quantize_model` put it on layers.
The gather's backward is a scatter-add, so the gradient of a centroid is the sum of the gradients
of the weights that share it (the paper's Figure 3) and any optimizer fine-tunes the codebook.
"""

from __future__ import annotations

import numpy as np

from prunus import dtypes
from prunus.autograd import no_grad
from prunus.compression.pruning import (
    PruningMask,
    _check_target,
    _find,
    _host,
    _label,
    _layers,
    _used,
)
from prunus.errors import ArgumentError, DTypeError, IndexOutOfRangeError, ShapeError, fmt_shape
from prunus.nn.conv import Conv2d
from prunus.nn.module import Module, Parameter
from prunus.nn.utils.parametrize import (
    is_parametrized,
    register_parametrization,
    remove_parametrizations,
)
from prunus.random import numpy_generator
from prunus.tensor import Tensor

__all__ = ["INITS", "SharedWeights", "kmeans1d", "quantize", "quantize_model"]

INITS = ("linear", "density", "random")
MAX_BITS = 16


# -- k-means -------------------------------------------------------------------------------------


def _ends(xs: np.ndarray, c: np.ndarray) -> np.ndarray:
    """With xs sorted and c the sorted centroids: cluster j is xs[ends[j-1]:ends[j]] (ends[-1] =
    0). Nearest-centroid assignment in 1-D cuts the sorted values at the midpoints, so k binary
    searches replace an (n, k) distance matrix; a value exactly on a midpoint goes to the lower
    centroid, as argmin |x - c| would pick it."""
    return np.concatenate([np.searchsorted(xs, (c[1:] + c[:-1]) * 0.5, side="right"), [xs.size]])


def _init(x: np.ndarray, k: int, init: str, generator) -> np.ndarray:
    if x.size == 0:
        return np.zeros(k)
    if init == "linear":  # evenly spaced over [min, max]: the paper's choice, keeps large weights
        return np.linspace(x.min(), x.max(), k)
    if init == "density":  # evenly spaced on the CDF, from its 0 to its 1 quantile
        return np.quantile(x, np.linspace(0.0, 1.0, k))
    # random (Forgy): k of the weights, without replacement while there are enough
    rng = numpy_generator(generator)
    picks = rng.permutation(x.size)[:k] if x.size >= k else np.resize(rng.permutation(x.size), k)
    return np.sort(x[picks])


def kmeans1d(x, k: int, init: str = "linear", generator=None, max_iter: int = 100):
    """Lloyd's k-means on the values of x (any shape, computed in float64).

    init: "linear" (evenly spaced between min and max), "density" (evenly spaced quantiles) or
    "random" (k distinct weights, drawn from `generator`, a prunus.Generator; the default
    generator when None). Iterates until no assignment changes, at most max_iter times; a cluster
    that loses all its points keeps its centroid. Returns (centroids (k,) ascending float64,
    labels int64 of x's shape), the labels being the nearest centroid of each value."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ArgumentError(f"kmeans1d: k must be a positive int, got {k!r}")
    if init not in INITS:
        raise ArgumentError(f"kmeans1d: init must be one of {', '.join(INITS)}, got {init!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ArgumentError(f"kmeans1d: max_iter must be an int >= 0, got {max_iter!r}")
    a = _host(x) if isinstance(x, Tensor) else np.asarray(x)
    shape = a.shape
    v = a.astype(np.float64).reshape(-1)
    if not np.all(np.isfinite(v)):
        raise ArgumentError(f"kmeans1d: the values must be finite; {int(np.sum(~np.isfinite(v)))} are not")
    k = int(k)
    c = np.sort(_init(v, k, init, generator))
    order = np.argsort(v, kind="stable")  # sorted once; each iteration is then O(k log n + n)
    xs = v[order]
    ends = _ends(xs, c)
    for _ in range(max_iter):
        counts = np.diff(ends, prepend=0)
        full = counts > 0
        sums = np.zeros(k)
        if xs.size:  # one pass over the sorted values: a sum per non-empty cluster
            sums[full] = np.add.reduceat(xs, (ends - counts)[full])
        c = np.sort(np.where(full, sums / np.maximum(counts, 1), c))  # empty: keep the centroid
        new = _ends(xs, c)
        if np.array_equal(new, ends):
            break
        ends = new
    labels = np.empty(v.size, dtype=np.int64)
    labels[order] = np.repeat(np.arange(k, dtype=np.int64), np.diff(ends, prepend=0))
    return c, labels.reshape(shape)


# -- the parametrization ---------------------------------------------------------------------------


class SharedWeights(Module):
    """Weight sharing as a parametrization: forward(w) = codebook[indices] * mask.

    codebook  a Parameter of k floats (the centroids): what trains
    indices   an int64 buffer of the weight's shape, values in [0, k)
    mask      a buffer of 0s and 1s of the weight's shape, in the codebook's dtype (ones when
              None): pruned positions are exactly 0 whatever their index and centroid

    The input w (the layer's original weight) is ignored: after quantization the layer's values
    come from the codebook only, and the original, which gets no gradient, keeps the weights as
    they were before quantizing. Without a right_inverse, assigning `layer.weight = t` is an error;
    quantize again to take new weights."""

    def __init__(self, codebook, indices, mask=None):
        super().__init__()
        if not isinstance(codebook, Tensor) or not codebook.dtype.is_floating_point or codebook.ndim != 1:
            raise DTypeError(
                f"SharedWeights: the codebook must be a 1-d floating-point tensor, got "
                f"{_describe(codebook)}"
            )
        if not isinstance(indices, Tensor) or indices.dtype.category != 1:
            raise DTypeError(f"SharedWeights: indices must be an integer tensor, got {_describe(indices)}")
        k = codebook.shape[0]
        idx = _host(indices)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= k):
            bad = int(idx.min()) if int(idx.min()) < 0 else int(idx.max())
            raise IndexOutOfRangeError(
                f"SharedWeights: index {bad} is out of range for a codebook of {k} centroids "
                f"(indices of shape {fmt_shape(indices.shape)})"
            )
        if mask is None:
            mask = Tensor(np.ones(indices.shape, dtype=codebook.dtype.np), device=codebook.device)
        elif not isinstance(mask, Tensor):
            raise DTypeError(f"SharedWeights: mask must be a Tensor or None, got {type(mask).__name__}")
        if tuple(mask.shape) != tuple(indices.shape):
            raise ShapeError(
                f"SharedWeights: the mask of shape {fmt_shape(mask.shape)} does not match the "
                f"indices of shape {fmt_shape(indices.shape)}"
            )
        self.codebook = codebook if isinstance(codebook, Parameter) else Parameter(codebook)
        self.register_buffer("indices", indices if indices.dtype is dtypes.int64 else indices.to(dtypes.int64))
        with no_grad():
            self.register_buffer("mask", mask.to(codebook.dtype) if mask.dtype is not codebook.dtype else mask)

    @property
    def bits(self) -> int:
        """Bits per index: ceil(log2(k))."""
        return max(1, int(np.ceil(np.log2(self.codebook.shape[0]))))

    def forward(self, w):
        # the gather's backward scatter-adds: d codebook[j] = sum of the gradients at indices == j
        return self.codebook[self.indices] * self.mask

    def extra_repr(self) -> str:
        return f"k={self.codebook.shape[0]}, shape={fmt_shape(self.indices.shape)}"


def _describe(t) -> str:
    if isinstance(t, Tensor):
        return f"a {t.dtype.name} tensor of shape {fmt_shape(t.shape)}"
    return f"a {type(t).__name__}"


# -- quantizing layers ------------------------------------------------------------------------------


def _check_bits(bits, where) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= MAX_BITS:
        raise ArgumentError(f"{where}: bits must be an int from 1 to {MAX_BITS}, got {bits!r}")
    return int(bits)


def quantize(module, name: str = "weight", bits: int = 5, init: str = "linear", generator=None,
             mask=None, max_iter: int = 100) -> SharedWeights:
    """Share the weights of `module.<name>`: k-means with k = 2^bits over the surviving weights,
    then a SharedWeights parametrization (returned). The paper uses 8 bits for convolutions and 5
    for fully-connected layers (6 for LeNet-300-100's).

    The surviving weights are those the layer's PruningMask keeps (all of them for an unpruned
    layer) or those of an explicit `mask` (0/1 or bool, the weight's shape). The layer's existing
    parametrizations are removed first (keeping their value), so a pruned layer ends with the one
    parametrization codebook[indices] * mask. Pruned positions get index 0; the mask zeroes them."""
    where = f"quantize({name!r})"
    _check_target(module, name, where)
    where = f"quantize({_label(module)}, {name!r})"
    bits = _check_bits(bits, where)
    if init not in INITS:
        raise ArgumentError(f"{where}: init must be one of {', '.join(INITS)}, got {init!r}")
    if _find(module, name, SharedWeights) is not None:
        raise ArgumentError(
            f"{where}: {name!r} is quantized already; call remove_parametrizations(module, {name!r}) "
            "to quantize it again"
        )
    w = _used(module, name)
    if mask is not None:
        m = _host(mask) if isinstance(mask, Tensor) else np.asarray(mask)
        if m.shape != w.shape:
            raise ShapeError(
                f"{where}: the mask of shape {fmt_shape(m.shape)} does not match the weight of "
                f"shape {fmt_shape(w.shape)}"
            )
        keep = m != 0
    else:
        pm = _find(module, name, PruningMask)
        keep = _host(pm.mask) != 0 if pm is not None else np.ones(w.shape, dtype=bool)
    centroids, labels = kmeans1d(w[keep], 2**bits, init=init, generator=generator, max_iter=max_iter)
    indices = np.zeros(w.shape, dtype=np.int64)
    indices[keep] = labels
    t = getattr(module, name)
    dev, dt = t.device, t.dtype
    sw = SharedWeights(
        Parameter(Tensor(centroids.astype(dt.np), device=dev)),
        Tensor(indices, device=dev),
        Tensor(keep.astype(dt.np), device=dev),
    )
    if is_parametrized(module, name):
        remove_parametrizations(module, name, leave_parametrized=True)
    register_parametrization(module, name, sw)
    return sw


def quantize_model(model, bits=None, init: str = "linear", generator=None, name: str = "weight") -> dict:
    """quantize() every layer of `model` with a tensor `name`; returns {layer path: SharedWeights}.

    bits: None for the paper's choice (8 bits for Conv2d, 5 for the other layers), an int for all
    layers, or a dict {layer path: bits} to quantize only the layers it names."""
    layers = dict(_layers(model, name))
    if isinstance(bits, dict):
        unknown = [p for p in bits if p not in layers]
        if unknown:
            raise ArgumentError(
                f"quantize_model: no layer {', '.join(map(repr, unknown))} with a parameter {name!r} "
                f"(layers: {', '.join(layers) or 'none'})"
            )
        plan = dict(bits)
    else:
        plan = {p: (bits if bits is not None else 8 if isinstance(m, Conv2d) else 5) for p, m in layers.items()}
    return {p: quantize(layers[p], name, b, init=init, generator=generator) for p, b in plan.items()}
