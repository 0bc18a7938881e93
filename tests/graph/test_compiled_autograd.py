"""A compiled Module (or function) in an eager training loop: called with grad on, it returns a
tensor whose backward runs the graph's captured backward half (prunus/graph/differentiable.py).
Everything is compared with the same loop run eagerly, bit for bit."""

import numpy as np
import pytest

import prunus
import prunus.nn.functional as F
from prunus import models, nn, optim
from prunus.errors import ArgumentError, AutogradError

RNG = np.random.default_rng(0)


def _batches(n, batch=16, shape=(1, 28, 28)):
    xs = [prunus.tensor(RNG.standard_normal((batch, *shape)).astype(np.float32)) for _ in range(n)]
    ys = [prunus.tensor(RNG.integers(0, 10, batch)) for _ in range(n)]
    return xs, ys


def _loop(make_model, compiled, xs, ys, steps=6, opt_kwargs=None):
    prunus.manual_seed(0)
    m = make_model()
    opt = optim.SGD(m.parameters(), lr=0.05, **(opt_kwargs or {"momentum": 0.9, "weight_decay": 5e-4}))
    net = prunus.compile(m) if compiled else m
    losses = []
    for i in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(net(xs[i % len(xs)]), ys[i % len(ys)])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    state = [t.detach().numpy().copy() for t in [*m.parameters(), *m.buffers()]]
    return losses, state, net


def _small_bn_dropout():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.BatchNorm1d(32), nn.ReLU(),
                         nn.Dropout(0.3), nn.Linear(32, 10))


@pytest.mark.parametrize("make_model", [models.lenet_300_100, models.lenet5, _small_bn_dropout],
                         ids=["lenet_300_100", "lenet5", "bn_dropout"])
def test_compiled_module_in_an_eager_loop_trains_like_eager(make_model):
    xs, ys = _batches(3)
    le, we, _ = _loop(make_model, False, xs, ys)
    lc, wc, net = _loop(make_model, True, xs, ys)
    assert le == lc
    for a, b in zip(we, wc):  # parameters, and buffers (BatchNorm's running statistics)
        np.testing.assert_array_equal(a, b)
    # one trace: later calls run the graph, forward half in the call, backward half in backward
    assert net.traces == 1 and net.last_graph.backward is not None


def test_gradients_reach_inputs_and_history_outside_the_call():
    prunus.manual_seed(0)
    inner, outer = nn.Linear(4, 3), nn.Linear(5, 4)
    compiled = prunus.compile(inner)
    x = prunus.tensor(RNG.standard_normal((2, 5)).astype(np.float32), requires_grad=True)

    def grads(net):
        for p in [*inner.parameters(), *outer.parameters()]:
            p.grad = None
        x.grad = None
        h = outer(x)  # eager, with history: the compiled call's backward hands its grad back
        (net(h) * prunus.arange(3, dtype=prunus.float32)).sum().backward()
        return [t.grad.numpy().copy() for t in [x, *inner.parameters(), *outer.parameters()]]

    eager = grads(inner)
    for _ in range(3):  # the first call traces (eager result), the others run the graph
        got = grads(compiled)
        for a, b in zip(eager, got):
            np.testing.assert_array_equal(a, b)
    assert compiled.traces == 1


class _TwoOutputs(nn.Module):
    """logits and the features they come from: a distillation-style model"""

    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(6, 5), nn.Linear(5, 3)

    def forward(self, x):
        h = self.body(x).relu()
        return {"logits": self.head(h), "features": h, "n": 2}


@pytest.mark.parametrize("use", ["both", "logits", "features"])
def test_several_differentiable_outputs(use):
    x = prunus.tensor(RNG.standard_normal((4, 6)).astype(np.float32))
    runs = []
    for compiled in (False, True):
        prunus.manual_seed(0)
        m = _TwoOutputs()
        net = prunus.compile(m) if compiled else m
        grads = []
        for _ in range(3):
            for p in m.parameters():
                p.grad = None
            out = net(x)
            assert out["n"] == 2
            loss = {"both": out["logits"].sum() + (out["features"] ** 2).mean(),
                    "logits": out["logits"].sum(), "features": (out["features"] ** 2).mean()}[use]
            loss.backward()
            grads.append([None if p.grad is None else p.grad.numpy().copy() for p in m.parameters()])
        runs.append(grads)
        if compiled:
            assert net.traces == 1 and len(net.last_graph.backward.outputs) == 2
    for ge, gc in zip(*runs):
        for a, b in zip(ge, gc):
            if a is None:  # eager leaves the head's .grad None when only the features are used;
                assert b is None or not b.any()  # the graph's backward (after the trace) gives zeros
            else:
                np.testing.assert_array_equal(a, b)


def test_two_calls_before_one_backward():
    prunus.manual_seed(0)
    lin = nn.Linear(3, 2)
    compiled = prunus.compile(lin)
    a, b = prunus.randn(4, 3), prunus.randn(4, 3)

    def grads(net):
        lin.weight.grad = lin.bias.grad = None
        (net(a) * net(b)).sum().backward()  # a siamese use: both runs' saved values stay apart
        return lin.weight.grad.numpy().copy(), lin.bias.grad.numpy().copy()

    eager = grads(lin)
    for _ in range(3):
        for e, c in zip(eager, grads(compiled)):
            np.testing.assert_array_equal(e, c)


def test_unused_parameters_keep_no_grad_and_frozen_ones_retrace():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(3, 2)

        def forward(self, x):
            return self.a(x)

    prunus.manual_seed(0)
    m = TwoHeads()
    c = prunus.compile(m)
    x = prunus.randn(4, 3)
    for _ in range(2):
        c(x).sum().backward()
    assert m.b.weight.grad is None and m.a.weight.grad is not None
    np.testing.assert_allclose(m.a.bias.grad.numpy(), [8.0, 8.0])  # 4 rows, two calls
    m.a.weight.requires_grad_(False)
    m.a.bias.grad = None
    c(x).sum().backward()
    assert c.traces == 2  # requires_grad is guarded: a frozen weight gets no gradient computed
    np.testing.assert_allclose(m.a.bias.grad.numpy(), [4.0, 4.0])


def test_inference_calls_use_their_own_graph():
    lin = nn.Linear(3, 2)
    c = prunus.compile(lin)
    x = prunus.randn(2, 3)
    with prunus.no_grad():
        y0 = c(x)
    y1 = c(x)
    assert not y0.requires_grad and y1.requires_grad and c.traces == 2
    with prunus.no_grad():
        c(x)
    assert c.traces == 2 and {e.graph.backward is None for es in c.cache.values() for e in es} == {True, False}
    np.testing.assert_array_equal(y0.numpy(), y1.detach().numpy())


def test_what_does_not_go_through_a_compiled_call(tmp_path):
    lin = nn.Linear(3, 2)
    c = prunus.compile(lin)
    x = prunus.randn(2, 3)
    c(x)
    y = c(x).sum()  # the second call runs the graph
    y.backward(retain_graph=True)
    with pytest.raises(AutogradError, match="CompiledCall.backward: backward through a compiled call a second time"):
        y.backward()
    z = c(x).sum()
    with pytest.raises(AutogradError, match="create_graph=True"):
        prunus.autograd.grad(z, lin.weight, create_graph=True)
    w = c(x).sum()
    with prunus.no_grad():
        lin.weight.mul_(2.0)  # the graph's backward would read the new weight
    with pytest.raises(AutogradError, match="CompiledCall.backward: its input"):
        w.backward()
    with pytest.raises(ArgumentError, match="differentiable call"):
        prunus.save_program(c, tmp_path / "p.prunus", x)


def test_graph_print_shows_the_backward_targets(capsys):
    m = models.lenet_300_100()
    c = prunus.compile(m)
    c(prunus.randn(2, 1, 28, 28))
    text = c.last_graph.print()
    assert "backward: grad of fc1.weight" in text and "backward: grad of fc3.bias" in text


def test_a_compiled_resnet_with_adam_trains_and_evaluates_like_eager():
    xs, ys = _batches(2, batch=8, shape=(3, 32, 32))
    runs = []
    for compiled in (False, True):
        prunus.manual_seed(0)
        m = models.resnet_small()
        opt = optim.Adam(m.parameters(), lr=1e-3)
        net = prunus.compile(m) if compiled else m
        losses = []
        for i in range(4):
            opt.zero_grad()
            loss = F.cross_entropy(net(xs[i % 2]), ys[i % 2])
            loss.backward()
            opt.step()
            losses.append(loss.item())
        m.eval()
        with prunus.no_grad():
            logits = net(xs[0]).numpy()
        runs.append((losses, [t.detach().numpy().copy() for t in [*m.parameters(), *m.buffers()]], logits))
    (le, we, oe), (lc, wc, oc) = runs
    assert le == lc
    np.testing.assert_array_equal(oe, oc)
    for a, b in zip(we, wc):
        np.testing.assert_array_equal(a, b)
