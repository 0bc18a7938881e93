"""Fused optimizer updates: one op applies a whole parameter group's SGD or Adam step in place.

A primitive for measured speed (DESIGN 1): SGD written with in-place tensor methods costs about
twelve op calls and six temporaries per parameter; here each parameter takes six passes over its
memory into one reused scratch buffer, and a captured graph sees one node per group. The
arithmetic is torch.optim.SGD's / Adam's, in its order, so results agree with it to rounding.

Adam's step counts are 0-d tensors that the op itself advances: a captured training step then
reads and bumps them on every replay, where a Python int would be a constant frozen into the
graph (and a change of Python state that forbids reusing it).
"""

from __future__ import annotations

import threading

from prunus.autograd import Op, mark_modified
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
            first = fresh and fresh[i]
            arrays_i = (params[i], grads[i], bufs[i]) if momentum else (params[i], grads[i], None)
            _in_ranges(self, arrays_i, lambda p, g, buf, first=first: _sgd(xp, p, g, buf, first, *hyper))
        return params[0]


_SPLIT = 1 << 17  # elements: a parameter this big is updated in ranges on several threads (when
# prunus holds the threads, i.e. after a convolution split: prunus/backend/threads.py)


def _in_ranges(op, arrays, update):
    """update(*arrays) for one parameter and its same-shaped state (None entries pass through),
    split into flat ranges over prunus's threads when the parameter is large."""
    p = arrays[0]
    real = [a for a in arrays if a is not None]
    if p.size >= _SPLIT and all(a.flags.c_contiguous for a in real):
        flat = [None if a is None else a.reshape(-1) for a in arrays]

        def part(lo, hi):
            update(*[None if a is None else a[lo:hi] for a in flat])

        op.device.kernels.parallel_for(part, p.size, _SPLIT // 2, if_owned=True)
    else:
        update(*arrays)


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
    mark_modified(*params, *bufs)


class AdamUpdate(Op):
    """inputs: n params, n grads, n exp_avg, n exp_avg_sq, n max_exp_avg_sq when amsgrad, then
    n steps (0-d float32 tensors, advanced by one here). Adam, or AdamW when `decoupled`."""

    differentiable = False

    @staticmethod
    def mutated_inputs(n_inputs, attrs):
        n = n_inputs // (6 if attrs["amsgrad"] else 5)
        return tuple(range(n)) + tuple(range(2 * n, n_inputs))

    def forward(self, *arrays, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled):
        xp = self.xp
        n = len(arrays) // (6 if amsgrad else 5)
        params, grads, ms, vs = (arrays[k * n : (k + 1) * n] for k in range(4))
        vmaxs = arrays[4 * n : 5 * n] if amsgrad else (None,) * n
        steps = arrays[-n:]
        for i in range(n):
            # PyTorch's (non-capturable) Adam also takes the step count to the host here
            t = float(steps[i]) + 1.0
            steps[i][()] = t
            c = (1.0 - beta2**t) ** 0.5
            step_size = -lr * c / (1.0 - beta1**t)

            def update(p, g, m, v, vmax, c=c, step_size=step_size):
                _adam(xp, p, g, m, v, vmax, beta1, beta2, eps * c, step_size, weight_decay, lr,
                      maximize, decoupled)

            _in_ranges(self, (params[i], grads[i], ms[i], vs[i], vmaxs[i]), update)
        return params[0]


def _adam(xp, p, g, m, v, vmax, b1, b2, eps_c, step_size, wd, lr, maximize, decoupled):
    """One parameter's (or range's) Adam step, in the order of prunus's unfused Adam (which matches
    torch.optim.Adam to rounding): sqrt(v/c) + eps = (sqrt(v) + eps*c) / c, with c folded into
    the step size, saves a pass over v."""
    d = g
    if maximize:
        d = xp.negative(g, out=_scratch(xp, p, 0))
    if wd:
        if decoupled:
            p *= 1 - lr * wd
        else:  # d = d + wd * p
            t = _scratch(xp, p, 1)
            xp.multiply(p, wd, out=t)
            d = xp.add(d, t, out=_scratch(xp, p, 0))
    t = _scratch(xp, p, 1)
    m *= b1
    xp.multiply(d, 1 - b1, out=t)
    m += t
    v *= b2
    xp.multiply(d, d, out=t)
    t *= 1 - b2
    v += t
    if vmax is not None:
        xp.maximum(vmax, v, out=vmax)
        v = vmax
    xp.sqrt(v, out=t)
    t += eps_c
    xp.divide(m, t, out=t)
    t *= step_size
    p += t


def adam_update(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, *, lr, betas, eps,
                weight_decay=0.0, amsgrad=False, maximize=False, decoupled=False) -> None:
    """Apply one Adam (AdamW when decoupled) step to `params` in place, advancing each step
    count and the moment buffers; see `AdamUpdate`."""
    inputs: list[Tensor] = [*params, *grads, *exp_avgs, *exp_avg_sqs,
                            *(max_exp_avg_sqs if amsgrad else ()), *steps]
    AdamUpdate.apply(*inputs, lr=lr, beta1=betas[0], beta2=betas[1], eps=eps,
                     weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
                     decoupled=decoupled)
    mark_modified(*params, *exp_avgs, *exp_avg_sqs, *(max_exp_avg_sqs if amsgrad else ()), *steps)
