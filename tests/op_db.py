"""The op table: one `OpInfo` record per public op, with its sample inputs (tests/op_samples.py),
dtypes, tolerances and PyTorch reference. `tests/ops/test_op_db.py` runs every record through
forward vs PyTorch, gradients vs `torch.autograd.grad`, a float64 numerical gradient check and
second derivatives.

Adding an op is adding one record to OP_DB (and, when no existing sample set fits, its sample
function to op_samples.py). Importing this module never imports torch: the references are
written `T.add`, `F.gelu`, ..., resolved when called.
"""

from __future__ import annotations

import importlib
import operator
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from op_samples import (
    BINARY_SHAPES,
    adaptive_avg_pool2d_samples,
    apart,
    argmax_samples,
    avg_pool2d_samples,
    away0,
    binary_samples,
    cat_samples,
    clamp_samples,
    concat,
    conv2d_samples,
    cross_entropy_samples,
    dims_variants,
    distinct,
    full_and_0d,
    gather_samples,
    gelu_samples,
    getitem_samples,
    indep,
    index_select_samples,
    linear_samples,
    lse_variants,
    masked_fill_samples,
    matmul_samples,
    max_min_samples,
    max_pool2d_samples,
    nonzero,
    normal,
    positive,
    pow_samples,
    prod_samples,
    reduction_samples,
    remainder_pair,
    shape_samples,
    softmax_samples,
    stack_samples,
    ties_for,
    unary_samples,
    uniform,
    var_variants,
    where_samples,
    with_kwargs,
)

import prunus
import prunus.nn.functional as PF

# -- lazy torch references -----------------------------------------------------------------------


class _LazyTorch:
    """`T.add`, `T.nn.functional.gelu`: a torch attribute looked up (and torch imported) only
    when called, so the table can be imported, and gradcheck run, without torch."""

    def __init__(self, path=()):
        self._path = path

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return _LazyTorch(self._path + (name,))

    def __call__(self, *args, **kwargs):
        obj = importlib.import_module("torch")
        for p in self._path:
            obj = getattr(obj, p)
        return obj(*args, **kwargs)

    def __repr__(self):
        return "torch." + ".".join(self._path)


T = _LazyTorch()
F = T.nn.functional


# -- records --------------------------------------------------------------------------------------

FWD_TOL = {"float32": (1e-5, 1e-6), "float64": (1e-9, 1e-12)}  # (rtol, atol)
GRAD_TOL = {"float32": (1e-4, 1e-5), "float64": (1e-8, 1e-10)}
GRADCHECK = {"eps": 1e-6, "atol": 1e-7, "rtol": 1e-5}


@dataclass
class OpInfo:
    """One public op.

    op / ref: the prunus callable and the PyTorch reference, called with the same arguments.
    sample_inputs(rng): several SampleInputs (shapes, argument sets) for the op.
    differentiable: False for ops with integer outputs only (argmax); they get the forward test.
    gradgrad: check second derivatives (vs torch's double backward and numerically).
    binary: a broadcasting op of two tensors: must have broadcasting and non-contiguous samples.
    """

    name: str
    op: Callable
    ref: Callable
    sample_inputs: Callable[[np.random.Generator], list]
    dtypes: tuple = ("float32", "float64")
    fwd_tol: dict = field(default_factory=lambda: dict(FWD_TOL))
    grad_tol: dict = field(default_factory=lambda: dict(GRAD_TOL))
    differentiable: bool = True
    gradgrad: bool = True
    binary: bool = False
    # eps / atol / rtol for gradcheck; tighter than its defaults (1e-5, 1e-3): central differences
    # with eps=1e-6 are good to ~1e-9 on these small, smooth float64 samples
    gradcheck_kwargs: dict = field(default_factory=lambda: dict(GRADCHECK))

    def samples(self) -> list:
        rng = np.random.default_rng(zlib.crc32(self.name.encode()))
        return list(self.sample_inputs(rng))

    def __repr__(self):
        return f"OpInfo({self.name})"


# tril and triu: diagonals 0, above, below; a batch; a transposed input
TRI_SAMPLES = shape_samples(
    [
        ((3, 4), (), {}),
        ((3, 4), (1,), {}),
        ((3, 4), (-1,), {}),
        ((2, 3, 2), (), {}),
        ("T", (), {}),
    ]
)


def _unary(name, ref=None, gen=normal, **kw):
    return OpInfo(name, getattr(prunus, name), ref or getattr(T, name), unary_samples(gen), **kw)


def _binary(name, gen, ref=None, **kw):
    sample_kw = {k: kw.pop(k) for k in ("shapes", "scalars", "promotion") if k in kw}
    return OpInfo(
        name,
        getattr(prunus, name),
        ref or getattr(T, name),
        binary_samples(gen, **sample_kw),
        binary=True,
        **kw,
    )


def _red(name, samples, ref=None, **kw):
    return OpInfo(name, getattr(prunus, name), ref or getattr(T, name), samples, **kw)


_N = indep(normal, normal)


def _remainder_ref(a, b):
    # torch has no derivative for remainder(Scalar, Tensor); a 0-d tensor gives the same values
    if isinstance(a, float):
        a = T.tensor(a, dtype=b.dtype)
    return T.remainder(a, b)


_REMAINDER_SHAPES = [c for c in BINARY_SHAPES if c[0] in ((3, 4), (4,))]

OP_DB: list[OpInfo] = [
    # -- binary arithmetic (operator refs: torch.add(1.5, t) is not accepted, 1.5 + t is)
    _binary("add", _N, ref=operator.add, promotion=True),
    _binary("sub", _N, ref=operator.sub, promotion=True),
    _binary("mul", _N, ref=operator.mul, promotion=True),
    _binary("div", indep(normal, nonzero), ref=operator.truediv),
    OpInfo("pow", prunus.pow, operator.pow, pow_samples, binary=True),
    _binary("maximum", apart, scalars=False),
    _binary("minimum", apart, scalars=False),
    # remainder: a/b stays away from integers; broadcasting that grows both sides is left out
    # because one `a` cannot keep every a/b of a whole row/column away from integers.
    _binary("remainder", remainder_pair, ref=_remainder_ref, shapes=_REMAINDER_SHAPES),
    OpInfo("where", prunus.where, T.where, where_samples, binary=True),
    # -- unary math
    _unary("neg"),
    _unary("exp"),
    _unary("log", gen=positive),
    _unary("log1p", gen=lambda r, s: uniform(r, s, -0.5, 2.0)),
    _unary("expm1"),
    _unary("sqrt", gen=positive),
    _unary("rsqrt", gen=positive),
    _unary("abs", gen=away0),
    _unary("sign", gen=away0),
    _unary("sin"),
    _unary("cos"),
    OpInfo("clamp", prunus.clamp, T.clamp, clamp_samples, binary=True),  # tensor bounds broadcast
    # -- activations
    _unary("tanh"),
    _unary("sigmoid", gen=lambda r, s: normal(r, s, 2.0)),
    _unary("relu", ref=F.relu, gen=away0),
    OpInfo(
        "leaky_relu",
        prunus.leaky_relu,
        F.leaky_relu,
        with_kwargs(unary_samples(away0), {}, {"negative_slope": 0.2}),
    ),
    OpInfo("elu", prunus.elu, F.elu, with_kwargs(unary_samples(away0), {}, {"alpha": 0.5})),
    OpInfo("gelu", prunus.gelu, F.gelu, gelu_samples),
    OpInfo(
        "softplus",
        prunus.softplus,
        F.softplus,
        with_kwargs(unary_samples(lambda r, s: normal(r, s, 2.0)), {}, {"beta": 2.0}),
    ),
    _unary("erf", gen=lambda r, s: normal(r, s, 1.5)),
    OpInfo("softmax", prunus.softmax, T.softmax, softmax_samples),
    OpInfo("log_softmax", prunus.log_softmax, T.log_softmax, softmax_samples),
    # -- reductions
    _red("sum", full_and_0d(reduction_samples(normal, dims_variants), normal)),
    _red("mean", full_and_0d(reduction_samples(normal, dims_variants), normal)),
    # distinct values: std is not differentiable at zero spread (and badly conditioned near it)
    _red("var", reduction_samples(distinct, var_variants)),
    _red("std", reduction_samples(distinct, var_variants)),
    _red(
        "amax",
        concat(full_and_0d(reduction_samples(distinct, dims_variants), distinct), ties_for("amax")),
    ),
    _red(
        "amin",
        concat(full_and_0d(reduction_samples(distinct, dims_variants), distinct), ties_for("amin")),
    ),
    _red("max", max_min_samples, binary=True),  # also max(x, other), broadcasting
    _red("min", max_min_samples, binary=True),
    _red("logsumexp", reduction_samples(normal, lse_variants)),
    _red("prod", prod_samples),
    _red("argmax", argmax_samples, differentiable=False),
    _red("argmin", argmax_samples, differentiable=False),
    # -- movement
    OpInfo(
        "reshape",
        prunus.reshape,
        T.reshape,
        shape_samples(
            [
                ((3, 4), ((2, 6),), {}),
                ((3, 4), ((-1,),), {}),
                ((3, 4), ((2, -1, 3),), {}),
                ((), ((1, 1),), {}),
                ("T", ((12,),), {}),
                ((2, 3, 2), ((3, 4),), {}),
            ]
        ),
    ),
    # x.view on a non-contiguous tensor copies in prunus (it is reshape); PyTorch raises,
    # so the view record only uses contiguous inputs.
    OpInfo(
        "view",
        lambda x, *s: x.view(*s),
        lambda x, *s: x.view(*s),
        shape_samples(
            [
                ((3, 4), (2, 6), {}),
                ((3, 4), (-1,), {}),
                ((3, 4), ((4, 3),), {}),
                ((2, 3, 2), (3, -1), {}),
            ]
        ),
    ),
    OpInfo(
        "flatten",
        prunus.flatten,
        T.flatten,
        shape_samples(
            [
                ((2, 3, 2), (), {}),
                ((2, 3, 2), (1,), {}),
                ((2, 3, 2), (0, 1), {}),
                ((2, 3, 2), (), {"start_dim": -2, "end_dim": -1}),
                ((), (), {}),
                ("T", (), {}),
            ]
        ),
    ),
    OpInfo(
        "squeeze",
        prunus.squeeze,
        T.squeeze,
        shape_samples(
            [
                ((1, 3, 1, 2), (), {}),
                ((1, 3, 1, 2), (0,), {}),
                ((1, 3, 1, 2), (2,), {}),
                ((1, 3, 1, 2), (1,), {}),
                ((1, 3, 1, 2), ((0, 2),), {}),
                ((1, 3, 1, 2), (-2,), {}),
            ]
        ),
    ),
    OpInfo(
        "unsqueeze",
        prunus.unsqueeze,
        T.unsqueeze,
        shape_samples(
            [
                ((3, 4), (0,), {}),
                ((3, 4), (1,), {}),
                ((3, 4), (-1,), {}),
                ((), (0,), {}),
                ("T", (2,), {}),
            ]
        ),
    ),
    OpInfo(
        "transpose",
        prunus.transpose,
        T.transpose,
        shape_samples(
            [
                ((3, 4), (0, 1), {}),
                ((2, 3, 2), (0, 2), {}),
                ((2, 3, 2), (-1, -2), {}),
                ((2, 3, 2), (1, 1), {}),
                ("T", (1, 0), {}),
            ]
        ),
    ),
    OpInfo(
        "permute",
        prunus.permute,
        T.permute,
        shape_samples(
            [
                ((2, 3, 2), ((2, 0, 1),), {}),
                ((2, 3, 2), ((0, 1, 2),), {}),
                ((2, 3, 2), ((-1, 0, -2),), {}),
                ("T", ((1, 0),), {}),
            ]
        ),
    ),
    OpInfo(
        "expand",
        lambda x, *s: x.expand(*s),
        lambda x, *s: x.expand(*s),
        shape_samples(
            [
                ((3, 1), (3, 4), {}),
                ((4,), (3, 4), {}),
                ((2, 1, 3), (2, 2, 3), {}),
                ((3, 1), (-1, 4), {}),
                ((1, 3), ((2, 2, 3),), {}),
                ((), (2, 3), {}),
            ]
        ),
    ),
    OpInfo(
        "broadcast_to",
        prunus.broadcast_to,
        T.broadcast_to,
        shape_samples(
            [
                ((3, 1), ((3, 4),), {}),
                ((4,), ((2, 3, 4),), {}),
                ((1, 3, 1), ((2, 3, 2),), {}),
                ("T", ((2, 3, 4),), {}),
            ]
        ),
    ),
    OpInfo("cat", prunus.cat, T.cat, cat_samples),
    OpInfo("stack", prunus.stack, T.stack, stack_samples),
    OpInfo(
        "split",
        prunus.split,
        T.split,
        shape_samples(
            [
                ((6, 2), (2,), {}),
                ((5, 2), (2,), {}),
                ((3, 5), (2, 1), {}),
                ((3, 5), ([1, 3, 1], 1), {}),
                ((3, 4), (3,), {}),
                ("T", (3,), {}),
            ]
        ),
    ),
    OpInfo(
        "chunk",
        prunus.chunk,
        T.chunk,
        shape_samples(
            [
                ((6, 2), (2,), {}),
                ((5, 2), (3,), {}),
                ((3, 5), (2, 1), {}),
                ((3, 4), (5, -1), {}),
                ("T", (2,), {}),
            ]
        ),
    ),
    OpInfo(
        "pad",
        prunus.pad,
        F.pad,
        shape_samples(
            [
                ((3, 4), ((1, 2),), {}),
                ((3, 4), ((1, 0, 2, 1),), {}),
                ((2, 3, 2), ((0, 1, 1, 0),), {"value": 0.5}),
                ((2, 3, 2), ((1, 1, 0, 0, 1, 0),), {}),
                ("T", ((2, 1),), {"value": -1.0}),
            ]
        ),
    ),
    OpInfo(
        "flip",
        prunus.flip,
        T.flip,
        shape_samples(
            [
                ((3, 4), ((0,),), {}),
                ((3, 4), ((0, 1),), {}),
                ((2, 3, 2), ((-1, 0),), {}),
                ("T", ((1,),), {}),
            ]
        ),
    ),
    OpInfo(
        "repeat",
        lambda x, *s: x.repeat(*s),
        lambda x, *s: x.repeat(*s),
        shape_samples(
            [
                ((2, 3), (2, 1), {}),
                ((2, 3), (1, 2, 2), {}),
                ((3,), (2,), {}),
                ((2, 1), ((1, 3),), {}),
                ("T", (2, 1), {}),
            ]
        ),
    ),
    OpInfo("gather", prunus.gather, T.gather, gather_samples),
    OpInfo("index_select", prunus.index_select, T.index_select, index_select_samples),
    OpInfo("masked_fill", prunus.masked_fill, T.masked_fill, masked_fill_samples),
    OpInfo("tril", prunus.tril, T.tril, TRI_SAMPLES),
    OpInfo("triu", prunus.triu, T.triu, TRI_SAMPLES),
    OpInfo("clone", prunus.clone, T.clone, unary_samples(normal)),
    # one tensor used twice (x * x): the engine must add both contributions to its gradient
    OpInfo("square", lambda x: x.square(), lambda x: x.square(), unary_samples(normal)),
    # -- indexing: x[index] for both libraries
    OpInfo("getitem", operator.getitem, operator.getitem, getitem_samples),
    # -- linear algebra
    OpInfo("matmul", prunus.matmul, T.matmul, matmul_samples, binary=True),
    OpInfo("linear", prunus.linear, F.linear, linear_samples),
    OpInfo("cross_entropy", prunus.cross_entropy, F.cross_entropy, cross_entropy_samples),
    # -- convolution and pooling (prunus.ops.conv); all linear in the gradient, so gradgrad holds
    OpInfo("conv2d", PF.conv2d, F.conv2d, conv2d_samples),
    OpInfo("max_pool2d", PF.max_pool2d, F.max_pool2d, max_pool2d_samples),
    OpInfo("avg_pool2d", PF.avg_pool2d, F.avg_pool2d, avg_pool2d_samples),
    OpInfo("adaptive_avg_pool2d", PF.adaptive_avg_pool2d, F.adaptive_avg_pool2d, adaptive_avg_pool2d_samples),
]

OPS = {info.name: info for info in OP_DB}
