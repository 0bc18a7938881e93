"""Sensitivity analysis: the per-layer sweep on a small trained MLP (synthetic data), restoring
every layer exactly, evaluation through a callable or a DataLoader, the CSV round trip, the PNG
plot (and the error without matplotlib), and the sparsity choices for an accuracy drop or a size
budget."""

import sys

import numpy as np
import pytest

import prunus
from prunus import nn, optim
from prunus.compression.pruning import prune_magnitude
from prunus.compression.sensitivity import (
    SensitivityResult,
    evaluate_accuracy,
    read_csv,
    sensitivity_analysis,
    sparsities_for_budget,
    sparsities_for_drop,
)
from prunus.compression.weight_sharing import quantize
from prunus.data import DataLoader, TensorDataset
from prunus.errors import ArgumentError, MissingDependencyError
from prunus.train import fit


def _data(n=384, d=16, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((classes, d)) * 2.0
    y = rng.integers(0, classes, n)
    x = means[y] + rng.standard_normal((n, d))
    return TensorDataset(prunus.tensor(x.astype(np.float32)), prunus.tensor(y))


@pytest.fixture(scope="module")
def trained():
    """A 16-32-4 MLP trained to high accuracy on separable clusters (a fraction of a second)."""
    prunus.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    ds = _data()
    loader = DataLoader(ds, batch_size=32, shuffle=True, generator=prunus.Generator().manual_seed(1))
    fit(model, optim.SGD(model.parameters(), lr=0.05, momentum=0.9), loader, epochs=3, progress=False)
    return model, DataLoader(ds, batch_size=128)


def _state(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def test_sweep_measures_each_layer_alone_and_restores_it(trained):
    model, loader = trained
    before = _state(model)
    baseline = evaluate_accuracy(model, loader)
    assert baseline > 0.9
    seen = []

    def evaluate(m):
        # exactly one layer is pruned at each point
        pruned = [p for p, mod in m.named_modules() if isinstance(mod, nn.Linear)
                  and np.count_nonzero(mod.weight.detach().numpy()) < mod.weight.numel()]
        seen.append(tuple(pruned))
        return evaluate_accuracy(m, loader)

    sp = (0.0, 0.5, 0.9, 0.99)
    res = sensitivity_analysis(model, evaluate, sparsities=sp)
    assert res.layers == ["0", "2"] and res.sparsities == sp
    assert res.weights == {"0": 512, "2": 128}
    assert res.baseline == baseline
    for layer in res.layers:
        accs = res.accuracy[layer]
        assert accs[0] == baseline  # sparsity 0 is the model as it is
        assert accs[-1] < baseline  # 99% of a layer gone hurts
    # the sparsity-0 points are not re-evaluated; every other point prunes exactly one layer
    assert seen[0] == () and sorted(seen[1:]) == sorted([("0",)] * 3 + [("2",)] * 3)
    # every layer is back exactly, without a parametrization
    after = _state(model)
    assert after.keys() == before.keys()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])
    assert not any(hasattr(m, "parametrizations") for m in model.modules())


def test_loader_evaluation_and_layer_subset(trained):
    model, loader = trained
    res = sensitivity_analysis(model, loader=loader, layers=["2"], sparsities=(0.0, 0.8))
    assert res.layers == ["2"]
    prune_magnitude(model[2], sparsity=0.8)
    try:
        assert res.accuracy["2"][1] == evaluate_accuracy(model, loader)
    finally:
        prunus.nn.parametrize.remove_parametrizations(model[2], "weight", leave_parametrized=False)


def test_a_pruned_layer_gets_its_own_mask_back():
    prunus.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    prune_magnitude(model[0], sparsity=0.5)
    mask = model[0].parametrizations.weight[0].mask.numpy().copy()
    calls = []

    def evaluate(m):
        calls.append(int(np.count_nonzero(m[0].weight.detach().numpy())))
        return 0.5

    res = sensitivity_analysis(model, evaluate, layers="0", sparsities=(0.0, 0.25, 0.5, 0.75))
    # points at or below its sparsity are the model as it is: only 0.75 is evaluated
    assert calls == [32, 16]
    assert res.kept_before == {"0": 32}
    np.testing.assert_array_equal(model[0].parametrizations.weight[0].mask.numpy(), mask)


def test_csv_round_trip_and_table(trained, tmp_path):
    model, loader = trained
    res = sensitivity_analysis(model, loader=loader, sparsities=(0.0, 0.5, 0.95))
    text = res.to_csv(tmp_path / "s.csv")
    assert text.splitlines()[0] == "layer,weights,sparsity,accuracy,drop"
    assert len(text.splitlines()) == 2 + 2 * 3
    back = read_csv(tmp_path / "s.csv")
    assert back.sparsities == res.sparsities and back.baseline == res.baseline
    assert back.accuracy == res.accuracy and back.weights == res.weights
    table = res.format_table()
    assert "baseline accuracy" in table and "95%" in table
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ArgumentError, match="not a sensitivity table"):
        read_csv(tmp_path / "bad.csv")


def test_plot_writes_a_png(trained, tmp_path):
    pytest.importorskip("matplotlib")
    model, loader = trained
    res = sensitivity_analysis(model, loader=loader, sparsities=(0.0, 0.5, 0.9))
    res.plot(tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    res = SensitivityResult((0.0, 0.5), 0.9, {"a": [0.9, 0.8]}, {"a": 10}, {"a": 10})
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib... raises ImportError
    with pytest.raises(MissingDependencyError, match=r"prunus\[plot\]"):
        res.plot(tmp_path / "s.png")
    assert not (tmp_path / "s.png").exists()


def _result():
    # layer a: cheap to prune up to 0.9; b: hurts from 0.5 on; c: small, free
    sp = (0.0, 0.5, 0.9, 0.95)
    acc = {"a": [0.90, 0.90, 0.89, 0.80], "b": [0.90, 0.85, 0.70, 0.50], "c": [0.90, 0.91, 0.90, 0.90]}
    n = {"a": 1000, "b": 1000, "c": 100}
    return SensitivityResult(sp, 0.90, acc, n, dict(n))


def test_sparsities_for_a_drop():
    res = _result()
    assert sparsities_for_drop(res, 0.0) == {"a": 0.5, "b": 0.0, "c": 0.95}
    assert sparsities_for_drop(res, 0.011) == {"a": 0.9, "b": 0.0, "c": 0.95}
    assert sparsities_for_drop(res, 0.051) == {"a": 0.9, "b": 0.5, "c": 0.95}
    with pytest.raises(ArgumentError, match="max_drop"):
        sparsities_for_drop(res, -1)


def test_sparsities_for_a_budget_take_the_cheapest_bytes_first():
    res = _result()
    # 2100 weights x 4 bytes = 8400; the free moves first, the bigger saving first: a to 0.5
    # (-2000 bytes), c to 0.95 (-380 bytes)
    plan = sparsities_for_budget(res, 6400)
    assert plan == {"a": 0.5, "b": 0.0, "c": 0.0}
    plan = sparsities_for_budget(res, 6100)
    assert plan == {"a": 0.5, "b": 0.0, "c": 0.95}
    # then a's next step (0.01 over 1600 bytes) before any of b's
    plan = sparsities_for_budget(res, 4420)
    assert plan == {"a": 0.9, "b": 0.0, "c": 0.95}
    size = sum(4 * (res.weights[k] - round(s * res.weights[k])) for k, s in plan.items())
    assert size <= 4420
    plan = sparsities_for_budget(res, 2000)
    assert plan["b"] > 0
    assert sparsities_for_budget(res, 10**6) == {"a": 0.0, "b": 0.0, "c": 0.0}
    with pytest.raises(ArgumentError, match="can't be met"):
        sparsities_for_budget(res, 100)
    with pytest.raises(ArgumentError, match="budget_bytes"):
        sparsities_for_budget(res, 0)


def test_errors(trained):
    model, loader = trained
    with pytest.raises(ArgumentError, match="exactly one of evaluate"):
        sensitivity_analysis(model)
    with pytest.raises(ArgumentError, match="exactly one of evaluate"):
        sensitivity_analysis(model, lambda m: 1.0, loader=loader)
    with pytest.raises(ArgumentError, match="strictly increasing"):
        sensitivity_analysis(model, lambda m: 1.0, sparsities=(0.5, 0.2))
    with pytest.raises(ArgumentError, match="sparsity"):
        sensitivity_analysis(model, lambda m: 1.0, sparsities=(0.5, 1.5))
    with pytest.raises(ArgumentError, match="no layer 'fc9'"):
        sensitivity_analysis(model, lambda m: 1.0, layers=["fc9"])
    with pytest.raises(ArgumentError, match="finite number"):
        sensitivity_analysis(model, lambda m: "good")
    with pytest.raises(ArgumentError, match="sparsities_for_drop: expected a SensitivityResult"):
        sparsities_for_drop({}, 0.1)
    q = nn.Sequential(nn.Linear(4, 4))
    quantize(q[0], bits=2)
    with pytest.raises(ArgumentError, match="quantized"):
        sensitivity_analysis(q, lambda m: 1.0)
