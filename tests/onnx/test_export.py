"""prunus.onnx.export: the model zoo (LeNet-300-100, LeNet-5, the small VGG and ResNet with
BatchNorm in eval mode), an MLP with every activation, dynamic batch size, float64, names, files
and modes; and the errors (unsupported op, in-place update, missing onnx, bad opset, axes that
can't be dynamic)."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnx.checker")
pytest.importorskip("onnxruntime")

import onnx

import prunus
import prunus.onnx
from prunus import models, nn
from prunus.errors import ArgumentError, MissingDependencyError
from prunus.nn import functional as F

ZOO = {
    "lenet_300_100": (models.lenet_300_100, (1, 28, 28)),
    "lenet5": (models.lenet5, (1, 28, 28)),
    "vgg_small": (models.vgg_small, (3, 32, 32)),
    "resnet_small": (models.resnet_small, (3, 32, 32)),
}


def _trained_statistics(model, shape):
    """A few training-mode passes so BatchNorm's running statistics are not the initial 0 and 1,
    and BatchNorm's affine parameters moved off 1 and 0."""
    rng = np.random.default_rng(0)
    model.train()
    with prunus.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.data[...] = rng.uniform(0.5, 1.5, m.weight.shape)
                m.bias.data[...] = rng.uniform(-0.5, 0.5, m.bias.shape)
        for _ in range(3):
            model(prunus.tensor((rng.standard_normal((8, *shape)) * 2 + 0.5).astype(np.float32)))


def _batches(shape, sizes=(2, 5, 1), dtype=np.float32):
    return [prunus.tensor(np.random.default_rng(n).standard_normal((n, *shape)).astype(dtype))
            for n in sizes]


def _dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_with_dynamic_batch(roundtrip, name):
    make, shape = ZOO[name]
    prunus.manual_seed(0)
    model = make()
    _trained_statistics(model, shape)
    # exported at batch 2, run at 2, 5 and 1
    proto, _ = roundtrip(model, _batches(shape, (2,))[0], _batches(shape),
                         dynamic_axes={"x": {0: "batch"}})
    assert model.training is False  # roundtrip's reference runs put it in eval
    assert _dims(proto.graph.input[0]) == ["batch", *shape]
    assert _dims(proto.graph.output[0]) == ["batch", 10]
    names = {i.name for i in proto.graph.initializer}
    assert any(n.endswith(".weight") for n in names)


def test_vgg_without_batch_norm_and_static_shapes(roundtrip):
    prunus.manual_seed(1)
    model = models.vgg_small(batch_norm=False)
    proto, _ = roundtrip(model, _batches((3, 32, 32), (3,))[0], _batches((3, 32, 32), (3, 3, 3)))
    assert _dims(proto.graph.input[0]) == [3, 3, 32, 32]
    assert {n.op_type for n in proto.graph.node} >= {"Conv", "MaxPool", "Gemm", "Relu", "Flatten"}


def test_batch_norm_running_statistics_are_folded_into_constants():
    prunus.manual_seed(0)
    model = models.resnet_small()
    _trained_statistics(model, (3, 32, 32))
    proto = prunus.onnx.export(model, prunus.randn(2, 3, 32, 32), io.BytesIO())
    ops = [n.op_type for n in proto.graph.node]
    assert "Sqrt" not in ops and "Reciprocal" not in ops  # rsqrt(running_var + eps): an initializer
    assert ops.count("Conv") == 21


class MLP(nn.Module):
    """A Linear before each activation prunus.nn has (and softplus, functional only)."""

    def __init__(self):
        super().__init__()
        acts = [nn.ReLU(), nn.LeakyReLU(0.2), nn.ELU(0.7), nn.GELU(), nn.GELU("tanh"), nn.Sigmoid(),
                nn.Tanh()]
        layers = []
        for a in acts:
            layers += [nn.Linear(8, 8), a]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(8, 5)
        self.softmax, self.log_softmax = nn.Softmax(dim=1), nn.LogSoftmax(dim=1)

    def forward(self, x):
        h = self.head(F.softplus(self.body(x) * 3, beta=1.5))
        return self.softmax(h), self.log_softmax(h)


@pytest.mark.parametrize("opset", [13, 17, 18, 20, onnx.defs.onnx_opset_version()])
def test_mlp_with_every_activation(roundtrip, opset):
    prunus.manual_seed(2)
    model = MLP()
    proto, _ = roundtrip(model, _batches((8,), (4,))[0], _batches((8,)), opset=opset,
                         dynamic_axes={"x": {0: "batch"}}, output_names=["probs", "log_probs"])
    assert [o.name for o in proto.graph.output] == ["probs", "log_probs"]
    assert _dims(proto.graph.output[1]) == ["batch", 5]
    assert proto.opset_import[0].version == opset
    ops = {n.op_type for n in proto.graph.node}
    assert ("Gelu" in ops) == (opset >= 20)


def test_float64_model(roundtrip):
    make, shape = ZOO["lenet_300_100"]
    prunus.manual_seed(3)
    model = make().double()
    proto, _ = roundtrip(model, _batches(shape, (2,), np.float64)[0], _batches(shape, dtype=np.float64),
                         rtol=1e-10, atol=1e-12, dynamic_axes={"x": [0]})
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    assert _dims(proto.graph.input[0])[0] == "x_dim0"


def test_float64_activations(roundtrip):
    # the activations whose float64 kernels onnxruntime's CPU provider has (it lacks double Elu,
    # LeakyRelu, Softplus, Erf/Gelu, Conv and AveragePool: those export, check, but don't run there)
    def fn(x):
        h = F.gelu(F.tanh(F.sigmoid(F.relu(x) - 0.5)), approximate="tanh")
        return F.softmax(h, 1), F.log_softmax(h * 3, 0)

    make = lambda rng: prunus.tensor(rng.standard_normal((3, 6)) * 4)
    roundtrip(fn, make(np.random.default_rng(0)), [make(np.random.default_rng(s)) for s in range(3)],
              rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(ZOO))
def test_float64_zoo_passes_the_checker(name):
    make, shape = ZOO[name]
    proto = prunus.onnx.export(make().double(), prunus.randn(2, *shape, dtype=prunus.float64), io.BytesIO(),
                               dynamic_axes={"x": {0: "batch"}})
    onnx.checker.check_model(proto, full_check=True)
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE


# -- the API ----------------------------------------------------------------------------------------


def test_a_function_with_several_inputs_and_outputs_and_names(roundtrip):
    w = prunus.randn(4, 3)

    def fn(a, scale, b):
        return (a @ w) * scale + b, a.sum(1)

    make = lambda rng: (prunus.tensor(rng.standard_normal((2, 4)).astype(np.float32)), 2.0,
                        prunus.tensor(rng.standard_normal(3).astype(np.float32)))
    proto, _ = roundtrip(fn, make(np.random.default_rng(0)),
                         [make(np.random.default_rng(s)) for s in range(3)])
    assert [i.name for i in proto.graph.input] == ["a", "b"]  # the Python number is baked in
    assert [o.name for o in proto.graph.output] == ["output_0", "output_1"]
    proto = prunus.onnx.export(fn, make(np.random.default_rng(0)), io.BytesIO(), input_names=["p", "q"],
                               output_names=["y", "s"])
    assert [i.name for i in proto.graph.input] == ["p", "q"]
    assert [o.name for o in proto.graph.output] == ["y", "s"]


def test_outputs_that_are_inputs_or_repeated(roundtrip):
    def fn(x):
        y = x * 2
        return x, y, y

    make = lambda rng: prunus.tensor(rng.standard_normal((2, 3)).astype(np.float32))
    proto, _ = roundtrip(fn, make(np.random.default_rng(0)), [make(np.random.default_rng(s)) for s in range(3)])
    assert len(proto.graph.output) == 3


def test_numpy_example_inputs_and_file_objects():
    buf = io.BytesIO()
    proto = prunus.onnx.export(lambda x: x.exp(), np.ones((2, 2), np.float32), buf)
    assert onnx.load_from_string(buf.getvalue()) == proto


def test_the_file_is_written_atomically_and_replaced(tmp_path):
    path = tmp_path / "sub" / "m.onnx"
    prunus.onnx.export(lambda x: x + 1, prunus.randn(2), path)
    first = path.read_bytes()
    prunus.onnx.export(lambda x: x * 3, prunus.randn(2), str(path))
    assert path.read_bytes() != first and onnx.load(str(path)).graph.node[0].op_type == "Mul"
    assert [p.name for p in path.parent.iterdir()] == ["m.onnx"]  # no temp file left


def test_export_runs_in_eval_mode_and_restores_each_modules_mode():
    prunus.manual_seed(5)
    model = models.vgg_small()
    model.train()
    model.features.eval()  # a mixed state must come back as it was
    proto = prunus.onnx.export(model, prunus.randn(2, 3, 32, 32), io.BytesIO())
    assert model.training and model.classifier.training and not model.features.training
    assert "Dropout" not in {n.op_type for n in proto.graph.node}  # eval: dropout is the identity
    for m in model.features.modules():
        assert not m.training


def test_importing_prunus_does_not_import_onnx():
    code = "import sys, prunus, prunus.onnx; assert 'onnx' not in sys.modules, 'onnx imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_supported_ops_lists_the_converters():
    ops = prunus.onnx.supported_ops()
    for name in ("Conv2d", "MaxPool2d", "AvgPool2d", "Linear", "Reshape", "Softmax", "Index", "GELU"):
        assert name in ops


# -- errors -----------------------------------------------------------------------------------------


def test_an_op_without_a_converter_is_named_with_the_supported_list():
    with pytest.raises(ArgumentError) as e:
        prunus.onnx.export(lambda x: F.dropout(x, 0.5, training=True), prunus.randn(2, 3), io.BytesIO())
    msg = str(e.value)
    assert "Dropout" in msg and "no ONNX converter" in msg and "Conv2d" in msg and "float32 (2, 3)" in msg


def test_an_in_place_update_is_refused():
    def fn(x):
        y = x * 1
        y.add_(1)
        return y

    with pytest.raises(ArgumentError, match=r"AddInPlace.*in place"):
        prunus.onnx.export(fn, prunus.randn(3), io.BytesIO())


def test_missing_onnx_raises_missing_dependency_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now fails
    with pytest.raises(MissingDependencyError, match=r'pip install "prunus\[onnx\]"') as e:
        prunus.onnx.export(lambda x: x, prunus.randn(2), io.BytesIO())
    assert isinstance(e.value, ImportError)


@pytest.mark.parametrize("opset", [12, 0, 10**3, "17", 17.0, True])
def test_bad_opset(opset):
    with pytest.raises(ArgumentError, match=r"opset"):
        prunus.onnx.export(lambda x: x + 1, prunus.randn(2), io.BytesIO(), opset=opset)


@pytest.mark.parametrize("kwargs,match", [
    ({"dynamic_axes": {"y": {0: "b"}}}, r"names 'y', which is neither an input \(x\) nor an output"),
    ({"dynamic_axes": {"x": {2: "b"}}}, r"dim 2, out of range"),
    ({"dynamic_axes": {"x": {0: 1}}}, r"maps dims \(ints\) to names"),
    ({"dynamic_axes": {"output": {1: "n"}}}, r"dim 1 of output 'output', but it has size 3"),
    ({"input_names": ["a", "b"]}, r"input_names must be 1"),
    ({"output_names": ["y", "z"]}, r"output_names must be 1"),
])
def test_bad_names_and_axes(kwargs, match):
    with pytest.raises(ArgumentError, match=match):
        prunus.onnx.export(lambda x: x * 2, prunus.randn(2, 3), io.BytesIO(), **kwargs)


def test_a_size_baked_in_by_python_is_refused_for_a_dynamic_axis():
    # narrow's length comes from x.shape[0]: at another batch the slice is different
    with pytest.raises(ArgumentError, match=r"Index .*attribute index=.*dynamic axis 'batch'"):
        prunus.onnx.export(lambda x: x.narrow(0, 0, x.shape[0] - 1), prunus.randn(3, 2), io.BytesIO(),
                           dynamic_axes={"x": {0: "batch"}})


def test_a_tensor_made_from_the_batch_size_is_refused():
    with pytest.raises(ArgumentError, match=r"made while tracing .*changes with the size"):
        prunus.onnx.export(lambda x: x + prunus.ones(x.shape[0], 1), prunus.randn(3, 2), io.BytesIO(),
                           dynamic_axes={"x": {0: "batch"}})


def test_a_graph_that_changes_with_the_size_is_refused():
    # squeeze() drops a batch of 1 but not of 2: two graphs, so batch can't be dynamic
    with pytest.raises(ArgumentError, match=r"different graph .*size 1 often"):
        prunus.onnx.export(lambda x: x.squeeze() * 2, prunus.randn(1, 4), io.BytesIO(),
                           dynamic_axes={"x": {0: "batch"}})


def test_a_model_that_fails_at_another_size_is_refused():
    model = models.lenet_300_100()  # 28 x 28 images only: fc1 takes 784 features
    with pytest.raises(ArgumentError, match=r"dim 2 of 'x', size 28 -> 29.*failed"):
        prunus.onnx.export(model, prunus.randn(2, 1, 28, 28), io.BytesIO(), dynamic_axes={"x": {2: "h"}})
