"""ONNX export of control flow: prunus.cond -> If, prunus.while_loop -> Loop (and the results
after the first of either). Each model is exported, checked with onnx.checker (full_check) and run
in onnxruntime against prunus on several inputs that take both branches / several trip counts;
also nested control flow, dynamic batch, opsets, a folded cond and the refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("onnx.checker")
pytest.importorskip("onnxruntime")

import onnxruntime as ort

import prunus
import prunus.onnx
from prunus import nn
from prunus.errors import ArgumentError


def _x(*shape, seed=0, scale=1.0, shift=0.0):
    rng = np.random.default_rng(seed)
    return prunus.tensor((rng.standard_normal(shape) * scale + shift).astype(np.float32))


def _ops(proto) -> list:
    return [n.op_type for n in proto.graph.node]


def _run(proto, feed):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


# -- cond -> If -----------------------------------------------------------------------------------


class Gate(nn.Module):
    """A cond whose branches read parameters (lifted) and return two results."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.W = nn.Parameter(prunus.randn(4, 3))

    def forward(self, x):
        h = x * 1.5
        y, z = prunus.cond(
            h.sum() > 0,
            lambda a: (self.fc(a).tanh(), a.exp()),
            lambda a: (a @ self.W - 1.0, a * a),
            h,
        )
        return y + 1.0, z


def test_cond_in_a_module_both_branches_lifted_parameters_two_results(roundtrip):
    prunus.manual_seed(0)
    model = Gate()
    xs = [_x(2, 4, seed=s, shift=sh) for s, sh in ((1, 2.0), (2, -2.0), (3, 1.0), (4, -1.0))]
    assert {bool((x.numpy() * 1.5).sum() > 0) for x in xs} == {True, False}  # both branches
    proto, _ = roundtrip(model, xs[0], xs)
    assert "If" in _ops(proto)
    node = next(n for n in proto.graph.node if n.op_type == "If")
    assert len(node.output) == 2
    names = {i.name for i in proto.graph.initializer}
    assert {"fc.weight", "fc.bias", "W"} <= names  # the branches read the outer initializers


def test_cond_on_a_one_element_float_predicate_and_pass_through_results(roundtrip):
    # the predicate is float32 (1, 1): the If gets it reshaped to a scalar and cast to bool; the
    # true branch returns its operand itself and a constant, which ONNX branches must make
    # (the false branch returns one value twice: ONNX lists a graph output once, so an Identity)
    def fn(x, p):
        def twice(a):
            b = a * 2
            return b, a + 1, b

        return prunus.cond(p, lambda a: (a, prunus.ones(3), a), twice, x)

    runs = [(_x(3, seed=s), prunus.tensor(np.array([[v]], np.float32)))
            for s, v in ((1, 0.0), (2, 2.5), (3, -1.0), (4, 0.0))]
    roundtrip(fn, runs[0], runs)


def test_cond_with_integer_results_and_a_comparison_of_two_inputs(roundtrip):
    def fn(x, y):
        return prunus.cond((x.sum() > y.sum()), lambda a, b: (a - b).argmax(),
                           lambda a, b: (b * 2).argmax(), x, y)

    runs = [(_x(5, seed=s), _x(5, seed=s + 10)) for s in range(4)]
    assert len({bool(x.numpy().sum() > y.numpy().sum()) for x, y in runs}) == 2
    roundtrip(fn, runs[0], runs)


def test_a_cond_on_parameters_only_is_folded_and_its_other_result_still_exported(roundtrip):
    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(prunus.randn(3))
            self.q = nn.Parameter(prunus.randn(3))

        def forward(self, x):
            a, b = prunus.cond(self.p.sum() > -100, lambda t: (t * 2, t + 1), lambda t: (t, t - 1),
                               self.q)
            return x * a, x - b

    prunus.manual_seed(3)
    roundtrip(Fixed(), _x(3), [_x(3, seed=s) for s in range(3)])


# -- while_loop -> Loop ---------------------------------------------------------------------------


class Repeat(nn.Module):
    """y = tanh(y @ W) while a counter < n, n an input tensor."""

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(prunus.randn(4, 4) * 0.5)

    def forward(self, x, n):
        i0 = prunus.zeros((), dtype=prunus.int64)
        i, y = prunus.while_loop(lambda i, y: i < n, lambda i, y: (i + 1, (y @ self.W).tanh()),
                                 (i0, x))
        return y, i


def test_while_loop_with_a_trip_count_from_an_input(roundtrip):
    prunus.manual_seed(1)
    model = Repeat()
    runs = [(_x(2, 4, seed=s), prunus.tensor(n)) for s, n in ((0, 3), (1, 0), (2, 1), (3, 5))]
    proto, _ = roundtrip(model, runs[0], runs)
    assert "Loop" in _ops(proto)
    loop = next(n for n in proto.graph.node if n.op_type == "Loop")
    assert loop.input[0] == ""  # no trip limit: the condition alone stops it


def _halve_until_small(x):
    """Halve x until its squared norm is at most 1, counting the steps: the trip count depends
    on the data."""
    k0 = prunus.zeros((), dtype=prunus.int32)
    k, y = prunus.while_loop(lambda k, y: (y * y).sum() > 1.0, lambda k, y: (k + 1, y * 0.5),
                             (k0, x))
    return y, k


def test_while_loop_whose_trip_count_depends_on_the_data(roundtrip):
    runs = [_x(3, 2, seed=s, scale=sc) for s, sc in ((0, 0.1), (1, 2.0), (2, 30.0), (3, 500.0))]
    trips = {int(_halve_until_small(x)[1].numpy()) for x in runs}
    assert len(trips) >= 3, trips
    roundtrip(_halve_until_small, runs[0], runs)


def test_a_loop_variable_the_body_leaves_alone_and_a_bool_flag_as_the_condition(roundtrip):
    def fn(x):
        def body(go, y, z):
            y = y * 0.7
            return y.abs().max() > 0.1, y, z

        return prunus.while_loop(lambda go, y, z: go, body, (x.sum() > -1e9, x, x + 1))[1:]

    roundtrip(fn, _x(4), [_x(4, seed=s, scale=sc) for s, sc in ((1, 1.0), (2, 20.0), (3, 0.01))])


# -- nesting, dynamic axes, opsets ----------------------------------------------------------------


def _nested(x, n):
    """A two-result cond inside a loop body, and a loop inside a cond branch; the bodies and
    branches also read an outer input (x) and an outer intermediate (m) directly (lifted)."""
    m = x.mean()

    def body(i, y, s):
        y, t = prunus.cond(y.sum() > m, lambda a: (a - 0.75, a.max()),
                           lambda a: ((a + 0.5).tanh(), a.min() + m), y)
        return i + 1, y, s + t

    def loop_branch(a):
        return prunus.while_loop(lambda t: t.abs().sum() > 1.0, lambda t: (t * 0.5,), (a,))[0]

    i0 = prunus.zeros((), dtype=prunus.int64)
    _, y, s = prunus.while_loop(lambda i, y, s: i < n, body, (i0, x, m * 0.0))
    return prunus.cond(m > 0, loop_branch, lambda a: a * 3.0 + x, y), s


def test_nested_control_flow(roundtrip):
    runs = [(_x(2, 3, seed=s, scale=3.0, shift=sh), prunus.tensor(n))
            for s, sh, n in ((0, 1.0, 2), (1, -1.0, 4), (2, 2.0, 0), (3, -0.5, 7))]
    assert {bool(x.numpy().mean() > 0) for x, _ in runs} == {True, False}  # both branches
    roundtrip(_nested, runs[0], runs)


class Batched(nn.Module):
    """Control flow whose shapes follow the batch: a cond and a loop over (batch, 4) tensors."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        h = prunus.cond(x.mean() > 0, lambda a: self.fc(a).relu(), lambda a: a * -1.0, x)
        i0 = prunus.zeros((), dtype=prunus.int64)
        _, h = prunus.while_loop(lambda i, h: (i < 3) & (h.abs().sum() < 1e4),
                                 lambda i, h: (i + 1, self.fc(h) + h), (i0, h))
        return h.sum(1)


def test_dynamic_batch_through_cond_and_loop(roundtrip):
    prunus.manual_seed(2)
    model = Batched()
    runs = [_x(b, 4, seed=b, shift=sh) for b, sh in ((2, 1.0), (5, -1.0), (1, 0.5), (7, -0.3))]
    assert {bool(x.numpy().mean() > 0) for x in runs} == {True, False}
    proto, _ = roundtrip(model, runs[0], runs, dynamic_axes={"x": {0: "batch"}})
    dims = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch"]


@pytest.mark.parametrize("opset", [13, 17, "newest"])
def test_opsets(roundtrip, opset):
    import onnx

    opset = onnx.defs.onnx_opset_version() if opset == "newest" else opset
    runs = [(_x(2, 3, seed=s, scale=2.0), prunus.tensor(n)) for s, n in ((0, 2), (1, 3), (2, 1))]
    roundtrip(_nested, runs[0], runs, opset=opset)


# -- refusals -------------------------------------------------------------------------------------


def test_a_branch_that_bakes_in_the_batch_size_is_refused_naming_the_branch():
    def fn(x):
        return prunus.cond(x.sum() > 0, lambda a: a.narrow(0, 0, a.shape[0] - 1) * 2,
                           lambda a: a[1:], x)

    with pytest.raises(ArgumentError,
                       match=r"op Index .* in the true branch of op Cond .*dynamic axis 'batch'"):
        prunus.onnx.export(fn, _x(3, 2), io.BytesIO(), dynamic_axes={"x": {0: "batch"}})


def test_an_op_without_a_converter_inside_a_loop_body_is_named_with_where_it_is():
    from prunus.nn import functional as F

    def fn(x):
        return prunus.while_loop(lambda y: y.sum() > 1,
                                 lambda y: (F.dropout(y, 0.5, training=True) * 0.1,), (x,))[0]

    with pytest.raises(ArgumentError, match=r"op Dropout .* in the body_fn of op WhileLoop.*no ONNX"):
        prunus.onnx.export(fn, _x(3, scale=10.0), io.BytesIO())


def test_the_backward_of_a_while_loop_is_refused():
    def fn(x):
        with prunus.enable_grad():
            w = x.detach().requires_grad_(True)
            y = prunus.while_loop(lambda i, a: i < 3, lambda i, a: (i + 1, a * a),
                                  (prunus.zeros((), dtype=prunus.int64), w))[1]
            (g,) = prunus.autograd.grad(y.sum(), [w])
        return g

    with pytest.raises(ArgumentError, match=r"WhileLoopGrad.*backward of a prunus.while_loop"):
        prunus.onnx.export(fn, _x(3), io.BytesIO())


def test_control_flow_ops_are_listed_as_supported():
    ops = prunus.onnx.supported_ops()
    assert {"Cond", "WhileLoop", "Output"} <= set(ops)
    assert "WhileLoopGrad" not in ops


def test_the_smallest_cond_and_loop_export_to_one_if_and_one_loop():
    # (before the converters landed, these two were refused as reserved for If and Loop)
    def branch(x):
        return prunus.cond(x.sum() > 0, lambda a: a * 2, lambda a: a - 1, x)

    def loop(x):
        return prunus.while_loop(lambda i, a: i < 3, lambda i, a: (i + 1, a * 2),
                                 (prunus.tensor(0), x))[1]

    for fn, op in ((branch, "If"), (loop, "Loop")):
        proto = prunus.onnx.export(fn, _x(2), io.BytesIO())
        assert _ops(proto).count(op) == 1
        for s in range(4):
            x = _x(2, seed=s)
            (got,) = _run(proto, {"x": x.numpy()})
            np.testing.assert_allclose(got, fn(x).numpy(), rtol=1e-6)
