"""prunus.models: parameter counts (LeNet-5's 430,500 weights + 580 biases), output shapes, forward
and backward, reproducible initialisation, the MODELS registry and get_model errors; and each model
against a torch.nn twin with copied weights (float64: outputs, gradients, BN running statistics,
state_dict keys and shapes)."""

from __future__ import annotations

import numpy as np
import pytest

import prunus
from prunus import nn
from prunus.errors import ArgumentError, ShapeError
from prunus.models import MODELS, get_model, lenet5, lenet_300_100, resnet_small, vgg_small
from prunus.models.vgg import SMALL_CFG

try:
    import torch
    import torch.nn as tnn
except ImportError:  # the checks without the oracle still run
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch (the test oracle) is not installed")
TOL = {"rtol": 1e-9, "atol": 1e-12}

INPUT = {
    "lenet_300_100": (1, 28, 28),
    "lenet5": (1, 28, 28),
    "vgg_small": (3, 32, 32),
    "resnet_small": (3, 32, 32),
}


def _counts(model):
    """(weights, biases): BatchNorm scale and shift count as neither."""
    w = b = 0
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            w += m.weight.numel()
            b += m.bias.numel() if m.bias is not None else 0
    return w, b


# -- without the oracle ---------------------------------------------------------------------------


def test_registry_lists_the_four_models():
    assert set(MODELS) == {"lenet_300_100", "lenet5", "vgg_small", "resnet_small"}
    assert MODELS["lenet5"] is lenet5 and MODELS["resnet_small"] is resnet_small


def test_get_model_builds_and_passes_kwargs():
    m = get_model("lenet5", num_classes=3)
    assert m(prunus.randn(2, 1, 28, 28)).shape == (2, 3)
    assert isinstance(get_model("vgg_small", batch_norm=False), nn.Module)


@pytest.mark.parametrize("name", ["lenet", "LeNet5", "", None, "resnet20"])
def test_get_model_unknown_name_lists_the_known_ones(name):
    with pytest.raises(ArgumentError) as e:
        get_model(name)
    assert isinstance(e.value, ValueError)
    for known in MODELS:
        assert known in str(e.value)
    assert repr(name) in str(e.value)


def test_lenet5_has_the_deep_compression_counts():
    m = lenet5()
    assert _counts(m) == (430_500, 580)
    assert sum(p.numel() for p in m.parameters()) == 431_080
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "conv1.weight": (20, 1, 5, 5), "conv1.bias": (20,),
        "conv2.weight": (50, 20, 5, 5), "conv2.bias": (50,),
        "fc1.weight": (500, 800), "fc1.bias": (500,),
        "fc2.weight": (10, 500), "fc2.bias": (10,),
    }


def test_lenet5_has_no_relu_after_the_convolutions():
    layers = [(k, type(m).__name__) for k, m in lenet5().named_children()]
    assert layers == [("conv1", "Conv2d"), ("pool1", "MaxPool2d"), ("conv2", "Conv2d"), ("pool2", "MaxPool2d"),
                      ("flatten", "Flatten"), ("fc1", "Linear"), ("relu", "ReLU"), ("fc2", "Linear")]
    # forward feeds fc1 pooled conv outputs, negative ones included (Caffe: no ReLU after the convs)
    m, seen = lenet5(generator=prunus.Generator(seed=0)), []
    m.fc1.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().numpy().copy()))
    m(prunus.randn(2, 1, 28, 28))
    assert seen[0].shape == (2, 800) and (seen[0] < 0).mean() > 0.2


def test_lenet_300_100_counts_and_keys():
    m = lenet_300_100()
    assert _counts(m) == (784 * 300 + 300 * 100 + 100 * 10, 410)
    assert list(m.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]


def test_vgg_and_resnet_counts():
    assert sum(p.numel() for p in vgg_small().parameters()) == 1_392_778
    assert sum(p.numel() for p in vgg_small(batch_norm=False).parameters()) == 1_391_050
    r = resnet_small()
    assert sum(p.numel() for p in r.parameters()) == 272_474  # ResNet-20 with projection shortcuts
    convs = [m for m in r.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19 + 2  # 19 3x3 layers + 2 projection shortcuts
    assert all(c.bias is None for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in r.modules()) == 21


def test_lenet_300_100_flattens_images_and_vectors_alike():
    m = lenet_300_100()
    x = prunus.randn(3, 1, 28, 28)
    with prunus.no_grad():
        a, b = m(x), m(x.reshape(3, 784))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ShapeError, match="784"):
        m(prunus.randn(3, 1, 27, 27))


@pytest.mark.parametrize("name", list(MODELS))
def test_output_shape_and_backward(name):
    m = get_model(name, num_classes=7)
    x = prunus.randn(8, *INPUT[name])
    y = m(x)
    assert y.shape == (8, 7)
    nn.CrossEntropyLoss()(y, prunus.tensor(np.arange(8) % 7)).backward()
    for k, p in m.named_parameters():
        assert p.grad is not None, k
        assert p.grad.shape == p.shape, k
        assert np.isfinite(p.grad.numpy()).all(), k
    m.eval()
    with prunus.no_grad():
        assert m(x).shape == (8, 7)


@pytest.mark.parametrize("name", list(MODELS))
def test_generator_makes_init_reproducible(name):
    a = get_model(name, generator=prunus.Generator(seed=5))
    b = get_model(name, generator=prunus.Generator(seed=5))
    c = get_model(name, generator=prunus.Generator(seed=6))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    for k in sa:
        np.testing.assert_array_equal(sa[k].numpy(), sb[k].numpy(), err_msg=k)
    assert any(not np.array_equal(sa[k].numpy(), sc[k].numpy()) for k in sa if k.endswith("weight"))
    prunus.manual_seed(11)
    d = get_model(name)
    prunus.manual_seed(11)
    e = get_model(name)
    for k, v in d.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), e.state_dict()[k].numpy(), err_msg=k)


@pytest.mark.parametrize("name", list(MODELS))
def test_docstrings_give_the_input_shape(name):
    m = get_model(name)
    assert f"(N, {INPUT[name][0]}, {INPUT[name][1]}, {INPUT[name][2]})" in (type(m).__doc__ + MODELS[name].__doc__)


# -- torch twins ------------------------------------------------------------------------------------


def _torch_twin(name, num_classes=10, batch_norm=True):
    """The equivalent torch.nn model, written the way a PyTorch user (or torchvision) would."""

    class LeNet300100(tnn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = tnn.Linear(784, 300), tnn.Linear(300, 100)
            self.fc3 = tnn.Linear(100, num_classes)

        def forward(self, x):
            x = torch.flatten(x, 1)
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    class LeNet5(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = tnn.Conv2d(1, 20, 5), tnn.Conv2d(20, 50, 5)
            self.fc1, self.fc2 = tnn.Linear(800, 500), tnn.Linear(500, num_classes)

        def forward(self, x):
            x = tnn.functional.max_pool2d(self.conv1(x), 2)
            x = tnn.functional.max_pool2d(self.conv2(x), 2)
            return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))

    class VGG(tnn.Module):  # torchvision.models.vgg's layout
        def __init__(self):
            super().__init__()
            layers, c = [], 3
            for v in SMALL_CFG:
                if v == "M":
                    layers.append(tnn.MaxPool2d(2, 2))
                else:
                    layers += [tnn.Conv2d(c, v, 3, padding=1)]
                    layers += [tnn.BatchNorm2d(v)] if batch_norm else []
                    layers += [tnn.ReLU(inplace=True)]
                    c = v
            self.features = tnn.Sequential(*layers)
            self.classifier = tnn.Sequential(tnn.Linear(c * 2 * 2, 256), tnn.ReLU(True), tnn.Dropout(),
                                             tnn.Linear(256, num_classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.features(x), 1))

    class BasicBlock(tnn.Module):  # torchvision.models.resnet.BasicBlock
        def __init__(self, inplanes, planes, stride=1):
            super().__init__()
            self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.relu = tnn.ReLU(inplace=True)
            self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = tnn.Sequential(tnn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                                 tnn.BatchNorm2d(planes))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + identity)

    class ResNet20(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tnn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1, self.relu = tnn.BatchNorm2d(16), tnn.ReLU(inplace=True)
            self.layer1 = tnn.Sequential(*(BasicBlock(16, 16) for _ in range(3)))
            self.layer2 = tnn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32), BasicBlock(32, 32))
            self.layer3 = tnn.Sequential(BasicBlock(32, 64, 2), BasicBlock(64, 64), BasicBlock(64, 64))
            self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
            self.fc = tnn.Linear(64, num_classes)

        def forward(self, x):
            x = self.layer3(self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x))))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    twin = {"lenet_300_100": LeNet300100, "lenet5": LeNet5, "vgg_small": VGG, "resnet_small": ResNet20}[name]()
    twin = twin.double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-trivial BatchNorm parameters and running statistics
        for m in twin.modules():
            if isinstance(m, tnn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.5, 0.5, generator=g)
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.num_batches_tracked.fill_(3)
    return twin


def _pair(name, **kw):
    ours = get_model(name, **kw).double()
    theirs = _torch_twin(name, **kw)
    ours.load_state_dict({k: prunus.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    return ours, theirs


CASES = [("lenet_300_100", {}), ("lenet5", {}), ("vgg_small", {}), ("vgg_small", {"batch_norm": False}),
         ("resnet_small", {})]


@needs_torch
@pytest.mark.parametrize("name,kw", CASES)
def test_state_dict_keys_and_shapes_match_torch(name, kw):
    ours, theirs = get_model(name, **kw), _torch_twin(name, **kw)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (k, p), (tk, tp) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert tuple(p.shape) == tuple(tp.shape), k
    assert [k for k, _ in ours.named_parameters()] == [k for k, _ in theirs.named_parameters()]


@needs_torch
@pytest.mark.parametrize("name,kw", CASES)
def test_eval_forward_and_gradients_match_torch(name, kw):
    ours, theirs = _pair(name, **kw)
    ours.eval()
    theirs.eval()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, *INPUT[name]))
    px, tx = prunus.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    py, ty = ours(px), theirs(tx)
    np.testing.assert_allclose(py.detach().numpy(), ty.detach().numpy(), **TOL)
    g = rng.standard_normal(tuple(ty.shape))
    py.backward(prunus.tensor(g))
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(px.grad.numpy(), tx.grad.numpy(), **TOL)
    for (k, p), (_, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), err_msg=k, **TOL)


@needs_torch
@pytest.mark.parametrize("name", ["lenet5", "resnet_small"])
def test_train_mode_forward_and_running_stats_match_torch(name):
    ours, theirs = _pair(name)
    x = np.random.default_rng(2).standard_normal((4, *INPUT[name]))
    py, ty = ours(prunus.tensor(x)), theirs(torch.tensor(x))
    np.testing.assert_allclose(py.detach().numpy(), ty.detach().numpy(), **TOL)
    ts = theirs.state_dict()
    for k, v in ours.state_dict().items():
        np.testing.assert_allclose(v.numpy(), ts[k].numpy(), err_msg=k, **TOL)
