"""Adam and AdamW (decoupled weight decay), with AMSGrad, as torch.optim.Adam/AdamW compute them.

m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g²; p -= lr/(1-b1^t) * m / (sqrt(v/(1-b2^t)) + eps).
"""

from __future__ import annotations

from prunus.creation import zeros_like
from prunus.ops.elementwise import maximum
from prunus.optim.optimizer import Optimizer


class Adam(Optimizer):
    _decoupled = False  # AdamW: decay the weights directly instead of adding wd*p to the gradient

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        amsgrad=False,
        *,
        maximize=False,
    ):
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _check(self, group):
        self._check_number(group, "eps", lo=0.0)
        self._check_number(group, "weight_decay", lo=0.0)
        for i in (0, 1):
            self._check_number(group, "betas", lo=0.0, hi=1.0, hi_open=True, index=i)

    def _update(self, group):
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        amsgrad, maximize, decoupled = group["amsgrad"], group["maximize"], self._decoupled
        state = self.state
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            st = state.get(p)
            if st is None:
                st = state[p] = {"step": 0, "exp_avg": zeros_like(p), "exp_avg_sq": zeros_like(p)}
                if amsgrad:
                    st["max_exp_avg_sq"] = zeros_like(p)
            t = st["step"] = st["step"] + 1
            m, v = st["exp_avg"], st["exp_avg_sq"]
            if maximize:
                g = -g
            if wd:
                if decoupled:
                    p.mul_(1 - lr * wd)
                else:
                    g = g.add(p, alpha=wd)
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).add_(g * g, alpha=1 - b2)
            if amsgrad:
                vmax = st["max_exp_avg_sq"]
                v = vmax.copy_(maximum(vmax, v))
            # sqrt(v/c)+eps = (sqrt(v) + eps*c)/c with c = sqrt(1-b2^t): folding c into the step
            # size saves a pass over v (equal to PyTorch's order up to rounding)
            c = (1 - b2**t) ** 0.5
            denom = v.sqrt().add_(eps * c)
            p.add_(m / denom, alpha=-lr * c / (1 - b1**t))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p *= 1 - lr*wd before the step."""

    _decoupled = True

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=1e-2,
        amsgrad=False,
        *,
        maximize=False,
    ):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)
