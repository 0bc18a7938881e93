"""Fused optimizer updates: one op applies a whole parameter group's SGD step in place.

A primitive for measured speed (DESIGN 1): SGD written with in-place tensor methods costs about
twelve op calls and six temporaries per parameter; here each parameter takes six passes over its
memory into one reused scratch buffer, and a captured graph sees one node per group. The
arithmetic is torch.optim.SGD's, in its order, so results agree with it to rounding.
"""

from __future__ import annotations

import threading

from prunus.autograd import Op
from prunus.tensor import Tensor

_local = threading.local()


def _scratch(xp, like, slot):
    """A reused scratch array shaped like `like` (one flat buffer per thread, dtype and slot).

    Reuse matters: a fresh megabyte-sized temporary each step is a fresh mmap, and its page
    faults cost as much as the arithmetic.
    """
    cache = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    key = (xp.__name__, like.dtype.str, slot)
    buf = cache.get(key)
    if buf is None or buf.size < like.size:
        buf = cache[key] = xp.empty(max(like.size, 1024), like.dtype)
    return buf[: like.size].reshape(like.shape)


class SGDUpdate(Op):
    """inputs: n params, n grads, then n momentum buffers when momentum != 0.

    `fresh[i]` marks a buffer that starts on this step: it becomes a copy of the gradient,
    undamped, as in PyTorch.
    """

    differentiable = False

    @staticmethod
    def mutated_inputs(n_inputs, attrs):
        n = n_inputs // (3 if attrs["momentum"] else 2)
        return tuple(range(n)) + tuple(range(2 * n, n_inputs))

    def forward(self, *arrays, lr, momentum, dampening, weight_decay, nesterov, maximize, fresh):
        xp = self.xp
        n = len(arrays) // (3 if momentum else 2)
        params, grads, bufs = arrays[:n], arrays[n : 2 * n], arrays[2 * n :]
        hyper = (lr, momentum, dampening, weight_decay, nesterov, maximize)
        for i in range(n):
            p, g = params[i], grads[i]
            buf = bufs[i] if momentum else None
            arrays_i = (p, g) if buf is None else (p, g, buf)
            if p.size >= _SPLIT and all(a.flags.c_contiguous for a in arrays_i):
                flat = [a.reshape(-1) for a in arrays_i]

                def part(lo, hi, flat=flat, first=fresh and fresh[i]):
                    r = [a[lo:hi] for a in flat]
                    _sgd(xp, r[0], r[1], r[2] if momentum else None, first, *hyper)

                self.device.kernels.parallel_for(part, p.size, _SPLIT // 2, if_owned=True)
            else:
                _sgd(xp, p, g, buf, fresh and fresh[i], *hyper)
        return params[0]


_SPLIT = 1 << 17  # elements: a parameter this big is updated in ranges on several threads (when
# prunus holds the threads, i.e. after a convolution split: prunus/backend/threads.py)


def _sgd(xp, p, g, buf, fresh, lr, momentum, dampening, weight_decay, nesterov, maximize):
    """One parameter's (or one range's) update, torch.optim.SGD's arithmetic in its order."""
    d = g
    if weight_decay:  # d = (-g if maximize else g) + wd * p
        d = _scratch(xp, p, 0)
        xp.multiply(p, weight_decay, out=d)
        (xp.subtract if maximize else xp.add)(d, g, out=d)
    elif maximize:
        d = xp.negative(g, out=_scratch(xp, p, 0))
    if momentum:
        if fresh:
            xp.copyto(buf, d)
        else:
            buf *= momentum
            if dampening:
                t = _scratch(xp, p, 1)
                xp.multiply(d, 1 - dampening, out=t)
                buf += t
            else:
                buf += d
        if nesterov:  # d = d + momentum * buf
            t = _scratch(xp, p, 1)
            xp.multiply(buf, momentum, out=t)
            if d is g:
                d = _scratch(xp, p, 0)
                xp.add(g, t, out=d)
            else:
                d += t
        else:
            d = buf
    t = _scratch(xp, p, 1)
    xp.multiply(d, -lr, out=t)
    p += t


def sgd_update(params, grads, bufs, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
               nesterov=False, maximize=False, fresh=()) -> None:
    """Apply one SGD step to `params` in place (the buffers too); see `SGDUpdate`."""
    inputs: list[Tensor] = [*params, *grads, *bufs]
    SGDUpdate.apply(*inputs, lr=lr, momentum=momentum, dampening=dampening,
                    weight_decay=weight_decay, nesterov=nesterov, maximize=maximize, fresh=fresh)
