"""Image transforms: `Compose`, `ToTensor`, `Normalize`, `RandomCrop`, `RandomHorizontalFlip`, `Lambda`.

`ToTensor` turns a uint8 HxW or HxWxC image into a float32 CxHxW tensor in [0, 1]. The others take
a float CxHxW image *or a whole NxCxHxW batch*: on a batch each sample gets its own random crop or
flip, drawn at once, which is far faster than a Python call per sample. They accept prunus tensors
(and return tensors on the same device) or NumPy arrays (and return arrays).
"""

from __future__ import annotations

import numpy as np

from prunus.errors import ArgumentError, DTypeError, ShapeError, fmt_shape
from prunus.random import numpy_generator
from prunus.tensor import Tensor


def _unwrap(x, who):
    """(array, xp, rewrap) for a tensor or NumPy array; rewrap turns a result back into the same kind."""
    if isinstance(x, Tensor):
        dev = x.device
        return x.data, dev.xp, lambda a: Tensor._make(a, dev, False, None)
    if isinstance(x, np.ndarray):
        return x, np, lambda a: a
    raise DTypeError(f"{who}: expected a prunus tensor or a NumPy array, got {type(x).__name__}")


def _image_dims(a, who):
    if a.ndim not in (3, 4):
        raise ShapeError(f"{who}: expected a CxHxW image or an NxCxHxW batch, got shape {fmt_shape(a.shape)}")


def _pair(size, who):
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or any(not isinstance(s, int) or s <= 0 for s in size):
        raise ArgumentError(f"{who}: size must be a positive int or (height, width), got {size!r}")
    return tuple(size)


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self):
        return "Compose(" + ", ".join(map(repr, self.transforms)) + ")"


class Lambda:
    """Wrap a function as a transform."""

    def __init__(self, fn):
        if not callable(fn):
            raise ArgumentError(f"Lambda: expected a callable, got {type(fn).__name__}")
        self.fn = fn

    def __call__(self, x):
        return self.fn(x)


class ToTensor:
    """uint8 HxW / HxWxC (NumPy or tensor) -> float32 CxHxW tensor; uint8 is scaled to [0, 1]."""

    def __call__(self, pic):
        from prunus.backend import get_device

        a = pic.numpy() if isinstance(pic, Tensor) else np.asarray(pic)
        if a.ndim == 2:
            a = a[None]
        elif a.ndim == 3:
            a = a.transpose(2, 0, 1)
        else:
            raise ShapeError(f"ToTensor: expected an HxW or HxWxC image, got shape {fmt_shape(a.shape)}")
        if a.dtype == np.uint8:
            out = a.astype(np.float32) / np.float32(255)
        elif a.dtype.kind == "f":
            out = a.astype(np.float32)
        else:
            raise DTypeError(f"ToTensor: expected a uint8 or floating image, got {a.dtype}")
        dev = pic.device if isinstance(pic, Tensor) else get_device("cpu")
        return Tensor._make(dev.kernels.from_numpy(np.ascontiguousarray(out)), dev, False, None)

    def __repr__(self):
        return "ToTensor()"


class Normalize:
    """(x - mean[c]) / std[c] per channel, on CxHxW or NxCxHxW."""

    def __init__(self, mean, std):
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float64))
        if self.mean.ndim != 1 or self.mean.shape != self.std.shape:
            raise ShapeError(f"Normalize: mean {self.mean.shape} and std {self.std.shape} must be "
                             "1-D and of the same length")
        if np.any(self.std == 0):
            raise ArgumentError(f"Normalize: std must be nonzero, got {self.std.tolist()}")

    def __call__(self, x):
        a, xp, rewrap = _unwrap(x, "Normalize")
        _image_dims(a, "Normalize")
        c = a.shape[-3]
        if len(self.mean) not in (1, c):
            raise ShapeError(f"Normalize: {len(self.mean)} means for {c} channels (shape {fmt_shape(a.shape)})")
        if a.dtype.kind != "f":
            raise DTypeError(f"Normalize: expected a floating image, got {a.dtype}; apply ToTensor first")
        m = xp.asarray(self.mean.reshape(-1, 1, 1), dtype=a.dtype)
        s = xp.asarray(self.std.reshape(-1, 1, 1), dtype=a.dtype)
        return rewrap((a - m) / s)

    def __repr__(self):
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class RandomCrop:
    """Pad by `padding` (int, (w, h) or (left, top, right, bottom)) with `fill`, then crop a
    random `size` window; each sample of a batch gets its own window."""

    def __init__(self, size, padding=0, fill=0, generator=None):
        self.size = _pair(size, "RandomCrop")
        p = (padding,) * 4 if isinstance(padding, int) else tuple(padding)
        if len(p) == 2:
            p = (p[0], p[1], p[0], p[1])
        if len(p) != 4 or any(not isinstance(v, int) or v < 0 for v in p):
            raise ArgumentError(f"RandomCrop: padding must be non-negative ints, got {padding!r}")
        self.padding, self.fill, self.generator = p, fill, generator

    def __call__(self, x):
        a, xp, rewrap = _unwrap(x, "RandomCrop")
        _image_dims(a, "RandomCrop")
        single = a.ndim == 3
        b = a[None] if single else a
        left, top, right, bottom = self.padding
        if any(self.padding):
            b = xp.pad(b, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=self.fill)
        n, c, hp, wp = b.shape
        h, w = self.size
        if h > hp or w > wp:
            raise ShapeError(f"RandomCrop: crop {self.size} is larger than the padded image ({hp}, {wp})")
        g = numpy_generator(self.generator)
        i = g.integers(0, hp - h + 1, n)
        j = g.integers(0, wp - w + 1, n)
        windows = getattr(getattr(xp, "lib", None), "stride_tricks", None)
        windows = getattr(windows, "sliding_window_view", None)
        if windows is not None:  # a strided view of all windows, then pick one per sample: ~10x faster
            out = windows(b, (h, w), axis=(2, 3))[xp.arange(n), :, xp.asarray(i), xp.asarray(j)]
        else:
            rows = xp.asarray(i[:, None] + np.arange(h))[:, None, :, None]
            cols = xp.asarray(j[:, None] + np.arange(w))[:, None, None, :]
            out = b[xp.arange(n)[:, None, None, None], xp.arange(c)[None, :, None, None], rows, cols]
        return rewrap(out[0] if single else out)

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror left-right with probability `p`, independently per sample of a batch."""

    def __init__(self, p=0.5, generator=None):
        if not 0 <= p <= 1:
            raise ArgumentError(f"RandomHorizontalFlip: p must lie in [0, 1], got {p!r}")
        self.p, self.generator = p, generator

    def __call__(self, x):
        a, xp, rewrap = _unwrap(x, "RandomHorizontalFlip")
        _image_dims(a, "RandomHorizontalFlip")
        n = 1 if a.ndim == 3 else a.shape[0]
        flip = numpy_generator(self.generator).random(n) < self.p
        if a.ndim == 3:
            return rewrap(a[..., ::-1].copy() if flip[0] else a.copy())
        out = a.copy()
        sel = xp.asarray(np.flatnonzero(flip))
        out[sel] = a[sel][..., ::-1]
        return rewrap(out)

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"
