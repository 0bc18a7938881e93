"""Structured (filter) pruning: removed channels really leave the model (fewer parameters and
multiply-adds) and the pruned model computes what the original computes with those channels
zeroed -- LeNet-5 (conv -> conv, conv -> flatten -> Linear), the small VGG (BatchNorm, x.flatten
in forward), the convolutions inside ResNet blocks -- and what can't be followed is refused."""

import copy
import time

import numpy as np
import pytest

import prunus
from prunus import models, nn, optim
from prunus.compression.pruning import prune_magnitude
from prunus.compression.structured import (
    count_macs,
    filter_l1_norms,
    prune_channels,
    select_channels,
)
from prunus.compression.weight_sharing import quantize
from prunus.errors import ArgumentError


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


def _np(t):
    return t.detach().numpy().copy()


def _set(t, a):
    with prunus.no_grad():
        t.copy_(prunus.tensor(a))


def _zeroed(original, results):
    """A copy of the original with the removed channels zeroed: their filters, biases and the
    BatchNorm scale and shift, so that those channels are 0 everywhere."""
    z = copy.deepcopy(original)
    mods = dict(z.named_modules())
    for r in results:
        conv = mods[r.layer]
        names = [(conv, "weight"), (conv, "bias")] + [(mods[b], n) for b in r.batchnorms for n in ("weight", "bias")]
        for m, n in names:
            t = getattr(m, n)
            if t is not None:
                a = _np(t)
                a[r.removed] = 0
                _set(t, a)
    return z


def _randomize_batchnorms(model, seed=0):
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            _set(m.weight, rng.uniform(0.5, 1.5, n))
            _set(m.bias, rng.normal(0, 0.2, n))
            _set(m.running_mean, rng.normal(0, 0.2, n))
            _set(m.running_var, rng.uniform(0.5, 2.0, n))


def _check_equal_to_zeroed(model, shape, amount, seed=0, **kw):
    prunus.manual_seed(seed)
    model = model.double()
    _randomize_batchnorms(model, seed)
    model.eval()
    original = copy.deepcopy(model)
    x = prunus.randn(*shape, dtype=prunus.float64)
    n0, macs0 = _n_params(model), sum(count_macs(model, x).values())
    results = prune_channels(model, amount, example_input=x, **kw)
    with prunus.no_grad():
        got = model(x).numpy()
        want = _zeroed(original, results)(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert _n_params(model) < n0
    assert sum(count_macs(model, x).values()) < macs0
    return model, original, results


def test_lenet5_shrinks_conv_conv_and_conv_flatten_linear():
    model, original, res = _check_equal_to_zeroed(models.lenet5(), (3, 1, 28, 28), 0.5)
    assert [(r.layer, r.next_layer, r.channels_before, r.channels_after) for r in res] == \
        [("conv1", "conv2", 20, 10), ("conv2", "fc1", 50, 25)]
    assert model.conv1.weight.shape == (10, 1, 5, 5) and model.conv1.bias.shape == (10,)
    assert model.conv2.weight.shape == (25, 10, 5, 5) and model.conv2.in_channels == 10
    assert model.fc1.weight.shape == (500, 25 * 16) and model.fc1.in_features == 400
    # the kept fc1 columns are the kept channels' blocks of 4x4 features, in order
    cols = (res[1].kept[:, None] * 16 + np.arange(16)).reshape(-1)
    np.testing.assert_array_equal(_np(model.fc1.weight), _np(original.fc1.weight)[:, cols])
    # the removed filters are those with the smallest L1 norms
    norms = filter_l1_norms(original.conv1)
    assert norms[res[0].removed].max() <= norms[res[0].kept].min()


def test_vgg_with_batchnorm_and_flatten_in_forward():
    model, _, res = _check_equal_to_zeroed(models.vgg_small(), (2, 3, 32, 32), 0.25)
    assert [r.layer for r in res] == ["features.0", "features.4", "features.8", "features.11",
                                      "features.15", "features.18"]
    assert res[0].batchnorms == ("features.1",) and res[-1].next_layer == "classifier.0"
    bn = model.features[1]
    assert bn.num_features == 24 and bn.running_mean.shape == (24,) and bn.weight.shape == (24,)
    assert model.classifier[0].in_features == 192 * 4


def test_vgg_without_batchnorm_counts_and_dict_amounts():
    model = models.vgg_small(batch_norm=False)
    _, _, res = _check_equal_to_zeroed(model, (1, 3, 32, 32), {"features.3": 10, "features.13": 0.5})
    assert [(r.layer, r.channels_after) for r in res] == [("features.3", 54), ("features.13", 128)]


def test_resnet_block_convolutions_yes_residual_outputs_no():
    model = models.resnet_small()
    inner = [p for p, m in model.named_modules() if p.endswith(".conv1") and isinstance(m, nn.Conv2d)]
    assert len(inner) == 9
    _check_equal_to_zeroed(model, (2, 3, 32, 32), 0.5, layers=inner)
    # the stem and a block's conv2 feed residual sums: refused, naming the layer
    fresh = models.resnet_small()
    before = {k: _np(v) for k, v in fresh.state_dict().items()}
    with pytest.raises(ArgumentError, match=r"'conv1'.*2 places.*residual"):
        prune_channels(fresh, 0.5, example_input=(1, 3, 32, 32))
    with pytest.raises(ArgumentError, match=r"'layer1.0.conv2'.*Add"):
        prune_channels(fresh, {"layer1.0.conv1": 0.5, "layer1.0.conv2": 0.5}, example_input=(1, 3, 32, 32))
    # a refusal changes nothing, not even the layers that could be pruned
    after = fresh.state_dict()
    assert all(np.array_equal(before[k], _np(after[k])) for k in before)


def test_speedup_is_plausible():
    prunus.manual_seed(0)
    model = models.lenet5()
    x = prunus.randn(64, 1, 28, 28)
    dense = copy.deepcopy(model)
    prune_channels(model, 0.75, example_input=x)
    macs = sum(count_macs(model, x).values())
    macs0 = sum(count_macs(dense, x).values())
    # conv1 keeps 5 of 20 filters, conv2 12 of 50 reading 5 channels instead of 20
    assert macs0 == 64 * (20 * 24 * 24 * 25 + 50 * 8 * 8 * 20 * 25 + 800 * 500 + 500 * 10)
    assert macs == 64 * (5 * 24 * 24 * 25 + 12 * 8 * 8 * 5 * 25 + 12 * 16 * 500 + 500 * 10)
    assert macs0 / macs > 8

    def best(m):
        with prunus.no_grad():
            m(x)
            ts = []
            for _ in range(3):
                t = time.perf_counter()
                m(x)
                ts.append(time.perf_counter() - t)
        return min(ts)

    # timings are reported, never asserted (DESIGN.md section 4)
    print(f"LeNet-5 forward, batch 64: dense {1e3 * best(dense):.2f} ms, 75% of filters removed "
          f"{1e3 * best(model):.2f} ms; multiply-adds {macs0 / macs:.1f}x fewer")


def test_pruned_model_trains_and_masks_shrink_along():
    prunus.manual_seed(0)
    model = models.lenet5()
    prune_magnitude(model.conv2, sparsity=0.5)
    prune_magnitude(model.fc1, sparsity=0.9)
    mask_before = model.fc1.parametrizations.weight[0].mask.numpy().copy()
    res = prune_channels(model, {"conv2": 20}, example_input=(1, 1, 28, 28))
    kept = res[0].kept
    mask = model.fc1.parametrizations.weight[0].mask.numpy()
    cols = (kept[:, None] * 16 + np.arange(16)).reshape(-1)
    np.testing.assert_array_equal(mask, mask_before[:, cols])
    assert model.conv2.parametrizations.weight.original.shape == (30, 20, 5, 5)
    # an optimizer made afterwards trains the smaller model; pruned weights stay 0
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = prunus.randn(8, 1, 28, 28), prunus.tensor(np.arange(8) % 10)
    for _ in range(2):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = _np(model.fc1.weight)
    assert np.all(w[mask == 0] == 0)


def test_select_channels_fraction_count_and_ties():
    conv = nn.Conv2d(1, 4, 1, bias=False)
    _set(conv.weight, np.array([3.0, -1.0, 1.0, 2.0]).reshape(4, 1, 1, 1))
    np.testing.assert_array_equal(select_channels(conv, 0.5), [0, 3])
    np.testing.assert_array_equal(select_channels(conv, 1), [0, 2, 3])  # equal norms: lower index first
    np.testing.assert_array_equal(select_channels(conv, 0), [0, 1, 2, 3])
    for bad in (4, 1.0, -0.1, -1, "half", True):
        with pytest.raises(ArgumentError):
            select_channels(conv, bad)


class _Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.extra, self.fc = nn.Conv2d(1, 2, 1), nn.Conv2d(2, 2, 1), nn.Linear(18, 2)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


def test_refusals_name_the_layer():
    model = models.lenet5()
    with pytest.raises(ArgumentError, match="no Conv2d layer 'fc1'"):
        prune_channels(model, {"fc1": 0.5}, example_input=(1, 1, 28, 28))
    with pytest.raises(ArgumentError, match="example_input"):
        prune_channels(model, 0.5, example_input="28x28")
    # a convolution whose output is the model's output
    head = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1))
    with pytest.raises(ArgumentError, match=r"'2'.*model's output"):
        prune_channels(head, 0.5, example_input=(1, 3, 8, 8))
    # through a Sigmoid a removed channel would be 0.5, not 0
    sig = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Sigmoid(), nn.Conv2d(8, 4, 1))
    with pytest.raises(ArgumentError, match=r"'0'.*Sigmoid"):
        prune_channels(sig, {"0": 0.5}, example_input=(1, 3, 8, 8))
    grouped = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Conv2d(8, 8, 3, groups=2), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(ArgumentError, match="grouped"):
        prune_channels(grouped, {"0": 0.5}, example_input=(1, 4, 5, 5))
    unused = _Unused()
    with pytest.raises(ArgumentError, match="not used in the forward"):
        prune_channels(unused, {"extra": 1}, example_input=(1, 1, 3, 3))
    q = models.lenet5()
    quantize(q.conv2, bits=4)
    with pytest.raises(ArgumentError, match="quantized"):
        prune_channels(q, {"conv1": 0.5}, example_input=(1, 1, 28, 28))
