"""`Optimizer`: parameter groups with their hyperparameters, per-parameter state, state dicts.

The update rules live in one file per optimizer (sgd.py, adam.py, ...). Every update runs under
`prunus.no_grad()` through in-place tensor methods or a fused update op (SGD, Adam and AdamW:
prunus/ops/optim_update.py), so a captured graph sees it as ordinary ops. Step counts are 0-d
tensors, as in PyTorch, so that a captured step counts on when replayed.
"""

from __future__ import annotations

import math
import numbers

from prunus import autograd
from prunus.autograd import enable_grad, no_grad
from prunus.errors import ArgumentError, DTypeError, ShapeError, fmt_shape
from prunus.tensor import Tensor


class Optimizer:
    """Base class: `Optimizer(params, defaults)`.

    `params` is an iterable of tensors that require grad, or of dicts (parameter groups) with a
    'params' entry and per-group hyperparameters that override `defaults`. Subclasses implement
    `_update(group)` (called under no_grad for each group) and may add `_check(group)`.
    """

    def __init__(self, params, defaults: dict):
        self.defaults = defaults
        self.state: dict = {}  # parameter -> dict; Tensor hashes by identity
        self.param_groups: list[dict] = []
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):  # iteration order would differ between runs
            raise ArgumentError(f"{self._name}: parameters must be an ordered sequence, not a set")
        params = list(params)
        if not params:
            raise ArgumentError(f"{self._name}: got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        for group in params:
            self.add_param_group(group)

    @property
    def _name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        lines = [f"{self._name} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines) + "\n)"

    # -- groups ------------------------------------------------------------------------------

    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters with its own hyperparameters (defaults fill the rest)."""
        if not isinstance(param_group, dict):
            raise ArgumentError(
                f"{self._name}: a parameter group must be a dict, got {type(param_group).__name__}"
            )
        params = param_group.get("params")
        if params is None:
            raise ArgumentError(f"{self._name}: parameter group has no 'params' entry")
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise ArgumentError(f"{self._name}: parameters must be an ordered sequence, not a set")
        params = list(params)
        n = len(self.param_groups)
        if not params:
            raise ArgumentError(f"{self._name}: parameter group {n} has an empty parameter list")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            where = f"parameter {i} of group {n}"
            if not isinstance(p, Tensor):
                raise DTypeError(
                    f"{self._name}: {where} must be a prunus Tensor, got {type(p).__name__}"
                )
            # a frozen parameter (requires_grad False) is allowed, as in PyTorch: it gets no
            # gradient, so steps skip it, until it is unfrozen (model.parameters() after freezing
            # part of a model for transfer learning)
            if not p.is_leaf:
                raise ArgumentError(
                    f"{self._name}: {where} (shape {fmt_shape(p.shape)}) is not a leaf tensor "
                    "(it was computed from others); optimize the leaves"
                )
            if id(p) in seen:
                raise ArgumentError(
                    f"{self._name}: {where} (shape {fmt_shape(p.shape)}) appears more than once "
                    "in the optimizer; each parameter may belong to only one group, once"
                )
            seen.add(id(p))
        group = dict(param_group)
        group["params"] = params
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        self._check_number(group, "lr", lo=0.0)
        self._check(group)
        self.param_groups.append(group)

    def _check(self, group: dict) -> None:
        """Validate a group's hyperparameters (subclasses); raise ArgumentError naming the value."""

    def _check_number(self, group, key, lo=None, hi=None, hi_open=False, index=None):
        v = group[key] if index is None else group[key][index]
        what = key if index is None else f"{key}[{index}]"
        if not isinstance(v, numbers.Real) or isinstance(v, bool):
            raise ArgumentError(f"{self._name}: {what} must be a number, got {v!r}")
        bad = (lo is not None and v < lo) or (hi is not None and (v >= hi if hi_open else v > hi))
        if bad or math.isnan(v):
            rng = f"[{lo}, {hi})" if hi_open else f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise ArgumentError(f"{self._name}: invalid {what}={v!r}; expected a value in {rng}")

    # -- stepping ----------------------------------------------------------------------------

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradients (the default, cheapest), or zero them in place."""
        tracer = autograd._state.tracer
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none and tracer is not None:
                    tracer.cleared_grad(p)
                g = p.grad
                if g is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    if g._ctx is not None or g.requires_grad:  # from create_graph: cut it off
                        g = p.grad = g.detach()
                    with no_grad():
                        g.zero_()

    def step(self, closure=None):
        """One update of every parameter that has a gradient. `closure` re-evaluates the loss."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        tracer = autograd._state.tracer
        if tracer is not None:  # while a graph is captured (prunus/graph/capture.py)
            for group in self.param_groups:
                for p in group["params"]:
                    tracer.note_param(p)
            before = self._python_state()
            tracer.guard(("optimizer", id(self)), f"{self._name}'s hyperparameters and state",
                         self._python_state)
        with no_grad():
            for group in self.param_groups:
                self._update(group)
        if tracer is not None:
            tracer.name_state(self.state)
        if tracer is not None and self._python_state() != before:
            tracer.not_reusable(f"{self._name}.step changed its Python-side state (its first step "
                                "creates buffers)")
        return loss

    def _python_state(self):
        """Everything a step reads besides tensors: hyperparameters, which state exists, and
        non-tensor state values (none in prunus's optimizers; a subclass may keep some)."""
        groups = tuple(tuple(sorted((k, repr(v)) for k, v in g.items() if k != "params"))
                       for g in self.param_groups)
        state = tuple(
            tuple(sorted((k, None if isinstance(v, Tensor) else repr(v)) for k, v in self.state[p].items()))
            if p in self.state else None
            for g in self.param_groups for p in g["params"]
        )
        return groups, state

    def _update(self, group: dict) -> None:
        raise NotImplementedError(f"{self._name}._update")

    # -- state dicts -------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """PyTorch's layout: {'state': {index: {...}}, 'param_groups': [{..., 'params': [index]}]}.

        Parameters are numbered in group order. Like PyTorch, the state tensors are the live
        buffers (not copies): save them before the next step.
        """
        index = {}
        groups = []
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in g["params"]]
            groups.append(packed)
        state = {index[id(p)]: dict(s) for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyperparameters and state saved by `state_dict()` (tensors are copied)."""
        where = f"{self._name}.load_state_dict"
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= state_dict.keys():
            raise ArgumentError(f"{where}: expected a dict with 'state' and 'param_groups'")
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups):
            raise ArgumentError(
                f"{where}: the state dict has {len(saved)} parameter groups, the optimizer has "
                f"{len(self.param_groups)}"
            )
        by_index = {}
        for i, (s, g) in enumerate(zip(saved, self.param_groups)):
            if len(s["params"]) != len(g["params"]):
                raise ArgumentError(
                    f"{where}: parameter group {i} has {len(s['params'])} parameters in the state "
                    f"dict and {len(g['params'])} in the optimizer"
                )
            by_index.update({int(k): p for k, p in zip(s["params"], g["params"])})
        state = {}
        for k, s in state_dict["state"].items():
            p = by_index.get(int(k))
            if p is None:
                raise ArgumentError(f"{where}: state for parameter {k}, which no group lists")
            state[p] = {key: _restore(v, p, where, k, key) for key, v in s.items()}
        groups = []
        for s, g in zip(saved, self.param_groups):
            new = {**g, **{k: v for k, v in s.items() if k != "params"}}
            new["params"] = g["params"]
            groups.append(new)
        self.param_groups = groups
        self.state = state


def step_counter(p, value=0.0) -> Tensor:
    """A step count as PyTorch keeps it: a 0-d float32 tensor (on the parameter's device). A
    tensor, not a Python int, so that a captured step reads and advances it on every replay."""
    from prunus.creation import full

    return full((), float(value), dtype="float32", device=p.device)


def _restore(value, p, where, index, key):
    """A saved state value on the parameter's device and dtype, as a fresh copy."""
    if key == "step":  # a count (a 0-d tensor here and in PyTorch; older files: an int)
        v = float(value.item() if hasattr(value, "item") else value)
        if not math.isfinite(v) or v < 0 or v != int(v):
            raise ArgumentError(f"{where}: state 'step' of parameter {index} must be a count >= 0, got {v!r}")
        return step_counter(p, v)
    if isinstance(value, Tensor) or hasattr(value, "__array__"):
        if not isinstance(value, Tensor):
            value = Tensor(value)
        if value.shape != p.shape:  # every state buffer of these optimizers has the param's shape
            raise ShapeError(
                f"{where}: state {key!r} of parameter {index} has shape {fmt_shape(value.shape)}, "
                f"the parameter has shape {fmt_shape(p.shape)}"
            )
        with no_grad():
            return value.to(device=p.device, dtype=p.dtype, copy=True).detach()
    return value
