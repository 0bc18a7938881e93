"""Fusion (ReLU masks read from the ReLU's output) and memory planning (elementwise nodes in place
over dead inputs): training steps stay bit-identical to eager, buffers really are reused, and
nothing that is read later, viewed, returned or mutated is ever overwritten."""

import numpy as np
import pytest
from train_steps import cross_entropy_step

import prunus
import prunus.nn.functional as F
from prunus import models, optim
from prunus.graph import capture
from prunus.graph.executor import Executor
from prunus.graph.passes.fusion import fuse_relu
from prunus.graph.passes.memory import plan_inplace


def _run_graph(fn, *args):
    g, result, _ = capture(fn, *args)
    fuse_relu(g)
    report = plan_inplace(g)
    return g, result, report


@pytest.mark.parametrize("model", ["lenet_300_100", "lenet5"])
def test_training_step_in_place_is_bit_identical(model):
    rng = np.random.default_rng(0)
    xs = [prunus.tensor(rng.standard_normal((16, 1, 28, 28)).astype(np.float32)) for _ in range(3)]
    ys = [prunus.tensor(rng.integers(0, 10, 16)) for _ in range(3)]
    weights = []
    for passes in (None, ["fusion", "memory"]):
        prunus.manual_seed(0)
        m = getattr(models, model)()
        opt = optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

        step = cross_entropy_step(m, opt)

        f = step if passes is None else prunus.compile(step, passes=passes)
        for i in range(6):
            f(xs[i % 3], ys[i % 3])
        weights.append([p.detach().numpy().copy() for p in m.parameters()])
        if passes is not None:
            assert f.traces == 2 and any(n.inplace is not None for n in f.last_graph.nodes)
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_relu_masks_move_to_the_relu_output_and_the_preactivation_dies():
    w = prunus.randn(5, 4, requires_grad=True)

    def fn(x):
        y = F.relu(x @ w)
        (y * y).sum().backward()
        return w.grad

    g, _, report = _run_graph(fn, prunus.randn(3, 5))
    relu = next(n for n in g.nodes if n.name == "ReLU")
    grad = next(n for n in g.nodes if n.name == "ReLUGrad")
    assert grad.inputs[1] == relu.output and relu.inplace == 0 and report["inplace_nodes"] >= 1


@pytest.mark.parametrize("case", ["read_later", "viewed", "returned", "mutated"])
def test_values_still_needed_are_never_overwritten(case):
    w = prunus.randn(4, 4)

    def fn(x):
        h = x @ w
        if case == "read_later":
            return F.relu(h) + h
        if case == "viewed":
            v = h.reshape(16)
            return F.relu(h), v
        if case == "returned":
            return F.relu(h), h
        h.add_(1.0)
        return F.relu(h) * 2

    x = prunus.randn(4, 4)
    g, eager, _ = _run_graph(fn, x)
    relu = next(n for n in g.nodes if n.name == "ReLU")
    if case != "mutated":
        assert relu.inplace is None
    g.device = x.device
    got = Executor(g).run((x,), {})
    for a, b in zip(got if isinstance(got, tuple) else (got,), eager if isinstance(eager, tuple) else (eager,)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
