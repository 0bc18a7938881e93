"""prunus.cond / while_loop / fori_loop: eager they simply run; compiled they are graph ops whose
results and gradients (through branches, loop variables and the tensors they read) equal eager's,
on every branch and trip count, from one trace."""

import numpy as np
import pytest

import prunus
from prunus.errors import ArgumentError, CaptureError, DTypeError, ShapeError

RNG = np.random.default_rng(0)


def _w(shape=(3, 3)):
    return prunus.tensor(RNG.standard_normal(shape) * 0.5, requires_grad=True)


def test_eager_cond_and_while_simply_run():
    x = prunus.tensor([1.0, -2.0], requires_grad=True)
    y = prunus.cond(x.sum() > 0, lambda a: a * 2, lambda a: a * 3, x)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])
    i, v = prunus.while_loop(lambda i, v: i < 4, lambda i, v: (i + 1, v * 2), (prunus.tensor(0), x))
    assert int(i) == 4
    np.testing.assert_array_equal(v.detach().numpy(), [16.0, -32.0])
    assert prunus.cond(True, lambda a: a + 1, lambda a: a - 1, x).detach().numpy().tolist() == [2.0, -1.0]


def _cond_step(W, V):
    def f(x):
        h = x @ V  # an earlier value the branches read (lifted into them)
        y = prunus.cond(x.sum() > 0, lambda a: (a @ W + h).tanh(), lambda a: (a * 3.0) @ W.T - h, x)
        loss = (y * y).sum()
        loss.backward()
        return loss

    return f


@pytest.mark.parametrize("signs", [(1, -1, 1, -1, -1, 1)])
def test_compiled_cond_matches_eager_on_both_branches_with_gradients(signs):
    W, V = _w(), _w()
    f = _cond_step(W, V)
    c = prunus.compile(f)
    for s in signs:
        x = prunus.tensor(s * RNG.random((2, 3)))
        W.grad = V.grad = None
        lc = c(x).numpy()
        gw, gv = W.grad.numpy().copy(), V.grad.numpy().copy()
        W.grad = V.grad = None
        le = f(x).detach().numpy()
        np.testing.assert_allclose(lc, le, rtol=1e-12)
        np.testing.assert_allclose(gw, W.grad.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(gv, V.grad.numpy(), rtol=1e-12, atol=1e-14)
    assert c.traces == 1


def test_cond_with_several_results_and_operand_gradients():
    x = prunus.tensor(RNG.standard_normal(4), requires_grad=True)

    def f(p):
        a, b = prunus.cond(p, lambda t: (t * 2, t.exp()), lambda t: (t - 1, t * t), x)
        (a.sum() + 3 * b.sum()).backward()
        return a, b

    c = prunus.compile(f)
    for flag in (True, False, True):
        p = prunus.tensor(flag)
        x.grad = None
        ac, bc = c(p)
        gc = x.grad.numpy().copy()
        x.grad = None
        ae, be = f(p)
        np.testing.assert_allclose(ac.numpy(), ae.detach().numpy())
        np.testing.assert_allclose(bc.numpy(), be.detach().numpy())
        np.testing.assert_allclose(gc, x.grad.numpy(), rtol=1e-12)
    assert c.traces == 1


def test_compiled_while_loop_matches_eager_for_every_trip_count():
    W = _w()

    def f(x, n):
        i, y = prunus.while_loop(lambda i, y: i < n, lambda i, y: (i + 1, (y @ W).tanh()),
                                 (prunus.tensor(0), x))
        loss = (y * y).sum()
        loss.backward()
        return loss, i

    c = prunus.compile(f)
    for k in (3, 5, 1, 2, 7):
        x = prunus.tensor(RNG.standard_normal((2, 3)))
        n = prunus.tensor(k)
        W.grad = None
        lc, ic = c(x, n)
        gc = W.grad.numpy().copy()
        W.grad = None
        le, ie = f(x, n)
        assert int(ic) == int(ie) == k
        np.testing.assert_allclose(lc.numpy(), le.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(gc, W.grad.numpy(), rtol=1e-10, atol=1e-14)
    assert c.traces == 1


def test_while_loop_gradient_of_the_initial_value():
    def f(x):
        (v,) = prunus.while_loop(lambda v: v.sum() < 100.0, lambda v: (v * 1.5 + 1.0,), (x,))
        v.sum().backward()
        return v

    c = prunus.compile(f)
    for scale in (1.0, 3.0, 0.5):
        x = prunus.tensor(scale * np.ones(3), requires_grad=True)
        c(x)
        gc = x.grad.numpy().copy()
        x2 = prunus.tensor(scale * np.ones(3), requires_grad=True)
        f(x2)
        np.testing.assert_allclose(gc, x2.grad.numpy())


def test_fori_loop_unrolls_python_bounds():
    out = prunus.fori_loop(0, 4, lambda i, v: v + i, prunus.tensor(1.0))
    assert float(out) == 7.0
    with pytest.raises(ArgumentError, match="while_loop"):
        prunus.fori_loop(0, prunus.tensor(3), lambda i, v: v, prunus.tensor(1.0))


def test_control_flow_errors():
    x = prunus.ones(3)
    with pytest.raises(ShapeError, match="one element"):
        prunus.cond(prunus.ones(2) > 0, lambda a: a, lambda a: a, x)
    with pytest.raises(DTypeError, match="predicate"):
        prunus.cond("yes", lambda a: a, lambda a: a, x)
    with pytest.raises(ArgumentError, match="callables"):
        prunus.cond(prunus.tensor(True), 1, lambda a: a, x)
    with pytest.raises(ShapeError, match="differs"):
        prunus.compile(lambda t: prunus.cond(t.sum() > 0, lambda a: a, lambda a: a[:2], t))(x)
    with pytest.raises(ShapeError, match="stay the same"):
        prunus.while_loop(lambda v: v.sum() < 10, lambda v: (prunus.cat([v, v]),), (x,))
    with pytest.raises(ShapeError, match="stay the same"):
        prunus.compile(lambda t: prunus.while_loop(lambda v: v.sum() < 10, lambda v: (v[:1],), (t,)))(x)

    def mutating(t):
        return prunus.cond(t.sum() > 0, lambda a: a.add_(1.0), lambda a: a, t)

    with pytest.raises(CaptureError, match="in place"):
        prunus.compile(mutating)(prunus.ones(3))
    with pytest.raises(ArgumentError, match="tuple"):
        prunus.while_loop(lambda v: v.sum() < 3, lambda v: v, x)


def test_captured_control_flow_shows_as_ops_in_the_graph():
    c = prunus.compile(lambda x: prunus.cond(x.sum() > 0, lambda a: a * 2, lambda a: -a, x))
    c(prunus.ones(2))
    names = [n.name for n in c.last_graph.nodes]
    assert "Cond" in names
    out = c(-prunus.ones(2))
    np.testing.assert_array_equal(out.numpy(), [1.0, 1.0])
