"""Stochastic gradient descent with momentum, dampening, Nesterov momentum and weight decay.

The same update as torch.optim.SGD: g += wd*p; buf = momentum*buf + (1-dampening)*g (the first
step copies g); g = g + momentum*buf (Nesterov) or buf; p -= lr*g.
"""

from __future__ import annotations

from prunus.errors import ArgumentError
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
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        nesterov, maximize = group["nesterov"], group["maximize"]
        keep = 1 - group["dampening"]
        state = self.state
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            if maximize:
                g = -g
            if wd:
                g = g.add(p, alpha=wd)
            if momentum:
                st = state.get(p)
                buf = None if st is None else st.get("momentum_buffer")
                if buf is None:  # the first step starts the buffer at g, undamped (as PyTorch)
                    buf = g.clone()
                    state.setdefault(p, {})["momentum_buffer"] = buf
                else:
                    buf.mul_(momentum).add_(g, alpha=keep)
                g = g.add(buf, alpha=momentum) if nesterov else buf
            p.add_(g, alpha=-lr)
