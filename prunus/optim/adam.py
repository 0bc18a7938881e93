"""Adam and AdamW (decoupled weight decay), with AMSGrad, as torch.optim.Adam/AdamW compute them.

m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g²; p -= lr/(1-b1^t) * m / (sqrt(v/(1-b2^t)) + eps).
"""

from __future__ import annotations

from prunus.creation import zeros_like
from prunus.ops.optim_update import adam_update
from prunus.optim.optimizer import Optimizer, step_counter


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
        # One fused op per group (prunus/ops/optim_update.py), which also advances the 0-d step
        # tensors, so that a compiled training step replays Adam without retracing.
        amsgrad = group["amsgrad"]
        params, grads, ms, vs, vmaxs, steps = [], [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            st = self.state.get(p)
            if st is None:
                st = self.state[p] = {"step": step_counter(p), "exp_avg": zeros_like(p),
                                      "exp_avg_sq": zeros_like(p)}
                if amsgrad:
                    st["max_exp_avg_sq"] = zeros_like(p)
            params.append(p)
            grads.append(p.grad)
            ms.append(st["exp_avg"])
            vs.append(st["exp_avg_sq"])
            steps.append(st["step"])
            if amsgrad:
                vmaxs.append(st["max_exp_avg_sq"])
        if params:
            adam_update(params, grads, ms, vs, vmaxs, steps, lr=group["lr"], betas=group["betas"],
                        eps=group["eps"], weight_decay=group["weight_decay"], amsgrad=amsgrad,
                        maximize=group["maximize"], decoupled=self._decoupled)


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
