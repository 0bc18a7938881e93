"""Parametrizations, as torch.nn.utils.parametrize: a module's tensor computed from an original.

After `register_parametrization(layer, "weight", p)`, `layer.weight` is p(original), recomputed on
every access (so it is differentiable and follows the original), while the original lives at
`layer.parametrizations.weight.original`. How it sits inside Module: the parametrizations are an
ordinary submodule `parametrizations` (a ModuleDict of ParametrizationLists), so parameters(),
state_dict()/load_state_dict() (PyTorch's keys: `parametrizations.weight.original`,
`parametrizations.weight.0.mask`), to(), deepcopy and optimizers need no special case; the only
hooks are in Module.__getattr__ (reached only when normal lookup fails, so Module.__call__ and
plain parameter reads are untouched) and Module.__setattr__ (assignment goes through
right_inverse). Unlike PyTorch, the module keeps its class: no per-instance subclass is injected,
so `type(layer)` stays `Linear` for repr, export and serialization.

Not supported (PyTorch has them): a right_inverse returning several tensors (original0, ...).
"""

from __future__ import annotations

from contextlib import contextmanager

from prunus.autograd import no_grad
from prunus.errors import ArgumentError, DTypeError, ShapeError, fmt_shape
from prunus.nn.module import Module, ModuleDict, ModuleList, Parameter, _parametrization
from prunus.tensor import Tensor

__all__ = [
    "ParametrizationList",
    "cached",
    "is_parametrized",
    "register_parametrization",
    "remove_all_parametrizations",
    "remove_parametrizations",
]

_cache_depth = 0  # > 0 inside `cached()`
_cache: dict = {}  # id(ParametrizationList) -> its value, while cached() is active


def _label(module) -> str:
    """A one-line name for a layer in messages: Linear(in_features=4, out_features=3, bias=True)."""
    return f"{type(module).__name__}({module.extra_repr()})"


class ParametrizationList(ModuleList):
    """The chain of parametrizations of one tensor and its `original` (a Parameter, or a buffer
    when a buffer was parametrized): the value is chain[-1](...chain[0](original))."""

    _is_parametrization_list = True  # what Module's attribute hooks look for

    def __init__(self, modules, original: Tensor, is_parameter: bool):
        super().__init__(modules)
        if is_parameter:
            self.register_parameter("original", original)
        else:
            self.register_buffer("original", original)

    def forward(self):
        x = self.original
        for m in self:
            x = m(x)
        return x

    def parametrized_value(self):
        """The parametrized tensor (what `module.<name>` returns), from the cache in `cached()`."""
        if _cache_depth:
            v = _cache.get(id(self))
            if v is None:
                v = _cache[id(self)] = self.forward()
            return v
        return self.forward()

    def assign(self, value, module, name) -> None:
        """`module.<name> = value`: the original becomes right_inverse(value), through the chain
        in reverse (as PyTorch), so that the parametrized value is `value` again where the
        parametrizations allow it (a pruning mask still zeroes its positions)."""
        if isinstance(value, Parameter) or not isinstance(value, Tensor):
            raise DTypeError(
                f"cannot assign {type(value).__name__} to {name!r} of {_label(module)}: it is "
                f"parametrized, so only a Tensor (which sets the original through right_inverse) "
                f"can be assigned; call remove_parametrizations(module, {name!r}) to replace it"
            )
        with no_grad():
            for m in reversed(list(self)):
                inverse = getattr(type(m), "right_inverse", None)
                if inverse is None:
                    raise ArgumentError(
                        f"cannot assign to {name!r} of {_label(module)}: its parametrization "
                        f"{type(m).__name__} does not implement right_inverse"
                    )
                value = inverse(m, value)
            _check_like(value, self.original, f"assigning to {name!r} of {_label(module)}",
                        "right_inverse gave")
            self.original.copy_(value)


def _check_like(t, ref, where, what) -> None:
    if not isinstance(t, Tensor):
        raise DTypeError(f"{where}: {what} a {type(t).__name__}, not a Tensor")
    if tuple(t.shape) != tuple(ref.shape):
        raise ShapeError(
            f"{where}: {what} shape {fmt_shape(t.shape)}, expected {fmt_shape(ref.shape)} "
            "(pass unsafe=True to register_parametrization to allow a change of shape)"
        )
    if t.dtype is not ref.dtype:
        raise DTypeError(
            f"{where}: {what} dtype {t.dtype.name}, expected {ref.dtype.name} "
            "(pass unsafe=True to register_parametrization to allow a change of dtype)"
        )


def register_parametrization(module, tensor_name: str, parametrization, *, unsafe: bool = False):
    """Make `module.<tensor_name>` be parametrization(original); returns module.

    `tensor_name` is a parameter or buffer of `module`, or already parametrized (then the new
    parametrization is appended to the chain: it gets the previous value). The original tensor
    object is kept (an optimizer holding it keeps working); when the parametrization has a
    `right_inverse`, the original's values become right_inverse(current value). Unless `unsafe`,
    the parametrized value must keep the tensor's shape and dtype (checked once, here)."""
    if not isinstance(module, Module):
        raise DTypeError(f"register_parametrization: expected a Module, got {type(module).__name__}")
    if not isinstance(parametrization, Module):
        raise DTypeError(
            f"register_parametrization: the parametrization must be a Module (whose forward maps "
            f"the original to the used tensor), got {type(parametrization).__name__}"
        )
    where = f"register_parametrization({_label(module)}, {tensor_name!r}, {type(parametrization).__name__})"
    plist = _parametrization(module.__dict__, tensor_name)
    if plist is not None:  # append to the chain
        if not unsafe:
            with no_grad():
                before = plist.forward()
                _check_like(parametrization(before), before, where, "the parametrization gave")
        plist.append(parametrization)
        return module
    d = module.__dict__
    is_parameter = d["_parameters"].get(tensor_name) is not None
    if not is_parameter and d["_buffers"].get(tensor_name) is None:
        raise ArgumentError(f"{where}: {_tensor_names(module)}")
    original = d["_parameters" if is_parameter else "_buffers"][tensor_name]
    with no_grad():
        inverse = getattr(type(parametrization), "right_inverse", None)
        new = inverse(parametrization, original) if inverse is not None else original
        if not unsafe:
            _check_like(new, original, where, "right_inverse gave")
            _check_like(parametrization(new), original, where, "the parametrization gave")
        if new is not original:
            if new.shape == original.shape and new.dtype is original.dtype:
                original.copy_(new)
            else:  # unsafe: the original takes the new payload, as Module.to() swaps it
                original.data, original.device = new.data, new.device
    pz = d["_modules"].get("parametrizations")
    if pz is None:
        if "parametrizations" in d or "parametrizations" in d["_parameters"] or "parametrizations" in d["_buffers"]:
            raise ArgumentError(f"{where}: the module already has an attribute 'parametrizations'")
        pz = ModuleDict()
        module.add_module("parametrizations", pz)
    elif not isinstance(pz, ModuleDict):
        raise ArgumentError(
            f"{where}: the module's submodule 'parametrizations' is a {type(pz).__name__}, not the "
            "ModuleDict that parametrizations live in"
        )
    module._drop(tensor_name)
    pz[tensor_name] = ParametrizationList([parametrization], original, is_parameter)
    return module


def _tensor_names(module) -> str:
    d = module.__dict__
    params = [k for k, v in d["_parameters"].items() if v is not None]
    buffers = [k for k, v in d["_buffers"].items() if v is not None]
    pz = [k for k in d["_modules"]["parametrizations"] if _parametrization(d, k) is not None] \
        if is_parametrized(module) else []
    return (
        f"the module has no parameter or buffer of that name (parameters: {', '.join(params) or 'none'}; "
        f"buffers: {', '.join(buffers) or 'none'}; parametrized: {', '.join(pz) or 'none'})"
    )


def is_parametrized(module, tensor_name=None) -> bool:
    """Whether `module` has parametrizations (on `tensor_name`, when given)."""
    if not isinstance(module, Module):
        return False
    pz = module.__dict__["_modules"].get("parametrizations")
    if not isinstance(pz, ModuleDict):
        return False
    if tensor_name is None:
        return any(_parametrization(module.__dict__, k) is not None for k in pz)
    return _parametrization(module.__dict__, tensor_name) is not None


def remove_parametrizations(module, tensor_name: str, leave_parametrized: bool = True):
    """Undo register_parametrization; returns module. With `leave_parametrized`, the tensor keeps
    its current parametrized value (written into the original, which stays the same object);
    otherwise it goes back to the original as it is now."""
    plist = _parametrization(module.__dict__, tensor_name) if isinstance(module, Module) else None
    if plist is None:
        raise ArgumentError(
            f"remove_parametrizations: {_label(module) if isinstance(module, Module) else module!r} "
            f"has no parametrization on {tensor_name!r}"
        )
    original = plist.original
    is_parameter = isinstance(original, Parameter)
    if leave_parametrized:
        with no_grad():
            value = plist.forward()
            if value.shape == original.shape and value.dtype is original.dtype:
                original.copy_(value)
            else:
                original.data, original.device = value.data, value.device
    pz = module.parametrizations
    del pz[tensor_name]
    if len(pz) == 0:
        del module.parametrizations
    if is_parameter:
        module.register_parameter(tensor_name, original)
    else:
        module.register_buffer(tensor_name, original)
    return module


def remove_all_parametrizations(model, leave_parametrized: bool = True):
    """remove_parametrizations for every parametrized tensor of every submodule; returns model.
    After pruning and weight sharing this gives the plain dense model a deployment runs (the
    zeros and shared values stay, as ordinary parameters)."""
    for module in list(model.modules()):
        pz = module.__dict__["_modules"].get("parametrizations")
        for name in list(pz.keys()) if pz is not None else ():
            remove_parametrizations(module, name, leave_parametrized=leave_parametrized)
    return model


@contextmanager
def cached():
    """Inside this block each parametrized tensor is computed once, at its first access, and
    reused (one value shared by every use in a forward instead of one recomputation each)."""
    global _cache_depth
    _cache_depth += 1
    try:
        yield
    finally:
        _cache_depth -= 1
        if not _cache_depth:
            _cache.clear()
