"""Trained quantization (Han, Mao, Dally 2016): the paper's worked example (Figure 3) exactly,
1-D k-means with every initialization, SharedWeights on pruned layers, fine-tuning centroids
with SGD, state dict round trips, compiled steps, and errors."""

import numpy as np
import pytest
from train_steps import cross_entropy_step

import prunus
from prunus import models, nn, optim
from prunus.compression.pruning import prune_magnitude
from prunus.compression.weight_sharing import (
    INITS,
    SharedWeights,
    kmeans1d,
    quantize,
    quantize_model,
)
from prunus.errors import ArgumentError, DTypeError, IndexOutOfRangeError, ShapeError
from prunus.nn import parametrize as P

# Han, Mao, Dally (ICLR 2016), Figure 3
W = [[2.09, -0.98, 1.48, 0.09], [0.05, -0.14, -1.08, 2.12], [-0.91, 1.92, 0, -1.03], [1.87, 0, 1.53, 1.49]]
I = [[3, 0, 2, 1], [1, 1, 0, 3], [0, 3, 1, 0], [3, 1, 2, 2]]
C = [-1.00, 0.00, 1.50, 2.00]
G = [[-0.03, -0.01, 0.03, 0.02], [-0.01, 0.01, -0.02, 0.12], [-0.01, 0.02, 0.04, 0.01],
     [-0.07, -0.02, 0.01, -0.02]]
F64 = prunus.float64


def _used(m):
    with prunus.no_grad():
        return m.weight.detach().numpy().copy()


def test_papers_worked_example_centroid_gradients_and_update():
    sw = SharedWeights(prunus.tensor(C, dtype=F64), prunus.tensor(I))
    lin = nn.Linear(4, 4, bias=False, dtype=F64)
    with prunus.no_grad():
        lin.weight.copy_(prunus.tensor(W, dtype=F64))
    P.register_parametrization(lin, "weight", sw)
    np.testing.assert_array_equal(_used(lin), np.array(C)[np.array(I)])
    lin.weight.backward(prunus.tensor(G, dtype=F64))  # backprop G through the used weight
    np.testing.assert_allclose(sw.codebook.grad.numpy(), [-0.03, 0.04, 0.02, 0.04], rtol=1e-12)
    assert lin.parametrizations.weight.original.grad is None  # the original is not used
    opt = optim.SGD(lin.parameters(), lr=1.0)
    opt.step()
    np.testing.assert_allclose(sw.codebook.detach().numpy(), [-0.97, -0.04, 1.48, 1.96], rtol=1e-12)
    np.testing.assert_allclose(_used(lin), np.array([-0.97, -0.04, 1.48, 1.96])[np.array(I)], rtol=1e-12)


@pytest.mark.parametrize("init", ["linear", "density"])
def test_kmeans_on_the_papers_weights_finds_its_codebook(init):
    c, labels = kmeans1d(np.array(W), 4, init=init)
    np.testing.assert_allclose(c, C, atol=1e-12)
    np.testing.assert_array_equal(labels, I)
    lin = nn.Linear(4, 4, bias=False, dtype=F64)
    with prunus.no_grad():
        lin.weight.copy_(prunus.tensor(W, dtype=F64))
    sw = quantize(lin, bits=2, init=init)
    np.testing.assert_array_equal(sw.indices.numpy(), I)
    np.testing.assert_allclose(sw.codebook.detach().numpy(), C, atol=1e-12)


def _clusters(seed=0):
    rng = np.random.default_rng(seed)
    means = np.array([-2.0, -0.5, 0.3, 1.7])
    truth = rng.integers(0, 4, 4000)
    x = means[truth] + rng.normal(0, 0.05, truth.size)
    return x.reshape(40, 100), truth.reshape(40, 100), means


@pytest.mark.parametrize("init", INITS)
def test_kmeans_recovers_known_clusters_deterministically(init):
    x, truth, means = _clusters()
    c, labels = kmeans1d(x, 4, init=init, generator=prunus.Generator(seed=1))
    assert labels.shape == x.shape and labels.dtype == np.int64
    assert np.all(np.diff(c) >= 0)  # ascending
    np.testing.assert_allclose(c, means, atol=0.01)
    np.testing.assert_array_equal(labels, truth)
    for j in range(4):  # each centroid is the mean of its cluster
        np.testing.assert_allclose(c[j], x[labels == j].mean(), rtol=1e-12)
    c2, l2 = kmeans1d(x, 4, init=init, generator=prunus.Generator(seed=1))
    np.testing.assert_array_equal(c, c2)
    np.testing.assert_array_equal(labels, l2)


def test_kmeans_labels_are_the_nearest_centroids():
    x = np.random.default_rng(3).standard_normal(5000)
    for init in INITS:
        c, labels = kmeans1d(x, 32, init=init, generator=prunus.Generator(seed=0), max_iter=3)
        d = np.abs(x[:, None] - c[None, :])
        np.testing.assert_array_equal(d[np.arange(x.size), labels], d.min(axis=1))


def test_kmeans_inits_and_the_default_generator():
    x = np.random.default_rng(0).standard_normal(1000)
    lin, _ = kmeans1d(x, 8, max_iter=0)
    np.testing.assert_allclose(lin, np.linspace(x.min(), x.max(), 8))
    dens, _ = kmeans1d(x, 8, init="density", max_iter=0)
    np.testing.assert_allclose(dens, np.quantile(x, np.linspace(0, 1, 8)))
    rnd, _ = kmeans1d(x, 8, init="random", generator=prunus.Generator(seed=4), max_iter=0)
    assert np.all(np.isin(rnd, x)) and np.unique(rnd).size == 8
    prunus.manual_seed(5)
    a, _ = kmeans1d(x, 8, init="random", max_iter=0)
    prunus.manual_seed(5)
    b, _ = kmeans1d(x, 8, init="random", max_iter=0)
    np.testing.assert_array_equal(a, b)


def test_kmeans_edge_cases():
    c, labels = kmeans1d(np.array([1.0, 2.0]), 4)  # more centroids than points
    assert c.shape == (4,) and set(c[labels]) == {1.0, 2.0}
    c, labels = kmeans1d(np.array([1.0, 2.0]), 4, init="random", generator=prunus.Generator(seed=0))
    np.testing.assert_array_equal(c[labels], [1.0, 2.0])
    c, labels = kmeans1d(np.full(10, 0.25), 4)
    assert np.all(c[labels] == 0.25)
    c, labels = kmeans1d(np.zeros(0), 4)
    assert c.shape == (4,) and labels.shape == (0,)


def test_centroid_gradient_is_the_sum_of_its_weights_gradients():
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 16, (30, 20))
    mask = (rng.random((30, 20)) > 0.5).astype(np.float32)
    sw = SharedWeights(prunus.tensor(rng.standard_normal(16).astype(np.float32)), prunus.tensor(idx),
                       prunus.tensor(mask))
    g = rng.standard_normal((30, 20)).astype(np.float32)
    sw(None).backward(prunus.tensor(g))
    expected = np.bincount(idx.ravel(), weights=(g * mask).ravel().astype(np.float64), minlength=16)
    np.testing.assert_allclose(sw.codebook.grad.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_quantize_a_pruned_layer():
    prunus.manual_seed(0)
    lin = nn.Linear(300, 100)
    prune_magnitude(lin, sparsity=0.91)
    mask = lin.parametrizations.weight[0].mask.numpy().copy()
    before = _used(lin)
    sw = quantize(lin, bits=5)
    assert len(lin.parametrizations.weight) == 1 and lin.parametrizations.weight[0] is sw
    assert sw.codebook.shape == (32,) and sw.bits == 5 and sw.codebook.dtype is prunus.float32
    assert sw.indices.dtype is prunus.int64 and sw.indices.shape == (100, 300)
    np.testing.assert_array_equal(sw.mask.numpy(), mask)
    used = _used(lin)
    assert np.all(used[mask == 0] == 0)
    assert np.unique(used[used != 0]).size <= 32
    assert np.abs(used - before)[mask != 0].max() < 0.01  # 32 levels over about +-0.058
    # the original keeps the (pruned) weights from before quantizing
    np.testing.assert_array_equal(lin.parametrizations.weight.original.detach().numpy(), before)
    assert list(lin.state_dict()) == [
        "bias", "parametrizations.weight.original", "parametrizations.weight.0.codebook",
        "parametrizations.weight.0.indices", "parametrizations.weight.0.mask"]


def test_quantize_with_an_explicit_mask_and_bits_per_layer():
    prunus.manual_seed(0)
    lin = nn.Linear(8, 4)
    m = np.zeros((4, 8), bool)
    m[:, :3] = True
    quantize(lin, bits=1, mask=prunus.tensor(m))
    used = _used(lin)
    assert np.all(used[:, 3:] == 0) and np.unique(used[:, :3]).size <= 2
    model = models.lenet5()
    sws = quantize_model(model)  # the paper's 8 bits for conv, 5 for fc
    assert {k: v.codebook.shape[0] for k, v in sws.items()} == {
        "conv1": 256, "conv2": 256, "fc1": 32, "fc2": 32}
    model = models.lenet_300_100()
    sws = quantize_model(model, bits={"fc1": 6, "fc2": 6})
    assert set(sws) == {"fc1", "fc2"} and not P.is_parametrized(model.fc3)
    assert quantize_model(models.lenet_300_100(), bits=3)["fc3"].codebook.shape == (8,)


def _steps(model, opt, n, seed=0):
    rng = np.random.default_rng(seed)
    xs = [prunus.tensor(rng.standard_normal((16, 784)).astype(np.float32)) for _ in range(3)]
    ys = [prunus.tensor(rng.integers(0, 10, 16)) for _ in range(3)]

    step = cross_entropy_step(model, opt)

    return step, xs, ys


def test_training_a_pruned_and_quantized_lenet_300_100():
    prunus.manual_seed(0)
    model = models.lenet_300_100()
    layers = (model.fc1, model.fc2, model.fc3)
    for layer, s in zip(layers, (0.92, 0.91, 0.74)):
        prune_magnitude(layer, sparsity=s)
    masks = [layer.parametrizations.weight[0].mask.numpy().copy() for layer in layers]
    sws = [quantize(layer, bits=6) for layer in layers]  # the paper's 6 bits for LeNet-300-100
    codebooks = [sw.codebook.detach().numpy().copy() for sw in sws]
    originals = [layer.parametrizations.weight.original.detach().numpy().copy() for layer in layers]
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    step, xs, ys = _steps(model, opt, 8)
    losses = [float(step(xs[i % 3], ys[i % 3])) for i in range(8)]
    assert losses[-1] < losses[0] + 0.5 and all(np.isfinite(losses))
    for layer, mask, sw, cb, orig in zip(layers, masks, sws, codebooks, originals):
        used = _used(layer)
        assert np.all(used[mask == 0] == 0)
        assert np.unique(used[used != 0]).size <= 64
        assert not np.array_equal(sw.codebook.detach().numpy(), cb)  # the centroids trained
        np.testing.assert_array_equal(layer.parametrizations.weight.original.detach().numpy(), orig)


def test_state_dict_round_trip_with_save_and_load(tmp_path):
    prunus.manual_seed(0)
    model = models.lenet_300_100()
    for layer in (model.fc1, model.fc2, model.fc3):
        prune_magnitude(layer, sparsity=0.8)
        quantize(layer, bits=6)
    prunus.save(model.state_dict(), tmp_path / "q.safetensors")
    fresh = models.lenet_300_100()
    for layer in (fresh.fc1, fresh.fc2, fresh.fc3):
        quantize(layer, bits=6)  # the structure: same codebook size
    fresh.load_state_dict(prunus.load(tmp_path / "q.safetensors"))
    x = prunus.randn(4, 784)
    with prunus.no_grad():
        np.testing.assert_array_equal(fresh(x).numpy(), model(x).numpy())
    assert fresh.fc1.parametrizations.weight[0].indices.dtype is prunus.int64


def test_module_to_keeps_the_indices_integer():
    prunus.manual_seed(0)
    lin = nn.Linear(6, 3)
    sw = quantize(lin, bits=2)
    lin.double()
    assert sw.codebook.dtype is F64 and sw.mask.dtype is F64 and sw.indices.dtype is prunus.int64
    assert lin(prunus.randn(2, 6, dtype=F64)).dtype is F64


def _compiled_losses(compiled):
    prunus.manual_seed(0)
    model = models.lenet_300_100()
    for layer in (model.fc1, model.fc2, model.fc3):
        prune_magnitude(layer, sparsity=0.7)
        quantize(layer, bits=4)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    step, xs, ys = _steps(model, opt, 6)
    f = prunus.compile(step) if compiled else step
    losses = [float(f(xs[i % 3], ys[i % 3])) for i in range(6)]
    return losses, [p.detach().numpy().copy() for p in model.parameters()], f


def test_compiled_training_of_a_quantized_model_replays_eager_bit_for_bit():
    le, pe, _ = _compiled_losses(False)
    lc, pc, f = _compiled_losses(True)
    assert le == lc
    for a, b in zip(pe, pc):
        np.testing.assert_array_equal(a, b)
    assert f.traces == 2 and len(f.cache) == 1


def test_errors_are_clear():
    lin = nn.Linear(4, 3)
    for bits in (0, 17, 2.5, True, "5"):
        with pytest.raises(ArgumentError, match=r"Linear\(in_features=4.*bits must be an int from 1 to 16"):
            quantize(lin, bits=bits)
    with pytest.raises(ArgumentError, match="init must be one of linear, density, random"):
        quantize(lin, init="kmeans++")
    with pytest.raises(ArgumentError, match="no parameter 'wieght'"):
        quantize(lin, "wieght")
    with pytest.raises(ShapeError, match=r"mask of shape \(4, 3\) does not match the weight of shape \(3, 4\)"):
        quantize(lin, mask=prunus.ones(4, 3))
    assert not P.is_parametrized(lin)
    quantize(lin, bits=2)
    with pytest.raises(ArgumentError, match="quantized already"):
        quantize(lin, bits=2)
    with pytest.raises(ArgumentError, match="does not implement right_inverse"):
        lin.weight = prunus.randn(3, 4)
    with pytest.raises(ArgumentError, match="no layer 'fc9'"):
        quantize_model(models.lenet_300_100(), bits={"fc9": 4})
    cb, idx = prunus.tensor(C), prunus.tensor(I)
    with pytest.raises(ShapeError, match=r"mask of shape \(3, 3\) does not match the indices of shape \(4, 4\)"):
        SharedWeights(cb, idx, prunus.ones(3, 3))
    with pytest.raises(IndexOutOfRangeError, match="index 4 is out of range for a codebook of 4"):
        SharedWeights(cb, idx + 1)
    with pytest.raises(DTypeError, match="1-d floating-point"):
        SharedWeights(prunus.tensor([1, 2]), idx)
    with pytest.raises(DTypeError, match="integer tensor"):
        SharedWeights(cb, prunus.tensor(W))
    for bad in [{"k": 0}, {"k": 4, "init": "x"}, {"k": 4, "max_iter": -1}]:
        with pytest.raises(ArgumentError, match="kmeans1d"):
            kmeans1d(np.array(W), **bad)
    with pytest.raises(ArgumentError, match="finite"):
        kmeans1d(np.array([1.0, np.nan]), 2)
