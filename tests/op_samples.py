"""Sample inputs for the op table (tests/op_db.py): what a sample is, how it becomes prunus or
torch tensors, the generators that keep inputs away from non-differentiable points, and the
sample sets of each op.

A sample holds NumPy float64 arrays wrapped in `Arr` (a float input; cast to the dtype under
test, optionally a leaf requiring grad, optionally seen through a view such as a transpose) or
`Idx` (an integer/bool tensor: an index, a mask, a condition). Everything else in a sample (ints,
floats, slices, tuples of dims) is passed as is. Inputs stay a margin away from points where the
op is not differentiable (ties of max, 0 for abs/relu, the bounds of clamp, ...), so numerical
derivatives are meaningful; samples that sit on such a point on purpose say `gradcheck=False`.
Nothing here imports torch until a sample is bound to torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import prunus

# -- samples ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arr:
    """A floating-point input: `value` (float64, cast to the dtype under test) becomes a tensor,
    a leaf that requires grad unless `requires_grad=False`, then passes through `view` (the same
    Python expression on both libraries, e.g. a transpose or a strided slice)."""

    value: np.ndarray
    view: Callable | None = None
    requires_grad: bool = True

    @property
    def shape(self):
        v = np.asarray(self.value)
        return (self.view(v) if self.view else v).shape


@dataclass(frozen=True)
class Idx:
    """An integer or bool array passed as a tensor (int64 / bool): an index, mask or condition."""

    value: np.ndarray


@dataclass
class SampleInput:
    args: tuple
    kwargs: dict = field(default_factory=dict)
    desc: str = ""
    gradcheck: bool = True  # False: sits on a tie/kink on purpose; compared with PyTorch only

    def arrs(self):
        """The Arr inputs, in the order they are met (args, then kwargs)."""
        out = []
        _walk((self.args, self.kwargs), lambda a: out.append(a))
        return out

    def bind(self, op, lib: str, dtype: str):
        """(leaves, fn): the leaf tensors that require grad, and fn(*leaves) -> op's output.

        `lib` is "prunus" or "torch"; both see the same values. fn rebuilds views from the
        leaves it is given, so gradcheck can perturb the leaves' buffers.
        """
        make_leaf, make_index = _MAKERS[lib]()
        np_dtype = np.dtype(dtype)
        leaves = []

        def template(x):
            if isinstance(x, Arr):
                t = make_leaf(np.asarray(x.value).astype(np_dtype), x.requires_grad)
                if x.requires_grad:
                    leaves.append(t)
                    return _Slot(len(leaves) - 1, x.view)
                return x.view(t) if x.view else t
            if isinstance(x, Idx):
                return make_index(np.asarray(x.value))
            return _map(x, template)

        targs, tkwargs = template(self.args), template(self.kwargs)

        def fn(*ls):
            def fill(x):
                if isinstance(x, _Slot):
                    t = ls[x.k]
                    return x.view(t) if x.view else t
                return _map(x, fill)

            return op(*fill(targs), **fill(tkwargs))

        return leaves, fn

    def __repr__(self):
        return f"SampleInput({self.desc or self.args!r})"


@dataclass(frozen=True)
class _Slot:
    k: int
    view: Callable | None


def _map(x, f):
    if isinstance(x, tuple) and not hasattr(x, "_fields"):
        return tuple(f(i) for i in x)
    if isinstance(x, list):
        return [f(i) for i in x]
    if isinstance(x, dict):
        return {k: f(v) for k, v in x.items()}
    return x


def _walk(x, visit):
    if isinstance(x, Arr):
        visit(x)
    elif isinstance(x, (tuple, list)):
        for i in x:
            _walk(i, visit)
    elif isinstance(x, dict):
        for i in x.values():
            _walk(i, visit)


def _prunus_makers():
    def leaf(a, requires_grad):
        return prunus.tensor(a, requires_grad=requires_grad)

    def index(a):
        return prunus.tensor(a)

    return leaf, index


def _torch_makers():
    import torch

    def leaf(a, requires_grad):
        return torch.tensor(a, requires_grad=requires_grad)

    def index(a):
        return torch.tensor(a)

    return leaf, index


_MAKERS = {"prunus": _prunus_makers, "torch": _torch_makers}


def outputs(out) -> tuple:
    """An op's result as a tuple of tensors (max(dim) gives two, split gives several)."""
    if isinstance(out, (tuple, list)):
        return tuple(out)
    return (out,)


# -- input generators ----------------------------------------------------------------------------


def normal(rng, shape, scale=1.0):
    return np.asarray(rng.standard_normal(shape) * scale, dtype=np.float64)


def uniform(rng, shape, lo, hi):
    return np.asarray(rng.uniform(lo, hi, shape), dtype=np.float64)


def positive(rng, shape, lo=0.5, hi=2.0):
    return uniform(rng, shape, lo, hi)


def away(rng, shape, points=(0.0,), margin=0.15, lo=-2.0, hi=2.0):
    """Uniform in [lo, hi] but at least `margin` from each of `points` (kinks of the op)."""
    x = uniform(rng, shape, lo, hi)
    for _ in range(200):
        bad = np.zeros(x.shape, bool)
        for p in points:
            bad |= np.abs(x - p) < margin
        if not bad.any():
            return x
        x = np.where(bad, uniform(rng, shape, lo, hi), x)
    raise RuntimeError(f"away: cannot sample {shape} in [{lo}, {hi}] avoiding {points}")


def distinct(rng, shape, gap=0.25):
    """Values at least gap/2 apart from each other: no ties for max/min/argmax/sort."""
    n = math.prod(shape)
    v = (rng.permutation(n) - (n - 1) / 2) * gap + uniform(rng, n, -gap / 4, gap / 4)
    return v.reshape(shape)


def _T(t):
    return t.T


def _cols2(t):
    return t[:, ::2]


def _swap_last(t):
    return t.transpose(-1, -2)


_T.__qualname__ = "x.T"
_cols2.__qualname__ = "x[:, ::2]"


def transposed(a, requires_grad=True):
    """An Arr seen through `.T`: the op gets a non-contiguous (transposed) view of value a."""
    return Arr(np.ascontiguousarray(a.T), view=_T, requires_grad=requires_grad)


def strided(a, rng, requires_grad=True):
    """An Arr seen through `[:, ::2]`: a column-strided, non-contiguous view of value a."""
    base = normal(rng, (a.shape[0], 2 * a.shape[1]))
    base[:, ::2] = a
    return Arr(base, view=_cols2, requires_grad=requires_grad)


# -- sample sets ---------------------------------------------------------------------------------


def unary_samples(gen):
    """Sample inputs for an elementwise unary op; gen(rng, shape) draws its domain."""

    def samples(rng):
        return [
            SampleInput((Arr(gen(rng, (3, 4))),), desc="(3,4)"),
            SampleInput((Arr(gen(rng, ())),), desc="0-d"),
            SampleInput((Arr(gen(rng, (2, 3, 2))),), desc="(2,3,2)"),
            SampleInput((transposed(gen(rng, (3, 4))),), desc="transposed (non-contiguous)"),
            SampleInput((strided(gen(rng, (2, 3)), rng),), desc="strided (non-contiguous)"),
        ]

    return samples


BINARY_SHAPES = [
    ((3, 4), (3, 4), "same shape"),
    ((3, 4), (4,), "broadcast (3,4) with (4,)"),
    ((4,), (3, 4), "broadcast (4,) with (3,4)"),
    ((3, 1), (1, 4), "broadcast (3,1) with (1,4)"),
    ((2, 1, 3), (4, 1), "broadcast (2,1,3) with (4,1)"),
    ((3, 4), (), "with a 0-d tensor"),
]


def binary_samples(gen, shapes=BINARY_SHAPES, scalars=True, promotion=False):
    """Sample inputs for a broadcasting binary op; gen(rng, shape_a, shape_b) -> (a, b)."""

    def samples(rng):
        out = []
        for sa, sb, desc in shapes:
            a, b = gen(rng, sa, sb)
            out.append(SampleInput((Arr(a), Arr(b)), desc=desc))
        a, b = gen(rng, (3, 4), (3, 4))
        out.append(
            SampleInput((transposed(a), strided(b, rng)), desc="non-contiguous: a.T, b[:, ::2]")
        )
        a, b = gen(rng, (2, 3), (2, 3))
        out.append(SampleInput((Arr(a), strided(b, rng)), desc="non-contiguous b only"))
        a, b = gen(rng, (3, 4), (4,))
        out.append(SampleInput((Arr(a), Arr(b, requires_grad=False)), desc="b without grad"))
        out.append(SampleInput((Arr(a, requires_grad=False), Arr(b)), desc="a without grad"))
        if scalars:
            a, b = gen(rng, (3, 4), ())
            out.append(SampleInput((Arr(a), float(b)), desc="tensor op python float"))
            a, b = gen(rng, (), (3, 4))
            out.append(SampleInput((float(a), Arr(b)), desc="python float op tensor"))
        if promotion:
            a = normal(rng, (3, 4))
            out.append(
                SampleInput((Arr(a), Idx(rng.integers(-3, 4, (4,)))), desc="float op int64 tensor")
            )
        return out

    return samples


def indep(gen_a, gen_b):
    return lambda rng, sa, sb: (gen_a(rng, sa), gen_b(rng, sb))


def apart(rng, sa, sb):
    """a and b with all values distinct: no ties between them under any broadcast."""
    na = math.prod(sa)
    v = distinct(rng, (na + math.prod(sb),))
    return v[:na].reshape(sa), v[na:].reshape(sb)


def nonzero(rng, shape):
    return away(rng, shape, (0.0,), margin=0.5)


def remainder_pair(rng, sa, sb):
    """a, b with b away from 0 and a/b at least 0.15 from an integer (where % jumps)."""
    out = np.broadcast_shapes(sa, sb)
    q = rng.choice([-1.0, 1.0], out) * (rng.integers(0, 3, out) + uniform(rng, out, 0.15, 0.85))
    if tuple(sa) == out:
        b = nonzero(rng, sb)
        return q * np.broadcast_to(b, out), b
    a = nonzero(rng, sa)
    q = np.where(np.abs(q) < 1, q + np.sign(q), q)  # |q| >= 1 keeps b = a / q bounded
    return a, np.broadcast_to(a, out) / q


def reduction_samples(gen, variants, shapes=((3, 4), (2, 3, 2))):
    """One sample per (shape, kwargs); `variants(ndim)` lists the kwargs that fit that rank."""

    def samples(rng):
        out = []
        for shape in shapes:
            for args, kwargs in variants(len(shape)):
                x = gen(rng, shape)
                out.append(
                    SampleInput(
                        (Arr(x),) + tuple(args), dict(kwargs), desc=f"{shape} {args} {kwargs}"
                    )
                )
        x = gen(rng, (4, 3))
        args, kwargs = variants(2)[1]
        out.append(
            SampleInput(
                (transposed(x),) + tuple(args), dict(kwargs), desc=f"transposed {args} {kwargs}"
            )
        )
        return out

    return samples


def dims_variants(ndim, tuples=True, empty=True):
    v = [((), {}), ((), {"dim": 0}), ((), {"dim": -1, "keepdim": True}), ((), {"dim": 1})]
    if empty:  # PyTorch: an empty dim list reduces over all dims, as dim=None does
        v += [((), {"dim": ()}), ((), {"dim": [], "keepdim": True})]
    if tuples and ndim == 3:
        v += [((), {"dim": (0, 2)}), ((), {"dim": (0, 2), "keepdim": True})]
    return v


def var_variants(ndim):
    # no dim=(): torch 2.13's var/std backward with dim=() divides by N=1 and returns inf
    # (the forward is right, and prunus's gradient passes gradcheck)
    v = dims_variants(ndim, empty=False)
    v += [
        ((), {"dim": 1, "correction": 0}),
        ((), {"correction": 2}),
        ((), {"dim": 0, "unbiased": False}),
    ]
    return v


def lse_variants(ndim):
    v = [((0,), {}), ((-1,), {"keepdim": True}), ((tuple(range(ndim)),), {})]
    if ndim == 3:
        v.append((((0, 2),), {"keepdim": True}))
    return v


def full_and_0d(samples_fn, gen):
    def samples(rng):
        return samples_fn(rng) + [SampleInput((Arr(gen(rng, ())),), desc="0-d, full reduction")]

    return samples


def ties_for(name):
    def samples(rng):
        # ties on purpose: PyTorch splits the gradient equally among tied elements, and so do we
        x = np.array([[1.0, 0.5, 1.0], [-0.25, -0.25, 0.75]])
        return [
            SampleInput((Arr(x),), {"dim": 1}, desc=f"{name} ties along dim 1", gradcheck=False),
            SampleInput((Arr(-x),), {}, desc=f"{name} ties, full reduction", gradcheck=False),
        ]

    return samples


def concat(*fns):
    def samples(rng):
        out = []
        for f in fns:
            out += f(rng)
        return out

    return samples


# -- records -------------------------------------------------------------------------------------


def where_samples(rng):
    out = [
        SampleInput(
            (Idx(rng.random((3, 4)) < 0.5), Arr(normal(rng, (3, 4))), Arr(normal(rng, (3, 4)))),
            desc="same shape",
        ),
        SampleInput(
            (Idx(rng.random((4,)) < 0.5), Arr(normal(rng, (3, 1))), Arr(normal(rng, (1, 4)))),
            desc="broadcast cond (4,), a (3,1), b (1,4)",
        ),
        SampleInput(
            (Idx(rng.random((3, 1)) < 0.5), Arr(normal(rng, (3, 4))), Arr(normal(rng, ()))),
            desc="broadcast with 0-d b",
        ),
        SampleInput(
            (
                Idx(rng.random((3, 4)) < 0.5),
                transposed(normal(rng, (3, 4))),
                strided(normal(rng, (3, 4)), rng),
            ),
            desc="non-contiguous a.T, b[:, ::2]",
        ),
        SampleInput(
            (Idx(rng.random((3, 4)) < 0.5), Arr(normal(rng, (3, 4))), 0.0), desc="b python float"
        ),
        SampleInput(
            (Idx(rng.random((3, 4)) < 0.5), 1.5, Arr(normal(rng, (3, 4)))), desc="a python float"
        ),
        SampleInput(
            (
                Idx(rng.random((3, 4)) < 0.5),
                Arr(normal(rng, (3, 4)), requires_grad=False),
                Arr(normal(rng, (4,))),
            ),
            desc="a without grad",
        ),
    ]
    return out


def clamp_samples(rng):
    lo, hi = -0.5, 0.7
    x = lambda shape: away(rng, shape, (lo, hi))
    a, b = apart(rng, (3, 4), (4,))
    a2, c = apart(rng, (3, 4), (3, 1))
    return [
        SampleInput((Arr(x((3, 4))),), {"min": lo, "max": hi}, desc="both bounds"),
        SampleInput((Arr(x((3, 4))),), {"min": lo}, desc="min only"),
        SampleInput((Arr(x((2, 3, 2))),), {"max": hi}, desc="max only"),
        SampleInput((Arr(x(())),), {"min": lo, "max": hi}, desc="0-d"),
        SampleInput((transposed(x((3, 4))),), {"min": lo, "max": hi}, desc="transposed"),
        SampleInput((Arr(a),), {"min": Arr(b)}, desc="tensor min, broadcast"),
        SampleInput((Arr(a2),), {"max": Arr(c)}, desc="tensor max, broadcast"),
        SampleInput(
            (transposed(a),),
            {"min": Arr(b - 5), "max": Arr(b, requires_grad=False)},
            desc="tensor bounds, transposed x",
        ),
        SampleInput(
            (Idx(rng.integers(-3, 4, (3, 4))),),
            {"min": lo, "max": hi},
            desc="int64 tensor, float bounds (promotes to the default float)",
        ),
        SampleInput(
            (Idx(rng.integers(-3, 4, (3, 4))),), {"min": -1}, desc="int64 tensor, int bound"
        ),
    ]


def max_min_samples(rng):
    out = [
        SampleInput((Arr(distinct(rng, (3, 4))),), desc="full reduction"),
        SampleInput((Arr(distinct(rng, (2, 3, 2))),), desc="full reduction 3-d"),
        SampleInput((Arr(distinct(rng, ())),), desc="0-d"),
    ]
    for args, kw in [((0,), {}), ((1,), {"keepdim": True}), ((-1,), {})]:
        out.append(SampleInput((Arr(distinct(rng, (3, 4))),) + args, kw, desc=f"dim {args} {kw}"))
    out.append(
        SampleInput((Arr(distinct(rng, (2, 3, 2))), 1), desc="3-d, dim 1 -> (values, indices)")
    )
    out.append(SampleInput((Arr(distinct(rng, ())), 0), desc="0-d, dim 0 -> (values, indices)"))
    out.append(SampleInput((transposed(distinct(rng, (3, 4))), 0), desc="transposed, dim 0"))
    a, b = apart(rng, (3, 4), (4,))
    out.append(SampleInput((Arr(a), Arr(b)), desc="binary form max(x, other), broadcast"))
    return out


def argmax_samples(rng):
    out = [SampleInput((Arr(distinct(rng, (3, 4))),), desc="full")]
    for args, kw in [((0,), {}), ((1,), {"keepdim": True}), ((-1,), {})]:
        out.append(SampleInput((Arr(distinct(rng, (3, 4))),) + args, kw, desc=f"dim {args} {kw}"))
    out.append(SampleInput((Arr(distinct(rng, (2, 3, 2))), 2), desc="3-d dim 2"))
    out.append(SampleInput((Arr(distinct(rng, ())), -1), desc="0-d dim -1"))
    out.append(SampleInput((transposed(distinct(rng, (3, 4))), 1), desc="transposed dim 1"))
    return out


def prod_samples(rng):
    g = lambda shape: rng.choice([-1.0, 1.0], shape) * uniform(rng, shape, 0.5, 1.5)
    x0 = g((3, 4))
    x0[1, 2] = 0.0
    x00 = g((3, 4))
    x00[0, 1] = x00[0, 3] = 0.0
    return [
        SampleInput((Arr(g((3, 4))),), desc="full"),
        SampleInput((Arr(g((3, 4))), 0), desc="dim 0"),
        SampleInput((Arr(g((3, 4))), 1), {"keepdim": True}, desc="dim 1 keepdim"),
        SampleInput((Arr(g((2, 3, 2))), -1), desc="3-d dim -1"),
        SampleInput((Arr(g(())),), desc="0-d"),
        SampleInput((transposed(g((3, 4))), 1), desc="transposed dim 1"),
        SampleInput((Arr(x0),), desc="one zero, full"),
        SampleInput((Arr(x0), 1), desc="one zero, dim 1"),
        SampleInput((Arr(x00), 1), desc="two zeros in a row, dim 1"),
    ]


def shape_samples(cases):
    """cases: list of (input shape, args, kwargs); the input is drawn normal. The shape "T"
    stands for a transposed, non-contiguous (3, 4) input."""

    def samples(rng):
        out = []
        for shape, args, kwargs in cases:
            if shape == "T":
                x = transposed(normal(rng, (3, 4)))
            else:
                x = Arr(normal(rng, shape))
            out.append(
                SampleInput((x,) + tuple(args), dict(kwargs), desc=f"{shape} {args} {kwargs}")
            )
        return out

    return samples


def cat_samples(rng):
    n = lambda *s: Arr(normal(rng, s))
    return [
        SampleInput(([n(2, 3), n(1, 3)],), desc="dim 0"),
        SampleInput(([n(2, 3), n(2, 2), n(2, 1)], 1), desc="three, dim 1"),
        SampleInput(([n(2, 3, 2), n(2, 3, 1)], -1), desc="3-d dim -1"),
        SampleInput(
            ([transposed(normal(rng, (3, 2))), strided(normal(rng, (3, 2)), rng)], 1),
            desc="non-contiguous",
        ),
        SampleInput(
            ([n(2, 3), Arr(normal(rng, (2, 3)), requires_grad=False)],), desc="second without grad"
        ),
        SampleInput(([n(3)],), desc="single tensor"),
    ]


def stack_samples(rng):
    n = lambda *s: Arr(normal(rng, s))
    return [
        SampleInput(([n(2, 3), n(2, 3)],), desc="dim 0"),
        SampleInput(([n(2, 3), n(2, 3), n(2, 3)], 1), desc="three, dim 1"),
        SampleInput(([n(2, 3), n(2, 3)], -1), desc="dim -1"),
        SampleInput(
            ([transposed(normal(rng, (3, 2))), strided(normal(rng, (3, 2)), rng)], 2),
            desc="non-contiguous",
        ),
        SampleInput(
            ([n(3), Arr(normal(rng, (3,)), requires_grad=False)],), desc="second without grad"
        ),
    ]


def gather_samples(rng):
    return [
        SampleInput(
            (Arr(normal(rng, (3, 4))), 0, Idx(np.array([[0, 1, 2, 0], [2, 2, 1, 0]]))),
            desc="dim 0, repeats",
        ),
        SampleInput(
            (Arr(normal(rng, (3, 4))), 1, Idx(np.array([[3, 3], [0, 1], [2, 2]]))),
            desc="dim 1, repeats",
        ),
        SampleInput(
            (Arr(normal(rng, (3, 4))), 1, Idx(np.array([[1], [0]]))), desc="smaller index in dim 0"
        ),
        SampleInput(
            (Arr(normal(rng, (2, 3, 2))), -1, Idx(rng.integers(0, 2, (2, 3, 3)))), desc="3-d dim -1"
        ),
        SampleInput(
            (transposed(normal(rng, (3, 4))), 0, Idx(np.array([[2, 2, 0], [1, 2, 2]]))),
            desc="transposed",
        ),
    ]


def index_select_samples(rng):
    return [
        SampleInput((Arr(normal(rng, (3, 4))), 0, Idx(np.array([2, 0, 2]))), desc="dim 0, repeats"),
        SampleInput(
            (Arr(normal(rng, (3, 4))), 1, Idx(np.array([1, 1, 3, 0, 1]))), desc="dim 1, repeats"
        ),
        SampleInput((Arr(normal(rng, (2, 3, 2))), -1, Idx(np.array([1]))), desc="3-d dim -1"),
        SampleInput(
            (Arr(normal(rng, (3, 4))), 0, Idx(np.array([], dtype=np.int64))), desc="empty index"
        ),
        SampleInput(
            (transposed(normal(rng, (3, 4))), 1, Idx(np.array([0, 2, 2]))), desc="transposed"
        ),
    ]


def masked_fill_samples(rng):
    return [
        SampleInput(
            (Arr(normal(rng, (3, 4))), Idx(rng.random((3, 4)) < 0.5), 0.5), desc="same shape"
        ),
        SampleInput(
            (Arr(normal(rng, (3, 4))), Idx(rng.random((4,)) < 0.5), -2.0),
            desc="broadcast mask (4,)",
        ),
        SampleInput(
            (Arr(normal(rng, (2, 3, 2))), Idx(rng.random((3, 1)) < 0.5), 0.0),
            desc="broadcast mask (3,1)",
        ),
        SampleInput(
            (transposed(normal(rng, (3, 4))), Idx(rng.random((3, 4)) < 0.5), 1.0), desc="transposed"
        ),
    ]


def getitem_samples(rng):
    x2 = lambda: Arr(normal(rng, (3, 4)))
    x3 = lambda: Arr(normal(rng, (2, 3, 2)))
    E, s = Ellipsis, slice
    i = lambda *v: Idx(np.array(v, dtype=np.int64))
    cases = [
        (x2(), 1, "int"),
        (x2(), -1, "negative int"),
        (x2(), (1, 2), "two ints -> 0-d"),
        (x2(), (s(None), s(1, 3)), "slice"),
        (x2(), s(None, None, 2), "step slice"),
        (x2(), (s(1, None), s(None, None, 2)), "two slices with steps"),
        (x2(), s(-2, None), "negative start"),
        (x2(), None, "None"),
        (x2(), (E, 1), "Ellipsis, int"),
        (x2(), (s(None), None, s(1, 3)), "None in the middle"),
        (x3(), (E, None), "Ellipsis, None"),
        (x3(), (1, E, 0), "int, Ellipsis, int"),
        (x2(), Idx(np.array(1)), "0-d int tensor"),
        (x2(), i(0, 2, 0, 1), "int array with repeats"),
        (x2(), (s(None), i(1, 1, 3)), "int array with repeats on dim 1"),
        (x2(), i(-1, 0, -1), "negative int array"),
        (x2(), Idx(np.array([[0, 1], [1, 0]])), "2-d int array with repeats"),
        (x2(), (i(0, 1, 0), i(2, 2, 3)), "paired int arrays, a repeated pair"),
        (x2(), (Idx(np.array([[0], [2]])), Idx(np.array([[1, 1, 3]]))), "broadcasting int arrays"),
        (x2(), (i(0, 2, 2), s(1, 3)), "int array, slice"),
        (x2(), (1, i(0, 0, 2)), "int, int array"),
        (x3(), (i(1, 0, 1), s(None), i(0, 1, 1)), "separated int arrays (dims go first)"),
        (x3(), (s(None), i(2, 0, 2)), "int array on the middle dim"),
        (x3(), (E, i(1, 1)), "Ellipsis, int array"),
        (x2(), Idx(rng.random((3, 4)) < 0.5), "bool mask, full shape"),
        (x2(), Idx(np.array([True, False, True])), "bool mask on rows"),
        (x2(), (s(None), Idx(np.array([False, True, True, False]))), "bool mask on columns"),
        (x3(), Idx(rng.random((2, 3)) < 0.5), "2-d bool mask on a 3-d tensor"),
        (
            transposed(normal(rng, (3, 4))),
            (i(0, 0, 2), s(1, None)),
            "transposed, int array with repeats",
        ),
        (strided(normal(rng, (3, 4)), rng), (2, s(None)), "strided, int"),
    ]
    return [SampleInput((x, idx), desc=d) for x, idx, d in cases]


def matmul_samples(rng):
    n = lambda *s: Arr(normal(rng, s))
    return [
        SampleInput((n(4), n(4)), desc="1-D @ 1-D"),
        SampleInput((n(3), n(3, 4)), desc="1-D @ 2-D"),
        SampleInput((n(3, 4), n(4)), desc="2-D @ 1-D"),
        SampleInput((n(3, 4), n(4, 2)), desc="2-D @ 2-D"),
        SampleInput((n(2, 2, 3), n(2, 3, 2)), desc="batched"),
        SampleInput((n(2, 1, 2, 3), n(3, 3, 2)), desc="broadcasting batch dims"),
        SampleInput((n(2, 3, 2), n(2, 2)), desc="batched @ 2-D"),
        SampleInput((n(2, 2, 3), n(3)), desc="batched @ 1-D"),
        SampleInput((n(3), n(2, 3, 2)), desc="1-D @ batched"),
        SampleInput(
            (transposed(normal(rng, (3, 4))), strided(normal(rng, (4, 2)), rng)),
            desc="non-contiguous",
        ),
        SampleInput(
            (Arr(normal(rng, (2, 3, 2)), view=_swap_last), n(2, 3, 2)),
            desc="transposed last dims, batched",
        ),
        SampleInput(
            (n(3, 4), Arr(normal(rng, (4, 2)), requires_grad=False)), desc="b without grad"
        ),
        SampleInput(
            (Arr(normal(rng, (2, 3)), requires_grad=False), n(2, 2, 3, 2)),
            desc="a without grad, broadcast",
        ),
    ]


def softmax_samples(rng):
    return [
        SampleInput((Arr(normal(rng, (3, 4), 2.0)), 1), desc="dim 1"),
        SampleInput((Arr(normal(rng, (3, 4), 2.0)), 0), desc="dim 0"),
        SampleInput((Arr(normal(rng, (2, 3, 2), 2.0)), -1), desc="3-d dim -1"),
        SampleInput((Arr(normal(rng, (2, 3, 2), 2.0)), 1), desc="3-d dim 1"),
        SampleInput((Arr(normal(rng, (5,), 2.0)), 0), desc="1-d"),
        SampleInput((transposed(normal(rng, (3, 4))), -1), desc="transposed"),
        SampleInput(
            (Arr(np.array([[1000.0, 999.0, -1000.0], [-5.0, -5.5, -4.0]])), 1),
            desc="large logits (no overflow)",
        ),
    ]


def pow_samples(rng):
    base = binary_samples(indep(positive, normal))(rng)
    return base + [
        SampleInput((Arr(normal(rng, (3, 4))), 2), desc="x ** 2 (int), any sign"),
        SampleInput((Arr(normal(rng, (3, 4))), 3.0), desc="x ** 3.0, any sign"),
        SampleInput((Arr(positive(rng, (3, 4))), -1.5), desc="x ** -1.5"),
        SampleInput((Arr(positive(rng, (3, 4))), 0.5), desc="x ** 0.5"),
        SampleInput((2.0, Arr(normal(rng, (3, 4)))), desc="2.0 ** x"),
    ]


def gelu_samples(rng):
    out = []
    for approx in ("none", "tanh"):
        for s in unary_samples(lambda r, sh: normal(r, sh, 1.5))(rng):
            s.kwargs = {"approximate": approx}
            s.desc += f" approximate={approx}"
            out.append(s)
    return out


def with_kwargs(samples_fn, *kwarg_sets):
    def samples(rng):
        out = []
        for kw in kwarg_sets:
            for s in samples_fn(rng):
                s.kwargs = dict(kw)
                s.desc += f" {kw}"
                out.append(s)
        return out

    return samples


away0 = lambda rng, shape: away(rng, shape, (0.0,))


def linear_samples(rng):
    n = lambda *s: Arr(normal(rng, s))
    return [
        SampleInput((n(4, 3), n(2, 3), n(2)), desc="(N, in) with bias"),
        SampleInput((n(4, 3), n(2, 3)), desc="no bias"),
        SampleInput((n(2, 2, 3), n(2, 3), n(2)), desc="leading batch dims"),
        SampleInput((n(3), n(2, 3), n(2)), desc="1-D input"),
        SampleInput((transposed(normal(rng, (4, 3))), n(2, 3), n(2)), desc="non-contiguous input"),
        SampleInput(
            (Arr(normal(rng, (4, 3)), requires_grad=False), n(2, 3), n(2)), desc="input without grad"
        ),
    ]


def cross_entropy_samples(rng):
    logits = lambda *s: Arr(normal(rng, s))
    return [
        SampleInput((logits(4, 3), Idx(np.array([0, 2, 1, 2]))), desc="mean"),
        SampleInput((logits(4, 3), Idx(np.array([0, 2, 1, 2]))), {"reduction": "sum"}, desc="sum"),
        SampleInput((logits(3, 4), Idx(np.array([3, 0, 0]))), {"reduction": "none"}, desc="none"),
        SampleInput(
            (logits(4, 3), Idx(np.array([0, -100, 1, 2]))), desc="ignore_index (default -100)"
        ),
        SampleInput(
            (logits(3, 3), Idx(np.array([1, 1, 2]))), {"ignore_index": 1, "reduction": "none"},
            desc="ignore_index=1, none",
        ),
        SampleInput(
            (transposed(normal(rng, (4, 3))), Idx(np.array([2, 0, 1, 1]))), desc="transposed logits"
        ),
    ]


# -- convolution and pooling (NCHW). gradcheck inputs stay <= 24 elements; the bigger samples
# (N=2, C=2, 5x5) are compared with PyTorch only.


def _nchw_t(t):
    return t.transpose(-1, -2)  # a non-contiguous NCHW input (H and W swapped)


def conv2d_samples(rng):
    n = lambda *s: Arr(normal(rng, s))
    return [
        SampleInput((n(1, 1, 4, 5), n(2, 1, 2, 3), n(2)), desc="bias"),
        SampleInput((n(2, 1, 3, 4), n(1, 1, 2, 2)), {"stride": 2, "padding": 1}, desc="stride 2, padding 1, no bias"),
        SampleInput((n(1, 1, 4, 5), n(1, 1, 2, 2), n(1)), {"dilation": 2}, desc="dilation 2"),
        SampleInput((n(1, 2, 3, 3), n(2, 1, 2, 2), n(2)), {"groups": 2, "padding": (1, 0)}, desc="groups 2"),
        SampleInput(
            (Arr(normal(rng, (1, 1, 4, 3)), view=_nchw_t), n(2, 1, 2, 2), n(2)),
            {"stride": (1, 2)}, desc="non-contiguous input, stride (1, 2)",
        ),
        SampleInput(
            (Arr(normal(rng, (1, 2, 3, 3)), requires_grad=False), n(2, 2, 2, 2), n(2)), desc="input without grad"
        ),
        SampleInput(
            (n(2, 2, 5, 5), n(4, 1, 3, 2), n(4)),
            {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2), "groups": 2},
            desc="N=2 C=2 5x5: stride, padding, dilation, groups", gradcheck=False,
        ),
        SampleInput((n(2, 2, 5, 5), n(3, 2, 3, 3)), {"padding": 1}, desc="N=2 C=2 5x5 padding 1", gradcheck=False),
    ]


def max_pool2d_samples(rng):
    d = lambda *s: Arr(distinct(rng, s))
    ties = np.round(normal(rng, (2, 2, 5, 5)))  # many equal values: gradient to the first maximum
    return [
        SampleInput((d(1, 1, 4, 5), 2), desc="2x2, floor"),
        SampleInput((d(1, 2, 3, 4), 3), {"stride": 1, "padding": 1}, desc="3x3 stride 1 pad 1 (overlapping)"),
        SampleInput((d(1, 1, 5, 4), (3, 2)), {"stride": 2, "ceil_mode": True}, desc="ceil_mode"),
        SampleInput((d(1, 1, 4, 5), 2), {"stride": 1, "dilation": 2}, desc="dilation 2"),
        SampleInput((Arr(distinct(rng, (1, 2, 4, 3)), view=_nchw_t), 2), desc="non-contiguous input"),
        SampleInput((Arr(ties), 3), {"stride": 2, "padding": 1}, desc="ties, overlapping", gradcheck=False),
        SampleInput((Arr(ties), 2), desc="ties, 2x2", gradcheck=False),
    ]


def avg_pool2d_samples(rng):
    n = lambda *s: Arr(normal(rng, s))
    return [
        SampleInput((n(1, 1, 4, 5), 2), desc="2x2"),
        SampleInput((n(1, 2, 3, 4), 3), {"stride": 1, "padding": 1}, desc="3x3 stride 1 pad 1"),
        SampleInput(
            (n(1, 2, 3, 4), 3), {"stride": 2, "padding": 1, "count_include_pad": False}, desc="count_include_pad=False"
        ),
        SampleInput((n(1, 1, 5, 4), (3, 2)), {"stride": 2, "ceil_mode": True, "padding": 1}, desc="ceil_mode"),
        SampleInput((n(1, 1, 4, 4), 2), {"divisor_override": 3}, desc="divisor_override"),
        SampleInput((n(2, 2, 5, 5), 3), {"stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False},
                    desc="N=2 C=2 5x5", gradcheck=False),
    ]


def adaptive_avg_pool2d_samples(rng):
    n = lambda *s: Arr(normal(rng, s))
    return [
        SampleInput((n(1, 2, 3, 4), 1), desc="global"),
        SampleInput((n(1, 1, 4, 4), 2), desc="divisible"),
        SampleInput((n(1, 1, 4, 5), (3, 2)), desc="overlapping windows"),
        SampleInput((n(1, 1, 5, 4), (None, 3)), desc="None keeps H"),
    ]
