"""Property tests (Hypothesis) for the shape, broadcast, index and reduction ops.

The rule is "both raise or both agree": for random shapes and random (valid or invalid)
arguments, prunus and the oracle (NumPy, always; PyTorch where the semantics are PyTorch's own)
either both raise, and then prunus raises a `prunus.errors` class, never a bare NumPy error, or
both return, and then shapes, dtypes and values agree. Gradients are checked against a NumPy
reference of the chain rule (sum over broadcast dims, scatter-add for indexing).

Runs are derandomized and use no example database, so CI sees the same examples every time.
Shapes stay small (at most 4 dims of at most 4) to keep the file in a few seconds.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes
from hypothesis_settings import reproducible

import prunus
from prunus import errors as E

# -- helpers ---------------------------------------------------------------------------------

seeds = st.integers(0, 2**32 - 1)
sides = st.integers(0, 4)
shapes = st.lists(sides, max_size=4).map(tuple)
nonscalar_shapes = st.lists(sides, min_size=1, max_size=4).map(tuple)


def outcome(fn):
    """(result, None) or (None, exception)."""
    try:
        return fn(), None
    except Exception as e:  # noqa: BLE001 - the point is to catch whatever either side raises
        return None, e


def both_raise_or_agree(prunus_call, oracle_call, error=E.PrunusError, same_builtin=True):
    """Run both. If the oracle raises, prunus must raise `error`; returns None then.
    Otherwise prunus must not raise; returns (prunus result, oracle result).

    With `same_builtin` (for NumPy oracles), prunus's error must also share a built-in class
    (IndexError, ValueError, TypeError) with the oracle's, so `except IndexError` code written
    for NumPy keeps working. PyTorch raises RuntimeError where prunus raises a ValueError."""
    expected, oracle_exc = outcome(oracle_call)
    got, prunus_exc = outcome(prunus_call)
    event("both raise" if oracle_exc is not None else "both agree")  # --hypothesis-show-statistics
    if oracle_exc is not None:
        assert prunus_exc is not None, f"the oracle raised {oracle_exc!r}, prunus returned {got!r}"
        assert isinstance(prunus_exc, error), (
            f"prunus raised {type(prunus_exc).__name__} (not a {error.__name__}): {prunus_exc}"
        )
        builtins = (IndexError, ValueError, TypeError)
        assert not same_builtin or any(
            isinstance(oracle_exc, b) and isinstance(prunus_exc, b) for b in builtins
        ), f"prunus raised {prunus_exc!r}, the oracle {oracle_exc!r}: no built-in class in common"
        return None
    if prunus_exc is not None:
        raise AssertionError(f"prunus raised, the oracle returned {expected!r}") from prunus_exc
    return got, expected


def to_np(x):
    """A prunus or torch tensor (or a NumPy array) as a NumPy array."""
    if isinstance(x, prunus.Tensor):
        return x.detach().numpy()
    if type(x).__module__.startswith("torch"):
        return x.detach().numpy()
    return np.asarray(x)


def assert_same(got, expected, rtol=1e-12, atol=1e-12):
    got, expected = to_np(got), to_np(expected)
    assert got.shape == expected.shape, f"shape {got.shape}, expected {expected.shape}"
    if got.dtype.kind == "b" or expected.dtype.kind == "b":
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(
            got.astype(np.float64), expected.astype(np.float64), rtol=rtol, atol=atol
        )


def randn(rng, shape):
    return np.asarray(rng.standard_normal(shape))  # an ndarray even for shape ()


def unbroadcast(g, shape):
    """Reference for the gradient of a broadcast: sum g over the dims that were broadcast."""
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))
    return g.sum(axis=tuple(i for i, s in enumerate(shape) if s == 1), keepdims=True).reshape(shape)


def grads(out, inputs, cotangent):
    return prunus.autograd.grad(out, inputs, grad_outputs=prunus.tensor(cotangent))


@st.composite
def shape_tuples(draw, n):
    """n shapes: half the time mutually broadcastable (size 0 and 1 included), else independent
    (mostly incompatible)."""
    if draw(st.booleans()):
        return draw(
            mutually_broadcastable_shapes(num_shapes=n, max_dims=4, min_side=0, max_side=4)
        ).input_shapes
    return tuple(draw(shapes) for _ in range(n))


# -- 1. binary broadcasting ------------------------------------------------------------------

BINARY = {
    "add": (prunus.add, np.add, lambda g, a, b: (g, g)),
    "mul": (prunus.mul, np.multiply, lambda g, a, b: (g * b, g * a)),
    "maximum": (prunus.maximum, np.maximum, lambda g, a, b: (g * (a > b), g * (b > a))),
}


@reproducible(250)
@given(op=st.sampled_from(sorted(BINARY)), shapes_=shape_tuples(2), seed=seeds)
def test_binary_broadcast(op, shapes_, seed):
    rng = np.random.default_rng(seed)
    pfn, nfn, chain = BINARY[op]
    a_np, b_np = (randn(rng, s) for s in shapes_)  # continuous values: no ties in maximum
    a = prunus.tensor(a_np, requires_grad=True)
    b = prunus.tensor(b_np, requires_grad=True)
    res = both_raise_or_agree(lambda: pfn(a, b), lambda: nfn(a_np, b_np), error=E.ShapeError)
    if res is None:
        return
    out, expected = res
    assert out.dtype is prunus.float64
    assert_same(out, expected)
    g = randn(rng, expected.shape)
    ga, gb = grads(out, (a, b), g)
    assert ga.shape == a.shape and gb.shape == b.shape
    shape = expected.shape
    ra, rb = chain(g, np.broadcast_to(a_np, shape), np.broadcast_to(b_np, shape))
    assert_same(ga, unbroadcast(ra, a.shape))
    assert_same(gb, unbroadcast(rb, b.shape))


@reproducible(150)
@given(shapes_=shape_tuples(3), seed=seeds)
def test_where_broadcast(shapes_, seed):
    rng = np.random.default_rng(seed)
    c_np = np.asarray(rng.random(shapes_[0]) < 0.5)
    a_np, b_np = randn(rng, shapes_[1]), randn(rng, shapes_[2])
    a = prunus.tensor(a_np, requires_grad=True)
    b = prunus.tensor(b_np, requires_grad=True)
    res = both_raise_or_agree(
        lambda: prunus.where(prunus.tensor(c_np), a, b),
        lambda: np.where(c_np, a_np, b_np),
        E.ShapeError,
    )
    if res is None:
        return
    out, expected = res
    assert_same(out, expected)
    g = randn(rng, expected.shape)
    ga, gb = grads(out, (a, b), g)
    cond = np.broadcast_to(c_np, expected.shape)
    assert_same(ga, unbroadcast(np.where(cond, g, 0.0), a.shape))
    assert_same(gb, unbroadcast(np.where(cond, 0.0, g), b.shape))


# -- 2. type promotion (PyTorch's rules) -----------------------------------------------------

DTYPE_NAMES = [
    "bool",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
]

operands = st.one_of(
    st.tuples(st.just("scalar"), st.sampled_from(["bool", "int", "float"])),
    st.tuples(st.sampled_from(["0d", "nd"]), st.sampled_from(DTYPE_NAMES)),
)

SCALARS = {"bool": True, "int": 3, "float": 2.5}


def make_operand(kind, name, torch):
    """The same operand for prunus and for torch: a Python number or a tensor of `name`."""
    if kind == "scalar":
        v = SCALARS[name]
        return v, v
    v = True if name == "bool" else 2
    data = v if kind == "0d" else [v, v]
    return prunus.tensor(data, dtype=name), torch.tensor(data, dtype=getattr(torch, name))


PROMOTING = {
    "add": (lambda a, b: a + b, lambda a, b: a + b),
    "sub": (lambda a, b: a - b, lambda a, b: a - b),
    "mul": (lambda a, b: a * b, lambda a, b: a * b),
    "where": (lambda a, b: prunus.where(prunus.tensor([True, False]), a, b), None),
    # torch.maximum takes tensors only (prunus also takes numbers: an extension, not compared)
    "maximum": (prunus.maximum, None),
}


@reproducible(300)
@given(op=st.sampled_from(sorted(PROMOTING)), x=operands, y=operands)
def test_type_promotion_matches_torch(op, x, y):
    torch = pytest.importorskip("torch")
    if x[0] == "scalar" and y[0] == "scalar":
        return  # two Python numbers are not a tensor op
    if op == "maximum" and "scalar" in (x[0], y[0]):
        return
    pa, ta = make_operand(*x, torch)
    pb, tb = make_operand(*y, torch)
    pfn, tfn = PROMOTING[op]
    if op == "where":
        tfn = lambda a, b: torch.where(torch.tensor([True, False]), a, b)
    elif op == "maximum":
        tfn = torch.maximum
    res = both_raise_or_agree(lambda: pfn(pa, pb), lambda: tfn(ta, tb), same_builtin=False)
    if res is None:  # torch refuses (bool - bool, bool - number): prunus must refuse too
        return
    got, expected = res
    assert got.dtype.name == str(expected.dtype).removeprefix("torch."), (op, x, y)
    assert got.shape == tuple(expected.shape)
    low = got.dtype in (prunus.float16, prunus.bfloat16)
    np.testing.assert_allclose(
        to_np(got).astype(np.float64),
        expected.to(torch.float64).numpy(),
        rtol=1e-2 if low else 1e-6,
    )


# -- 3. reshape / view / flatten / squeeze / unsqueeze / transpose / permute / expand ----------

dim_ints = st.integers(-5, 5)


@st.composite
def reshape_targets(draw, shape):
    """A shape with shape's number of elements (dims shuffled, merged, 1s added, one -1), or a
    random one (usually invalid: wrong count, two -1s, sizes below -1)."""
    if draw(st.booleans()):
        return tuple(draw(st.lists(st.integers(-2, 6), max_size=4)))
    dims = list(draw(st.permutations(shape)))
    if len(dims) >= 2 and draw(st.booleans()):
        i = draw(st.integers(0, len(dims) - 2))
        dims[i : i + 2] = [dims[i] * dims[i + 1]]
    for _ in range(draw(st.integers(0, 2))):
        dims.insert(draw(st.integers(0, len(dims))), 1)
    if dims and draw(st.booleans()):
        dims[draw(st.integers(0, len(dims) - 1))] = -1
    return tuple(dims)


@st.composite
def expand_targets(draw, shape):
    """Sizes for expand: new leading dims, 1s grown, some dims as -1; or random sizes."""
    if draw(st.booleans()):
        return tuple(draw(st.lists(st.integers(-2, 4), max_size=5)))
    out = [draw(st.sampled_from([-1, 0, 1, 2, 3])) for _ in range(draw(st.integers(0, 2)))]
    for s in shape:
        if s == 1:
            out.append(draw(st.sampled_from([-1, 0, 1, 3])))
        else:
            out.append(draw(st.sampled_from([s, s, -1])))
    return tuple(out)


@st.composite
def dim_lists(draw, ndim):
    """A permutation of range(ndim), some entries negative; or a random list of dims."""
    if draw(st.booleans()):
        return tuple(draw(st.lists(dim_ints, max_size=5)))
    perm = draw(st.permutations(range(ndim)))
    return tuple(d - ndim if draw(st.booleans()) else d for d in perm)


@st.composite
def movement_cases(draw):
    """(op name, shape, args) for one shape op."""
    op = draw(
        st.sampled_from(
            ["reshape", "view", "flatten", "squeeze", "unsqueeze", "transpose", "permute", "expand"]
        )
    )
    shape = draw(shapes)
    if op in ("reshape", "view"):
        args = (draw(reshape_targets(shape)),)
    elif op == "flatten":
        args = (draw(dim_ints), draw(dim_ints))
    elif op == "squeeze":
        args = draw(
            st.one_of(
                st.just(()),
                st.tuples(dim_ints),
                st.tuples(st.lists(dim_ints, max_size=3).map(tuple)),
            )
        )
    elif op == "unsqueeze":
        args = (draw(st.integers(-6, 6)),)
    elif op == "transpose":
        args = (draw(dim_ints), draw(dim_ints))
    elif op == "permute":
        args = (draw(dim_lists(len(shape))),)
    else:
        args = (draw(expand_targets(shape)),)
    return op, shape, args


# The NumPy spelling of each op, where NumPy has one with the same semantics.
NUMPY_MOVES = {
    "reshape": lambda a, s: a.reshape(s),
    "view": lambda a, s: a.reshape(s),
    "unsqueeze": np.expand_dims,
    "permute": lambda a, dims: np.transpose(a, dims),
    "transpose": lambda a, d0, d1: np.swapaxes(a, d0, d1),
}


def _numpy_applies(op, shape, args):
    if op not in NUMPY_MOVES:
        return False  # squeeze(dim) of a size != 1 dim, flatten, expand's -1: PyTorch semantics
    if op in ("reshape", "view") and any(s < -1 for s in args[0]):
        return False  # NumPy reads any negative size as -1; PyTorch and prunus refuse (torch test)
    # PyTorch (and prunus) accept transpose(0, -1) of a 0-d tensor; NumPy does not
    return not (op == "transpose" and not shape)


@reproducible(300)
@given(case=movement_cases(), seed=seeds)
def test_movement_ops_match_numpy(case, seed):
    op, shape, args = case
    if not _numpy_applies(op, shape, args):
        return
    x_np = randn(np.random.default_rng(seed), shape)
    x = prunus.tensor(x_np, requires_grad=True)
    res = both_raise_or_agree(lambda: getattr(x, op)(*args), lambda: NUMPY_MOVES[op](x_np, *args))
    if res is not None:
        out, expected = res
        assert_same(out, expected)
        # the gradient moves back: d sum(out * c) / dx is c moved back to x's layout
        c = randn(np.random.default_rng(seed + 1), expected.shape)
        (gx,) = grads(out, (x,), c)
        assert gx.shape == x.shape
        if op in ("reshape", "view", "unsqueeze"):
            assert_same(gx, c.reshape(shape))


@reproducible(300)
@given(case=movement_cases(), seed=seeds, transposed=st.booleans())
def test_movement_ops_match_torch(case, seed, transposed):
    torch = pytest.importorskip("torch")
    op, shape, args = case
    x_np = randn(np.random.default_rng(seed), shape)
    x = prunus.tensor(x_np)
    tx = torch.tensor(x_np)
    if transposed and len(shape) >= 2:  # a non-contiguous input
        x, tx = x.transpose(0, -1), tx.transpose(0, -1)
    got, prunus_exc = outcome(lambda: getattr(x, op)(*args))
    expected, torch_exc = outcome(lambda: getattr(tx, op)(*args))
    if op == "view" and torch_exc is not None and "view size is not compatible" in str(torch_exc):
        # Deliberate: prunus has no strides, so its view of a non-contiguous tensor copies
        # (as reshape) where PyTorch refuses. It must then agree with reshape.
        expected, torch_exc = tx.reshape(*args), None
    if expected is not None and any(s < 0 for s in expected.shape):
        # A PyTorch bug: tensor(1.).expand(-1, 0) returns a tensor "of shape (-1, 0)" (no check
        # once numel is 0). prunus raises, as PyTorch does for -1 in a new dimension otherwise.
        torch_exc = RuntimeError(f"negative size in {tuple(expected.shape)}")
    event(f"{op}: both raise" if torch_exc is not None else f"{op}: both agree")
    if torch_exc is not None:
        assert isinstance(prunus_exc, E.PrunusError), (
            f"torch raised {torch_exc!r}; prunus gave {prunus_exc!r} / {got!r}"
        )
        return
    if prunus_exc is not None:
        raise AssertionError(
            f"prunus raised, torch returned shape {tuple(expected.shape)}"
        ) from prunus_exc
    assert_same(got, expected)


# -- 4. getitem ------------------------------------------------------------------------------


def _bool_array(draw, shape):
    values = draw(
        st.lists(st.booleans(), min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))
    )
    return np.array(values, dtype=bool).reshape(shape)


@st.composite
def indices(draw, shape):
    """A random index tuple for a tensor of `shape` and its NumPy twin: ints (in and out of
    range), slices (steps of either sign, now and then 0), None, Ellipsis, integer arrays (0-d to
    2-d, in and out of range) and boolean masks (usually matching the dims they cover). prunus
    gets each array as a prunus tensor, a NumPy array or a list; NumPy gets the NumPy array."""
    pos, seen_ellipsis = 0, False  # the dim the next item indexes (known until an Ellipsis)
    items = []  # (prunus item, NumPy item)
    bound = st.one_of(st.none(), st.integers(-6, 6))
    kinds = st.sampled_from(["int", "int", "slice", "slice", "none", "ellipsis", "array", "mask"])
    for _ in range(draw(st.integers(0, min(len(shape) + 2, 5)))):
        kind = draw(kinds)
        size = shape[pos] if not seen_ellipsis and pos < len(shape) else 4
        if kind == "int":
            i = draw(st.integers(-size - 1, size))
            items.append((i, i))
            pos += 1
        elif kind == "slice":
            # step 0 (both raise) now and then
            step = draw(st.sampled_from([None, None, None, -3, -2, -1, 1, 2, 3, 0]))
            s = slice(draw(bound), draw(bound), step)
            items.append((s, s))
            pos += 1
        elif kind == "none":
            items.append((None, None))
        elif kind == "ellipsis":
            items.append((Ellipsis, Ellipsis))
            seen_ellipsis = True
        else:
            if kind == "array":
                ashape = draw(st.sampled_from([(0,), (1,), (2,), (3,), (2, 2), ()]))
                n = int(np.prod(ashape))
                values = draw(st.lists(st.integers(-size - 1, size), min_size=n, max_size=n))
                arr = np.array(values, dtype=np.int64).reshape(ashape)
                pos += 1
            else:
                m = draw(st.integers(0, 2))
                covered = tuple(shape[pos : pos + m])
                if seen_ellipsis or len(covered) != m or draw(st.integers(0, 4)) == 0:
                    # a random shape, never empty: NumPy lets an empty mask index a dim of any
                    # size (a legacy rule); PyTorch and prunus want the mask to match
                    covered = tuple(draw(st.lists(st.integers(1, 3), min_size=m, max_size=m)))
                arr = _bool_array(draw, covered)
                pos += m
            form = draw(st.sampled_from(["tensor", "numpy", "list"]))
            if form == "tensor":
                items.append((prunus.tensor(arr), arr))
            elif form == "list" and arr.ndim and arr.size:  # NumPy reads [] as a float array
                items.append((arr.tolist(), arr))
            else:
                items.append((arr, arr))
    p_index, np_index = tuple(p for p, _ in items), tuple(q for _, q in items)
    if len(items) == 1 and draw(st.booleans()):  # x[i] as well as x[(i,)]
        return p_index[0], np_index[0]
    return p_index, np_index


@st.composite
def index_cases(draw):
    shape = draw(shapes)
    return shape, draw(indices(shape))


def _empty_broadcast_of_int_arrays(np_index):
    """NumPy (and PyTorch) skip bounds checks when the integer-array indices broadcast to an empty
    result (np.zeros((3, 3))[[5], []] is empty, and so is np.zeros(0)[np.array(False), [0]]);
    prunus checks every index value first and raises. Deliberate: a stricter check that names
    the bad index."""
    items = np_index if isinstance(np_index, tuple) else (np_index,)
    arrays = [i for i in items if isinstance(i, np.ndarray)]
    if len(arrays) < 2 or not any(a.dtype.kind == "i" for a in arrays):
        return False
    shapes = [(int(a.sum()),) if a.dtype.kind == "b" else a.shape for a in arrays]
    try:
        return 0 in np.broadcast_shapes(*shapes)
    except ValueError:
        return False


@reproducible(400)
@given(case=index_cases(), seed=seeds)
def test_getitem_matches_numpy(case, seed):
    shape, (p_index, np_index) = case
    if _empty_broadcast_of_int_arrays(np_index):
        return
    rng = np.random.default_rng(seed)
    x_np = randn(rng, shape)
    x = prunus.tensor(x_np, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NumPy's deprecation warnings for odd indices
        res = both_raise_or_agree(lambda: x[p_index], lambda: x_np[np_index])
    if res is None:
        return
    out, expected = res
    assert_same(out, expected)
    # gradient of sum(x[idx] * c): c scattered back, adding where an index repeats
    c = randn(rng, expected.shape)
    (gx,) = grads((out * prunus.tensor(c)).sum(), (x,), np.asarray(1.0))
    ref = np.zeros(shape)
    np.add.at(ref, np_index, c)
    assert_same(gx, ref)


def test_getitem_errors_are_index_errors():
    """prunus's index errors are also IndexError, like NumPy's and PyTorch's."""
    for bad in (
        lambda: prunus.zeros(2, 3)[2],
        lambda: prunus.zeros(2)[0, 0],
        lambda: prunus.zeros(2)[[3]],
    ):
        with pytest.raises(IndexError) as info:
            bad()
        assert isinstance(info.value, E.IndexOutOfRangeError)


# -- 5. cat / stack / split / chunk round trips ----------------------------------------------


@st.composite
def split_cases(draw):
    shape = draw(nonscalar_shapes)
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[dim]
    if draw(st.booleans()):
        how = draw(st.integers(1, 5))  # split_size
    else:  # sections: a random composition of n
        cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
        how = [b - a for a, b in zip([0] + cuts, cuts + [n])]
    return shape, dim, how


@reproducible(150)
@given(case=split_cases(), chunks=st.integers(1, 5), seed=seeds)
def test_split_chunk_then_cat_round_trip(case, chunks, seed):
    shape, dim, how = case
    rng = np.random.default_rng(seed)
    x_np = randn(rng, shape)
    x = prunus.tensor(x_np, requires_grad=True)
    for parts in (x.split(how, dim), x.chunk(chunks, dim)):
        assert all(p.ndim == x.ndim for p in parts)
        back = prunus.cat(parts, dim)
        assert_same(back, x_np)
        c = randn(rng, shape)
        (gx,) = grads(back, (x,), c)
        assert_same(gx, c)
    # the pieces agree with NumPy's split at the same cut points
    n = shape[dim]
    sizes = [min(how, n - s) for s in range(0, n, how)] if isinstance(how, int) else how
    expected = np.split(x_np, np.cumsum(sizes)[:-1], axis=dim) if sizes else [x_np]
    got = x.split(how, dim)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert_same(g, e)


@reproducible(100)
@given(case=split_cases(), chunks=st.integers(1, 5))
def test_split_chunk_match_torch(case, chunks):
    torch = pytest.importorskip("torch")
    shape, dim, how = case
    x_np = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    x, tx = prunus.tensor(x_np), torch.tensor(x_np)
    for got, expected in (
        (x.split(how, dim), tx.split(how, dim)),
        (x.chunk(chunks, dim), tx.chunk(chunks, dim)),
    ):
        assert [p.shape for p in got] == [tuple(p.shape) for p in expected]
        for g, e in zip(got, expected):
            assert_same(g, e)


@reproducible(150)
@given(shape=shapes, k=st.integers(1, 4), data=st.data(), seed=seeds)
def test_stack_then_unbind_round_trip(shape, k, data, seed):
    rng = np.random.default_rng(seed)
    xs_np = [randn(rng, shape) for _ in range(k)]
    xs = [prunus.tensor(a, requires_grad=True) for a in xs_np]
    dim = data.draw(st.integers(-len(shape) - 3, len(shape) + 2), label="dim")
    res = both_raise_or_agree(lambda: prunus.stack(xs, dim), lambda: np.stack(xs_np, dim))
    if res is None:
        return
    out, expected = res
    assert_same(out, expected)
    d = dim % (len(shape) + 1)
    for i, a in enumerate(xs_np):
        assert_same(out[(slice(None),) * d + (i,)], a)
    c = randn(rng, expected.shape)
    gs = grads(out, tuple(xs), c)
    for i, g in enumerate(gs):
        assert_same(g, np.take(c, i, axis=d))


@reproducible(100)
@given(shapes_=st.lists(shapes, min_size=1, max_size=3), dim=st.integers(-5, 4))
def test_cat_matches_numpy(shapes_, dim):
    xs_np = [np.full(s, float(i)) for i, s in enumerate(shapes_)]
    xs = [prunus.tensor(a) for a in xs_np]
    res = both_raise_or_agree(lambda: prunus.cat(xs, dim), lambda: np.concatenate(xs_np, dim))
    if res is not None:
        assert_same(*res)


# -- 6. reductions ---------------------------------------------------------------------------


@st.composite
def reduction_dims(draw, ndim):
    """None, one int, or a tuple/list of ints (in or out of range, possibly repeated)."""
    return draw(
        st.one_of(
            st.none(),
            st.integers(-ndim - 1, ndim),
            st.lists(st.integers(-ndim - 1, ndim), max_size=ndim + 1).map(tuple),
            st.permutations(range(ndim)).flatmap(
                lambda p: st.integers(0, len(p)).map(lambda k: list(p[:k]))
            ),
        )
    )


def _logsumexp_ref(a, axis, keepdims):
    a = a.astype(np.float64)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(a).sum(axis=axis, keepdims=keepdims))


REDUCTIONS = {
    "sum": np.sum,
    "mean": np.mean,
    "amax": np.amax,
    "logsumexp": _logsumexp_ref,
}


def _numpy_axis(dim):
    if dim is None:
        return None
    if isinstance(dim, (tuple, list)):
        # PyTorch and prunus read dim=() / [] as "all dims"; NumPy's axis=() reduces nothing
        return tuple(dim) if len(dim) else None
    return dim


@reproducible(300)
@given(
    op=st.sampled_from(sorted(REDUCTIONS)),
    shape=nonscalar_shapes,
    data=st.data(),
    keepdim=st.booleans(),
    seed=seeds,
    dtype=st.sampled_from(["float32", "float64"]),
)
def test_reductions_match_numpy(op, shape, data, keepdim, seed, dtype):
    dim = data.draw(reduction_dims(len(shape)), label="dim")
    x_np = randn(np.random.default_rng(seed), shape).astype(dtype)
    x = prunus.tensor(x_np)
    axis = _numpy_axis(dim)

    def oracle():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # mean of an empty slice is nan
            return REDUCTIONS[op](x_np, axis=axis, keepdims=keepdim)

    res = both_raise_or_agree(lambda: getattr(x, op)(dim, keepdim), oracle)
    if res is None:
        return
    got, expected = res
    assert got.dtype.name == dtype
    tol = 1e-5 if dtype == "float32" else 1e-12
    assert_same(got, expected, rtol=tol, atol=tol)


@reproducible(150)
@given(
    op=st.sampled_from(sorted(REDUCTIONS)),
    shape=shapes,
    data=st.data(),
    keepdim=st.booleans(),
    seed=seeds,
    dtype=st.sampled_from(["float64", "float64", "float32", "int32", "bool"]),
)
def test_reductions_match_torch(op, shape, data, keepdim, seed, dtype):
    """PyTorch's own cases: 0-d tensors accept dim 0 and -1; dim=() means all dims; integer
    and bool inputs (sum gives int64, mean refuses, logsumexp computes in the default float)."""
    torch = pytest.importorskip("torch")
    dim = data.draw(reduction_dims(len(shape)), label="dim")
    if op == "logsumexp" and isinstance(dim, (tuple, list)) and not dim:
        return  # torch.logsumexp(x, dim=()) fails inside PyTorch; prunus reduces all, as sum does
    if dim is None and op == "logsumexp":
        return  # torch.logsumexp requires dim
    x_np = np.asarray(randn(np.random.default_rng(seed), shape) * 3).astype(dtype)
    x, tx = prunus.tensor(x_np), torch.tensor(x_np)
    targs = () if dim is None else (dim, keepdim)
    if dim is None and keepdim:
        return  # torch.sum(x, keepdim=True) without dim is not a signature
    res = both_raise_or_agree(
        lambda: getattr(x, op)(dim, keepdim), lambda: getattr(tx, op)(*targs), same_builtin=False
    )
    if res is not None:
        got, expected = res
        assert got.dtype.name == str(expected.dtype).removeprefix("torch.")
        assert_same(got, expected, rtol=1e-6, atol=1e-6)


@reproducible(60)
@given(shape=nonscalar_shapes, seed=seeds, scale=st.sampled_from([1.0, 50.0, 1000.0]))
def test_logsumexp_stable(shape, seed, scale):
    """Large inputs do not overflow: prunus's float32 logsumexp matches a float64 reference."""
    x_np = (randn(np.random.default_rng(seed), shape) * scale).astype(np.float32)
    got = prunus.tensor(x_np).logsumexp(-1)
    m = x_np.astype(np.float64).max(axis=-1, keepdims=True, initial=-np.inf)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        ref = (np.log(np.exp(x_np - m).sum(axis=-1, keepdims=True)) + m).squeeze(-1)
    assert_same(got, ref, rtol=1e-5, atol=1e-5 * scale)
