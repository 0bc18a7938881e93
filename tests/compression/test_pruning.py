"""Magnitude pruning as a parametrization (Han et al. 2015): thresholds by quality x std and by
target sparsity, global pruning, masks that only shrink, pruned weights that stay exactly zero
through SGD (momentum, weight decay) and Adam, equality with a dense model, reports, the dropout
rule, state dict round trips, compiled training steps, and errors."""

import numpy as np
import pytest
from train_steps import cross_entropy_step

import prunus
import prunus.nn.functional as F
from prunus import models, nn, optim
from prunus.compression.pruning import (
    PruningMask,
    dropout_rate,
    format_report,
    iterative_pruning,
    prune_global,
    prune_magnitude,
    pruning_report,
    sparsity,
)
from prunus.compression.weight_sharing import quantize
from prunus.errors import ArgumentError, DTypeError
from prunus.nn import parametrize as P


def _w(m):
    with prunus.no_grad():
        return m.weight.detach().numpy().copy()


def _mask(m):
    return m.parametrizations.weight[0].mask.numpy().copy()


def _set(m, values):
    with prunus.no_grad():
        m.weight.copy_(prunus.tensor(np.asarray(values, dtype=np.float32)))


def _batches(n, batch=16, seed=0, shape=(784,)):
    rng = np.random.default_rng(seed)
    xs = [prunus.tensor(rng.standard_normal((batch, *shape)).astype(np.float32)) for _ in range(n)]
    ys = [prunus.tensor(rng.integers(0, 10, batch)) for _ in range(n)]
    return xs, ys


def test_pruning_mask_multiplies_and_accepts_bool_masks():
    w = prunus.tensor([[1.0, -2.0], [3.0, 4.0]])
    for mask in (prunus.tensor([[1.0, 0.0], [0.0, 1.0]]), prunus.tensor([[True, False], [False, True]])):
        np.testing.assert_array_equal(PruningMask(mask)(w).numpy(), [[1.0, 0.0], [0.0, 4.0]])
    with pytest.raises(DTypeError, match="float or bool"):
        PruningMask(prunus.tensor([[1, 0]]))


def test_quality_threshold_is_quality_times_std_of_the_nonzero_weights():
    prunus.manual_seed(0)
    lin = nn.Linear(50, 40)
    raw = _w(lin)
    prune_magnitude(lin, quality=0.5)
    assert P.is_parametrized(lin, "weight") and isinstance(lin.parametrizations.weight[0], PruningMask)
    thr = 0.5 * raw.std()
    np.testing.assert_array_equal(_mask(lin), (np.abs(raw) >= thr).astype(np.float32))
    assert lin.parametrizations.weight[0].mask.dtype is prunus.float32  # the weight's dtype
    # again with the same quality: the std of the survivors is larger, so more go
    first = _mask(lin)
    survivors = raw[first != 0]
    prune_magnitude(lin, quality=0.5)
    np.testing.assert_array_equal(_mask(lin), first * (np.abs(raw) >= 0.5 * survivors.std()))
    assert _mask(lin).sum() < first.sum()


def test_dense_std_counts_the_zeros():
    lin = nn.Linear(4, 2, bias=False)
    values = np.array([[0, 0, 0, 1.5], [2.0, -3.0, 0.5, 0]], np.float32)  # std 1.39 vs 1.95
    _set(lin, values)
    nonzero = nn.Linear(4, 2, bias=False)
    _set(nonzero, values)
    prune_magnitude(lin, quality=1.0, std="dense")
    prune_magnitude(nonzero, quality=1.0)
    np.testing.assert_array_equal(_mask(lin), np.abs(values) >= values.std())
    np.testing.assert_array_equal(_mask(nonzero), np.abs(values) >= values[values != 0].std())
    assert not np.array_equal(_mask(lin), _mask(nonzero))


def test_target_sparsity_is_exact_and_ties_break_by_position():
    lin = nn.Linear(5, 2, bias=False)
    _set(lin, [[1.0, -1.0, 2.0, 1.0, 3.0], [-1.0, 0.5, 4.0, 1.0, -5.0]])
    prune_magnitude(lin, sparsity=0.4)  # 4 of 10: 0.5, then the first three |1.0|s in flat order
    np.testing.assert_array_equal(_mask(lin), [[0, 0, 1, 0, 1], [1, 0, 1, 1, 1]])
    np.testing.assert_array_equal(sparsity(lin), 0.4)
    # a lower target removes nothing (masks only shrink); a higher one removes the next smallest
    prune_magnitude(lin, sparsity=0.1)
    assert _mask(lin).sum() == 6
    prune_magnitude(lin, sparsity=0.5)  # the next |1.0|
    np.testing.assert_array_equal(_mask(lin), [[0, 0, 1, 0, 1], [0, 0, 1, 1, 1]])
    prune_magnitude(lin, sparsity=1.0)
    assert _mask(lin).sum() == 0 and np.all(_w(lin) == 0)


def test_repruning_writes_into_the_same_mask_buffer():
    prunus.manual_seed(0)
    lin = nn.Linear(20, 10)
    prune_magnitude(lin, sparsity=0.3)
    pm, buf = lin.parametrizations.weight[0], lin.parametrizations.weight[0].mask
    old = buf.numpy().copy()
    prune_magnitude(lin, quality=1.0)
    assert lin.parametrizations.weight[0] is pm and pm.mask is buf and len(lin.parametrizations.weight) == 1
    assert np.all(buf.numpy() <= old)  # a subset of the old mask


def test_prune_global_uses_one_threshold_across_layers():
    prunus.manual_seed(0)
    model = models.lenet_300_100()
    with prunus.no_grad():
        model.fc3.weight.mul_(10.0)  # large weights: fc3 should lose (almost) nothing
    raws = [_w(m) for m in (model.fc1, model.fc2, model.fc3)]
    prune_global(model, 0.9)
    masks = [_mask(m) for m in (model.fc1, model.fc2, model.fc3)]
    total = sum(r.size for r in raws)
    assert sum(int((m == 0).sum()) for m in masks) == round(0.9 * total)
    kept = np.concatenate([np.abs(r[m != 0]) for r, m in zip(raws, masks)])
    gone = np.concatenate([np.abs(r[m == 0]) for r, m in zip(raws, masks)])
    assert gone.max() <= kept.min()
    assert masks[2].mean() > masks[0].mean()
    # also as a list of layers / (layer, name) pairs; masks only shrink
    prune_global([model.fc1, (model.fc2, "weight")], 0.5)
    np.testing.assert_array_equal(_mask(model.fc1), masks[0])


def test_dropout_rate_follows_the_square_root_rule():
    assert dropout_rate(0.5, 0.09) == pytest.approx(0.15)
    assert dropout_rate(0.5, 0.045, 0.5) == pytest.approx(0.15)
    assert dropout_rate(0.5, 1.0) == 0.5
    for bad in [(1.5, 0.5), (0.5, -0.1), (0.5, 0.5, 0.0), (0.5, 0.9, 0.5), ("0.5", 0.1)]:
        with pytest.raises(ArgumentError, match="dropout_rate"):
            dropout_rate(*bad)


def test_report_and_sparsity_of_a_model():
    prunus.manual_seed(0)
    model = models.lenet_300_100()
    prune_magnitude(model.fc1, sparsity=0.92)
    prune_magnitude(model.fc2, sparsity=0.91)
    rows = pruning_report(model)
    assert [r.layer for r in rows] == ["fc1", "fc2", "fc3"]
    assert [r.weights for r in rows] == [235200, 30000, 1000]
    assert rows[0].kept == 235200 - round(0.92 * 235200) and rows[1].kept == 2700
    assert rows[2].kept == 1000 and rows[2].kept_fraction == 1.0
    assert sparsity(model) == pytest.approx(1 - sum(r.kept for r in rows) / 266200)
    text = format_report(rows)
    assert text.splitlines()[0].split() == ["layer", "shape", "weights", "kept", "%", "kept"]
    assert "fc1" in text and "(300, 784)" in text and text.splitlines()[-1].startswith("total")


def _train(model, opt, steps, shape=(784,)):
    xs, ys = _batches(3, shape=shape)
    for i in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(xs[i % 3]), ys[i % 3]).backward()
        opt.step()


@pytest.mark.parametrize("make_opt", [
    lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=5e-4),
    lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
    lambda ps: optim.Adam(ps, lr=1e-3, weight_decay=1e-2),
    lambda ps: optim.AdamW(ps, lr=1e-3),
], ids=["sgd_momentum_wd", "sgd_nesterov", "adam_l2", "adamw"])
def test_pruned_weights_stay_exactly_zero_through_50_steps(make_opt):
    prunus.manual_seed(0)
    model = models.lenet_300_100()
    layers = (model.fc1, model.fc2, model.fc3)
    for layer, s in zip(layers, (0.92, 0.91, 0.74)):
        prune_magnitude(layer, sparsity=s)
    masks = [_mask(m) for m in layers]
    raw_before = [m.parametrizations.weight.original.detach().numpy().copy() for m in layers]
    opt = make_opt(model.parameters())
    _train(model, opt, 50)
    for layer, mask, before in zip(layers, masks, raw_before):
        used = _w(layer)
        assert np.all(used[mask == 0] == 0)  # exactly 0 (possibly -0.0)
        assert np.all(used[mask != 0] != before[mask != 0])  # the kept ones trained
        np.testing.assert_array_equal(_mask(layer), mask)
    # the raw values under the mask moved (weight decay, momentum): expected, and harmless
    raw = model.fc1.parametrizations.weight.original.detach().numpy()
    assert not np.array_equal(raw[masks[0] == 0], raw_before[0][masks[0] == 0])
    # a dense model holding the masked weights computes exactly the same
    dense = models.lenet_300_100()
    with prunus.no_grad():
        for d, layer in zip((dense.fc1, dense.fc2, dense.fc3), layers):
            d.weight.copy_(layer.weight)
            d.bias.copy_(layer.bias)
    x = _batches(1, seed=5)[0][0]
    with prunus.no_grad():
        np.testing.assert_array_equal(model(x).numpy(), dense(x).numpy())


def test_pruned_lenet5_convolutions_train_and_match_dense():
    prunus.manual_seed(0)
    model = models.lenet5()
    for layer, s in ((model.conv1, 0.34), (model.conv2, 0.88), (model.fc1, 0.92), (model.fc2, 0.81)):
        prune_magnitude(layer, sparsity=s)
    _train(model, optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4), 3,
           shape=(1, 28, 28))
    assert np.all(_w(model.conv2)[_mask(model.conv2) == 0] == 0)
    dense = models.lenet5()
    with prunus.no_grad():
        for name in ("conv1", "conv2", "fc1", "fc2"):
            getattr(dense, name).weight.copy_(getattr(model, name).weight)
            getattr(dense, name).bias.copy_(getattr(model, name).bias)
    x = _batches(1, shape=(1, 28, 28), seed=3)[0][0]
    with prunus.no_grad():
        np.testing.assert_array_equal(model(x).numpy(), dense(x).numpy())


def test_state_dict_round_trip_with_save_and_load(tmp_path):
    prunus.manual_seed(0)
    model = models.lenet_300_100()
    prune_global(model, 0.8)
    sd = model.state_dict()
    assert "fc1.parametrizations.weight.original" in sd and "fc1.parametrizations.weight.0.mask" in sd
    prunus.save(sd, tmp_path / "pruned.safetensors")
    fresh = models.lenet_300_100()
    for m in (fresh.fc1, fresh.fc2, fresh.fc3):
        prune_magnitude(m, sparsity=0.0)  # the structure, with an all-ones mask
    fresh.load_state_dict(prunus.load(tmp_path / "pruned.safetensors"))
    for a, b in zip((model.fc1, model.fc2, model.fc3), (fresh.fc1, fresh.fc2, fresh.fc3)):
        np.testing.assert_array_equal(_mask(a), _mask(b))
        np.testing.assert_array_equal(_w(a), _w(b))


def test_module_to_casts_the_mask_with_the_weight():
    prunus.manual_seed(0)
    model = models.lenet_300_100()
    prune_global(model, 0.5)
    model.double()
    assert model.fc1.parametrizations.weight[0].mask.dtype is prunus.float64
    x = prunus.randn(2, 784, dtype=prunus.float64)
    assert model(x).dtype is prunus.float64


def test_iterative_pruning_alternates_prune_and_retrain():
    prunus.manual_seed(0)
    model = models.lenet_300_100()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rounds = []

    def retrain(i):
        rounds.append((i, sparsity(model)))
        _train(model, opt, 2)

    reports = iterative_pruning(model, [0.5, 0.8, {"fc1": 0.9}], retrain)
    assert [i for i, _ in rounds] == [0, 1, 2]
    assert rounds[0][1] == pytest.approx(0.5, abs=1e-3) and rounds[1][1] == pytest.approx(0.8, abs=1e-3)
    assert [r.kept for r in reports[2]] == [23520, 6000, 200]
    with pytest.raises(ArgumentError, match="names layer 'fc9'"):
        iterative_pruning(model, [{"fc9": 0.5}], retrain)


def _compiled_run(compiled, reprune_at=None):
    prunus.manual_seed(0)
    m = models.lenet_300_100()
    for layer in (m.fc1, m.fc2, m.fc3):
        prune_magnitude(layer, sparsity=0.7)
    opt = optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    xs, ys = _batches(3)

    step = cross_entropy_step(m, opt)

    f = prunus.compile(step) if compiled else step
    losses = []
    for i in range(6):
        if i == reprune_at:
            prune_magnitude(m.fc1, sparsity=0.9)  # in place: a compiled graph reads it live
        losses.append(float(f(xs[i % 3], ys[i % 3])))
    return losses, [p.detach().numpy().copy() for p in m.parameters()], f


@pytest.mark.parametrize("reprune_at", [None, 4])
def test_compiled_training_step_of_a_pruned_model_replays_eager_bit_for_bit(reprune_at):
    le, pe, _ = _compiled_run(False, reprune_at)
    lc, pc, f = _compiled_run(True, reprune_at)
    assert le == lc
    for a, b in zip(pe, pc):
        np.testing.assert_array_equal(a, b)
    assert f.traces == 2 and len(f.cache) == 1  # momentum buffers made on step 1, then cached


def test_errors_are_clear():
    lin = nn.Linear(4, 3)
    with pytest.raises(ArgumentError, match=r"Linear\(in_features=4.*no parameter 'wieght'.*weight, bias"):
        prune_magnitude(lin, "wieght", sparsity=0.5)
    with pytest.raises(ArgumentError, match="exactly one of quality= or sparsity="):
        prune_magnitude(lin)
    with pytest.raises(ArgumentError, match="exactly one"):
        prune_magnitude(lin, quality=1.0, sparsity=0.5)
    for q in (-1.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ArgumentError, match="quality must be a finite number >= 0"):
            prune_magnitude(lin, quality=q)
    for s in (-0.1, 1.5, float("nan"), [0.5], "0.5"):
        with pytest.raises(ArgumentError, match="sparsity"):
            prune_magnitude(lin, sparsity=s)
    with pytest.raises(ArgumentError, match="std must be 'nonzero' or 'dense'"):
        prune_magnitude(lin, quality=1.0, std="sample")
    with pytest.raises(DTypeError, match="expected a Module"):
        prune_magnitude(prunus.randn(3, 4), quality=1.0)
    with pytest.raises(ArgumentError, match="has no layer with a parameter 'kernel'"):
        prune_global(models.lenet_300_100(), 0.5, name="kernel")
    with pytest.raises(ArgumentError, match="no layers"):
        prune_global([], 0.5)
    assert not P.is_parametrized(lin)  # nothing happened on the way
    quantize(lin, bits=2)
    with pytest.raises(ArgumentError, match="is quantized.*prune before quantizing"):
        prune_magnitude(lin, sparsity=0.5)
