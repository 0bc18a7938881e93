"""`Module` (the base of every layer: parameters, buffers, submodules, modes, hooks, state dicts),
`Parameter`, and the containers Sequential, ModuleList and ModuleDict, in PyTorch's names."""

from __future__ import annotations

from collections import OrderedDict

from prunus import autograd as _autograd
from prunus import dtypes
from prunus.autograd import no_grad
from prunus.backend import get_device
from prunus.errors import ArgumentError, DTypeError, ShapeError, StateDictError, fmt_shape
from prunus.tensor import Tensor


class Parameter(Tensor):
    """A tensor that is a module's learnable parameter: a leaf that requires grad (by default),
    registered by Module when assigned as an attribute. `Parameter(t)` shares `t`'s memory.

    A subclass with no slots of its own, so it is a Tensor everywhere (ops read `.data`)."""

    __slots__ = ()

    def __init__(self, data=None, requires_grad: bool = True):
        if data is None:
            data = Tensor._make(get_device("cpu").xp.empty((0,), dtype=dtypes.get_default_dtype().np),
                                get_device("cpu"), False, None)
        elif not isinstance(data, Tensor):
            data = Tensor(data)
        self._init_leaf(data.data, data.device, requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    def __deepcopy__(self, memo):
        p = Parameter(Tensor._make(self.data.copy(), self.device, False, None), self.requires_grad)
        if self.grad is not None:
            p.grad = self.grad.clone().detach()
        memo[id(self)] = p
        return p


class RemovableHandle:
    """Returned by the register_*_hook methods; `remove()` takes the hook off again."""

    _next = 0

    def __init__(self, hooks: dict):
        self._hooks = hooks
        self.id = RemovableHandle._next
        RemovableHandle._next += 1

    def remove(self) -> None:
        self._hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _parametrization(d: dict, name):
    """The ParametrizationList (prunus/nn/utils/parametrize.py) computing tensor `name` of the module
    whose __dict__ is `d`, or None. They live in the submodule `parametrizations`, so
    parameters(), state_dict(), to() and optimizers see them as ordinary submodules."""
    modules = d.get("_modules")
    pz = modules.get("parametrizations") if modules else None
    if pz is None:
        return None
    plist = pz.__dict__["_modules"].get(name)
    return plist if getattr(type(plist), "_is_parametrization_list", False) else None


class Module:
    """Base class of layers and models. Subclasses set attributes in `__init__` (Parameters,
    Modules and tensors registered as buffers) and define `forward`; call the module, not
    `forward`, so hooks run."""

    training: bool

    def __init__(self):
        d = self.__dict__  # plain dict writes: __setattr__ below needs these to exist
        d["training"] = True
        d["_parameters"] = OrderedDict()
        d["_buffers"] = OrderedDict()
        d["_non_persistent"] = set()
        d["_modules"] = OrderedDict()
        d["_forward_pre_hooks"] = OrderedDict()
        d["_forward_hooks"] = OrderedDict()

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        d = self.__dict__
        if _autograd._state.tracer is not None:  # a captured graph holds for this train/eval mode only
            _autograd._state.tracer.guard(("training", id(self)), f"{type(self).__name__}.training",
                                    lambda m=self: m.training)
            _autograd._state.tracer.name_tensors(self)
        if not d["_forward_pre_hooks"] and not d["_forward_hooks"]:
            return self.forward(*args, **kwargs)
        for hook in list(d["_forward_pre_hooks"].values()):
            r = hook(self, args)
            if r is not None:
                args = r if isinstance(r, tuple) else (r,)
        out = self.forward(*args, **kwargs)
        for hook in list(d["_forward_hooks"].values()):
            r = hook(self, args, out)
            if r is not None:
                out = r
        return out

    # -- registration -----------------------------------------------------------------------

    def __setattr__(self, name, value):
        d = self.__dict__
        if "_parameters" not in d:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() is called (call super().__init__())"
            )
        params, modules, buffers = d["_parameters"], d["_modules"], d["_buffers"]
        plist = _parametrization(d, name)
        if plist is not None:  # a parametrized tensor: assigning sets its original (right_inverse)
            plist.assign(value, self, name)
        elif isinstance(value, Parameter):
            self._drop(name, keep="_parameters")
            params[name] = value
        elif isinstance(value, Module):
            self._drop(name, keep="_modules")
            modules[name] = value
        elif name in params:
            if value is not None:
                raise DTypeError(
                    f"cannot assign {type(value).__name__} as parameter {name!r} of "
                    f"{type(self).__name__} (a Parameter or None is required)"
                )
            params[name] = None
        elif name in modules:
            if value is not None:
                raise DTypeError(f"cannot assign {type(value).__name__} as submodule {name!r}")
            modules[name] = None
        elif name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise DTypeError(f"cannot assign {type(value).__name__} as buffer {name!r}")
            buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def _drop(self, name, keep=None):
        """Forget `name` everywhere but in registry `keep` (re-assignment keeps its place)."""
        d = self.__dict__
        d.pop(name, None)
        for k in ("_parameters", "_modules", "_buffers"):
            if k != keep:
                d[k].pop(name, None)
        d["_non_persistent"].discard(name)

    def __getattr__(self, name):  # only reached when normal lookup fails
        d = self.__dict__
        for k in ("_parameters", "_buffers", "_modules"):
            reg = d.get(k)
            if reg is not None and name in reg:
                return reg[name]
        plist = _parametrization(d, name)
        if plist is not None:  # nn.parametrize: computed from the original on each access
            return plist.parametrized_value()
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        d = self.__dict__
        for k in ("_parameters", "_buffers", "_modules"):
            if name in d[k]:
                del d[k][name]
                d["_non_persistent"].discard(name)
                return
        object.__delattr__(self, name)

    def _check_name(self, name, what):
        if not isinstance(name, str) or not name or "." in name:
            raise ArgumentError(f"{what} name must be a non-empty string without '.', got {name!r}")
        if name in self.__dict__ and name not in ("training",):
            raise ArgumentError(f"attribute {name!r} already exists on {type(self).__name__}")
        if _parametrization(self.__dict__, name) is not None:  # it would hide the parametrization
            raise ArgumentError(
                f"{name!r} of {type(self).__name__} is parametrized; call "
                f"remove_parametrizations(module, {name!r}) before registering another {what}"
            )

    def register_parameter(self, name: str, param) -> None:
        self._check_name(name, "parameter")
        if param is not None and not isinstance(param, Parameter):
            raise DTypeError(f"register_parameter: {name!r} must be a Parameter or None, got {type(param).__name__}")
        self._drop(name, keep="_parameters")
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        self._check_name(name, "buffer")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise DTypeError(f"register_buffer: {name!r} must be a Tensor or None, got {type(tensor).__name__}")
        self._drop(name, keep="_buffers")
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent.add(name)

    def add_module(self, name: str, module) -> None:
        self._check_name(name, "module")
        if module is not None and not isinstance(module, Module):
            raise DTypeError(f"add_module: {name!r} must be a Module or None, got {type(module).__name__}")
        self._drop(name, keep="_modules")
        self._modules[name] = module

    register_module = add_module

    # -- traversal ---------------------------------------------------------------------------

    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named(self, registry, prefix, recurse, remove_duplicate=True):
        mods = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        seen = set()
        for mp, m in mods:
            for name, t in m.__dict__[registry].items():
                if t is None or (remove_duplicate and id(t) in seen):
                    continue
                seen.add(id(t))
                yield (f"{mp}.{name}" if mp else name), t

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """(name, Parameter) pairs; a parameter shared by two layers is listed once."""
        return self._named("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        return self._named("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    # -- modes and bulk operations ------------------------------------------------------------

    def train(self, mode: bool = True):
        if not isinstance(mode, bool):
            raise ArgumentError(f"train(mode): mode must be a bool, got {type(mode).__name__}")
        for m in self.modules():
            m.__dict__["training"] = mode
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none and _autograd._state.tracer is not None:
                _autograd._state.tracer.cleared_grad(p)
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                with no_grad():
                    p.grad.zero_()

    def apply(self, fn):
        """Call fn(m) on every submodule (children first) and on self; returns self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def to(self, *args, dtype=None, device=None):
        """Move and/or cast parameters and buffers in place: the Parameter objects stay the same
        (an optimizer holding them keeps working); their `.data` (and `.grad`) are replaced.
        Only floating-point tensors change dtype, as in PyTorch."""
        for a in args:
            if isinstance(a, (dtypes.DType, type)) or (isinstance(a, str) and a.removeprefix("prunus.") in dtypes._BY_NAME):
                dtype = a
            else:
                device = a
        dt = dtypes.as_dtype(dtype) if dtype is not None else None
        if dt is not None and not dt.is_floating_point:
            raise DTypeError(f"Module.to: dtype must be floating point, got {dt.name}")
        dev = get_device(device) if device is not None else None

        def convert(t):
            with no_grad():
                out = t.to(device=dev) if dev is not None else t
                if dt is not None and t.dtype.is_floating_point:
                    out = out.to(dt)
            return out

        for m in self.modules():
            for reg in ("_parameters", "_buffers"):
                for t in m.__dict__[reg].values():
                    if t is None:
                        continue
                    new = convert(t)
                    if new is not t:  # swap the payload, keep the object (and its identity)
                        t.data, t.device = new.data, new.device
                    if t.grad is not None:
                        t.grad = convert(t.grad)
        return self

    def double(self):
        return self.to(dtypes.float64)

    def float(self):
        return self.to(dtypes.float32)

    def half(self):
        return self.to(dtypes.float16)

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index: int = 0):
        return self.to(f"cuda:{index}")

    # -- state dicts ------------------------------------------------------------------------

    def state_dict(self, prefix: str = "", keep_vars: bool = False) -> OrderedDict:
        """Parameters and persistent buffers by dotted name, as tensors without history that
        share memory with the module (`keep_vars=True` gives the Parameters themselves)."""
        out = OrderedDict()
        for mp, m in self.named_modules(prefix=prefix.rstrip(".")):
            d = m.__dict__
            for name, p in d["_parameters"].items():
                if p is not None:
                    out[f"{mp}.{name}" if mp else name] = p if keep_vars else p.detach()
            for name, b in d["_buffers"].items():
                if b is not None and name not in d["_non_persistent"]:
                    out[f"{mp}.{name}" if mp else name] = b if keep_vars else b.detach()
        return out

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy values into this module's parameters and buffers (in place, any memory layout).

        A mis-shaped key is always an error; missing and unexpected keys are errors when
        `strict`. Every problem is listed in one StateDictError; nothing is copied then.
        Returns (missing_keys, unexpected_keys)."""
        own = self.state_dict(keep_vars=True)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        bad_shape = []
        for k, t in own.items():
            if k in state_dict:
                shape = tuple(getattr(state_dict[k], "shape", ()))
                if shape != tuple(t.shape):
                    bad_shape.append(f"{k}: expected shape {fmt_shape(t.shape)}, got {fmt_shape(shape)}")
        problems = []
        if strict and missing:
            problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if bad_shape:
            problems.append(f"mis-shaped keys ({len(bad_shape)}): " + "; ".join(bad_shape))
        if problems:
            raise StateDictError(
                f"load_state_dict into {type(self).__name__}: " + "\n  ".join(["found problems:"] + problems)
            )
        with no_grad():
            for k, t in own.items():
                if k in state_dict:
                    v = state_dict[k]
                    if not isinstance(v, Tensor):
                        v = Tensor(v, dtype=t.dtype, device=t.device)
                    t.copy_(v)
        return missing, unexpected

    # -- hooks -------------------------------------------------------------------------------

    def register_forward_pre_hook(self, hook) -> RemovableHandle:
        """hook(module, args) before forward; a returned value replaces args."""
        h = RemovableHandle(self._forward_pre_hooks)
        self._forward_pre_hooks[h.id] = hook
        return h

    def register_forward_hook(self, hook) -> RemovableHandle:
        """hook(module, args, output) after forward; a returned value replaces the output."""
        h = RemovableHandle(self._forward_hooks)
        self._forward_hooks[h.id] = hook
        return h

    # -- printing ----------------------------------------------------------------------------

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"({name}): {sub}")
        head = type(self).__name__ + "(" + self.extra_repr()
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"

    def __dir__(self):
        d = self.__dict__
        return sorted(set(super().__dir__()) | set(d["_parameters"]) | set(d["_buffers"]) | set(d["_modules"]))


def check_input(layer: Module, x, ndims, what: str, dim=None, size=None) -> None:
    """Raise a ShapeError naming the layer when x's number of dimensions is not in `ndims`, or
    dimension `dim` is not `size`."""
    if not isinstance(x, Tensor):
        raise DTypeError(f"{layer!r}: expected a Tensor input, got {type(x).__name__}")
    if ndims is not None and x.ndim not in ndims:
        raise ShapeError(f"{layer!r}: expected input of shape {what}, got {fmt_shape(x.shape)}")
    if dim is not None and x.shape[dim] != size:
        raise ShapeError(
            f"{layer!r}: expected input of shape {what}, got {fmt_shape(x.shape)}: dimension "
            f"{dim} is {x.shape[dim]}, not {size}"
        )


class Sequential(Module):
    """Modules applied in order: Sequential(a, b, c)(x) is c(b(a(x))); also takes an OrderedDict."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, i):
        mods = list(self._modules.values())
        if isinstance(i, slice):
            return Sequential(OrderedDict(list(self._modules.items())[i]))
        return mods[i]

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self


class ModuleList(Module):
    """A list of modules, registered so their parameters are found; no forward of its own."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, i):
        if isinstance(i, slice):
            return ModuleList(list(self._modules.values())[i])
        return list(self._modules.values())[i]

    def __setitem__(self, i, module):
        key = list(self._modules)[i]
        self._modules[key] = module

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self


class ModuleDict(Module):
    """A dict of modules by name, registered so their parameters are found."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def update(self, modules):
        items = modules.items() if hasattr(modules, "items") else modules
        for k, m in items:
            self[k] = m
