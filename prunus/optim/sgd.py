"""Stochastic gradient descent with momentum, dampening, Nesterov momentum and weight decay.

The same update as torch.optim.SGD: g += wd*p; buf = momentum*buf + (1-dampening)*g (the first
step copies g); g = g + momentum*buf (Nesterov) or buf; p -= lr*g.
"""

from __future__ import annotations

from prunus.creation import empty_like
from prunus.errors import ArgumentError
from prunus.ops.optim_update import sgd_update
from prunus.optim.optimizer import Optimizer


class SGD(Optimizer):
    def __init__(
        self,
        params,
        lr=1e-3,
        momentum=0.0,
        dampening=0.0,
        weight_decay=0.0,
        nesterov=False,
        *,
        maximize=False,
    ):
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _check(self, group):
        self._check_number(group, "momentum", lo=0.0)
        self._check_number(group, "dampening", lo=0.0, hi=1.0)
        self._check_number(group, "weight_decay", lo=0.0)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ArgumentError(
                f"SGD: nesterov momentum needs momentum > 0 and dampening = 0, got "
                f"momentum={group['momentum']!r}, dampening={group['dampening']!r}"
            )

    def _update(self, group):
        # One fused op per group (prunus/ops/optim_update.py): the same arithmetic in a fraction
        # of the passes and op calls that in-place tensor methods take.
        momentum = group["momentum"]
        params, grads, bufs, fresh = [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            params.append(p)
            grads.append(p.grad)
            if momentum:
                st = self.state.setdefault(p, {})
                buf = st.get("momentum_buffer")
                fresh.append(buf is None)
                if buf is None:  # filled with the first gradient by the update
                    buf = st["momentum_buffer"] = empty_like(p)
                bufs.append(buf)
        if params:
            sgd_update(
                params, grads, bufs, lr=group["lr"], momentum=momentum,
                dampening=group["dampening"], weight_decay=group["weight_decay"],
                nesterov=group["nesterov"], maximize=group["maximize"], fresh=tuple(fresh),
            )
