"""ONNX converters, family by family (mirroring prunus/onnx/converters/): small functions of prunus
ops exported, checked with onnx.checker (full_check) and run in onnxruntime against prunus on
three random inputs each; several with a dynamic batch dimension run at other batch sizes."""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("onnx.checker")
pytest.importorskip("onnxruntime")

import prunus
from prunus.nn import functional as F


def t(a):
    return prunus.tensor(np.asarray(a))


def randn(rng, *shape, dtype=np.float32):
    return t(rng.standard_normal(shape).astype(dtype))


def runs(make, seeds=(0, 1, 2)):
    return [make(np.random.default_rng(s)) for s in seeds]


def two(shape_a, shape_b=None):
    return lambda rng: (randn(rng, *shape_a), randn(rng, *(shape_b or shape_a)))


# -- elementwise ----------------------------------------------------------------------------------


def arithmetic(a, b):
    pos = a.abs() + 0.1
    return (a + b, a - b, a * b, a / (b.abs() + 0.5), pos ** b, pos ** 2, prunus.maximum(a, b),
            prunus.minimum(a, b), -a, a.clamp(-0.5, 0.5), a.clamp(min=0.1), a.clamp(max=0.2),
            a * 2 + 1, 3 - a, 1 / pos, a + b[0])


def unary(a):
    p = a.abs()
    return (a.exp(), (p + 0.1).log(), p.log1p(), a.expm1(), p.sqrt(), (p + 0.1).rsqrt(), a.sin(),
            a.cos(), a.floor(), a.abs(), a.sign())


def compare(a, b):
    a, b = (a * 2).floor(), (b * 2).floor()  # small integers in float: equal pairs happen
    return (a == b, a != b, a < b, a <= b, a > b, a >= b, prunus.where(a > b, a, b),
            prunus.where(a > 0, a, 0.0), (a > 0) & (b > 0), (a > 0) | (b > 0), (a > 0) ^ (b > 0),
            ~(a > 0))


def divmod_float(a, b):
    b = (b.abs() + 0.5) * b.sign()
    return a * 3 // b, (a * 3) % b, a % 0.7


@pytest.mark.parametrize("fn,make", [
    (arithmetic, two((3, 4))),
    (unary, lambda rng: randn(rng, 2, 5)),
    (compare, two((4, 5))),
    (divmod_float, two((3, 7))),
])
def test_elementwise(roundtrip, fn, make):
    roundtrip(fn, make(np.random.default_rng(9)), runs(make))


def ints(rng, *shape):
    return t(rng.integers(-20, 20, shape).astype(np.int64))


def integer_ops(a, b):
    b = prunus.where(b == 0, 3, b)
    return (a // b, a % b, a + b, a * b, -a, a.abs(), prunus.maximum(a, b), a & b, a | b, a ^ b, ~a,
            a.clamp(-5, 7), a.sum(1), a.amax(0), a ** 2, a == b, a.to(prunus.float32) / 4)


def test_elementwise_integers_and_bitwise(roundtrip):
    make = lambda rng: (ints(rng, 4, 6), ints(rng, 4, 6))
    roundtrip(integer_ops, make(np.random.default_rng(5)), runs(make), opset=18)


def test_isfinite_and_non_finite_values(roundtrip):
    def make(rng):
        a = rng.standard_normal((3, 4)).astype(np.float32)
        a[0, 0], a[1, 1], a[2, 2] = np.inf, -np.inf, np.nan
        return t(a)

    roundtrip(lambda a: (prunus.isfinite(a), prunus.isfinite((a > 0).to(prunus.int64))),
              make(np.random.default_rng(1)), runs(make))


def test_bitwise_ops_need_opset_18():
    from prunus.errors import ArgumentError

    a = t(np.arange(6, dtype=np.int64))
    with pytest.raises(ArgumentError, match=r"opset >= 18") as e:
        prunus.onnx.export(lambda x: x & 3, a, io.BytesIO(), opset=17)
    assert "LogicalAnd" in str(e.value)


# -- activation -----------------------------------------------------------------------------------


def activations(x):
    return (prunus.erf(x), F.softplus(x), F.softplus(x, beta=2.0), F.sigmoid(x), F.tanh(x),
            F.relu(x), F.leaky_relu(x, 0.1), F.elu(x, 0.5), F.gelu(x), F.gelu(x, approximate="tanh"),
            F.softmax(x, 0), F.log_softmax(x, -1))


@pytest.mark.parametrize("opset", [13, 17, 20])
def test_activations_at_large_and_small_values(roundtrip, opset):
    # |x| up to 60: softplus, sigmoid, softmax must stay finite and exact in both runtimes
    make = lambda rng: t((rng.standard_normal((4, 6)) * 20).astype(np.float32))
    roundtrip(activations, make(np.random.default_rng(3)), runs(make), opset=opset)


# -- reduce ---------------------------------------------------------------------------------------


def reductions(x):
    mx = x.max(1)
    mn = x.min(-1, keepdim=True)
    return (x.sum(), x.sum(1), x.sum((0, 2), keepdim=True), x.mean(), x.mean(-1, keepdim=True),
            (x * 0.5).prod(2), x.amax((1, 2)), x.amin(0), x.argmax(), x.argmax(1), x.argmin(2, keepdim=True),
            (x > 0).all(1), (x > 0).any(), (x > 1).sum(2), x.logsumexp(1), x.logsumexp((0, 2), keepdim=True),
            x.var(1), x.std(), mx.values, mx.indices, mn.values, mn.indices, x.max(), x.min())


def test_reductions(roundtrip):
    make = lambda rng: randn(rng, 3, 4, 5)
    roundtrip(reductions, make(np.random.default_rng(4)), runs(make))


def test_logsumexp_of_large_values_stays_finite(roundtrip):
    make = lambda rng: t((rng.standard_normal((2, 8)) * 400).astype(np.float32))
    roundtrip(lambda x: x.logsumexp(1), make(np.random.default_rng(0)), runs(make))


def test_reductions_over_a_dynamic_batch(roundtrip):
    def fn(x):
        return x.sum(0), x.mean(), x.amax(0, keepdim=True), x.argmax(0), x.var(1), x.logsumexp(0)

    example = randn(np.random.default_rng(0), 3, 5)
    roundtrip(fn, example, [randn(np.random.default_rng(s), n, 5) for s, n in enumerate((3, 7, 1))],
              dynamic_axes={"x": {0: "n"}})


def test_variance_over_a_dynamic_axis_is_refused_not_baked():
    # var divides by n - 1 computed in Python while tracing: a constant that would be wrong at
    # any other batch size, so export says so instead of writing it
    from prunus.errors import ArgumentError

    with pytest.raises(ArgumentError, match=r"changes with the size of a dynamic axis"):
        prunus.onnx.export(lambda x: x.var(0), prunus.randn(3, 5), io.BytesIO(),
                           dynamic_axes={"x": {0: "n"}})


# -- movement -------------------------------------------------------------------------------------


def movement(x):
    y = x.permute(2, 0, 1)
    parts = x.split([1, 2], dim=1)
    return (x.reshape(6, 4), x.view(-1), x.flatten(1), x.flatten(), x[:, :1].squeeze(1),
            x.unsqueeze(0), y, x.transpose(0, 2), x[0].T, x[:, :1].expand(2, 5, 4),
            prunus.cat([x, x * 2], 1), prunus.stack([x, -x], 0), parts[0], parts[1], x.chunk(2, 2)[1],
            prunus.pad(x, (1, 2, 0, 1), value=0.5),
            x.flip(0), x.flip((1, 2)), x.repeat(2, 1, 3), x.repeat(2, 1, 1, 1), prunus.tril(x),
            prunus.triu(x, 1), prunus.tril(x, -1), y.contiguous(), x.clone(), x.sum_to_size(1, 3, 1),
            x.sum_to_size(4))


def test_movement(roundtrip):
    make = lambda rng: randn(rng, 2, 3, 4)
    roundtrip(movement, make(np.random.default_rng(5)), runs(make))


def test_tril_needs_opset_14():
    from prunus.errors import ArgumentError

    with pytest.raises(ArgumentError, match=r"Tril .*opset >= 14"):
        prunus.onnx.export(prunus.tril, prunus.randn(3, 3), io.BytesIO(), opset=13)


def dynamic_movement(x, y):
    b = x.shape[0]
    z = x.reshape(b, 12)  # the traced batch size, written as a dynamic dim
    return (z, x.flatten(1), x.reshape(b * 3, 4), x.unsqueeze(1), x.permute(1, 0, 2).reshape(3, -1),
            x.reshape(b, 3, 2, 2), x[:, :1].expand(b, 3, 4), prunus.cat([x, x], 0), x * y.reshape(1, 3, 1),
            x.reshape(b, 3, 4, 1, 1).flatten(2), x.sum_to_size(1, 3, 4))


def test_movement_with_a_dynamic_batch(roundtrip):
    def make(n):
        return lambda rng: (randn(rng, n, 3, 4), randn(rng, 3))

    example = make(2)(np.random.default_rng(0))
    run_list = [make(n)(np.random.default_rng(n)) for n in (2, 5, 1)]
    roundtrip(dynamic_movement, example, run_list, dynamic_axes={"x": {0: "batch"}})


def test_reshape_with_two_dynamic_axes_reads_the_shape_at_run_time(roundtrip):
    def fn(x):
        n, c, h = x.shape
        return (x.reshape(n, c * h), x.permute(2, 0, 1).reshape(h, n * c), x.reshape(n, c, h, 1),
                x.reshape(h, n, c), x.reshape(h, 1, n * c), x.reshape(c, h, n))

    example = randn(np.random.default_rng(0), 2, 3, 4)
    run_list = [randn(np.random.default_rng(s), n, 3, h) for s, (n, h) in enumerate([(2, 4), (5, 2), (1, 7)])]
    proto, _ = roundtrip(fn, example, run_list, dynamic_axes={"x": {0: "n", 2: "h"}})
    dims = [[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in proto.graph.output]
    assert dims[0][0] == "n" and dims[3] == ["h", "n", 3] and dims[4][:2] == ["h", 1]
    assert "Shape" in {n.op_type for n in proto.graph.node}  # (h, n, c): read at run time


def test_reshape_that_two_dynamic_axes_cannot_express_is_refused():
    from prunus.errors import ArgumentError

    def fn(x):
        n, _, h, _ = x.shape
        return x.reshape(n * 2, h * 2, 1)

    with pytest.raises(ArgumentError, match=r"Reshape .*can infer only one"):
        prunus.onnx.export(fn, prunus.randn(2, 2, 3, 2), io.BytesIO(),
                           dynamic_axes={"x": {0: "n", 2: "h"}})


# -- indexing -------------------------------------------------------------------------------------


MASK = np.array([True, False, True, True])


def indexing(x, idx, m):
    return (x[0], x[:, 1:3], x[..., -1], x[None, :, ::2], x[::-1], x[-2:, 1::-1, ::3], x[1, -1, 2],
            x[:, [2, 0, 2]], x[idx], x[:, idx, 1:], x[0, :, idx], x[1, idx], x[MASK], x[..., None, 1],
            x.gather(1, idx.reshape(1, 4, 1).expand(3, 4, 5) % 4), x.index_select(2, idx), x.masked_fill(m, -1.0),
            x[:, :, :3].gather(2, (idx.reshape(1, 1, 4) % 3).expand(2, 2, 4)))


def test_indexing(roundtrip):
    def make(rng):
        return (randn(rng, 4, 4, 5), t(rng.integers(-4, 4, 4).astype(np.int64)),
                t(rng.random((4, 5)) > 0.5))

    roundtrip(indexing, make(np.random.default_rng(6)), runs(make))


def test_embedding(roundtrip):
    emb = prunus.nn.Embedding(10, 3)

    def make(rng):
        return t(rng.integers(0, 10, (2, 5)).astype(np.int64))

    roundtrip(emb, make(np.random.default_rng(0)), runs(make))


def test_indexing_with_two_array_indices_is_refused():
    from prunus.errors import ArgumentError

    x = prunus.randn(3, 4)
    with pytest.raises(ArgumentError, match=r"Index.*one integer-array"):
        prunus.onnx.export(lambda a: a[[0, 1], [2, 3]], x, io.BytesIO())


# -- linalg ---------------------------------------------------------------------------------------


def products(a, b, v, w):
    return (a @ b, v @ b, a @ w, prunus.mm(a, b), prunus.dot(w, w), prunus.outer(v, w),
            prunus.bmm(a.unsqueeze(0).expand(2, 3, 4), b.unsqueeze(0).expand(2, 4, 5)),
            a.reshape(1, 3, 1, 4) @ b, F.linear(a, b.T), F.linear(a.reshape(3, 1, 4), b.T),
            F.linear(a.reshape(3, 1, 4), b.T, b[0]))


def test_matmul_and_linear(roundtrip):
    def make(rng):
        return randn(rng, 3, 4), randn(rng, 4, 5), randn(rng, 4), randn(rng, 4)

    roundtrip(products, make(np.random.default_rng(7)), runs(make))


# -- conv and pooling -----------------------------------------------------------------------------


def convolutions(x, w, wg, b):
    return (F.conv2d(x, w, b), F.conv2d(x, w, None, stride=2, padding=1), F.conv2d(x, w, b, dilation=2),
            F.conv2d(x, wg, None, padding="same", groups=2), F.conv2d(x, w, b, stride=(1, 2), padding=(2, 0)))


def test_conv2d(roundtrip):
    def make(rng):
        return randn(rng, 2, 4, 9, 9), randn(rng, 6, 4, 3, 3), randn(rng, 6, 2, 3, 3), randn(rng, 6)

    roundtrip(convolutions, make(np.random.default_rng(8)), runs(make))


def pooling(x):
    return (F.max_pool2d(x, 2), F.max_pool2d(x, 3, stride=2, padding=1), F.max_pool2d(x, 3, 2, ceil_mode=True),
            F.max_pool2d(x, 2, stride=3, ceil_mode=True), F.max_pool2d(x, 3, 1, padding=1, dilation=2),
            F.max_pool2d(x, (2, 3), stride=(3, 1), padding=(1, 0), ceil_mode=True),
            F.avg_pool2d(x, 2), F.avg_pool2d(x, 3, 2, padding=1),
            F.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False), F.avg_pool2d(x, 3, 2, ceil_mode=True),
            F.avg_pool2d(x, 2, 3, padding=1, ceil_mode=True, count_include_pad=False),
            F.avg_pool2d(x, 3, divisor_override=4),
            F.adaptive_avg_pool2d(x, 1), F.adaptive_avg_pool2d(x, (3, 1)), F.adaptive_avg_pool2d(x, (4, 5)))


def test_pooling(roundtrip):
    make = lambda rng: randn(rng, 2, 3, 9, 10)
    roundtrip(pooling, make(np.random.default_rng(9)), runs(make))


def test_conv_and_pooling_with_dynamic_batch_and_image_size(roundtrip):
    conv = prunus.nn.Conv2d(3, 4, 3, padding=1)

    def fn(x):
        y = conv(x)
        return F.max_pool2d(y, 2), F.avg_pool2d(y, 3, 1, padding=1), F.adaptive_avg_pool2d(y, 1)

    example = randn(np.random.default_rng(0), 2, 3, 8, 8)
    run_list = [randn(np.random.default_rng(s), n, 3, h, w)
                for s, (n, h, w) in enumerate([(2, 8, 8), (3, 12, 6), (1, 5, 9)])]
    roundtrip(fn, example, run_list, dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})


# -- loss and normalization -----------------------------------------------------------------------


def losses(z, target, y):
    w = prunus.tensor(np.linspace(0.5, 2.0, 5).astype(np.float32))
    return (F.cross_entropy(z, target), F.cross_entropy(z, target, reduction="sum"),
            F.cross_entropy(z, target, reduction="none"), F.cross_entropy(z, target, ignore_index=2),
            F.cross_entropy(z, target, weight=w), F.cross_entropy(z, target, label_smoothing=0.1),
            F.cross_entropy(z, target, weight=w, label_smoothing=0.2, reduction="none", ignore_index=1),
            F.cross_entropy(z, target, weight=w, label_smoothing=0.05, reduction="sum", ignore_index=0),
            F.mse_loss(z, y), F.l1_loss(z, y, reduction="sum"), F.binary_cross_entropy_with_logits(z, y.sigmoid()))


def test_losses(roundtrip):
    def make(rng):
        return randn(rng, 6, 5), t(rng.integers(0, 5, 6).astype(np.int64)), randn(rng, 6, 5)

    roundtrip(losses, make(np.random.default_rng(10)), runs(make))


def test_cross_entropy_with_a_dynamic_batch(roundtrip):
    def make(n):
        return lambda rng: (randn(rng, n, 4), t(rng.integers(0, 4, n).astype(np.int64)))

    run_list = [make(n)(np.random.default_rng(n)) for n in (3, 8, 1)]
    roundtrip(lambda z, y: (F.cross_entropy(z, y), F.cross_entropy(z, y, label_smoothing=0.1)),
              make(3)(np.random.default_rng(0)), run_list,
              dynamic_axes={"z": {0: "batch"}, "y": {0: "batch"}})


def test_normalization_layers_in_eval_mode(roundtrip):
    prunus.manual_seed(0)
    bn1, bn2, ln = prunus.nn.BatchNorm1d(3), prunus.nn.BatchNorm1d(3), prunus.nn.LayerNorm(4)
    with prunus.no_grad():  # running statistics that are not 0 and 1
        for _ in range(3):
            bn1(prunus.randn(8, 3) * 3 + 1)
            bn2(prunus.randn(8, 3, 4) * 2 - 1)
    for m in (bn1, bn2):
        m.eval()

    def fn(a, b):
        return bn1(a), bn2(b), ln(b), F.layer_norm(b, (3, 4))

    make = lambda rng: (randn(rng, 5, 3), randn(rng, 5, 3, 4))
    roundtrip(fn, make(np.random.default_rng(11)), runs(make))


# -- convert --------------------------------------------------------------------------------------


def casts(x):
    return (x.to(prunus.float64), (x * 10).to(prunus.int32), (x * 10).to(prunus.int64) + 1,
            x.to(prunus.bool), (x > 0).to(prunus.float32) + x, (x * 100).to(prunus.int8))


def test_casts(roundtrip):
    make = lambda rng: randn(rng, 3, 5)
    roundtrip(casts, make(np.random.default_rng(12)), runs(make))
