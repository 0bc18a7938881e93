"""Adagrad (Duchi et al.) with learning-rate decay, as torch.optim.Adagrad.

s += g²; p -= lr / (1 + (t-1)*lr_decay) * g / (sqrt(s) + eps). The sums start at
initial_accumulator_value, created with the optimizer (so its state dict has them from the start).
"""

from __future__ import annotations

from prunus.creation import full_like
from prunus.optim.optimizer import Optimizer, step_counter


class Adagrad(Optimizer):
    def __init__(
        self,
        params,
        lr=1e-2,
        lr_decay=0.0,
        weight_decay=0.0,
        initial_accumulator_value=0.0,
        eps=1e-10,
        *,
        maximize=False,
    ):
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "eps": eps,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for p in group["params"]:
            self.state[p] = {"step": step_counter(p), "sum": full_like(p, group["initial_accumulator_value"])}

    def _check(self, group):
        self._check_number(group, "lr_decay", lo=0.0)
        self._check_number(group, "weight_decay", lo=0.0)
        self._check_number(group, "initial_accumulator_value", lo=0.0)
        self._check_number(group, "eps", lo=0.0)

    def _update(self, group):
        lr, lr_decay, eps, wd = group["lr"], group["lr_decay"], group["eps"], group["weight_decay"]
        maximize = group["maximize"]
        state = self.state
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            st = state[p]
            step = st["step"].add_(1)  # a tensor op: a compiled step keeps counting
            if maximize:
                g = -g
            if wd:
                g = g.add(p, alpha=wd)
            s = st["sum"]
            s.add_(g * g)
            if lr_decay:  # lr / (1 + (t - 1) * lr_decay), from the step tensor, in p's precision
                decay = (step.to(p.dtype) - 1).mul_(lr_decay).add_(1)
                p.sub_((g / s.sqrt().add_(eps)).mul_(lr / decay))
            else:
                p.add_(g / s.sqrt().add_(eps), alpha=-lr)
