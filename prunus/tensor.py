"""`Tensor`: a backend array with its device, its gradient and the op that made it.

Math lives in `prunus/ops/`; the methods here are one-liners over those ops, bound at the bottom
of this file, so a tensor method and the function of the same name are one piece of code.
"""

from __future__ import annotations

from prunus import autograd, dtypes
from prunus.backend import Device, get_device
from prunus.errors import AutogradError, DTypeError, fmt_shape


class Tensor:
    """An n-dimensional array that can record the ops applied to it and backpropagate.

    `Tensor(data, dtype=None, device=None, requires_grad=False)` is `prunus.tensor(...)`.
    """

    # _modified_at: set only by an in-place change (autograd.mark_modified); unset reads as never.
    # _base: set on views and detach()es: the tensor whose memory they share (its own _base unset)
    __slots__ = ("__weakref__", "_base", "_ctx", "_hooks", "_modified_at", "data", "device", "grad",
                 "requires_grad")
    __array_priority__ = 1000  # numpy_scalar * tensor goes to Tensor.__rmul__, not NumPy

    def __init__(self, data, dtype=None, device=None, requires_grad=False):
        from prunus.creation import _to_array

        dev = get_device(device)
        self._init_leaf(_to_array(data, dtype, dev), dev, requires_grad)

    def _init_leaf(self, data, device: Device, requires_grad: bool) -> None:
        """Fill the slots of a new leaf (also used by nn.Parameter's constructor)."""
        self.data = data
        self.device = device
        self.grad = None
        self._ctx = None
        self._hooks = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @staticmethod
    def _make(data, device: Device, requires_grad: bool, ctx) -> Tensor:
        t = object.__new__(Tensor)
        t.data = data
        t.device = device
        t.requires_grad = requires_grad
        t.grad = None
        t._ctx = ctx
        t._hooks = None
        return t

    # -- metadata ----------------------------------------------------------------------------

    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self) -> dtypes.DType:
        return dtypes.from_numpy_dtype(self.data.dtype)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def dim(self) -> int:
        return self.data.ndim

    def size(self, dim=None):
        if dim is None:
            return self.data.shape
        from prunus.ops._util import norm_dim

        return self.data.shape[norm_dim(dim, self.data.ndim, "size")]

    def numel(self) -> int:
        return int(self.data.size)

    def element_size(self) -> int:
        return self.data.itemsize

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    @property
    def grad_fn(self):
        return self._ctx

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise DTypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __iter__(self):
        if self.data.ndim == 0:
            raise DTypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.data.shape[0]))

    def __repr__(self) -> str:
        a = self.device.kernels.to_numpy(self.data)
        if self.dtype is dtypes.bfloat16:
            a = a.astype("float32")
        body = __import__("numpy").array2string(
            a, precision=4, separator=", ", prefix="tensor(", floatmode="maxprec_equal"
        )
        extra = []
        if self.dtype not in (dtypes.get_default_dtype(), dtypes.int64, dtypes.bool_):
            extra.append(f"dtype={self.dtype!r}")
        if self.device.type != "cpu":
            extra.append(f"device='{self.device}'")
        if self._ctx is not None:
            extra.append(f"grad_fn=<{self._ctx.name}Backward>")
        elif self.requires_grad:
            extra.append("requires_grad=True")
        return "tensor(" + ", ".join([body] + extra) + ")"

    # -- conversion --------------------------------------------------------------------------

    def numpy(self):
        """The data as a NumPy array (shares memory on the CPU). Refuses tensors that need grad."""
        if autograd._state.tracer is not None:
            autograd._state.tracer.data_access(self, "numpy()")
        if self.requires_grad:
            raise AutogradError(
                "numpy(): can't call numpy() on a tensor that requires grad; use "
                "tensor.detach().numpy()"
            )
        return self.device.kernels.to_numpy(self.data)

    def __array__(self, dtype=None, copy=None):
        if autograd._state.tracer is not None:
            autograd._state.tracer.data_access(self, "conversion to a NumPy array")
        a = self.device.kernels.to_numpy(self.data)
        return a if dtype is None else a.astype(dtype, copy=False)

    def item(self):
        if autograd._state.tracer is not None:
            autograd._state.tracer.data_access(self, "item()")
        if self.data.size != 1:
            raise DTypeError(
                f"item(): only a one-element tensor converts to a Python number, got shape "
                f"{fmt_shape(self.shape)}"
            )
        return self.data.reshape(()).item()

    def tolist(self):
        if autograd._state.tracer is not None:
            autograd._state.tracer.data_access(self, "tolist()")
        return self.device.kernels.to_numpy(self.data).tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if autograd._state.tracer is not None:
            autograd._state.tracer.data_access(self, "bool() (an if or while on a tensor)")
        if self.data.size != 1:
            raise DTypeError(
                f"the truth value of a tensor with {self.data.size} elements (shape "
                f"{fmt_shape(self.shape)}) is ambiguous; use .any() or .all()"
            )
        return bool(self.item())

    def __index__(self):
        if self.dtype.category != 1 or self.data.size != 1:
            raise DTypeError(
                f"only one-element integer tensors can be used as an index, got "
                f"{self.dtype.name} {fmt_shape(self.shape)}"
            )
        return int(self.item())

    def __hash__(self):
        return id(self)

    def detach(self) -> Tensor:
        """The same data without history (shares memory, and so in-place changes: see
        autograd.mark_modified)."""
        d = Tensor._make(self.data, self.device, False, None)
        d._base = autograd.memory_owner(self)
        return d

    def detach_(self) -> Tensor:
        self._ctx = None
        self.requires_grad = False
        return self

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and not self.dtype.is_floating_point:
            raise DTypeError(
                f"requires_grad_: only floating-point tensors can require gradients, got "
                f"{self.dtype.name} {fmt_shape(self.shape)}"
            )
        if not requires_grad and self._ctx is not None:
            raise AutogradError(
                "requires_grad_(False) on a non-leaf tensor; use detach() to cut it from the graph"
            )
        self.requires_grad = bool(requires_grad)
        return self

    def to(self, *args, dtype=None, device=None, copy: bool = False) -> Tensor:
        """`to(dtype)`, `to(device)`, `to(device, dtype)` or `to(other_tensor)`."""
        for a in args:
            if isinstance(a, Tensor):
                dtype, device = a.dtype, a.device
            elif isinstance(a, (dtypes.DType, type)) or (
                isinstance(a, str) and a.removeprefix("prunus.") in dtypes._BY_NAME
            ):
                dtype = a
            else:
                device = a
        out = self
        if device is not None:
            dev = get_device(device)
            if dev is not out.device:
                out = _ops.to_device(out, dev)
        if dtype is not None:
            d = dtypes.as_dtype(dtype)
            if d is not out.dtype:
                out = _ops.cast(out, d)
        if copy and out is self:
            out = self.clone()
        return out

    def float(self) -> Tensor:
        return self.to(dtypes.float32)

    def double(self) -> Tensor:
        return self.to(dtypes.float64)

    def half(self) -> Tensor:
        return self.to(dtypes.float16)

    def bfloat16(self) -> Tensor:
        return self.to(dtypes.bfloat16)

    def long(self) -> Tensor:
        return self.to(dtypes.int64)

    def int(self) -> Tensor:
        return self.to(dtypes.int32)

    def bool(self) -> Tensor:
        return self.to(dtypes.bool_)

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self, index: int = 0) -> Tensor:
        return self.to(f"cuda:{index}")

    def type_as(self, other: Tensor) -> Tensor:
        return self.to(other.dtype)

    # -- autograd ----------------------------------------------------------------------------

    def backward(self, gradient=None, retain_graph=None, create_graph=False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's `.grad` (see prunus.autograd.backward)."""
        autograd.backward(self, gradient, retain_graph, create_graph)

    def register_hook(self, hook):
        """Call `hook(grad)` when this tensor's gradient is computed; a returned tensor replaces it.

        Returns a handle whose `remove()` takes the hook off again.
        """
        if not self.requires_grad:
            raise AutogradError("register_hook: the tensor does not require grad")
        owner = self if self._ctx is None else self._ctx
        hooks = self._hooks if self._ctx is None else getattr(self._ctx, "_hooks", None)
        if hooks is None:
            hooks = []
            if self._ctx is None:
                self._hooks = hooks
            else:
                self._ctx._hooks = hooks
        hooks.append(hook)
        return _HookHandle(hooks, hook, owner)

    def retain_grad(self) -> None:
        """Keep the gradient of a non-leaf tensor in `.grad` after backward."""
        if self._ctx is None:
            return
        ref = __import__("weakref").ref(self)

        def keep(g):
            t = ref()
            if t is not None:  # a copy: the engine passes g on, and .grad is the user's to modify
                t.grad = g.clone() if t.grad is None else t.grad + g

        self.register_hook(keep)

    # -- in-place updates (for tensors outside the graph: optimizers, masks, running stats) --

    def _check_inplace(self, op: str) -> None:
        if self.requires_grad and autograd._state.grad_enabled:
            raise AutogradError(
                f"{op}: in-place update of a tensor that requires grad (shape "
                f"{fmt_shape(self.shape)}); do it under prunus.no_grad() or on a detached tensor"
            )

    def __setitem__(self, index, value) -> None:
        self._check_inplace("__setitem__")
        _ops.setitem_(self, index, value)


class _HookHandle:
    def __init__(self, hooks, hook, owner):
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


autograd.Tensor = Tensor

from prunus import ops as _ops

_ops.bind_methods(Tensor)
