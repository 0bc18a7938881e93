"""RMSprop (Hinton's lecture 6e) with momentum and the centered variant, as torch.optim.RMSprop.

v = alpha*v + (1-alpha)*g²; centered: v - mean(g)²; p -= lr * g / (sqrt(v) + eps), or via a
momentum buffer buf = momentum*buf + g / (sqrt(v) + eps).
"""

from __future__ import annotations

from prunus.creation import zeros_like
from prunus.optim.optimizer import Optimizer, step_counter


class RMSprop(Optimizer):
    def __init__(
        self,
        params,
        lr=1e-2,
        alpha=0.99,
        eps=1e-8,
        weight_decay=0.0,
        momentum=0.0,
        centered=False,
        *,
        maximize=False,
    ):
        defaults = {
            "lr": lr,
            "alpha": alpha,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "centered": centered,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _check(self, group):
        self._check_number(group, "alpha", lo=0.0)
        self._check_number(group, "eps", lo=0.0)
        self._check_number(group, "momentum", lo=0.0)
        self._check_number(group, "weight_decay", lo=0.0)

    def _update(self, group):
        lr, alpha, eps, wd = group["lr"], group["alpha"], group["eps"], group["weight_decay"]
        momentum, centered, maximize = group["momentum"], group["centered"], group["maximize"]
        state = self.state
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            st = state.get(p)
            if st is None:
                st = state[p] = {"step": step_counter(p), "square_avg": zeros_like(p)}
                if momentum > 0:
                    st["momentum_buffer"] = zeros_like(p)
                if centered:
                    st["grad_avg"] = zeros_like(p)
            st["step"].add_(1)  # an op, not a Python int: a compiled step keeps counting
            if maximize:
                g = -g
            if wd:
                g = g.add(p, alpha=wd)
            v = st["square_avg"].mul_(alpha).add_(g * g, alpha=1 - alpha)
            if centered:
                mean = st["grad_avg"].mul_(alpha).add_(g, alpha=1 - alpha)
                avg = (v - mean * mean).sqrt()
            else:
                avg = v.sqrt()
            avg.add_(eps)
            if momentum > 0:
                buf = st["momentum_buffer"].mul_(momentum).add_(g / avg)
                p.add_(buf, alpha=-lr)
            else:
                p.add_(g / avg, alpha=-lr)
