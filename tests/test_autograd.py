"""The autograd engine: the lecture's worked example, graph semantics, grad(), grad modes,
anomaly detection, gradcheck, user-defined ops, hooks and higher-order gradients.

None of these tests need PyTorch: expected values are analytic.
"""

import math
import tracemalloc

import numpy as np
import pytest

import prunus
from prunus.autograd import Op, detect_anomaly, grad, gradcheck
from prunus.errors import AnomalyError, AutogradError, DTypeError, GradcheckError, ShapeError


def leaf(v, dtype=prunus.float64):
    return prunus.tensor(v, dtype=dtype, requires_grad=True)


# -- the lecture's worked example ------------------------------------------------------------


def test_worked_example_sigmoid_neuron():
    w0, x0, w1, x1, w2 = leaf(2.0), leaf(-1.0), leaf(-3.0), leaf(-2.0), leaf(-3.0)
    f = 1 / (1 + prunus.exp(-(w0 * x0 + w1 * x1 + w2)))
    f.backward()
    expected = {
        "f": (f, 0.7310585786300049),
        "dw0": (w0.grad, -0.19661193324148185),
        "dx0": (x0.grad, 0.3932238664829637),
        "dw1": (w1.grad, -0.3932238664829637),
        "dx1": (x1.grad, -0.5898357997244456),
        "dw2": (w2.grad, 0.19661193324148185),
    }
    for name, (t, want) in expected.items():
        assert t.dtype is prunus.float64, name
        np.testing.assert_allclose(t.item(), want, rtol=1e-12, err_msg=name)


def test_worked_example_with_sigmoid_op_agrees():
    w = leaf([2.0, -3.0, -3.0])
    x = leaf([-1.0, -2.0])
    f = prunus.sigmoid(w[0] * x[0] + w[1] * x[1] + w[2])
    f.backward()
    np.testing.assert_allclose(w.grad.numpy(), [-0.19661193324148185, -0.3932238664829637, 0.19661193324148185], rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), [0.3932238664829637, -0.5898357997244456], rtol=1e-12)


# -- graph semantics -------------------------------------------------------------------------


def test_gradient_accumulates_for_tensor_used_twice():
    x = leaf(3.0)
    y = x * x + x  # dy/dx = 2x + 1
    y.backward()
    assert x.grad.item() == 7.0


def test_leaf_grad_accumulates_across_backward_calls_until_zeroed():
    x = leaf([1.0, 2.0])
    for _ in range(3):
        (x * 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [6.0, 6.0])
    x.grad = None
    (x * 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0])
    x.grad.zero_()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0])


def test_grads_of_two_inputs_do_not_alias():
    # add's backward hands the same gradient to both inputs; each .grad must own its memory
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (a + b).sum().backward()
    a.grad.zero_()
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 1.0])


def test_second_backward_through_freed_graph_raises():
    x = leaf(2.0)
    y = prunus.exp(x) * x
    y.backward()
    with pytest.raises(AutogradError, match="second time"):
        y.backward()


def test_retain_graph_allows_second_backward():
    x = leaf(2.0)
    y = prunus.exp(x) * x
    y.backward(retain_graph=True)
    first = x.grad.item()
    y.backward()
    np.testing.assert_allclose(x.grad.item(), 2 * first, rtol=1e-15)
    np.testing.assert_allclose(first, math.exp(2.0) * 3.0, rtol=1e-15)


def test_backward_on_non_scalar_needs_gradient():
    x = leaf([1.0, 2.0, 3.0])
    y = x * 2
    with pytest.raises(AutogradError, match=r"scalar output.*\(3,\)"):
        y.backward()
    y.backward(prunus.tensor([1.0, 0.5, 0.0], dtype=prunus.float64))
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 1.0, 0.0])


def test_backward_gradient_shape_is_checked():
    x = leaf([1.0, 2.0, 3.0])
    with pytest.raises(ShapeError, match=r"\(2,\).*\(3,\)"):
        (x * 2).backward(prunus.ones(2, dtype=prunus.float64))


def test_no_grad_records_nothing():
    x = leaf([1.0, 2.0])
    with prunus.no_grad():
        y = x * 2 + 1
    assert not y.requires_grad and y.grad_fn is None and y.is_leaf
    with pytest.raises(AutogradError, match="does not require grad"):
        y.sum().backward()


def test_no_grad_and_enable_grad_as_decorators_and_nested():
    x = leaf(1.0)

    @prunus.no_grad()
    def f(t):
        return t * 2

    @prunus.enable_grad()
    def g(t):
        return t * 2

    assert not f(x).requires_grad
    with prunus.no_grad():
        assert g(x).requires_grad
        assert not (x * 2).requires_grad
    assert prunus.is_grad_enabled()
    with prunus.set_grad_enabled(False):
        assert not prunus.is_grad_enabled()
    assert prunus.is_grad_enabled()


def test_grad_mode_and_anomaly_mode_are_per_thread():
    import threading

    x = leaf([1.0, 2.0])
    inside, release, seen = threading.Event(), threading.Event(), {}

    def server():  # inference in another thread, under no_grad and anomaly detection
        with prunus.no_grad(), detect_anomaly():
            seen["thread grad"] = prunus.is_grad_enabled()
            inside.set()
            release.wait(5)
            seen["thread result"] = (x * 2).requires_grad

    th = threading.Thread(target=server)
    th.start()
    assert inside.wait(5)
    try:
        y = (x * x).sum()  # the main thread still records, without anomaly's stack capture
        assert y.requires_grad and prunus.is_grad_enabled() and "_stack" not in y._ctx.__dict__
    finally:
        release.set()
        th.join(5)
    assert seen == {"thread grad": False, "thread result": False}
    with prunus.no_grad():  # and a new thread starts with grad on whatever this one does
        th = threading.Thread(target=lambda: seen.update(fresh=prunus.is_grad_enabled()))
        th.start()
        th.join(5)
    assert seen["fresh"] is True


def test_detach_cuts_the_graph():
    x = leaf(3.0)
    y = x * x.detach()  # the detached factor is a constant
    y.backward()
    assert x.grad.item() == 3.0


def test_long_chain_backpropagates_without_recursion_error():
    x = leaf(1.0)
    y = x
    n = 100_000
    for _ in range(n):
        y = y * 1.0000001
    y.backward()
    np.testing.assert_allclose(x.grad.item(), 1.0000001**n, rtol=1e-9)
    del y  # freeing a 100k-deep graph must not overflow the C stack either


def test_graph_memory_per_op_is_small():
    x = leaf(1.0)
    n = 10_000
    tracemalloc.start()
    y = x
    for _ in range(n):
        y = y * 1.0000001
    y.backward()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak / n < 4096, f"{peak / n:.0f} bytes per recorded scalar op"


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(DTypeError, match="int64"):
        prunus.tensor([1, 2], requires_grad=True)
    with pytest.raises(DTypeError):
        prunus.tensor([1, 2]).requires_grad_()


def test_int_result_from_float_input_carries_no_grad():
    x = leaf([1.5, 2.5])
    assert not x.long().requires_grad
    assert not (x > 2).requires_grad
    assert not x.argmax().requires_grad


def test_cast_backward_returns_grad_in_input_dtype():
    x = leaf([1.0, 2.0], dtype=prunus.float32)
    y = x.double() * prunus.tensor([3.0, 4.0], dtype=prunus.float64)
    y.sum().backward()
    assert x.grad.dtype is prunus.float32
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 4.0])


def test_mixed_dtype_promotion_gradients():
    x = leaf([1.0, 2.0], dtype=prunus.float32)
    w = leaf([0.5, 0.25], dtype=prunus.float64)
    y = (x * w).sum()
    assert y.dtype is prunus.float64
    y.backward()
    assert x.grad.dtype is prunus.float32 and w.grad.dtype is prunus.float64


# -- grad() ----------------------------------------------------------------------------------


def test_grad_returns_tuple_and_leaves_dot_grad_alone():
    x, y = leaf(2.0), leaf(3.0)
    z = x * y
    gx, gy = grad(z, (x, y))
    assert (gx.item(), gy.item()) == (3.0, 2.0)
    assert x.grad is None and y.grad is None


def test_grad_wrt_intermediate_tensor():
    x = leaf(2.0)
    h = x * 3
    z = h * h
    (gh,) = grad(z, h, retain_graph=True)
    assert gh.item() == 12.0
    (gx,) = grad(z, x)
    assert gx.item() == 36.0


def test_grad_allow_unused():
    x, unused = leaf(1.0), leaf(1.0)
    z = x * 2
    with pytest.raises(AutogradError, match="allow_unused"):
        grad(z, (x, unused), retain_graph=True)
    gx, gu = grad(z, (x, unused), allow_unused=True)
    assert gx.item() == 2.0 and gu is None


def test_grad_outputs_weight_the_outputs():
    x = leaf([1.0, 2.0])
    (g,) = grad(x * x, x, grad_outputs=prunus.tensor([1.0, 10.0], dtype=prunus.float64))
    np.testing.assert_array_equal(g.numpy(), [2.0, 40.0])


# -- higher-order gradients ------------------------------------------------------------------


def _second(fn, x0):
    x = leaf(x0)
    (g,) = grad(fn(x), x, create_graph=True)
    (gg,) = grad(g, x)
    return g.item(), gg.item()


@pytest.mark.parametrize(
    "name, fn, d1, d2",
    [
        ("tanh", prunus.tanh, lambda x: 1 - math.tanh(x) ** 2,
         lambda x: -2 * math.tanh(x) * (1 - math.tanh(x) ** 2)),
        ("sigmoid", prunus.sigmoid, lambda x: _sig(x) * (1 - _sig(x)),
         lambda x: _sig(x) * (1 - _sig(x)) * (1 - 2 * _sig(x))),
        ("exp", prunus.exp, math.exp, math.exp),
        ("log", prunus.log, lambda x: 1 / x, lambda x: -1 / x**2),
        ("mul", lambda t: t * t * t, lambda x: 3 * x**2, lambda x: 6 * x),
    ],
)
def test_second_derivatives(name, fn, d1, d2):
    for x0 in (0.3, 1.7):
        g, gg = _second(fn, x0)
        np.testing.assert_allclose(g, d1(x0), rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(gg, d2(x0), rtol=1e-10, err_msg=name)


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_second_derivative_of_matmul_quadratic_form():
    # f(x) = x^T A x: gradient (A + A^T) x, Hessian A + A^T
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 3))
    A = prunus.tensor(a)
    x = leaf(rng.standard_normal(3))
    (g,) = grad(x @ (A @ x), x, create_graph=True)
    np.testing.assert_allclose(g.detach().numpy(), (a + a.T) @ x.detach().numpy(), rtol=1e-12)
    rows = [grad(g[i], x, retain_graph=True)[0].numpy() for i in range(3)]
    np.testing.assert_allclose(np.stack(rows), a + a.T, rtol=1e-12)


def test_second_derivative_of_softmax():
    # d^2/dz_j dz_k of softmax(z)_0, against the closed form
    z0 = np.array([0.2, -0.5, 1.1])
    z = leaf(z0)
    (g,) = grad(prunus.softmax(z, 0)[0], z, create_graph=True)
    hess = np.stack([grad(g[j], z, retain_graph=True)[0].numpy() for j in range(3)])
    s = np.exp(z0) / np.exp(z0).sum()
    d = np.eye(3)
    # ds0/dzj = s0 (d0j - sj);  d2 s0/dzj dzk = s0 (d0k - sk)(d0j - sj) - s0 sj (djk - sk)
    expected = np.array(
        [[s[0] * (d[0, k] - s[k]) * (d[0, j] - s[j]) - s[0] * s[j] * (d[j, k] - s[k]) for k in range(3)] for j in range(3)]
    )
    np.testing.assert_allclose(hess, expected, rtol=1e-10, atol=1e-14)


def test_create_graph_keeps_grad_differentiable():
    x = leaf(2.0)
    y = x**3
    y.backward(create_graph=True)
    assert x.grad.requires_grad
    (gg,) = grad(x.grad, x)
    assert gg.item() == 12.0


# -- hooks -----------------------------------------------------------------------------------


def test_hooks_see_and_replace_gradients():
    x = leaf([1.0, 2.0])
    seen = []
    h = x * 3
    h.register_hook(lambda g: seen.append(g.numpy().copy()))
    handle = x.register_hook(lambda g: g * 10)
    h.sum().backward()
    np.testing.assert_array_equal(seen[0], [1.0, 1.0])
    np.testing.assert_array_equal(x.grad.numpy(), [30.0, 30.0])
    handle.remove()
    x.grad = None
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


def test_retain_grad_on_intermediate():
    x = leaf([1.0, 2.0])
    h = x * 3
    h.retain_grad()
    (h * h).sum().backward()
    np.testing.assert_array_equal(h.grad.numpy(), [6.0, 12.0])


# -- anomaly detection -----------------------------------------------------------------------


def test_detect_anomaly_names_the_op():
    x = leaf([0.0, 1.0])
    with detect_anomaly():
        y = prunus.sqrt(x).sum()  # d sqrt / dx = inf at 0
        with pytest.raises(AnomalyError, match="Sqrt") as info, np.errstate(divide="ignore"):
            y.backward()
    assert "test_autograd.py" in str(info.value)  # where the op was created


def test_without_anomaly_mode_nan_passes_silently():
    x = leaf([0.0, 1.0])
    with np.errstate(divide="ignore"):
        prunus.sqrt(x).sum().backward()
    assert np.isinf(x.grad.numpy()[0])


# -- gradcheck and user-defined ops ----------------------------------------------------------


class Cube(Op):
    """The README's example of a user-defined op."""

    def forward(self, x):
        return x * x * x

    def backward(self, grad):
        (x,) = self.inputs
        return grad * 3 * x * x


class BadCube(Cube):
    def backward(self, grad):
        return super().backward(grad) * 1.01  # 1% off


def test_user_defined_op_forward_backward_and_second_order():
    x = leaf([1.0, -2.0])
    y = Cube.apply(x)
    np.testing.assert_array_equal(y.detach().numpy(), [1.0, -8.0])
    (g,) = grad(y.sum(), x, create_graph=True)
    np.testing.assert_array_equal(g.detach().numpy(), [3.0, 12.0])
    (gg,) = grad(g.sum(), x)
    np.testing.assert_array_equal(gg.numpy(), [6.0, -12.0])
    assert gradcheck(Cube.apply, (leaf([0.5, -1.5, 2.0]),))


def test_gradcheck_catches_a_backward_one_percent_off():
    with pytest.raises(GradcheckError, match="disagrees"):
        gradcheck(BadCube.apply, (leaf([0.5, -1.5, 2.0]),))
    assert gradcheck(BadCube.apply, (leaf([0.5, -1.5, 2.0]),), raise_exception=False) is False


def test_gradcheck_needs_float64():
    with pytest.raises(GradcheckError, match="float64"):
        gradcheck(Cube.apply, (leaf([1.0], dtype=prunus.float32),))


def test_in_place_on_leaf_requiring_grad_is_refused_outside_no_grad():
    w = leaf([1.0, 2.0])
    with pytest.raises(AutogradError, match="in-place"):
        w.add_(1.0)
    with prunus.no_grad():
        w.sub_(prunus.tensor([0.5, 0.5], dtype=prunus.float64))
    np.testing.assert_array_equal(w.detach().numpy(), [0.5, 1.5])


# -- values changed in place between forward and backward ---------------------------------------


def test_an_input_changed_in_place_after_use_refuses_backward():
    w = leaf([1.0, 2.0, 3.0])
    y = (w * w).sum()
    with prunus.no_grad():
        w.mul_(2.0)  # Mul's backward would read the new w: 2 * (2w) instead of 2w
    with pytest.raises(AutogradError, match=r"Mul.backward: its input 0 \(\(3,\) float64\) was "
                                            r"changed in place after Mul ran.*detect_anomaly"):
        y.backward()


def test_changes_that_backward_does_not_read_are_fine():
    w = leaf([1.0, 2.0])
    y = (w + 1.0).reshape(2, 1).sum()  # Add, Reshape and Sum need only shapes
    with prunus.no_grad():
        w.add_(1.0)
    y.backward()
    np.testing.assert_array_equal(w.grad.numpy(), [1.0, 1.0])
    # a change before the op ran is what the op saw
    v = leaf([1.0, 2.0])
    with prunus.no_grad():
        v.mul_(3.0)
    (v * v).sum().backward()
    np.testing.assert_array_equal(v.grad.numpy(), [6.0, 12.0])


def test_an_output_changed_in_place_refuses_a_backward_that_reads_it():
    w = leaf([0.5, 1.0])
    y = prunus.exp(w)  # Exp's backward is grad * its output
    with prunus.no_grad():
        y.mul_(2.0)
    with pytest.raises(AutogradError, match="Exp.backward: its output was changed in place"):
        y.sum().backward()


def test_setitem_and_optimizer_steps_count_as_changes():
    w = leaf([1.0, 2.0])
    y = (w * w).sum()
    with prunus.no_grad():
        w[0] = 5.0
    with pytest.raises(AutogradError, match="Mul.backward: its input 0"):
        y.backward()
    # stepping before a second backward through a retained graph (the GAN pitfall)
    from prunus import nn, optim

    model = nn.Linear(3, 2)
    opt = optim.SGD(model.parameters(), lr=0.1)
    loss = model(prunus.ones(4, 3)).pow(2).sum()
    loss.backward(retain_graph=True)
    opt.step()
    with pytest.raises(AutogradError, match="Linear.backward: its input 1"):
        loss.backward()


def test_anomaly_mode_says_where_the_op_was_recorded():
    w = leaf([1.0, 2.0])
    with detect_anomaly():
        y = (w * w).sum()
        with prunus.no_grad():
            w.mul_(2.0)
        with pytest.raises(AutogradError, match="recorded at:(.|\n)*test_autograd.py"):
            y.backward()


def test_user_ops_reading_their_output_are_found_from_their_code():
    class Square(Op):
        def forward(self, x):
            self.out = x * x
            return self.out

        def backward(self, g):
            return g * 2 * self.inputs[0]

    class Exp2(Op):
        def forward(self, x):
            self.out = np.exp(x)
            return self.out

        def backward(self, g):
            return g * self.output()

    assert Exp2.saves_output and not Square.saves_output and Square.saves_inputs


def test_views_and_detach_share_the_change_record():
    w = leaf([1.0, 2.0, 3.0, 4.0])
    y = (w * w).sum()
    with prunus.no_grad():
        w.detach().mul_(2.0)  # the same memory as w
    with pytest.raises(AutogradError, match="Mul.backward: its input 0"):
        y.backward()
    v = leaf([1.0, 2.0, 3.0, 4.0])
    y = (v * v).sum()
    with prunus.no_grad():
        v.view(2, 2)[0].zero_()  # a view of a view: the change reaches v
    with pytest.raises(AutogradError, match="Mul.backward: its input 0"):
        y.backward()
    # an output changed through a view of it
    u = leaf([0.5, 1.0])
    e = prunus.exp(u)
    with prunus.no_grad():
        e.reshape(2, 1).mul_(3.0)
    with pytest.raises(AutogradError, match="Exp.backward: its output"):
        e.sum().backward()
    # a copy is not a view: changing it is fine
    c = leaf([1.0, 2.0])
    y = (c * c).sum()
    with prunus.no_grad():
        c.clone().mul_(5.0)
        c[[0, 1]].mul_(5.0)  # advanced indexing copies
    y.backward()
    np.testing.assert_array_equal(c.grad.numpy(), [2.0, 4.0])
